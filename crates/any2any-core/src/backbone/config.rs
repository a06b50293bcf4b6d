use crate::{Error, Result};
use candle_nn::Activation;
use serde::Deserialize;

/// `rope_parameters` as transformers 5 writes it.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
pub struct RopeParameters {
    /// RoPE base frequency θ, if given here.
    pub rope_theta: Option<f64>,
    /// RoPE scaling kind (`"default"`, …); read but not acted on.
    pub rope_type: Option<String>,
}

/// A Llama-style `text_config` / `language_config` as HF writes it (unknown keys ignored; old and
/// new rope spellings accepted).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct LlamaTextConfig {
    /// Vocabulary size, rows of the token embedding (default 32000).
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    /// Model width (default 4096).
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    /// Hidden width of the MLP (default 11008).
    #[serde(default = "d_inter")]
    pub intermediate_size: usize,
    /// Number of decoder blocks (default 32).
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    /// Query heads (default 32).
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    /// Key/value heads for GQA; `None`: as many as query heads. Must divide them.
    pub num_key_value_heads: Option<usize>,
    /// Dimensions per head; `None`: `hidden_size / num_attention_heads`. Must be even.
    pub head_dim: Option<usize>,
    /// RMSNorm epsilon (default 1e-6).
    #[serde(default = "d_eps")]
    pub rms_norm_eps: f64,
    /// RoPE θ, older spelling (see [`LlamaTextConfig::rope_theta`]).
    pub rope_theta: Option<f64>,
    /// RoPE settings, transformers 5 spelling; its θ wins over `rope_theta`.
    pub rope_parameters: Option<RopeParameters>,
    /// Longest sequence, in positions, the RoPE tables cover (default 2048).
    #[serde(default = "d_maxpos")]
    pub max_position_embeddings: usize,
    /// Whether the q/k/v/o projections have biases.
    #[serde(default)]
    pub attention_bias: bool,
    /// Whether the MLP projections have biases.
    #[serde(default)]
    pub mlp_bias: bool,
    /// Whether the LM head shares the token embedding's weight.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// The gated MLP's activation (HF names: `silu`, `gelu`, `gelu_new`, …).
    #[serde(default = "d_act")]
    pub hidden_act: Activation,
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
fn d_act() -> Activation {
    Activation::Silu
}

/// Norm layer of the blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// RMSNorm (weight only).
    Rms,
    /// LayerNorm (weight and bias).
    Layer,
}

/// Feed-forward shape (its activation is [`BackboneConfig::hidden_act`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlpKind {
    /// `down(act(gate(x)) · up(x))` (Llama, Chameleon, Emu3: SiLU).
    Gated,
    /// `fc2(act(fc1(x)))` with biases per `mlp_bias` (Phi: tanh GELU).
    Plain,
}

/// A LayerNorm on q and k over each head's dimensions, before RoPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QkNorm {
    /// None (Llama, Phi).
    #[default]
    None,
    /// One affine per head, `[heads, head_dim]` (stored so, or as `[1|mp, head_dim]` / `[head_dim]`
    /// broadcast to every head), eps 1e-5: Chameleon, Lumina-mGPT.
    PerHead,
    /// One `[head_dim]` affine shared by all heads, eps [`BackboneConfig::norm_eps`]: Show-o's
    /// Phi (`qk_layernorm`).
    Shared,
}

/// Where a block's norms and residuals sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlockOrder {
    /// `h = x + attn(ln1(x)); out = h + mlp(ln2(h))` (Llama, Chameleon-7B).
    #[default]
    PreNorm,
    /// One norm feeds attention and MLP side by side: `out = x + attn(ln(x)) + mlp(ln(x))` (Phi).
    Parallel,
    /// Norms after the sublayers: `h = x + ln1(attn(x)); out = h + ln2(mlp(h))`
    /// (Chameleon-30B/34B `swin_norm`).
    SwinNorm,
}

/// How the decoder's weights are named (same math, different checkpoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightNaming {
    /// `self_attn.o_proj`, `mlp.{gate,up,down}_proj`, `post_attention_layernorm`, `norm`,
    /// q/k norm `self_attn.{q,k}_norm`.
    #[default]
    Llama,
    /// `self_attn.dense`, `mlp.fc1/fc2`, `final_layernorm`, q/k norm
    /// `self_attn.{q,k}_layernorm` (HF Phi).
    Phi,
    /// Meta's original `consolidated.pth` names (Llama / Chameleon releases): `tok_embeddings`,
    /// `layers.N.attention.{wq,wk,wv,wo}`, q/k norm `attention.{q,k}_normalization`,
    /// `layers.N.feed_forward.{w1,w2,w3}` (gate, down, up), `layers.N.{attention_norm,ffn_norm}`,
    /// `norm` (the LM head is `output`, outside the decoder).
    Meta,
}

/// How RoPE pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RopeLayout {
    /// Dimension `i` pairs with `i + d/2` (HF `rotate_half`; HF converters permute q/k for it).
    #[default]
    HalfSplit,
    /// Adjacent dimensions `(2i, 2i+1)` form a pair (Meta's original complex-number RoPE, used
    /// with unpermuted `wq`/`wk` from a raw `consolidated.pth`).
    Interleaved,
}

