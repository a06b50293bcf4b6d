//! Convolutional building blocks of taming-transformers style VQ autoencoders.
//!
//! The blocks follow the layout and parameter names used by the Hugging Face ports of Janus
//! (`JanusVQVAE*`), Chameleon (`ChameleonVQVAE*`) and the original taming-transformers code, so a
//! checkpoint's keys map one to one onto the `VarBuilder` paths used here:
//!
//! * [`Normalize`]: `weight`, `bias` (GroupNorm, affine)
//! * [`ResnetBlock`]: `norm1`, `conv1`, `norm2`, `conv2`, and `nin_shortcut` (1×1) or
//!   `conv_shortcut` (3×3) when the channel count changes
//! * [`AttnBlock`]: `norm`, `q`, `k`, `v`, `proj_out`
//! * [`Downsample`] / [`Upsample`]: `conv`
//! * [`MidBlock`]: `block_1`, `attn_1`, `block_2`
//!
//! Normalisation statistics and attention softmax are computed in f32 whatever the weights'
//! dtype; results are cast back to the input dtype.

use candle_core::{bail, DType, Module, Result, Tensor, D};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};

/// Group count and epsilon of the GroupNorm layers of a taming-style autoencoder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormConfig {
    /// GroupNorm groups (the channel count must be a multiple).
    pub groups: usize,
    /// Added to the variance.
    pub eps: f64,
}

impl Default for NormConfig {
    /// 32 groups, eps 1e-6: the value used by taming-transformers and all its descendants.
    fn default() -> Self {
        Self {
            groups: 32,
            eps: 1e-6,
        }
    }
}

/// `x * sigmoid(x)`, the non-linearity used throughout these autoencoders.
pub fn swish(xs: &Tensor) -> Result<Tensor> {
    xs.silu()
}

fn conv(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding,
        stride,
        ..Default::default()
    };
    candle_nn::conv2d(in_channels, out_channels, kernel, cfg, vb)
}

/// Affine GroupNorm over `[B, C, ...]` inputs, statistics computed in f32.
#[derive(Debug, Clone)]
pub struct Normalize {
    weight: Tensor,
    bias: Tensor,
    channels: usize,
    groups: usize,
    eps: f64,
}

impl Normalize {
    /// Loads `weight` and `bias` of shape `[channels]` from `vb`.
    pub fn load(vb: VarBuilder, channels: usize, norm: NormConfig) -> Result<Self> {
        let weight = vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.))?;
        let bias = vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.))?;
        Self::new(weight, bias, norm)
    }

    /// Builds the layer from existing `[C]` weight and bias tensors.
    pub fn new(weight: Tensor, bias: Tensor, norm: NormConfig) -> Result<Self> {
        let channels = weight.elem_count();
        if weight.rank() != 1 || bias.dims() != [channels] {
            bail!(
                "GroupNorm weight/bias must both be [C], got {:?} and {:?}",
                weight.dims(),
                bias.dims()
            );
        }
        if norm.groups == 0 || !channels.is_multiple_of(norm.groups) {
            bail!(
                "GroupNorm: channel count {channels} is not divisible by {} groups",
                norm.groups
            );
        }
        Ok(Self {
            weight: weight.to_dtype(DType::F32)?,
            bias: bias.to_dtype(DType::F32)?,
            channels,
            groups: norm.groups,
            eps: norm.eps,
        })
    }

    /// Channels normalised.
    pub fn channels(&self) -> usize {
        self.channels
    }
}

impl Module for Normalize {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let dims = xs.dims().to_vec();
        if dims.len() < 3 {
            bail!("GroupNorm expects a [B, C, ...] input, got shape {dims:?}");
        }
        let (b, c) = (dims[0], dims[1]);
        if c != self.channels {
            bail!(
                "GroupNorm expects {} channels, got {c} (input shape {dims:?})",
                self.channels
            );
        }
        let dtype = xs.dtype();
        let per_group = xs.elem_count() / (b * self.groups);
        let x = xs
            .to_dtype(DType::F32)?
            .reshape((b, self.groups, per_group))?;
        let mean = (x.sum_keepdim(2)? / per_group as f64)?;
        let x = x.broadcast_sub(&mean)?;
        let var = (x.sqr()?.sum_keepdim(2)? / per_group as f64)?;
        let x = x.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        let mut wshape = vec![1usize; dims.len()];
        wshape[1] = c;
        x.reshape(dims)?
            .broadcast_mul(&self.weight.reshape(wshape.clone())?)?
            .broadcast_add(&self.bias.reshape(wshape)?)?
            .to_dtype(dtype)
    }
}

