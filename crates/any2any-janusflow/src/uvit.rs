//! The ShallowUViT encoder and decoder around the LLM (official `janus/janusflow/models/uvit.py`).
//!
//! - [`ShallowUViTEncoder`]: the timestep embedding (`Timesteps(C, flip_sin_to_cos, shift 0)` →
//!   `TimestepEmbedding(C → hidden)`), a strided `in_conv` over the latent, then ConvNeXt blocks;
//!   its output is both the LLM's image tokens and the decoder's skip.
//! - [`ShallowUViTDecoder`]: RMSNorm over channels, concatenation with the skip (twice the
//!   width), ConvNeXt blocks, then `Unpatchify` stages (RMSNorm, 1×1 conv, PixelShuffle(2)).
//! - [`ConvNextBlock`]: depthwise 7×7 → RMSNorm (NHWC) → Linear ×4 → exact GELU → GRN → Linear →
//!   residual → FiLM **after** the residual: `x·(1 + scale) + shift`, `(scale, shift)` from
//!   `Linear(SiLU(t_emb))`.

use crate::config::{GenDecParams, GenEncParams};
use any2any_core::candle_core::{self, DType, Module, Tensor, D};
use any2any_core::candle_nn::{self, Conv2d, Conv2dConfig, RmsNorm, VarBuilder};
use any2any_core::nn::Linear;
use any2any_core::{Error, Result};
use candle_transformers::models::stable_diffusion::embeddings::{TimestepEmbedding, Timesteps};

/// RMSNorm over the channels of an NCHW tensor (computed in f32, as LlamaRMSNorm).
#[derive(Debug, Clone)]
struct ChannelNorm(RmsNorm);

impl ChannelNorm {
    fn load(vb: VarBuilder, channels: usize, eps: f64) -> Result<Self> {
        Ok(Self(candle_nn::rms_norm(channels, eps, vb)?))
    }
    /// NHWC in, NHWC out.
    fn last(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dt = x.dtype();
        self.0
            .forward(&x.to_dtype(DType::F32)?.contiguous()?)?
            .to_dtype(dt)
    }
    /// NCHW in, NCHW out.
    fn channels(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.last(&x.permute((0, 2, 3, 1))?)?.permute((0, 3, 1, 2))
    }
}

/// ConvNeXt-V2 global response norm over NHWC: `(γ·N(x) + 1)·x + β`, `N` the per-channel L2
/// norm over H, W divided by its channel mean + 1e-6 (weights stored `[1, 1, 1, C]`).
#[derive(Debug, Clone)]
struct Grn {
    weight: Tensor,
    bias: Tensor,
}

impl Grn {
    fn load(vb: VarBuilder, c: usize) -> Result<Self> {
        Ok(Self {
            weight: vb.get((1, 1, 1, c), "weight")?,
            bias: vb.get((1, 1, 1, c), "bias")?,
        })
    }
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let gx = x.sqr()?.sum_keepdim(1)?.sum_keepdim(2)?.sqrt()?;
        let nx = gx.broadcast_div(&(gx.mean_keepdim(D::Minus1)? + 1e-6)?)?;
        let scale = (nx.broadcast_mul(&self.weight)? + 1.0)?;
        x.broadcast_mul(&scale)?.broadcast_add(&self.bias)
    }
}

/// One ConvNeXt block with FiLM conditioning (see the module docs).
#[derive(Debug, Clone)]
pub struct ConvNextBlock {
    depthwise: Conv2d,
    norm: ChannelNorm,
    linear_1: Linear,
    grn: Grn,
    linear_2: Linear,
    cond: Linear,
    channels: usize,
}

impl ConvNextBlock {
    /// `channels` wide, conditioned on a `hidden`-wide embedding.
    pub fn load(
        vb: VarBuilder,
        channels: usize,
        hidden: usize,
        eps: f64,
        bias: bool,
    ) -> Result<Self> {
        let cfg = Conv2dConfig {
            padding: 3,
            groups: channels,
            ..Default::default()
        };
        let depthwise = if bias {
            candle_nn::conv2d(channels, channels, 7, cfg, vb.pp("depthwise"))?
        } else {
            candle_nn::conv2d_no_bias(channels, channels, 7, cfg, vb.pp("depthwise"))?
        };
        let wide = channels * 4;
        Ok(Self {
            depthwise,
            norm: ChannelNorm::load(vb.pp("norm"), channels, eps)?,
            linear_1: Linear::load(channels, wide, bias, vb.pp("channelwise_linear_1"))?,
            grn: Grn::load(vb.pp("channelwise_norm"), wide)?,
            linear_2: Linear::load(wide, channels, bias, vb.pp("channelwise_linear_2"))?,
            cond: Linear::load(hidden, channels * 2, bias, vb.pp("cond_embeds_mapper"))?,
            channels,
        })
    }

