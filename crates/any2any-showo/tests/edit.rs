//! Show-o image edits against the official `inference_t2i.py` modes 'inpainting' and
//! 'extrapolation' on the tiny fixture model (`tests/fixtures/showo-tiny/edit_parity.json`, written
//! by `scripts/fixtures/make_showo_edit.py`), plus the exact pre-processing they rely on (Pillow
//! bicubic resize, torchvision centre crop, torch bicubic downsampling), cross-request batching,
//! per-step progress and cancellation, and the typed errors of bad edits.

use any2any_core::edit::{
    interpolate_bicubic, load_mask, pil_resize_bicubic_raw, resize_shortest_center_crop,
    resize_shortest_center_crop_gray,
};
use any2any_core::image;
use any2any_core::{
    Backend, CancelToken, Error, ExtendDirection, Generated, GenerationParams, Hooks, ImageInput,
    Modality, ReplayNoise, Request,
};
use any2any_showo::edit::{code_mask, extend_window, CodeGrid};
use any2any_test_util::{
    f32s, fixture_dir, fixture_image, fixture_json, generate, generate_with, load_fixture,
    max_abs_diff, u32s,
};
use serde_json::Value;
use std::sync::{Arc, Mutex};

fn edit_parity() -> Value {
    fixture_json("showo-tiny", "edit_parity.json")
}

fn pipeline() -> Box<dyn Backend> {
    load_fixture("showo-tiny", any2any_showo::load)
}

fn edit_image() -> ImageInput {
    fixture_image("showo-tiny", "edit_image.png")
}

fn edit_mask() -> image::GrayImage {
    load_mask(&fixture_dir("showo-tiny").join("edit_mask.png")).unwrap()
}

fn uniforms(case: &Value) -> Vec<f32> {
    let mut u = Vec::new();
    for s in case["steps"].as_array().unwrap() {
        u.extend(f32s(&s["multinomial_u"]));
        u.extend(f32s(&s["gumbel_u"]));
    }
    u
}

fn params(case: &Value) -> GenerationParams {
    GenerationParams {
        steps: Some(case["timesteps"].as_u64().unwrap() as usize),
        cfg: Some(1.0 + case["guidance_scale"].as_f64().unwrap() as f32),
        temperature: Some(case["temperature"].as_f64().unwrap() as f32),
        ..Default::default()
    }
}

fn image_out(o: &any2any_core::Output) -> (Vec<u32>, (usize, usize), (u32, u32)) {
    match &o.segments[0] {
        Generated::Image { image, codes, grid } => {
            (codes.clone().unwrap(), grid.unwrap(), image.dimensions())
        }
        other => panic!("image expected, got {other:?}"),
    }
}

#[test]
fn pil_bicubic_resize_matches_pillow() {
    let p = edit_parity();
    for c in p["pil_resize"].as_array().unwrap() {
        let size = u32s(&c["size"]);
        let out = u32s(&c["out_size"]);
        let ch = if c["mode"] == "RGB" { 3 } else { 1 };
        let input: Vec<u8> = u32s(&c["input"]).iter().map(|&v| v as u8).collect();
        let got = pil_resize_bicubic_raw(
            &input,
            (size[0] as usize, size[1] as usize),
            ch,
            (out[0] as usize, out[1] as usize),
        )
        .unwrap();
        let want: Vec<u8> = u32s(&c["output"]).iter().map(|&v| v as u8).collect();
        assert_eq!(got, want, "{} {size:?} → {out:?}", c["mode"]);
    }
}

