//! The Emu3 MoVQGAN image tokenizer (`Emu3VQVAE`): a per-frame 2D encoder/decoder around causal
//! temporal convolutions, with SpatialNorm (`GN(x)·conv_y(zq) + conv_b(zq)`) in the decoder.
//!
//! A still image is a 4-frame clip (the encoder repeats it); decoding keeps frame 0. Every
//! temporal convolution is causal (two zero frames in front), so frame 0 of the decoder depends
//! only on frame 0 of its input and on the last temporal tap of each kernel; the decoder runs that
//! frame alone. The encoder runs all frames, each Conv3d being a sum of 2D convolutions per tap.

use crate::config::Emu3VqConfig;
use any2any_core::candle_core::{DType, Module, Result, Tensor, D};
use any2any_core::candle_nn::{self, Conv2d, Conv2dConfig, VarBuilder};
use any2any_core::codec::taming::{spatial_attention, Downsample, NormConfig, Normalize};
use any2any_core::nn::Linear;

fn conv2d(cin: usize, cout: usize, k: usize, pad: usize, vb: VarBuilder) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: pad,
        ..Default::default()
    };
    candle_nn::conv2d(cin, cout, k, cfg, vb)
}

/// `Emu3VQVAEConv3d`: spatial padding `(k-1)/2`, two zero frames in front, temporal stride `st`.
#[derive(Debug, Clone)]
pub struct CausalConv3d {
    /// One `[O, I, kh, kw]` kernel per temporal tap.
    taps: Vec<Tensor>,
    bias: Tensor,
    pad: usize,
    stride_t: usize,
}

impl CausalConv3d {
    /// `vb` at the module holding `conv.weight` `[O, I, kt, k, k]` and `conv.bias`.
    pub fn load(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        kt: usize,
        k: usize,
        stride_t: usize,
    ) -> Result<Self> {
        let w = vb.pp("conv").get((cout, cin, kt, k, k), "weight")?;
        let bias = vb.pp("conv").get(cout, "bias")?;
        let taps = (0..kt)
            .map(|t| w.narrow(2, t, 1)?.squeeze(2)?.contiguous())
            .collect::<Result<_>>()?;
        Ok(Self {
            taps,
            bias: bias.reshape((1, cout, 1, 1))?,
            pad: (k - 1) / 2,
            stride_t,
        })
    }

    fn tap(&self, x: &Tensor, t: usize) -> Result<Tensor> {
        x.conv2d(&self.taps[t], self.pad, 1, 1, 1)
    }

    /// Output frame 0 from input frame 0 alone (the other taps see the zero padding).
    pub fn forward_frame0(&self, x: &Tensor) -> Result<Tensor> {
        self.tap(x, self.taps.len() - 1)?.broadcast_add(&self.bias)
    }

    /// All output frames of `frames` (each `[B, C, H, W]`).
    pub fn forward(&self, frames: &[Tensor]) -> Result<Vec<Tensor>> {
        let kt = self.taps.len();
        let front = 2;
        let padded = frames.len() + front;
        let n_out = (padded - kt) / self.stride_t + 1;
        (0..n_out)
            .map(|o| {
                let mut acc: Option<Tensor> = None;
                for t in 0..kt {
                    let i = o * self.stride_t + t;
                    if i < front {
                        continue;
                    }
                    let y = self.tap(&frames[i - front], t)?;
                    acc = Some(match acc {
                        Some(a) => (a + y)?,
                        None => y,
                    });
                }
                match acc {
                    Some(a) => a.broadcast_add(&self.bias),
                    None => {
                        candle_core_zero(&frames[0], self.bias.dim(1)?)?.broadcast_add(&self.bias)
                    }
                }
            })
            .collect()
    }
}

fn candle_core_zero(like: &Tensor, c: usize) -> Result<Tensor> {
    let (b, _, h, w) = like.dims4()?;
    Tensor::zeros((b, c, h, w), like.dtype(), like.device())
}

/// `BatchNorm3d` in eval mode (running statistics), eps 1e-5, applied per frame.
#[derive(Debug, Clone)]
pub struct BatchNorm {
    scale: Tensor,
    shift: Tensor,
}

