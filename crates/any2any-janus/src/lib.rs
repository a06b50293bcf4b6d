//! Janus-Pro (deepseek-community/Janus-Pro-1B, -7B; HF transformers layout) for any2any.
//!
//! One Llama language model serves three directions: text→text, image→text (a SigLIP tower
//! whose aligned features replace the prompt's image placeholders) and text→image (image codes
//! drawn one by one from a generation head with classifier-free guidance, then decoded by the
//! VQ-16 tokenizer). [`JanusBackend`] implements [`Backend`](any2any_core::Backend); the
//! `any2any` facade picks it for a `config.json` with `model_type: "janus"` ([`matches()`]) and
//! loads it with [`load`].
//!
//! - [`backend`]: the backend (prompt templates, batching, CFG streams);
//! - [`model`]: the weights ([`JanusModel`]);
//! - [`config`]: `config.json` and `preprocessor_config.json`;
//! - [`vision`]: the understanding tower and aligner;
//! - [`vq`]: the VQ-16 image tokenizer.
//!
//! # Example
//!
//! The tiny random checkpoint of the repository's tests, loaded directly (no facade): a few
//! greedy text tokens, then an image.
//!
//! ```
//! use any2any_core::{Backend, Generated, GenerationParams, Hooks, LoadOptions, Modality};
//! use any2any_core::{ModelFiles, Request};
//! # let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/janus-tiny"));
//! let files = ModelFiles::from_dir(dir)?;
//! let janus = any2any_janus::load(&files, &LoadOptions::default())?;
//! assert_eq!(janus.capabilities().family, "janus");
//!
//! let text = Request::new()
//!     .text("What is a fox?")
//!     .want(Modality::Text)
//!     .params(GenerationParams { max_new_tokens: Some(4), ..Default::default() });
//! let out = janus.generate_batch(&[text], &mut Hooks::new())?;
//! let Generated::Text { ids, .. } = &out[0].segments[0] else { panic!("text expected") };
//! assert!(!ids.is_empty() && ids.len() <= 4);
//!
//! let image = Request::new().text("a red fox").want(Modality::Image).seed(1);
//! let out = janus.generate_batch(&[image], &mut Hooks::new())?;
//! assert_eq!(out[0].images().len(), 1);
//! # Ok::<(), any2any_core::Error>(())
//! ```
#![warn(missing_docs)]

pub mod backend;
pub mod config;
pub mod model;
pub mod vision;
pub mod vq;

pub use backend::{load, matches, JanusBackend};
pub use config::JanusConfig;
pub use model::JanusModel;