/// How a [`ResnetBlock`] projects its residual when the channel count changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Shortcut {
    /// 1×1 convolution stored as `nin_shortcut` (the default in taming, Janus, Chameleon).
    #[default]
    Nin,
    /// 3×3 convolution stored as `conv_shortcut`.
    Conv,
}

/// Pre-activation residual block: `x + conv2(swish(norm2(conv1(swish(norm1(x))))))`.
#[derive(Debug, Clone)]
pub struct ResnetBlock {
    norm1: Normalize,
    conv1: Conv2d,
    norm2: Normalize,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl ResnetBlock {
    /// Loads a block mapping `in_channels` to `out_channels`; the shortcut projection is only
    /// present (and only loaded) when they differ.
    pub fn load(
        vb: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        norm: NormConfig,
        shortcut: Shortcut,
    ) -> Result<Self> {
        let norm1 = Normalize::load(vb.pp("norm1"), in_channels, norm)?;
        let conv1 = conv(in_channels, out_channels, 3, 1, 1, vb.pp("conv1"))?;
        let norm2 = Normalize::load(vb.pp("norm2"), out_channels, norm)?;
        let conv2 = conv(out_channels, out_channels, 3, 1, 1, vb.pp("conv2"))?;
        let shortcut = if in_channels != out_channels {
            Some(match shortcut {
                Shortcut::Nin => conv(in_channels, out_channels, 1, 1, 0, vb.pp("nin_shortcut"))?,
                Shortcut::Conv => conv(in_channels, out_channels, 3, 1, 1, vb.pp("conv_shortcut"))?,
            })
        } else {
            None
        };
        Ok(Self {
            norm1,
            conv1,
            norm2,
            conv2,
            shortcut,
        })
    }
}

impl Module for ResnetBlock {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let h = swish(&self.norm1.forward(xs)?)?;
        let h = self.conv1.forward(&h)?;
        let h = swish(&self.norm2.forward(&h)?)?;
        let h = self.conv2.forward(&h)?;
        let residual = match &self.shortcut {
            Some(proj) => proj.forward(xs)?,
            None => xs.clone(),
        };
        residual + h
    }
}

/// Single-head spatial self-attention over all `H*W` positions, scaled by `C^-0.5`.
#[derive(Debug, Clone)]
pub struct AttnBlock {
    norm: Normalize,
    q: Conv2d,
    k: Conv2d,
    v: Conv2d,
    proj_out: Conv2d,
}

impl AttnBlock {
    /// Loads `norm`, `q`, `k`, `v` and `proj_out` (1×1 convolutions) of `channels` channels.
    pub fn load(vb: VarBuilder, channels: usize, norm: NormConfig) -> Result<Self> {
        Ok(Self {
            norm: Normalize::load(vb.pp("norm"), channels, norm)?,
            q: conv(channels, channels, 1, 1, 0, vb.pp("q"))?,
            k: conv(channels, channels, 1, 1, 0, vb.pp("k"))?,
            v: conv(channels, channels, 1, 1, 0, vb.pp("v"))?,
            proj_out: conv(channels, channels, 1, 1, 0, vb.pp("proj_out"))?,
        })
    }
}

impl Module for AttnBlock {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = xs.dims4()?;
        let normed = self.norm.forward(xs)?;
        let tokens = |t: Tensor| t.reshape((b, c, h * w))?.transpose(1, 2);
        let q = tokens(self.q.forward(&normed)?)?;
        let k = tokens(self.k.forward(&normed)?)?;
        let v = tokens(self.v.forward(&normed)?)?;
        let out = spatial_attention(&q, &k, &v, 1)?
            .transpose(1, 2)?
            .reshape((b, c, h, w))?;
        xs + self.proj_out.forward(&out)?
    }
}

