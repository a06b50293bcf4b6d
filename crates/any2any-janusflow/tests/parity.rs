//! JanusFlow parity against the official deepseek-ai/Janus code (and diffusers' VAE) on the tiny
//! random model of `tests/fixtures/janusflow-tiny`, written by
//! `scripts/fixtures/make_janusflow.py`.

use any2any_core::candle_core::{DType, Device, Tensor};
use any2any_core::decode::{Denoiser, FlowEuler, LatentLoop, LmHead, RowBatch, RowInput, TextLoop};
use any2any_core::sampling::{Guidance, GuidanceSpace, LogitsPipeline, SamplingParams};
use any2any_core::{
    Backend, Error, Generated, GenerationParams, Hooks, ImageInput, LoadOptions, Modality,
    ModelFiles, ReplayNoise, Request, SeededNoise, StackedNoise,
};
use any2any_janusflow::flow::{FlowDenoiser, FlowPrompts};
use any2any_janusflow::JanusFlowBackend;
use any2any_test_util::{
    copy_fixture_files, f32s, fixture_dir, fixture_image, max_abs_diff, parity, u32s,
    worst_level_diff,
};

const FIX: &str = "janusflow-tiny";

fn backend() -> JanusFlowBackend {
    let files = ModelFiles::from_dir(&fixture_dir(FIX)).unwrap();
    JanusFlowBackend::load(&files, &LoadOptions::default()).unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn mmu_request() -> Request {
    Request::new()
        .image(fixture_image(FIX, "image.png"))
        .text("What is in the image?")
        .want(Modality::Text)
}

/// Greedy ids for `n` steps without stop ids, through the core's TextLoop.
fn greedy(jf: &JanusFlowBackend, embeds: &Tensor, n: usize) -> Vec<u32> {
    let m = jf.model();
    let (mut batch, h) = RowBatch::prefill(&m.decoder, &[RowInput::Embeds(embeds)], n).unwrap();
    let pipe = LogitsPipeline::new(None, SamplingParams::greedy());
    let head = LmHead {
        decoder: &m.decoder,
        head: &m.lm_head,
    };
    let mut noise = StackedNoise::new(vec![(Box::new(SeededNoise::new(0)), 1)]);
    let rows = TextLoop::new(&pipe, n, &[])
        .run(
            &mut batch,
            &head,
            h,
            &mut noise,
            &mut Hooks::new(),
            &mut |_, _| any2any_core::decode::TokenAction::Continue,
        )
        .unwrap();
    rows[0].ids.clone()
}

#[test]
fn understanding_prompt_pixels_logits_and_greedy_ids() {
    let p = parity(FIX);
    let jf = backend();
    let req = mmu_request();
    let (ids, images) = jf.render(&req).unwrap();
    assert_eq!(ids, u32s(&p["mmu_ids"]), "prompt ids");
    // preprocessing: resize (PIL bicubic) + pad with the mean colour
    let px = jf.pixels(images[0]).unwrap();
    let levels: Vec<f32> = flat(&((px * 127.5).unwrap() + 127.5).unwrap().round().unwrap());
    let err = max_abs_diff(&levels, &f32s(&p["mmu_pixel_levels"]));
    assert!(err <= 1.0, "preprocessed image differs by {err} levels");
    let imgs: Vec<ImageInput> = images.into_iter().cloned().collect();
    let logits = jf.last_logits(&ids, &imgs).unwrap();
    let err = max_abs_diff(&flat(&logits), &f32s(&p["mmu_last_logits"]));
    eprintln!("mmu last logits: max |Δ| = {err:e}");
    assert!(err <= 1e-4, "understanding logits differ by {err}");
    let e = jf.embed(&ids, &imgs.iter().collect::<Vec<_>>()).unwrap();
    let want = u32s(&p["mmu_greedy_ids"]);
    assert_eq!(greedy(&jf, &e, want.len()), want);
    // through the backend: the same ids up to and including EOS
    let out = jf
        .generate_batch(
            &[req.params(GenerationParams {
                max_new_tokens: Some(8),
                ..Default::default()
            })],
            &mut Hooks::new(),
        )
        .unwrap();
    let Generated::Text { ids: got, .. } = &out[0].segments[0] else {
        panic!("text")
    };
    let eos = jf.special_ids().eos;
    let end = want
        .iter()
        .position(|&i| i == eos)
        .map_or(want.len(), |i| i + 1);
    assert_eq!(got, &want[..end]);
}

#[test]
fn text_to_text_prompt_logits_and_greedy_ids() {
    let p = parity(FIX);
    let jf = backend();
    let req = Request::new().text("Say hi.").want(Modality::Text);
    let (ids, _) = jf.render(&req).unwrap();
    assert_eq!(ids, u32s(&p["t2t_ids"]));
    let logits = jf.last_logits(&ids, &[]).unwrap();
    let err = max_abs_diff(&flat(&logits), &f32s(&p["t2t_last_logits"]));
    eprintln!("t2t last logits: max |Δ| = {err:e}");
    assert!(err <= 1e-4, "text logits differ by {err}");
    let e = jf.embed(&ids, &[]).unwrap();
    assert_eq!(greedy(&jf, &e, 8), u32s(&p["t2t_greedy_ids"]));
}

fn t2i_setup(jf: &JanusFlowBackend) -> (Vec<u32>, usize, Tensor) {
    let p = parity(FIX);
    let req = Request::new().text("a red fox").want(Modality::Image);
    let (ids, _) = jf.render(&req).unwrap();
    assert_eq!(ids, u32s(&p["t2i_ids"]), "t2i prompt ids");
    let b = p["t2i_batch"].as_u64().unwrap() as usize;
    let z0 = Tensor::from_vec(f32s(&p["t2i_initial_latent"]), (b, 4, 8, 8), &Device::Cpu).unwrap();
    (ids, b, z0)
}

#[test]
fn flow_velocities_final_latent_and_pixels_match_the_reference() {
    let p = parity(FIX);
    let jf = backend();
    let (ids, b, z0) = t2i_setup(&jf);
    let steps = p["t2i_steps"].as_u64().unwrap() as usize;
    let w = p["t2i_cfg"].as_f64().unwrap() as f32;
    let prompts = FlowPrompts::new(jf.model(), &vec![ids; b], jf.special_ids().pad, true).unwrap();
    let mut den = FlowDenoiser::cached(jf.model(), prompts, 17)
        .unwrap()
        .record();
    let g = Guidance::two_stream(w, GuidanceSpace::Logits);
    let lp = LatentLoop {
        guidance: Some(&g),
        stage: "flow",
    };
    let mut sched = FlowEuler::new(steps, 1000.0).unwrap();
    let z = lp
        .run(
            z0,
            &mut den,
            &mut sched,
            &mut SeededNoise::new(0),
            &mut Hooks::new(),
        )
        .unwrap();
    let rec = den.recorded.take().unwrap();
    for (i, (v, want)) in rec
        .iter()
        .zip(p["t2i_step_outputs"].as_array().unwrap())
        .enumerate()
    {
        let (c, u) = (v.narrow(0, 0, b).unwrap(), v.narrow(0, b, b).unwrap());
        let guided = ((&c * w as f64).unwrap() - (&u * (w - 1.0) as f64).unwrap()).unwrap();
        let ec = max_abs_diff(&flat(&c), &f32s(&want["v_cond"]));
        let eg = max_abs_diff(&flat(&guided), &f32s(&want["v"]));
        eprintln!("step {i}: v_cond max |Δ| = {ec:e}, guided v max |Δ| = {eg:e}");
        assert!(
            ec <= 1e-4 && eg <= 1e-4,
            "step {i}: velocities differ by {ec} / {eg}"
        );
    }
    let err = max_abs_diff(&flat(&z), &f32s(&p["t2i_final_latent"]));
    eprintln!("final latent: max |Δ| = {err:e}");
    assert!(err <= 1e-4, "final latent differs by {err}");
    let px = jf.vae().unwrap().decode_scaled(&z).unwrap();
    let first = px
        .get(0)
        .unwrap()
        .narrow(1, 0, 8)
        .unwrap()
        .narrow(2, 0, 8)
        .unwrap();
    let err = max_abs_diff(&flat(&first), &f32s(&p["t2i_decoded_first"]));
    assert!(err <= 1e-3, "decoded pixels differ by {err}");
}

#[test]
fn backend_images_under_replayed_noise_are_within_one_level() {
    let p = parity(FIX);
    let jf = backend();
    let b = p["t2i_batch"].as_u64().unwrap() as usize;
    let req = Request::new()
        .text("a red fox")
        .want(Modality::Image)
        .num_outputs(b)
        .params(GenerationParams {
            steps: Some(p["t2i_steps"].as_u64().unwrap() as usize),
            cfg: Some(p["t2i_cfg"].as_f64().unwrap() as f32),
            ..Default::default()
        });
    let noise = ReplayNoise::new(Vec::new(), f32s(&p["t2i_initial_latent"]));
    let mut steps = Vec::new();
    let mut hooks = Hooks::new()
        .noise(noise)
        .on_progress(|pr| steps.push((pr.stage.to_string(), pr.step)));
    let out = jf.generate_batch(&[req], &mut hooks).unwrap();
    drop(hooks);
    // the flow steps, then the VAE decode image by image (step i of b, then b)
    let flow = (0..=4).map(|i| (String::from("flow steps"), i));
    let vae = (0..=b).map(|i| (String::from("vae decode"), i));
    let want: Vec<(String, usize)> = flow.chain(vae).collect();
    assert_eq!(steps, want);
    let want = u32s(&p["t2i_pixels"]);
    let got: Vec<u8> = out
        .iter()
        .flat_map(|o| o.images()[0].as_raw().clone())
        .collect();
    let worst = worst_level_diff(&got, &want);
    assert!(worst <= 1, "pixels differ by {worst} levels");
}

#[test]
fn cached_prefix_equals_recomputed_sequence() {
    let jf = backend();
    let (ids, _, _) = t2i_setup(&jf);
    let short = jf
        .render(&Request::new().text("fox").want(Modality::Image))
        .unwrap()
        .0;
    let prompts = vec![ids, short];
    let make = || FlowPrompts::new(jf.model(), &prompts, jf.special_ids().pad, true).unwrap();
    let x = Tensor::randn(0f32, 1.0, (4, 4, 8, 8), &Device::Cpu).unwrap();
    let mut cached = FlowDenoiser::cached(jf.model(), make(), 17).unwrap();
    let mut full = FlowDenoiser::recompute(jf.model(), make());
    for (step, t) in [0.0, 250.0, 500.0].into_iter().enumerate() {
        let a = cached.predict(&x, t, step).unwrap();
        let b = full.predict(&x, t, step).unwrap();
        let err = max_abs_diff(&flat(&a), &flat(&b));
        assert!(err <= 1e-5, "t {t}: cached and recomputed differ by {err}");
    }
}

#[test]
fn batched_prompts_match_each_alone() {
    let jf = backend();
    let req = |t: &str, seed| {
        Request::new()
            .text(t)
            .want(Modality::Image)
            .seed(seed)
            .params(GenerationParams {
                steps: Some(2),
                ..Default::default()
            })
    };
    let a = req("a red fox", 3);
    let b = req("sky", 4).num_outputs(2);
    let reqs = [a.clone(), b.clone()];
    let refs: Vec<&Request> = reqs.iter().collect();
    let both = jf.generate_latents(&refs, &mut Hooks::new()).unwrap();
    let alone_a = jf.generate_latents(&[&a], &mut Hooks::new()).unwrap();
    let alone_b = jf.generate_latents(&[&b], &mut Hooks::new()).unwrap();
    let alone = Tensor::cat(&[alone_a, alone_b], 0).unwrap();
    let err = max_abs_diff(&flat(&both), &flat(&alone));
    assert!(
        err <= 1e-4,
        "batched latents differ from lone runs by {err}"
    );
    // the same seed gives the same bytes
    let again = jf.generate_latents(&refs, &mut Hooks::new()).unwrap();
    assert_eq!(flat(&both), flat(&again));
}

#[test]
fn bad_inputs_get_named_errors() {
    let jf = backend();
    let t2i = Request::new().text("a red fox").want(Modality::Image);
    // steps 0
    let r = t2i.clone().params(GenerationParams {
        steps: Some(0),
        ..Default::default()
    });
    let e = jf.generate_batch(&[r], &mut Hooks::new()).unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument { name, .. } if name == "steps"),
        "{e}"
    );
    // a noise file with the wrong number of values for a 4×8×8 latent
    let noise = ReplayNoise::new(Vec::new(), vec![0.0; 100])
        .normals_from("noise-normal", Some("z.npy".into()));
    let e = jf
        .generate_batch(std::slice::from_ref(&t2i), &mut Hooks::new().noise(noise))
        .unwrap_err();
    assert!(
        e.to_string().contains("noise-normal") && e.to_string().contains("z.npy"),
        "{e}"
    );
    // size not a multiple of 16
    let r = t2i.clone().params(GenerationParams {
        size: Some((40, 40)),
        ..Default::default()
    });
    let e = jf.generate_batch(&[r], &mut Hooks::new()).unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument { name, .. } if name == "size"),
        "{e}"
    );
    // an image with a text→image request
    let r = t2i.image(fixture_image(FIX, "image.png"));
    assert!(jf.generate_batch(&[r], &mut Hooks::new()).is_err());
}

#[test]
fn missing_vae_is_named_only_when_an_image_is_decoded() {
    let dir = std::env::temp_dir().join(format!("janusflow-novae-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_fixture_files(FIX, &dir);
    let files = ModelFiles::from_dir(&dir).unwrap();
    let opts = LoadOptions {
        offline: true,
        ..Default::default()
    };
    let jf = JanusFlowBackend::load(&files, &opts).unwrap();
    let text = Request::new()
        .text("Say hi.")
        .want(Modality::Text)
        .params(GenerationParams {
            max_new_tokens: Some(2),
            ..Default::default()
        });
    jf.generate_batch(&[text], &mut Hooks::new()).unwrap();
    let img = Request::new().text("a red fox").want(Modality::Image);
    let e = jf.generate_batch(&[img], &mut Hooks::new()).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, Error::MissingFile { .. })
            && msg.contains("vae")
            && msg.contains("--component vae="),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
