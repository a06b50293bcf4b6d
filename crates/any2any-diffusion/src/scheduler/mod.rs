//! Diffusers' discrete-time schedulers, from a `scheduler/scheduler_config.json`, as the core's
//! [`Scheduler`]s, so they run under [`LatentLoop`](any2any_core::decode::LatentLoop):
//!
//! - [`EulerDiscrete`] (`EulerDiscreteScheduler`, non-ancestral: SDXL, Emu2-Gen);
//! - [`Ddim`] (`DDIMScheduler`, with `eta` noise drawn from the loop's `NoiseSource`);
//! - [`Pndm`] (`PNDMScheduler` with `skip_prk_steps`, i.e. PLMS: SD-1.5, SD-2.1-unCLIP).
//!
//! Each follows diffusers 0.31's `set_timesteps`/`scale_model_input`/`step` (timestep spacings
//! `leading`, `trailing`, `linspace`, `steps_offset`, prediction types `epsilon`,
//! `v_prediction`, `sample`); what diffusers offers beyond that (Karras sigmas, PRK warm-up,
//! thresholding, zero-SNR rescaling, …) is refused with an error naming the field.
//!
//! ```
//! use any2any_diffusion::scheduler::SchedulerConfig;
//! use any2any_core::decode::Scheduler;
//! let cfg: SchedulerConfig = serde_json::from_str(r#"{"_class_name": "EulerDiscreteScheduler",
//!     "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
//!     "timestep_spacing": "leading", "steps_offset": 1}"#).unwrap();
//! let s = cfg.build(50).unwrap();
//! assert_eq!((s.timestep(0), s.timestep(1), s.timestep(49)), (981.0, 961.0, 1.0));
//! // sqrt(σ₀² + 1), σ₀ = σ(981) (diffusers: 13.158469)
//! assert!((s.init_noise_sigma() - 13.158469).abs() < 1e-5);
//! ```

/// `len` and `timestep` of a scheduler holding its `timesteps: Vec<f64>`.
macro_rules! timestep_table {
    () => {
        fn len(&self) -> usize {
            self.timesteps.len()
        }
        fn timestep(&self, i: usize) -> f64 {
            self.timesteps.get(i).copied().unwrap_or(0.0)
        }
    };
}

mod betas;
mod ddim;
mod euler;
mod pndm;

pub use betas::{BetaSchedule, NoiseSchedule, PredictionType, TimestepSpacing};
pub use ddim::{Ddim, DdimConfig};
pub use euler::{EulerDiscrete, EulerDiscreteConfig};
pub use pndm::{Pndm, PndmConfig};

use any2any_core::decode::Scheduler;
use any2any_core::{Error, Result};
use serde::Deserialize;
use std::path::Path;

/// A `scheduler_config.json`, by its `_class_name`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "_class_name")]
#[non_exhaustive]
pub enum SchedulerConfig {
    /// `EulerDiscreteScheduler`.
    #[serde(rename = "EulerDiscreteScheduler")]
    EulerDiscrete(EulerDiscreteConfig),
    /// `DDIMScheduler`.
    #[serde(rename = "DDIMScheduler")]
    Ddim(DdimConfig),
    /// `PNDMScheduler`.
    #[serde(rename = "PNDMScheduler")]
    Pndm(PndmConfig),
}

/// The scheduler classes [`SchedulerConfig`] reads.
pub const SUPPORTED: &str = "EulerDiscreteScheduler, DDIMScheduler, PNDMScheduler";

impl SchedulerConfig {
    /// Reads `path` (a `scheduler_config.json`); an unknown `_class_name` is an
    /// [`Error::Config`] naming it and the supported ones.
    pub fn load(path: &Path) -> Result<Self> {
        let v: serde_json::Value = any2any_core::loading::read_json(path)?;
        let class = v.get("_class_name").and_then(|c| c.as_str()).unwrap_or("");
        if !SUPPORTED.split(", ").any(|s| s == class) {
            return Err(Error::Config {
                path: path.to_path_buf(),
                msg: format!("scheduler `_class_name` `{class}` is not supported ({SUPPORTED})"),
            });
        }
        let cfg: Self = serde_json::from_value(v).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        cfg.check().map_err(|msg| Error::Config {
            path: path.to_path_buf(),
            msg,
        })?;
        Ok(cfg)
    }

