//! Meta's original Chameleon / Anole layout (tests/fixtures/chameleon-raw-tiny, made by
//! scripts/fixtures/make_chameleon_raw.py from tests/fixtures/chameleon-tiny by inverting the HF
//! converter): `models/7b/{consolidated.pth, params.json}` + `tokenizer/{text_tokenizer.json,
//! vqgan.ckpt, vqgan.yaml}`. The raw checkpoint (Meta names, unpermuted q/k, interleaved RoPE) must
//! reproduce chameleon-tiny's HF parity: text logits ≤ 1e-4, greedy ids, VQ codes, decoder output
//! (from the Lightning `vqgan.ckpt`) and generated image codes; bad input gives typed errors.

mod common;
use any2any_chameleon::{ChameleonBackend, VqFormat};
use any2any_core::candle_core::{DType, Device, Tensor};
use any2any_core::{Error, Generated, GenerationParams, LoadOptions, Modality, Request};
use common::*;
use std::path::{Path, PathBuf};

fn raw_dir() -> PathBuf {
    fixture_dir("chameleon-raw-tiny")
}

fn load(dir: &Path) -> any2any_core::Result<Loaded> {
    load_dir(dir)
}

fn raw_backend() -> ChameleonBackend {
    let files = any2any_chameleon::original::resolve_dir(&raw_dir())
        .unwrap()
        .expect("original layout recognised");
    ChameleonBackend::load(&files, &LoadOptions::default()).unwrap()
}

fn image() -> any2any_core::ImageInput {
    any2any_core::imageops::load_image(&chameleon_dir().join("image.png")).unwrap()
}

fn greedy(n: usize) -> GenerationParams {
    GenerationParams {
        temperature: Some(0.0),
        max_new_tokens: Some(n),
        ..Default::default()
    }
}

fn text_ids(out: &any2any_core::Output) -> Vec<u32> {
    match &out.segments[..] {
        [Generated::Text { ids, .. }] => ids.clone(),
        other => panic!("expected one text segment, got {other:?}"),
    }
}

fn image_codes(out: &any2any_core::Output) -> Vec<u32> {
    match &out.segments[..] {
        [Generated::Image { codes, .. }] => codes.clone().unwrap(),
        other => panic!("expected one image, got {other:?}"),
    }
}

/// A scratch copy of the raw fixture that a test may break.
fn scratch() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    for sub in ["models/7b", "tokenizer"] {
        std::fs::create_dir_all(t.path().join(sub)).unwrap();
        for e in std::fs::read_dir(raw_dir().join(sub)).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, t.path().join(sub).join(p.file_name().unwrap())).unwrap();
        }
    }
    t
}

#[test]
fn root_and_model_dir_load_as_chameleon() {
    for dir in [raw_dir(), raw_dir().join("models/7b")] {
        let pipe = load(&dir).unwrap();
        assert_eq!(pipe.family(), "chameleon");
        assert!(pipe.files().config.ends_with("models/7b/params.json"));
        assert!(pipe.files().weights[0].ends_with("models/7b/consolidated.pth"));
        let info = pipe.info();
        assert!(
            info.variant.contains("original Meta layout"),
            "{}",
            info.variant
        );
        assert!(info.directions.iter().any(|d| d == "text→image"));
        assert_eq!(
            (info.hidden_size, info.layers, info.vocab_size),
            (32, 2, 64)
        );
    }
}

