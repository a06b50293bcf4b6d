//! Show-o parity against the official showlab/Show-o code on a tiny random model
//! (`tests/fixtures/showo-tiny`, written by `scripts/fixtures/make_showo.py`).
mod common;

use any2any::backbone::MaskKind;
use any2any::candle_core::{DType, Device, Tensor};
use any2any::ReplayNoise;
use any2any_showo::{maskgit, prompt, ShowoConfig, ShowoModel, T2iOptions};
use common::{f32s, fixture_dir, max_abs_diff, parity, u32s};

fn load() -> ShowoModel {
    let dir = fixture_dir("showo-tiny");
    let (cfg, bb) = ShowoConfig::load(&dir.join("config.json")).expect("config");
    let files = any2any::ModelFiles::from_dir(&dir).expect("files");
    let vb = files.var_builder(DType::F32, &Device::Cpu).expect("weights");
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
        let mut noise = ReplayNoise::uniforms(u);
        let cond = u32s(&c["input_ids"]);
        let uncond = c["uncond_input_ids"].as_array().map(|_| u32s(&c["uncond_input_ids"]));
        let opts = T2iOptions {
            steps: c["timesteps"].as_u64().unwrap() as usize,
            guidance_scale: c["guidance_scale"].as_f64().unwrap(),
            temperature: c["temperature"].as_f64().unwrap(),
        };
        let (codes, trace) =
            maskgit::t2i_generate(&m, &cond, uncond.as_deref(), 9, &opts, &mut noise).unwrap();
        for (i, (t, s)) in trace.iter().zip(steps).enumerate() {
            assert_eq!(t.drawn, u32s(&s["sampled_raw"]), "{name} step {i}");
            assert_eq!(t.mask_len, s["mask_len"].as_u64().unwrap() as usize, "{name} step {i}");
            assert_eq!(
                t.remasked,
                s["remasked"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect::<Vec<_>>(),
                "{name} step {i}"
            );
        }
        assert_eq!(codes, u32s(&c["codes"]), "{name}");
        assert_eq!(noise.remaining(), (0, 0), "{name}");
    }
}
