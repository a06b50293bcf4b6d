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
//!
//! # Example
//!
//! The tiny random checkpoint of the repository's tests, loaded directly (no facade): a few
//! greedy text tokens (text only: the image tokens are masked), then an image, its code
//! grid decoded by the taming VQGAN into 32×32 pixels (a 16×16 code grid).
//!
//! ```
//! use any2any_core::{Backend, Generated, GenerationParams, Hooks, LoadOptions, Modality};
//! use any2any_core::{ModelFiles, Request};
//! # let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/chameleon-tiny"));
//! let mut files = ModelFiles::from_dir(dir)?;
//! files.add_layout_components(any2any_chameleon::COMPONENTS)?;
//! let chameleon = any2any_chameleon::load(&files, &LoadOptions::default())?;
//!
//! let greedy = GenerationParams { temperature: Some(0.0), max_new_tokens: Some(3), ..Default::default() };
//! let text = Request::new().text("what is a cat?").want(Modality::Text).params(greedy);
//! let out = chameleon.generate_batch(&[text], &mut Hooks::new())?;
//! let Generated::Text { ids, .. } = &out[0].segments[0] else { panic!("text expected") };
//! assert!(ids.len() <= 3);
//!
//! let image = Request::new()
//!     .text("a red cat.")
//!     .want(Modality::Image)
//!     .params(GenerationParams { seed: 3, ..Default::default() });
//! let out = chameleon.generate_batch(&[image], &mut Hooks::new())?;
//! let Generated::Image { image, grid, .. } = &out[0].segments[0] else { panic!("image expected") };
//! assert_eq!((*grid, image.dimensions()), (Some((16, 16)), (32, 32)));
//! # Ok::<(), any2any_core::Error>(())
//! ```
#![warn(missing_docs)]

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