    /// `x` `[B, C, H, W]`, `cond` `[B, hidden]`.
    pub fn forward(&self, x: &Tensor, cond: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.depthwise.forward(x)?.permute((0, 2, 3, 1))?;
        let h = self.norm.last(&h)?;
        let h = self.linear_1.forward(&h)?.gelu_erf()?;
        let h = self.linear_2.forward(&self.grn.forward(&h)?)?;
        let x = (h.permute((0, 3, 1, 2))? + x)?;
        let ss = self.cond.forward(&candle_nn::ops::silu(cond)?)?;
        let c = self.channels;
        let scale = (ss.narrow(1, 0, c)? + 1.0)?.unsqueeze(2)?.unsqueeze(3)?;
        let shift = ss.narrow(1, c, c)?.unsqueeze(2)?.unsqueeze(3)?;
        x.broadcast_mul(&scale)?.broadcast_add(&shift)
    }
}

/// `mid_block.res_blocks.{i}` (no down- or upsampling in JanusFlow).
fn mid_block(
    vb: VarBuilder,
    n: usize,
    channels: usize,
    hidden: usize,
    eps: f64,
    bias: bool,
) -> Result<Vec<ConvNextBlock>> {
    (0..n)
        .map(|i| {
            ConvNextBlock::load(
                vb.pp("mid_block.res_blocks").pp(i),
                channels,
                hidden,
                eps,
                bias,
            )
        })
        .collect()
}

fn run_blocks(blocks: &[ConvNextBlock], x: Tensor, cond: &Tensor) -> candle_core::Result<Tensor> {
    blocks.iter().try_fold(x, |x, b| b.forward(&x, cond))
}

/// What the encoder hands on: the image tokens' feature map (also the decoder's skip) and the
/// timestep embedding.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// `[B, C, h, w]`, `h = H / stride`.
    pub x_emb: Tensor,
    /// `[B, hidden]`.
    pub t_emb: Tensor,
}

/// `vision_gen_enc_model`.
#[derive(Debug)]
pub struct ShallowUViTEncoder {
    time_proj: Timesteps,
    time_embed: TimestepEmbedding,
    in_conv: Conv2d,
    blocks: Vec<ConvNextBlock>,
}

impl ShallowUViTEncoder {
    /// Loads it under `vb`.
    pub fn load(vb: VarBuilder, p: &GenEncParams) -> Result<Self> {
        let c0 = p.block_out_channels.first().copied().unwrap_or(0);
        let c = p.block_out_channels.last().copied().unwrap_or(0);
        let padding = p
            .padding
            .unwrap_or_else(|| p.kernel_size.saturating_sub(p.stride));
        let cfg = Conv2dConfig {
            stride: p.stride,
            padding,
            ..Default::default()
        };
        let blocks = if p.use_mid_block {
            mid_block(
                vb.clone(),
                p.layers_in_middle,
                c,
                p.hidden_size,
                p.norm_eps,
                p.use_bias,
            )?
        } else {
            Vec::new()
        };
        Ok(Self {
            time_proj: Timesteps::new(c0, true, 0.0),
            time_embed: TimestepEmbedding::new(vb.pp("time_embed"), c0, p.hidden_size)?,
            in_conv: candle_nn::conv2d(p.input_channels, c0, p.kernel_size, cfg, vb.pp("in_conv"))?,
            blocks,
        })
    }

    /// `x` `[B, 4, H, W]` at model timestep `t` (the same for every row).
    pub fn forward(&self, x: &Tensor, t: f64) -> Result<Encoded> {
        let b = x.dim(0)?;
        let dt = x.dtype();
        let ts = Tensor::full(t as f32, b, x.device())?;
        let t_emb = self.time_proj.forward(&ts)?.to_dtype(dt)?;
        let t_emb = self.time_embed.forward(&t_emb)?;
        let x_emb = run_blocks(&self.blocks, self.in_conv.forward(x)?, &t_emb)?;
        Ok(Encoded { x_emb, t_emb })
    }
}

