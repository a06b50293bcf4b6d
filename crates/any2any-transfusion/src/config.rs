//! The checkpoint's `config.json`: the keyword arguments of lucidrains'
//! `Transfusion(...)` constructor (transfusion-pytorch 0.20), with the library's defaults, and
//! the vocabulary layout they imply.

use any2any_core::{Error, Result};
use serde::Deserialize;
use std::path::Path;

/// A constructor argument given either once for every modality or once per modality
/// (`dim_latent = 3` or `dim_latent = (3, 4)`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PerModality<T> {
    /// One value per modality.
    Each(Vec<T>),
    /// The same value for every modality.
    All(T),
}

impl<T: Clone> PerModality<T> {
    /// The value of modality `i` (the shared one, or the `i`-th).
    pub fn get(&self, i: usize) -> Option<T> {
        match self {
            PerModality::All(v) => Some(v.clone()),
            PerModality::Each(v) => v.get(i).cloned(),
        }
    }
    /// Modalities this argument names (`None`: any number).
    pub fn count(&self) -> Option<usize> {
        match self {
            PerModality::All(_) => None,
            PerModality::Each(v) => Some(v.len()),
        }
    }
}

/// `modality_default_shape`: one shape for the (single) modality, or one per modality.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum DefaultShapes {
    /// One shape per modality (`((4, 4), (16,))`).
    Each(Vec<Option<Vec<usize>>>),
    /// The one modality's shape (`(4, 4)`).
    One(Vec<usize>),
}

/// `Attention(...)` keyword arguments passed through `Transformer(attn_kwargs = ...)`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct AttnKwargs {
    /// Attention logits are soft-clamped to ±`softcap_value` (`tanh(s/c)·c`).
    pub softcap_value: f64,
    /// A per-head sigmoid gate on the attention output (`to_gates`).
    pub gate_values: bool,
    /// LASER attention (`exp` of soft-clamped values, `log` of the output).
    pub laser: Option<bool>,
    /// The soft clamp of the values under LASER.
    pub laser_softclamp_value: f64,
}

impl Default for AttnKwargs {
    fn default() -> Self {
        Self {
            softcap_value: 50.0,
            gate_values: true,
            laser: None,
            laser_softclamp_value: 15.0,
        }
    }
}

/// `Transformer(...)` keyword arguments (the `transformer` dict).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TransformerConfig {
    /// Model width.
    pub dim: usize,
    /// Layers.
    pub depth: usize,
    /// Width of one attention head.
    #[serde(default = "d_dim_head")]
    pub dim_head: usize,
    /// Attention heads.
    #[serde(default = "d_heads")]
    pub heads: usize,
    /// Dropout (training only).
    #[serde(default)]
    pub dropout: f64,
    /// Feed-forward expansion; the GEGLU inner width is `int(dim · f · 2 / 3)`.
    #[serde(default = "d_ff")]
    pub ff_expansion_factor: f64,
    /// Passed to every attention layer.
    #[serde(default)]
    pub attn_kwargs: AttnKwargs,
    /// Passed to every feed-forward (only `dropout` exists).
    #[serde(default)]
    pub ff_kwargs: serde_json::Value,
    /// LASER attention in every layer.
    #[serde(default)]
    pub attn_laser: bool,
    /// U-Net skips: the latter half of the layers concatenates a first-half output.
    #[serde(default = "d_true")]
    pub unet_skips: bool,
    /// Flex attention on CUDA (same math as the default path).
    #[serde(default)]
    pub use_flex_attn: bool,
    /// RMSNorm of queries and keys per head.
    #[serde(default = "d_true")]
    pub qk_rmsnorm: bool,
    /// Value residual learning: later layers mix in the first layer's values.
    #[serde(default)]
    pub use_value_residual: bool,
}

fn d_dim_head() -> usize {
    64
}
fn d_heads() -> usize {
    8
}
fn d_ff() -> f64 {
    4.0
}
fn d_true() -> bool {
    true
}

/// `odeint_kwargs`: torchdiffeq's `odeint` options for sampling a modality.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct OdeintKwargs {
    /// The solver: `midpoint` (the library default) or `euler` are supported.
    pub method: String,
    /// Tolerances of the adaptive solvers (unused by the fixed-grid ones).
    pub atol: f64,
    /// See `atol`.
    pub rtol: f64,
}

impl Default for OdeintKwargs {
    fn default() -> Self {
        Self {
            method: "midpoint".into(),
            atol: 1e-5,
            rtol: 1e-5,
        }
    }
}

/// The ODE solvers a checkpoint may name in `odeint_kwargs.method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OdeMethod {
    /// One evaluation per step.
    Euler,
    /// Two evaluations per step (at the start and at the midpoint).
    Midpoint,
}

