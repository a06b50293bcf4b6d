//! The SD / SDXL KL autoencoder (diffusers `AutoencoderKL`) from its component directory.
//!
//! The network is candle-transformers' [`AutoEncoderKL`], built from the directory's
//! `config.json` ([`VaeConfig`]) and `diffusion_pytorch_model.safetensors`. It never runs in f16
//! (SDXL's VAE overflows there, diffusers' `force_upcast`): an f16 request loads it in f32.
//!
//! [`KlVae::encode_mean`] returns the posterior mean. candle keeps that mean private and only
//! offers a sample, so the encoder is built with its `quant_conv`'s log-variance half pinned to
//! −10⁴ (weights 0): the standard deviation is then `exp(−5000) = 0` and the sample equals the
//! mean exactly, while the mean half keeps the checkpoint's own `quant_conv` (or an identity when
//! the config has `use_quant_conv: false`).

use any2any_core::candle_core::{DType, Device, Shape, Tensor};
use any2any_core::candle_nn::var_builder::SimpleBackend;
use any2any_core::candle_nn::{Init, VarBuilder};
use any2any_core::loading::{read_json, Component, ComponentLayout, LayoutFile};
use any2any_core::{candle_core, Error, Result};
use candle_transformers::models::stable_diffusion::vae::{AutoEncoderKL, AutoEncoderKLConfig};
use serde::Deserialize;
use std::path::Path;

/// A diffusers `vae/` folder next to a checkpoint (`diffusion_pytorch_model.safetensors` +
/// `config.json`), optional; `--component vae=DIR_OR_HUB_ID` points elsewhere.
pub const VAE_LAYOUT: ComponentLayout = ComponentLayout {
    name: "vae",
    dirs: &["vae"],
    files: &[LayoutFile {
        weights: "diffusion_pytorch_model.safetensors",
        configs: &["config.json"],
    }],
    dtype: None,
    optional: true,
};

/// `config.json` of a diffusers `AutoencoderKL` (unknown keys ignored; defaults are the class's).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct VaeConfig {
    /// Image channels in (3).
    pub in_channels: usize,
    /// Image channels out (3).
    pub out_channels: usize,
    /// Channels of each encoder/decoder level; `len − 1` downsamplings.
    pub block_out_channels: Vec<usize>,
    /// ResNet blocks per level (the decoder has one more).
    pub layers_per_block: usize,
    /// Latent channels (4 for SD / SDXL).
    pub latent_channels: usize,
    /// Groups of every GroupNorm.
    pub norm_num_groups: usize,
    /// Latent scale: the diffusion model works on `(z − shift) · scaling_factor`.
    pub scaling_factor: f64,
    /// Latent shift (SD3 / FLUX); `None`: 0.
    pub shift_factor: Option<f64>,
    /// Whether diffusers runs the model in f32 when asked for f16 (this crate never runs f16).
    pub force_upcast: bool,
    /// Whether a 1×1 conv follows the encoder.
    pub use_quant_conv: bool,
    /// Whether a 1×1 conv precedes the decoder.
    pub use_post_quant_conv: bool,
    /// Activation; only `silu` is supported.
    pub act_fn: String,
    /// Whether the mid blocks have attention; candle's always do.
    pub mid_block_add_attention: bool,
    /// Encoder blocks; only `DownEncoderBlock2D`.
    pub down_block_types: Vec<String>,
    /// Decoder blocks; only `UpDecoderBlock2D`.
    pub up_block_types: Vec<String>,
}

impl Default for VaeConfig {
    fn default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            block_out_channels: vec![64],
            layers_per_block: 1,
            latent_channels: 4,
            norm_num_groups: 32,
            scaling_factor: 0.18215,
            shift_factor: None,
            force_upcast: true,
            use_quant_conv: true,
            use_post_quant_conv: true,
            act_fn: "silu".into(),
            mid_block_add_attention: true,
            down_block_types: vec!["DownEncoderBlock2D".into()],
            up_block_types: vec!["UpDecoderBlock2D".into()],
        }
    }
}

impl VaeConfig {
    /// The SDXL VAE (`stabilityai/sdxl-vae`): 128/256/512/512, 2 layers per block, scale 0.13025.
    pub fn sdxl() -> Self {
        let n = 4;
        Self {
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            scaling_factor: 0.13025,
            down_block_types: vec!["DownEncoderBlock2D".into(); n],
            up_block_types: vec!["UpDecoderBlock2D".into(); n],
            ..Self::default()
        }
    }

