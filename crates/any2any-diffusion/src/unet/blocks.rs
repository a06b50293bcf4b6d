//! The UNet's blocks, under diffusers' key names. The resnets (`ResnetBlock2D`), the attention
//! layers (`CrossAttention`) and the timestep embeddings are candle-transformers'
//! `stable_diffusion` pieces, which match diffusers exactly; the transformer blocks, samplers and
//! block containers are ours: candle's feed-forward uses the tanh GELU where diffusers' GEGLU
//! uses the exact one, and its down/up blocks ignore `norm_num_groups` and couple the up blocks'
//! attention and layer counts to the down blocks'.

use super::config::BlockPlan;
use any2any_core::candle_core::{DType, Module, Tensor, D};
use any2any_core::candle_nn::{self as nn, VarBuilder};
use any2any_core::nn::Linear;
use any2any_core::{Error, Result};
use candle_transformers::models::stable_diffusion::attention::CrossAttention;
use candle_transformers::models::stable_diffusion::resnet::{ResnetBlock2D, ResnetBlock2DConfig};

/// What every block shares: time-embedding width, group norm, projection kind.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Common {
    pub temb: usize,
    pub groups: usize,
    pub eps: f64,
    pub linear_projection: bool,
    pub downsample_padding: usize,
}

impl Common {
    fn resnet(&self, vb: VarBuilder, cin: usize, cout: usize, scale: f64) -> Result<ResnetBlock2D> {
        let cfg = ResnetBlock2DConfig {
            out_channels: Some(cout),
            temb_channels: Some(self.temb),
            groups: self.groups,
            groups_out: None,
            eps: self.eps,
            use_in_shortcut: None,
            output_scale_factor: scale,
        };
        Ok(ResnetBlock2D::new(vb, cin, cfg)?)
    }
}

/// `ff`: GEGLU (`net.0.proj`, exact GELU) then `net.2`.
#[derive(Debug)]
struct FeedForward {
    proj: Linear,
    out: Linear,
}

