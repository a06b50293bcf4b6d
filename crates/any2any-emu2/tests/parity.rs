//! Emu2 parity against the official Emu2 code (github.com/baaivision/Emu, `Emu2/emu`) and
//! diffusers on the tiny random Emu2-Gen checkpoint of `tests/fixtures/emu2-tiny`, written by
//! `scripts/fixtures/make_emu2.py`.

use any2any_core::candle_core::{DType, Tensor};
use any2any_core::{
    Backend, Error, Generated, GenerationParams, Hooks, LoadOptions, Modality, ModelFiles,
    ReplayNoise, Request,
};
use any2any_emu2::regress::{regress, regress_recompute};
use any2any_emu2::Emu2Backend;
use any2any_test_util::{f32s, fixture_dir, fixture_image, max_abs_diff, parity, u32s};

const FIX: &str = "emu2-tiny";

fn backend() -> Emu2Backend {
    let files = ModelFiles::from_dir(&fixture_dir(FIX)).unwrap();
    Emu2Backend::load(&files, &LoadOptions::default()).unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn t2i_request(p: &serde_json::Value) -> Request {
    Request::new()
        .text(p["prompt"].as_str().unwrap())
        .want(Modality::Image)
        .params(params(p))
}

fn ti2i_request(p: &serde_json::Value) -> Request {
    Request::new()
        .text("a cat")
        .image(fixture_image(FIX, "image.png"))
        .text("in snow")
        .want(Modality::Image)
        .params(params(p))
}

fn params(p: &serde_json::Value) -> GenerationParams {
    let side = p["side"].as_u64().unwrap() as usize;
    GenerationParams {
        steps: Some(p["steps"].as_u64().unwrap() as usize),
        cfg: Some(p["cfg"].as_f64().unwrap() as f32),
        size: Some((side, side)),
        ..Default::default()
    }
}

/// Regressed embeddings, every step's noise predictions and the final latent of one case.
fn check_case(emu: &Emu2Backend, p: &serde_json::Value, req: &Request) {
    let (ids, _) = emu.render(req).unwrap();
    assert_eq!(ids, u32s(&p["ids"]), "prompt ids");
    let s = emu.image_settings(req).unwrap();
    let ehs = emu.condition(&[req], true, &mut Hooks::new()).unwrap();
    let n = ehs.dim(0).unwrap();
    assert_eq!(n, 2, "[cond, uncond]");
    for (r, want) in p["embeds"].as_array().unwrap().iter().enumerate() {
        let err = max_abs_diff(&flat(&ehs.get(r).unwrap()), &f32s(want));
        eprintln!("regressed embeddings row {r}: max |Δ| {err:e}");
        assert!(
            err <= 1e-4,
            "regressed embeddings of row {r} differ by {err}"
        );
    }
    let noise = ReplayNoise::new(Vec::new(), f32s(&p["initial_noise"]));
    let mut hooks = Hooks::new().noise(noise);
    let (z, rec) = emu.denoise(&[req], &ehs, s, &mut hooks, true).unwrap();
    let rec = rec.unwrap();
    let want = p["noise_pred"].as_array().unwrap();
    assert_eq!(rec.len(), want.len(), "steps");
    for (i, (got, want)) in rec.iter().zip(want).enumerate() {
        let err = max_abs_diff(&flat(got), &f32s(want));
        eprintln!("noise prediction step {i}: max |Δ| {err:e}");
        assert!(err <= 1e-4, "noise prediction of step {i} differs by {err}");
    }
    let err = max_abs_diff(&flat(&z), &f32s(&p["final_latent"]));
    eprintln!("final latent: max |Δ| {err:e}");
    assert!(err <= 1e-4, "final latent differs by {err}");
}

#[test]
fn text_to_image_embeddings_noise_predictions_and_latent_match_the_reference() {
    let p = parity(FIX);
    let emu = backend();
    let t2i = &p["t2i"];
    let neg = emu.encode("[IMG]").unwrap();
    assert_eq!(neg, u32s(&t2i["negative_ids"]), "negative prompt ids");
    check_case(&emu, t2i, &t2i_request(t2i));
}

#[test]
fn text_and_image_to_image_match_the_reference() {
    let p = parity(FIX);
    let emu = backend();
    check_case(&emu, &p["ti2i"], &ti2i_request(&p["ti2i"]));
}

#[test]
fn cached_regression_equals_the_reference_recomputation() {
    let emu = backend();
    let p = parity(FIX);
    let mut rows = Vec::new();
    for req in [t2i_request(&p["t2i"]), ti2i_request(&p["ti2i"])] {
        let (ids, images) = emu.render(&req).unwrap();
        rows.push(emu.embed(&ids, &images).unwrap());
    }
    let cached = regress(emu.model(), &rows, &mut Hooks::new()).unwrap();
    let full = regress_recompute(emu.model(), &rows).unwrap();
    let err = max_abs_diff(&flat(&cached), &flat(&full));
    assert!(
        err <= 1e-5,
        "cached and recomputed regressions differ by {err}"
    );
    // batched rows of different lengths equal each row alone
    let alone = regress(emu.model(), &rows[1..], &mut Hooks::new()).unwrap();
    let err = max_abs_diff(
        &flat(&cached.get(1).unwrap()),
        &flat(&alone.get(0).unwrap()),
    );
    assert!(
        err <= 1e-5,
        "batched row differs from the row alone by {err}"
    );
}

fn pixels_within_one_level(got: &image::RgbImage, file: &str) {
    let want = fixture_image(FIX, file);
    assert_eq!(got.dimensions(), want.pixels.dimensions());
    let worst = got
        .as_raw()
        .iter()
        .zip(want.pixels.as_raw())
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    eprintln!("{file}: worst pixel {worst} levels");
    assert!(worst <= 1, "{file}: pixels differ by {worst} levels");
}

#[test]
fn backend_images_under_replayed_noise_are_within_one_level() {
    let p = parity(FIX);
    let emu = backend();
    for (case, req, png) in [
        ("t2i", t2i_request(&p["t2i"]), "t2i.png"),
        ("ti2i", ti2i_request(&p["ti2i"]), "ti2i.png"),
    ] {
        let noise = ReplayNoise::new(Vec::new(), f32s(&p[case]["initial_noise"]));
        let mut stages = Vec::new();
        let mut hooks = Hooks::new()
            .noise(noise)
            .on_progress(|pr| stages.push((pr.stage.to_string(), pr.step)));
        let out = emu.generate_batch(&[req], &mut hooks).unwrap();
        drop(hooks);
        let steps = p[case]["steps"].as_u64().unwrap() as usize;
        let denoise: Vec<usize> = stages
            .iter()
            .filter(|(s, _)| s == "denoise")
            .map(|(_, i)| *i)
            .collect();
        assert_eq!(denoise, (0..=steps).collect::<Vec<_>>(), "{case} progress");
        assert!(stages.iter().any(|(s, i)| s == "regress" && *i == 4));
        pixels_within_one_level(out[0].images()[0], png);
    }
}

#[test]
fn several_prompts_per_batch_equal_each_alone() {
    let p = parity(FIX);
    let emu = backend();
    let a = t2i_request(&p["t2i"]).seed(5);
    let b = Request::new()
        .text("blue sky over snow")
        .want(Modality::Image)
        .params(params(&p["t2i"]))
        .seed(6);
    let both = emu
        .generate_batch(&[a.clone(), b.clone()], &mut Hooks::new())
        .unwrap();
    for (i, r) in [a, b].into_iter().enumerate() {
        let alone = emu.generate_batch(&[r], &mut Hooks::new()).unwrap();
        let worst = both[i].images()[0]
            .as_raw()
            .iter()
            .zip(alone[0].images()[0].as_raw())
            .map(|(x, y)| x.abs_diff(*y))
            .max()
            .unwrap();
        assert!(
            worst <= 1,
            "prompt {i}: batched differs from alone by {worst}"
        );
    }
}

#[test]
fn understanding_logits_and_greedy_ids_match_the_reference() {
    let p = parity(FIX);
    let emu = backend();
    let u = &p["understanding"];
    let img = fixture_image(FIX, "image.png");
    let px = emu.pixels(&img).unwrap();
    let err = max_abs_diff(&flat(&px), &f32s(&u["pixels"]));
    assert!(err <= 1e-5, "pixels differ by {err}");
    let pooled = emu.model().visual.encode(&px).unwrap();
    let err = max_abs_diff(&flat(&pooled), &f32s(&u["image_eva_pooled"]));
    eprintln!("pooled EVA features: max |Δ| {err:e}");
    assert!(err <= 1e-4, "pooled EVA features differ by {err}");
    let cases = [
        (
            "image",
            Request::new()
                .image(img.clone())
                .text("Describe the image in details:"),
        ),
        ("text", Request::new().text("Say hi .")),
    ];
    for (name, req) in cases {
        let want = &u[name];
        let req = req.want(Modality::Text).params(GenerationParams {
            max_new_tokens: Some(want["greedy"].as_array().unwrap().len()),
            ..Default::default()
        });
        let (ids, _) = emu.render(&req).unwrap();
        assert_eq!(ids, u32s(&want["ids"]), "{name} prompt ids");
        let imgs: Vec<_> = req.images().into_iter().cloned().collect();
        let l = emu.last_logits(&ids, &imgs).unwrap();
        let err = max_abs_diff(&flat(&l), &f32s(&want["last_logits"]));
        eprintln!("{name} last logits: max |Δ| {err:e}");
        assert!(err <= 1e-4, "{name} logits differ by {err}");
        let out = emu.generate_batch(&[req], &mut Hooks::new()).unwrap();
        let Generated::Text { ids, .. } = &out[0].segments[0] else {
            panic!("text expected")
        };
        assert_eq!(ids, &u32s(&want["greedy"]), "{name} greedy ids");
    }
}

#[test]
fn bad_inputs_get_named_errors() {
    let p = parity(FIX);
    let emu = backend();
    let req = t2i_request(&p["t2i"]);
    let noise = ReplayNoise::new(Vec::new(), vec![0.0; 100])
        .normals_from("noise-normal", Some("z.npy".into()));
    let e = emu
        .generate_batch(std::slice::from_ref(&req), &mut Hooks::new().noise(noise))
        .unwrap_err();
    assert!(
        e.to_string().contains("noise-normal") && e.to_string().contains("z.npy"),
        "{e}"
    );
    let odd = req.clone().params(GenerationParams {
        size: Some((18, 16)),
        ..params(&p["t2i"])
    });
    let e = emu.check(&odd).unwrap_err();
    assert!(e.to_string().contains("size"), "{e}");
    // cancel during the regression
    let token = any2any_core::CancelToken::new();
    token.cancel();
    let e = emu
        .generate_batch(&[req], &mut Hooks::new().cancel_token(token))
        .unwrap_err();
    assert!(matches!(e, Error::Cancelled { .. }), "{e}");
}

/// The Emu2-Chat layout: the encoder's `config.json`, weights and `tokenizer.json` at the root
/// (no `model_index.json`): understanding only, same logits.
#[test]
fn chat_layout_loads_for_understanding_only() {
    let p = parity(FIX);
    let root = std::env::temp_dir().join(format!("emu2-chat-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let src = fixture_dir(FIX);
    for f in std::fs::read_dir(src.join("multimodal_encoder")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), root.join(f.file_name())).unwrap();
    }
    std::fs::copy(
        src.join("tokenizer/tokenizer.json"),
        root.join("tokenizer.json"),
    )
    .unwrap();
    let files = ModelFiles::from_dir(&root).unwrap();
    let cfg = files.config_json().unwrap();
    assert!(any2any_emu2::matches(&cfg));
    let emu = Emu2Backend::load(&files, &LoadOptions::default()).unwrap();
    let u = &p["understanding"]["text"];
    let l = emu.last_logits(&u32s(&u["ids"]), &[]).unwrap();
    let err = max_abs_diff(&flat(&l), &f32s(&u["last_logits"]));
    assert!(err <= 1e-4, "chat-layout logits differ by {err}");
    let t2i = t2i_request(&p["t2i"]);
    let e = emu.check(&t2i).unwrap_err();
    assert!(e.to_string().contains("text"), "{e}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// Beam search (the core `BeamSearch`, on `RowBatch` with its KV-cache rows reordered) against
/// HF transformers 4.46.3's through the official `EmuModel.generate`: the same ids and the same
/// `sequences_scores` within 1e-4, for the image prompt at the reference's defaults (5 beams,
/// 10 tokens, length penalty −1), the text prompt with 3 beams, and with 4 beams, length
/// penalty 1 and a stop id the beams reach. The backend's `--num-beams` path gives the same ids.
#[test]
fn beam_search_matches_transformers() {
    use any2any_core::decode::{BeamSearch, LmHead, RowBatch, RowInput, TextEnd};
    let p = parity(FIX);
    let emu = backend();
    let img = fixture_image(FIX, "image.png");
    let head = LmHead {
        decoder: &emu.model().decoder,
        head: &emu.model().lm_head,
    };
    for name in ["image", "text", "text_stop"] {
        let want = &p["beams"][name];
        let req = if name == "image" {
            Request::new()
                .image(img.clone())
                .text("Describe the image in details:")
        } else {
            Request::new().text("Say hi .")
        };
        let nb = want["num_beams"].as_u64().unwrap() as usize;
        let max_new = want["max_new_tokens"].as_u64().unwrap() as usize;
        let stop = u32s(&want["stop"]);
        let (ids, images) = emu.render(&req).unwrap();
        let e = emu.embed(&ids, &images).unwrap();
        let rows = vec![RowInput::Embeds(&e); nb];
        let (mut batch, hidden) = RowBatch::prefill(head.decoder, &rows, max_new).unwrap();
        let search = BeamSearch {
            num_beams: nb,
            max_new,
            length_penalty: want["length_penalty"].as_f64().unwrap(),
            stop: &stop,
            stage: "beams",
        };
        let got = search
            .run(&mut batch, &head, hidden, &mut Hooks::new())
            .unwrap();
        assert_eq!(got.len(), 1);
        let want_ids = u32s(&want["ids"]);
        assert_eq!(got[0].ids, want_ids, "{name} ids");
        let ends_on_stop = want_ids.last().is_some_and(|t| stop.contains(t));
        let end = if ends_on_stop {
            TextEnd::Stop
        } else {
            TextEnd::Budget
        };
        assert_eq!(got[0].end, end, "{name} end");
        let err = (got[0].score - want["score"].as_f64().unwrap()).abs();
        eprintln!("{name} beam score: |Δ| {err:e}");
        assert!(err <= 1e-4, "{name} sequence score differs by {err}");
        if stop == [emu.special_ids().eos] {
            let req = req.want(Modality::Text).params(GenerationParams {
                num_beams: Some(nb),
                max_new_tokens: Some(max_new),
                ..Default::default()
            });
            let out = emu.generate_batch(&[req], &mut Hooks::new()).unwrap();
            let Generated::Text { ids, .. } = &out[0].segments[0] else {
                panic!("text expected")
            };
            assert_eq!(ids, &want_ids, "{name} ids through --num-beams");
        }
    }
}

/// Beams with sampling settings, or 0 beams, are refused by name.
#[test]
fn beam_settings_are_checked() {
    let emu = backend();
    for (params, want) in [
        (
            GenerationParams {
                num_beams: Some(3),
                temperature: Some(0.7),
                ..Default::default()
            },
            "beam search is greedy",
        ),
        (
            GenerationParams {
                num_beams: Some(0),
                ..Default::default()
            },
            "must be in 1..=",
        ),
    ] {
        let req = Request::new()
            .text("Say hi .")
            .want(Modality::Text)
            .params(params);
        let e = emu.check(&req).and_then(|_| req.params.validate());
        let msg = e.expect_err("refused").to_string();
        assert!(msg.contains("num-beams") && msg.contains(want), "{msg}");
    }
}
