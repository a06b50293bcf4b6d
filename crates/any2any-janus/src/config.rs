//! Janus checkpoint configuration, mirroring the HF files.

use crate::vision::JanusVisionConfig;
use crate::vq::JanusVqConfig;
use any2any_core::backbone::LlamaTextConfig;
use serde::Deserialize;

/// `config.json` of `JanusForConditionalGeneration` (transformers ≥ 4.51 layout).
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct JanusConfig {
    /// The Llama language model.
    pub text_config: LlamaTextConfig,
    /// The understanding tower and its aligner.
    #[serde(default)]
    pub vision_config: JanusVisionConfig,
    /// The VQ-16 image tokenizer and the generation aligner/head.
    #[serde(default)]
    pub vq_config: JanusVqConfig,
    /// The placeholder id an understood image's features replace (one per image token).
    #[serde(default = "default_image_token_id")]
    pub image_token_id: u32,
    /// Top-level copy; the checkpoint carries its own `lm_head.weight` regardless.
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
}

fn default_image_token_id() -> u32 {
    100581
}

/// `preprocessor_config.json` of `JanusImageProcessor`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct JanusPreprocessorConfig {
    /// The letterbox size (its longer side); `None`: the vision tower's `image_size`.
    #[serde(default)]
    pub size: Option<ImageSize>,
    /// The shorter side is never resized below this.
    #[serde(default = "default_min_size")]
    pub min_size: u32,
    /// Pixel scale before normalisation (1/255).
    #[serde(default = "default_rescale")]
    pub rescale_factor: f64,
    /// Whether `(x − mean) / std` is applied.
    #[serde(default = "default_true")]
    pub do_normalize: bool,
    /// Per-channel mean.
    #[serde(default = "default_mean")]
    pub image_mean: [f64; 3],
    /// Per-channel standard deviation.
    #[serde(default = "default_std")]
    pub image_std: [f64; 3],
    /// Letterbox colour when the file names one.
    #[serde(default)]
    pub background_color: Option<[u8; 3]>,
}

/// A `{"height", "width"}` size of a processor config.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct ImageSize {
    /// Height in pixels.
    pub height: u32,
    /// Width in pixels.
    pub width: u32,
}

impl Default for JanusPreprocessorConfig {
    fn default() -> Self {
        Self {
            size: None,
            min_size: default_min_size(),
            rescale_factor: default_rescale(),
            do_normalize: true,
            image_mean: default_mean(),
            image_std: default_std(),
            background_color: None,
        }
    }
}

fn default_min_size() -> u32 {
    14
}
fn default_rescale() -> f64 {
    1.0 / 255.0
}
fn default_true() -> bool {
    true
}
// The class defaults are CLIP's; Janus-Pro checkpoints ship 0.5/0.5 in their file.
fn default_mean() -> [f64; 3] {
    [0.48145466, 0.4578275, 0.40821073]
}
fn default_std() -> [f64; 3] {
    [0.26862954, 0.26130258, 0.27577711]
}

impl JanusPreprocessorConfig {
    /// Mean and std that make normalisation a no-op when `do_normalize` is false.
    pub fn mean_std(&self) -> ([f64; 3], [f64; 3]) {
        if self.do_normalize {
            (self.image_mean, self.image_std)
        } else {
            ([0.0; 3], [1.0; 3])
        }
    }
    /// Letterbox colour: `int(mean · 255)` per channel, as the HF processor computes it.
    pub fn background(&self) -> [u8; 3] {
        self.background_color
            .unwrap_or_else(|| self.image_mean.map(|m| (m * 255.0) as u8))
    }
}
