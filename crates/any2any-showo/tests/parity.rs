//! Show-o parity against the official showlab/Show-o code on a tiny random model
//! (`tests/fixtures/showo-tiny`, written by `scripts/fixtures/make_showo.py`).

use any2any_core::backbone::MaskKind;
use any2any_core::candle_core::{DType, Device, Tensor};
use any2any_core::{Backend, ReplayNoise};
use any2any_showo::{maskgit, prompt, ShowoConfig, ShowoModel, T2iOptions};
use any2any_test_util::{
    f32s, fixture_dir, fixture_image, generate, load_fixture, max_abs_diff, parity, u32s,
};

fn load() -> ShowoModel {
    let dir = fixture_dir("showo-tiny");
    let (cfg, bb) = ShowoConfig::load(&dir.join("config.json")).expect("config");
    let files = any2any_core::ModelFiles::from_dir(&dir).expect("files");
    let vb = files
        .var_builder(DType::F32, &Device::Cpu)
        .expect("weights");
    ShowoModel::load(vb, cfg, &bb).expect("load")
}

fn rows_of(v: &serde_json::Value) -> Vec<Vec<u32>> {
    v.as_array().unwrap().iter().map(u32s).collect()
}

fn explicit(m: &MaskKind) -> &[bool] {
    match m {
        MaskKind::Explicit { visible, .. } => visible,
        _ => panic!("explicit mask expected"),
    }
}

fn flat_visible(v: &serde_json::Value) -> Vec<bool> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter())
        .flat_map(|q| q.as_array().unwrap().iter())
        .map(|x| x.as_u64().unwrap() == 1)
        .collect()
}

#[test]
fn t2i_prompt_and_omni_mask_match() {
    let p = parity("showo-tiny");
    let m = load();
    let v = m.config.vocab();
    let case = &p["omni_mask_t2i"];
    let rows = rows_of(&case["input_ids"]);
    let text = u32s(&p["meta"]["text_ids"]["a tiny red square"]);
    let bos = p["meta"]["vocab"]["bos_eos_sot_eot"].as_u64().unwrap() as u32;
    assert_eq!(prompt::t2i_prompt(&v, &text, bos, 8, 16).unwrap(), rows[0]);
    assert_eq!(prompt::t2i_prompt(&v, &[], bos, 8, 16).unwrap(), rows[1]);
    let mask = prompt::omni_mask_t2i(&v, &rows).unwrap();
    assert_eq!(explicit(&mask), flat_visible(&case["visible"]).as_slice());

    let mmu = &p["omni_mask_mmu"];
    let ids = u32s(&mmu["input_ids"]);
    let eoi = mmu["eoi_index"].as_u64().unwrap() as usize;
    let mask = prompt::omni_mask_mmu(1, eoi, ids.len());
    let want: Vec<bool> = mmu["visible"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|q| q.as_array().unwrap().iter())
        .map(|x| x.as_u64().unwrap() == 1)
        .collect();
    assert_eq!(explicit(&mask), want.as_slice());
}

#[test]
fn t2i_step0_logits_match() {
    let p = parity("showo-tiny");
    let m = load();
    let v = m.config.vocab();
    let rows = rows_of(&p["omni_mask_t2i"]["input_ids"]);
    let mask = prompt::omni_mask_t2i(&v, &rows).unwrap();
    let c = &p["t2i_step0_logits"];
    let s = c["guidance_scale"].as_f64().unwrap();
    let (cfg, per_row) = maskgit::step_logits(&m, &v, &rows, &mask, 16, s).unwrap();
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let d_cond = max_abs_diff(&flat(&per_row[0]), &f32s(&c["cond"]));
    let d_unc = max_abs_diff(&flat(&per_row[1]), &f32s(&c["uncond"]));
    let d_cfg = max_abs_diff(&flat(&cfg), &f32s(&c["cfg"]));
    eprintln!("step0 logits: cond {d_cond:e} uncond {d_unc:e} cfg {d_cfg:e}");
    assert!(d_cond <= 1e-4 && d_unc <= 1e-4 && d_cfg <= 1e-4);
}

#[test]
fn t2i_schedule_matches_f32_quirks() {
    let p = parity("showo-tiny");
    for (name, t) in [("T4", 4), ("T18", 18)] {
        let want = f32s(&p["meta"]["mask_ratio_f32"][name]);
        for (i, w) in want.iter().enumerate() {
            let got = maskgit::cosine_mask_ratio(i, t);
            assert!((got - w).abs() < 1e-6, "{name} step {i}: {got} vs {w}");
            assert_eq!((16.0 * got).floor(), (16.0 * w).floor(), "{name} step {i}");
        }
    }
}

