//! `PNDMScheduler` with `skip_prk_steps` (PLMS, the SD-1.5 and SD-2.1-unCLIP default): a linear
//! multistep method over the last four ε predictions; the second timestep repeats, so `n` steps
//! call the model `n + 1` times.

use super::betas::{alpha_at, check_steps, spaced_timesteps, NoiseSchedule, PredictionType};
use super::ddim::leading;
use super::{axpby, betas::TimestepSpacing};
use any2any_core::candle_core::Tensor;
use any2any_core::decode::Scheduler;
use any2any_core::{Error, NoiseSource, Result};
use serde::Deserialize;

/// `PNDMScheduler`'s `scheduler_config.json` (diffusers' defaults).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PndmConfig {
    /// Betas, training timesteps, prediction type (`epsilon` or `v_prediction`).
    #[serde(flatten)]
    pub schedule: NoiseSchedule,
    /// `timestep_spacing` (default `leading`).
    #[serde(default = "leading")]
    pub timestep_spacing: TimestepSpacing,
    /// `steps_offset` (leading spacing only).
    #[serde(default)]
    pub steps_offset: usize,
    /// `skip_prk_steps`: must be true (the Runge-Kutta warm-up is not supported).
    #[serde(default)]
    pub skip_prk_steps: bool,
    /// `set_alpha_to_one`: ᾱ before the first training step is 1 (else ᾱ₀).
    #[serde(default)]
    pub set_alpha_to_one: bool,
}

impl PndmConfig {
    /// Unsupported options, as a message naming the field.
    pub fn check(&self) -> std::result::Result<(), String> {
        self.schedule.check()?;
        if !self.skip_prk_steps {
            return Err(
                "skip_prk_steps: false (the PRK warm-up) is not supported; SD pipelines set it true"
                    .into(),
            );
        }
        if self.schedule.prediction() == PredictionType::Sample {
            return Err("prediction_type `sample` is not supported by PNDM".into());
        }
        Ok(())
    }
}

/// PLMS set to a number of steps; keeps the ε history of the steps run so far.
#[derive(Debug, Clone)]
pub struct Pndm {
    /// The model timesteps, `steps + 1` of them (the second repeats the first's target).
    pub timesteps: Vec<f64>,
    ratio: i64,
    ac: Vec<f32>,
    final_alpha: f32,
    prediction: PredictionType,
    ets: Vec<Tensor>,
    cur_sample: Option<Tensor>,
}

impl Pndm {
    /// `set_timesteps(steps)` of `cfg`.
    pub fn new(cfg: &PndmConfig, steps: usize) -> Result<Self> {
        cfg.check().map_err(|m| Error::invalid("scheduler", m))?;
        let s = &cfg.schedule;
        check_steps(steps, s.num_train_timesteps)?;
        let t = spaced_timesteps(
            cfg.timestep_spacing,
            s.num_train_timesteps,
            steps,
            cfg.steps_offset,
            true,
        );
        // diffusers: concat(ts[:-1], ts[-2:-1], ts[-1:]) of the ascending ts, reversed: the
        // second-largest timestep twice (a single step: just it)
        let mut timesteps = t.clone();
        if let Some(&second) = t.get(1) {
            timesteps.insert(1, second);
        }
        let ac = s.alphas_cumprod();
        Ok(Self {
            timesteps,
            ratio: (s.num_train_timesteps / steps) as i64,
            final_alpha: if cfg.set_alpha_to_one { 1.0 } else { ac[0] },
            ac,
            prediction: s.prediction(),
            ets: Vec::new(),
            cur_sample: None,
        })
    }

    /// `_get_prev_sample`: from `x` at `t` to `prev` with ε (or v) `e`.
    fn prev_sample(&self, x: &Tensor, t: i64, prev: i64, e: &Tensor) -> Result<Tensor> {
        let a = alpha_at(&self.ac, t, self.final_alpha)?;
        let a_prev = alpha_at(&self.ac, prev, self.final_alpha)?;
        let (b, b_prev) = (1.0 - a, 1.0 - a_prev);
        let e = match self.prediction {
            PredictionType::VPrediction => axpby(e, a.sqrt(), x, b.sqrt())?,
            _ => e.to_dtype(x.dtype())?,
        };
        let denom = a * b_prev.sqrt() + (a * b * a_prev).sqrt();
        axpby(x, (a_prev / a).sqrt(), &e, -(a_prev - a) / denom)
    }

    /// The multistep combination of the ε history.
    fn combined(&self) -> Result<Tensor> {
        let e = &self.ets;
        let n = e.len();
        let mix = |w: &[f64]| -> Result<Tensor> {
            let mut acc = (&e[n - 1] * w[0])?;
            for (k, &wk) in w.iter().enumerate().skip(1) {
                acc = (acc + (&e[n - 1 - k] * wk)?)?;
            }
            Ok(acc)
        };
        match n {
            2 => mix(&[1.5, -0.5]),
            3 => mix(&[23.0 / 12.0, -16.0 / 12.0, 5.0 / 12.0]),
            _ => mix(&[55.0 / 24.0, -59.0 / 24.0, 37.0 / 24.0, -9.0 / 24.0]),
        }
    }
}

impl Scheduler for Pndm {
    timestep_table!();
    fn step(
        &mut self,
        x: &Tensor,
        pred: &Tensor,
        i: usize,
        _: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        if i == 0 {
            self.ets.clear();
            self.cur_sample = None;
        }
        let t = self.timestep(i) as i64;
        if i == 1 {
            // step 1 redoes step 0 from the same sample with the mean of both predictions
            let (Some(x0), Some(e0)) = (self.cur_sample.take(), self.ets.last()) else {
                return Err(Error::invalid("steps", "PLMS step 1 run before step 0"));
            };
            let e = ((pred.to_dtype(e0.dtype())? + e0)? / 2.0)?;
            return self.prev_sample(&x0, t + self.ratio, t, &e);
        }
        if self.ets.len() == 4 {
            self.ets.remove(0);
        }
        self.ets.push(pred.clone());
        let e = if i == 0 {
            self.cur_sample = Some(x.clone());
            pred.clone()
        } else {
            self.combined()?
        };
        self.prev_sample(x, t, t - self.ratio, &e)
    }
}