/// Runtime configuration of the shared decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct BackboneConfig {
    /// Vocabulary size, rows of the token embedding.
    pub vocab_size: usize,
    /// Model width, the last dimension of hidden states.
    pub hidden_size: usize,
    /// Hidden width of the MLP.
    pub intermediate_size: usize,
    /// Number of decoder blocks.
    pub num_layers: usize,
    /// Query heads; a multiple of `num_kv_heads`.
    pub num_heads: usize,
    /// Key/value heads (GQA when fewer than `num_heads`).
    pub num_kv_heads: usize,
    /// Dimensions per head; even and > 0.
    pub head_dim: usize,
    /// Epsilon of the block and final norms.
    pub norm_eps: f64,
    /// Norm layer of the blocks and the final norm.
    pub norm: NormKind,
    /// Feed-forward shape.
    pub mlp: MlpKind,
    /// The MLP's activation.
    pub hidden_act: Activation,
    /// Norms and residuals of a block.
    pub block: BlockOrder,
    /// LayerNorm on q and k.
    pub qk_norm: QkNorm,
    /// RoPE base frequency θ.
    pub rope_theta: f64,
    /// Which dimensions RoPE rotates together (must match how q/k weights are laid out).
    pub rope_layout: RopeLayout,
    /// Fraction of head_dim that is rotated (1.0 for Llama, 0.5 for Phi).
    pub partial_rotary_factor: f64,
    /// Longest sequence, in positions, the RoPE tables cover.
    pub max_position_embeddings: usize,
    /// Whether the q/k/v/o projections have biases.
    pub attention_bias: bool,
    /// Whether the MLP projections have biases.
    pub mlp_bias: bool,
    /// How the checkpoint names the decoder's tensors.
    pub naming: WeightNaming,
}

impl LlamaTextConfig {
    /// RoPE θ: `rope_parameters.rope_theta`, else `rope_theta`, else 10000.
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
        let bb = BackboneConfig {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: self.num_hidden_layers,
            num_heads: self.num_attention_heads,
            num_kv_heads: kv,
            head_dim,
            norm_eps: self.rms_norm_eps,
            norm: NormKind::Rms,
            mlp: MlpKind::Gated,
            hidden_act: self.hidden_act,
            block: BlockOrder::PreNorm,
            qk_norm: QkNorm::None,
            rope_theta: self.rope_theta(),
            rope_layout: RopeLayout::HalfSplit,
            partial_rotary_factor: 1.0,
            max_position_embeddings: self.max_position_embeddings,
            attention_bias: self.attention_bias,
            mlp_bias: self.mlp_bias,
            naming: WeightNaming::Llama,
        };
        bb.validate(what)?;
        Ok(bb)
    }
}

impl BackboneConfig {
    /// Refuses values the decoder cannot run with, naming the field (`what` names the file or
    /// section): empty sizes, a norm epsilon or RoPE θ that is not a finite number > 0 (they
    /// give NaN), and a context beyond [`crate::limits::MAX_POSITIONS`].
    pub fn validate(&self, what: &str) -> Result<()> {
        let bad = |msg: String| Error::Config {
            path: what.into(),
            msg,
        };
        for (field, v) in [
            ("vocab_size", self.vocab_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_layers),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                return Err(bad(format!("{field} must be > 0")));
            }
        }
        let max = crate::limits::MAX_POSITIONS;
        if self.max_position_embeddings > max {
            return Err(bad(format!(
                "max_position_embeddings {} is more than {max} positions",
                self.max_position_embeddings
            )));
        }
        for (field, v) in [
            ("norm eps (rms_norm_eps / layer_norm_eps)", self.norm_eps),
            ("rope_theta", self.rope_theta),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(bad(format!("{field} {v} must be a finite number > 0")));
            }
        }
        Ok(())
    }

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
        let mlp = match self.mlp {
            MlpKind::Gated => 3,
            MlpKind::Plain => 2,
        } * h
            * self.intermediate_size;
        self.num_layers * (attn + mlp + 2 * h) + 2 * self.vocab_size * h + h
    }
}

