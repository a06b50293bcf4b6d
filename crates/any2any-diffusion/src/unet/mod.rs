//! diffusers' `UNet2DConditionModel` from a `unet/` component directory (`config.json` +
//! `diffusion_pytorch_model.safetensors`), conditioned on encoder hidden states, with the SDXL
//! `text_time` add-embedding (pooled text embedding + six time ids, Emu2-Gen) and the
//! `projection` class embedding (SD-2.1-unCLIP's image embedding).
//!
//! A config that does not match its weights is refused at load: a tensor of another shape is an
//! [`Error::ShapeMismatch`] naming it, a missing one an
//! [`Error::MissingTensor`], and tensors the config leaves
//! unused (more layers or blocks in the file than in the config) an
//! [`Error::WeightFile`] listing them.

mod blocks;
pub mod config;
mod denoiser;
mod strict;

pub use config::{BlockPlan, PerBlock, SampleSize, UNetConfig, UNetPlan};
pub use denoiser::{sample, UNetDenoiser};

use any2any_core::candle_core::{DType, Device, Module, Tensor};
use any2any_core::candle_nn::{self as nn, VarBuilder};
use any2any_core::loading::Component;
use any2any_core::{Error, Result};
use blocks::{Common, DownBlock, MidBlock, UpBlock};
use candle_transformers::models::stable_diffusion::embeddings::{TimestepEmbedding, Timesteps};
use std::path::Path;

/// SDXL micro-conditioning (`added_cond_kwargs`): the pooled text embedding and the time ids.
#[derive(Debug, Clone)]
pub struct TextTime {
    /// `text_embeds`, `[B, P]` (SDXL: the pooled CLIP-G output; Emu2: the mean of the 64
    /// regressed embeddings).
    pub text_embeds: Tensor,
    /// `time_ids`, `[B, K]` (SDXL and Emu2: K = 6, `[orig_h, orig_w, crop_top, crop_left,
    /// target_h, target_w]`).
    pub time_ids: Tensor,
}

impl TextTime {
    /// SDXL's `_get_add_time_ids`: `[orig_h, orig_w, crop_top, crop_left, h, w]` for every one of
    /// `text_embeds`' rows (Emu2: `orig = target = (1024, 1024)`, crop `(0, 0)`).
    pub fn sdxl(
        text_embeds: Tensor,
        original: (usize, usize),
        crop: (usize, usize),
        target: (usize, usize),
    ) -> Result<Self> {
        let b = text_embeds.dim(0)?;
        let ids = [original.0, original.1, crop.0, crop.1, target.0, target.1].map(|v| v as f32);
        let time_ids = Tensor::new(&ids, text_embeds.device())?
            .unsqueeze(0)?
            .repeat((b, 1))?;
        Ok(Self {
            text_embeds,
            time_ids,
        })
    }
}

/// What the UNet is conditioned on, one row per latent row (guidance streams stacked).
#[derive(Debug, Clone)]
pub struct UNetCondition {
    /// `encoder_hidden_states`, `[B, S, cross_attention_dim]`.
    pub encoder_hidden_states: Tensor,
    /// `added_cond_kwargs` for `addition_embed_type: text_time`.
    pub text_time: Option<TextTime>,
    /// `class_labels` for `class_embed_type: projection`, `[B, projection_class_embeddings_input_dim]`.
    pub class_labels: Option<Tensor>,
}

impl UNetCondition {
    /// Conditioning on encoder hidden states only (SD-1.5).
    pub fn new(encoder_hidden_states: Tensor) -> Self {
        Self {
            encoder_hidden_states,
            text_time: None,
            class_labels: None,
        }
    }
    /// With SDXL's add-conditioning.
    pub fn with_text_time(mut self, t: TextTime) -> Self {
        self.text_time = Some(t);
        self
    }
    /// With unCLIP's class labels.
    pub fn with_class_labels(mut self, c: Tensor) -> Self {
        self.class_labels = Some(c);
        self
    }
}

