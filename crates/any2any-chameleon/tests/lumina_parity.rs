//! Parity of the Lumina-mGPT layout on a tiny random checkpoint (tests/fixtures/lumina-tiny, made
//! by scripts/fixtures/make_lumina.py): the language model is HF transformers 5.24.0's Chameleon
//! (no image-token mask: `mask_image_logits: false`), the generation rules are Lumina-mGPT's own
//! logits processors from `lumina_mgpt/inference_solver.py` (size tokens, newline per row,
//! single-stream CFG from the image start, image/text top-k), sampled under replayed uniforms;
//! the decoder is the official chameleon taming VQGAN. The tiny vocabulary keeps the real id
//! layout (image tokens 4..8195, size token n = 8804 + n), since the reference hard-codes it.
//! Tolerances: logits 1e-4 abs, ids and codes equal, pixels within 1 level.

mod common;
use any2any_chameleon::LuminaBackend;
use any2any_core::{Backend, ReplayNoise};
use any2any_core::{
    Generated, GenerationParams, Hooks, LoadOptions, Modality, ModelFiles, Request,
};
use common::*;

fn dir() -> std::path::PathBuf {
    fixture_dir("lumina-tiny")
}

fn pipeline() -> Loaded {
    load_dir(&dir()).unwrap()
}

fn backend() -> LuminaBackend {
    let opts = LoadOptions::default();
    let files = ModelFiles::resolve(dir().to_str().unwrap(), &opts).unwrap();
    LuminaBackend::load(&files, &opts).unwrap()
}

fn params(case: &serde_json::Value) -> GenerationParams {
    let p = &case["params"];
    GenerationParams {
        cfg: Some(p["cfg"].as_f64().unwrap() as f32),
        temperature: Some(p["temperature"].as_f64().unwrap() as f32),
        top_k: Some(p["text_top_k"].as_u64().unwrap() as usize),
        image_top_k: Some(p["image_top_k"].as_u64().unwrap() as usize),
        max_new_tokens: Some(p["max_new_tokens"].as_u64().unwrap() as usize),
        ..Default::default()
    }
}

/// Replays one case through the free-running loop (interleaved output, as the reference runs).
fn replay(case: &serde_json::Value) -> any2any_core::Output {
    let req = Request::new()
        .raw_ids(u32s(&case["prompt_ids"]))
        .want(Modality::Interleaved)
        .params(params(case));
    let mut hooks = Hooks::new().noise(ReplayNoise::uniforms(f32s(&case["uniforms"])));
    pipeline().generate_with(req, &mut hooks).unwrap()
}

/// The ids an output stands for: text ids, and for an image its rows + newline + EOI.
fn output_ids(out: &any2any_core::Output, newline: u32, eoi: u32) -> Vec<u32> {
    let mut ids = Vec::new();
    for s in &out.segments {
        match s {
            Generated::Text { ids: t, .. } => ids.extend(t),
            Generated::Image { codes, grid, .. } => {
                let (_, w) = grid.unwrap();
                for row in codes.as_ref().unwrap().chunks(w) {
                    ids.extend(row.iter().map(|c| c + 4));
                    ids.push(newline);
                }
                ids.push(eoi);
            }
            other => panic!("unexpected segment {other:?}"),
        }
    }
    ids
}

#[test]
fn layout_tokens_from_the_vocabulary() {
    let b = backend();
    let lt = &b.lumina;
    assert_eq!(lt.newline, 8803);
    assert_eq!(lt.size_token(1).unwrap(), 8805);
    assert_eq!(lt.units_of(8806), Some(2));
    assert_eq!(lt.units_of(8803), None);
    assert!(lt.size_token(0).is_err());
    assert!(b.info().variant.contains("Lumina-mGPT"));
    // The checkpoint stores q/k-norm as [1, head_dim] (Lumina's model-parallel layout), so the
    // logits tests below run the broadcast to every head.
    let w = any2any_core::candle_core::safetensors::load(
        dir().join("model.safetensors"),
        &any2any_core::candle_core::Device::Cpu,
    )
    .unwrap();
    let q = &w["model.layers.0.self_attn.q_norm.weight"];
    assert_eq!(q.dims(), [1, 8]);
}

