//! `unet/config.json` of a diffusers `UNet2DConditionModel`, field for field with diffusers
//! 0.31's defaults, and the per-block plan it implies.

use any2any_core::{Error, Result};
use serde::Deserialize;
use std::path::Path;

/// A value given once for every block or once per block (`attention_head_dim: 8` or `[5, 10, 20]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PerBlock<T> {
    /// The same for every block.
    One(T),
    /// One per block, in down-block order.
    Each(Vec<T>),
}

impl<T: Clone> PerBlock<T> {
    /// `n` values, or a message naming `field` when a list has another length.
    pub fn expand(&self, n: usize, field: &str) -> std::result::Result<Vec<T>, String> {
        match self {
            Self::One(v) => Ok(vec![v.clone(); n]),
            Self::Each(v) if v.len() == n => Ok(v.clone()),
            Self::Each(v) => Err(format!(
                "{field} has {} values for {n} down blocks",
                v.len()
            )),
        }
    }
}

/// `sample_size`: one side, or `[height, width]`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum SampleSize {
    /// Square.
    Square(usize),
    /// `[height, width]`.
    Rect([usize; 2]),
}

macro_rules! defaults {
    ($($name:ident: $t:ty = $v:expr;)*) => { $(fn $name() -> $t { $v })* };
}
defaults! {
    four: usize = 4;
    yes: bool = true;
    one_usize: usize = 1;
    one_f64: f64 = 1.0;
    three: usize = 3;
    silu: String = "silu".into();
    default_str: String = "default".into();
    positional: String = "positional".into();
    groups: Option<usize> = Some(32);
    eps: f64 = 1e-5;
    down_types: Vec<String> = [["CrossAttnDownBlock2D"; 3].as_slice(), &["DownBlock2D"]].concat().iter().map(|s| s.to_string()).collect();
    up_types: Vec<String> = [["UpBlock2D"].as_slice(), &["CrossAttnUpBlock2D"; 3]].concat().iter().map(|s| s.to_string()).collect();
    mid_type: Option<String> = Some("UNetMidBlock2DCrossAttn".into());
    block_out: Vec<usize> = vec![320, 640, 1280, 1280];
    layers: PerBlock<usize> = PerBlock::One(2);
    cross_dim: PerBlock<usize> = PerBlock::One(1280);
    heads: PerBlock<usize> = PerBlock::One(8);
    depth: PerBlock<usize> = PerBlock::One(1);
    only_cross: PerBlock<bool> = PerBlock::One(false);
}

/// `UNet2DConditionModel`'s `config.json`. Fields the model cannot run with other values are
/// kept so that [`UNetConfig::plan`] can refuse them by name.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[allow(missing_docs)] // the fields are diffusers' own, documented there
pub struct UNetConfig {
    #[serde(default)]
    pub sample_size: Option<SampleSize>,
    #[serde(default = "four")]
    pub in_channels: usize,
    #[serde(default = "four")]
    pub out_channels: usize,
    #[serde(default, deserialize_with = "nullable")]
    pub center_input_sample: bool,
    #[serde(default = "yes")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    #[serde(default = "down_types")]
    pub down_block_types: Vec<String>,
    #[serde(default = "mid_type")]
    pub mid_block_type: Option<String>,
    #[serde(default = "up_types")]
    pub up_block_types: Vec<String>,
    #[serde(default = "only_cross")]
    pub only_cross_attention: PerBlock<bool>,
    #[serde(default = "block_out")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "layers")]
    pub layers_per_block: PerBlock<usize>,
    #[serde(default = "one_usize")]
    pub downsample_padding: usize,
    #[serde(default = "one_f64")]
    pub mid_block_scale_factor: f64,
    #[serde(default = "silu")]
    pub act_fn: String,
    #[serde(default = "groups")]
    pub norm_num_groups: Option<usize>,
    #[serde(default = "eps")]
    pub norm_eps: f64,
    #[serde(default = "cross_dim")]
    pub cross_attention_dim: PerBlock<usize>,
    #[serde(default = "depth")]
    pub transformer_layers_per_block: PerBlock<usize>,
    #[serde(default)]
    pub reverse_transformer_layers_per_block: Option<Vec<usize>>,
    #[serde(default)]
    pub encoder_hid_dim: Option<usize>,
    #[serde(default)]
    pub encoder_hid_dim_type: Option<String>,
    /// The number of attention heads per block (diffusers' historical misnomer).
    #[serde(default = "heads")]
    pub attention_head_dim: PerBlock<usize>,
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock<usize>>,
    #[serde(default, deserialize_with = "nullable")]
    pub dual_cross_attention: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub use_linear_projection: bool,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    #[serde(default)]
    pub addition_time_embed_dim: Option<usize>,
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
    /// Attention runs in f32 here whatever the dtype, which is what this asks for.
    #[serde(default, deserialize_with = "nullable")]
    pub upcast_attention: bool,
    #[serde(default = "default_str")]
    pub resnet_time_scale_shift: String,
    #[serde(default, deserialize_with = "nullable")]
    pub resnet_skip_time_act: bool,
    #[serde(default = "one_f64")]
    pub resnet_out_scale_factor: f64,
    #[serde(default = "positional")]
    pub time_embedding_type: String,
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    #[serde(default)]
    pub time_embedding_act_fn: Option<String>,
    #[serde(default)]
    pub timestep_post_act: Option<String>,
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
    #[serde(default = "three")]
    pub conv_in_kernel: usize,
    #[serde(default = "three")]
    pub conv_out_kernel: usize,
    #[serde(default)]
    pub projection_class_embeddings_input_dim: Option<usize>,
    #[serde(default = "default_str")]
    pub attention_type: String,
    #[serde(default, deserialize_with = "nullable")]
    pub class_embeddings_concat: bool,
    #[serde(default)]
    pub mid_block_only_cross_attention: Option<bool>,
    #[serde(default)]
    pub cross_attention_norm: Option<String>,
}