impl OdeMethod {
    /// `euler` / `midpoint`; any other solver is refused, naming the field.
    pub fn parse(s: &str, path: &Path) -> Result<Self> {
        match s {
            "euler" => Ok(Self::Euler),
            "midpoint" => Ok(Self::Midpoint),
            other => Err(Error::Config {
                path: path.to_path_buf(),
                msg: format!(
                    "odeint_kwargs.method `{other}` is not supported (supported: euler, midpoint)"
                ),
            }),
        }
    }
}

/// `config.json`: the `Transfusion(...)` keyword arguments (transfusion-pytorch 0.20 defaults).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TransfusionConfig {
    /// Text tokens before the special ids.
    pub num_text_tokens: usize,
    /// The transformer's arguments.
    pub transformer: TransformerConfig,
    /// The model predicts the clean latent, turned into a flow as `(out − x)/max(1 − t, eps)`.
    #[serde(default)]
    pub model_output_clean: bool,
    /// Channels of each modality's latent (default: the model width).
    #[serde(default)]
    pub dim_latent: Option<PerModality<usize>>,
    /// Whether a modality's latent is `[C, …]` (else `[…, C]`).
    #[serde(default)]
    pub channel_first_latent: Option<PerModality<bool>>,
    /// Axial positional embeddings on the modality tokens (not supported).
    #[serde(default)]
    pub add_pos_emb: Option<PerModality<bool>>,
    /// The latent shape used when the model does not give one.
    #[serde(default)]
    pub modality_default_shape: Option<DefaultShapes>,
    /// Fall back to the default shape when the model's is invalid.
    #[serde(default)]
    pub fallback_to_default_shape_if_invalid: bool,
    /// Dimensions of each modality's shape.
    #[serde(default)]
    pub modality_num_dim: Option<PerModality<Option<usize>>>,
    /// torchdiffeq options of modality sampling.
    #[serde(default)]
    pub odeint_kwargs: OdeintKwargs,
    /// The clamp of `1 − t` under `model_output_clean`.
    #[serde(default = "d_eps")]
    pub eps: f64,
    /// Probability of dropping the text during training (classifier-free guidance).
    #[serde(default = "d_prob_uncond")]
    pub prob_uncond: f64,
    /// Must be absent or null: custom modules cannot be loaded.
    #[serde(default)]
    pub pre_post_transformer_enc_dec: Option<serde_json::Value>,
    /// Must be absent or null (the encoder is not part of the checkpoint).
    #[serde(default)]
    pub modality_encoder: Option<serde_json::Value>,
    /// Must be absent or null (a decoder is a separate component).
    #[serde(default)]
    pub modality_decoder: Option<serde_json::Value>,
}

fn d_eps() -> f64 {
    1e-2
}
fn d_prob_uncond() -> f64 {
    0.1
}

/// The special ids after the text tokens, as the library numbers them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vocab {
    /// Text tokens (`num_text_tokens`).
    pub text: u32,
    /// Start of the whole sequence.
    pub sos: u32,
    /// End of the whole sequence (stops text decoding).
    pub eos: u32,
    /// The text id of the unconditioned stream of classifier-free guidance.
    pub null: u32,
    /// Start of modality `i` (`som_ids[i]`).
    pub som: Vec<u32>,
    /// End of modality `i` (`eom_ids[i]`).
    pub eom: Vec<u32>,
    /// The `[meta]` id before a modality's shape string.
    pub meta: u32,
    /// Embedding rows: text + 3 + 2·modalities + 129 (meta and 128 characters).
    pub size: usize,
}

impl Vocab {
    /// The layout for `num_text_tokens` text tokens and `modalities` modalities.
    pub fn new(num_text_tokens: usize, modalities: usize) -> Self {
        let n = num_text_tokens as u32;
        let m = modalities as u32;
        Self {
            text: n,
            sos: n,
            eos: n + 1,
            null: n + 2,
            som: (0..m).map(|i| n + 3 + i).collect(),
            eom: (0..m).map(|i| n + 3 + m + i).collect(),
            meta: n + 3 + 2 * m,
            size: num_text_tokens + 3 + 2 * modalities + 129,
        }
    }

    /// The ids of a shape string's characters (`char_tokenize(s, offset = meta + 1)`).
    pub fn chars(&self, s: &str) -> Vec<u32> {
        s.bytes().map(|b| self.meta + 1 + b as u32).collect()
    }

    /// The shape string of character ids (`decode_chars`: ids below the offset clamp to 0,
    /// above 127 to 127).
    pub fn decode_chars(&self, ids: &[u32]) -> String {
        ids.iter()
            .map(|&i| (i.saturating_sub(self.meta + 1)).min(127) as u8 as char)
            .collect()
    }
}