    /// `dir/scheduler_config.json` (a diffusers `scheduler/` component directory).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let p = dir.join("scheduler_config.json");
        if !p.is_file() {
            return Err(Error::MissingFile {
                dir: dir.display().to_string(),
                what: "scheduler config".into(),
                looked_for: "scheduler_config.json".into(),
            });
        }
        Self::load(&p)
    }

    /// What the scheduler cannot do as configured (an unsupported option), as a message naming
    /// the field.
    pub fn check(&self) -> std::result::Result<(), String> {
        match self {
            Self::EulerDiscrete(c) => c.check(),
            Self::Ddim(c) => c.check(),
            Self::Pndm(c) => c.check(),
        }
    }

    /// The scheduler set to `steps` inference steps (diffusers' `set_timesteps(steps)`).
    pub fn build(&self, steps: usize) -> Result<Box<dyn Scheduler + Send>> {
        Ok(match self {
            Self::EulerDiscrete(c) => Box::new(EulerDiscrete::new(c, steps)?),
            Self::Ddim(c) => Box::new(Ddim::new(c, steps, 0.0)?),
            Self::Pndm(c) => Box::new(Pndm::new(c, steps)?),
        })
    }

    /// As [`SchedulerConfig::build`], with DDIM's `eta` (the pipelines' `eta` argument; its
    /// noise is drawn from the loop's `NoiseSource`); `eta` must be 0 for the other classes.
    pub fn build_with_eta(&self, steps: usize, eta: f64) -> Result<Box<dyn Scheduler + Send>> {
        match self {
            Self::Ddim(c) => Ok(Box::new(Ddim::new(c, steps, eta)?)),
            _ if eta != 0.0 => Err(Error::invalid(
                "eta",
                format!("{eta}: only DDIM takes eta (this scheduler is deterministic)"),
            )),
            _ => self.build(steps),
        }
    }

    /// The noise schedule (betas, training timesteps, spacing, prediction type) every class shares.
    pub fn schedule(&self) -> &NoiseSchedule {
        match self {
            Self::EulerDiscrete(c) => &c.schedule,
            Self::Ddim(c) => &c.schedule,
            Self::Pndm(c) => &c.schedule,
        }
    }
}

/// `x·a + y·b` for scalars `a`, `b` (f64, applied in `x`'s dtype).
pub(crate) fn axpby(
    x: &any2any_core::candle_core::Tensor,
    a: f64,
    y: &any2any_core::candle_core::Tensor,
    b: f64,
) -> Result<any2any_core::candle_core::Tensor> {
    Ok(((x * a)? + (y.to_dtype(x.dtype())? * b)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use any2any_core::candle_core::{Device, Tensor};
    use any2any_core::decode::{Denoiser, LatentLoop};
    use any2any_core::{Hooks, SeededNoise};

    /// ε = x/2: a prediction that depends on the latent, so every step's history matters.
    struct Half;
    impl Denoiser for Half {
        fn predict(&mut self, x: &Tensor, _: f64, _: usize) -> Result<Tensor> {
            Ok((x * 0.5)?)
        }
    }

    fn run(s: &mut dyn Scheduler) -> Vec<f32> {
        let x = Tensor::new(&[1f32, -2.0, 0.5], &Device::Cpu).unwrap();
        let l = LatentLoop {
            guidance: None,
            stage: "t",
        };
        let out = l.run(x, &mut Half, s, &mut SeededNoise::new(0), &mut Hooks::new());
        out.unwrap().to_vec1().unwrap()
    }

    #[test]
    fn a_scheduler_reruns_afresh_and_eta_is_ddim_only() {
        let cfg: SchedulerConfig = serde_json::from_str(
            r#"{"_class_name": "PNDMScheduler", "skip_prk_steps": true, "steps_offset": 1}"#,
        )
        .unwrap();
        let mut s = cfg.build(6).unwrap();
        assert_eq!(s.len(), 7, "PLMS repeats its second timestep");
        let first = run(s.as_mut());
        assert_eq!(
            run(s.as_mut()),
            first,
            "the ε history of the first run is dropped"
        );
        assert!(
            matches!(cfg.build_with_eta(6, 0.5), Err(Error::InvalidArgument { name, .. }) if name == "eta")
        );
        let ddim: SchedulerConfig =
            serde_json::from_str(r#"{"_class_name": "DDIMScheduler"}"#).unwrap();
        // η > 0 draws one normal per element per step from the loop's source
        let mut a = ddim.build_with_eta(4, 1.0).unwrap();
        let mut b = ddim.build_with_eta(4, 1.0).unwrap();
        assert_eq!(run(a.as_mut()), run(b.as_mut()));
        assert_ne!(run(a.as_mut()), run(ddim.build(4).unwrap().as_mut()));
    }

    #[test]
    fn predict_epsilon_is_the_old_spelling_of_prediction_type() {
        let parse = |j: &str| serde_json::from_str::<SchedulerConfig>(j).unwrap();
        let old = parse(r#"{"_class_name": "DDIMScheduler", "predict_epsilon": false}"#);
        assert_eq!(old.schedule().prediction(), PredictionType::Sample);
        let both = parse(
            r#"{"_class_name": "DDIMScheduler", "predict_epsilon": false, "prediction_type": "v_prediction"}"#,
        );
        assert_eq!(both.schedule().prediction(), PredictionType::VPrediction);
        let none = parse(r#"{"_class_name": "EulerDiscreteScheduler"}"#);
        assert_eq!(none.schedule().prediction(), PredictionType::Epsilon);
    }
}
