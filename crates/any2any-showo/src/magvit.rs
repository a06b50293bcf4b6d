//! MAGVIT-v2 with a look-up-free quantizer (Show-o's `MAGVITv2`): a taming-style encoder and an
//! asymmetric decoder (its own `ch_mult` / `num_res_blocks`), LFQ codes MSB-first.
use any2any_core::codec::taming::{
    swish, Downsample, MidBlock, NormConfig, Normalize, ResnetBlock, Shortcut, Upsample,
};
use any2any_core::{Error, Result};
use candle_core::{DType, Module, Tensor, D};
use candle_nn::{conv2d, Conv2d, Conv2dConfig, VarBuilder};
use serde::Deserialize;

/// One side of `magvit/config.json`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct SideConfig {
    /// Channels of the first resolution level.
    pub ch: usize,
    /// Channel multiplier per resolution level.
    pub ch_mult: Vec<usize>,
    /// Residual blocks per resolution level.
    pub num_res_blocks: Vec<usize>,
    /// Channels of the input image (encoder; 3).
    #[serde(default = "d_in")]
    pub in_ch: usize,
    /// Channels of the output image (decoder; 3).
    #[serde(default = "d_in")]
    pub out_ch: usize,
    /// Channels of the latent (the quantizer's bits).
    pub z_channels: usize,
}
fn d_in() -> usize {
    3
}

/// The look-up-free quantizer of `magvit/config.json`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct QuantizerConfig {
    /// Bits per code (13: a codebook of 8192).
    pub codebook_dim: usize,
}

/// `magvit/config.json` (the official class takes no arguments; real: ch 128, encoder ch_mult
/// `[1,2,2,4,4]` blocks `[4,3,4,3,4]`, decoder ch_mult `[1,1,2,2,4]` blocks `[4,4,3,4,3]`, 13 bits).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct MagvitConfig {
    /// The encoder's shape.
    pub encoder: SideConfig,
    /// The decoder's shape.
    pub decoder: SideConfig,
    /// The quantizer.
    pub quantizer: QuantizerConfig,
}

impl Default for MagvitConfig {
    fn default() -> Self {
        let side = |ch_mult: Vec<usize>, blocks: Vec<usize>| SideConfig {
            ch: 128,
            ch_mult,
            num_res_blocks: blocks,
            in_ch: 3,
            out_ch: 3,
            z_channels: 13,
        };
        Self {
            encoder: side(vec![1, 2, 2, 4, 4], vec![4, 3, 4, 3, 4]),
            decoder: side(vec![1, 1, 2, 2, 4], vec![4, 4, 3, 4, 3]),
            quantizer: QuantizerConfig { codebook_dim: 13 },
        }
    }
}

fn conv(i: usize, o: usize, k: usize, vb: VarBuilder) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: k / 2,
        ..Default::default()
    };
    Ok(conv2d(i, o, k, cfg, vb)?)
}

fn check(c: &SideConfig, what: &str) -> Result<()> {
    if c.ch_mult.is_empty() || c.ch_mult.len() != c.num_res_blocks.len() {
        return Err(Error::invalid(
            "magvit config",
            format!("{what}: ch_mult and num_res_blocks must be non-empty and of one length"),
        ));
    }
    Ok(())
}

/// The `nb` residual blocks `block.{b}` of one level, `block_in` → `out` channels (the first
/// block changes the width); leaves `block_in` at the level's output width.
fn load_blocks(
    lv: &VarBuilder,
    nb: usize,
    block_in: &mut usize,
    out: usize,
    norm: NormConfig,
) -> Result<Vec<ResnetBlock>> {
    let mut blocks = Vec::with_capacity(nb);
    for b in 0..nb {
        blocks.push(ResnetBlock::load(
            lv.pp(format!("block.{b}")),
            *block_in,
            out,
            norm,
            Shortcut::Nin,
        )?);
        *block_in = out;
    }
    Ok(blocks)
}

struct Level {
    blocks: Vec<ResnetBlock>,
    resample: Option<Box<dyn Module + Send + Sync>>,
}

/// MAGVIT-v2 encoder + LFQ + decoder.
pub struct Magvit {
    enc_in: Conv2d,
    enc_levels: Vec<Level>,
    enc_mid: MidBlock,
    enc_norm: Normalize,
    enc_out: Conv2d,
    quant_conv: Conv2d,
    post_quant_conv: Conv2d,
    dec_in: Conv2d,
    dec_mid: MidBlock,
    /// Run in order (highest level first).
    dec_levels: Vec<Level>,
    dec_norm: Normalize,
    dec_out: Conv2d,
    bits: usize,
}