/// Self-attention over the `H·W` positions of an image, the one mechanism of every VQ codec's
/// attention block: `q`, `k`, `v` are `[B, HW, C]` projections, split into `heads` heads of
/// `C / heads` channels, scores scaled by `(C / heads)^-0.5`; scores and softmax run in f32
/// whatever the weights' dtype. Returns `[B, HW, C]` in the input dtype.
pub fn spatial_attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, n, c) = q.dims3()?;
    if heads == 0 || !c.is_multiple_of(heads) {
        bail!("attention: {c} channels do not split into {heads} heads");
    }
    let hd = c / heads;
    let dtype = q.dtype();
    let split = |t: &Tensor| -> Result<Tensor> {
        t.to_dtype(DType::F32)?
            .reshape((b, n, heads, hd))?
            .transpose(1, 2)?
            .contiguous()
    };
    let (q, k, v) = (split(q)?, split(k)?, split(v)?);
    let att = (q.matmul(&k.t()?.contiguous()?)? * (hd as f64).powf(-0.5))?;
    let att = candle_nn::ops::softmax_last_dim(&att)?;
    att.matmul(&v)?
        .transpose(1, 2)?
        .reshape((b, n, c))?
        .to_dtype(dtype)
}

/// Halves the resolution: zero-pad one row/column at the bottom/right, then a 3×3 stride-2 conv
/// with no padding.
#[derive(Debug, Clone)]
pub struct Downsample {
    conv: Conv2d,
}

impl Downsample {
    /// Loads `conv` (3×3, stride 2) of `channels` channels.
    pub fn load(vb: VarBuilder, channels: usize) -> Result<Self> {
        Ok(Self {
            conv: conv(channels, channels, 3, 2, 0, vb.pp("conv"))?,
        })
    }
}

impl Module for Downsample {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = xs.pad_with_zeros(D::Minus1, 0, 1)?;
        let xs = xs.pad_with_zeros(D::Minus2, 0, 1)?;
        self.conv.forward(&xs)
    }
}

/// Doubles the resolution: nearest-neighbour ×2, then a 3×3 conv with padding 1.
#[derive(Debug, Clone)]
pub struct Upsample {
    conv: Conv2d,
}

impl Upsample {
    /// Loads `conv` (3×3) of `channels` channels.
    pub fn load(vb: VarBuilder, channels: usize) -> Result<Self> {
        Ok(Self {
            conv: conv(channels, channels, 3, 1, 1, vb.pp("conv"))?,
        })
    }
}

impl Module for Upsample {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = xs.dims4()?;
        let xs = xs.upsample_nearest2d(2 * h, 2 * w)?;
        self.conv.forward(&xs)
    }
}

/// A stride-1 2-D convolution with symmetric zero padding (the VQ models' `conv_in`,
/// `conv_out`, `quant_conv`, `post_quant_conv`).
pub fn conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    padding: usize,
    vb: VarBuilder,
) -> Result<Conv2d> {
    conv(in_channels, out_channels, kernel, 1, padding, vb)
}

/// One resolution level of a taming encoder/decoder: `block.{i}`, each followed by `attn.{i}`
/// where the level has attention, then an optional `downsample` / `upsample`.
#[derive(Debug, Clone)]
pub struct Level<S> {
    /// `block.{i}`, in order.
    pub blocks: Vec<ResnetBlock>,
    /// `attn.{i}`, run after `block.{i}` (empty where the level has no attention).
    pub attns: Vec<AttnBlock>,
    /// `downsample` / `upsample` (none at the last level).
    pub resample: Option<S>,
}

impl<S: Module> Module for Level<S> {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut xs = xs.clone();
        for (i, block) in self.blocks.iter().enumerate() {
            xs = block.forward(&xs)?;
            if let Some(attn) = self.attns.get(i) {
                xs = attn.forward(&xs)?;
            }
        }
        match &self.resample {
            Some(r) => r.forward(&xs),
            None => Ok(xs),
        }
    }
}

/// The bottleneck of encoder and decoder: `block_1`, `attn_1` (absent in attention-free
/// codecs such as aMUSEd's VQGAN) and `block_2` at constant width.
#[derive(Debug, Clone)]
pub struct MidBlock {
    block_1: ResnetBlock,
    attn_1: Option<AttnBlock>,
    block_2: ResnetBlock,
}

impl MidBlock {
    /// Loads `block_1`, `attn_1` and `block_2` of `channels` channels.
    pub fn load(vb: VarBuilder, channels: usize, norm: NormConfig) -> Result<Self> {
        Self::load_with(vb, channels, norm, true)
    }

