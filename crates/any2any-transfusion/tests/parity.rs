//! Parity with transfusion-pytorch 0.20 on tests/fixtures/transfusion-tiny (made by
//! scripts/fixtures/make_transfusion.py): text logits, greedy ids, every ODE evaluation of the
//! image loop (midpoint with guidance, Euler without) under the replayed initial noise, and a
//! mixed text + image sequence (mask, rotary positions, time conditioning).

use any2any_core::backend::Backend;
use any2any_core::decode::{Denoiser, FlowMidpoint, LatentLoop, Scheduler};
use any2any_core::image;
use any2any_core::sampling::{Guidance, GuidanceSpace};
use any2any_core::{
    Error, Generated, GenerationParams, Hooks, LoadOptions, Modality, ReplayNoise, Request, Result,
};
use any2any_test_util::{f32s, fixture_files, max_abs_diff, parity, u32s};
use any2any_transfusion::flow::{sample_latent, FlowDenoiser, FlowOptions};
use any2any_transfusion::sequence::{lay_out, nulled, Part, Rows};
use any2any_transfusion::{load_backend, OdeMethod, TransfusionBackend};
use candle_core::{Device, Tensor};
use serde_json::Value;

const TOL: f32 = 1e-4;

fn backend() -> TransfusionBackend {
    load_backend(&fixture_files("transfusion-tiny"), &LoadOptions::default()).unwrap()
}

/// `[3, 4, 4]` channel-first values (the library's layout) → `[16, 3]` latent tokens.
fn tokens_of(chw: &[f32]) -> Tensor {
    Tensor::from_slice(chw, (3, 4, 4), &Device::Cpu)
        .unwrap()
        .permute((1, 2, 0))
        .unwrap()
        .reshape((16, 3))
        .unwrap()
}

