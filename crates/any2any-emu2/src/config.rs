//! The encoder's `config.json` (HF `EmuForCausalLM`: LLaMA fields at the top, the EVA tower in
//! `vision_config` with the official `CLIPVisionCfg` names).

use any2any_core::backbone::LlamaTextConfig;
use any2any_core::{Error, Result};
use serde::Deserialize;
use std::path::Path;

/// `vision_config`: EVA-CLIP-E (`eva-clip-4b-14-x`) as `Emu2/emu/conf/emu_conf.py` builds it;
/// every default is Emu2's.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct EvaConfig {
    /// Input side in pixels (448).
    #[serde(default = "d_image")]
    pub image_size: usize,
    /// Patch side (14).
    #[serde(default = "d_patch")]
    pub patch_size: usize,
    /// Tower width (1792).
    #[serde(default = "d_width")]
    pub width: usize,
    /// Blocks (64).
    #[serde(default = "d_layers")]
    pub layers: usize,
    /// Width per head (112: 16 heads).
    #[serde(default = "d_head")]
    pub head_width: usize,
    /// MLP width over tower width (8.571…; the MLP is `int(width · ratio)` wide).
    #[serde(default = "d_ratio")]
    pub mlp_ratio: f64,
    /// Whether attention has `q_bias` / `v_bias` (true).
    #[serde(default = "d_true")]
    pub qkv_bias: bool,
    /// Post-norm blocks, `x + norm(f(x))` (true; pre-norm towers are refused).
    #[serde(default = "d_true")]
    pub postnorm: bool,
    /// Rotary embeddings in the tower (false; refused when set).
    #[serde(default)]
    pub rope: bool,
    /// Visual tokens per image, the regression's query count (64).
    #[serde(default = "d_query")]
    pub n_query: usize,
    /// LayerNorm epsilon (1e-6).
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
}

fn d_image() -> usize {
    448
}
fn d_patch() -> usize {
    14
}
fn d_width() -> usize {
    1792
}
fn d_layers() -> usize {
    64
}
fn d_head() -> usize {
    112
}
fn d_ratio() -> f64 {
    8.571428571428571
}
fn d_true() -> bool {
    true
}
fn d_query() -> usize {
    64
}
fn d_eps() -> f64 {
    1e-6
}

impl Default for EvaConfig {
    fn default() -> Self {
        Self {
            image_size: d_image(),
            patch_size: d_patch(),
            width: d_width(),
            layers: d_layers(),
            head_width: d_head(),
            mlp_ratio: d_ratio(),
            qkv_bias: true,
            postnorm: true,
            rope: false,
            n_query: d_query(),
            layer_norm_eps: d_eps(),
        }
    }
}

impl EvaConfig {
    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size.max(1)
    }
    /// The MLP's hidden width, `int(width · mlp_ratio)` as the reference rounds it.
    pub fn mlp_width(&self) -> usize {
        (self.width as f64 * self.mlp_ratio) as usize
    }
    /// Heads.
    pub fn heads(&self) -> usize {
        self.width / self.head_width.max(1)
    }
    /// The avg-pool stride taking the patch grid to `n_query` tokens.
    pub fn pool_stride(&self) -> usize {
        let q = (self.n_query as f64).sqrt() as usize;
        self.grid() / q.max(1)
    }

    /// What the tower cannot be, as a message naming the field.
    pub fn check(&self) -> std::result::Result<(), String> {
        if !self.postnorm {
            return Err(
                "vision_config.postnorm = false: only Emu2's post-norm EVA blocks are supported"
                    .into(),
            );
        }
        if self.rope {
            return Err("vision_config.rope = true: Emu2's EVA tower has no RoPE".into());
        }
        if self.patch_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return Err(format!(
                "vision_config.image_size {} is not a multiple of patch_size {}",
                self.image_size, self.patch_size
            ));
        }
        if self.head_width == 0 || !self.width.is_multiple_of(self.head_width) {
            return Err(format!(
                "vision_config.width {} is not a multiple of head_width {}",
                self.width, self.head_width
            ));
        }
        let q = (self.n_query as f64).sqrt() as usize;
        let g = self.grid();
        if q == 0 || q * q != self.n_query || !g.is_multiple_of(q) {
            return Err(format!(
                "vision_config.n_query {}: must be a square whose side divides the {g}×{g} patch grid",
                self.n_query
            ));
        }
        Ok(())
    }
}

/// The multimodal encoder's `config.json`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Emu2Config {
    /// The LLaMA fields.
    #[serde(flatten)]
    pub text: LlamaTextConfig,
    /// The EVA tower.
    #[serde(default)]
    pub vision_config: EvaConfig,
    /// The tower width the projections map from/to (must equal `vision_config.width`).
    pub d_model: Option<usize>,
}

impl Emu2Config {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let raw: serde_json::Value = any2any_core::loading::read_json(path)?;
        any2any_core::backend::check_architectures(&raw, path)?;
        let cfg: Self = serde_json::from_value(raw).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        let bad = |msg: String| Error::Config {
            path: path.to_path_buf(),
            msg,
        };
        cfg.vision_config.check().map_err(bad)?;
        if let Some(d) = cfg.d_model.filter(|&d| d != cfg.vision_config.width) {
            return Err(bad(format!(
                "d_model {d} differs from vision_config.width {}",
                cfg.vision_config.width
            )));
        }
        Ok(cfg)
    }
}
