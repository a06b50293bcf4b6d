//! Parity of the Emu3 backend with HF transformers 5.24.0 on a tiny random checkpoint
//! (tests/fixtures/emu3-tiny, made by scripts/fixtures/make_emu3.py).
//! Tolerances: logits 1e-4 abs, ids equal, pixels within 1 level.

use any2any_core::candle_core::{DType, Device, Tensor};
use any2any_core::sampling::{Guidance, GuidanceSpace, LogitsPipeline, SamplingParams};
use any2any_core::ModelFiles;
use any2any_core::{Backend, Modality, NoiseSource, ReplayNoise, Request, SeededNoise};
use any2any_emu3::{Emu3Config, Emu3Model, Slot};
use any2any_test_util::*;

fn load() -> Emu3Model {
    let dir = fixture_dir("emu3-tiny");
    let files = ModelFiles::from_dir(&dir).unwrap();
    let cfg: Emu3Config = any2any_core::loading::read_json(&dir.join("config.json")).unwrap();
    let vb = files.var_builder(DType::F32, &Device::Cpu).unwrap();
    Emu3Model::load(vb, &cfg).unwrap()
}

#[test]
fn vocab_is_parsed_by_name() {
    let p = parity("emu3-tiny");
    let m = load();
    let v = &p["meta"]["vocab"];
    assert_eq!(m.vocab.visual, u32s(&v["visual_ids"]));
    assert_eq!(m.vocab.eol, 41);
    assert_eq!(m.vocab.eof, 42);
    assert_eq!((m.vocab.bos, m.vocab.eos), (43, 44));
    assert_eq!((m.vocab.boi, m.vocab.eoi, m.vocab.img_token), (45, 46, 47));
}

#[test]
fn text_logits_match_hf() {
    let p = parity("emu3-tiny");
    let c = &p["text_logits"];
    let m = load();
    let got = m
        .last_logits(&u32s(&c["input_ids"]))
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let d = max_abs_diff(&got, &f32s(&c["logits"]));
    assert!(d <= 1e-4, "max abs diff {d}");
}

#[test]
fn greedy_text_ids_match_hf() {
    let p = parity("emu3-tiny");
    let c = &p["text_greedy"];
    let want = u32s(&c["new_ids"]);
    let m = load();
    let got = m
        .greedy_text(&u32s(&c["input_ids"]), want.len(), Some(m.vocab.eos))
        .unwrap();
    assert_eq!(got, want);
}

fn check_decode(case: &str) {
    let p = parity("emu3-tiny");
    let c = &p[case];
    let m = load();
    let (h, w) = (
        c["height"].as_u64().unwrap() as usize,
        c["width"].as_u64().unwrap() as usize,
    );
    let raw = m.decode_codes(&u32s(&c["codes"]), h, w).unwrap();
    let got = raw.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let d = max_abs_diff(&got, &f32s(&c["raw_all"]));
    assert!(d <= 1e-4, "{case}: raw max abs diff {d}");
    let px = any2any_emu3::vq::to_u8_hwc(&raw).unwrap().remove(0);
    let want = u32s(&c["pixels"]);
    assert_eq!(px.len(), want.len());
    let worst = px
        .iter()
        .zip(&want)
        .map(|(&a, &b)| (a as i64 - b as i64).abs())
        .max()
        .unwrap();
    assert!(worst <= 1, "{case}: pixel diff {worst}");
}

#[test]
fn vq_decode_matches_hf() {
    check_decode("vq_decode");
}

#[test]
fn decode_generated_matches_hf() {
    check_decode("decode_generated");
}

fn pixel_values() -> Tensor {
    let img = any2any_core::image::open(fixture_dir("emu3-tiny").join("image.png"))
        .unwrap()
        .to_rgb8();
    let (w, h) = img.dimensions();
    let v: Vec<f32> = img
        .pixels()
        .flat_map(|p| p.0)
        .map(|u| ((u as f64 * (1.0 / 255.0)) as f32 - 0.5) / 0.5)
        .collect();
    Tensor::from_vec(v, (1, h as usize, w as usize, 3), &Device::Cpu)
        .unwrap()
        .permute((0, 3, 1, 2))
        .unwrap()
        .contiguous()
        .unwrap()
}

#[test]
fn vq_encode_codes_match_hf() {
    let p = parity("emu3-tiny");
    let c = &p["vq_encode_codes"];
    let m = load();
    let pv = pixel_values();
    let first = pv.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(max_abs_diff(&first[..16], &f32s(&c["pixel_values_first16"])) <= 1e-6);
    let codes = m.vq_encoder.encode(&pv).unwrap();
    assert_eq!(codes.dims(), &[1, 5, 6]);
    let got = codes.flatten_all().unwrap().to_vec1::<u32>().unwrap();
    assert_eq!(got, u32s(&c["codes"]));
}