#[test]
fn t2i_codes_match_under_replayed_noise() {
    let p = parity("showo-tiny");
    let m = load();
    for (name, c) in p["t2i_codes"].as_object().unwrap() {
        let steps = c["steps"].as_array().unwrap();
        let mut u = Vec::new();
        for s in steps {
            u.extend(f32s(&s["multinomial_u"]));
            u.extend(f32s(&s["gumbel_u"]));
        }
        let u2 = u.clone();
        let mut noise = ReplayNoise::uniforms(u);
        let cond = u32s(&c["input_ids"]);
        let uncond = c["uncond_input_ids"]
            .as_array()
            .map(|_| u32s(&c["uncond_input_ids"]));
        let opts = T2iOptions {
            steps: c["timesteps"].as_u64().unwrap() as usize,
            guidance_scale: c["guidance_scale"].as_f64().unwrap(),
            temperature: c["temperature"].as_f64().unwrap(),
            cache_prefix: false,
        };
        let (codes, trace) =
            maskgit::t2i_generate(&m, &cond, uncond.as_deref(), 9, &opts, &mut noise).unwrap();
        // the cached-prefix loop gives the same codes from the same noise
        let mut noise2 = ReplayNoise::uniforms(u2.clone());
        let cached = T2iOptions {
            cache_prefix: true,
            ..opts
        };
        let (codes2, _) =
            maskgit::t2i_generate(&m, &cond, uncond.as_deref(), 9, &cached, &mut noise2).unwrap();
        assert_eq!(codes2, codes, "{name} cached prefix");
        for (i, (t, s)) in trace.iter().zip(steps).enumerate() {
            assert_eq!(t.drawn, u32s(&s["sampled_raw"]), "{name} step {i}");
            assert_eq!(
                t.mask_len,
                s["mask_len"].as_u64().unwrap() as usize,
                "{name} step {i}"
            );
            assert_eq!(
                t.remasked,
                s["remasked"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as usize)
                    .collect::<Vec<_>>(),
                "{name} step {i}"
            );
        }
        assert_eq!(codes, u32s(&c["codes"]), "{name}");
        assert_eq!(noise.remaining(), (0, 0), "{name}");
    }
}

#[test]
fn inpaint_codes_match_under_replayed_noise() {
    let p = parity("showo-tiny");
    let m = load();
    let c = &p["inpaint"];
    let mut u = Vec::new();
    for s in c["steps"].as_array().unwrap() {
        u.extend(f32s(&s["multinomial_u"]));
        u.extend(f32s(&s["gumbel_u"]));
    }
    let mut noise = ReplayNoise::uniforms(u);
    let opts = T2iOptions {
        steps: c["timesteps"].as_u64().unwrap() as usize,
        guidance_scale: c["guidance_scale"].as_f64().unwrap(),
        temperature: c["temperature"].as_f64().unwrap(),
        cache_prefix: true,
    };
    let cond = u32s(&c["input_ids"]);
    let uncond = u32s(&c["uncond_input_ids"]);
    let (codes, _) = maskgit::t2i_generate(&m, &cond, Some(&uncond), 9, &opts, &mut noise).unwrap();
    assert_eq!(codes, u32s(&c["codes"]));
}

#[test]
fn mmu_greedy_matches_cached_and_uncached() {
    let p = parity("showo-tiny");
    let m = load();
    let c = &p["mmu_greedy"];
    let ids = u32s(&c["input_ids"]);
    let n = c["max_new_tokens"].as_u64().unwrap() as usize;
    let eot = c["eot"].as_u64().unwrap() as u32;
    for cached in [false, true] {
        let (new, step0) = any2any_showo::mmu::mmu_greedy(&m, &ids, n, Some(eot), cached).unwrap();
        let d = max_abs_diff(&step0, &f32s(&c["step0_logits"]));
        eprintln!("mmu step0 logits (cached {cached}): {d:e}");
        assert!(d <= 1e-4);
        assert_eq!(new, u32s(&c["new_ids"]), "cached {cached}");
        let s = &p["mmu_greedy_stop"];
        let stop = s["eot"].as_u64().unwrap() as u32;
        let (new, _) = any2any_showo::mmu::mmu_greedy(&m, &ids, n, Some(stop), cached).unwrap();
        assert_eq!(new, u32s(&s["new_ids"]), "stop, cached {cached}");
    }
}

fn load_magvit() -> any2any_showo::magvit::Magvit {
    let dir = fixture_dir("showo-tiny").join("magvit");
    let cfg: any2any_showo::magvit::MagvitConfig =
        any2any_core::loading::read_json(&dir.join("config.json")).unwrap();
    let store = any2any_core::loading::WeightStore::open(&[dir.join("model.safetensors")]).unwrap();
    let vb =
        any2any_core::candle_nn::VarBuilder::from_backend(Box::new(store), DType::F32, Device::Cpu);
    any2any_showo::magvit::Magvit::load(vb, &cfg).unwrap()
}

