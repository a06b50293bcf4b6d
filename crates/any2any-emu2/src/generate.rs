//! Image generation: the UNet's conditioning from the regressed (or pooled) embeddings, and the
//! guided denoising loop.

use crate::backend::{Emu2Backend, DEFAULT_CFG, DEFAULT_STEPS, ORIGINAL_SIZE};
use crate::regress::regress;
use any2any_core::candle_core::Tensor;
use any2any_core::decode::{initial_latent, noise_parts, Denoiser, LatentLoop};
use any2any_core::sampling::{Guidance, GuidanceSpace};
use any2any_core::{Error, Hooks, NoiseSource, Request, Result, Segment};
use any2any_diffusion::unet::{TextTime, UNetCondition, UNetDenoiser};

/// The UNet with fixed conditioning, recording each step's (unguided) predictions when asked.
pub struct Emu2Denoiser<'a> {
    /// The UNet and its conditioning.
    pub inner: UNetDenoiser<'a>,
    /// Each step's `[cond; uncond]` noise predictions, when recording (tests).
    pub recorded: Option<Vec<Tensor>>,
}

impl Denoiser for Emu2Denoiser<'_> {
    fn predict(&mut self, x: &Tensor, t: f64, step: usize) -> Result<Tensor> {
        let p = self.inner.predict(x, t, step)?;
        if let Some(r) = self.recorded.as_mut() {
            r.push(p.clone());
        }
        Ok(p)
    }
}

/// The UNet conditioning of `ehs` (`[rows, n_query, width]`) for an image of `size` (height,
/// width): the embeddings, their mean as SDXL's pooled embedding, and the time ids
/// `[1024, 1024, 0, 0, h, w]`.
pub fn unet_condition(ehs: &Tensor, size: (usize, usize)) -> Result<UNetCondition> {
    let pooled = ehs.mean(1)?;
    let tt = TextTime::sdxl(pooled, ORIGINAL_SIZE, (0, 0), size)?;
    Ok(UNetCondition::new(ehs.clone()).with_text_time(tt))
}

/// How one request conditions the UNet.
enum Source {
    /// Row of the regressed batch.
    Regressed(usize),
    /// The pooled EVA features of one image (autoencoding) and of an all-zero normalised one.
    Pooled(Tensor, Tensor),
}

/// The settings of one generation batch.
#[derive(Debug, Clone, Copy)]
pub struct ImageSettings {
    /// Pixel height and width.
    pub size: (usize, usize),
    /// Scheduler steps.
    pub steps: usize,
    /// Guidance scale (`> 1`: with the negative).
    pub cfg: f32,
}

impl Emu2Backend {
    /// The settings of a request: `--size` (default [`Emu2Backend::default_size`]: 1024² for Emu2-Gen, multiples of the VAE factor × the
    /// UNet's size multiple, at most 4096), `--steps` (default 50), `--cfg` (default 3).
    pub fn image_settings(&self, req: &Request) -> Result<ImageSettings> {
        let dec = self.decoders()?;
        let unit = dec.vae.config().downsample_factor() * dec.unet.size_multiple();
        let (w, h) = req.params.size.unwrap_or_else(|| self.default_size());
        for s in [w, h] {
            if s == 0 || !s.is_multiple_of(unit) || s > 4096 {
                return Err(Error::invalid(
                    "size",
                    format!("{w}×{h}: each side must be a positive multiple of {unit} (VAE factor × UNet), at most 4096"),
                ));
            }
        }
        let steps = req.params.steps.unwrap_or(DEFAULT_STEPS);
        if steps == 0 || steps > 1000 {
            return Err(Error::invalid(
                "steps",
                format!("{steps}: must be 1 to 1000"),
            ));
        }
        Ok(ImageSettings {
            size: (h, w),
            steps,
            cfg: req.params.cfg.unwrap_or(DEFAULT_CFG),
        })
    }

    fn source(&self, req: &Request, rows: &mut Vec<Tensor>) -> Result<Source> {
        let (ids, images) = self.render(req)?;
        let has_text = req.segments.iter().any(|s| match s {
            Segment::Text(t) => !t.is_empty(),
            Segment::TextIds(v) => !v.is_empty(),
            _ => false,
        });
        if has_text || images.is_empty() {
            rows.push(self.embed(&ids, &images)?);
            return Ok(Source::Regressed(rows.len() - 1));
        }
        if images.len() != 1 {
            return Err(Error::invalid(
                "image",
                format!(
                    "{} images and no text: image-only generation (autoencoding) takes exactly one",
                    images.len()
                ),
            ));
        }
        let px = self.pixels(images[0])?;
        let vis = &self.model().visual;
        Ok(Source::Pooled(
            vis.encode(&px)?,
            vis.encode(&px.zeros_like()?)?,
        ))
    }