/// `add_time_proj` + `add_embedding` of `text_time`.
#[derive(Debug)]
struct AddEmbedding {
    proj: Timesteps,
    embedding: TimestepEmbedding,
    /// (`addition_time_embed_dim`, `projection_class_embeddings_input_dim`)
    dims: (usize, usize),
}

/// `time_proj` + `time_embedding`, and the class and `text_time` embeddings added to it.
#[derive(Debug)]
struct TimeEmbedding {
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    /// `class_embedding` and its input width.
    class_embedding: Option<(TimestepEmbedding, usize)>,
    add: Option<AddEmbedding>,
}

impl TimeEmbedding {
    fn load(config: &UNetConfig, temb: usize, vb: &VarBuilder) -> Result<Self> {
        let ch0 = config.block_out_channels.first().copied().unwrap_or(0);
        let (flip, shift) = (config.flip_sin_to_cos, config.freq_shift);
        let proj_dim = config.projection_class_embeddings_input_dim.unwrap_or(0);
        let class_embedding = match config.class_embed_type {
            Some(_) => Some((
                TimestepEmbedding::new(vb.pp("class_embedding"), proj_dim, temb)?,
                proj_dim,
            )),
            None => None,
        };
        let add = match (config.text_time(), config.addition_time_embed_dim) {
            (true, Some(d)) => Some(AddEmbedding {
                proj: Timesteps::new(d, flip, shift),
                embedding: TimestepEmbedding::new(vb.pp("add_embedding"), proj_dim, temb)?,
                dims: (d, proj_dim),
            }),
            _ => None,
        };
        Ok(Self {
            time_proj: Timesteps::new(ch0, flip, shift),
            time_embedding: TimestepEmbedding::new(vb.pp("time_embedding"), ch0, temb)?,
            class_embedding,
            add,
        })
    }

    /// `emb = time_embedding(time_proj(t)) (+ class_embedding(class_labels)) (+ aug_emb)`.
    fn forward(
        &self,
        b: usize,
        t: f64,
        cond: &UNetCondition,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        let ts = Tensor::from_vec(vec![t as f32; b], b, dev)?;
        let t_emb = self.time_proj.forward(&ts)?.to_dtype(dtype)?;
        let mut emb = self.time_embedding.forward(&t_emb)?;
        if let Some((ce, dim)) = &self.class_embedding {
            let labels = cond.class_labels.as_ref().ok_or_else(|| {
                Error::invalid(
                    "class_labels",
                    "the UNet has a projection class embedding: class labels are required",
                )
            })?;
            check_rows("class_labels", labels, b, *dim)?;
            emb = (emb + ce.forward(&labels.to_dtype(dtype)?)?)?;
        }
        if let Some(add) = &self.add {
            emb = (emb + self.aug(add, b, cond, dtype)?)?;
        }
        Ok(emb)
    }

    /// `add_embedding(cat(text_embeds, add_time_proj(time_ids).reshape(B, −1)))`.
    fn aug(
        &self,
        add: &AddEmbedding,
        b: usize,
        cond: &UNetCondition,
        dtype: DType,
    ) -> Result<Tensor> {
        let tt = cond.text_time.as_ref().ok_or_else(|| {
            Error::invalid(
                "text_time",
                "the UNet has addition_embed_type text_time: text_embeds and time_ids are required",
            )
        })?;
        let (d, total) = add.dims;
        let k = match tt.time_ids.dims() {
            [_, k] => *k,
            other => {
                return Err(Error::invalid(
                    "time_ids",
                    format!("shape {other:?}, expected [{b}, K]"),
                ))
            }
        };
        let p = total.saturating_sub(k * d);
        check_rows("text_embeds", &tt.text_embeds, b, p)?;
        check_rows("time_ids", &tt.time_ids, b, k)?;
        let ids = tt.time_ids.to_dtype(DType::F32)?.flatten_all()?;
        let time = add
            .proj
            .forward(&ids)?
            .reshape((b, k * d))?
            .to_dtype(dtype)?;
        let x = Tensor::cat(&[&tt.text_embeds.to_dtype(dtype)?, &time], 1)?;
        Ok(add.embedding.forward(&x)?)
    }
}