/// One down or up block as the model builds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockPlan {
    /// Input channels (down: the previous block's output; up: the skip of the matching level).
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Up blocks: the previous up block's output channels.
    pub prev_channels: usize,
    /// Resnets in the block.
    pub layers: usize,
    /// Transformer depth of each attention, `None` for a block without attention.
    pub depth: Option<usize>,
    /// Attention heads.
    pub heads: usize,
    /// Cross-attention context width.
    pub cross_dim: usize,
    /// Whether the block ends in a down/up sampler.
    pub resample: bool,
}

/// The model's structure resolved from its config.
#[derive(Debug, Clone, PartialEq)]
pub struct UNetPlan {
    /// Down blocks, input to bottleneck.
    pub down: Vec<BlockPlan>,
    /// Mid block: transformer depth, heads, context width (`None`: no mid block).
    pub mid: Option<(usize, usize, usize)>,
    /// Up blocks, bottleneck to output.
    pub up: Vec<BlockPlan>,
    /// Width of the time embedding.
    pub time_embed_dim: usize,
    /// Group-norm groups.
    pub groups: usize,
}

/// Limits on what a config may ask for (they bound the model built from it).
const MAX_BLOCKS: usize = 8;
const MAX_LAYERS: usize = 64;
const MAX_CHANNELS: usize = 1 << 16;

impl UNetConfig {
    /// Reads `path` and checks it ([`UNetConfig::plan`]); errors name the file and field.
    pub fn load(path: &Path) -> Result<Self> {
        let cfg: Self = any2any_core::loading::read_json(path)?;
        cfg.plan().map_err(|msg| Error::Config {
            path: path.to_path_buf(),
            msg,
        })?;
        Ok(cfg)
    }

    /// The latent size the model was trained at (`sample_size`), as (height, width).
    pub fn sample_hw(&self) -> Option<(usize, usize)> {
        self.sample_size.map(|s| match s {
            SampleSize::Square(n) => (n, n),
            SampleSize::Rect([h, w]) => (h, w),
        })
    }

    /// Whether the model takes the SDXL `text_time` add-conditioning.
    pub fn text_time(&self) -> bool {
        self.addition_embed_type.as_deref() == Some("text_time")
    }

