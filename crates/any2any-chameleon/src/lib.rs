//! Chameleon / Anole (HF `model_type: chameleon`) and Lumina-mGPT
//! (`ChameleonXLLMXForConditionalGeneration`): a Llama-style backbone with per-head q/k
//! LayerNorm, image tokens in the text vocabulary (`IMGIMG…Z`), a Make-a-Scene VQGAN image
//! tokenizer and the taming decoder.
//!
//! - [`model`]: what both share, [`ChameleonModel`] (config, backbone, LM head, VQGAN, vocabulary
//!   mapping, heads, image input → codes, outputs). Loads the HF layout (config.json +
//!   safetensors, decoder from `vqgan_decoder.safetensors` or `vqgan.ckpt`) and Meta's original
//!   release layout (`models/7b/consolidated.pth` + `tokenizer/{text_tokenizer.json, vqgan.ckpt,
//!   vqgan.yaml}`, see [`original`]).
//! - [`anole`]: [`ChameleonBackend`], family `chameleon`.
//! - [`lumina`]: [`LuminaBackend`], family `lumina`.

pub mod anole;
pub mod config;
pub mod lumina;
pub mod model;
pub mod original;
pub mod vq;
pub mod vq_files;

pub use anole::{load, matches, ChameleonBackend};
pub use config::{ChameleonConfig, SpecialIds, VocabMapping, VqConfig};
pub use lumina::LuminaBackend;
pub use model::ChameleonModel;
pub use vq_files::{
    load_vq, load_vq_component, load_vq_files, LoadedVq, VqFiles, VqFormat, VQGAN_LAYOUT,
};

/// Chameleon's and Lumina-mGPT's own components (for [`any2any_core::Family::components`]):
/// the VQGAN.
pub const COMPONENTS: &[any2any_core::loading::ComponentLayout] = &[VQGAN_LAYOUT];
