//! What every discrete scheduler shares: the training noise schedule (betas → ᾱ), the timestep
//! spacings and the prediction type, in diffusers' float32 arithmetic.

use any2any_core::{Error, Result};
use serde::Deserialize;

/// Most training timesteps a schedule may have (bounds the tables built from a config).
pub const MAX_TRAIN_TIMESTEPS: usize = 100_000;

/// `beta_schedule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    /// `linspace(beta_start, beta_end)`.
    #[default]
    Linear,
    /// `linspace(√beta_start, √beta_end)²` (Stable Diffusion).
    ScaledLinear,
    /// The cosine ᾱ of improved DDPM, betas capped at 0.999.
    SquaredcosCapV2,
}

/// `prediction_type`: what the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    /// The noise ε.
    #[default]
    Epsilon,
    /// v = √ᾱ·ε − √(1−ᾱ)·x₀.
    VPrediction,
    /// x₀ itself (`original_sample` in older configs).
    #[serde(alias = "original_sample")]
    Sample,
}

/// `timestep_spacing` (Table 2 of "Common Diffusion Noise Schedules and Sample Steps are Flawed").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    /// `k·(T // n) + steps_offset`, k = n−1 … 0.
    Leading,
    /// `round(T − k·T/n) − 1`, k = 0 … n−1.
    Trailing,
    /// `linspace(0, T − 1, n)` reversed.
    Linspace,
}

/// The fields of a scheduler config that define its training noise schedule.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct NoiseSchedule {
    /// `num_train_timesteps` (T).
    #[serde(default = "default_train")]
    pub num_train_timesteps: usize,
    /// `beta_start`.
    #[serde(default = "default_beta_start")]
    pub beta_start: f64,
    /// `beta_end`.
    #[serde(default = "default_beta_end")]
    pub beta_end: f64,
    /// `beta_schedule`.
    #[serde(default)]
    pub beta_schedule: BetaSchedule,
    /// `trained_betas`: explicit betas, overriding the schedule.
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    /// `prediction_type` (absent: `epsilon`, or what `predict_epsilon` says).
    #[serde(default)]
    pub prediction_type: Option<PredictionType>,
    /// `predict_epsilon`, the old spelling of `prediction_type` (diffusers ≤ 0.9): true is
    /// `epsilon`, false `sample`; `prediction_type` wins when both are given.
    #[serde(default)]
    pub predict_epsilon: Option<bool>,
    /// `rescale_betas_zero_snr` (not supported when true).
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
}

fn default_train() -> usize {
    1000
}
fn default_beta_start() -> f64 {
    0.0001
}
fn default_beta_end() -> f64 {
    0.02
}

impl NoiseSchedule {
    /// What the model predicts, from `prediction_type` or its old spelling.
    pub fn prediction(&self) -> PredictionType {
        match (self.prediction_type, self.predict_epsilon) {
            (Some(p), _) => p,
            (None, Some(false)) => PredictionType::Sample,
            (None, _) => PredictionType::Epsilon,
        }
    }

    /// Unsupported or out-of-range values, as a message naming the field.
    pub fn check(&self) -> std::result::Result<(), String> {
        let t = self.num_train_timesteps;
        if t == 0 || t > MAX_TRAIN_TIMESTEPS {
            return Err(format!(
                "num_train_timesteps {t} is outside 1..={MAX_TRAIN_TIMESTEPS}"
            ));
        }
        if let Some(b) = &self.trained_betas {
            if b.len() != t {
                return Err(format!(
                    "trained_betas holds {} values for num_train_timesteps {t}",
                    b.len()
                ));
            }
        }
        if self.rescale_betas_zero_snr {
            return Err("rescale_betas_zero_snr: true is not supported".into());
        }
        Ok(())
    }