/// One modality as the model sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModalitySpec {
    /// Channels per token.
    pub dim_latent: usize,
    /// `[C, …]` latents (else `[…, C]`).
    pub channel_first: bool,
    /// The default shape (token grid), if any.
    pub default_shape: Option<Vec<usize>>,
}

impl TransfusionConfig {
    /// Reads and checks `config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let cfg: Self = any2any_core::loading::read_json(path)?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn bad(path: &Path, msg: impl Into<String>) -> Error {
        Error::Config {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }

    /// Refuses what this implementation cannot run, naming the field.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let t = &self.transformer;
        if t.dim == 0 || t.depth == 0 || t.heads == 0 || t.dim_head == 0 || t.dim_head % 2 == 1 {
            return Err(Self::bad(
                path,
                format!(
                    "transformer: dim {}, depth {}, heads {}, dim_head {} (all ≥ 1, dim_head even)",
                    t.dim, t.depth, t.heads, t.dim_head
                ),
            ));
        }
        if t.dim % 2 == 1 {
            return Err(Self::bad(
                path,
                "transformer.dim must be even (time embedding)",
            ));
        }
        if t.attn_kwargs.softcap_value.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return Err(Self::bad(
                path,
                "transformer.attn_kwargs.softcap_value must be > 0 (the library divides by it)",
            ));
        }
        for (name, v) in [
            (
                "pre_post_transformer_enc_dec",
                &self.pre_post_transformer_enc_dec,
            ),
            ("modality_encoder", &self.modality_encoder),
            ("modality_decoder", &self.modality_decoder),
        ] {
            if v.as_ref().is_some_and(|v| !v.is_null()) {
                return Err(Self::bad(
                    path,
                    format!("{name}: modules cannot be loaded from JSON (export without it)"),
                ));
            }
        }
        if self.num_modalities() != 1 {
            return Err(Self::bad(
                path,
                format!(
                    "{} modalities: only one modality is supported",
                    self.num_modalities()
                ),
            ));
        }
        if self.add_pos_emb.as_ref().and_then(|a| a.get(0)) == Some(true) {
            return Err(Self::bad(
                path,
                "add_pos_emb: axial positional embeddings are not supported",
            ));
        }
        let m = self.modality(0);
        if m.dim_latent == 0 {
            return Err(Self::bad(path, "dim_latent must be ≥ 1"));
        }
        if let Some(s) = &m.default_shape {
            if s.is_empty() || s.contains(&0) {
                return Err(Self::bad(
                    path,
                    format!("modality_default_shape {s:?}: every side must be ≥ 1"),
                ));
            }
        }
        OdeMethod::parse(&self.odeint_kwargs.method, path)?;
        Ok(())
    }

    /// Modalities: the length of the longest per-modality argument (at least 1).
    pub fn num_modalities(&self) -> usize {
        let shapes = match &self.modality_default_shape {
            Some(DefaultShapes::Each(v)) => Some(v.len()),
            _ => None,
        };
        [
            self.dim_latent.as_ref().and_then(PerModality::count),
            self.channel_first_latent
                .as_ref()
                .and_then(PerModality::count),
            shapes,
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(1)
    }

    /// Modality `i`'s latent layout.
    pub fn modality(&self, i: usize) -> ModalitySpec {
        let shape = match &self.modality_default_shape {
            Some(DefaultShapes::One(s)) => Some(s.clone()),
            Some(DefaultShapes::Each(v)) => v.get(i).cloned().flatten(),
            None => None,
        };
        ModalitySpec {
            dim_latent: self
                .dim_latent
                .as_ref()
                .and_then(|d| d.get(i))
                .unwrap_or(self.transformer.dim),
            channel_first: self
                .channel_first_latent
                .as_ref()
                .and_then(|c| c.get(i))
                .unwrap_or(false),
            default_shape: shape,
        }
    }

    /// The vocabulary layout.
    pub fn vocab(&self) -> Vocab {
        Vocab::new(self.num_text_tokens, self.num_modalities())
    }

    /// LASER attention (`attn_laser` or `attn_kwargs.laser`; the keyword argument wins as
    /// Python applies `**attn_kwargs` last).
    pub fn laser(&self) -> bool {
        let t = &self.transformer;
        t.attn_kwargs.laser.unwrap_or(t.attn_laser)
    }

    /// The inner width of the GEGLU feed-forward, `int(dim · f · 2 / 3)`.
    pub fn ff_inner(&self) -> usize {
        let t = &self.transformer;
        (t.dim as f64 * t.ff_expansion_factor * 2.0 / 3.0) as usize
    }
}