#[test]
fn magvit_encode_and_decode_match() {
    let p = parity("showo-tiny");
    let mv = load_magvit();
    let img = any2any_core::image::open(fixture_dir("showo-tiny").join("image.png"))
        .unwrap()
        .to_rgb8();
    let (w, h) = img.dimensions();
    let px: Vec<f32> = img
        .into_raw()
        .iter()
        .map(|&b| (b as f32 / 255.0 - 0.5) / 0.5)
        .collect();
    let x = Tensor::from_vec(px, (1, h as usize, w as usize, 3), &Device::Cpu)
        .unwrap()
        .permute((0, 3, 1, 2))
        .unwrap()
        .contiguous()
        .unwrap();
    let e = &p["magvit_encode"];
    let z = mv.encode_z(&x).unwrap();
    let dz = max_abs_diff(
        &z.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        &f32s(&e["z"]),
    );
    let codes = mv
        .codes_of(&z)
        .unwrap()
        .get(0)
        .unwrap()
        .to_vec1::<u32>()
        .unwrap();
    eprintln!("magvit z max diff {dz:e}");
    assert!(dz <= 1e-4);
    assert_eq!(codes, u32s(&e["codes"]));

    let d = &p["magvit_decode"];
    let codes = Tensor::new(u32s(&d["codes"]), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let raw = mv.decode(&codes, 4, 4).unwrap();
    let flat = raw.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let dr = max_abs_diff(&flat[..64], &f32s(&d["raw_first64"]));
    // postprocess: trunc(clamp((x+1)/2, 0, 1) * 255), HWC
    let pix: Vec<u8> = ((raw.get(0).unwrap() + 1.0).unwrap() / 2.0)
        .unwrap()
        .clamp(0f32, 1f32)
        .unwrap()
        .affine(255.0, 0.0)
        .unwrap()
        .permute((1, 2, 0))
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|&v| v as u8)
        .collect();
    let want = u32s(&d["pixels"]);
    let dp = pix
        .iter()
        .zip(&want)
        .map(|(&a, &b)| (a as i32 - b as i32).abs())
        .max()
        .unwrap();
    eprintln!("magvit decode raw first64 {dr:e}, pixels max diff {dp}");
    assert!(dr <= 1e-4 && dp <= 1);
}

fn pipeline() -> Box<dyn Backend> {
    load_fixture("showo-tiny", any2any_showo::load)
}

#[test]
fn pipeline_image_to_text_and_logits_match() {
    let p = parity("showo-tiny");
    let pipe = pipeline();
    assert_eq!(pipe.capabilities().family, "showo");
    let c = &p["mmu_greedy"];
    let ids = u32s(&c["input_ids"]);
    let logits = pipe
        .last_logits(&ids, &[])
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(max_abs_diff(&logits, &f32s(&c["step0_logits"])) <= 1e-4);
    // the fixture's image → its MAGVIT codes → [mmu][soi]codes[eoi][bos] + question
    let img = fixture_image("showo-tiny", "image.png");
    let text = u32s(&p["meta"]["text_ids"]["USER: \nwhat is this? ASSISTANT:"]);
    let params = any2any_core::GenerationParams {
        max_new_tokens: Some(8),
        ..Default::default()
    };
    let req = any2any_core::Request::new()
        .image(img)
        .raw_ids(text)
        .want(any2any_core::Modality::Text)
        .params(params);
    let out = generate(pipe.as_ref(), req).unwrap();
    match &out.segments[0] {
        any2any_core::Generated::Text { ids, .. } => assert_eq!(ids, &u32s(&c["new_ids"])),
        _ => panic!("text expected"),
    }
}

#[test]
fn pipeline_text_to_image_runs_and_decodes() {
    let pipe = pipeline();
    let params = any2any_core::GenerationParams {
        steps: Some(4),
        cfg: Some(2.75),
        ..Default::default()
    };
    let req = any2any_core::Request::new()
        .raw_ids(vec![17, 42, 8, 63])
        .want(any2any_core::Modality::Image)
        .params(params);
    let out = generate(pipe.as_ref(), req).unwrap();
    match &out.segments[0] {
        any2any_core::Generated::Image { image, codes, grid } => {
            assert_eq!(image.dimensions(), (64, 64));
            assert_eq!(codes.as_ref().unwrap().len(), 16);
            assert_eq!(*grid, Some((4, 4)));
        }
        _ => panic!("image expected"),
    }
}
