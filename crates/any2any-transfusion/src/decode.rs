//! From a generated latent to pixels, behind one seam ([`LatentDecoder`]) so that an image
//! codec (a diffusers VAE component) can be plugged in for latent-space models.
//!
//! A pixel-space model (the latent has 1 or 3 channels and no codec was trained with it) is
//! decoded by [`PixelSpace`]: token `(y, x)` of the latent's `H × W` grid is pixel `(x, y)`,
//! its channels R, G, B (one channel: grey), each value clamped to `[0, 1]` and mapped to
//! `round(255·v)` — the `[0, 1]` range of `torchvision.transforms.ToTensor` images the
//! library's pixel examples train on. An image prompt is encoded the other way: `v / 255`
//! (one channel: the mean of R, G, B).
//!
//! A latent-space model decodes through [`VaeLatent`], a diffusers `AutoencoderKL` saved as
//! the checkpoint's `vae` component: the `modality_encoder` / `modality_decoder` pair that
//! `scripts/export_transfusion.py` defines (`VaeEncoder`, `VaeDecoder`) around it, the same
//! `[0, 1]` images as pixel space on the outside.

use any2any_core::image;
use any2any_core::{Error, Result};
use any2any_diffusion::vae::KlVae;
use candle_core::{DType, Tensor};

/// Turns one generated latent into an image.
pub trait LatentDecoder: Send + Sync {
    /// What decodes (for `inspect` and messages), e.g. "pixel space".
    fn name(&self) -> &str;
    /// Pixels per latent token along each side (1: pixel space; a VAE's downsampling).
    fn factor(&self) -> usize {
        1
    }
    /// The image of a channel-first latent `[C, H, W]`.
    fn decode(&self, latent: &Tensor) -> Result<image::RgbImage>;
    /// The channel-first latent `[channels, H, W]` f32 of an image (for image prompts).
    fn encode(
        &self,
        image: &image::RgbImage,
        channels: usize,
        device: &candle_core::Device,
    ) -> Result<Tensor>;
}

/// The pixel-space mapping (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct PixelSpace;

impl PixelSpace {
    /// Whether a latent of `channels` channels is decoded as pixels.
    pub fn takes(channels: usize) -> bool {
        channels == 1 || channels == 3
    }
}

impl LatentDecoder for PixelSpace {
    fn name(&self) -> &str {
        "pixel space ([0, 1] → 0..255)"
    }
    fn decode(&self, latent: &Tensor) -> Result<image::RgbImage> {
        let (c, h, w) = latent.dims3()?;
        if !Self::takes(c) {
            return Err(Error::invalid(
                "latent",
                format!("{c} channels: pixel space takes 1 or 3"),
            ));
        }
        let px = (latent.to_dtype(DType::F32)?.clamp(0f32, 1f32)? * 255.0)?
            .round()?
            .permute((1, 2, 0))?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let rgb: Vec<u8> = px
            .chunks(c)
            .flat_map(|p| {
                let v = |i: usize| p.get(i).or(p.first()).copied().unwrap_or(0.0) as u8;
                [v(0), v(1), v(2)]
            })
            .collect();
        image::RgbImage::from_raw(w as u32, h as u32, rgb)
            .ok_or_else(|| Error::invalid("latent", format!("{h}×{w} does not make an image")))
    }
    /// `v / 255` per channel; one channel: the mean of R, G, B.
    fn encode(
        &self,
        image: &image::RgbImage,
        channels: usize,
        device: &candle_core::Device,
    ) -> Result<Tensor> {
        let (w, h) = image.dimensions();
        let px = Tensor::from_vec(image.as_raw().clone(), (h as usize, w as usize, 3), device)?
            .to_dtype(DType::F32)?
            .permute((2, 0, 1))?;
        let px = (px / 255.0)?;
        match channels {
            3 => Ok(px.contiguous()?),
            1 => Ok(px.mean_keepdim(0)?),
            c => Err(Error::invalid(
                "image",
                format!("{c} latent channels: pixel space takes 1 or 3"),
            )),
        }
    }
}

/// A diffusers `AutoencoderKL` as the modality codec of a latent-space model (see the module
/// docs). With `s` its `scaling_factor` and `t` its `shift_factor` (0 when absent), as
/// `VaeEncoder` / `VaeDecoder` of `scripts/export_transfusion.py` compute them:
///
/// - decode: `latent [C, h, w]` → `(vae.decode(latent / s + t) + 1) / 2`, then as pixel space;
/// - encode: `[0, 1]` pixels `x` → `(mean(vae.encode(2x − 1)) − t) · s`.
pub struct VaeLatent {
    vae: KlVae,
    name: String,
}

impl VaeLatent {
    /// The codec over a loaded VAE.
    pub fn new(vae: KlVae) -> Self {
        let c = vae.config();
        let name = format!(
            "diffusers AutoencoderKL `vae` ({} latent channels, ×{})",
            c.latent_channels,
            c.downsample_factor()
        );
        Self { vae, name }
    }

    /// The VAE's latent channels.
    pub fn channels(&self) -> usize {
        self.vae.config().latent_channels
    }
}

impl LatentDecoder for VaeLatent {
    fn name(&self) -> &str {
        &self.name
    }
    fn factor(&self) -> usize {
        self.vae.config().downsample_factor()
    }
    fn decode(&self, latent: &Tensor) -> Result<image::RgbImage> {
        let px = self.vae.decode_scaled(&latent.unsqueeze(0)?)?;
        any2any_core::limits::check_finite(&px, "decoded pixels")?;
        let unit = ((px.squeeze(0)? + 1.0)? / 2.0)?;
        PixelSpace.decode(&unit.to_device(&candle_core::Device::Cpu)?)
    }
    fn encode(
        &self,
        image: &image::RgbImage,
        channels: usize,
        device: &candle_core::Device,
    ) -> Result<Tensor> {
        if channels != self.channels() {
            return Err(Error::invalid(
                "vae",
                format!(
                    "the VAE has {} latent channels but the model's dim_latent is {channels}",
                    self.channels()
                ),
            ));
        }
        let unit = PixelSpace.encode(image, 3, device)?;
        let mean = self
            .vae
            .encode_mean(&((unit * 2.0)? - 1.0)?.unsqueeze(0)?)?;
        let c = self.vae.config();
        let z = match c.shift_factor {
            Some(t) if t != 0.0 => (mean - t)?,
            _ => mean,
        };
        Ok((z * c.scaling_factor)?.squeeze(0)?.to_device(device)?)
    }
}