impl BatchNorm {
    /// Loads `weight`, `bias`, `running_mean` and `running_var` of `c` channels, folded into
    /// one scale and shift.
    pub fn load(vb: VarBuilder, c: usize) -> Result<Self> {
        let w = vb.get(c, "weight")?;
        let b = vb.get(c, "bias")?;
        let mean = vb.get(c, "running_mean")?;
        let var = vb.get(c, "running_var")?;
        let scale = (w / (var + 1e-5)?.sqrt()?)?;
        let shift = (b - (&mean * &scale)?)?;
        Ok(Self {
            scale: scale.reshape((1, c, 1, 1))?,
            shift: shift.reshape((1, c, 1, 1))?,
        })
    }
}

impl Module for BatchNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.broadcast_mul(&self.scale)?.broadcast_add(&self.shift)
    }
}

/// `Emu3VQVAETemporalResnetBlock` (equal in/out channels).
#[derive(Debug, Clone)]
pub struct TemporalResBlock {
    norm1: BatchNorm,
    conv1: CausalConv3d,
    norm2: BatchNorm,
    conv2: CausalConv3d,
}

impl TemporalResBlock {
    /// Loads `norm1`, `conv1`, `norm2`, `conv2` (3×3×3 causal convolutions) of `c` channels.
    pub fn load(vb: VarBuilder, c: usize) -> Result<Self> {
        Ok(Self {
            norm1: BatchNorm::load(vb.pp("norm1"), c)?,
            conv1: CausalConv3d::load(vb.pp("conv1"), c, c, 3, 3, 1)?,
            norm2: BatchNorm::load(vb.pp("norm2"), c)?,
            conv2: CausalConv3d::load(vb.pp("conv2"), c, c, 3, 3, 1)?,
        })
    }

    /// Output frame 0 from input frame 0 alone (an image repeated in time is not needed).
    pub fn forward_frame0(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward_frame0(&self.norm1.forward(x)?.silu()?)?;
        let h = self
            .conv2
            .forward_frame0(&self.norm2.forward(&h)?.silu()?)?;
        x + h
    }

    /// All output frames of `frames` (each `[B, C, H, W]`).
    pub fn forward(&self, frames: &[Tensor]) -> Result<Vec<Tensor>> {
        let h = frames
            .iter()
            .map(|f| self.norm1.forward(f)?.silu())
            .collect::<Result<Vec<_>>>()?;
        let h = self.conv1.forward(&h)?;
        let h = h
            .iter()
            .map(|f| self.norm2.forward(f)?.silu())
            .collect::<Result<Vec<_>>>()?;
        let h = self.conv2.forward(&h)?;
        frames.iter().zip(h).map(|(x, y)| x + y).collect()
    }
}

/// `Emu3VQVAESpatialNorm`: `GN(x) · conv_y(zq) + conv_b(zq)`, `zq` nearest-resized to `x`.
#[derive(Debug, Clone)]
pub struct SpatialNorm {
    norm: Normalize,
    conv_y: Conv2d,
    conv_b: Conv2d,
}

impl SpatialNorm {
    /// Loads `norm_layer` (GroupNorm of `c` channels) and the 1×1 `conv_y`, `conv_b` from
    /// `zq_ch` latent channels.
    pub fn load(vb: VarBuilder, zq_ch: usize, c: usize) -> Result<Self> {
        Ok(Self {
            norm: Normalize::load(vb.pp("norm_layer"), c, NormConfig::default())?,
            conv_y: conv2d(zq_ch, c, 1, 0, vb.pp("conv_y"))?,
            conv_b: conv2d(zq_ch, c, 1, 0, vb.pp("conv_b"))?,
        })
    }

    /// Normalises `x` `[B, C, H, W]`, modulated by the quantized latents `zq`.
    pub fn forward(&self, x: &Tensor, zq: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let zq = zq.upsample_nearest2d(h, w)?;
        let n = self.norm.forward(x)?;
        n.mul(&self.conv_y.forward(&zq)?)? + self.conv_b.forward(&zq)?
    }
}

/// GroupNorm (encoder) or SpatialNorm (decoder).
#[derive(Debug, Clone)]
enum Norm {
    Group(Normalize),
    Spatial(SpatialNorm),
}

impl Norm {
    fn load(vb: VarBuilder, zq_ch: Option<usize>, c: usize) -> Result<Self> {
        Ok(match zq_ch {
            Some(q) => Norm::Spatial(SpatialNorm::load(vb, q, c)?),
            None => Norm::Group(Normalize::load(vb, c, NormConfig::default())?),
        })
    }