    /// The betas, as diffusers holds them (float32).
    fn betas(&self) -> Vec<f32> {
        let n = self.num_train_timesteps;
        if let Some(b) = &self.trained_betas {
            return b.iter().map(|&x| x as f32).collect();
        }
        let lin = |a: f64, b: f64| -> Vec<f32> {
            (0..n)
                .map(|i| {
                    let s = if n > 1 {
                        i as f64 / (n - 1) as f64
                    } else {
                        0.0
                    };
                    (a + (b - a) * s) as f32
                })
                .collect()
        };
        match self.beta_schedule {
            BetaSchedule::Linear => lin(self.beta_start, self.beta_end),
            BetaSchedule::ScaledLinear => lin(self.beta_start.sqrt(), self.beta_end.sqrt())
                .into_iter()
                .map(|b| b * b)
                .collect(),
            BetaSchedule::SquaredcosCapV2 => {
                let bar = |t: f64| {
                    ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                        .cos()
                        .powi(2)
                };
                (0..n)
                    .map(|i| {
                        let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                        (1.0 - bar(t2) / bar(t1)).min(0.999) as f32
                    })
                    .collect()
            }
        }
    }

    /// ᾱₜ = ∏ (1 − βₛ), s ≤ t (float32 cumulative product, as torch's).
    pub fn alphas_cumprod(&self) -> Vec<f32> {
        let mut acc = 1f32;
        self.betas()
            .into_iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect()
    }
}

/// Checks `steps` against the schedule's `train` timesteps.
pub(crate) fn check_steps(steps: usize, train: usize) -> Result<()> {
    if steps == 0 || steps > train {
        return Err(Error::invalid(
            "steps",
            format!("{steps} (must be 1..={train}, the scheduler's num_train_timesteps)"),
        ));
    }
    Ok(())
}

/// The `steps` timesteps of `spacing`, descending, as diffusers' `set_timesteps` computes them
/// (numpy's `arange`/`linspace` and round-half-to-even); `linspace` values are rounded to
/// integers when `round_linspace` (DDIM, PNDM) and kept fractional otherwise (Euler).
pub(crate) fn spaced_timesteps(
    spacing: TimestepSpacing,
    train: usize,
    steps: usize,
    offset: usize,
    round_linspace: bool,
) -> Vec<f64> {
    match spacing {
        TimestepSpacing::Leading => {
            let ratio = train / steps;
            (0..steps)
                .rev()
                .map(|k| (k * ratio + offset) as f64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let step = train as f64 / steps as f64;
            // numpy: arange(T, 0, -step) has ceil(T / step) values T − k·step
            let len = (train as f64 / step).ceil() as usize;
            (0..len)
                .map(|k| (train as f64 - k as f64 * step).round_ties_even() - 1.0)
                .collect()
        }
        TimestepSpacing::Linspace => {
            let end = (train - 1) as f64;
            (0..steps)
                .rev()
                .map(|k| {
                    let v = match steps {
                        1 => 0.0,
                        _ if k == steps - 1 => end,
                        _ => k as f64 * (end / (steps - 1) as f64),
                    };
                    if round_linspace {
                        v.round_ties_even()
                    } else {
                        v as f32 as f64
                    }
                })
                .collect()
        }
    }
}

/// ᾱ at integer timestep `t`; a negative `t` gives `final_alpha` (DDIM, PNDM).
pub(crate) fn alpha_at(ac: &[f32], t: i64, final_alpha: f32) -> Result<f64> {
    if t < 0 {
        return Ok(final_alpha as f64);
    }
    ac.get(t as usize).map(|&a| a as f64).ok_or_else(|| {
        Error::invalid(
            "steps",
            format!(
                "timestep {t} is past the schedule's {} training timesteps (check steps_offset)",
                ac.len()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spacings_match_diffusers() {
        use TimestepSpacing::*;
        assert_eq!(
            spaced_timesteps(Leading, 1000, 4, 1, true),
            [751.0, 501.0, 251.0, 1.0]
        );
        assert_eq!(
            spaced_timesteps(Trailing, 1000, 3, 0, true),
            [999.0, 666.0, 332.0]
        );
        assert_eq!(
            spaced_timesteps(Linspace, 1000, 5, 0, false),
            [999.0, 749.25, 499.5, 249.75, 0.0]
        );
        assert_eq!(
            spaced_timesteps(Linspace, 1000, 5, 0, true),
            [999.0, 749.0, 500.0, 250.0, 0.0]
        );
    }
}
