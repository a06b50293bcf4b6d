//! Parity with diffusers 0.31.0 on the tiny SD-1.5- and SDXL-shaped UNets of
//! `tests/fixtures/unet-tiny` (written by `scripts/fixtures/make_unet.py`): noise predictions for
//! fixed inputs, and whole guided scheduler loops under the replayed initial (and DDIM η) noise.

use any2any_core::candle_core::{DType, Device, Tensor};
use any2any_core::decode::Scheduler;
use any2any_core::{Hooks, NoiseSource, ReplayNoise, Result};
use any2any_diffusion::scheduler::SchedulerConfig;
use any2any_diffusion::unet::{
    sample, TextTime, UNet2DConditionModel, UNetCondition, UNetDenoiser,
};
use any2any_test_util::{f32s, fixture_dir, fixture_json, max_abs_diff};
use serde_json::Value;

const TOL: f32 = 1e-4;

/// Loop tolerance: 1e-4, or 1e-5 relative to the reference's largest value where that is larger
/// (Euler's latents start at σ_max ≈ 14.6 times the noise: values up to 50, where f32 rounding
/// of predictions amplified by guidance 7.5 and σ-steps of 10 reaches 1.4e-4).
fn tol(want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    TOL.max(1e-5 * scale)
}

fn unet(name: &str) -> UNet2DConditionModel {
    let dir = fixture_dir("unet-tiny").join(name).join("unet");
    UNet2DConditionModel::from_dir(&dir, DType::F32, &Device::Cpu).expect("load unet")
}

fn tensor(v: &Value, shape: &[usize]) -> Tensor {
    Tensor::from_vec(f32s(v), shape, &Device::Cpu).expect("tensor")
}

/// The conditioning of a case: `rows` rows of 5 encoder tokens of width 24, with text_time
/// and class labels when the case has them.
fn condition(case: &Value, rows: usize) -> UNetCondition {
    let ehs = tensor(&case["encoder_hidden_states"], &[rows, 5, 24]);
    let mut c = UNetCondition::new(ehs);
    if let Some(v) = case.get("class_labels") {
        let n = v.as_array().unwrap().len();
        c = c.with_class_labels(tensor(v, &[rows, n / rows]));
    }
    if case.get("text_embeds").is_some() {
        c = c.with_text_time(TextTime {
            text_embeds: tensor(&case["text_embeds"], &[rows, 24]),
            time_ids: tensor(&case["time_ids"], &[rows, 6]),
        });
    }
    c
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn check_forward(name: &str) {
    let m = unet(name);
    let parity = fixture_json(&format!("unet-tiny/{name}"), "parity.json");
    for case in parity["forward"].as_array().unwrap() {
        let shape: Vec<usize> = case["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let x = tensor(&case["sample"], &shape);
        let out = m
            .forward(&x, case["t"].as_f64().unwrap(), &condition(case, shape[0]))
            .unwrap();
        assert_eq!(out.dims(), shape.as_slice());
        let d = max_abs_diff(&flat(&out), &f32s(&case["out"]));
        eprintln!("{name} forward {shape:?}: max |Δ| = {d:.2e}");
        assert!(d <= TOL, "{name} {shape:?}: {d}");
    }
}

#[test]
fn sd15_noise_prediction_matches_diffusers() {
    check_forward("sd15");
}

#[test]
fn sdxl_text_time_noise_prediction_matches_diffusers() {
    check_forward("sdxl");
}

/// Records every step's guided prediction and latent of the scheduler it wraps.
struct Recording<'a> {
    inner: &'a mut dyn Scheduler,
    preds: Vec<Vec<f32>>,
    latents: Vec<Vec<f32>>,
}

impl Scheduler for Recording<'_> {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn timestep(&self, i: usize) -> f64 {
        self.inner.timestep(i)
    }
    fn scale_input(&self, x: &Tensor, i: usize) -> Result<Tensor> {
        self.inner.scale_input(x, i)
    }
    fn init_noise_sigma(&self) -> f64 {
        self.inner.init_noise_sigma()
    }
    fn step(
        &mut self,
        x: &Tensor,
        pred: &Tensor,
        i: usize,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let out = self.inner.step(x, pred, i, noise)?;
        self.preds.push(flat(pred));
        self.latents.push(flat(&out));
        Ok(out)
    }
}

fn check_loops(name: &str) {
    let m = unet(name);
    let dir = fixture_dir("unet-tiny").join(name);
    let parity = fixture_json(&format!("unet-tiny/{name}"), "parity.json");
    for (sname, case) in parity["loops"].as_object().unwrap() {
        let cfg = SchedulerConfig::from_dir(&dir.join(sname)).unwrap();
        let steps = case["steps"].as_u64().unwrap() as usize;
        let eta = case["eta"].as_f64().unwrap();
        let mut sched = cfg.build_with_eta(steps, eta).unwrap();
        let want_t: Vec<f64> = case["timesteps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let got_t: Vec<f64> = (0..sched.len()).map(|i| sched.timestep(i)).collect();
        assert_eq!(got_t, want_t, "{name}/{sname} timesteps");
        let sigma = case["init_noise_sigma"].as_f64().unwrap();
        assert!(
            (sched.init_noise_sigma() - sigma).abs() <= 1e-5 * sigma,
            "{name}/{sname} init sigma {} vs {sigma}",
            sched.init_noise_sigma()
        );

        let mut rec = Recording {
            inner: sched.as_mut(),
            preds: vec![],
            latents: vec![],
        };
        let mut noise = ReplayNoise::new(vec![], f32s(&case["noise"]));
        let mut den = UNetDenoiser {
            unet: &m,
            cond: condition(case, 2),
        };
        let g = case["guidance"].as_f64().unwrap() as f32;
        let out = sample(
            &mut den,
            &mut rec,
            Some(g),
            (1, 4, 8, 8),
            &mut noise,
            &mut Hooks::new(),
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(
            noise.remaining(),
            (0, 0),
            "{name}/{sname}: every replayed draw is used"
        );
        let (wp, wl) = (
            case["preds"].as_array().unwrap(),
            case["latents"].as_array().unwrap(),
        );
        assert_eq!((rec.preds.len(), rec.latents.len()), (wp.len(), wl.len()));
        let mut worst = (0f32, 0f32);
        for i in 0..wl.len() {
            let (p, l) = (f32s(&wp[i]), f32s(&wl[i]));
            let dp = max_abs_diff(&rec.preds[i], &p);
            let dl = max_abs_diff(&rec.latents[i], &l);
            worst = (worst.0.max(dp), worst.1.max(dl));
            assert!(
                dp <= tol(&p) && dl <= tol(&l),
                "{name}/{sname} step {i}: pred {dp}, latent {dl}"
            );
        }
        let last = f32s(&wl[wl.len() - 1]);
        let d = max_abs_diff(&flat(&out), &last);
        eprintln!(
            "{name}/{sname}: {} steps, max |Δ| pred {:.2e}, latent {:.2e}, final {d:.2e}",
            wl.len(),
            worst.0,
            worst.1
        );
        assert!(d <= tol(&last));
    }
}

#[test]
fn unclip_class_embedding_noise_prediction_matches_diffusers() {
    check_forward("sd21-unclip");
}

#[test]
fn unclip_v_prediction_pndm_loop_matches_diffusers() {
    check_loops("sd21-unclip");
}

#[test]
fn sd15_pndm_ddim_euler_loops_match_diffusers() {
    check_loops("sd15");
}

#[test]
fn sdxl_euler_and_ddim_eta_loops_match_diffusers() {
    check_loops("sdxl");
}