    fn forward(&self, x: &Tensor, zq: Option<&Tensor>) -> Result<Tensor> {
        match (self, zq) {
            (Norm::Group(n), _) => n.forward(x),
            (Norm::Spatial(n), Some(zq)) => n.forward(x, zq),
            (Norm::Spatial(_), None) => candle_core_bail(),
        }
    }
}

fn candle_core_bail() -> Result<Tensor> {
    Err(any2any_core::candle_core::Error::Msg(
        "SpatialNorm needs the quantized latents".into(),
    ))
}

/// `Emu3VQVAEResnetBlock` with GroupNorm or SpatialNorm.
#[derive(Debug, Clone)]
pub struct ResBlock {
    norm1: Norm,
    conv1: Conv2d,
    norm2: Norm,
    conv2: Conv2d,
    nin: Option<Conv2d>,
}

impl ResBlock {
    /// Loads `norm1`, `conv1`, `norm2`, `conv2` and, when `cin ≠ cout`, `nin_shortcut`;
    /// SpatialNorm over `zq_ch` latent channels when given (decoder), GroupNorm otherwise.
    pub fn load(vb: VarBuilder, cin: usize, cout: usize, zq_ch: Option<usize>) -> Result<Self> {
        Ok(Self {
            norm1: Norm::load(vb.pp("norm1"), zq_ch, cin)?,
            conv1: conv2d(cin, cout, 3, 1, vb.pp("conv1"))?,
            norm2: Norm::load(vb.pp("norm2"), zq_ch, cout)?,
            conv2: conv2d(cout, cout, 3, 1, vb.pp("conv2"))?,
            nin: if cin != cout {
                Some(conv2d(cin, cout, 1, 0, vb.pp("nin_shortcut"))?)
            } else {
                None
            },
        })
    }

    /// `x + block(x)`; `zq`: the quantized latents a SpatialNorm block needs.
    pub fn forward(&self, x: &Tensor, zq: Option<&Tensor>) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward(x, zq)?.silu()?)?;
        let h = self.conv2.forward(&self.norm2.forward(&h, zq)?.silu()?)?;
        match &self.nin {
            Some(p) => p.forward(x)? + h,
            None => x + h,
        }
    }
}

/// `Emu3VQVAEAttentionBlock` over `H·W` positions plus its pre-norm and residual.
#[derive(Debug, Clone)]
pub struct Attn {
    norm: Norm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
}

impl Attn {
    /// `vb_attn` holds `q_proj/k_proj/v_proj/out_proj`, `vb_norm` the norm.
    pub fn load(
        vb_attn: VarBuilder,
        vb_norm: VarBuilder,
        c: usize,
        heads: usize,
        zq_ch: Option<usize>,
    ) -> Result<Self> {
        let l = |n: &str| {
            Linear::load(c, c, true, vb_attn.pp(n))
                .map_err(|e| any2any_core::candle_core::Error::Msg(e.to_string()))
        };
        Ok(Self {
            norm: Norm::load(vb_norm, zq_ch, c)?,
            q: l("q_proj")?,
            k: l("k_proj")?,
            v: l("v_proj")?,
            out: l("out_proj")?,
            heads,
        })
    }

    /// `x + attention(norm(x))` over the `H·W` positions of `x` `[B, C, H, W]`.
    pub fn forward(&self, x: &Tensor, zq: Option<&Tensor>) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let n = self.norm.forward(x, zq)?;
        let s = n.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous()?;
        let o = spatial_attention(
            &self.q.forward(&s)?,
            &self.k.forward(&s)?,
            &self.v.forward(&s)?,
            self.heads,
        )?;
        let o = self.out.forward(&o)?;
        let o = o.reshape((b, h, w, c))?.permute((0, 3, 1, 2))?;
        x + o
    }
}

/// `block_1`, attention, `block_2`.
#[derive(Debug, Clone)]
struct Middle {
    block_1: ResBlock,
    attn: Attn,
    block_2: ResBlock,
}

