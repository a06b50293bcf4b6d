//! The Chameleon VQGAN (Make-a-Scene / taming): the HF encoder (`model.vqmodel.encoder`,
//! `quant_conv`, nearest-codebook lookup) and the taming decoder of the original `vqgan.ckpt`
//! (`decoder.*`, `post_quant_conv`, `quantize.embedding`), whose `up.L` is indexed by resolution
//! level with 0 = full resolution.

use crate::config::VqConfig;
use any2any_core::codec::taming::{conv2d, Decoder, Encoder, NormConfig, TamingConfig, UpOrder};
use candle_core::{bail, DType, Module, Result, Tensor};
use candle_nn::{Conv2d, Embedding, VarBuilder};

/// The taming shape of the VQGAN: attention at the levels whose configured resolution
/// (`resolution / 2^L`) is in `attn_resolutions`; `up.L` numbered by level.
fn taming(cfg: &VqConfig) -> TamingConfig {
    let levels = cfg.channel_multiplier.len();
    TamingConfig {
        in_channels: cfg.in_channels,
        out_channels: cfg.out_channels,
        base_channels: cfg.base_channels,
        channel_multiplier: cfg.channel_multiplier.clone(),
        num_res_blocks: cfg.num_res_blocks,
        latent_channels: cfg.latent_channels,
        double_latent: cfg.double_latent,
        attn_levels: (0..levels)
            .map(|l| cfg.attn_at(cfg.resolution >> l))
            .collect(),
        mid_attention: true,
        up_order: UpOrder::ByLevel,
        norm: NormConfig::default(),
    }
}

fn check_vanilla(cfg: &VqConfig) -> Result<()> {
    if cfg.attn_type != "vanilla" {
        bail!(
            "vq_config.attn_type `{}` is not supported (only \"vanilla\")",
            cfg.attn_type
        );
    }
    Ok(())
}

/// HF `ChameleonVQVAEEncoder` + `quant_conv` + the codebook: pixels → codes.
#[derive(Debug, Clone)]
pub struct VqEncoder {
    encoder: Encoder,
    quant_conv: Conv2d,
    codebook: Tensor,
    dtype: DType,
}

impl VqEncoder {
    /// `vb` at `model.vqmodel`.
    pub fn load(vb: VarBuilder, cfg: &VqConfig) -> Result<Self> {
        check_vanilla(cfg)?;
        if cfg.double_latent {
            bail!("vq_config.double_latent = true is not supported");
        }
        let encoder = Encoder::load(vb.pp("encoder"), &taming(cfg))?;
        let quant_conv = conv2d(
            cfg.latent_channels,
            cfg.embed_dim,
            1,
            0,
            vb.pp("quant_conv"),
        )?;
        let codebook = vb
            .pp("quantize.embedding")
            .get((cfg.num_embeddings, cfg.embed_dim), "weight")?;
        Ok(Self {
            encoder,
            quant_conv,
            codebook,
            dtype: vb.dtype(),
        })
    }

    /// Pixels `[B, 3, H, W]` (model range) → codes `[B, h*w]` u32 (row-major) with `h`, `w`.
    /// Nearest codebook row by squared Euclidean distance (no L2 normalisation).
    pub fn encode(&self, pixels: &Tensor) -> Result<(Tensor, usize, usize)> {
        let xs = self.encoder.forward(&pixels.to_dtype(self.dtype)?)?;
        let z = self.quant_conv.forward(&xs)?;
        let (b, d, h, w) = z.dims4()?;
        let z = z
            .to_dtype(DType::F32)?
            .permute((0, 2, 3, 1))?
            .reshape((b * h * w, d))?;
        let e = self.codebook.to_dtype(DType::F32)?;
        let z2 = z.sqr()?.sum_keepdim(1)?;
        let e2 = e.sqr()?.sum(1)?.unsqueeze(0)?;
        let ze = z.matmul(&e.t()?)?;
        let dist = z2.broadcast_add(&e2)?.broadcast_sub(&(ze * 2.0)?)?;
        any2any_core::limits::check_finite(&dist, "image encoder")?;
        let codes = dist.argmin(1)?.to_dtype(DType::U32)?.reshape((b, h * w))?;
        Ok((codes, h, w))
    }
}

/// The taming decoder with `post_quant_conv` and the codebook: codes → pixels.
#[derive(Debug, Clone)]
pub struct VqDecoder {
    codebook: Embedding,
    post_quant_conv: Conv2d,
    decoder: Decoder,
    cfg: VqConfig,
    dtype: DType,
}

impl VqDecoder {
    /// `vb` at the root of the taming state dict (`decoder.*`, `post_quant_conv.*`,
    /// `quantize.embedding.weight`).
    pub fn load(vb: VarBuilder, cfg: &VqConfig) -> Result<Self> {
        check_vanilla(cfg)?;
        let decoder = Decoder::load(vb.pp("decoder"), &taming(cfg))?;
        let codebook = candle_nn::embedding(
            cfg.num_embeddings,
            cfg.embed_dim,
            vb.pp("quantize.embedding"),
        )?;
        let post_quant_conv = conv2d(
            cfg.embed_dim,
            cfg.latent_channels,
            1,
            0,
            vb.pp("post_quant_conv"),
        )?;
        Ok(Self {
            codebook,
            post_quant_conv,
            decoder,
            cfg: cfg.clone(),
            dtype: vb.dtype(),
        })
    }

    /// Codes `[B, h*w]` u32 → images `[B, 3, h*f, w*f]` f32, not clamped.
    pub fn decode(&self, codes: &Tensor, h: usize, w: usize) -> Result<Tensor> {
        let (b, n) = codes.dims2()?;
        if n != h * w || n == 0 {
            bail!("decode: {n} codes per image for a {h}x{w} grid");
        }
        let max = codes.max_all()?.to_scalar::<u32>()? as usize;
        if max >= self.cfg.num_embeddings {
            bail!(
                "decode: code {max} out of range for a codebook of {} entries",
                self.cfg.num_embeddings
            );
        }
        let z = self
            .codebook
            .forward(&codes.flatten_all()?)?
            .reshape((b, h, w, self.cfg.embed_dim))?
            .permute((0, 3, 1, 2))?
            .contiguous()?
            .to_dtype(self.dtype)?;
        let z = self.post_quant_conv.forward(&z)?;
        self.decoder.forward(&z)?.to_dtype(DType::F32)
    }

    /// Pixels per code along each side.
    pub fn downsample_factor(&self) -> usize {
        self.cfg.downsample_factor()
    }
}