    /// Pixels per latent cell along a side: `2^(levels − 1)`.
    pub fn downsample_factor(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1).min(16)
    }

    /// Refuses what candle's network cannot build exactly (other block kinds or activation, no
    /// mid-block attention, a GroupNorm that does not divide its channels); `path` names the file.
    pub fn validate(&self, path: &str) -> Result<()> {
        let bad = |msg: String| Error::Config {
            path: path.into(),
            msg,
        };
        let levels = self.block_out_channels.len();
        if levels == 0 || self.latent_channels == 0 || self.in_channels == 0 {
            return Err(bad(
                "block_out_channels, latent_channels and in_channels must be non-empty / positive"
                    .into(),
            ));
        }
        if self.act_fn != "silu" {
            return Err(bad(format!(
                "act_fn `{}` (only silu is supported)",
                self.act_fn
            )));
        }
        if !self.mid_block_add_attention {
            return Err(bad("mid_block_add_attention false is not supported".into()));
        }
        let kinds = |v: &[String], want: &str| v.len() == levels && v.iter().all(|k| k == want);
        if !kinds(&self.down_block_types, "DownEncoderBlock2D")
            || !kinds(&self.up_block_types, "UpDecoderBlock2D")
        {
            return Err(bad(format!(
                "down/up_block_types must be {levels} × DownEncoderBlock2D / UpDecoderBlock2D, got {:?} / {:?}",
                self.down_block_types, self.up_block_types
            )));
        }
        let g = self.norm_num_groups;
        if g == 0
            || self
                .block_out_channels
                .iter()
                .any(|c| *c == 0 || c % g != 0)
        {
            return Err(bad(format!(
                "norm_num_groups {g} must divide every block_out_channels entry {:?}",
                self.block_out_channels
            )));
        }
        if !(self.scaling_factor.is_finite() && self.scaling_factor != 0.0) {
            return Err(bad(format!(
                "scaling_factor {} must be finite and non-zero",
                self.scaling_factor
            )));
        }
        Ok(())
    }

    fn candle(&self) -> AutoEncoderKLConfig {
        AutoEncoderKLConfig {
            block_out_channels: self.block_out_channels.clone(),
            layers_per_block: self.layers_per_block,
            latent_channels: self.latent_channels,
            norm_num_groups: self.norm_num_groups,
            // always on: the encoder's quant_conv is the mean-only one (module docs)
            use_quant_conv: true,
            use_post_quant_conv: self.use_post_quant_conv,
        }
    }
}

/// Serves a checkpoint's tensors, except `quant_conv`, whose log-variance half becomes
/// weights 0 and bias −10⁴ (see the module docs).
struct MeanOnlyQuant {
    inner: VarBuilder<'static>,
    latent: usize,
    has_quant: bool,
}

/// The pinned log-variance: `exp(0.5 · −10⁴)` is 0 in every float type.
const PINNED_LOGVAR: f64 = -1e4;

impl MeanOnlyQuant {
    fn quant(&self, weight: bool, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let l = self.latent;
        let mean = match (self.has_quant, weight) {
            (true, true) => self
                .inner
                .get_with_hints_dtype(
                    (2 * l, 2 * l, 1, 1),
                    "quant_conv.weight",
                    Init::Const(0.),
                    dtype,
                )?
                .narrow(0, 0, l)?,
            (true, false) => self
                .inner
                .get_with_hints_dtype(2 * l, "quant_conv.bias", Init::Const(0.), dtype)?
                .narrow(0, 0, l)?,
            (false, true) => Tensor::eye(l, dtype, dev)?
                .pad_with_zeros(1, 0, l)?
                .reshape((l, 2 * l, 1, 1))?,
            (false, false) => Tensor::zeros(l, dtype, dev)?,
        };
        let logvar = if weight {
            Tensor::zeros((l, 2 * l, 1, 1), dtype, dev)?
        } else {
            (Tensor::ones(l, dtype, dev)? * PINNED_LOGVAR)?
        };
        Tensor::cat(&[mean, logvar], 0)
    }
}

impl SimpleBackend for MeanOnlyQuant {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        match name {
            "quant_conv.weight" => self.quant(true, dtype, dev),
            "quant_conv.bias" => self.quant(false, dtype, dev),
            _ => self.inner.get_with_hints_dtype(s, name, h, dtype),
        }
    }
    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        match name {
            "quant_conv.weight" => self.quant(true, dtype, dev),
            "quant_conv.bias" => self.quant(false, dtype, dev),
            _ => self.inner.get_unchecked_dtype(name, dtype),
        }
    }
    fn contains_tensor(&self, name: &str) -> bool {
        name.starts_with("quant_conv.") || self.inner.contains_tensor(name)
    }
}

/// A loaded KL autoencoder: decode latents to pixels in `[−1, 1]`, encode pixels to the latent
/// posterior mean.
pub struct KlVae {
    net: AutoEncoderKL,
    cfg: VaeConfig,
    dtype: DType,
    device: Device,
}

impl KlVae {
    /// The dtype a VAE runs in when `requested`: f16 becomes f32, anything else stays.
    pub fn run_dtype(requested: DType) -> DType {
        if requested == DType::F16 {
            DType::F32
        } else {
            requested
        }
    }