fn chw_of(tokens: &Tensor) -> Vec<f32> {
    TransfusionBackend::channel_first(tokens, (4, 4))
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn text_logits_match() {
    let p = parity("transfusion-tiny");
    let got = backend()
        .last_logits(&u32s(&p["text"]["input_ids"]), &[])
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let want = f32s(&p["text"]["logits"]);
    assert_eq!(got.len(), want.len());
    let d = max_abs_diff(&got, &want);
    eprintln!("text logits: max |Δ| {d:e}");
    assert!(d <= TOL, "text logits differ by {d}");
}

#[test]
fn greedy_ids_match() {
    let p = parity("transfusion-tiny");
    let parts = &p["greedy"]["parts"];
    let all = u32s(&parts[0]);
    let prompt = u32s(&p["greedy"]["prompt"]);
    let drawn = &all[1 + prompt.len()..];
    let b = backend();
    let req = Request::new()
        .raw_ids([vec![b.model().vocab.sos], prompt].concat())
        .want(Modality::Text)
        .params(GenerationParams {
            max_new_tokens: Some(drawn.len()),
            ..Default::default()
        });
    let out = b.generate_batch(&[req], &mut Hooks::new()).unwrap();
    let Generated::Text { ids, .. } = &out[0].segments[0] else {
        panic!("text expected")
    };
    assert_eq!(ids.as_slice(), drawn);
}

/// Sampled text (temperature 0.8) with the library's default `text_min_p` 0.1, under the
/// reference's uniforms (its `torch.multinomial` replayed by the same inverse-CDF rule).
#[test]
fn min_p_sampling_replays_the_reference() {
    let p = parity("transfusion-tiny");
    let c = &p["min_p"];
    let drawn = u32s(&c["drawn"]);
    let b = backend();
    let req = Request::new()
        .raw_ids([vec![b.model().vocab.sos], u32s(&c["prompt"])].concat())
        .want(Modality::Text)
        .params(GenerationParams {
            temperature: Some(c["temperature"].as_f64().unwrap() as f32),
            max_new_tokens: Some(drawn.len()),
            ..Default::default()
        });
    let uniforms = f32s(&c["uniforms"]);
    let mut hooks = Hooks::new().noise(ReplayNoise::uniforms(uniforms));
    let out = b.generate_batch(&[req], &mut hooks).unwrap();
    let Generated::Text { ids, .. } = &out[0].segments[0] else {
        panic!("text expected")
    };
    assert_eq!(ids.as_slice(), drawn.as_slice());
}

/// Records every evaluation: its time, the input latent (first row) and the raw predictions.
struct Recording<D> {
    inner: D,
    evals: Vec<(f64, Tensor, Tensor)>,
}

impl<D: Denoiser> Denoiser for Recording<D> {
    fn predict(&mut self, x: &Tensor, t: f64, step: usize) -> Result<Tensor> {
        let out = self.inner.predict(x, t, step)?;
        self.evals.push((t, x.get(0)?, out.clone()));
        Ok(out)
    }
}

/// Every evaluation of the case's ODE (time, input, guided flow) and the final latent.
fn check_image_case(case: &Value, scheduler: &mut dyn Scheduler) {
    let b = backend();
    let m = b.model();
    let cfg = case["cfg"].as_f64().unwrap() as f32;
    let history = vec![Part::Text(u32s(&case["prefix"]))];
    let mut streams = vec![history.clone()];
    if cfg != 1.0 {
        streams.push(nulled(&history, m.vocab.null));
    }
    let (mut rows, _) = Rows::prefill(m, &streams, 16).unwrap();
    // the reference noise is [16 tokens, 3 channels], token-major
    let x0 = Tensor::from_vec(f32s(&case["noise"]), (1, 16, 3), &Device::Cpu).unwrap();
    let g = (cfg != 1.0).then(|| Guidance::two_stream(cfg, GuidanceSpace::Logits));
    let lp = LatentLoop {
        guidance: g.as_ref(),
        stage: "image",
    };
    let mut rec = Recording {
        inner: FlowDenoiser::new(&mut rows),
        evals: vec![],
    };
    let mut noise = ReplayNoise::default();
    let z = lp
        .run(x0, &mut rec, scheduler, &mut noise, &mut Hooks::new())
        .unwrap();
    let want = case["evals"].as_array().unwrap();
    assert_eq!(rec.evals.len(), want.len());
    let mut worst = 0f32;
    for (i, ((t, x, pred), w)) in rec.evals.iter().zip(want).enumerate() {
        assert!((t - w["t"].as_f64().unwrap()).abs() < 1e-6, "eval {i} time");
        let dx = max_abs_diff(&chw_of(x), &f32s(&w["x"]));
        let flow = match cfg {
            1.0 => pred.get(0).unwrap(),
            _ => {
                let (c, u) = (pred.get(0).unwrap(), pred.get(1).unwrap());
                (&u + ((c - &u).unwrap() * cfg as f64).unwrap()).unwrap()
            }
        };
        let df = max_abs_diff(&chw_of(&flow), &f32s(&w["flow"]));
        assert!(dx <= TOL && df <= TOL, "eval {i}: input {dx}, flow {df}");
        worst = worst.max(dx).max(df);
    }
    let d = max_abs_diff(&chw_of(&z.squeeze(0).unwrap()), &f32s(&case["final"]));
    eprintln!(
        "{}: {} evaluations, max |Δ| {worst:e}; final latent {d:e}",
        case["method"],
        want.len()
    );
    assert!(d <= TOL, "final latent differs by {d}");
}

#[test]
fn midpoint_with_guidance_matches_every_evaluation() {
    let p = parity("transfusion-tiny");
    let c = &p["image_cfg"];
    assert_eq!(c["method"], "midpoint");
    let steps = c["modality_steps"].as_u64().unwrap() as usize - 1;
    check_image_case(c, &mut FlowMidpoint::new(steps, 1.0).unwrap());
}

#[test]
fn euler_without_guidance_matches_every_evaluation() {
    let p = parity("transfusion-tiny");
    let c = &p["image_euler"];
    assert_eq!(c["method"], "euler");
    let steps = c["modality_steps"].as_u64().unwrap() as usize - 1;
    let opts = FlowOptions {
        steps,
        cfg: 1.0,
        method: OdeMethod::Euler,
    };
    check_image_case(c, opts.scheduler().unwrap().as_mut());
}

/// The whole text→image path of the backend under replayed noise: the prompt gets the
/// `[meta] "4,4" [som]` opening, and the pixels are the reference latent mapped from [0, 1].
#[test]
fn text_to_image_replays_the_reference_noise() {
    let p = parity("transfusion-tiny");
    let c = &p["image_cfg"];
    let b = backend();
    let steps = c["modality_steps"].as_u64().unwrap() as usize - 1;
    let noise = f32s(&c["noise"]);
    let req = Request::new()
        .text("hi")
        .want(Modality::Image)
        .params(GenerationParams {
            steps: Some(steps),
            cfg: Some(3.0),
            ..Default::default()
        });
    assert_eq!(
        [b.prompt_ids(&req).unwrap(), vec![261, 314, 306, 314, 259]].concat(),
        u32s(&c["prefix"])
    );
    let mut hooks = Hooks::new().noise(ReplayNoise::new(vec![], noise.clone()));
    let out = b
        .generate_batch(std::slice::from_ref(&req), &mut hooks)
        .unwrap();
    let Generated::Image { image, grid, .. } = &out[0].segments[0] else {
        panic!("image expected")
    };
    assert_eq!(*grid, Some((4, 4)));
    let fin = f32s(&c["final"]);
    for (i, px) in image.pixels().enumerate() {
        let (y, x) = (i / 4, i % 4);
        for ch in 0..3 {
            let want = (fin[ch * 16 + y * 4 + x].clamp(0.0, 1.0) * 255.0).round();
            assert!(
                (px[ch] as f32 - want).abs() <= 1.0,
                "pixel {i} channel {ch}"
            );
        }
    }
    // the latent itself, through the same entry point
    let hist = [Part::Text(u32s(&c["prefix"]))];
    let opts = FlowOptions {
        steps,
        cfg: 3.0,
        method: OdeMethod::Midpoint,
    };
    let mut rn = ReplayNoise::new(vec![], noise);
    let (z, rows) =
        sample_latent(b.model(), &hist, 16, 0, &opts, &mut rn, &mut Hooks::new()).unwrap();
    assert_eq!(rows.cache.rows(), 1);
    let d = max_abs_diff(&chw_of(&z), &fin);
    assert!(d <= TOL, "final latent differs by {d}");
    // a noise file of the wrong size is refused, naming the argument
    let short =
        ReplayNoise::new(vec![], vec![0.0; 47]).normals_from("noise-normal", Some("n.npy".into()));
    let e = b
        .generate_batch(&[req], &mut Hooks::new().noise(short))
        .unwrap_err();
    assert!(
        e.to_string().contains("noise-normal") && e.to_string().contains("n.npy"),
        "{e}"
    );
}

/// text + image + text in the training layout at time 0.37: the logits of every position
/// (causal text, bidirectional image, one rotary position for the image) and the image's flow.
#[test]
fn mixed_sequence_matches() {
    let p = parity("transfusion-tiny");
    let c = &p["mixed"];
    let b = backend();
    let m = b.model();
    let ids: Vec<i64> = c["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let span = u32s(&c["span"]);
    let (s, e) = (span[0] as usize, span[1] as usize);
    let text = |r: &[i64]| Part::Text(r.iter().map(|&i| i as u32).collect());
    let time = c["time"].as_f64().unwrap() as f32;
    let parts = vec![
        text(&ids[..s]),
        Part::Latent {
            tokens: tokens_of(&f32s(&c["latent"])),
            time,
        },
        text(&ids[e..]),
    ];
    let laid = lay_out(m, std::slice::from_ref(&parts), 0).unwrap();
    assert_eq!(laid.positions[s..e], [s as u32; 16]);
    assert_eq!(laid.positions[e], s as u32 + 1);
    let (_, h) = Rows::prefill(m, &[parts], 0).unwrap();
    let logits = m
        .logits(&h)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let want = f32s(&c["logits"]);
    assert_eq!(logits.len(), want.len());
    let d = max_abs_diff(&logits, &want);
    eprintln!("mixed logits: max |Δ| {d:e}");
    assert!(d <= TOL, "mixed logits differ by {d}");
    let flow = m
        .model_to_latent(&h.narrow(1, s, e - s).unwrap().squeeze(0).unwrap())
        .unwrap();
    let d = max_abs_diff(&chw_of(&flow), &f32s(&c["flow"]));
    eprintln!("mixed flow: max |Δ| {d:e}");
    assert!(d <= TOL, "mixed flow differs by {d}");
}

/// The flow after a cached prefix equals the full recomputation of prefix + latent.
#[test]
fn cached_prefix_equals_recomputed() {
    let b = backend();
    let m = b.model();
    let prefix = vec![Part::Text(vec![256, 104, 105, 261, 314, 306, 314, 259])];
    let z = tokens_of(&(0..48).map(|i| (i as f32 * 0.37).sin()).collect::<Vec<_>>());
    let (mut rows, _) = Rows::prefill(m, std::slice::from_ref(&prefix), 16).unwrap();
    let cached = FlowDenoiser::new(&mut rows)
        .predict(&z.unsqueeze(0).unwrap(), 0.25, 0)
        .unwrap()
        .squeeze(0)
        .unwrap();
    let mut full = prefix.clone();
    full.push(Part::Latent {
        tokens: z,
        time: 0.25,
    });
    let (_, h) = Rows::prefill(m, &[full], 0).unwrap();
    let recomputed = m
        .model_to_latent(&h.narrow(1, 8, 16).unwrap().squeeze(0).unwrap())
        .unwrap();
    let d = max_abs_diff(&chw_of(&cached), &chw_of(&recomputed));
    eprintln!("cached vs recomputed: max |Δ| {d:e}");
    assert!(d <= 1e-5, "cached vs recomputed: {d}");
}

#[test]
fn bad_inputs_get_named_errors() {
    let b = backend();
    let refused = |p: GenerationParams, arg: &str| {
        let req = Request::new().text("hi").want(Modality::Image).params(p);
        let e = b.generate_batch(&[req], &mut Hooks::new()).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidArgument { name, .. } if name == arg),
            "{e}"
        );
    };
    let steps = |n| GenerationParams {
        steps: Some(n),
        ..Default::default()
    };
    refused(steps(0), "steps");
    refused(steps(1 << 40), "steps");
    let size = GenerationParams {
        size: Some((0, 0)),
        ..Default::default()
    };
    refused(size, "size");
    let e = b.last_logits(&[100_000], &[]).unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument { name, .. } if name == "raw-ids"),
        "{e}"
    );
}