/// diffusers' `UNet2DConditionModel`.
#[derive(Debug)]
pub struct UNet2DConditionModel {
    config: UNetConfig,
    plan: UNetPlan,
    conv_in: nn::Conv2d,
    time: TimeEmbedding,
    down: Vec<DownBlock>,
    mid: Option<MidBlock>,
    up: Vec<UpBlock>,
    norm_out: nn::GroupNorm,
    conv_out: nn::Conv2d,
    dtype: DType,
}

impl UNet2DConditionModel {
    /// Loads a `unet/` component (its config and weights), in the component's dtype if it has
    /// one, else `dtype`.
    pub fn load(c: &Component, dtype: DType, device: &Device) -> Result<Self> {
        let config = UNetConfig::load(c.require_config()?)?;
        let (vb, used) = strict::var_builder(c, dtype, device)?;
        let model = Self::new(config, vb)?;
        used.check_all_used("unet", &c.weights)?;
        Ok(model)
    }

    /// Loads the `unet/` folder `dir` ([`Component::from_dir`]).
    pub fn from_dir(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        Self::load(&Component::from_dir("unet", dir)?, dtype, device)
    }

    /// Builds the model of `config` from `vb` (diffusers' key names under it).
    pub fn new(config: UNetConfig, vb: VarBuilder) -> Result<Self> {
        let plan = config
            .plan()
            .map_err(|m| Error::invalid("unet config", m))?;
        let ch0 = config.block_out_channels[0];
        let temb = plan.time_embed_dim;
        let c = Common {
            temb,
            groups: plan.groups,
            eps: config.norm_eps,
            linear_projection: config.use_linear_projection,
            downsample_padding: config.downsample_padding,
        };
        let conv = |cin, cout, k: usize, vb| {
            let cfg = nn::Conv2dConfig {
                padding: (k - 1) / 2,
                ..Default::default()
            };
            nn::conv2d(cin, cout, k, cfg, vb)
        };
        let time = TimeEmbedding::load(&config, temb, &vb)?;
        let down = (plan.down.iter().enumerate())
            .map(|(i, p)| DownBlock::load(&c, p, vb.pp(format!("down_blocks.{i}"))))
            .collect::<Result<_>>()?;
        let last = *config.block_out_channels.last().unwrap_or(&ch0);
        let mid = match plan.mid {
            Some(m) => Some(MidBlock::load(
                &c,
                last,
                m,
                config.mid_block_scale_factor,
                vb.pp("mid_block"),
            )?),
            None => None,
        };
        let up = (plan.up.iter().enumerate())
            .map(|(i, p)| UpBlock::load(&c, p, vb.pp(format!("up_blocks.{i}"))))
            .collect::<Result<_>>()?;
        Ok(Self {
            conv_in: conv(
                config.in_channels,
                ch0,
                config.conv_in_kernel,
                vb.pp("conv_in"),
            )?,
            time,
            down,
            mid,
            up,
            norm_out: nn::group_norm(plan.groups, ch0, config.norm_eps, vb.pp("conv_norm_out"))?,
            conv_out: conv(
                ch0,
                config.out_channels,
                config.conv_out_kernel,
                vb.pp("conv_out"),
            )?,
            dtype: vb.dtype(),
            config,
            plan,
        })
    }

    /// Its config.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// The per-block structure it was built with.
    pub fn plan(&self) -> &UNetPlan {
        &self.plan
    }

    /// Its weights' dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Latent height and width must be multiples of this for the plain (no explicit
    /// upsample size) path; other sizes work too, as in diffusers.
    pub fn size_multiple(&self) -> usize {
        1 << self.up.len().saturating_sub(1)
    }

