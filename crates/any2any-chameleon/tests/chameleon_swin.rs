//! Chameleon's swin-norm block order (30B/34B: `h = x + ln1(attn(x)); out = h + ln2(mlp(h))`)
//! against HF transformers 5.24.0 on a tiny random checkpoint (tests/fixtures/chameleon-swin-tiny,
//! made by scripts/fixtures/make_chameleon_swin.py). Tolerances: logits 1e-4 abs (image-token
//! entries exactly HF's `finfo.min`), greedy ids equal.

mod common;
use any2any_core::{GenerationParams, Modality, Request};
use common::*;

fn pipeline() -> Loaded {
    load_dir(&fixture_dir("chameleon-swin-tiny")).unwrap()
}

#[test]
fn swin_norm_logits_match_hf() {
    let p = parity("chameleon-swin-tiny");
    let c = &p["text_logits"];
    let got = pipeline()
        .last_logits(&u32s(&c["input_ids"]), &[])
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    check_masked_logits(&got, &f32s(&c["logits"]));
}

#[test]
fn swin_norm_greedy_ids_match_hf() {
    let p = parity("chameleon-swin-tiny");
    let c = &p["text_greedy"];
    let new = u32s(&c["new_ids"]);
    let out = pipeline()
        .generate(
            Request::new()
                .raw_ids(u32s(&c["input_ids"]))
                .want(Modality::Text)
                .params(GenerationParams {
                    temperature: Some(0.0),
                    max_new_tokens: Some(new.len()),
                    ..Default::default()
                }),
        )
        .unwrap();
    let got: Vec<u32> = out
        .segments
        .iter()
        .flat_map(|s| match s {
            any2any_core::Generated::Text { ids, .. } => ids.clone(),
            _ => vec![],
        })
        .collect();
    assert_eq!(got, new);
}