#[test]
fn text_logits_match_hf_without_image_mask() {
    let p = parity("lumina-tiny");
    let c = &p["text_logits"];
    let got = pipeline()
        .last_logits(&u32s(&c["input_ids"]), &[])
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let d = max_abs_diff(&got, &f32s(&c["logits"]));
    assert!(d <= 1e-4, "max abs diff {d}");
}

#[test]
fn image_block_and_logits_match_reference() {
    let p = parity("lumina-tiny");
    let c = &p["image_logits"];
    let img = any2any_core::imageops::load_image(&dir().join("image.png")).unwrap();
    let b = backend();
    let ids = u32s(&c["input_ids"]);
    // [BOS] + block + text: the block from our encoder and layout equals the reference's.
    let block = b.image_block(&img).unwrap();
    assert_eq!(block, ids[1..1 + block.len()].to_vec());
    // The CLI contract: `<image>` in raw ids stands for the block.
    let mut raw = vec![ids[0], b.model.cfg.vocab.ids.image];
    raw.extend_from_slice(&ids[1 + block.len()..]);
    let got = pipeline()
        .last_logits(&raw, std::slice::from_ref(&img))
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let d = max_abs_diff(&got, &f32s(&c["logits"]));
    assert!(d <= 1e-4, "max abs diff {d}");
}

#[test]
fn guided_image_then_text_matches_reference() {
    let p = parity("lumina-tiny");
    let c = &p["t2i_cfg"];
    let out = replay(c);
    assert_eq!(output_ids(&out, 8803, 8196), u32s(&c["new_ids"]));
    let images = out.images();
    assert_eq!(images.len(), 1);
    let Generated::Image { codes, grid, .. } = &out.segments[0] else {
        panic!("the first segment is not the image")
    };
    assert_eq!(codes.as_ref().unwrap(), &u32s(&c["codes"]));
    assert_eq!(grid.unwrap(), (2, 4));
    // Decoded with the official taming decoder: pixels within one level.
    let d = &p["decode_t2i_cfg"];
    let want = u32s(&d["pixels"]);
    let got: Vec<u32> = images[0].as_raw().iter().map(|&v| v as u32).collect();
    assert_eq!(got.len(), want.len());
    let worst = got.iter().zip(&want).map(|(a, b)| a.abs_diff(*b)).max();
    assert!(worst <= Some(1), "pixels differ by {worst:?}");
}

#[test]
fn unguided_image_matches_reference() {
    let p = parity("lumina-tiny");
    let c = &p["t2i_nocfg"];
    let out = replay(c);
    assert_eq!(output_ids(&out, 8803, 8196), u32s(&c["new_ids"]));
}

#[test]
fn free_running_text_matches_reference() {
    let p = parity("lumina-tiny");
    let c = &p["text"];
    let out = replay(c);
    assert_eq!(output_ids(&out, 8803, 8196), u32s(&c["new_ids"]));
    assert!(out.images().is_empty());
}

#[test]
fn step0_guidance_logits_match_reference() {
    // The conditional and unconditional logits of the first guided step: the unconditional
    // context is [BOI, h, w] on its own positions from 0.
    let p = parity("lumina-tiny");
    let c = &p["t2i_cfg"];
    let prompt = u32s(&c["prompt_ids"]);
    let s0 = &c["step0_logits"];
    let pl = pipeline();
    let cond = pl
        .last_logits(&prompt, &[])
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(max_abs_diff(&cond, &f32s(&s0["cond"])) <= 1e-4);
    let uncond = pl
        .last_logits(&prompt[prompt.len() - 3..], &[])
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(max_abs_diff(&uncond, &f32s(&s0["uncond"])) <= 1e-4);
}