    /// Loads `block_1`, `block_2` and, when `attention`, `attn_1`.
    pub fn load_with(
        vb: VarBuilder,
        channels: usize,
        norm: NormConfig,
        attention: bool,
    ) -> Result<Self> {
        Ok(Self {
            block_1: ResnetBlock::load(vb.pp("block_1"), channels, channels, norm, Shortcut::Nin)?,
            attn_1: if attention {
                Some(AttnBlock::load(vb.pp("attn_1"), channels, norm)?)
            } else {
                None
            },
            block_2: ResnetBlock::load(vb.pp("block_2"), channels, channels, norm, Shortcut::Nin)?,
        })
    }
}

impl Module for MidBlock {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut xs = self.block_1.forward(xs)?;
        if let Some(attn) = &self.attn_1 {
            xs = attn.forward(&xs)?;
        }
        self.block_2.forward(&xs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::VarMap;

    fn keys(vm: &VarMap) -> Vec<String> {
        let data = vm.data().lock().unwrap();
        let mut k: Vec<String> = data.keys().cloned().collect();
        k.sort();
        k
    }

    #[test]
    fn group_norm_matches_reference() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 64., &dev)?.reshape((1, 4, 4, 4))?;
        let norm = Normalize::new(
            Tensor::ones(4, DType::F32, &dev)?,
            Tensor::zeros(4, DType::F32, &dev)?,
            NormConfig { groups: 2, eps: 0. },
        )?;
        let y = norm.forward(&x)?;
        // each group is 32 consecutive values 0..32 (or 32..64): mean 15.5 / 47.5, var (32^2-1)/12
        let std = ((32f64 * 32. - 1.) / 12.).sqrt();
        let v: Vec<f32> = y.flatten_all()?.to_vec1()?;
        assert!((v[0] as f64 - (-15.5 / std)).abs() < 1e-5);
        assert!((v[63] as f64 - (15.5 / std)).abs() < 1e-5);
        let bad = Normalize::new(
            Tensor::ones(48, DType::F32, &dev)?,
            Tensor::zeros(48, DType::F32, &dev)?,
            NormConfig::default(),
        );
        assert!(bad.is_err());
        Ok(())
    }

    #[test]
    fn blocks_shapes_and_keys() -> Result<()> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let norm = NormConfig::default();
        let res = ResnetBlock::load(vb.pp("res"), 32, 64, norm, Shortcut::Nin)?;
        let res_same = ResnetBlock::load(vb.pp("res_same"), 64, 64, norm, Shortcut::Nin)?;
        let res_conv = ResnetBlock::load(vb.pp("res_conv"), 32, 64, norm, Shortcut::Conv)?;
        let attn = AttnBlock::load(vb.pp("attn"), 64, norm)?;
        let down = Downsample::load(vb.pp("down"), 64)?;
        let up = Upsample::load(vb.pp("up"), 64)?;
        let mid = MidBlock::load(vb.pp("mid"), 64, norm)?;

        let x = Tensor::randn(0f32, 1., (2, 32, 8, 8), &dev)?;
        let y = res.forward(&x)?;
        assert_eq!(y.dims(), [2, 64, 8, 8]);
        assert_eq!(res_conv.forward(&x)?.dims(), [2, 64, 8, 8]);
        let y = res_same.forward(&y)?;
        let y = attn.forward(&y)?;
        assert_eq!(y.dims(), [2, 64, 8, 8]);
        assert_eq!(down.forward(&y)?.dims(), [2, 64, 4, 4]);
        assert_eq!(up.forward(&y)?.dims(), [2, 64, 16, 16]);
        assert_eq!(mid.forward(&y)?.dims(), [2, 64, 8, 8]);
        // odd sizes: (7 + 1 - 3) / 2 + 1 = 3
        let odd = Tensor::randn(0f32, 1., (1, 64, 7, 7), &dev)?;
        assert_eq!(down.forward(&odd)?.dims(), [1, 64, 3, 3]);

        let k = keys(&vm);
        for name in [
            "res.norm1.weight",
            "res.norm1.bias",
            "res.conv1.weight",
            "res.conv1.bias",
            "res.norm2.weight",
            "res.conv2.weight",
            "res.nin_shortcut.weight",
            "res_conv.conv_shortcut.weight",
            "attn.norm.weight",
            "attn.q.weight",
            "attn.k.bias",
            "attn.v.weight",
            "attn.proj_out.weight",
            "down.conv.weight",
            "up.conv.bias",
            "mid.block_1.conv1.weight",
            "mid.attn_1.q.weight",
            "mid.block_2.norm2.bias",
        ] {
            assert!(k.contains(&name.to_string()), "missing {name}");
        }
        assert!(!k.iter().any(|n| n.starts_with("res_same.nin_shortcut")));
        assert!(!k.iter().any(|n| n.starts_with("res.conv_shortcut")));
        Ok(())
    }

    #[test]
    fn half_precision_matches_f32() -> Result<()> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let attn = AttnBlock::load(vb.pp("attn"), 32, NormConfig::default())?;
        let x = Tensor::randn(0f32, 1., (1, 32, 4, 4), &dev)?;
        let want = attn.forward(&x)?;
        let tensors = vm
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        let vb16 = VarBuilder::from_tensors(tensors, DType::F16, &dev);
        let attn16 = AttnBlock::load(vb16.pp("attn"), 32, NormConfig::default())?;
        let got = attn16.forward(&x.to_dtype(DType::F16)?)?;
        assert_eq!(got.dtype(), DType::F16);
        let diff = (got.to_dtype(DType::F32)? - want)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 0.02, "f16 attention drifted by {diff}");
        Ok(())
    }
}