/// An HF Phi `config.json` (`model_type: phi`; unknown keys ignored). Defaults are phi-1_5's.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct PhiConfig {
    /// Vocabulary size, rows of the token embedding (default 51200).
    #[serde(default = "p_vocab")]
    pub vocab_size: usize,
    /// Model width (default 2048).
    #[serde(default = "p_hidden")]
    pub hidden_size: usize,
    /// Hidden width of the MLP (default 8192).
    #[serde(default = "p_inter")]
    pub intermediate_size: usize,
    /// Number of decoder blocks (default 24).
    #[serde(default = "p_layers")]
    pub num_hidden_layers: usize,
    /// Query heads (default 32); must divide `hidden_size`.
    #[serde(default = "p_heads")]
    pub num_attention_heads: usize,
    /// Key/value heads for GQA; `None`: as many as query heads.
    pub num_key_value_heads: Option<usize>,
    /// `gelu_new` / `gelu_pytorch_tanh` (the tanh GELU).
    #[serde(default = "p_act")]
    pub hidden_act: Activation,
    /// Longest sequence, in positions, the RoPE tables cover (default 2048).
    #[serde(default = "d_maxpos")]
    pub max_position_embeddings: usize,
    /// LayerNorm epsilon (default 1e-5).
    #[serde(default = "p_eps")]
    pub layer_norm_eps: f64,
    /// RoPE base frequency θ (default 10000).
    #[serde(default = "p_theta")]
    pub rope_theta: f64,
    /// Fraction of each head's dimensions RoPE rotates (default 0.5).
    #[serde(default = "p_partial")]
    pub partial_rotary_factor: f64,
    /// Whether q and k get a shared LayerNorm ([`QkNorm::Shared`]).
    #[serde(default)]
    pub qk_layernorm: bool,
    /// Whether the LM head shares the token embedding's weight.
    #[serde(default)]
    pub tie_word_embeddings: bool,
}

fn p_vocab() -> usize {
    51200
}
fn p_hidden() -> usize {
    2048
}
fn p_inter() -> usize {
    8192
}
fn p_layers() -> usize {
    24
}
fn p_heads() -> usize {
    32
}
fn p_act() -> Activation {
    Activation::NewGelu
}
fn p_eps() -> f64 {
    1e-5
}
fn p_theta() -> f64 {
    10000.0
}
fn p_partial() -> f64 {
    0.5
}

impl Default for PhiConfig {
    /// phi-1_5.
    fn default() -> Self {
        Self {
            vocab_size: p_vocab(),
            hidden_size: p_hidden(),
            intermediate_size: p_inter(),
            num_hidden_layers: p_layers(),
            num_attention_heads: p_heads(),
            num_key_value_heads: None,
            hidden_act: p_act(),
            max_position_embeddings: d_maxpos(),
            layer_norm_eps: p_eps(),
            rope_theta: p_theta(),
            partial_rotary_factor: p_partial(),
            qk_layernorm: false,
            tie_word_embeddings: false,
        }
    }
}

impl PhiConfig {
    /// Validates and converts to the decoder's runtime config (`what` names the file in errors).
    pub fn to_backbone(&self, what: &str) -> Result<BackboneConfig> {
        let bad = |msg: String| Error::Config {
            path: what.into(),
            msg,
        };
        if self.num_attention_heads == 0 || self.hidden_size == 0 {
            return Err(bad("hidden_size and num_attention_heads must be > 0".into()));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        let kv = self.num_key_value_heads.unwrap_or(self.num_attention_heads);
        if kv == 0 || !self.num_attention_heads.is_multiple_of(kv) {
            return Err(bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {kv}",
                self.num_attention_heads
            )));
        }
        if !matches!(
            self.hidden_act,
            Activation::NewGelu | Activation::GeluPytorchTanh
        ) {
            return Err(bad(format!(
                "hidden_act {:?} is not supported for Phi (gelu_new)",
                self.hidden_act
            )));
        }
        if !(self.partial_rotary_factor > 0.0 && self.partial_rotary_factor <= 1.0) {
            return Err(bad(format!(
                "partial_rotary_factor {} must be in (0, 1]",
                self.partial_rotary_factor
            )));
        }
        let bb = BackboneConfig {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: self.num_hidden_layers,
            num_heads: self.num_attention_heads,
            num_kv_heads: kv,
            head_dim: self.hidden_size / self.num_attention_heads,
            norm_eps: self.layer_norm_eps,
            norm: NormKind::Layer,
            mlp: MlpKind::Plain,
            hidden_act: self.hidden_act,
            block: BlockOrder::Parallel,
            qk_norm: if self.qk_layernorm {
                QkNorm::Shared
            } else {
                QkNorm::None
            },
            rope_theta: self.rope_theta,
            rope_layout: RopeLayout::HalfSplit,
            partial_rotary_factor: self.partial_rotary_factor,
            max_position_embeddings: self.max_position_embeddings,
            attention_bias: true,
            mlp_bias: true,
            naming: WeightNaming::Phi,
        };
        bb.validate(what)?;
        Ok(bb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phi_defaults_are_phi_1_5() {
        let parsed: PhiConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(parsed, PhiConfig::default());
        let c = PhiConfig::default().to_backbone("phi").unwrap();
        assert_eq!(
            (
                c.hidden_size,
                c.num_layers,
                c.num_heads,
                c.intermediate_size,
                c.vocab_size
            ),
            (2048, 24, 32, 8192, 51200)
        );
        assert_eq!((c.head_dim, c.rotary_dim()), (64, 32));
        assert!(c.block == BlockOrder::Parallel && c.attention_bias && c.qk_norm == QkNorm::None);
        assert_eq!(
            (c.norm, c.mlp, c.naming),
            (NormKind::Layer, MlpKind::Plain, WeightNaming::Phi)
        );
        let bad: PhiConfig = serde_json::from_str(r#"{"hidden_act": "relu"}"#).unwrap();
        assert!(bad.to_backbone("phi").is_err());
    }
}
