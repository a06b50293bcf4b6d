//! Chameleon / Anole (HF `model_type: chameleon`): Llama-style backbone with per-head q/k
//! LayerNorm, image tokens in the text vocabulary (`IMGIMG…Z`), a Make-a-Scene VQGAN image
//! tokenizer (HF encoder) and the taming decoder from the original `vqgan.ckpt`.

pub mod backend;
pub mod config;
pub mod vq;

pub use backend::{load, matches, ChameleonBackend};
pub use config::{ChameleonConfig, SpecialIds, VocabMapping, VqConfig};