/// One `out_convs.{i}`: RMSNorm over channels, 1×1 conv to `out · 4`, PixelShuffle(2).
#[derive(Debug, Clone)]
struct Unpatchify {
    norm: ChannelNorm,
    conv: Conv2d,
}

impl Unpatchify {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = self.conv.forward(&self.norm.channels(x)?)?;
        pixel_shuffle(&x, 2)
    }
}

/// `[B, C·r², H, W]` → `[B, C, H·r, W·r]` (torch `PixelShuffle`).
pub fn pixel_shuffle(x: &Tensor, r: usize) -> candle_core::Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let oc = c / (r * r);
    x.reshape((b, oc, r, r, h, w))?
        .permute((0, 1, 4, 2, 5, 3))?
        .reshape((b, oc, h * r, w * r))
}

/// `vision_gen_dec_model`.
#[derive(Debug, Clone)]
pub struct ShallowUViTDecoder {
    input_norm: ChannelNorm,
    blocks: Vec<ConvNextBlock>,
    out_convs: Vec<Unpatchify>,
    in_channels: usize,
}

impl ShallowUViTDecoder {
    /// Loads it under `vb`.
    pub fn load(vb: VarBuilder, p: &GenDecParams) -> Result<Self> {
        let last = p.block_out_channels.last().copied().unwrap_or(0);
        let wide = p.in_channels + last;
        let blocks = if p.use_mid_block {
            mid_block(
                vb.clone(),
                p.layers_in_middle,
                wide,
                p.hidden_size,
                p.norm_eps,
                p.use_bias,
            )?
        } else {
            Vec::new()
        };
        let out_convs = (0..p.upsamples)
            .map(|i| {
                let cin = if i == 0 { wide } else { last };
                let cout = if i + 1 == p.upsamples {
                    p.out_channels
                } else {
                    last
                };
                let vb = vb.pp("out_convs").pp(i);
                let conv = if p.use_bias {
                    candle_nn::conv2d(cin, cout * 4, 1, Default::default(), vb.pp("unpatch_conv"))?
                } else {
                    candle_nn::conv2d_no_bias(
                        cin,
                        cout * 4,
                        1,
                        Default::default(),
                        vb.pp("unpatch_conv"),
                    )?
                };
                Ok(Unpatchify {
                    norm: ChannelNorm::load(vb.pp("norm"), cin, p.norm_eps)?,
                    conv,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            input_norm: ChannelNorm::load(vb.pp("input_norm"), p.in_channels, p.norm_eps)?,
            blocks,
            out_convs,
            in_channels: p.in_channels,
        })
    }

    /// `x` `[B, in_channels, h, w]` (the LLM's aligned tokens), the encoder's `skip` and `t_emb`
    /// → the velocity.
    pub fn forward(&self, x: &Tensor, skip: &Tensor, t_emb: &Tensor) -> Result<Tensor> {
        if x.dim(1)? != self.in_channels || x.dims()[2..] != skip.dims()[2..] {
            return Err(Error::invalid(
                "latent",
                format!("decoder input {:?} with skip {:?}", x.dims(), skip.dims()),
            ));
        }
        let x = self.input_norm.channels(x)?;
        let x = Tensor::cat(&[&x, skip], 1)?;
        let x = run_blocks(&self.blocks, x, t_emb)?;
        let x = self.out_convs.iter().try_fold(x, |x, u| u.forward(&x))?;
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use any2any_core::candle_core::Device;

    #[test]
    fn pixel_shuffle_matches_torch_order() {
        // [1, 4, 1, 1] with channels 0..4 → [1, 1, 2, 2] row-major 0, 1, 2, 3
        let x = Tensor::arange(0f32, 4.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 4, 1, 1))
            .unwrap();
        let y = pixel_shuffle(&x, 2).unwrap();
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![0.0, 1.0, 2.0, 3.0]
        );
        // two cells: out[0,0,h*2+i,w*2+j] = in[0, i*2+j, h, w]
        let x = Tensor::arange(0f32, 8.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 4, 1, 2))
            .unwrap();
        let y = pixel_shuffle(&x, 2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(y, vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
    }
}