#[test]
fn image_prompt_logits_match_hf() {
    let p = parity("emu3-tiny");
    let c = &p["image_logits"];
    let m = load();
    let img = m.image_ids(&pixel_values()).unwrap();
    assert_eq!(img, u32s(&p["vq_encode_codes"]["bpe_ids_with_eol"]));
    let ids = m.substitute_images(&u32s(&c["input_ids"]), &[img]).unwrap();
    assert_eq!(ids, u32s(&c["effective_input_ids"]));
    let got = m.last_logits(&ids).unwrap().to_vec1::<f32>().unwrap();
    let d = max_abs_diff(&got, &f32s(&c["logits"]));
    assert!(d <= 1e-4, "max abs diff {d}");
}

#[test]
fn greedy_text_with_image_matches_hf() {
    let p = parity("emu3-tiny");
    let c = &p["image_text_greedy"];
    let m = load();
    let img = m.image_ids(&pixel_values()).unwrap();
    let ids = m.substitute_images(&u32s(&c["input_ids"]), &[img]).unwrap();
    let want = u32s(&c["new_ids"]);
    let got = m.greedy_text(&ids, want.len(), Some(m.vocab.eos)).unwrap();
    assert_eq!(got, want);
}

fn gen_case(case: &str, sampled: bool) {
    let p = parity("emu3-tiny");
    let c = &p[case];
    let m = load();
    let (h, w) = (
        c["height"].as_u64().unwrap() as usize,
        c["width"].as_u64().unwrap() as usize,
    );
    let sched: Vec<&str> = c["allowed_schedule"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let names: Vec<String> = m
        .vocab
        .image_schedule(h, w)
        .unwrap()
        .iter()
        .map(|s| match s {
            Slot::Visual => "visual".to_string(),
            Slot::Fixed(id) if *id == m.vocab.eol => "EOL".into(),
            Slot::Fixed(id) if *id == m.vocab.eof => "EOF".into(),
            Slot::Fixed(id) if *id == m.vocab.eoi => "EOI".into(),
            Slot::Fixed(id) if *id == m.vocab.eos => "EOS".into(),
            Slot::Fixed(id) => format!("{id}"),
            other => panic!("unexpected slot {other:?}"),
        })
        .collect();
    assert_eq!(names, sched);
    let cond = u32s(&c["input_ids"]);
    let neg = u32s(&c["negative_prompt_ids"]);
    // step 0 of both streams, and the log-prob CFG mix
    let pipe = LogitsPipeline::new(
        Some(Guidance::two_stream(
            c["guidance_scale"].as_f64().unwrap() as f32,
            GuidanceSpace::LogProbs,
        )),
        if sampled {
            SamplingParams {
                temperature: c["params"]["temperature"].as_f64().unwrap() as f32,
                top_k: Some(c["params"]["top_k"].as_u64().unwrap() as usize),
                top_p: None,
                min_p: None,
            }
        } else {
            SamplingParams::greedy()
        },
    );
    let lc = m.last_logits(&cond).unwrap();
    let lu = m.last_logits(&neg).unwrap();
    let lc_v = lc.to_vec1::<f32>().unwrap();
    let lu_v = lu.to_vec1::<f32>().unwrap();
    assert!(max_abs_diff(&lc_v, &f32s(&c["step0_logits_cond"])) <= 1e-4);
    assert!(max_abs_diff(&lu_v, &f32s(&c["step0_logits_uncond"])) <= 1e-4);
    let mixed = pipe
        .process(&Tensor::stack(&[&lc, &lu], 0).unwrap(), None)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let d = max_abs_diff(&mixed, &f32s(&c["step0_scores_cfg"]));
    assert!(d <= 1e-4, "cfg scores diff {d}");
    let mut noise: Box<dyn NoiseSource> = if sampled {
        Box::new(ReplayNoise::uniforms(f32s(&c["uniforms"])))
    } else {
        Box::new(SeededNoise::new(0))
    };
    let out = m
        .generate_image(
            &cond,
            Some(&neg),
            (h, w),
            &pipe,
            noise.as_mut(),
            &mut any2any_core::Hooks::new(),
        )
        .unwrap();
    assert_eq!(out.new_ids, u32s(&c["new_ids"]));
    assert_eq!(out.codes, u32s(&c["codes"]));
}

#[test]
fn greedy_image_generation_matches_hf() {
    gen_case("image_gen_greedy", false);
}

#[test]
fn sampled_image_generation_matches_hf() {
    gen_case("image_gen_sampled", true);
}

// ---- through the Backend (templates, registry entry point) ----

fn pipeline() -> Box<dyn Backend> {
    load_fixture("emu3-tiny", any2any_emu3::load)
}

fn fixture_image() -> any2any_core::ImageInput {
    any2any_test_util::fixture_image("emu3-tiny", "image.png")
}

fn text_ids(out: &any2any_core::Output) -> Vec<u32> {
    match &out.segments[0] {
        any2any_core::Generated::Text { ids, .. } => ids.clone(),
        other => panic!("expected text, got {other:?}"),
    }
}

fn greedy(n: usize) -> any2any_core::GenerationParams {
    any2any_core::GenerationParams {
        temperature: Some(0.0),
        max_new_tokens: Some(n),
        ..Default::default()
    }
}

#[test]
fn pipeline_logits_match_hf() {
    let p = parity("emu3-tiny");
    let pipe = pipeline();
    assert_eq!(pipe.capabilities().family, "emu3");
    let c = &p["text_logits"];
    let got = pipe.last_logits(&u32s(&c["input_ids"]), &[]).unwrap();
    let d = max_abs_diff(&got.to_vec1::<f32>().unwrap(), &f32s(&c["logits"]));
    assert!(d <= 1e-4, "text: max abs diff {d}");
    let c = &p["image_logits"];
    let got = pipe
        .last_logits(&u32s(&c["input_ids"]), &[fixture_image()])
        .unwrap();
    let d = max_abs_diff(&got.to_vec1::<f32>().unwrap(), &f32s(&c["logits"]));
    assert!(d <= 1e-4, "image: max abs diff {d}");
}

#[test]
fn pipeline_templated_text_matches_hf() {
    let p = parity("emu3-tiny");
    let pipe = pipeline();
    let want = u32s(&p["text_greedy"]["new_ids"]);
    let out = generate(
        pipe.as_ref(),
        Request::new()
            .text("what is a cat?")
            .want(Modality::Text)
            .params(greedy(want.len())),
    )
    .unwrap();
    assert_eq!(text_ids(&out), want);
    let want = u32s(&p["image_text_greedy"]["new_ids"]);
    let out = generate(
        pipe.as_ref(),
        Request::new()
            .image(fixture_image())
            .text("what is it?")
            .want(Modality::Text)
            .params(greedy(want.len())),
    )
    .unwrap();
    assert_eq!(text_ids(&out), want);
}

#[test]
fn pipeline_raw_text_to_image_decodes_generated_codes() {
    let p = parity("emu3-tiny");
    let c = &p["image_gen_greedy"];
    let pipe = pipeline();
    // raw ids end with `<|image start|>2*3<|image token|>`: the grid comes from the prompt
    let out = generate(
        pipe.as_ref(),
        Request::new()
            .raw_ids(u32s(&c["input_ids"]))
            .want(Modality::Image)
            .params(any2any_core::GenerationParams {
                temperature: Some(0.0),
                cfg: Some(1.0),
                ..Default::default()
            }),
    )
    .unwrap();
    let any2any_core::Generated::Image { image, codes, grid } = &out.segments[0] else {
        panic!("expected an image");
    };
    assert_eq!(*grid, Some((2, 3)));
    assert_eq!(image.dimensions(), (6, 4));
    let codes = codes.clone().unwrap();
    assert_eq!(codes.len(), 6);
    // the codes decode to the same pixels through decode_codes
    let again = pipe.decode_codes(&codes, 2, 3).unwrap();
    assert_eq!(&again, image);
    // and the fixture's generated codes decode to its pixels (±1)
    let dg = &p["decode_generated"];
    let img = pipe.decode_codes(&u32s(&dg["codes"]), 2, 3).unwrap();
    let worst = img
        .as_raw()
        .iter()
        .zip(u32s(&dg["pixels"]))
        .map(|(&a, b)| (a as i64 - b as i64).abs())
        .max()
        .unwrap();
    assert!(worst <= 1, "pixel diff {worst}");
}

#[test]
fn pipeline_text_to_image_fits_the_context() {
    let pipe = pipeline();
    let out = generate(
        pipe.as_ref(),
        Request::new()
            .text("a red cat.")
            .want(Modality::Image)
            .seed(7),
    )
    .unwrap();
    let any2any_core::Generated::Image { image, codes, grid } = &out.segments[0] else {
        panic!("expected an image");
    };
    let (gh, gw) = grid.unwrap();
    assert!(gh >= 2 && gh == gw);
    assert_eq!(image.dimensions(), (2 * gw as u32, 2 * gh as u32));
    assert!(codes.as_ref().unwrap().iter().all(|&c| c < 16));
}

#[test]
fn pipeline_text_to_image_takes_any_aspect_ratio() {
    // `size` (W×H px) sets the grid: 6×4 px at f = 2 is 2 rows of 3 codes, the "2*3" of the
    // parity case; the constraint grammar then writes exactly that layout.
    let pipe = pipeline();
    let req = |size| {
        Request::new()
            .text("a red cat.")
            .want(Modality::Image)
            .params(any2any_core::GenerationParams {
                size: Some(size),
                seed: 3,
                ..Default::default()
            })
    };
    let out = generate(pipe.as_ref(), req((6, 4))).unwrap();
    let any2any_core::Generated::Image { image, grid, .. } = &out.segments[0] else {
        panic!("expected an image");
    };
    assert_eq!(*grid, Some((2, 3)));
    assert_eq!(image.dimensions(), (6, 4));
    let err = generate(pipe.as_ref(), req((5, 4)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("size") && err.contains("multiples of 2"),
        "{err}"
    );
}