/// A config that does not match the weights, or that asks for what is not implemented.
#[test]
fn config_mismatches_are_named() {
    let src = any2any_test_util::fixture_dir("transfusion-tiny");
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    let try_with = |edit: &dyn Fn(&mut Value)| -> Error {
        let dir =
            std::env::temp_dir().join(format!("tf-cfg-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
        let mut c = cfg.clone();
        edit(&mut c);
        std::fs::write(dir.join("config.json"), c.to_string()).unwrap();
        let files = any2any_core::ModelFiles::from_dir(&dir).unwrap();
        let e = load_backend(&files, &LoadOptions::default()).err().unwrap();
        std::fs::remove_dir_all(&dir).ok();
        e
    };
    let e = try_with(&|c| c["transformer"]["dim"] = 64.into());
    assert!(matches!(&e, Error::ShapeMismatch { .. }), "{e}");
    let e = try_with(&|c| c["num_text_tokens"] = 300.into());
    assert!(
        matches!(&e, Error::ShapeMismatch { name, .. } if name.contains("text_embed")),
        "{e}"
    );
    let e = try_with(&|c| c["odeint_kwargs"] = serde_json::json!({"method": "dopri5"}));
    assert!(e.to_string().contains("dopri5"), "{e}");
    let e = try_with(&|c| c["add_pos_emb"] = true.into());
    assert!(e.to_string().contains("add_pos_emb"), "{e}");
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

/// Interleaved: a prompt ending with `[meta] "4,4" [som]` opens the image at once (as
/// `sample_one` does); under the reference noise the image is the reference's, and the text
/// after it is the greedy continuation of the training layout with the image at time 1.
#[test]
fn interleaved_image_then_text_matches() {
    let p = parity("transfusion-tiny");
    let c = &p["image_cfg"];
    let want = u32s(&p["continuation"]["drawn"]);
    let b = backend();
    let steps = c["modality_steps"].as_u64().unwrap() as usize - 1;
    let noise = f32s(&c["noise"]);
    let req = Request::new()
        .raw_ids(u32s(&c["prefix"]))
        .want(Modality::Interleaved)
        .params(GenerationParams {
            steps: Some(steps),
            cfg: Some(3.0),
            max_new_tokens: Some(want.len()),
            ..Default::default()
        });
    let mut steps_seen = vec![];
    let mut hooks = Hooks::new()
        .noise(ReplayNoise::new(vec![], noise))
        .on_progress(|pr| steps_seen.push((pr.stage.to_string(), pr.step)));
    let out = b.generate_batch(&[req], &mut hooks).unwrap();
    drop(hooks);
    let segs = &out[0].segments;
    assert_eq!(segs.len(), 2, "{segs:?}");
    let Generated::Image { image, .. } = &segs[0] else {
        panic!("image first")
    };
    let fin = f32s(&c["final"]);
    let px = image.get_pixel(1, 2);
    let want_px = (fin[2 * 4 + 1].clamp(0.0, 1.0) * 255.0).round();
    assert!((px[0] as f32 - want_px).abs() <= 1.0);
    let Generated::Text { ids, .. } = &segs[1] else {
        panic!("text after the image")
    };
    assert_eq!(ids, &want, "the ids drawn after [eom]");
    assert!(steps_seen.contains(&("image".to_string(), steps)));
}

/// Interleaved with sampling: the replayed uniforms make the model write
/// `[meta] "4,4" [som]` itself (temperature 1e6 flattens the distribution, so uniform
/// `(i + 0.5)/V` draws id `i`); the image it then opens, under the replayed normals, is the
/// reference's, and text goes on after it drawing the remaining uniforms.
#[test]
fn interleaved_text_opens_an_image_and_goes_on() {
    let p = parity("transfusion-tiny");
    let c = &p["image_cfg"];
    let b = backend();
    let vsize = b.model().vocab.size as f32;
    let opening = [261u32, 314, 306, 314, 259];
    let mut uniforms: Vec<f32> = opening.iter().map(|&i| (i as f32 + 0.5) / vsize).collect();
    uniforms.extend([(100.5 / vsize), (101.5 / vsize)]);
    let steps = c["modality_steps"].as_u64().unwrap() as usize - 1;
    let req = Request::new()
        .text("hi")
        .want(Modality::Interleaved)
        .params(GenerationParams {
            steps: Some(steps),
            cfg: Some(3.0),
            temperature: Some(1e6),
            max_new_tokens: Some(7),
            ..Default::default()
        });
    let replay = ReplayNoise::new(uniforms, f32s(&c["noise"]));
    let out = b
        .generate_batch(&[req], &mut Hooks::new().noise(replay))
        .unwrap();
    let segs = &out[0].segments;
    assert_eq!(segs.len(), 3, "{segs:?}");
    let Generated::Text { ids, .. } = &segs[0] else {
        panic!("text first")
    };
    assert_eq!(ids.as_slice(), opening);
    let Generated::Image { image, .. } = &segs[1] else {
        panic!("then the image")
    };
    let fin = f32s(&c["final"]);
    for (i, px) in image.pixels().enumerate() {
        let want = (fin[i].clamp(0.0, 1.0) * 255.0).round();
        assert!((px[0] as f32 - want).abs() <= 1.0, "pixel {i}");
    }
    let Generated::Text { ids, .. } = &segs[2] else {
        panic!("then text")
    };
    assert_eq!(ids.as_slice(), [100, 101]);
}

/// image→text: an image prompt is `[sos] [meta] "4,4" [som]`, its pixels / 255 at time 1,
/// `[eom]`, then the text; logits of the prompt ≤ 1e-4 and the greedy ids (up to `[eos]`).
#[test]
fn image_prompt_matches() {
    let p = parity("transfusion-tiny");
    let c = &p["image_prompt"];
    let b = backend();
    let px: Vec<u8> = u32s(&c["pixels"]).iter().map(|&v| v as u8).collect();
    let img = any2any_core::ImageInput::new(image::RgbImage::from_raw(4, 4, px).unwrap());
    let req = Request::new()
        .image(img)
        .text("?")
        .want(Modality::Text)
        .params(GenerationParams {
            max_new_tokens: Some(3),
            ..Default::default()
        });
    let parts = b.prompt_parts(&req).unwrap();
    let (_, h) = Rows::prefill(b.model(), &[parts], 0).unwrap();
    let n = h.dim(1).unwrap();
    let logits = b
        .model()
        .logits(&h.get(0).unwrap().get(n - 1).unwrap())
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let d = max_abs_diff(&logits, &f32s(&c["logits"]));
    eprintln!("image prompt logits: max |Δ| {d:e}");
    assert!(d <= TOL, "image prompt logits differ by {d}");
    let out = b.generate_batch(&[req], &mut Hooks::new()).unwrap();
    let Generated::Text { ids, .. } = &out[0].segments[0] else {
        panic!("text expected")
    };
    let drawn = u32s(&c["drawn"]);
    let eos = b.model().vocab.eos;
    let upto = drawn
        .iter()
        .position(|&i| i == eos)
        .map_or(drawn.len(), |e| e + 1);
    assert_eq!(ids.as_slice(), &drawn[..upto]);
}