#[test]
fn image_transform_matches_torchvision() {
    let p = edit_parity();
    let img = resize_shortest_center_crop(&edit_image().pixels, 64).unwrap();
    let want: Vec<u8> = u32s(&p["transform"]["image_u8"])
        .iter()
        .map(|&v| v as u8)
        .collect();
    assert_eq!(
        img.as_raw(),
        &want,
        "image: Resize(64, BICUBIC) + CenterCrop(64)"
    );
    let m = resize_shortest_center_crop_gray(&edit_mask(), 64).unwrap();
    let want: Vec<u8> = u32s(&p["transform"]["mask_u8"])
        .iter()
        .map(|&v| v as u8)
        .collect();
    assert_eq!(m.as_raw(), &want, "mask");
}

#[test]
fn bicubic_downsampler_matches_torch() {
    let p = edit_parity();
    let mask_u8 = u32s(&p["transform"]["mask_u8"]);
    for c in p["bicubic"].as_array().unwrap() {
        let size = u32s(&c["size"]);
        let out = u32s(&c["out_size"]);
        let input: Vec<f32> = match c["input"].as_array() {
            Some(_) => f32s(&c["input"]),
            None => mask_u8.iter().map(|&b| b as f32 / 255.0).collect(),
        };
        let got = interpolate_bicubic(
            &input,
            (size[0] as usize, size[1] as usize),
            (out[0] as usize, out[1] as usize),
        )
        .unwrap();
        let want = f32s(&c["output"]);
        let d = max_abs_diff(&got, &want);
        eprintln!("{}: max |Δ| {d:e}", c["name"]);
        // torch's compiled kernel fuses some multiply-adds: a few ulps at most
        assert!(d <= 2e-6, "{}: {d}", c["name"]);
    }
}

#[test]
fn inpainting_code_mask_and_prefilled_tokens_match() {
    let p = edit_parity();
    let c = &p["inpaint"];
    let (regen, vals) = code_mask(&edit_mask(), 64, 4).unwrap();
    let want: Vec<bool> = u32s(&c["mask_bool"]).iter().map(|&b| b == 1).collect();
    assert_eq!(regen, want);
    assert!(max_abs_diff(&vals, &f32s(&c["mask_interpolated"])) <= 2e-6);
    // the codes of the transformed image, masked where the mask says, are the reference's
    // pre-filled image span
    let dir = fixture_dir("showo-tiny").join("magvit");
    let cfg: any2any_showo::magvit::MagvitConfig =
        any2any_core::loading::read_json(&dir.join("config.json")).unwrap();
    let store = any2any_core::loading::WeightStore::open(&[dir.join("model.safetensors")]).unwrap();
    let vb = any2any_core::candle_nn::VarBuilder::from_backend(
        Box::new(store),
        any2any_core::candle_core::DType::F32,
        any2any_core::candle_core::Device::Cpu,
    );
    let mv = any2any_showo::magvit::Magvit::load(vb, &cfg).unwrap();
    let px = resize_shortest_center_crop(&edit_image().pixels, 64).unwrap();
    let v: Vec<f32> = px
        .into_raw()
        .iter()
        .map(|&b| (b as f32 / 255.0 - 0.5) / 0.5)
        .collect();
    let x = any2any_core::candle_core::Tensor::from_vec(
        v,
        (1, 64, 64, 3),
        &any2any_core::candle_core::Device::Cpu,
    )
    .unwrap()
    .permute((0, 3, 1, 2))
    .unwrap()
    .contiguous()
    .unwrap();
    let codes = mv
        .encode(&x)
        .unwrap()
        .get(0)
        .unwrap()
        .to_vec1::<u32>()
        .unwrap();
    assert_eq!(codes, u32s(&c["image_codes"]));
    let ids = u32s(&c["input_ids"]);
    let span = &ids[ids.len() - 17..ids.len() - 1];
    for i in 0..16 {
        let want = if regen[i] { 126 } else { codes[i] + 110 };
        assert_eq!(span[i], want, "slot {i}");
    }
}