/// How a decoder numbers its `up.i` levels in the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpOrder {
    /// taming / original checkpoints: `up.L` is resolution level `L`, 0 = full resolution.
    ByLevel,
    /// HF Janus: `up.0` is the lowest resolution (levels appended in run order).
    RunOrder,
}

/// The shape of a taming encoder/decoder pair (the `ddconfig` of a VQGAN).
#[derive(Debug, Clone, PartialEq)]
pub struct TamingConfig {
    /// Channels of the encoder's input image (3).
    pub in_channels: usize,
    /// Channels of the decoder's output image (3).
    pub out_channels: usize,
    /// `ch`: channels of the first level.
    pub base_channels: usize,
    /// `ch_mult`: level `L` has `base_channels · channel_multiplier[L]` channels.
    pub channel_multiplier: Vec<usize>,
    /// Residual blocks per encoder level (the decoder has one more).
    pub num_res_blocks: usize,
    /// `z_channels`; the encoder writes twice as many with `double_latent`.
    pub latent_channels: usize,
    /// Whether the encoder writes `2 · latent_channels` channels (mean and log-variance).
    pub double_latent: bool,
    /// Whether resolution level `L` (0 = full resolution) has attention blocks.
    pub attn_levels: Vec<bool>,
    /// Whether the mid blocks have their attention block `attn_1` (false: aMUSEd's VQGAN,
    /// `no_attn_mid_block`).
    pub mid_attention: bool,
    /// How the decoder's `up.i` levels are numbered in the weights.
    pub up_order: UpOrder,
    /// The GroupNorm settings of every block.
    pub norm: NormConfig,
}

impl TamingConfig {
    fn levels(&self) -> Result<usize> {
        let n = self.channel_multiplier.len();
        if n == 0 || self.attn_levels.len() != n {
            bail!(
                "taming config: {n} channel multipliers and {} attention flags",
                self.attn_levels.len()
            );
        }
        Ok(n)
    }
}

/// The taming encoder: `conv_in`, `down.L` (blocks, attention, downsample), `mid`, `norm_out`,
/// swish, `conv_out`.
#[derive(Debug, Clone)]
pub struct Encoder {
    conv_in: Conv2d,
    down: Vec<Level<Downsample>>,
    mid: MidBlock,
    norm_out: Normalize,
    conv_out: Conv2d,
}

impl Encoder {
    /// `vb` at the encoder's prefix (`…encoder`).
    pub fn load(vb: VarBuilder, cfg: &TamingConfig) -> Result<Self> {
        let levels = cfg.levels()?;
        let norm = cfg.norm;
        let base = cfg.base_channels;
        let conv_in = conv2d(cfg.in_channels, base, 3, 1, vb.pp("conv_in"))?;
        let mut block_in = base;
        let mut down = Vec::with_capacity(levels);
        for (level, &mult) in cfg.channel_multiplier.iter().enumerate() {
            let vbl = vb.pp("down").pp(level);
            let block_out = base * mult;
            let mut blocks = Vec::with_capacity(cfg.num_res_blocks);
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
                if cfg.attn_levels[level] {
                    attns.push(AttnBlock::load(vbl.pp("attn").pp(i), block_in, norm)?);
                }
            }
            let resample = if level + 1 == levels {
                None
            } else {
                Some(Downsample::load(vbl.pp("downsample"), block_in)?)
            };
            down.push(Level {
                blocks,
                attns,
                resample,
            });
        }
        let mid = MidBlock::load_with(vb.pp("mid"), block_in, norm, cfg.mid_attention)?;
        let norm_out = Normalize::load(vb.pp("norm_out"), block_in, norm)?;
        let out = cfg.latent_channels * if cfg.double_latent { 2 } else { 1 };
        let conv_out = conv2d(block_in, out, 3, 1, vb.pp("conv_out"))?;
        Ok(Self {
            conv_in,
            down,
            mid,
            norm_out,
            conv_out,
        })
    }
}

