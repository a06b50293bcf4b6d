//! JanusFlow's `config.json` (`MultiModalityConfig`, `model_type: "multi_modality"`) and
//! `preprocessor_config.json` (`VLMImageProcessor`), mirrored key for key; missing keys take the
//! official classes' defaults.

use any2any_core::backbone::LlamaTextConfig;
use any2any_core::{Error, Result};
use serde::Deserialize;

/// The whole `config.json`.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct JanusFlowConfig {
    /// The LLaMA language model (`language_model.*`).
    pub language_config: LlamaTextConfig,
    /// The SigLIP understanding tower (`vision_und_enc_model.*`).
    pub vision_und_enc_config: SubConfig<UndEncParams>,
    /// The ShallowUViT encoder over latents (`vision_gen_enc_model.*`).
    pub vision_gen_enc_config: SubConfig<GenEncParams>,
    /// The ShallowUViT decoder to velocities (`vision_gen_dec_model.*`).
    pub vision_gen_dec_config: SubConfig<GenDecParams>,
}

/// A `{cls, params}` sub-config.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct SubConfig<P> {
    /// The official class name (`CLIPVisionTower`, `ShallowUViTEncoder`, `ShallowUViTDecoder`).
    #[serde(default)]
    pub cls: String,
    /// Its constructor arguments.
    #[serde(default)]
    pub params: P,
}

/// `CLIPVisionTower` arguments (its SigLIP shape comes from `model_name`, see
/// [`UndEncParams::shape`]).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
#[non_exhaustive]
pub struct UndEncParams {
    /// `siglip_large_patch16_384` (JanusFlow), `siglip_large_patch16_256`,
    /// `siglip_so400m_patch14_384`, `siglip_so400m_patch14_224`.
    pub model_name: String,
    /// Input side in pixels.
    pub image_size: usize,
    /// Which feature to keep; SigLIP towers always keep every patch (`same`).
    pub select_feature: String,
    /// Layers kept: `≤ 0` counts from the end (−1: all), `> 0` is a count.
    pub select_layer: i64,
    /// Extra normalisation inside the tower (`torchvision Normalize`), when given with `pixel_std`.
    pub pixel_mean: Option<[f64; 3]>,
    /// See `pixel_mean`.
    pub pixel_std: Option<[f64; 3]>,
    /// Overrides the `model_name` table (a tower the table lacks, e.g. the tiny test model).
    pub width: Option<usize>,
    /// Overrides the table's layer count (before `select_layer`).
    pub layers: Option<usize>,
    /// Overrides the table's head count.
    pub heads: Option<usize>,
    /// Overrides the table's patch size.
    pub patch_size: Option<usize>,
    /// Overrides the table's MLP ratio.
    pub mlp_ratio: Option<f64>,
}

impl Default for UndEncParams {
    fn default() -> Self {
        Self {
            model_name: "siglip_large_patch16_384".into(),
            image_size: 336,
            select_feature: "patch".into(),
            select_layer: -2,
            pixel_mean: None,
            pixel_std: None,
            width: None,
            layers: None,
            heads: None,
            patch_size: None,
            mlp_ratio: None,
        }
    }
}

/// The SigLIP shape a tower is built with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SiglipShape {
    /// Hidden width.
    pub width: usize,
    /// Blocks run (after `select_layer`).
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Patch side.
    pub patch_size: usize,
    /// MLP width over hidden width.
    pub mlp_ratio: f64,
}

impl UndEncParams {
    /// The official `SigLIP_MODEL_CONFIG` entry of `model_name` (width, layers, heads, patch,
    /// mlp ratio), each overridable by its own key, then `select_layer` as
    /// `create_siglip_vit` applies it.
    pub fn shape(&self) -> Result<SiglipShape> {
        let table = match self.model_name.as_str() {
            "siglip_large_patch16_384" | "siglip_large_patch16_256" => {
                Some((1024, 24, 16, 16, 4.0))
            }
            "siglip_so400m_patch14_384" | "siglip_so400m_patch14_224" => {
                Some((1152, 27, 16, 14, 3.7362))
            }
            _ => None,
        };
        let bad = |msg: String| Error::Config {
            path: "config.json: vision_und_enc_config.params".into(),
            msg,
        };
        let (w, l, h, p, r) = match (table, self.width, self.layers, self.heads, self.patch_size) {
            (Some(t), ..) => t,
            (None, Some(w), Some(l), Some(h), Some(p)) => (w, l, h, p, 4.0),
            _ => {
                return Err(bad(format!(
                    "model_name `{}` is not a known SigLIP tower; give width, layers, heads and \
                     patch_size",
                    self.model_name
                )))
            }
        };
        let layers = self.layers.unwrap_or(l);
        let sel = self.select_layer;
        let kept = if sel <= 0 {
            (layers as i64 + sel + 1).min(layers as i64)
        } else {
            sel.min(layers as i64)
        };
        if kept <= 0 {
            return Err(bad(format!(
                "select_layer {sel} keeps no layer of {layers}"
            )));
        }
        Ok(SiglipShape {
            width: self.width.unwrap_or(w),
            layers: kept as usize,
            heads: self.heads.unwrap_or(h),
            patch_size: self.patch_size.unwrap_or(p),
            mlp_ratio: self.mlp_ratio.unwrap_or(r),
        })
    }
}