#[test]
fn inpainting_matches_the_official_mode_under_replayed_noise() {
    let p = edit_parity();
    let c = &p["inpaint"];
    let pipe = pipeline();
    let req = Request::new()
        .image(edit_image().with_mask(edit_mask()).unwrap())
        .raw_ids(u32s(&c["text_ids"]))
        .want(Modality::Image)
        .params(params(c));
    let mut hooks = Hooks::new().noise(ReplayNoise::uniforms(uniforms(c)));
    let out = generate_with(pipe.as_ref(), req, &mut hooks).unwrap();
    let (codes, grid, dims) = image_out(&out);
    assert_eq!(codes, u32s(&c["codes"]));
    assert_eq!((grid, dims), ((4, 4), (64, 64)));
    // the unmasked codes are the input image's
    let known = u32s(&c["image_codes"]);
    for (i, m) in u32s(&c["mask_bool"]).iter().enumerate() {
        if *m == 0 {
            assert_eq!(codes[i], known[i], "kept code {i}");
        }
    }
}

#[test]
fn extrapolation_matches_the_official_mode_under_replayed_noise() {
    let p = edit_parity();
    let pipe = pipeline();
    for (name, c) in p["extrapolation"].as_object().unwrap() {
        let dirs: Vec<ExtendDirection> = c["directions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap().parse().unwrap())
            .collect();
        let offset = c["offset"].as_u64().unwrap() as usize;
        let passes = c["passes"].as_array().unwrap();
        // the windows, step by step, from the reference's own pass codes
        let mut cur = CodeGrid::new(4, 4, u32s(&p["inpaint"]["image_codes"])).unwrap();
        for (k, ps) in passes.iter().enumerate() {
            let w = extend_window(&cur, dirs[k], offset, 4, 126).unwrap();
            let want: Vec<u32> = u32s(&ps["window_tokens"])
                .iter()
                .map(|&t| if t == 126 { 126 } else { t - 110 })
                .collect();
            assert_eq!(w.codes, want, "{name} pass {k} window");
            let gen = CodeGrid::new(4, 4, u32s(&ps["codes"])).unwrap();
            cur = any2any_showo::edit::extend_merge(&cur, &gen, dirs[k], offset, 4).unwrap();
            assert_eq!(vec![cur.h as u32, cur.w as u32], u32s(&ps["grid_after"]));
        }
        assert_eq!(
            cur.codes,
            u32s(&c["codes"]),
            "{name}: merge of the reference's passes"
        );
        // the whole mode through the pipeline: one text segment per direction when they differ,
        // one text for all when they are the same (both mean the same to the backend)
        let texts: Vec<Vec<u32>> = passes.iter().map(|ps| u32s(&ps["text_ids"])).collect();
        let mut req = Request::new()
            .image(edit_image().extend(&dirs, offset).unwrap())
            .want(Modality::Image)
            .params(params(c));
        if texts.iter().all(|t| *t == texts[0]) {
            req = req.raw_ids(texts[0].clone());
        } else {
            for t in &texts {
                req = req.raw_ids(t.clone());
            }
        }
        let mut hooks = Hooks::new().noise(ReplayNoise::uniforms(uniforms(c)));
        let out = generate_with(pipe.as_ref(), req, &mut hooks).unwrap();
        let (codes, grid, dims) = image_out(&out);
        let (h, w) = (
            c["height"].as_u64().unwrap() as usize,
            c["width"].as_u64().unwrap() as usize,
        );
        assert_eq!(codes, u32s(&c["codes"]), "{name}");
        assert_eq!(grid, (h, w), "{name}");
        assert_eq!(dims, (16 * w as u32, 16 * h as u32), "{name}");
    }
}

/// (stage, step, total) of every progress report.
type Reports = Arc<Mutex<Vec<(String, usize, usize)>>>;

fn recording_hooks<'a>(log: &Reports) -> Hooks<'a> {
    let log = log.clone();
    Hooks::new().on_progress(move |p| {
        log.lock()
            .unwrap()
            .push((p.stage.to_string(), p.step, p.total))
    })
}

#[test]
fn batched_requests_give_the_codes_of_single_runs() {
    let pipe = pipeline();
    let p = edit_parity();
    let text = u32s(&p["inpaint"]["text_ids"]);
    let with = |steps: usize, cfg: f32, seed: u64| GenerationParams {
        steps: Some(steps),
        cfg: Some(cfg),
        seed,
        ..Default::default()
    };
    let reqs = vec![
        // text→image with CFG
        Request::new()
            .raw_ids(text.clone())
            .want(Modality::Image)
            .params(with(4, 2.75, 1)),
        // inpainting, two outputs (drawn one after the other from one stream)
        Request::new()
            .image(edit_image().with_mask(edit_mask()).unwrap())
            .raw_ids(vec![23, 51, 7])
            .want(Modality::Image)
            .params(with(4, 2.75, 2))
            .num_outputs(2),
        // no CFG (w = 1): one forward row instead of two, in the same loop
        Request::new()
            .raw_ids(vec![64, 3])
            .want(Modality::Image)
            .params(GenerationParams {
                temperature: Some(0.5),
                ..with(4, 1.0, 3)
            }),
        // extrapolation: two passes; its first shares the loop above, its second runs alone
        Request::new()
            .image(
                edit_image()
                    .extend(&[ExtendDirection::Left, ExtendDirection::Left], 1)
                    .unwrap(),
            )
            .raw_ids(text.clone())
            .want(Modality::Image)
            .params(with(4, 2.75, 4)),
        // another step count: its own loop
        Request::new()
            .raw_ids(text.clone())
            .want(Modality::Image)
            .params(with(3, 2.75, 5)),
        // image→text between them keeps its place
        Request::new()
            .image(edit_image())
            .raw_ids(vec![31, 5])
            .want(Modality::Text)
            .params(GenerationParams {
                max_new_tokens: Some(3),
                ..Default::default()
            }),
    ];
    let alone: Vec<Vec<any2any_core::Output>> = reqs
        .iter()
        .map(|r| {
            pipe.generate_batch(std::slice::from_ref(r), &mut Hooks::new())
                .unwrap()
        })
        .collect();
    let log: Reports = Arc::default();
    let batched = pipe
        .generate_batch(&reqs, &mut recording_hooks(&log))
        .unwrap();
    let alone: Vec<any2any_core::Output> = alone.into_iter().flatten().collect();
    assert_eq!(batched.len(), 7);
    assert_eq!(alone.len(), 7);
    let mut distinct = std::collections::HashSet::new();
    for (i, (b, a)) in batched.iter().zip(&alone).enumerate() {
        match (&b.segments[0], &a.segments[0]) {
            (Generated::Image { .. }, Generated::Image { .. }) => {
                let (cb, gb, _) = image_out(b);
                let (ca, ga, _) = image_out(a);
                assert_eq!((&cb, gb), (&ca, ga), "output {i}");
                distinct.insert(cb);
            }
            (Generated::Text { ids: tb, .. }, Generated::Text { ids: ta, .. }) => {
                assert_eq!(tb, ta, "output {i}")
            }
            other => panic!("output {i}: {other:?}"),
        }
    }
    assert!(
        distinct.len() >= 5,
        "outputs should differ for the test to mean anything"
    );
    // one shared 4-step loop (5 images, the extrapolation's first pass included), the
    // extrapolation's second pass (4) and the 3-step request: 11 steps, reported one by one
    // (the image→text request reports its own "text tokens" stage)
    let log: Vec<_> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.0 == "image")
        .cloned()
        .collect();
    let total = 4 + 4 + 3;
    let want: Vec<(String, usize, usize)> = (0..=total)
        .map(|i| ("image".to_string(), i, total))
        .collect();
    assert_eq!(log, want);
}