#[test]
fn text_to_image_writes_the_header_for_the_requested_size() {
    // want=image: instruction + size header are written, generation stops at EOI; the same
    // seed gives the same image, and the grid follows --size.
    let pl = pipeline();
    let req = |seed| {
        Request::new()
            .text("a red cat.")
            .want(Modality::Image)
            .params(GenerationParams {
                size: Some((8, 4)),
                seed,
                ..Default::default()
            })
    };
    let a = pl.generate(req(7)).unwrap();
    let b = pl.generate(req(7)).unwrap();
    assert_eq!(a.segments.len(), 1);
    let (
        Generated::Image {
            codes: ca,
            grid,
            image,
        },
        Generated::Image { codes: cb, .. },
    ) = (&a.segments[0], &b.segments[0])
    else {
        panic!("not an image")
    };
    assert_eq!(*grid, Some((2, 4)));
    assert_eq!((image.width(), image.height()), (8, 4));
    assert_eq!(ca, cb);
    // The prompt the reference would be given (instruction, sep, BOI, h, w).
    let b = backend();
    let tok = b.tokenizer().unwrap();
    let text = "Generate an image of 8x4 according to the following prompt:\na red cat.";
    let mut want = vec![0];
    want.extend(tok.encode(text, false).unwrap().get_ids());
    want.extend([8710, 8197, 8805, 8806]);
    let p = parity("lumina-tiny");
    assert_eq!(want, u32s(&p["t2i_cfg"]["prompt_ids"]));
}

#[test]
fn bad_sizes_and_budgets_are_named() {
    let pl = pipeline();
    let err = pl
        .generate(
            Request::new()
                .text("x")
                .want(Modality::Image)
                .params(GenerationParams {
                    size: Some((6, 4)),
                    ..Default::default()
                }),
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("size") && err.contains("multiples of 4"),
        "{err}"
    );
    let err = pl
        .generate(
            Request::new()
                .text("x")
                .want(Modality::Image)
                .params(GenerationParams {
                    size: Some((8, 4)),
                    max_new_tokens: Some(5),
                    ..Default::default()
                }),
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("max-new-tokens") && err.contains("inside an image"),
        "{err}"
    );
    // A raw prompt whose "size" token is not one.
    let err = raw_text_error(&pl, vec![0, 8197, 40, 41]);
    assert!(err.contains("size token"), "{err}");
}

/// The error of a text request for raw `ids` (3 new tokens at most).
fn raw_text_error(pl: &Loaded, ids: Vec<u32>) -> String {
    pl.generate(
        Request::new()
            .raw_ids(ids)
            .want(Modality::Text)
            .params(GenerationParams {
                max_new_tokens: Some(3),
                ..Default::default()
            }),
    )
    .unwrap_err()
    .to_string()
}

/// Text output is text only: the image start (BOI) is masked out of the text logits, so a
/// sampled text request never opens an image and every seed succeeds (before, a seed that
/// opened one could fail on its size tokens).
#[test]
fn sampled_text_requests_never_open_an_image() {
    let pl = pipeline();
    let boi = backend().model.cfg.vocab.ids.boi;
    for seed in 0..20 {
        let out =
            pl.generate(Request::new().text("hello").want(Modality::Text).params(
                GenerationParams {
                    temperature: Some(1.0),
                    max_new_tokens: Some(64),
                    seed,
                    ..Default::default()
                },
            ))
            .unwrap();
        match &out.segments[..] {
            [Generated::Text { ids, .. }] => assert!(!ids.contains(&boi), "seed {seed}"),
            other => panic!("seed {seed}: expected one text segment, got {other:?}"),
        }
    }
    // a text request cannot continue an image its prompt opens
    let err = raw_text_error(&pl, vec![0, 8197]);
    assert!(err.contains("`to`") && err.contains("image"), "{err}");
}
