//! `DDIMScheduler`: the deterministic (η = 0) or stochastic (η > 0) DDIM update; the η noise is
//! drawn from the loop's [`NoiseSource`].

use super::axpby;
use super::betas::{
    alpha_at, check_steps, spaced_timesteps, NoiseSchedule, PredictionType, TimestepSpacing,
};
use any2any_core::candle_core::Tensor;
use any2any_core::decode::Scheduler;
use any2any_core::{Error, NoiseSource, Result};
use serde::Deserialize;

/// `DDIMScheduler`'s `scheduler_config.json` (diffusers' defaults).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DdimConfig {
    /// Betas, training timesteps, prediction type.
    #[serde(flatten)]
    pub schedule: NoiseSchedule,
    /// `timestep_spacing` (default `leading`).
    #[serde(default = "leading")]
    pub timestep_spacing: TimestepSpacing,
    /// `steps_offset` (leading spacing only).
    #[serde(default)]
    pub steps_offset: usize,
    /// `clip_sample`: clamp the x₀ estimate to ±`clip_sample_range`.
    #[serde(default = "yes")]
    pub clip_sample: bool,
    /// `clip_sample_range`.
    #[serde(default = "one")]
    pub clip_sample_range: f64,
    /// `set_alpha_to_one`: ᾱ before the first training step is 1 (else ᾱ₀).
    #[serde(default = "yes")]
    pub set_alpha_to_one: bool,
    /// `thresholding` (not supported when true).
    #[serde(default)]
    pub thresholding: bool,
}

pub(crate) fn leading() -> TimestepSpacing {
    TimestepSpacing::Leading
}
fn yes() -> bool {
    true
}
fn one() -> f64 {
    1.0
}

impl DdimConfig {
    /// Unsupported options, as a message naming the field.
    pub fn check(&self) -> std::result::Result<(), String> {
        self.schedule.check()?;
        if self.thresholding {
            return Err("thresholding: true (dynamic thresholding) is not supported".into());
        }
        Ok(())
    }
}

/// DDIM set to a number of steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Ddim {
    /// Integer timesteps, descending.
    pub timesteps: Vec<f64>,
    /// η: 0 is deterministic DDIM, 1 the DDPM posterior variance.
    pub eta: f64,
    ratio: i64,
    ac: Vec<f32>,
    final_alpha: f32,
    prediction: PredictionType,
    clip: Option<f64>,
}

impl Ddim {
    /// `set_timesteps(steps)` of `cfg`, stepping with `eta` (the pipelines' default is 0).
    pub fn new(cfg: &DdimConfig, steps: usize, eta: f64) -> Result<Self> {
        cfg.check().map_err(|m| Error::invalid("scheduler", m))?;
        if !(0.0..=1.0).contains(&eta) {
            return Err(Error::invalid("eta", format!("{eta} (must be in [0, 1])")));
        }
        let s = &cfg.schedule;
        check_steps(steps, s.num_train_timesteps)?;
        let ac = s.alphas_cumprod();
        Ok(Self {
            timesteps: spaced_timesteps(
                cfg.timestep_spacing,
                s.num_train_timesteps,
                steps,
                cfg.steps_offset,
                true,
            ),
            eta,
            ratio: (s.num_train_timesteps / steps) as i64,
            final_alpha: if cfg.set_alpha_to_one { 1.0 } else { ac[0] },
            ac,
            prediction: s.prediction(),
            clip: cfg.clip_sample.then_some(cfg.clip_sample_range),
        })
    }
}

/// (x₀, ε) estimates from the model's prediction at ᾱ = `a`.
pub(crate) fn x0_eps(
    prediction: PredictionType,
    x: &Tensor,
    pred: &Tensor,
    a: f64,
) -> Result<(Tensor, Tensor)> {
    let b = 1.0 - a;
    let pred = pred.to_dtype(x.dtype())?;
    Ok(match prediction {
        PredictionType::Epsilon => (axpby(x, 1.0 / a.sqrt(), &pred, -(b / a).sqrt())?, pred),
        PredictionType::Sample => {
            let eps = axpby(x, 1.0 / b.sqrt(), &pred, -(a / b).sqrt())?;
            (pred, eps)
        }
        PredictionType::VPrediction => (
            axpby(x, a.sqrt(), &pred, -b.sqrt())?,
            axpby(&pred, a.sqrt(), x, b.sqrt())?,
        ),
    })
}

impl Scheduler for Ddim {
    timestep_table!();
    fn step(
        &mut self,
        x: &Tensor,
        pred: &Tensor,
        i: usize,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let t = self.timestep(i) as i64;
        let a = alpha_at(&self.ac, t, self.final_alpha)?;
        let a_prev = alpha_at(&self.ac, t - self.ratio, self.final_alpha)?;
        let (mut x0, eps) = x0_eps(self.prediction, x, pred, a)?;
        if let Some(r) = self.clip {
            x0 = x0.clamp(-r, r)?;
        }
        let variance = (1.0 - a_prev) / (1.0 - a) * (1.0 - a / a_prev);
        let std = self.eta * variance.sqrt();
        let out = axpby(&x0, a_prev.sqrt(), &eps, (1.0 - a_prev - std * std).sqrt())?;
        if self.eta <= 0.0 {
            return Ok(out);
        }
        let z = noise.normal(out.elem_count())?;
        let z = Tensor::from_vec(z, out.shape(), out.device())?;
        axpby(&out, 1.0, &z, std)
    }
}