    /// The noise (or v, x₀) prediction for `sample` (`[B, in_channels, H, W]`) at `timestep`,
    /// in `sample`'s dtype.
    pub fn forward(&self, sample: &Tensor, timestep: f64, cond: &UNetCondition) -> Result<Tensor> {
        let (b, _, h, w) = self.check_sample(sample)?;
        let ctx = self.check_context(cond, b)?;
        let emb = self
            .time
            .forward(b, timestep, cond, self.dtype, sample.device())?;
        let x = sample.to_dtype(self.dtype)?;
        let x = if self.config.center_input_sample {
            ((x * 2.0)? - 1.0)?
        } else {
            x
        };
        let x = self.conv_in.forward(&x)?;
        let mut skips = vec![x.clone()];
        let mut x = x;
        for blk in &self.down {
            let (y, states) = blk.forward(&x, &emb, &ctx)?;
            skips.extend(states);
            x = y;
        }
        if let Some(mid) = &self.mid {
            x = mid.forward(&x, &emb, &ctx)?;
        }
        let m = self.size_multiple();
        let explicit = h % m != 0 || w % m != 0;
        for (i, blk) in self.up.iter().enumerate() {
            let at = skips.len().checked_sub(blk.skips()).ok_or_else(|| {
                Error::invalid(
                    "sample",
                    "the down blocks left fewer skip states than the up blocks take",
                )
            })?;
            let mine = skips.split_off(at);
            let size = match (skips.last(), explicit && i + 1 < self.up.len()) {
                (Some(s), true) => Some((s.dim(2)?, s.dim(3)?)),
                _ => None,
            };
            x = blk.forward(&x, &mine, &emb, &ctx, size)?;
        }
        let x = nn::ops::silu(&self.norm_out.forward(&x)?)?;
        Ok(self.conv_out.forward(&x)?.to_dtype(sample.dtype())?)
    }

    fn check_sample(&self, sample: &Tensor) -> Result<(usize, usize, usize, usize)> {
        let dims = sample.dims4().map_err(|_| {
            Error::invalid(
                "sample",
                format!("shape {:?} is not [B, C, H, W]", sample.dims()),
            )
        })?;
        if dims.1 != self.config.in_channels || dims.0 == 0 || dims.2 == 0 || dims.3 == 0 {
            return Err(Error::invalid(
                "sample",
                format!(
                    "shape {:?}: the UNet takes {} channels",
                    sample.dims(),
                    self.config.in_channels
                ),
            ));
        }
        Ok(dims)
    }

    fn check_context(&self, cond: &UNetCondition, b: usize) -> Result<Tensor> {
        let ctx = &cond.encoder_hidden_states;
        let p = &self.plan;
        let attn = p.down.iter().chain(&p.up).filter(|b| b.depth.is_some());
        let want = attn.map(|b| b.cross_dim).chain(p.mid.map(|m| m.2));
        let widths: Vec<usize> = want.collect();
        let ok =
            matches!(ctx.dims(), [cb, s, d] if *cb == b && *s > 0 && widths.iter().all(|w| w == d));
        if !ok {
            return Err(Error::invalid(
                "encoder_hidden_states",
                format!(
                    "shape {:?} for {b} latent rows; the UNet takes [{b}, S, {}]",
                    ctx.dims(),
                    widths.first().copied().unwrap_or(0)
                ),
            ));
        }
        Ok(ctx.to_dtype(self.dtype)?)
    }
}

/// `t` must be `[b, d]`.
fn check_rows(name: &str, t: &Tensor, b: usize, d: usize) -> Result<()> {
    if t.dims() != [b, d] {
        return Err(Error::invalid(
            name,
            format!("shape {:?}, expected [{b}, {d}]", t.dims()),
        ));
    }
    Ok(())
}