#[test]
fn config_and_vocab_come_from_params_and_text_tokenizer() {
    let b = raw_backend();
    let c = &b.model.cfg.backbone;
    assert_eq!(
        (c.num_heads, c.num_kv_heads, c.head_dim, c.intermediate_size),
        (4, 2, 8, 64)
    );
    assert_eq!(c.qk_norm, any2any_core::backbone::QkNorm::PerHead);
    assert_eq!(c.block, any2any_core::backbone::BlockOrder::PreNorm);
    assert_eq!(
        c.rope_layout,
        any2any_core::backbone::RopeLayout::Interleaved
    );
    assert_eq!(c.naming, any2any_core::backbone::WeightNaming::Meta);
    let p = parity("chameleon-tiny");
    let m = &p["meta"]["vocab"];
    let v = &b.model.cfg.vocab;
    assert_eq!(v.image_ids, u32s(&m["image_token_ids"]));
    assert_eq!(v.code_to_id, (4..20).collect::<Vec<u32>>());
    assert_eq!(v.ids.boi, m["boi <racm3:break>"].as_u64().unwrap() as u32);
    assert_eq!(v.ids.eoi, m["eoi <eoss>"].as_u64().unwrap() as u32);
    assert_eq!(v.ids.sep, m["sep <reserved08706>"].as_u64().unwrap() as u32);
    // the release has no `<image>`: the placeholder is `<reserved08707>`, as the HF converter maps it
    assert_eq!(v.ids.image, m["<image>"].as_u64().unwrap() as u32);
    assert_eq!(b.model.cfg.vq.num_embeddings, 16);
    assert_eq!(b.model.image_seq_length, 256);
}

#[test]
fn text_and_image_prompt_logits_match_hf() {
    let p = parity("chameleon-tiny");
    let pipe = load(&raw_dir()).unwrap();
    let c = &p["text_logits"];
    let got = pipe.last_logits(&u32s(&c["input_ids"]), &[]).unwrap();
    check_masked_logits(&got.to_vec1::<f32>().unwrap(), &f32s(&c["logits"]));
    let c = &p["image_logits"];
    let got = pipe
        .last_logits(&u32s(&c["input_ids"]), &[image()])
        .unwrap();
    check_masked_logits(&got.to_vec1::<f32>().unwrap(), &f32s(&c["logits"]));
}

#[test]
fn greedy_text_ids_match_hf() {
    let p = parity("chameleon-tiny");
    let pipe = load(&raw_dir()).unwrap();
    let c = &p["text_greedy"];
    let out = pipe
        .generate(
            Request::new()
                .raw_ids(u32s(&c["input_ids"]))
                .want(Modality::Text)
                .params(greedy(12)),
        )
        .unwrap();
    assert_eq!(text_ids(&out), u32s(&c["new_ids"]));
    // the same through text_tokenizer.json (the rendered prompt is the HF processor's)
    let out = pipe
        .generate(
            Request::new()
                .text("what is a cat?")
                .want(Modality::Text)
                .params(greedy(12)),
        )
        .unwrap();
    assert_eq!(text_ids(&out), u32s(&c["new_ids"]));
    let c = &p["image_text_greedy"];
    let out = pipe
        .generate(
            Request::new()
                .raw_ids(u32s(&c["input_ids"]))
                .image(image())
                .want(Modality::Text)
                .params(greedy(12)),
        )
        .unwrap();
    assert_eq!(text_ids(&out), u32s(&c["new_ids"]));
}