impl Middle {
    fn load(vb: VarBuilder, c: usize, heads: usize, zq_ch: Option<usize>) -> Result<Self> {
        Ok(Self {
            block_1: ResBlock::load(vb.pp("block_1"), c, c, zq_ch)?,
            attn: Attn::load(vb.pp("attn_1"), vb.pp("attn_norm"), c, heads, zq_ch)?,
            block_2: ResBlock::load(vb.pp("block_2"), c, c, zq_ch)?,
        })
    }

    fn forward(&self, x: &Tensor, zq: Option<&Tensor>) -> Result<Tensor> {
        let h = self.block_1.forward(x, zq)?;
        let h = self.attn.forward(&h, zq)?;
        self.block_2.forward(&h, zq)
    }
}

/// One resolution level: res blocks, each optionally followed by attention.
#[derive(Debug, Clone)]
struct Level {
    blocks: Vec<ResBlock>,
    attns: Vec<Attn>,
}

impl Level {
    fn forward(&self, mut h: Tensor, zq: Option<&Tensor>) -> Result<Tensor> {
        for (i, b) in self.blocks.iter().enumerate() {
            h = b.forward(&h, zq)?;
            if let Some(a) = self.attns.get(i) {
                h = a.forward(&h, zq)?;
            }
        }
        Ok(h)
    }
}

/// Emu3 VQ decoder (codes → pixels in `[-1, 1]`, frame 0).
#[derive(Debug, Clone)]
pub struct Emu3VqDecoder {
    codebook: Tensor,
    post_quant_conv: CausalConv3d,
    time_res: Vec<TemporalResBlock>,
    time_conv: Vec<CausalConv3d>,
    conv_in: Conv2d,
    middle: Middle,
    /// Levels from the lowest resolution up, each with its upsample (none at level 0).
    up: Vec<(Level, Option<Conv2d>)>,
    norm_out: SpatialNorm,
    conv_out: Conv2d,
}

fn temporal_blocks(cfg: &Emu3VqConfig) -> usize {
    cfg.temporal_downsample_factor.max(1).ilog2() as usize
}

impl Emu3VqDecoder {
    /// `vb` at `vqmodel`.
    pub fn load(vb: VarBuilder, cfg: &Emu3VqConfig) -> Result<Self> {
        let e = cfg.embed_dim;
        let lat = cfg.latent_channels;
        let d = vb.pp("decoder");
        let levels = cfg.channel_multiplier.len();
        let mut block_in = cfg.base_channels * cfg.channel_multiplier[levels - 1];
        let mut up = Vec::with_capacity(levels);
        for lvl in (0..levels).rev() {
            let v = d.pp(format!("up_block.up.{lvl}"));
            let out = cfg.base_channels * cfg.channel_multiplier[lvl];
            let mut blocks = Vec::new();
            let mut attns = Vec::new();
            for i in 0..=cfg.num_res_blocks {
                blocks.push(ResBlock::load(
                    v.pp(format!("block.{i}")),
                    block_in,
                    out,
                    Some(e),
                )?);
                block_in = out;
                if cfg.attn_resolutions.contains(&lvl) {
                    attns.push(Attn::load(
                        v.pp(format!("attn.{i}")),
                        v.pp(format!("attn_norms.{i}")),
                        block_in,
                        cfg.num_attention_heads,
                        Some(e),
                    )?);
                }
            }
            let upsample = if lvl != 0 {
                Some(conv2d(block_in, block_in, 3, 1, v.pp("upsample.conv"))?)
            } else {
                None
            };
            up.push((Level { blocks, attns }, upsample));
        }
        let top = cfg.base_channels * cfg.channel_multiplier[levels - 1];
        Ok(Self {
            codebook: vb
                .pp("quantize.embedding")
                .get((cfg.codebook_size, e), "weight")?,
            post_quant_conv: CausalConv3d::load(vb.pp("post_quant_conv"), e, lat, 3, 1, 1)?,
            time_res: (0..cfg.num_res_blocks)
                .map(|i| TemporalResBlock::load(d.pp(format!("time_res_stack.{i}")), lat))
                .collect::<Result<_>>()?,
            time_conv: (0..temporal_blocks(cfg))
                .map(|i| CausalConv3d::load(d.pp(format!("time_conv.{i}.conv")), lat, lat, 3, 3, 1))
                .collect::<Result<_>>()?,
            conv_in: conv2d(lat, top, 3, 1, d.pp("conv_in"))?,
            middle: Middle::load(d.pp("middle_block"), top, cfg.num_attention_heads, Some(e))?,
            up,
            norm_out: SpatialNorm::load(
                d.pp("norm_out"),
                e,
                cfg.base_channels * cfg.channel_multiplier[0],
            )?,
            conv_out: conv2d(
                cfg.base_channels * cfg.channel_multiplier[0],
                cfg.out_channels,
                3,
                1,
                d.pp("conv_out"),
            )?,
        })
    }

