//! Chameleon / Anole (HF `model_type: chameleon`): Llama-style backbone with per-head q/k
//! LayerNorm, image tokens in the text vocabulary (`IMGIMG…Z`), a Make-a-Scene VQGAN image
//! tokenizer and the taming decoder. Loads the HF layout (config.json + safetensors, decoder from
//! `vqgan_decoder.safetensors` or `vqgan.ckpt`) and Meta's original release layout
//! (`models/7b/consolidated.pth` + `tokenizer/{text_tokenizer.json, vqgan.ckpt, vqgan.yaml}`).

pub mod backend;
pub mod config;
pub mod original;
pub mod vq;
pub mod vq_files;

pub use backend::{load, matches, ChameleonBackend};
pub use config::{ChameleonConfig, SpecialIds, VocabMapping, VqConfig};
pub use vq_files::{
    load_vq, load_vq_component, load_vq_files, LoadedVq, VqFiles, VqFormat, VQGAN_LAYOUT,
};

/// Chameleon's own components (for [`any2any_core::Family::components`]): the VQGAN.
pub const COMPONENTS: &[any2any_core::loading::ComponentLayout] = &[VQGAN_LAYOUT];