#[test]
fn vq_encode_and_decode_from_vqgan_ckpt_match_reference() {
    let p = parity("chameleon-tiny");
    let b = raw_backend();
    let (codes, h, w) = b.encode_image(&image(), true).unwrap();
    assert_eq!((h, w), (16, 16));
    assert_eq!(codes, u32s(&p["vq_encode_codes"]["codes"]));
    let pipe = load(&raw_dir()).unwrap();
    for case in ["decode", "decode_nonsquare", "decode_generated"] {
        let c = &p[case];
        let codes = u32s(&c["codes"]);
        let (h, w) = (
            c["height"].as_u64().unwrap() as usize,
            c["width"].as_u64().unwrap() as usize,
        );
        let t = Tensor::new(codes.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let raw = b
            .model
            .vq_decoder
            .as_ref()
            .unwrap()
            .decode(&t, h, w)
            .unwrap();
        let raw = raw.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let d = max_abs_diff(&raw, &f32s(&c["raw_all"]));
        assert!(d <= 1e-4, "{case}: raw max abs diff {d}");
        let img = pipe.decode_codes(&codes, h, w).unwrap();
        for (i, (g, w)) in img.as_raw().iter().zip(&u32s(&c["pixels"])).enumerate() {
            assert!((*g as i64 - *w as i64).abs() <= 1, "{case}: byte {i}");
        }
    }
}

#[test]
fn image_generation_matches_the_hf_layout() {
    let p = parity("chameleon-tiny");
    let raw = load(&raw_dir()).unwrap();
    // greedy Anole loop: the reference codes
    for case in ["image_gen_greedy", "image_gen_greedy_edit"] {
        let c = &p[case];
        let req = Request::new()
            .raw_ids(u32s(&c["prompt_ids"]))
            .want(Modality::Image)
            .params(GenerationParams {
                cfg: Some(c["guidance_scale_text"].as_f64().unwrap() as f32),
                ..greedy(c["num_codes"].as_u64().unwrap() as usize)
            });
        assert_eq!(image_codes(&raw.generate(req).unwrap()), u32s(&c["codes"]));
    }
    // sampled text → image with a seed: the same codes as the HF-layout checkpoint
    let hf = load_chameleon();
    for seed in [3u64, 11] {
        let req = || {
            Request::new()
                .text("a red cat.")
                .want(Modality::Image)
                .params(GenerationParams {
                    max_new_tokens: Some(16),
                    seed,
                    ..Default::default()
                })
        };
        let a = image_codes(&raw.generate(req()).unwrap());
        let b = image_codes(&hf.generate(req()).unwrap());
        assert_eq!(a, b, "seed {seed}");
    }
}

#[test]
fn load_vq_is_public_and_finds_the_tokenizer_dir() {
    for dir in [raw_dir(), raw_dir().join("tokenizer")] {
        let vq = any2any_chameleon::load_vq(&dir, None, DType::F32, &Device::Cpu)
            .unwrap()
            .expect("a VQGAN");
        assert_eq!(vq.files.format, VqFormat::LightningCkpt);
        assert!(vq.files.weights.ends_with("tokenizer/vqgan.ckpt"));
        assert!(vq.encoder.is_some() && vq.decoder.is_some());
        assert_eq!(vq.config.attn_resolutions, vec![16]);
    }
    let none =
        any2any_chameleon::load_vq(&raw_dir().join("models"), None, DType::F32, &Device::Cpu)
            .unwrap();
    assert!(none.is_none());
}

/// An HF checkpoint directory with the original `vqgan.ckpt` + `vqgan.yaml` (next to it, or in
/// `tokenizer/`) instead of `vqgan_decoder.safetensors` gets its image decoder from them.
#[test]
fn hf_layout_takes_the_decoder_from_vqgan_ckpt() {
    let p = parity("chameleon-tiny");
    let c = &p["decode"];
    for sub in ["", "tokenizer"] {
        let t = tempfile::tempdir().unwrap();
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            std::fs::copy(chameleon_dir().join(f), t.path().join(f)).unwrap();
        }
        std::fs::create_dir_all(t.path().join(sub)).unwrap();
        for f in ["vqgan.ckpt", "vqgan.yaml"] {
            std::fs::copy(
                raw_dir().join("tokenizer").join(f),
                t.path().join(sub).join(f),
            )
            .unwrap();
        }
        let pipe = load(t.path()).unwrap();
        assert!(pipe.info().directions.iter().any(|d| d == "text→image"));
        let (h, w) = (
            c["height"].as_u64().unwrap() as usize,
            c["width"].as_u64().unwrap() as usize,
        );
        let img = pipe.decode_codes(&u32s(&c["codes"]), h, w).unwrap();
        for (i, (g, w)) in img.as_raw().iter().zip(&u32s(&c["pixels"])).enumerate() {
            assert!((*g as i64 - *w as i64).abs() <= 1, "byte {i}");
        }
    }
}

#[test]
fn ckpt_without_state_dict_is_a_typed_error() {
    let t = scratch();
    // a valid torch pickle whose top-level dict has no `state_dict`
    std::fs::copy(
        raw_dir().join("models/7b/consolidated.pth"),
        t.path().join("tokenizer/vqgan.ckpt"),
    )
    .unwrap();
    match load(t.path()) {
        Err(Error::WeightFile { path, msg }) => {
            assert!(path.ends_with("tokenizer/vqgan.ckpt"), "{path:?}");
            assert!(msg.contains("`state_dict`"), "{msg}");
        }
        Err(other) => panic!("expected a WeightFile error, got {other:?}"),
        Ok(_) => panic!("expected an error"),
    }
}