    /// The codebook, `[codebook_size, embed_dim]`.
    pub fn codebook(&self) -> &Tensor {
        &self.codebook
    }

    /// Codes `[B, h·w]` (row-major) → pixels `[B, 3, h·f, w·f]` in about `[-1, 1]` (frame 0).
    pub fn decode(&self, codes: &Tensor, h: usize, w: usize) -> Result<Tensor> {
        let (b, n) = codes.dims2()?;
        if n != h * w {
            return Err(any2any_core::candle_core::Error::Msg(format!(
                "{n} codes for a {h}x{w} grid"
            )));
        }
        let e = self.codebook.dim(1)?;
        let quant = self
            .codebook
            .embedding(&codes.flatten_all()?)?
            .reshape((b, h, w, e))?
            .permute((0, 3, 1, 2))?
            .contiguous()?;
        let post = self.post_quant_conv.forward_frame0(&quant)?;
        let mut x = Tensor::cat(&[&post, &quant], 0)?;
        for l in &self.time_res {
            x = l.forward_frame0(&x)?;
        }
        for c in &self.time_conv {
            // nearest ×2 in time leaves frame 0 as it is
            x = c.forward_frame0(&x)?.silu()?;
        }
        let hidden = x.narrow(0, 0, b)?;
        let zq = x.narrow(0, b, b)?;
        let mut h = self.conv_in.forward(&hidden)?;
        h = self.middle.forward(&h, Some(&zq))?;
        for (level, upsample) in &self.up {
            h = level.forward(h, Some(&zq))?;
            if let Some(u) = upsample {
                let (_, _, hh, ww) = h.dims4()?;
                h = u.forward(&h.upsample_nearest2d(2 * hh, 2 * ww)?)?;
            }
        }
        let h = self.norm_out.forward(&h, &zq)?.silu()?;
        self.conv_out.forward(&h)
    }
}

/// `Emu3ImageProcessor.postprocess`: `trunc(clip((x + 1) / 2 · 255, 0, 255))`, HWC u8 per image.
pub fn to_u8_hwc(x: &Tensor) -> Result<Vec<Vec<u8>>> {
    any2any_core::limits::check_finite(x, "decoded pixels")?;
    let x = x.to_dtype(DType::F32)?;
    let x = ((x + 1.0)? / 2.0)?;
    let x = (x * 255.0)?.clamp(0f32, 255f32)?;
    let x = x.permute((0, 2, 3, 1))?.contiguous()?;
    let b = x.dim(0)?;
    (0..b)
        .map(|i| {
            Ok(x.get(i)?
                .flatten_all()?
                .to_vec1::<f32>()?
                .into_iter()
                .map(|v| v as u8)
                .collect())
        })
        .collect()
}

/// Emu3 VQ encoder + quantizer (pixels → codes).
#[derive(Debug, Clone)]
pub struct Emu3VqEncoder {
    codebook: Tensor,
    conv_in: Conv2d,
    down: Vec<(Level, Option<Downsample>)>,
    middle: Middle,
    norm_out: Normalize,
    conv_out: Conv2d,
    time_conv: Vec<CausalConv3d>,
    time_res: Vec<TemporalResBlock>,
    quant_conv: CausalConv3d,
    frames: usize,
    factor: usize,
}

