//! LWM (Large World Model, `LargeWorldModel/LWM`) for any2any, read from its JAX release.
//!
//! LWM-Chat is LLaMA-2-7B with a second, separate vocabulary for images: the 8192 codes of the
//! aMUSEd VQGAN (16×16 per 256-px frame) plus end-of-frame 8192 and end-of-vision 8193, embedded
//! by `vte` and predicted by `vision_head`. Text→text, image→text and text→image; video frames
//! in or out are not supported yet (refused with a message).
//!
//! A checkpoint loads in either layout:
//!
//! * **the JAX release as it is** (`LargeWorldModel/LWM-Chat-1M-Jax`, `-128K-Jax`, `-32K-Jax`):
//!   `params` (tux streaming msgpack, bf16, [`msgpack`]), `vqgan` (a pickled flax parameter dict,
//!   [`pickle`]; a flax msgpack state dict is read too), `tokenizer.model` (SentencePiece,
//!   [`tokenizer`]), and optionally `lwm_config.json` ([`config`]). Recognised by
//!   [`resolve_dir`] (a directory with `params` and no `config.json`);
//! * **converted** by [`convert()`] (`any2any convert`): `config.json` (`model_type: "lwm"`),
//!   `model.safetensors` (HF-style names, see [`weights`]), `tokenizer.json`. Faster to load,
//!   the same outputs.
//!
//! - [`backend`]: prompts (the training-time tokenization), sampling, the `Backend` glue;
//! - [`model`]: the decoder with both vocabularies, and the VQGAN on the core taming codec.
//!
//! # Example
//!
//! The tiny random checkpoint of the repository's tests, in the release layout: a few greedy
//! text tokens, then an image (its 16×16 codes decoded at the tiny VQGAN's 8 px per code).
//!
//! ```
//! use any2any_core::{Backend, Generated, GenerationParams, Hooks, LoadOptions, Modality, Request};
//! # let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/lwm-tiny"));
//! let files = any2any_lwm::resolve_dir(dir)?.expect("a release directory");
//! let lwm = any2any_lwm::load(&files, &LoadOptions::default())?;
//!
//! let greedy = GenerationParams { temperature: Some(0.0), max_new_tokens: Some(3), ..Default::default() };
//! let text = Request::new().text("what is a cube?").want(Modality::Text).params(greedy);
//! let out = lwm.generate_batch(&[text], &mut Hooks::new())?;
//! let Generated::Text { ids, .. } = &out[0].segments[0] else { panic!("text expected") };
//! assert!(ids.len() <= 3);
//!
//! let image = Request::new().text("a red cube").want(Modality::Image);
//! let out = lwm.generate_batch(&[image], &mut Hooks::new())?;
//! let Generated::Image { image, grid, .. } = &out[0].segments[0] else { panic!("image expected") };
//! assert_eq!((*grid, image.dimensions()), (Some((16, 16)), (128, 128)));
//! # Ok::<(), any2any_core::Error>(())
//! ```
#![warn(missing_docs)]

pub mod backend;
pub mod config;
pub mod convert;
pub mod model;
pub mod msgpack;
pub mod pickle;
pub mod tokenizer;
pub mod weights;

pub use backend::{load, matches, LwmBackend};
pub use config::{LwmConfig, VqganConfig};
pub use convert::{convert, resolve_dir, HUB_FILES};
pub use model::{LwmModel, Vqgan};