/// `ShallowUViTEncoder` arguments.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
#[non_exhaustive]
pub struct GenEncParams {
    /// Latent channels in (4).
    pub input_channels: usize,
    /// Stride of `in_conv` (2: one token per 2×2 latent cells).
    pub stride: usize,
    /// Kernel of `in_conv`.
    pub kernel_size: usize,
    /// Padding of `in_conv`; `None`: `ceil(kernel − stride)`.
    pub padding: Option<usize>,
    /// Channels; the last is the token width.
    pub block_out_channels: Vec<usize>,
    /// ConvNeXt blocks in the mid block.
    pub layers_in_middle: usize,
    /// Width of the timestep embedding (the LLM's hidden size).
    pub hidden_size: usize,
    /// Whether the linear layers have biases.
    pub use_bias: bool,
    /// RMSNorm epsilon.
    pub norm_eps: f64,
    /// Whether there is a mid block.
    pub use_mid_block: bool,
}

impl Default for GenEncParams {
    fn default() -> Self {
        Self {
            input_channels: 3,
            stride: 4,
            kernel_size: 7,
            padding: None,
            block_out_channels: vec![768],
            layers_in_middle: 2,
            hidden_size: 2048,
            use_bias: true,
            norm_eps: 1e-6,
            use_mid_block: true,
        }
    }
}

/// `ShallowUViTDecoder` arguments.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
#[non_exhaustive]
pub struct GenDecParams {
    /// Channels in (the decoder aligner's width).
    pub in_channels: usize,
    /// Velocity channels out (4).
    pub out_channels: usize,
    /// Channels; the last is the skip's width.
    pub block_out_channels: Vec<usize>,
    /// Unpatchify stages (each ×2).
    pub upsamples: usize,
    /// ConvNeXt blocks in the mid block.
    pub layers_in_middle: usize,
    /// Width of the timestep embedding.
    pub hidden_size: usize,
    /// RMSNorm epsilon.
    pub norm_eps: f64,
    /// Whether the linear layers have biases.
    pub use_bias: bool,
    /// Whether there is a mid block.
    pub use_mid_block: bool,
}

impl Default for GenDecParams {
    fn default() -> Self {
        Self {
            in_channels: 768,
            out_channels: 3,
            block_out_channels: vec![768],
            upsamples: 2,
            layers_in_middle: 2,
            hidden_size: 2048,
            norm_eps: 1e-6,
            use_bias: true,
            use_mid_block: true,
        }
    }
}

impl JanusFlowConfig {
    /// Refuses shapes the model cannot be built with (no channels, an encoder whose grid the
    /// decoder does not undo), naming the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Error::Config {
            path: "config.json".into(),
            msg,
        };
        let e = &self.vision_gen_enc_config.params;
        let d = &self.vision_gen_dec_config.params;
        if e.block_out_channels.is_empty() || d.block_out_channels.is_empty() {
            return Err(bad(
                "vision_gen_{enc,dec}_config.params.block_out_channels is empty".into(),
            ));
        }
        if e.stride == 0 || e.kernel_size == 0 || d.upsamples == 0 || d.upsamples > 8 {
            return Err(bad(format!(
                "vision_gen_enc stride {} / kernel_size {} and vision_gen_dec upsamples {} must be positive (upsamples ≤ 8)",
                e.stride, e.kernel_size, d.upsamples
            )));
        }
        if e.stride != 1 << d.upsamples {
            return Err(bad(format!(
                "vision_gen_enc stride {} is not undone by vision_gen_dec's {} ×2 upsamples",
                e.stride, d.upsamples
            )));
        }
        if e.block_out_channels.last() != d.block_out_channels.last() {
            return Err(bad(format!(
                "the decoder's skip width {:?} differs from the encoder's {:?}",
                d.block_out_channels.last(),
                e.block_out_channels.last()
            )));
        }
        Ok(())
    }

    /// The token width of the encoder (`block_out_channels[-1]`).
    pub fn enc_width(&self) -> usize {
        self.vision_gen_enc_config
            .params
            .block_out_channels
            .last()
            .copied()
            .unwrap_or(0)
    }
}

/// `preprocessor_config.json` of `VLMImageProcessor`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
#[non_exhaustive]
pub struct ImageProcessorConfig {
    /// Square side images are brought to.
    pub image_size: u32,
    /// The shorter side is never resized below this.
    pub min_size: u32,
    /// Per-channel mean; also the padding colour (`int(mean · 255)`, as the class computes it,
    /// whatever `background_color` the file holds).
    pub image_mean: [f64; 3],
    /// Per-channel standard deviation.
    pub image_std: [f64; 3],
    /// Pixel scale before normalisation (1/255).
    pub rescale_factor: f64,
    /// Whether `(x − mean) / std` is applied.
    pub do_normalize: bool,
}

impl Default for ImageProcessorConfig {
    fn default() -> Self {
        Self {
            image_size: 384,
            min_size: 14,
            image_mean: [0.48145466, 0.4578275, 0.40821073],
            image_std: [0.26862954, 0.26130258, 0.27577711],
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
        }
    }
}

impl ImageProcessorConfig {
    /// The padding colour.
    pub fn background(&self) -> [u8; 3] {
        self.image_mean.map(|m| (m * 255.0) as u8)
    }
    /// Mean and std (identity when `do_normalize` is false).
    pub fn mean_std(&self) -> ([f64; 3], [f64; 3]) {
        if self.do_normalize {
            (self.image_mean, self.image_std)
        } else {
            ([0.0; 3], [1.0; 3])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siglip_table_and_select_layer() {
        let p: UndEncParams = serde_json::from_str(
            r#"{"model_name":"siglip_large_patch16_384","image_size":384,"select_layer":-1}"#,
        )
        .unwrap();
        let s = p.shape().unwrap();
        assert_eq!(
            (s.width, s.layers, s.heads, s.patch_size),
            (1024, 24, 16, 16)
        );
        let p = UndEncParams {
            select_layer: -2,
            ..p
        };
        assert_eq!(p.shape().unwrap().layers, 23);
        let p = UndEncParams {
            model_name: "other".into(),
            ..p
        };
        assert!(matches!(p.shape(), Err(Error::Config { .. })));
    }
}