    /// The UNet's `encoder_hidden_states` `[rows, n_query, width]` for every output of `reqs`
    /// (request-major), followed with `guided` by the negatives in the same order: the
    /// regressed empty prompt for a prompt with text, the zero image's features for an image
    /// alone. Progress of the regression goes to `hooks`.
    pub fn condition(&self, reqs: &[&Request], guided: bool, hooks: &mut Hooks) -> Result<Tensor> {
        let mut rows = Vec::new();
        let sources = reqs
            .iter()
            .map(|r| self.source(r, &mut rows))
            .collect::<Result<Vec<_>>>()?;
        let needs_negative = guided && sources.iter().any(|s| matches!(s, Source::Regressed(_)));
        if needs_negative {
            let ids = self.encode("[IMG]")?;
            rows.push(self.embed(&ids, &[])?);
        }
        let regressed = if rows.is_empty() {
            None
        } else {
            Some(regress(self.model(), &rows, hooks)?)
        };
        let neg = rows.len().saturating_sub(1);
        let pick = |s: &Source, uncond: bool| -> Result<Tensor> {
            match (s, &regressed) {
                (Source::Pooled(c, u), _) => Ok(if uncond { u.clone() } else { c.clone() }),
                (Source::Regressed(i), Some(all)) => {
                    Ok(all.narrow(0, if uncond { neg } else { *i }, 1)?)
                }
                (Source::Regressed(_), None) => Err(Error::invalid("prompt", "nothing regressed")),
            }
        };
        let mut out = Vec::new();
        for uncond in [false, true].into_iter().take(if guided { 2 } else { 1 }) {
            for (s, r) in sources.iter().zip(reqs) {
                let t = pick(s, uncond)?;
                out.extend(std::iter::repeat_n(t, r.num_outputs));
            }
        }
        let dt = self.decoders()?.unet.dtype();
        let parts = out
            .iter()
            .map(|t| t.to_dtype(dt))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// The UNet conditioning of `ehs`: the embeddings, their mean as the pooled embedding, and
    /// the time ids `[1024, 1024, 0, 0, h, w]`.
    pub fn unet_condition(&self, ehs: &Tensor, size: (usize, usize)) -> Result<UNetCondition> {
        unet_condition(ehs, size)
    }

    /// The initial latents of `reqs` (each request's from its own noise), times the scheduler's
    /// `init_noise_sigma`, then the guided denoising loop on `ehs` (see [`Self::condition`]);
    /// the final latent (f32) and, with `record`, every step's predictions.
    pub fn denoise(
        &self,
        reqs: &[&Request],
        ehs: &Tensor,
        s: ImageSettings,
        hooks: &mut Hooks,
        record: bool,
    ) -> Result<(Tensor, Option<Vec<Tensor>>)> {
        let dec = self.decoders()?;
        let f = dec.vae.config().downsample_factor();
        let ch = dec.unet.config().in_channels;
        let mut sched = dec.scheduler.build(s.steps)?;
        let mut noise = hooks.batch_noise(&noise_parts(reqs));
        let mut parts = Vec::new();
        let mut row = 0;
        for r in reqs {
            let src: &mut dyn NoiseSource = noise
                .part_of_row(row)
                .ok_or_else(|| Error::invalid("noise", format!("no noise source for row {row}")))?;
            let shape = (r.num_outputs, ch, s.size.0 / f, s.size.1 / f);
            parts.push(initial_latent(shape, src, ehs.device())?);
            row += r.num_outputs;
        }
        let z0 = (Tensor::cat(&parts, 0)? * sched.init_noise_sigma())?;
        let guided = s.cfg > 1.0;
        let g = guided.then(|| Guidance::two_stream(s.cfg, GuidanceSpace::Logits));
        let mut den = Emu2Denoiser {
            inner: UNetDenoiser {
                unet: &dec.unet,
                cond: self.unet_condition(ehs, s.size)?,
            },
            recorded: record.then(Vec::new),
        };
        let lp = LatentLoop {
            guidance: g.as_ref(),
            stage: "denoise",
        };
        let z = lp.run(z0, &mut den, sched.as_mut(), &mut noise, hooks)?;
        Ok((z, den.recorded))
    }
}