    /// The structure, or a message naming the field that cannot be built.
    pub fn plan(&self) -> std::result::Result<UNetPlan, String> {
        self.check_unsupported()?;
        let n = self.block_out_channels.len();
        if n == 0 || n > MAX_BLOCKS {
            return Err(format!(
                "block_out_channels has {n} values (1..={MAX_BLOCKS})"
            ));
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(format!(
                "{} down_block_types and {} up_block_types for {n} block_out_channels",
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        let groups = self
            .norm_num_groups
            .ok_or("norm_num_groups: null is not supported")?;
        if groups == 0 {
            return Err("norm_num_groups 0".into());
        }
        let odd = |d: usize| !d.is_multiple_of(2);
        if odd(self.block_out_channels[0]) || self.addition_time_embed_dim.is_some_and(odd) {
            return Err(
                "block_out_channels[0] and addition_time_embed_dim must be even (sinusoidal embeddings)"
                    .into(),
            );
        }
        if self.downsample_padding > 1 {
            return Err(format!(
                "downsample_padding {} (0 or 1)",
                self.downsample_padding
            ));
        }
        let layers = self.layers_per_block.expand(n, "layers_per_block")?;
        let depth = self
            .transformer_layers_per_block
            .expand(n, "transformer_layers_per_block")?;
        let heads = self.attention_head_dim.expand(n, "attention_head_dim")?;
        let cross = self.cross_attention_dim.expand(n, "cross_attention_dim")?;
        let rev_depth: Vec<usize> = match &self.reverse_transformer_layers_per_block {
            Some(r) if r.len() != n => {
                return Err(format!(
                    "reverse_transformer_layers_per_block has {} values",
                    r.len()
                ))
            }
            Some(r) => r.clone(),
            None => depth.iter().rev().copied().collect(),
        };
        let ch = &self.block_out_channels;
        check_blocks(ch, groups, &layers, &heads, &depth, &rev_depth)?;
        let down = (0..n)
            .map(|i| {
                let attn = cross_attn(&self.down_block_types[i], "Down", "down_block_types")?;
                Ok(BlockPlan {
                    in_channels: if i == 0 { ch[0] } else { ch[i - 1] },
                    out_channels: ch[i],
                    prev_channels: 0,
                    layers: layers[i],
                    depth: attn.then_some(depth[i]),
                    heads: heads[i],
                    cross_dim: cross[i],
                    resample: i + 1 < n,
                })
            })
            .collect::<std::result::Result<Vec<_>, String>>()?;
        let up = self.up_plan(ch, &layers, &rev_depth, &heads, &cross)?;
        let mid = match self.mid_block_type.as_deref() {
            None => None,
            Some("UNetMidBlock2DCrossAttn") => Some((depth[n - 1], heads[n - 1], cross[n - 1])),
            Some(other) => return Err(format!("mid_block_type `{other}` is not supported")),
        };
        Ok(UNetPlan {
            down,
            mid,
            up,
            time_embed_dim: self.time_embedding_dim.unwrap_or(ch[0] * 4),
            groups,
        })
    }

    /// The up blocks: diffusers' reversed per-block lists.
    fn up_plan(
        &self,
        ch: &[usize],
        layers: &[usize],
        rev_depth: &[usize],
        heads: &[usize],
        cross: &[usize],
    ) -> std::result::Result<Vec<BlockPlan>, String> {
        let n = ch.len();
        let r = |v: &[usize], i: usize| v[n - 1 - i];
        (0..n)
            .map(|i| {
                let attn = cross_attn(&self.up_block_types[i], "Up", "up_block_types")?;
                Ok(BlockPlan {
                    in_channels: r(ch, (i + 1).min(n - 1)),
                    out_channels: r(ch, i),
                    prev_channels: if i == 0 { ch[n - 1] } else { r(ch, i - 1) },
                    layers: r(layers, i) + 1,
                    depth: attn.then_some(rev_depth[i]),
                    heads: r(heads, i),
                    cross_dim: r(cross, i),
                    resample: i + 1 < n,
                })
            })
            .collect()
    }

    /// Options diffusers offers that this model does not implement.
    fn check_unsupported(&self) -> std::result::Result<(), String> {
        let bad_str = [
            ("act_fn", Some(self.act_fn.as_str()), Some("silu")),
            (
                "resnet_time_scale_shift",
                Some(&self.resnet_time_scale_shift),
                Some("default"),
            ),
            (
                "time_embedding_type",
                Some(&self.time_embedding_type),
                Some("positional"),
            ),
            (
                "attention_type",
                Some(&self.attention_type),
                Some("default"),
            ),
            (
                "time_embedding_act_fn",
                self.time_embedding_act_fn.as_deref(),
                None,
            ),
            ("timestep_post_act", self.timestep_post_act.as_deref(), None),
            (
                "encoder_hid_dim_type",
                self.encoder_hid_dim_type.as_deref(),
                None,
            ),
            (
                "cross_attention_norm",
                self.cross_attention_norm.as_deref(),
                None,
            ),
        ];
        for (field, got, want) in bad_str {
            if got != want {
                return Err(format!("{field} {got:?} is not supported (only {want:?})"));
            }
        }
        let flags = [
            ("dual_cross_attention", self.dual_cross_attention),
            ("class_embeddings_concat", self.class_embeddings_concat),
            ("resnet_skip_time_act", self.resnet_skip_time_act),
            (
                "num_attention_heads (diffusers refuses it too)",
                self.num_attention_heads.is_some(),
            ),
            ("time_cond_proj_dim", self.time_cond_proj_dim.is_some()),
            ("encoder_hid_dim", self.encoder_hid_dim.is_some()),
            ("num_class_embeds", self.num_class_embeds.is_some()),
            (
                "mid_block_only_cross_attention",
                self.mid_block_only_cross_attention == Some(true),
            ),
            (
                "only_cross_attention",
                self.only_cross_attention
                    .expand(self.block_out_channels.len(), "")
                    .map_or(true, |v| v.contains(&true)),
            ),
        ];
        if let Some((field, _)) = flags.iter().find(|f| f.1) {
            return Err(format!("{field} is set, which is not supported"));
        }
        if self.conv_in_kernel.is_multiple_of(2) || self.conv_out_kernel.is_multiple_of(2) {
            return Err("conv_in_kernel and conv_out_kernel must be odd".into());
        }
        if self.resnet_out_scale_factor != 1.0 {
            return Err("resnet_out_scale_factor other than 1 is not supported".into());
        }
        self.check_embeddings()
    }

    /// `class_embed_type` (`projection` only) and `addition_embed_type` (`text_time` only).
    fn check_embeddings(&self) -> std::result::Result<(), String> {
        let proj = self.projection_class_embeddings_input_dim;
        match self.class_embed_type.as_deref() {
            None => {}
            Some("projection") if proj.is_some() => {}
            Some(other) => {
                return Err(format!(
                    "class_embed_type `{other}` is not supported (only `projection`, with projection_class_embeddings_input_dim)"
                ))
            }
        }
        match self.addition_embed_type.as_deref() {
            None => Ok(()),
            Some("text_time") if proj.is_some() && self.addition_time_embed_dim.is_some() => Ok(()),
            Some(other) => Err(format!(
                "addition_embed_type `{other}` is not supported (only `text_time`, with addition_time_embed_dim and projection_class_embeddings_input_dim)"
            )),
        }
    }
}

/// Whether a block type has cross-attention; `dir` is `Down` or `Up`.
fn cross_attn(kind: &str, dir: &str, field: &str) -> std::result::Result<bool, String> {
    if kind == format!("{dir}Block2D") {
        Ok(false)
    } else if kind == format!("CrossAttn{dir}Block2D") {
        Ok(true)
    } else {
        Err(format!(
            "{field}: `{kind}` is not supported ({dir}Block2D or CrossAttn{dir}Block2D)"
        ))
    }
}

/// Every block's channels divide by its heads and the groups; layer counts within limits.
fn check_blocks(
    ch: &[usize],
    groups: usize,
    layers: &[usize],
    heads: &[usize],
    depth: &[usize],
    rev_depth: &[usize],
) -> std::result::Result<(), String> {
    for (i, &c) in ch.iter().enumerate() {
        let bad = c == 0 || c > MAX_CHANNELS || c % groups != 0 || c % heads[i].max(1) != 0;
        if bad || heads[i] == 0 || layers[i] == 0 || layers[i] > MAX_LAYERS {
            return Err(format!(
                "block {i}: {c} channels, {} layers, {} heads, {groups} groups do not fit (channels must divide by heads and norm_num_groups)",
                layers[i], heads[i]
            ));
        }
        if depth[i].max(rev_depth[i]) > MAX_LAYERS {
            return Err(format!("block {i}: transformer depth over {MAX_LAYERS}"));
        }
    }
    Ok(())
}

/// A config value where JSON `null` means the default (diffusers writes `"upcast_attention":
/// null`, `"use_karras_sigmas": null`, … for `Optional` arguments left unset).
pub(crate) fn nullable<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `stabilityai/stable-diffusion-xl-base-1.0` `unet/config.json` (diffusers 0.19), with
    /// Emu2-Gen's changes (cross_attention_dim 1792, projection 1792 + 6·256 = 3328).
    const EMU2_GEN: &str = r#"{
      "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.19.0.dev0",
      "act_fn": "silu", "addition_embed_type": "text_time", "addition_embed_type_num_heads": 64,
      "addition_time_embed_dim": 256, "attention_head_dim": [5, 10, 20],
      "block_out_channels": [320, 640, 1280], "center_input_sample": false,
      "class_embed_type": null, "class_embeddings_concat": false, "conv_in_kernel": 3,
      "conv_out_kernel": 3, "cross_attention_dim": 1792, "cross_attention_norm": null,
      "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
      "downsample_padding": 1, "dual_cross_attention": false, "encoder_hid_dim": null,
      "encoder_hid_dim_type": null, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4,
      "layers_per_block": 2, "mid_block_only_cross_attention": null, "mid_block_scale_factor": 1,
      "mid_block_type": "UNetMidBlock2DCrossAttn", "norm_eps": 1e-05, "norm_num_groups": 32,
      "num_attention_heads": null, "num_class_embeds": null, "only_cross_attention": false,
      "out_channels": 4, "projection_class_embeddings_input_dim": 3328,
      "resnet_out_scale_factor": 1.0, "resnet_skip_time_act": false,
      "resnet_time_scale_shift": "default", "sample_size": 128, "time_cond_proj_dim": null,
      "time_embedding_act_fn": null, "time_embedding_dim": null,
      "time_embedding_type": "positional", "timestep_post_act": null,
      "transformer_layers_per_block": [1, 2, 10],
      "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
      "upcast_attention": null, "use_linear_projection": true
    }"#;

    /// `runwayml/stable-diffusion-v1-5` `unet/config.json` (diffusers 0.6: no per-block lists,
    /// no add-embedding fields at all).
    const SD15: &str = r#"{
      "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.6.0",
      "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
      "center_input_sample": false, "cross_attention_dim": 768,
      "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
      "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4,
      "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
      "out_channels": 4, "sample_size": 64,
      "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
    }"#;

