//! `EulerDiscreteScheduler` (non-ancestral, `s_churn = 0`): σ-space Euler steps over the
//! model's ε / v / x₀ prediction.

use super::axpby;
use super::betas::{check_steps, spaced_timesteps, NoiseSchedule, PredictionType, TimestepSpacing};
use any2any_core::candle_core::Tensor;
use any2any_core::decode::Scheduler;
use any2any_core::{NoiseSource, Result};
use serde::Deserialize;

/// `EulerDiscreteScheduler`'s `scheduler_config.json` (diffusers' defaults).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EulerDiscreteConfig {
    /// Betas, training timesteps, prediction type.
    #[serde(flatten)]
    pub schedule: NoiseSchedule,
    /// `timestep_spacing` (default `linspace`).
    #[serde(default = "linspace")]
    pub timestep_spacing: TimestepSpacing,
    /// `steps_offset` (leading spacing only).
    #[serde(default)]
    pub steps_offset: usize,
    /// `interpolation_type`: only `linear`.
    #[serde(default = "linear")]
    pub interpolation_type: String,
    /// `use_karras_sigmas` (not supported when true).
    #[serde(default, deserialize_with = "crate::unet::config::nullable")]
    pub use_karras_sigmas: bool,
    /// `use_exponential_sigmas` (not supported when true).
    #[serde(default, deserialize_with = "crate::unet::config::nullable")]
    pub use_exponential_sigmas: bool,
    /// `use_beta_sigmas` (not supported when true).
    #[serde(default, deserialize_with = "crate::unet::config::nullable")]
    pub use_beta_sigmas: bool,
    /// `timestep_type`: only `discrete`.
    #[serde(default = "discrete")]
    pub timestep_type: String,
    /// `final_sigmas_type`: `zero` (default) or `sigma_min`.
    #[serde(default = "zero")]
    pub final_sigmas_type: String,
}

fn linspace() -> TimestepSpacing {
    TimestepSpacing::Linspace
}
fn linear() -> String {
    "linear".into()
}
fn discrete() -> String {
    "discrete".into()
}
fn zero() -> String {
    "zero".into()
}

impl EulerDiscreteConfig {
    /// Unsupported options, as a message naming the field.
    pub fn check(&self) -> std::result::Result<(), String> {
        self.schedule.check()?;
        let flags = [
            ("use_karras_sigmas", self.use_karras_sigmas),
            ("use_exponential_sigmas", self.use_exponential_sigmas),
            ("use_beta_sigmas", self.use_beta_sigmas),
        ];
        if let Some((f, _)) = flags.iter().find(|f| f.1) {
            return Err(format!("{f}: true is not supported"));
        }
        let strings = [
            ("interpolation_type", &self.interpolation_type, "linear"),
            ("timestep_type", &self.timestep_type, "discrete"),
        ];
        if let Some((f, v, ok)) = strings.iter().find(|s| s.1 != s.2) {
            return Err(format!("{f} `{v}` is not supported (only `{ok}`)"));
        }
        if !matches!(self.final_sigmas_type.as_str(), "zero" | "sigma_min") {
            return Err(format!(
                "final_sigmas_type `{}` is not supported (`zero` or `sigma_min`)",
                self.final_sigmas_type
            ));
        }
        Ok(())
    }
}

/// Euler set to a number of steps: timesteps `tᵢ`, `σᵢ` (and a final σ), the prediction type.
#[derive(Debug, Clone, PartialEq)]
pub struct EulerDiscrete {
    /// The model timesteps, one per step (float: `linspace` spacing gives fractions).
    pub timesteps: Vec<f64>,
    /// `steps + 1` sigmas (float32 values, as diffusers'), the last the final σ.
    pub sigmas: Vec<f64>,
    /// What the model predicts.
    pub prediction: PredictionType,
    init_sigma: f64,
}

impl EulerDiscrete {
    /// `set_timesteps(steps)` of `cfg`.
    pub fn new(cfg: &EulerDiscreteConfig, steps: usize) -> Result<Self> {
        cfg.check()
            .map_err(|m| any2any_core::Error::invalid("scheduler", m))?;
        let s = &cfg.schedule;
        check_steps(steps, s.num_train_timesteps)?;
        let ac = s.alphas_cumprod();
        let table: Vec<f32> = ac.iter().map(|&a| ((1.0 - a) / a).sqrt()).collect();
        let timesteps = spaced_timesteps(
            cfg.timestep_spacing,
            s.num_train_timesteps,
            steps,
            cfg.steps_offset,
            false,
        );
        let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| interp(&table, t)).collect();
        sigmas.push(match cfg.final_sigmas_type.as_str() {
            "sigma_min" => table[0] as f64,
            _ => 0.0,
        });
        let max = sigmas.iter().cloned().fold(0.0, f64::max);
        let init_sigma = match cfg.timestep_spacing {
            TimestepSpacing::Leading => ((max * max + 1.0) as f32).sqrt() as f64,
            _ => max,
        };
        Ok(Self {
            timesteps,
            sigmas,
            prediction: s.prediction(),
            init_sigma,
        })
    }

    fn sigma(&self, i: usize) -> Result<f64> {
        self.sigmas.get(i).copied().ok_or_else(|| {
            any2any_core::Error::invalid(
                "steps",
                format!("step {i} of a {}-step Euler schedule", self.timesteps.len()),
            )
        })
    }
}

/// numpy's `interp(t, arange(len), table)` (clamped at the ends), rounded to float32.
fn interp(table: &[f32], t: f64) -> f64 {
    let last = table.len() - 1;
    let t = t.clamp(0.0, last as f64);
    let i = (t.floor() as usize).min(last);
    let j = (i + 1).min(last);
    let f = t - i as f64;
    let v = table[i] as f64 + (table[j] as f64 - table[i] as f64) * f;
    v as f32 as f64
}

impl Scheduler for EulerDiscrete {
    timestep_table!();
    fn init_noise_sigma(&self) -> f64 {
        self.init_sigma
    }
    fn scale_input(&self, x: &Tensor, i: usize) -> Result<Tensor> {
        let s = self.sigma(i)?;
        Ok((x / (s * s + 1.0).sqrt())?)
    }
    fn step(
        &mut self,
        x: &Tensor,
        pred: &Tensor,
        i: usize,
        _: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let (s, next) = (self.sigma(i)?, self.sigma(i + 1)?);
        // x₀ estimate, then the derivative (x − x₀)/σ and x + d·(σₙₑₓₜ − σ)
        let x0 = match self.prediction {
            PredictionType::Epsilon => axpby(x, 1.0, pred, -s)?,
            PredictionType::VPrediction => {
                axpby(x, 1.0 / (s * s + 1.0), pred, -s / (s * s + 1.0).sqrt())?
            }
            PredictionType::Sample => pred.to_dtype(x.dtype())?,
        };
        let d = ((x - x0)? / s)?;
        axpby(x, 1.0, &d, next - s)
    }
}
