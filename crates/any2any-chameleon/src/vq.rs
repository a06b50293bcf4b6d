//! The Chameleon VQGAN (Make-a-Scene / taming): the HF encoder (`model.vqmodel.encoder`,
//! `quant_conv`, nearest-codebook lookup) and the taming decoder of the original `vqgan.ckpt`
//! (`decoder.*`, `post_quant_conv`, `quantize.embedding`), whose `up.L` is indexed by resolution
//! level with 0 = full resolution.

use crate::config::VqConfig;
use any2any_core::codec::taming::{
    conv2d, swish, AttnBlock, Downsample, Level, MidBlock, NormConfig, Normalize, ResnetBlock,
    Shortcut, Upsample,
};
use candle_core::{bail, DType, Module, Result, Tensor};
use candle_nn::{Conv2d, Embedding, VarBuilder};

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
    conv_in: Conv2d,
    down: Vec<Level<Downsample>>,
    mid: MidBlock,
    norm_out: Normalize,
    conv_out: Conv2d,
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
        let norm = NormConfig::default();
        let e = vb.pp("encoder");
        let base = cfg.base_channels;
        let conv_in = conv2d(cfg.in_channels, base, 3, 1, e.pp("conv_in"))?;
        let levels = cfg.channel_multiplier.len();
        let mut block_in = base;
        let mut curr_res = cfg.resolution;
        let mut down = Vec::with_capacity(levels);
        for (level, &mult) in cfg.channel_multiplier.iter().enumerate() {
            let vbl = e.pp("down").pp(level);
            let block_out = base * mult;
            let mut blocks = Vec::new();
            let mut attns = Vec::new();
            for i in 0..cfg.num_res_blocks {
                blocks.push(ResnetBlock::load(
                    vbl.pp("block").pp(i),
                    block_in,
                    block_out,
                    norm,
                    Shortcut::Nin,
                )?);
                block_in = block_out;
                if cfg.attn_at(curr_res) {
                    attns.push(AttnBlock::load(vbl.pp("attn").pp(i), block_in, norm)?);
                }
            }
            let resample = if level + 1 == levels {
                None
            } else {
                curr_res /= 2;
                Some(Downsample::load(vbl.pp("downsample"), block_in)?)
            };
            down.push(Level {
                blocks,
                attns,
                resample,
            });
        }
        let mid = MidBlock::load(e.pp("mid"), block_in, norm)?;
        let norm_out = Normalize::load(e.pp("norm_out"), block_in, norm)?;
        let conv_out = conv2d(block_in, cfg.latent_channels, 3, 1, e.pp("conv_out"))?;
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
            conv_in,
            down,
            mid,
            norm_out,
            conv_out,
            quant_conv,
            codebook,
            dtype: vb.dtype(),
        })
    }

    /// Pixels `[B, 3, H, W]` (model range) → codes `[B, h*w]` u32 (row-major) with `h`, `w`.
    /// Nearest codebook row by squared Euclidean distance (no L2 normalisation).
    pub fn encode(&self, pixels: &Tensor) -> Result<(Tensor, usize, usize)> {
        let mut xs = self.conv_in.forward(&pixels.to_dtype(self.dtype)?)?;
        for level in &self.down {
            xs = level.forward(&xs)?;
        }
        let xs = self.mid.forward(&xs)?;
        let xs = swish(&self.norm_out.forward(&xs)?)?;
        let z = self.quant_conv.forward(&self.conv_out.forward(&xs)?)?;
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
        let codes = dist.argmin(1)?.to_dtype(DType::U32)?.reshape((b, h * w))?;
        Ok((codes, h, w))
    }
}

/// The taming decoder with `post_quant_conv` and the codebook: codes → pixels.
#[derive(Debug, Clone)]
pub struct VqDecoder {
    codebook: Embedding,
    post_quant_conv: Conv2d,
    conv_in: Conv2d,
    mid: MidBlock,
    /// Run order: lowest resolution first (taming `up.{L-1}` … `up.0`).
    up: Vec<Level<Upsample>>,
    norm_out: Normalize,
    conv_out: Conv2d,
    cfg: VqConfig,
    dtype: DType,
}

impl VqDecoder {
    /// `vb` at the root of the taming state dict (`decoder.*`, `post_quant_conv.*`,
    /// `quantize.embedding.weight`).
    pub fn load(vb: VarBuilder, cfg: &VqConfig) -> Result<Self> {
        check_vanilla(cfg)?;
        let norm = NormConfig::default();
        let d = vb.pp("decoder");
        let levels = cfg.channel_multiplier.len();
        let base = cfg.base_channels;
        let mut block_in = base * cfg.channel_multiplier[levels - 1];
        let mut curr_res = cfg.resolution >> (levels - 1);
        let conv_in = conv2d(cfg.latent_channels, block_in, 3, 1, d.pp("conv_in"))?;
        let mid = MidBlock::load(d.pp("mid"), block_in, norm)?;
        let mut up = Vec::with_capacity(levels);
        for level in (0..levels).rev() {
            let vbl = d.pp("up").pp(level);
            let block_out = base * cfg.channel_multiplier[level];
            let mut blocks = Vec::new();
            let mut attns = Vec::new();
            for i in 0..cfg.num_res_blocks + 1 {
                blocks.push(ResnetBlock::load(
                    vbl.pp("block").pp(i),
                    block_in,
                    block_out,
                    norm,
                    Shortcut::Nin,
                )?);
                block_in = block_out;
                if cfg.attn_at(curr_res) {
                    attns.push(AttnBlock::load(vbl.pp("attn").pp(i), block_in, norm)?);
                }
            }
            let resample = if level == 0 {
                None
            } else {
                curr_res *= 2;
                Some(Upsample::load(vbl.pp("upsample"), block_in)?)
            };
            up.push(Level {
                blocks,
                attns,
                resample,
            });
        }
        let norm_out = Normalize::load(d.pp("norm_out"), block_in, norm)?;
        let conv_out = conv2d(block_in, cfg.out_channels, 3, 1, d.pp("conv_out"))?;
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
            conv_in,
            mid,
            up,
            norm_out,
            conv_out,
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
        let mut xs = self.mid.forward(&self.conv_in.forward(&z)?)?;
        for level in &self.up {
            xs = level.forward(&xs)?;
        }
        let xs = swish(&self.norm_out.forward(&xs)?)?;
        self.conv_out.forward(&xs)?.to_dtype(DType::F32)
    }

    pub fn downsample_factor(&self) -> usize {
        self.cfg.downsample_factor()
    }
}