impl Magvit {
    /// `vb` at the MAGVIT checkpoint root (`encoder.`, `decoder.`, `quantize.`).
    pub fn load(vb: VarBuilder, cfg: &MagvitConfig) -> Result<Self> {
        let norm = NormConfig::default();
        let e = &cfg.encoder;
        check(e, "encoder")?;
        check(&cfg.decoder, "decoder")?;
        let ev = vb.pp("encoder");
        let enc_in = conv(e.in_ch, e.ch, 3, ev.pp("conv_in"))?;
        let mut enc_levels = Vec::new();
        let mut block_in = e.ch;
        let n = e.ch_mult.len();
        for (i, (&m, &nb)) in e.ch_mult.iter().zip(&e.num_res_blocks).enumerate() {
            let lv = ev.pp(format!("down.{i}"));
            let out = e.ch * m;
            let blocks = load_blocks(&lv, nb, &mut block_in, out, norm)?;
            let resample: Option<Box<dyn Module + Send + Sync>> = if i + 1 != n {
                Some(Box::new(Downsample::load(lv.pp("downsample"), block_in)?))
            } else {
                None
            };
            enc_levels.push(Level { blocks, resample });
        }
        let enc_mid = MidBlock::load(ev.pp("mid"), block_in, norm)?;
        let enc_norm = Normalize::load(ev.pp("norm_out"), block_in, norm)?;
        let enc_out = conv(block_in, e.z_channels, 3, ev.pp("conv_out"))?;
        let quant_conv = conv(e.z_channels, e.z_channels, 1, ev.pp("quant_conv"))?;

        let d = &cfg.decoder;
        let dv = vb.pp("decoder");
        let n = d.ch_mult.len();
        let mut block_in = d.ch * d.ch_mult[n - 1];
        let post_quant_conv = conv(d.z_channels, d.z_channels, 1, dv.pp("post_quant_conv"))?;
        let dec_in = conv(d.z_channels, block_in, 3, dv.pp("conv_in"))?;
        let dec_mid = MidBlock::load(dv.pp("mid"), block_in, norm)?;
        let mut dec_levels = Vec::new();
        for i in (0..n).rev() {
            let lv = dv.pp(format!("up.{i}"));
            let out = d.ch * d.ch_mult[i];
            let blocks = load_blocks(&lv, d.num_res_blocks[i], &mut block_in, out, norm)?;
            let resample: Option<Box<dyn Module + Send + Sync>> = if i != 0 {
                Some(Box::new(Upsample::load(lv.pp("upsample"), block_in)?))
            } else {
                None
            };
            dec_levels.push(Level { blocks, resample });
        }
        let dec_norm = Normalize::load(dv.pp("norm_out"), block_in, norm)?;
        let dec_out = conv(block_in, d.out_ch, 3, dv.pp("conv_out"))?;
        if e.z_channels != cfg.quantizer.codebook_dim || d.z_channels != e.z_channels {
            return Err(Error::invalid(
                "magvit config",
                "z_channels must equal quantizer.codebook_dim on both sides",
            ));
        }
        Ok(Self {
            enc_in,
            enc_levels,
            enc_mid,
            enc_norm,
            enc_out,
            quant_conv,
            post_quant_conv,
            dec_in,
            dec_mid,
            dec_levels,
            dec_norm,
            dec_out,
            bits: cfg.quantizer.codebook_dim,
        })
    }

    /// Pixels `[B, 3, H, W]` in [-1, 1] → pre-quantization `z` `[B, bits, h, w]`.
    pub fn encode_z(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.enc_in.forward(x)?;
        for lv in &self.enc_levels {
            for b in &lv.blocks {
                h = b.forward(&h)?;
            }
            if let Some(r) = &lv.resample {
                h = r.forward(&h)?;
            }
        }
        let h = self.enc_mid.forward(&h)?;
        let h = swish(&self.enc_norm.forward(&h)?)?;
        let h = self.enc_out.forward(&h)?;
        Ok(self.quant_conv.forward(&h)?)
    }

    /// LFQ codes of `z`: bit c = z_c > 0, channel 0 = MSB; `[B, h*w]` row-major.
    pub fn codes_of(&self, z: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = z.dims4()?;
        let pow: Vec<f32> = (0..c).map(|i| (1u32 << (c - 1 - i)) as f32).collect();
        let pow = Tensor::from_vec(pow, (1, c, 1, 1), z.device())?;
        let bits = z.to_dtype(DType::F32)?.gt(0f64)?.to_dtype(DType::F32)?;
        Ok(bits
            .broadcast_mul(&pow)?
            .sum(1)?
            .to_dtype(DType::U32)?
            .reshape((b, h * w))?)
    }

    /// Pixels → codes `[B, h*w]`.
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        let z = self.encode_z(x)?;
        any2any_core::limits::check_finite(&z, "image encoder")?;
        self.codes_of(&z)
    }

    /// Codes `[B, h*w]` (u32) on an `h × w` grid → raw decoder output `[B, 3, 16h, 16w]`.
    pub fn decode(&self, codes: &Tensor, h: usize, w: usize) -> Result<Tensor> {
        let (b, n) = codes.dims2()?;
        if n != h * w {
            return Err(Error::invalid(
                "codes",
                format!("{n} codes for a {h}×{w} grid"),
            ));
        }
        let c = self.bits;
        let shifts: Vec<u32> = (0..c).map(|i| (c - 1 - i) as u32).collect();
        let div: Vec<f32> = shifts.iter().map(|&s| (1u32 << s) as f32).collect();
        let div = Tensor::from_vec(div, (1, 1, c), codes.device())?;
        // codes < 2^24 are exact in f32: bit = floor(code / 2^s) mod 2
        let q = codes
            .to_dtype(DType::F32)?
            .unsqueeze(D::Minus1)?
            .broadcast_div(&div)?
            .floor()?;
        let bit = (&q - ((&q / 2.0)?.floor()? * 2.0)?)?;
        let emb = ((bit * 2.0)? - 1.0)?;
        let z = emb
            .reshape((b, h, w, c))?
            .permute((0, 3, 1, 2))?
            .contiguous()?
            .to_dtype(self.dec_in.weight().dtype())?;
        let z = self.post_quant_conv.forward(&z)?;
        let mut x = self.dec_in.forward(&z)?;
        x = self.dec_mid.forward(&x)?;
        for lv in &self.dec_levels {
            for blk in &lv.blocks {
                x = blk.forward(&x)?;
            }
            if let Some(r) = &lv.resample {
                x = r.forward(&x)?;
            }
        }
        let x = swish(&self.dec_norm.forward(&x)?)?;
        Ok(self.dec_out.forward(&x)?)
    }
}
