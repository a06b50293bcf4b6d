//! Configurations: the LLM's `VideoLLaMAConfig` and the VQGAN's `VQGANConfig`, as the official
//! code names their fields.
//!
//! The release ships no config file: the scripts pass `--load_llama_config='7b'` (LLaMA-2-7B)
//! and `--update_llama_config="dict(theta=50000000, max_sequence_length=…)"`, and the VQGAN's
//! config is `VQGANConfig`'s defaults. So a release directory loads with those values, its sizes
//! read from the tensors' shapes; an optional `lwm_config.json` next to `params` (the JSON the
//! official `load_llama_config='json::…'` reads) overrides them. A converted directory's
//! `config.json` holds both (`model_type: "lwm"`, the LLM's fields, and `vqgan`).

use serde::{Deserialize, Serialize};

/// The LLM's configuration (`lwm/vision_llama.py:VideoLLaMAConfig` over `lwm/llama.py:LLaMAConfig`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct LwmConfig {
    /// Text vocabulary (32000).
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    /// Vision vocabulary (8448: 8192 codes, end-of-frame 8192, end-of-vision 8193, spare).
    #[serde(default = "d_vvocab")]
    pub vision_vocab_size: usize,
    /// Model width (4096).
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    /// MLP width (11008).
    #[serde(default = "d_inter")]
    pub intermediate_size: usize,
    /// Decoder blocks (32).
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    /// Attention heads (32; multi-head, no GQA).
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    /// Positions the RoPE table covers (32768, the generation scripts' value).
    #[serde(default = "d_maxpos", alias = "max_position_embeddings")]
    pub max_sequence_length: usize,
    /// RMSNorm epsilon (1e-6).
    #[serde(default = "d_eps")]
    pub rms_norm_eps: f64,
    /// RoPE θ (5e7 in every LWM-Chat script).
    #[serde(default = "d_theta", alias = "rope_theta")]
    pub theta: f64,
    /// Whether `lm_head` is `wte` transposed (false in the release).
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Whether `vision_head` is `vte` transposed (false in the release).
    #[serde(default)]
    pub tie_vision_embeddings: bool,
    /// Begin-of-sequence id (1).
    #[serde(default = "d_bos")]
    pub bos_token_id: u32,
    /// End-of-sequence id (2).
    #[serde(default = "d_eos")]
    pub eos_token_id: u32,
}

fn d_vocab() -> usize {
    32000
}
fn d_vvocab() -> usize {
    8448
}
fn d_hidden() -> usize {
    4096
}
fn d_inter() -> usize {
    11008
}
fn d_layers() -> usize {
    32
}
fn d_heads() -> usize {
    32
}
fn d_maxpos() -> usize {
    32768
}
fn d_eps() -> f64 {
    1e-6
}
fn d_theta() -> f64 {
    50_000_000.0
}
fn d_bos() -> u32 {
    1
}
fn d_eos() -> u32 {
    2
}

impl Default for LwmConfig {
    /// LWM-Chat-1M-Jax (LLaMA-2-7B, θ 5e7).
    fn default() -> Self {
        serde_json::from_value(serde_json::json!({})).unwrap_or_else(|_| unreachable!())
    }
}

/// The VQGAN's configuration (`lwm/vqgan.py:VQGANConfig`; its defaults are the release's).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct VqganConfig {
    /// Input side in pixels (256).
    #[serde(default = "d_res")]
    pub resolution: usize,
    /// Channels of the first level (128).
    #[serde(default = "d_hc")]
    pub hidden_channels: usize,
    /// Level `l` has `hidden_channels · channel_mult[l]` channels ((1, 2, 2, 4, 6)).
    #[serde(default = "d_mult")]
    pub channel_mult: Vec<usize>,
    /// Residual blocks per encoder level (2; the decoder has one more).
    #[serde(default = "d_nrb")]
    pub num_res_blocks: usize,
    /// Latent channels (64).
    #[serde(default = "d_z")]
    pub z_channels: usize,
    /// Codebook vector size (64).
    #[serde(default = "d_z")]
    pub quantized_embed_dim: usize,
    /// Codebook entries (8192).
    #[serde(default = "d_ne")]
    pub num_embeddings: usize,
}

fn d_res() -> usize {
    256
}
fn d_hc() -> usize {
    128
}
fn d_mult() -> Vec<usize> {
    vec![1, 2, 2, 4, 6]
}
fn d_nrb() -> usize {
    2
}
fn d_z() -> usize {
    64
}
fn d_ne() -> usize {
    8192
}

impl Default for VqganConfig {
    /// The release's VQGAN (aMUSEd / open-muse, 146 M parameters).
    fn default() -> Self {
        serde_json::from_value(serde_json::json!({})).unwrap_or_else(|_| unreachable!())
    }
}

impl VqganConfig {
    /// Downsampling factor: 2^(levels − 1).
    pub fn factor(&self) -> usize {
        1 << self.channel_mult.len().saturating_sub(1)
    }
}

/// A converted directory's `config.json`: `model_type: "lwm"`, the LLM's fields, and the VQGAN's.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ConvertedConfig {
    /// `"lwm"`.
    pub model_type: String,
    /// The LLM.
    #[serde(flatten)]
    pub llm: LwmConfig,
    /// The VQGAN.
    #[serde(default)]
    pub vqgan: VqganConfig,
}