impl Emu3VqEncoder {
    /// `vb` at `vqmodel`.
    pub fn load(vb: VarBuilder, cfg: &Emu3VqConfig) -> Result<Self> {
        let en = vb.pp("encoder");
        let levels = cfg.channel_multiplier.len();
        let base = cfg.base_channels;
        let mut down = Vec::with_capacity(levels);
        let mut block_in = base;
        for lvl in 0..levels {
            let v = en.pp(format!("down_block.down.{lvl}"));
            let out = base * cfg.channel_multiplier[lvl];
            let mut blocks = Vec::new();
            let mut attns = Vec::new();
            for i in 0..cfg.num_res_blocks {
                blocks.push(ResBlock::load(
                    v.pp(format!("block.{i}")),
                    block_in,
                    out,
                    None,
                )?);
                block_in = out;
                if cfg.attn_resolutions.contains(&lvl) {
                    attns.push(Attn::load(
                        v.pp(format!("attn.{i}")),
                        v.pp(format!("attn_norms.{i}")),
                        block_in,
                        cfg.num_attention_heads,
                        None,
                    )?);
                }
            }
            let ds = if lvl + 1 != levels {
                Some(Downsample::load(v.pp("downsample"), block_in)?)
            } else {
                None
            };
            down.push((Level { blocks, attns }, ds));
        }
        let top = base * cfg.channel_multiplier[levels - 1];
        let zc = if cfg.double_latent {
            2 * cfg.latent_channels
        } else {
            cfg.latent_channels
        };
        Ok(Self {
            codebook: vb
                .pp("quantize.embedding")
                .get((cfg.codebook_size, cfg.embed_dim), "weight")?,
            conv_in: conv2d(cfg.in_channels, base, 3, 1, en.pp("conv_in"))?,
            down,
            middle: Middle::load(en.pp("middle_block"), top, cfg.num_attention_heads, None)?,
            norm_out: Normalize::load(en.pp("norm_out"), top, NormConfig::default())?,
            conv_out: conv2d(top, zc, 3, 1, en.pp("conv_out"))?,
            time_conv: (0..temporal_blocks(cfg))
                .map(|i| CausalConv3d::load(en.pp(format!("time_conv.{i}.conv")), zc, zc, 4, 3, 2))
                .collect::<Result<_>>()?,
            time_res: (0..cfg.num_res_blocks)
                .map(|i| TemporalResBlock::load(en.pp(format!("time_res_stack.{i}")), zc))
                .collect::<Result<_>>()?,
            quant_conv: CausalConv3d::load(
                vb.pp("quant_conv"),
                cfg.latent_channels,
                cfg.embed_dim,
                3,
                1,
                1,
            )?,
            frames: cfg.temporal_downsample_factor.max(1),
            factor: cfg.spatial_factor(),
        })
    }

    /// Normalised pixels `[B, 3, H, W]` (in `[-1, 1]`) → codes `[B, H/f, W/f]` (u32), the
    /// image repeated to a clip of `temporal_downsample_factor` frames as HF does.
    pub fn encode(&self, pixels: &Tensor) -> Result<Tensor> {
        let (_, _, ih, iw) = pixels.dims4()?;
        // the 2D part runs per frame, and the frames are equal
        let mut h = self.conv_in.forward(pixels)?;
        for (level, ds) in &self.down {
            h = level.forward(h, None)?;
            if let Some(d) = ds {
                h = d.forward(&h)?;
            }
        }
        h = self.middle.forward(&h, None)?;
        h = self.conv_out.forward(&self.norm_out.forward(&h)?.silu()?)?;
        let mut frames = vec![h; self.frames];
        for c in &self.time_conv {
            frames = c
                .forward(&frames)?
                .into_iter()
                .map(|f| f.silu())
                .collect::<Result<_>>()?;
        }
        for l in &self.time_res {
            frames = l.forward(&frames)?;
        }
        let z = self.quant_conv.forward(&frames)?;
        let z = z[0].to_dtype(DType::F32)?;
        let (b, c, zh, zw) = z.dims4()?;
        let flat = z.permute((0, 2, 3, 1))?.reshape((b * zh * zw, c))?;
        let cb = self.codebook.to_dtype(DType::F32)?;
        let zz = flat.sqr()?.sum_keepdim(1)?;
        let ee = cb.sqr()?.sum(1)?.unsqueeze(0)?;
        let ze = (flat.matmul(&cb.t()?)? * 2.0)?;
        let dist = zz.broadcast_add(&ee)?.broadcast_sub(&ze)?;
        any2any_core::limits::check_finite(&dist, "image encoder")?;
        let codes = dist.argmin(D::Minus1)?.reshape((b, zh, zw))?;
        codes
            .narrow(1, 0, (ih / self.factor).min(zh))?
            .narrow(2, 0, (iw / self.factor).min(zw))
    }
}
