//! Show-o (showlab/Show-o) for any2any: a Phi decoder with an omni-attention mask that does
//! MaskGIT text→image over MAGVIT-v2 codes and autoregressive image→text.
//!
//! [`ShowoBackend`] implements [`Backend`](any2any_core::Backend) for text→image (MaskGIT with
//! classifier-free guidance), image→text (the image's MAGVIT codes as a bidirectional prefix)
//! and image→image as the official inpainting and extrapolation modes
//! ([`ImageInput::with_mask`](any2any_core::ImageInput::with_mask),
//! [`ImageInput::extend`](any2any_core::ImageInput::extend)). The `any2any` facade picks it
//! for a `config.json` with `_class_name: "Showo"` ([`matches()`]) and loads it with [`load`].
//!
//! - [`backend`]: the backend (prompts, edits, batching of MaskGIT passes);
//! - [`model`]: the transformer ([`ShowoModel`]); [`config`]: its configuration and vocabulary;
//! - [`maskgit`]: the text→image loop; [`mmu`]: image→text;
//! - [`prompt`]: prompt layouts and omni-attention masks; [`edit`]: inpainting and
//!   extrapolation on the code grid;
//! - [`magvit`]: the MAGVIT-v2 image tokenizer.
//!
//! # Example
//!
//! The tiny random checkpoint of the repository's tests, loaded directly (no facade): a 64×64
//! image in 2 MaskGIT steps, then a few tokens about it.
//!
//! ```
//! use any2any_core::{Backend, Generated, GenerationParams, Hooks, LoadOptions, Modality};
//! use any2any_core::{ImageInput, ModelFiles, Request};
//! # let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/showo-tiny"));
//! let files = ModelFiles::from_dir(dir)?;
//! let showo = any2any_showo::load(&files, &LoadOptions::default())?;
//!
//! let t2i = Request::new()
//!     .raw_ids(vec![17, 42, 8, 63])
//!     .want(Modality::Image)
//!     .params(GenerationParams { steps: Some(2), ..Default::default() });
//! let out = showo.generate_batch(&[t2i], &mut Hooks::new())?;
//! let Generated::Image { image, grid, .. } = &out[0].segments[0] else { panic!("image expected") };
//! assert_eq!((*grid, image.dimensions()), (Some((4, 4)), (64, 64)));
//!
//! let i2t = Request::new()
//!     .image(ImageInput::new(image.clone()))
//!     .raw_ids(vec![31, 5])
//!     .want(Modality::Text)
//!     .params(GenerationParams { max_new_tokens: Some(3), ..Default::default() });
//! let out = showo.generate_batch(&[i2t], &mut Hooks::new())?;
//! let Generated::Text { ids, .. } = &out[0].segments[0] else { panic!("text expected") };
//! assert!(ids.len() <= 3);
//! # Ok::<(), any2any_core::Error>(())
//! ```
#![warn(missing_docs)]

pub mod backend;
pub mod config;
pub mod edit;
pub mod magvit;
pub mod maskgit;
pub mod mmu;
pub mod model;
pub mod prompt;

pub use backend::{load, ShowoBackend, COMPONENTS, MAGVIT_LAYOUT};
pub use config::{ShowoConfig, Vocab};
pub use maskgit::{t2i_generate, t2i_generate_batch, MaskgitRow, T2iOptions};
pub use model::ShowoModel;

/// Whether a config.json is a Show-o checkpoint (`_class_name: "Showo"`).
pub fn matches(cfg: &serde_json::Value) -> bool {
    cfg.get("_class_name").and_then(|v| v.as_str()) == Some("Showo")
}
