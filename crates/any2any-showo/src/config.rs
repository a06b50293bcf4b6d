//! Show-o's `config.json`, the Phi backbone config next to it, and the special ids of its
//! vocabulary.

use any2any_core::backbone::{BackboneConfig, PhiConfig, QkNorm};
use any2any_core::{Error, Result};
use serde::Deserialize;
use std::path::Path;

/// Show-o's diffusers-style `config.json` (`_class_name: "Showo"`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct ShowoConfig {
    /// Entries of the whole vocabulary: LLM, special tokens, codebook, mask.
    pub vocab_size: usize,
    /// Entries of the Phi tokenizer's vocabulary (the first ids).
    pub llm_vocab_size: usize,
    /// MAGVIT-v2 codebook entries.
    pub codebook_size: usize,
    /// Image tokens of a generated image (its code grid, `grid × grid`).
    pub num_vq_tokens: usize,
    /// The id of a masked image token (last of the vocabulary).
    pub mask_token_id: usize,
    /// The Phi config: a local file next to config.json, or a hub id (then
    /// `phi_config.json` is used).
    #[serde(default)]
    pub llm_model_path: Option<String>,
    /// Whether understanding uses CLIP-ViT features (not supported: MAGVIT codes only).
    #[serde(default)]
    pub w_clip_vit: bool,
}

/// Special ids of a Show-o vocabulary: the LLM vocab, then 10 new special tokens
/// (`<|pad|> <|soi|> <|eoi|> <|sov|> <|eov|> <|t2i|> <|mmu|> <|t2v|> <|v2v|> <|lvg|>`), then the
/// codebook, then the mask id (last).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Vocab {
    /// Entries of the LLM vocabulary; the special tokens follow.
    pub llm_vocab_size: usize,
    /// `<|pad|>`: fills the text slots of a t2i prompt.
    pub pad: u32,
    /// `<|soi|>`: start of an image span.
    pub soi: u32,
    /// `<|eoi|>`: end of an image span.
    pub eoi: u32,
    /// `<|t2i|>`: first token of a text→image prompt.
    pub t2i: u32,
    /// `<|mmu|>`: first token of an understanding (image→text) prompt.
    pub mmu: u32,
    /// Id of code 0: code `k` is id `code_offset + k`.
    pub code_offset: u32,
    /// MAGVIT-v2 codebook entries.
    pub codebook_size: usize,
    /// The masked image token.
    pub mask: u32,
    /// Entries of the whole vocabulary.
    pub vocab_size: usize,
}

/// The number of special tokens Show-o adds after the LLM vocabulary (lives in its yaml).
pub const NUM_NEW_SPECIAL_TOKENS: usize = 10;

impl ShowoConfig {
    /// The special ids this configuration implies.
    pub fn vocab(&self) -> Vocab {
        let l = self.llm_vocab_size as u32;
        Vocab {
            llm_vocab_size: self.llm_vocab_size,
            pad: l,
            soi: l + 1,
            eoi: l + 2,
            t2i: l + 5,
            mmu: l + 6,
            code_offset: l + NUM_NEW_SPECIAL_TOKENS as u32,
            codebook_size: self.codebook_size,
            mask: self.mask_token_id as u32,
            vocab_size: self.vocab_size,
        }
    }

    /// Reads `config.json` and the Phi config next to it (`llm_model_path` when it names a local
    /// file, else `phi_config.json`, else phi-1_5 defaults); returns the backbone config with
    /// Show-o's overrides (vocab from config.json, `qk_layernorm` forced on).
    pub fn load(config: &Path) -> Result<(Self, BackboneConfig)> {
        let cfg: ShowoConfig = any2any_core::loading::read_json(config)?;
        let dir = config.parent().unwrap_or(Path::new("."));
        let mut candidates = Vec::new();
        if let Some(p) = &cfg.llm_model_path {
            candidates.push(dir.join(p));
        }
        candidates.push(dir.join("phi_config.json"));
        let phi_path = candidates.into_iter().find(|p| p.is_file());
        let (phi, what): (PhiConfig, String) = match &phi_path {
            Some(p) => {
                let v: serde_json::Value = any2any_core::loading::read_config(p)?;
                any2any_core::backend::check_architectures(&v, p)?;
                let phi = any2any_core::loading::config_from_value(v, p)?;
                (phi, p.display().to_string())
            }
            None => (PhiConfig::default(), "phi-1_5 defaults".into()),
        };
        cfg.validate(config)?;
        let mut bb = phi.to_backbone(&what)?;
        bb.vocab_size = cfg.vocab_size;
        // Show-o's PhiForCausalLM forces q/k LayerNorm on, whatever the Phi config says.
        bb.qk_norm = QkNorm::Shared;
        Ok((cfg, bb))
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |msg: String| Error::Config {
            path: path.to_path_buf(),
            msg,
        };
        let grid = (self.num_vq_tokens as f64).sqrt() as usize;
        if self.num_vq_tokens == 0 || grid * grid != self.num_vq_tokens {
            return Err(bad(format!(
                "num_vq_tokens {} must be a positive square (the code grid is grid × grid)",
                self.num_vq_tokens
            )));
        }
        if self.codebook_size == 0 {
            return Err(bad("codebook_size must be > 0".into()));
        }
        let expect = self
            .llm_vocab_size
            .saturating_add(NUM_NEW_SPECIAL_TOKENS)
            .saturating_add(self.codebook_size)
            .saturating_add(1);
        if self.vocab_size != expect {
            return Err(bad(format!(
                "vocab_size {} != llm_vocab_size {} + 10 special + codebook_size {} + 1 mask",
                self.vocab_size, self.llm_vocab_size, self.codebook_size
            )));
        }
        if self.mask_token_id.checked_add(1) != Some(self.vocab_size) {
            return Err(bad(format!(
                "mask_token_id {} must be the last id (vocab_size - 1)",
                self.mask_token_id
            )));
        }
        if self.w_clip_vit {
            return Err(bad(
                "w_clip_vit (CLIP-ViT understanding features) is not supported".into(),
            ));
        }
        Ok(())
    }
}
