//! The UNet as the core's [`Denoiser`], and the whole guided sampling loop on it.

use super::{UNet2DConditionModel, UNetCondition};
use any2any_core::candle_core::{Device, Tensor};
use any2any_core::decode::{initial_latent, Denoiser, LatentLoop, Scheduler};
use any2any_core::sampling::{Guidance, GuidanceSpace};
use any2any_core::{Hooks, NoiseSource, Result};

/// A UNet with fixed conditioning: the [`Denoiser`] of a [`LatentLoop`]. With guidance, the
/// conditioning's rows are the streams stacked stream-major (`[cond; uncond]`), as the loop
/// stacks the latent.
pub struct UNetDenoiser<'a> {
    /// The model.
    pub unet: &'a UNet2DConditionModel,
    /// Its conditioning, one row per latent row the loop passes.
    pub cond: UNetCondition,
}

impl Denoiser for UNetDenoiser<'_> {
    fn predict(&mut self, x: &Tensor, t: f64, _step: usize) -> Result<Tensor> {
        self.unet.forward(x, t, &self.cond)
    }
}

/// diffusers' pipeline loop: a standard-normal latent of `shape` (`[B, C, H, W]`, drawn from
/// `noise`) times the scheduler's `init_noise_sigma`, then the scheduler's steps on the UNet.
/// With `guidance = Some(w)` the conditioning holds `2B` rows, `[cond; uncond]`, mixed as
/// `u + w·(c − u)`. Progress goes to `hooks` under `stage`; the final latent (f32).
pub fn sample(
    denoiser: &mut UNetDenoiser<'_>,
    scheduler: &mut dyn Scheduler,
    guidance: Option<f32>,
    shape: (usize, usize, usize, usize),
    noise: &mut dyn NoiseSource,
    hooks: &mut Hooks,
    device: &Device,
) -> Result<Tensor> {
    let x = (initial_latent(shape, noise, device)? * scheduler.init_noise_sigma())?;
    let g = guidance.map(|w| Guidance::two_stream(w, GuidanceSpace::Logits));
    let l = LatentLoop {
        guidance: g.as_ref(),
        stage: "denoise",
    };
    l.run(x, denoiser, scheduler, noise, hooks)
}
