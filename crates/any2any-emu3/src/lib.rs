//! Emu3 (HF transformers layout, `model_type: emu3`) for any2any.
//!
//! Emu3 is one Llama decoder over a vocabulary that holds text and the codes of a MoVQGAN-style
//! image tokenizer: text→text, image→text (the image's codes, row by row, in the prompt) and
//! text→image (codes drawn under a row-layout grammar, with log-prob classifier-free guidance
//! against a negative prompt, any aspect ratio). [`Emu3Backend`] implements
//! [`Backend`](any2any_core::Backend); the `any2any` facade picks it for a `config.json` with
//! `model_type: "emu3"` ([`matches()`]) and loads it with [`load`].
//!
//! - [`backend`]: the backend (chat template, image blocks, parameters);
//! - [`model`]: the weights ([`Emu3Model`]) and the constrained loops;
//! - [`config`]: `config.json`, the special ids ([`Emu3Vocab`]) and the image processor;
//! - [`vq`]: the image tokenizer.
//!
//! # Example
//!
//! The tiny random checkpoint of the repository's tests, loaded directly (no facade): a few
//! greedy text tokens, then a 6×4-pixel image (a 2×3 code grid).
//!
//! ```
//! use any2any_core::{Backend, Generated, GenerationParams, Hooks, LoadOptions, Modality};
//! use any2any_core::{ModelFiles, Request};
//! # let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/emu3-tiny"));
//! let files = ModelFiles::from_dir(dir)?;
//! let emu3 = any2any_emu3::load(&files, &LoadOptions::default())?;
//!
//! let greedy = GenerationParams { temperature: Some(0.0), max_new_tokens: Some(3), ..Default::default() };
//! let text = Request::new().text("what is a cat?").want(Modality::Text).params(greedy);
//! let out = emu3.generate_batch(&[text], &mut Hooks::new())?;
//! let Generated::Text { ids, .. } = &out[0].segments[0] else { panic!("text expected") };
//! assert!(ids.len() <= 3);
//!
//! let image = Request::new()
//!     .text("a red cat.")
//!     .want(Modality::Image)
//!     .params(GenerationParams { size: Some((6, 4)), seed: 3, ..Default::default() });
//! let out = emu3.generate_batch(&[image], &mut Hooks::new())?;
//! let Generated::Image { image, grid, .. } = &out[0].segments[0] else { panic!("image expected") };
//! assert_eq!((*grid, image.dimensions()), (Some((2, 3)), (6, 4)));
//! # Ok::<(), any2any_core::Error>(())
//! ```
#![warn(missing_docs)]

pub mod backend;
pub mod config;
pub mod model;
pub mod vq;

pub use backend::{load, matches, Emu3Backend};
pub use config::{Emu3Config, Emu3ImageProcessorConfig, Emu3Vocab};
pub use model::{Emu3Model, ImageTokens, Slot};