#[test]
fn yaml_missing_a_field_is_a_typed_error() {
    let t = scratch();
    let y = t.path().join("tokenizer/vqgan.yaml");
    let text = std::fs::read_to_string(&y).unwrap();
    std::fs::write(&y, text.replace("      z_channels: 8\n", "")).unwrap();
    match load(t.path()) {
        Err(Error::Config { path, msg }) => {
            assert_eq!(path, y);
            assert!(msg.contains("model.params.ddconfig.z_channels"), "{msg}");
        }
        Err(other) => panic!("expected a Config error, got {other:?}"),
        Ok(_) => panic!("expected an error"),
    }
}

#[test]
fn params_json_missing_a_field_is_a_typed_error() {
    for (field, replace) in [
        ("dim", "\"dim\": 32,"),
        ("vocab_size", "\"vocab_size\": 64,"),
        ("n_heads", "\"n_heads\": 4,"),
    ] {
        let t = scratch();
        let pj = t.path().join("models/7b/params.json");
        let text = std::fs::read_to_string(&pj).unwrap();
        assert!(text.contains(replace));
        std::fs::write(&pj, text.replace(replace, "")).unwrap();
        match load(t.path()) {
            Err(Error::Config { path, msg }) => {
                assert_eq!(path, pj);
                assert!(msg.contains(&format!("`{field}`")), "{msg}");
            }
            Err(other) => panic!("{field}: expected a Config error, got {other:?}"),
            Ok(_) => panic!("{field}: expected an error"),
        }
    }
}

#[test]
fn incomplete_layouts_name_what_is_missing() {
    let expect_missing = |dir: &Path, needle: &str| match load(dir) {
        Err(e @ Error::MissingFile { .. }) => {
            assert!(e.to_string().contains(needle), "{e}")
        }
        Err(other) => panic!("expected MissingFile ({needle}), got {other:?}"),
        Ok(_) => panic!("expected an error ({needle})"),
    };
    // no tokenizer/
    let t = scratch();
    std::fs::remove_dir_all(t.path().join("tokenizer")).unwrap();
    expect_missing(t.path(), "text_tokenizer.json");
    expect_missing(&t.path().join("models/7b"), "text_tokenizer.json");
    // no vqgan.ckpt
    let t = scratch();
    std::fs::remove_file(t.path().join("tokenizer/vqgan.ckpt")).unwrap();
    expect_missing(t.path(), "vqgan.ckpt");
    // vqgan.ckpt without its yaml
    let t = scratch();
    std::fs::remove_file(t.path().join("tokenizer/vqgan.yaml")).unwrap();
    expect_missing(t.path(), "vqgan.yaml");
    // no weights
    let t = scratch();
    std::fs::remove_file(t.path().join("models/7b/consolidated.pth")).unwrap();
    expect_missing(t.path(), "consolidated.pth");
    // tokenizer/ without models/
    let t = scratch();
    std::fs::remove_dir_all(t.path().join("models")).unwrap();
    expect_missing(t.path(), "params.json");
    // a directory of nothing in particular: the usual "no config.json"
    let t = tempfile::tempdir().unwrap();
    expect_missing(t.path(), "config.json");
}

#[test]
fn sharded_checkpoints_are_refused_clearly() {
    let t = scratch();
    let m = t.path().join("models/7b");
    std::fs::rename(m.join("consolidated.pth"), m.join("consolidated.00.pth")).unwrap();
    // one shard alone (model_parallel_size 1) is fine
    assert!(load(t.path()).is_ok());
    std::fs::copy(m.join("consolidated.00.pth"), m.join("consolidated.01.pth")).unwrap();
    match load(t.path()) {
        Err(e @ Error::Config { .. }) => {
            let s = e.to_string();
            assert!(
                s.contains("sharded into 2 files") && s.contains("merge"),
                "{s}"
            )
        }
        Err(other) => panic!("expected a Config error, got {other:?}"),
        Ok(_) => panic!("expected an error"),
    }
}