    #[test]
    fn real_sdxl_and_sd15_configs_plan_as_diffusers_builds_them() {
        let c: UNetConfig = serde_json::from_str(EMU2_GEN).unwrap();
        let p = c.plan().unwrap();
        assert!(c.text_time() && !c.upcast_attention && c.sample_hw() == Some((128, 128)));
        assert_eq!(p.time_embed_dim, 1280);
        let depth = |b: &[BlockPlan]| b.iter().map(|b| b.depth).collect::<Vec<_>>();
        assert_eq!(depth(&p.down), [None, Some(2), Some(10)]);
        assert_eq!(depth(&p.up), [Some(10), Some(2), None]);
        assert_eq!(p.mid, Some((10, 20, 1792)));
        let up = &p.up[0];
        assert_eq!(
            (
                up.in_channels,
                up.prev_channels,
                up.out_channels,
                up.layers,
                up.heads
            ),
            (640, 1280, 1280, 3, 20)
        );
        let up = &p.up[2];
        assert_eq!(
            (
                up.in_channels,
                up.prev_channels,
                up.out_channels,
                up.resample
            ),
            (320, 640, 320, false)
        );

        let c: UNetConfig = serde_json::from_str(SD15).unwrap();
        let p = c.plan().unwrap();
        assert!(!c.text_time() && !c.use_linear_projection);
        assert_eq!(depth(&p.down), [Some(1), Some(1), Some(1), None]);
        assert_eq!(
            p.up.iter().map(|b| b.heads).collect::<Vec<_>>(),
            [8, 8, 8, 8]
        );
        assert_eq!(p.mid, Some((1, 8, 768)));
    }
}
