//! JanusFlow behaviour beyond parity: progress and cancellation of the flow loop, sampled text
//! (same seed, same ids; replayed uniforms drive the draws), and the model info.

use any2any_core::{
    Backend, CancelToken, Error, Generated, GenerationParams, Hooks, LoadOptions, Modality,
    ModelFiles, ReplayNoise, Request,
};
use any2any_janusflow::JanusFlowBackend;
use any2any_test_util::fixture_dir;

fn backend() -> JanusFlowBackend {
    let files = ModelFiles::from_dir(&fixture_dir("janusflow-tiny")).unwrap();
    JanusFlowBackend::load(&files, &LoadOptions::default()).unwrap()
}

fn t2i(steps: usize) -> Request {
    Request::new()
        .text("a red fox")
        .want(Modality::Image)
        .params(GenerationParams {
            steps: Some(steps),
            ..Default::default()
        })
}

#[test]
fn a_cancelled_flow_loop_stops_with_a_named_error() {
    let jf = backend();
    let token = CancelToken::new();
    let t = token.clone();
    let mut hooks = Hooks::new().cancel_token(token).on_progress(move |p| {
        if p.step == 1 {
            t.cancel();
        }
    });
    let e = jf.generate_batch(&[t2i(3)], &mut hooks).unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Cancelled {
                step: 2,
                total: 3,
                ..
            }
        ),
        "{e}"
    );
}

fn text_ids(jf: &JanusFlowBackend, seed: u64, hooks: &mut Hooks) -> Vec<u32> {
    let req = Request::new()
        .text("Say hi.")
        .want(Modality::Text)
        .seed(seed)
        .params(GenerationParams {
            temperature: Some(1.0),
            max_new_tokens: Some(6),
            ..Default::default()
        });
    let out = jf.generate_batch(&[req], hooks).unwrap();
    match &out[0].segments[0] {
        Generated::Text { ids, .. } => ids.clone(),
        _ => panic!("text expected"),
    }
}

#[test]
fn sampled_text_is_reproducible_and_follows_the_replayed_uniforms() {
    let jf = backend();
    let a = text_ids(&jf, 5, &mut Hooks::new());
    assert_eq!(a, text_ids(&jf, 5, &mut Hooks::new()));
    // a uniform of 0 draws the first token with mass, 1 − ε the last: the ids follow the draws
    let low = text_ids(
        &jf,
        0,
        &mut Hooks::new().noise(ReplayNoise::uniforms(vec![0.0; 6])),
    );
    let high = text_ids(
        &jf,
        0,
        &mut Hooks::new().noise(ReplayNoise::uniforms(vec![0.999_999; 6])),
    );
    assert_ne!(low, high);
}

#[test]
fn info_reports_the_latent_grid_and_image_size() {
    let jf = backend();
    let i = jf.info();
    assert_eq!(i.family, "janusflow");
    assert_eq!(i.image_tokens, Some((4, 4)));
    assert_eq!(i.image_size, Some((64, 64)));
    assert_eq!(jf.pixels_per_token(), 16);
}