#[test]
fn progress_reports_each_step_and_cancel_stops_between_steps() {
    let pipe = pipeline();
    let req = || {
        Request::new()
            .raw_ids(vec![17, 42])
            .want(Modality::Image)
            .params(GenerationParams {
                steps: Some(5),
                ..Default::default()
            })
    };
    let log: Reports = Arc::default();
    generate_with(pipe.as_ref(), req(), &mut recording_hooks(&log)).unwrap();
    // the MaskGIT steps, then the VQ decode of the one image (step 0 of 1, then 1)
    let want: Vec<(String, usize, usize)> = (0..=5)
        .map(|i| ("image".into(), i, 5))
        .chain((0..=1).map(|i| ("vq decode".into(), i, 1)))
        .collect();
    assert_eq!(*log.lock().unwrap(), want);

    let cancel = CancelToken::new();
    let c2 = cancel.clone();
    let mut hooks = Hooks::new().cancel_token(cancel).on_progress(move |p| {
        if p.step == 2 {
            c2.cancel();
        }
    });
    match generate_with(pipe.as_ref(), req(), &mut hooks) {
        Err(Error::Cancelled { stage, step, total }) => {
            assert_eq!((stage.as_str(), step, total), ("image", 3, 5))
        }
        other => panic!("expected a cancellation, got {other:?}"),
    }
}

