//! JanusFlow (deepseek-ai/JanusFlow-1.3B) for any2any: one LLaMA that reads images through a
//! SigLIP tower and writes them by rectified flow over SDXL-VAE latents.
//!
//! - understanding (image→text, text→text): the `deepseek` template; an image's BOI slot and
//!   placeholders take `[beg_of_und_embed, aligner(SigLIP(image))]`; greedy or sampled text;
//! - generation (text→image): the prompt without its last token, a timestep token and the
//!   latent's tokens from the ShallowUViT encoder; the LLM's last hidden states go through the
//!   ShallowUViT decoder to a velocity; Euler steps from noise (t = 0) to data (t = 1) with CFG
//!   over masked-prompt rows; the SDXL VAE (component `vae`, default `stabilityai/sdxl-vae`)
//!   decodes the latent.
//!
//! [`JanusFlowBackend`] implements [`Backend`](any2any_core::Backend); the `any2any` facade
//! picks it for a `config.json` with `model_type: "multi_modality"` and a
//! `vision_gen_enc_config` ([`matches()`]).
//!
//! - [`backend`]: prompts, batching, the VAE component;
//! - [`flow`]: the velocity [`Denoiser`](any2any_core::decode::Denoiser) with the cached prefix;
//! - [`model`]: the weights; [`uvit`]: the ShallowUViT encoder/decoder; [`vision`]: the
//!   timm-named SigLIP tower; [`config`]: the checkpoint's JSON files.
//!
//! # Example
//!
//! The tiny random checkpoint of the repository's tests (its VAE inside as `vae/`): two
//! flow steps, then a few tokens.
//!
//! ```
//! use any2any_core::{Backend, Generated, GenerationParams, Hooks, LoadOptions, Modality};
//! use any2any_core::{ModelFiles, Request};
//! # let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/janusflow-tiny"));
//! let files = ModelFiles::from_dir(dir)?;
//! let jf = any2any_janusflow::load(&files, &LoadOptions::default())?;
//! assert_eq!(jf.capabilities().family, "janusflow");
//!
//! let t2i = Request::new()
//!     .text("a red fox")
//!     .want(Modality::Image)
//!     .params(GenerationParams { steps: Some(2), ..Default::default() })
//!     .seed(1);
//! let out = jf.generate_batch(&[t2i], &mut Hooks::new())?;
//! assert_eq!(out[0].images()[0].dimensions(), (64, 64));
//!
//! let text = Request::new()
//!     .text("Say hi.")
//!     .want(Modality::Text)
//!     .params(GenerationParams { max_new_tokens: Some(4), ..Default::default() });
//! let out = jf.generate_batch(&[text], &mut Hooks::new())?;
//! let Generated::Text { ids, .. } = &out[0].segments[0] else { panic!("text expected") };
//! assert!(!ids.is_empty() && ids.len() <= 4);
//! # Ok::<(), any2any_core::Error>(())
//! ```
#![warn(missing_docs)]

pub mod backend;
pub mod config;
pub mod flow;
pub mod model;
pub mod uvit;
pub mod vision;

pub use backend::{load, matches, JanusFlowBackend, COMPONENTS, VAE_LAYOUT};
pub use config::JanusFlowConfig;
pub use model::JanusFlowModel;
