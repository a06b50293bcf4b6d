//! Parity of the Janus backend with HF transformers 5.24.0 on a tiny random checkpoint
//! (tests/fixtures/janus-tiny, made by scripts/fixtures/make_janus.py).
//! Tolerances: logits 1e-4 abs, ids equal, pixels within 1 level.

use any2any_core::{Backend, GenerationParams, Hooks, Modality, ReplayNoise, Request};
use any2any_test_util::*;

fn load_janus() -> Box<dyn Backend> {
    load_fixture("janus-tiny", any2any_janus::load)
}

fn image() -> any2any_core::ImageInput {
    fixture_image("janus-tiny", "image.png")
}

#[test]
fn text_logits_match_hf() {
    let p = parity("janus-tiny");
    let c = &p["text_logits"];
    let pipe = load_janus();
    let got = pipe
        .last_logits(&u32s(&c["input_ids"]), &[])
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let d = max_abs_diff(&got, &f32s(&c["logits"]));
    assert!(d <= 1e-4, "max abs diff {d}");
}

#[test]
fn image_prompt_logits_match_hf() {
    let p = parity("janus-tiny");
    let c = &p["image_logits"];
    let pipe = load_janus();
    let got = pipe
        .last_logits(&u32s(&c["input_ids"]), &[image()])
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let d = max_abs_diff(&got, &f32s(&c["logits"]));
    assert!(d <= 1e-4, "max abs diff {d}");
}

fn greedy_text(ids: Vec<u32>, images: Vec<any2any_core::ImageInput>, n: usize) -> Vec<u32> {
    let pipe = load_janus();
    let mut r = Request::new()
        .raw_ids(ids)
        .want(Modality::Text)
        .params(GenerationParams {
            temperature: Some(0.0),
            max_new_tokens: Some(n),
            ..Default::default()
        });
    for i in images {
        r = r.image(i);
    }
    let out = generate(pipe.as_ref(), r).unwrap();
    match &out.segments[0] {
        any2any_core::Generated::Text { ids, .. } => ids.clone(),
        other => panic!("expected text, got {other:?}"),
    }
}

#[test]
fn greedy_text_ids_match_hf() {
    let p = parity("janus-tiny");
    let c = &p["text_greedy"];
    let want = u32s(&c["new_ids"]);
    assert_eq!(greedy_text(u32s(&c["input_ids"]), vec![], 12), want);
}

#[test]
fn greedy_text_with_image_matches_hf() {
    let p = parity("janus-tiny");
    let c = &p["image_text_greedy"];
    let want = u32s(&c["new_ids"]);
    // HF stops at eos (id 2) and keeps it.
    assert_eq!(greedy_text(u32s(&c["input_ids"]), vec![image()], 12), want);
}

fn image_codes(ids: Vec<u32>, params: GenerationParams, uniforms: Option<Vec<f32>>) -> Vec<u32> {
    let pipe = load_janus();
    let req = Request::new()
        .raw_ids(ids)
        .want(Modality::Image)
        .params(params);
    let mut hooks = Hooks::new();
    if let Some(u) = uniforms {
        hooks = hooks.noise(ReplayNoise::uniforms(u));
    }
    let out = generate_with(pipe.as_ref(), req, &mut hooks).unwrap();
    match &out.segments[0] {
        any2any_core::Generated::Image {
            codes: Some(c),
            grid,
            ..
        } => {
            assert_eq!(*grid, Some((4, 4)));
            c.clone()
        }
        other => panic!("expected image with codes, got {other:?}"),
    }
}

#[test]
fn greedy_cfg_image_codes_match_hf() {
    let p = parity("janus-tiny");
    let c = &p["image_greedy"];
    let codes = image_codes(
        u32s(&c["input_ids"]),
        GenerationParams {
            temperature: Some(0.0),
            cfg: Some(5.0),
            ..Default::default()
        },
        None,
    );
    assert_eq!(codes, u32s(&c["codes"]));
}

#[test]
fn uncond_stream_follows_reference_rule() {
    let p = parity("janus-tiny");
    let c = &p["image_greedy"];
    let files = fixture_files("janus-tiny");
    let j = any2any_janus::JanusBackend::load(&files, &Default::default()).unwrap();
    assert_eq!(
        j.uncond_ids(&u32s(&c["input_ids"])),
        u32s(&c["uncond_input_ids"])
    );
}

#[test]
fn sampled_image_codes_match_hf_under_replayed_noise() {
    let p = parity("janus-tiny");
    for case in p["image_sampled"].as_array().unwrap() {
        let pr = &case["params"];
        let top_k = pr["top_k"].as_u64().filter(|&k| k > 0).map(|k| k as usize);
        let top_p = pr["top_p"].as_f64().map(|x| x as f32).filter(|&x| x < 1.0);
        let params = GenerationParams {
            temperature: Some(pr["temperature"].as_f64().unwrap() as f32),
            top_k,
            top_p,
            cfg: Some(pr["guidance_scale"].as_f64().unwrap() as f32),
            ..Default::default()
        };
        let codes = image_codes(
            u32s(&case["input_ids"]),
            params,
            Some(f32s(&case["uniforms"])),
        );
        assert_eq!(codes, u32s(&case["codes"]), "case {pr}");
    }
}

#[test]
fn sampled_text_matches_hf_under_replayed_noise() {
    let p = parity("janus-tiny");
    let c = &p["text_sampled"];
    let pr = &c["params"];
    let pipe = load_janus();
    let req = Request::new()
        .raw_ids(u32s(&c["input_ids"]))
        .want(Modality::Text)
        .params(GenerationParams {
            temperature: Some(pr["temperature"].as_f64().unwrap() as f32),
            top_k: Some(pr["top_k"].as_u64().unwrap() as usize),
            top_p: Some(pr["top_p"].as_f64().unwrap() as f32),
            max_new_tokens: Some(pr["max_new_tokens"].as_u64().unwrap() as usize),
            ..Default::default()
        });
    let mut hooks = Hooks::new().noise(ReplayNoise::uniforms(f32s(&c["uniforms"])));
    let out = generate_with(pipe.as_ref(), req, &mut hooks).unwrap();
    match &out.segments[0] {
        any2any_core::Generated::Text { ids, .. } => assert_eq!(ids, &u32s(&c["new_ids"])),
        other => panic!("expected text, got {other:?}"),
    }
}

#[test]
fn decoded_pixels_match_hf_within_one_level() {
    let p = parity("janus-tiny");
    let c = &p["decode"];
    let pipe = load_janus();
    let img = pipe
        .decode_codes(
            &u32s(&c["codes"]),
            c["height"].as_u64().unwrap() as usize,
            c["width"].as_u64().unwrap() as usize,
        )
        .unwrap();
    assert_eq!(img.dimensions(), (16, 16));
    let want = u32s(&c["pixels"]);
    let worst = worst_level_diff(img.as_raw(), &want);
    assert!(worst <= 1, "worst pixel diff {worst}");
}