impl Module for Encoder {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut xs = self.conv_in.forward(xs)?;
        for level in &self.down {
            xs = level.forward(&xs)?;
        }
        let xs = self.mid.forward(&xs)?;
        let xs = swish(&self.norm_out.forward(&xs)?)?;
        self.conv_out.forward(&xs)
    }
}

/// The taming decoder: `conv_in`, `mid`, the `up` levels from the lowest resolution to the
/// full one (blocks, attention, upsample), `norm_out`, swish, `conv_out`.
#[derive(Debug, Clone)]
pub struct Decoder {
    conv_in: Conv2d,
    mid: MidBlock,
    /// Run order: lowest resolution first.
    up: Vec<Level<Upsample>>,
    norm_out: Normalize,
    conv_out: Conv2d,
}

impl Decoder {
    /// `vb` at the decoder's prefix (`…decoder`).
    pub fn load(vb: VarBuilder, cfg: &TamingConfig) -> Result<Self> {
        let levels = cfg.levels()?;
        let norm = cfg.norm;
        let base = cfg.base_channels;
        let mut block_in = base * cfg.channel_multiplier[levels - 1];
        let conv_in = conv2d(cfg.latent_channels, block_in, 3, 1, vb.pp("conv_in"))?;
        let mid = MidBlock::load_with(vb.pp("mid"), block_in, norm, cfg.mid_attention)?;
        let mut up = Vec::with_capacity(levels);
        for (run, level) in (0..levels).rev().enumerate() {
            let index = match cfg.up_order {
                UpOrder::ByLevel => level,
                UpOrder::RunOrder => run,
            };
            let vbl = vb.pp("up").pp(index);
            let block_out = base * cfg.channel_multiplier[level];
            let mut blocks = Vec::with_capacity(cfg.num_res_blocks + 1);
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
                if cfg.attn_levels[level] {
                    attns.push(AttnBlock::load(vbl.pp("attn").pp(i), block_in, norm)?);
                }
            }
            let resample = if level == 0 {
                None
            } else {
                Some(Upsample::load(vbl.pp("upsample"), block_in)?)
            };
            up.push(Level {
                blocks,
                attns,
                resample,
            });
        }
        let norm_out = Normalize::load(vb.pp("norm_out"), block_in, norm)?;
        let conv_out = conv2d(block_in, cfg.out_channels, 3, 1, vb.pp("conv_out"))?;
        Ok(Self {
            conv_in,
            mid,
            up,
            norm_out,
            conv_out,
        })
    }
}

impl Module for Decoder {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = self.conv_in.forward(xs)?;
        let mut xs = self.mid.forward(&xs)?;
        for level in &self.up {
            xs = level.forward(&xs)?;
        }
        let xs = swish(&self.norm_out.forward(&xs)?)?;
        self.conv_out.forward(&xs)
    }
}

/// Nearest codebook rows by squared Euclidean distance (`|z|² + |e|² − 2 z·e`, f32, no
/// normalisation): latents `[B, D, h, w]` and a codebook `[N, D]` → codes `[B, h·w]` u32,
/// row-major.
pub fn nearest_codes(z: &Tensor, codebook: &Tensor) -> Result<Tensor> {
    let (b, d, h, w) = z.dims4()?;
    let z = z
        .to_dtype(DType::F32)?
        .permute((0, 2, 3, 1))?
        .reshape((b * h * w, d))?;
    let e = codebook.to_dtype(DType::F32)?;
    let z2 = z.sqr()?.sum_keepdim(1)?;
    let e2 = e.sqr()?.sum(1)?.unsqueeze(0)?;
    let ze = z.matmul(&e.t()?)?;
    let dist = z2.broadcast_add(&e2)?.broadcast_sub(&(ze * 2.0)?)?;
    dist.argmin(1)?.to_dtype(DType::U32)?.reshape((b, h * w))
}