#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(r: any2any_core::Result<T>, arg: &str) -> String {
    match r {
        Err(Error::InvalidArgument { name, msg }) => {
            assert_eq!(name, arg, "{msg}");
            msg
        }
        other => panic!("expected invalid `{arg}`, got {other:?}"),
    }
}

#[test]
fn bad_edits_are_typed_errors() {
    let img = edit_image();
    assert_invalid(img.clone().with_mask(image::GrayImage::new(64, 64)), "mask");
    assert_invalid(img.clone().with_mask(image::GrayImage::new(80, 72)), "mask");
    assert_invalid(img.clone().with_mask_rect(70, 0, 20, 10), "mask");
    assert_invalid(img.clone().extend(&[], 0), "extend");
    assert_invalid(ExtendDirection::parse_list("left,diagonal"), "extend");

    let pipe = pipeline();
    let gen = |i: ImageInput| {
        generate(
            pipe.as_ref(),
            Request::new()
                .image(i)
                .raw_ids(vec![17])
                .want(Modality::Image)
                .params(GenerationParams {
                    steps: Some(2),
                    ..Default::default()
                }),
        )
    };
    // offset: Show-o keeps grid/2 − offset columns, so offset < 2 on the 4×4 tiny grid
    let msg = assert_invalid(
        gen(img.clone().extend(&[ExtendDirection::Right], 2).unwrap()),
        "extend-offset",
    );
    assert!(msg.contains("below 2"), "{msg}");
    assert_invalid(
        gen(img
            .clone()
            .extend(&[ExtendDirection::Right, ExtendDirection::Up], 0)
            .unwrap()),
        "extend",
    );
    // a region that covers no code cell after downsampling
    assert_invalid(gen(img.clone().with_mask_rect(0, 0, 3, 3).unwrap()), "mask");
    // three texts for two directions
    let r = Request::new()
        .image(img.clone().extend(&[ExtendDirection::Left; 2], 0).unwrap())
        .raw_ids(vec![1])
        .raw_ids(vec![2])
        .raw_ids(vec![3])
        .want(Modality::Image);
    assert_invalid(generate(pipe.as_ref(), r), "prompt");
    // an edit asks for an image
    let r = Request::new()
        .image(img.clone().with_mask(edit_mask()).unwrap())
        .raw_ids(vec![1])
        .want(Modality::Text);
    assert_invalid(generate(pipe.as_ref(), r), "mask");
    // a fields-constructed edit is checked too
    let mut bad = img.clone();
    bad.edit = Some(any2any_core::ImageEdit::Inpaint {
        mask: image::GrayImage::new(3, 3),
    });
    assert_invalid(gen(bad), "mask");
}
