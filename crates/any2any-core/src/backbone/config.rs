use crate::{Error, Result};
use serde::Deserialize;

/// `rope_parameters` as transformers 5 writes it.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
pub struct RopeParameters {
    pub rope_theta: Option<f64>,
    pub rope_type: Option<String>,
}

/// A Llama-style `text_config` / `language_config` as HF writes it (unknown keys ignored; old and
/// new rope spellings accepted).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct LlamaTextConfig {
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_inter")]
    pub intermediate_size: usize,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    #[serde(default = "d_eps")]
    pub rms_norm_eps: f64,
    pub rope_theta: Option<f64>,
    pub rope_parameters: Option<RopeParameters>,
    #[serde(default = "d_maxpos")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default = "d_act")]
    pub hidden_act: String,
}

fn d_vocab() -> usize {
    32000
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
fn d_eps() -> f64 {
    1e-6
}
fn d_maxpos() -> usize {
    2048
}
fn d_act() -> String {
    "silu".into()
}

/// Norm layer of the blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    Rms,
    Layer,
}

/// Feed-forward shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlpKind {
    /// `down(silu(gate(x)) · up(x))` (Llama, Chameleon, Emu3).
    GatedSilu,
}

/// Runtime configuration of the shared decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct BackboneConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub norm_eps: f64,
    pub norm: NormKind,
    pub mlp: MlpKind,
    pub rope_theta: f64,
    /// Fraction of head_dim that is rotated (1.0 for Llama, 0.5 for Phi).
    pub partial_rotary_factor: f64,
    pub max_position_embeddings: usize,
    pub attention_bias: bool,
    pub mlp_bias: bool,
    /// Per-head LayerNorm on q and k before RoPE (Chameleon), eps 1e-5.
    pub qk_norm: bool,
    /// Norms after the sublayers: `h = x + ln(attn(x))` (Chameleon-30B/34B).
    pub swin_norm: bool,
}

impl LlamaTextConfig {
    pub fn rope_theta(&self) -> f64 {
        self.rope_parameters
            .as_ref()
            .and_then(|r| r.rope_theta)
            .or(self.rope_theta)
            .unwrap_or(10000.0)
    }

    /// Validates and converts to the decoder's runtime config. `what` names the config section
    /// in errors (e.g. "config.json: text_config").
    pub fn to_backbone(&self, what: &str) -> Result<BackboneConfig> {
        let bad = |msg: String| Error::Config {
            path: what.into(),
            msg,
        };
        if self.num_attention_heads == 0 || self.hidden_size == 0 {
            return Err(bad("hidden_size and num_attention_heads must be > 0".into()));
        }
        let kv = self.num_key_value_heads.unwrap_or(self.num_attention_heads);
        if kv == 0 || !self.num_attention_heads.is_multiple_of(kv) {
            return Err(bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {kv}",
                self.num_attention_heads
            )));
        }
        let head_dim = self
            .head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads);
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(bad(format!("head_dim {head_dim} must be even and > 0")));
        }
        if self.hidden_act != "silu" {
            return Err(bad(format!(
                "hidden_act `{}` is not supported for a Llama text model (silu)",
                self.hidden_act
            )));
        }
        Ok(BackboneConfig {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: self.num_hidden_layers,
            num_heads: self.num_attention_heads,
            num_kv_heads: kv,
            head_dim,
            norm_eps: self.rms_norm_eps,
            norm: NormKind::Rms,
            mlp: MlpKind::GatedSilu,
            rope_theta: self.rope_theta(),
            partial_rotary_factor: 1.0,
            max_position_embeddings: self.max_position_embeddings,
            attention_bias: self.attention_bias,
            mlp_bias: self.mlp_bias,
            qk_norm: false,
            swin_norm: false,
        })
    }
}

impl BackboneConfig {
    /// Rotated dims per head.
    pub fn rotary_dim(&self) -> usize {
        let r = (self.head_dim as f64 * self.partial_rotary_factor) as usize;
        r - r % 2
    }
    /// Parameter count of the decoder (embedding and one LM head included).
    pub fn num_params(&self) -> usize {
        let h = self.hidden_size;
        let q = self.num_heads * self.head_dim;
        let kv = self.num_kv_heads * self.head_dim;
        let attn = h * q + 2 * h * kv + q * h;
        let mlp = 3 * h * self.intermediate_size;
        self.num_layers * (attn + mlp + 2 * h) + 2 * self.vocab_size * h + h
    }
}