    /// Loads a diffusers component directory (`config.json`, `diffusion_pytorch_model.safetensors`).
    pub fn from_dir(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        Self::from_component(&Component::from_dir("vae", dir)?, dtype, device)
    }

    /// Loads a resolved component (its own dtype, if it has one, wins over `dtype`).
    pub fn from_component(c: &Component, dtype: DType, device: &Device) -> Result<Self> {
        let path = c.require_config()?;
        let cfg: VaeConfig = read_json(path)?;
        let dtype = Self::run_dtype(c.dtype_or(dtype));
        let vb = c.var_builder(dtype, device)?;
        Self::new(vb, cfg, &path.display().to_string())
    }

    /// Builds the network from `vb` (at the component root) and its config; `what` names the
    /// config in errors.
    pub fn new(vb: VarBuilder<'static>, cfg: VaeConfig, what: &str) -> Result<Self> {
        cfg.validate(what)?;
        let dtype = Self::run_dtype(vb.dtype());
        let device = vb.device().clone();
        let backend = MeanOnlyQuant {
            inner: vb.set_dtype(dtype),
            latent: cfg.latent_channels,
            has_quant: cfg.use_quant_conv,
        };
        let vb = VarBuilder::from_backend(Box::new(backend), dtype, device.clone());
        let net = AutoEncoderKL::new(vb, cfg.in_channels, cfg.out_channels, cfg.candle())?;
        Ok(Self {
            net,
            cfg,
            dtype,
            device,
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &VaeConfig {
        &self.cfg
    }

    /// The dtype it runs in (never f16).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device its weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn check(&self, x: &Tensor, channels: usize, what: &str) -> Result<()> {
        let f = self.cfg.downsample_factor();
        let ok = match x.dims() {
            [_, c, h, w] => *c == channels && (what == "latents" || (h % f == 0 && w % f == 0)),
            _ => false,
        };
        if !ok {
            return Err(Error::invalid(
                what,
                format!(
                    "{:?} for a VAE taking [B, {channels}, H, W]{}",
                    x.dims(),
                    if what == "latents" {
                        String::new()
                    } else {
                        format!(" with H and W multiples of {f}")
                    }
                ),
            ));
        }
        Ok(())
    }

    /// Raw latents `[B, latent_channels, h, w]` → pixels `[B, out_channels, h·f, w·f]` (about
    /// `[−1, 1]`), f32. No scaling: see [`KlVae::decode_scaled`].
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        self.check(latents, self.cfg.latent_channels, "latents")?;
        let x = latents.to_device(&self.device)?.to_dtype(self.dtype)?;
        self.each(&x, |x| self.net.decode(x))
    }

    /// Latents in the diffusion model's space → pixels: `decode(z / scaling_factor + shift)`.
    pub fn decode_scaled(&self, latents: &Tensor) -> Result<Tensor> {
        let z = (latents.to_dtype(DType::F32)? / self.cfg.scaling_factor)?;
        let z = match self.cfg.shift_factor {
            Some(s) if s != 0.0 => (z + s)?,
            _ => z,
        };
        self.decode(&z)
    }

    /// Pixels `[B, in_channels, H, W]` in `[−1, 1]` → the latent posterior mean
    /// `[B, latent_channels, H/f, W/f]` (raw, unscaled), f32.
    pub fn encode_mean(&self, pixels: &Tensor) -> Result<Tensor> {
        self.check(pixels, self.cfg.in_channels, "pixels")?;
        let x = pixels.to_device(&self.device)?.to_dtype(self.dtype)?;
        self.each(&x, |x| self.net.encode(x)?.sample())
    }

    /// Runs `f` on each image of the batch alone, f32 out: candle 0.11's VAE mid-block attention
    /// mixes the rows of a batch of more than one (measured on the CPU: 0.25 off in pixels on
    /// the tiny fixture VAE, the lone image exact).
    fn each(
        &self,
        x: &Tensor,
        f: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
    ) -> Result<Tensor> {
        let outs = (0..x.dim(0)?)
            .map(|i| f(&x.narrow(0, i, 1)?)?.to_dtype(DType::F32))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Tensor::cat(&outs, 0)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_validation() {
        let c: VaeConfig =
            serde_json::from_str(r#"{"block_out_channels":[8,16],"norm_num_groups":8}"#).unwrap();
        assert_eq!(c.downsample_factor(), 2);
        assert!(c.validate("x").is_err(), "one block type for two levels");
        let mut c = VaeConfig::sdxl();
        assert_eq!(c.downsample_factor(), 8);
        c.validate("x").unwrap();
        c.norm_num_groups = 24;
        assert!(matches!(c.validate("x"), Err(Error::Config { .. })));
        assert_eq!(KlVae::run_dtype(DType::F16), DType::F32);
        assert_eq!(KlVae::run_dtype(DType::BF16), DType::BF16);
    }
}