impl FeedForward {
    fn load(dim: usize, vb: VarBuilder) -> Result<Self> {
        let inner = dim * 4;
        Ok(Self {
            proj: Linear::load(dim, inner * 2, true, vb.pp("net.0.proj"))?,
            out: Linear::load(inner, dim, true, vb.pp("net.2"))?,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.proj.forward(x)?.chunk(2, D::Minus1)?;
        let y = (&h[0] * h[1].gelu_erf()?)?;
        Ok(self.out.forward(&y)?)
    }
}

/// `BasicTransformerBlock`: self-attention, cross-attention, feed-forward, each pre-norm.
#[derive(Debug)]
struct TransformerBlock {
    norm1: nn::LayerNorm,
    attn1: CrossAttention,
    norm2: nn::LayerNorm,
    attn2: CrossAttention,
    norm3: nn::LayerNorm,
    ff: FeedForward,
}

impl TransformerBlock {
    fn load(dim: usize, heads: usize, ctx: usize, vb: VarBuilder) -> Result<Self> {
        let dh = dim / heads;
        let attn = |name: &str, c| CrossAttention::new(vb.pp(name), dim, c, heads, dh, None, false);
        Ok(Self {
            norm1: nn::layer_norm(dim, 1e-5, vb.pp("norm1"))?,
            attn1: attn("attn1", None)?,
            norm2: nn::layer_norm(dim, 1e-5, vb.pp("norm2"))?,
            attn2: attn("attn2", Some(ctx))?,
            norm3: nn::layer_norm(dim, 1e-5, vb.pp("norm3"))?,
            ff: FeedForward::load(dim, vb.pp("ff"))?,
        })
    }
    fn forward(&self, x: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        let x = (self.attn1.forward(&self.norm1.forward(x)?, None)? + x)?;
        let x = (self.attn2.forward(&self.norm2.forward(&x)?, Some(ctx))? + x)?;
        Ok((self.ff.forward(&self.norm3.forward(&x)?)? + x)?)
    }
}

#[derive(Debug)]
enum Proj {
    Conv(nn::Conv2d),
    Linear(Linear),
}

impl Proj {
    fn load(linear: bool, cin: usize, cout: usize, vb: VarBuilder) -> Result<Self> {
        Ok(if linear {
            Self::Linear(Linear::load(cin, cout, true, vb)?)
        } else {
            Self::Conv(nn::conv2d(cin, cout, 1, Default::default(), vb)?)
        })
    }
}

/// `Transformer2DModel` (continuous input): group norm, `proj_in`, the blocks, `proj_out`,
/// plus the residual.
#[derive(Debug)]
pub(crate) struct Transformer2D {
    norm: nn::GroupNorm,
    proj_in: Proj,
    blocks: Vec<TransformerBlock>,
    proj_out: Proj,
    heads: usize,
}

impl Transformer2D {
    fn load(
        c: &Common,
        ch: usize,
        heads: usize,
        depth: usize,
        ctx: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let lin = c.linear_projection;
        Ok(Self {
            norm: nn::group_norm(c.groups, ch, 1e-6, vb.pp("norm"))?,
            proj_in: Proj::load(lin, ch, ch, vb.pp("proj_in"))?,
            blocks: (0..depth)
                .map(|k| {
                    TransformerBlock::load(ch, heads, ctx, vb.pp(format!("transformer_blocks.{k}")))
                })
                .collect::<Result<_>>()?,
            proj_out: Proj::load(lin, ch, ch, vb.pp("proj_out"))?,
            heads,
        })
    }

    fn forward(&self, x: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        let (b, _, h, w) = x.dims4()?;
        // Self-attention holds `[b·heads, h·w, h·w]` f32 scores (and their softmax): refuse a
        // size that cannot fit before it is allocated (the image size sets h·w).
        let scores = any2any_core::limits::bytes_of(&[b, self.heads, h * w, h * w], DType::F32);
        any2any_core::limits::check_memory(
            &format!("UNet self-attention over a {h}×{w} latent (`size`)"),
            scores.saturating_mul(2),
        )?;
        let to_seq = |t: Tensor| -> Result<Tensor> {
            let c = t.dim(1)?;
            Ok(t.permute((0, 2, 3, 1))?.reshape((b, h * w, c))?)
        };
        let from_seq = |t: Tensor| -> Result<Tensor> {
            let c = t.dim(2)?;
            Ok(t.reshape((b, h, w, c))?
                .permute((0, 3, 1, 2))?
                .contiguous()?)
        };
        let y = self.norm.forward(x)?;
        let mut y = match &self.proj_in {
            Proj::Conv(p) => to_seq(p.forward(&y)?)?,
            Proj::Linear(p) => p.forward(&to_seq(y)?)?,
        };
        for blk in &self.blocks {
            y = blk.forward(&y, ctx)?;
        }
        let y = match &self.proj_out {
            Proj::Conv(p) => p.forward(&from_seq(y)?)?,
            Proj::Linear(p) => from_seq(p.forward(&y)?)?,
        };
        Ok((y + x)?)
    }
}

/// Resnets interleaved with optional attentions: the body of every block.
#[derive(Debug)]
struct Layers {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2D>,
}

impl Layers {
    /// `in_of(i)`: the input channels of resnet `i`.
    fn load(
        c: &Common,
        p: &BlockPlan,
        in_of: impl Fn(usize) -> usize,
        vb: &VarBuilder,
    ) -> Result<Self> {
        let resnets = (0..p.layers)
            .map(|i| c.resnet(vb.pp(format!("resnets.{i}")), in_of(i), p.out_channels, 1.0))
            .collect::<Result<_>>()?;
        let attentions = match p.depth {
            None => Vec::new(),
            Some(depth) => (0..p.layers)
                .map(|i| {
                    let vb = vb.pp(format!("attentions.{i}"));
                    Transformer2D::load(c, p.out_channels, p.heads, depth, p.cross_dim, vb)
                })
                .collect::<Result<_>>()?,
        };
        Ok(Self {
            resnets,
            attentions,
        })
    }

    /// Layer `i`: the resnet, then its attention if any.
    fn layer(&self, i: usize, x: &Tensor, temb: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        let x = self.resnets[i].forward(x, Some(temb))?;
        match self.attentions.get(i) {
            Some(a) => a.forward(&x, ctx),
            None => Ok(x),
        }
    }
}

/// `DownBlock2D` / `CrossAttnDownBlock2D`.
#[derive(Debug)]
pub(crate) struct DownBlock {
    layers: Layers,
    down: Option<(nn::Conv2d, usize)>,
}

impl DownBlock {
    pub fn load(c: &Common, p: &BlockPlan, vb: VarBuilder) -> Result<Self> {
        let layers = Layers::load(
            c,
            p,
            |i| {
                if i == 0 {
                    p.in_channels
                } else {
                    p.out_channels
                }
            },
            &vb,
        )?;
        let down = if p.resample {
            let pad = c.downsample_padding;
            let cfg = nn::Conv2dConfig {
                stride: 2,
                padding: pad,
                ..Default::default()
            };
            let ch = p.out_channels;
            Some((
                nn::conv2d(ch, ch, 3, cfg, vb.pp("downsamplers.0.conv"))?,
                pad,
            ))
        } else {
            None
        };
        Ok(Self { layers, down })
    }

    /// The output and the skip states it leaves for the up blocks.
    pub fn forward(
        &self,
        x: &Tensor,
        temb: &Tensor,
        ctx: &Tensor,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let mut x = x.clone();
        let mut states = Vec::new();
        for i in 0..self.layers.resnets.len() {
            x = self.layers.layer(i, &x, temb, ctx)?;
            states.push(x.clone());
        }
        if let Some((conv, pad)) = &self.down {
            if *pad == 0 {
                x = x
                    .pad_with_zeros(D::Minus1, 0, 1)?
                    .pad_with_zeros(D::Minus2, 0, 1)?;
            }
            x = conv.forward(&x)?;
            states.push(x.clone());
        }
        Ok((x, states))
    }
}

/// `UpBlock2D` / `CrossAttnUpBlock2D`.
#[derive(Debug)]
pub(crate) struct UpBlock {
    layers: Layers,
    up: Option<nn::Conv2d>,
}

impl UpBlock {
    pub fn load(c: &Common, p: &BlockPlan, vb: VarBuilder) -> Result<Self> {
        let n = p.layers;
        let in_of = |i: usize| {
            let skip = if i + 1 == n {
                p.in_channels
            } else {
                p.out_channels
            };
            let own = if i == 0 {
                p.prev_channels
            } else {
                p.out_channels
            };
            own + skip
        };
        let layers = Layers::load(c, p, in_of, &vb)?;
        let up = if p.resample {
            let cfg = nn::Conv2dConfig {
                padding: 1,
                ..Default::default()
            };
            let ch = p.out_channels;
            Some(nn::conv2d(ch, ch, 3, cfg, vb.pp("upsamplers.0.conv"))?)
        } else {
            None
        };
        Ok(Self { layers, up })
    }

    /// Skip states this block consumes.
    pub fn skips(&self) -> usize {
        self.layers.resnets.len()
    }

    /// `skips`: this block's skip states, in down order (the last is used first); `size`: the
    /// upsampled size when it is not twice the input's.
    pub fn forward(
        &self,
        x: &Tensor,
        skips: &[Tensor],
        temb: &Tensor,
        ctx: &Tensor,
        size: Option<(usize, usize)>,
    ) -> Result<Tensor> {
        if skips.len() != self.skips() {
            return Err(Error::invalid(
                "sample",
                format!(
                    "{} skip states for an up block of {}",
                    skips.len(),
                    self.skips()
                ),
            ));
        }
        let mut x = x.clone();
        for (i, skip) in skips.iter().rev().enumerate() {
            x = Tensor::cat(&[&x, skip], 1)?;
            x = self.layers.layer(i, &x, temb, ctx)?;
        }
        if let Some(conv) = &self.up {
            let (_, _, h, w) = x.dims4()?;
            let (h, w) = size.unwrap_or((2 * h, 2 * w));
            x = conv.forward(&x.upsample_nearest2d(h, w)?)?;
        }
        Ok(x)
    }
}

/// `UNetMidBlock2DCrossAttn` (one layer): resnet, attention, resnet.
#[derive(Debug)]
pub(crate) struct MidBlock {
    resnets: [ResnetBlock2D; 2],
    attention: Transformer2D,
}

impl MidBlock {
    pub fn load(
        c: &Common,
        ch: usize,
        (depth, heads, ctx): (usize, usize, usize),
        scale: f64,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            resnets: [
                c.resnet(vb.pp("resnets.0"), ch, ch, scale)?,
                c.resnet(vb.pp("resnets.1"), ch, ch, scale)?,
            ],
            attention: Transformer2D::load(c, ch, heads, depth, ctx, vb.pp("attentions.0"))?,
        })
    }

    pub fn forward(&self, x: &Tensor, temb: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        let x = self.resnets[0].forward(x, Some(temb))?;
        let x = self.attention.forward(&x, ctx)?;
        Ok(self.resnets[1].forward(&x, Some(temb))?)
    }
}
