//! Emu2 (BAAI/Emu2-Gen, BAAI/Emu2-Chat) for any2any: the Emu paradigm, where the LLM regresses
//! continuous visual embeddings and a diffusion model turns them into pixels.
//!
//! - [`model`]: the multimodal encoder: EVA-CLIP-E ([`eva`]: post-norm blocks, no final norm,
//!   448 px), average-pooled to 64 tokens and `project_up`; the LLaMA on the core backbone;
//!   `project_down`;
//! - [`regress`]: the regression loop over the 64 query slots, KV-cached;
//! - [`generate`]: the UNet conditioning (`[cond, uncond]`, the regressed empty prompt as the
//!   negative, SDXL `text_time` from their mean) and the guided EulerDiscrete loop;
//! - [`backend`]: prompts (`<s>{text}[IMG]`, images inlined as `[IMG]<image>×64[/IMG]`), text
//!   generation through the core `TextLoop`, the components of a `model_index.json` directory;
//! - [`config`]: the encoder's `config.json`.
//!
//! # Example
//!
//! The tiny random Emu2-Gen checkpoint of the repository's tests:
//!
//! ```
//! use any2any_core::{Backend, GenerationParams, Hooks, LoadOptions, Modality, ModelFiles, Request};
//! # let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/emu2-tiny"));
//! let files = ModelFiles::from_dir(dir)?;
//! let emu = any2any_emu2::load(&files, &LoadOptions::default())?;
//! let t2i = Request::new()
//!     .text("a red fox")
//!     .want(Modality::Image)
//!     .params(GenerationParams { steps: Some(2), size: Some((16, 16)), ..Default::default() })
//!     .seed(1);
//! let out = emu.generate_batch(&[t2i], &mut Hooks::new())?;
//! assert_eq!(out[0].images()[0].dimensions(), (16, 16));
//! # Ok::<(), any2any_core::Error>(())
//! ```
#![warn(missing_docs)]

pub mod backend;
pub mod config;
pub mod eva;
pub mod generate;
pub mod model;
pub mod regress;

pub use backend::{load, matches, Emu2Backend};
pub use config::Emu2Config;
pub use model::Emu2Model;
