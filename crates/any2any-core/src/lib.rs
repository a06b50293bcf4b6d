//! The core of any2any: one token stream over text, image codes, embeddings and latents; the
//! backbone contract; the logits pipeline with classifier-free guidance; KV cache; noise, progress
//! and cancellation; image codecs; checkpoint loading.
//!
//! Family crates (`any2any-janus`, `any2any-emu3`, `any2any-showo`, `any2any-chameleon`) build
//! on it and implement [`Backend`]; the `any2any` facade picks the family of a checkpoint and
//! re-exports what users need. This crate holds what every family shares:
//!
//! - the request side: [`Request`] (a list of [`Segment`]s, the wanted [`Modality`] and
//!   [`GenerationParams`]), [`ImageInput`] with its optional [`ImageEdit`], and the [`Output`]
//!   of [`Generated`] pieces;
//! - the contract of a family: [`Backend`], [`Capabilities`] (directions, edits and parameters
//!   as data, checked before anything runs), [`Family`] (its registration);
//! - the building blocks of the loops: the [`backbone`] decoder, the [`decode`] engine (row
//!   batches, text and code loops), the [`sampling`] pipeline (CFG, temperature, top-k, top-p),
//!   the [`kv_cache`], [`noise`] sources and [`Hooks`] (progress, cancellation, streaming);
//! - image [`codec`]s, [`imageops`] and [`edit`] pre-processing, and [`loading`] of checkpoints
//!   (local directories and the Hugging Face hub).
//!
//! Every error is one typed [`Error`] naming the file, tensor or argument at fault.
//!
//! # Example
//!
//! A request, checked without a model, and the logits pipeline on a tensor:
//!
//! ```
//! use any2any_core::candle_core::{Device, Tensor};
//! use any2any_core::sampling::{LogitsPipeline, SamplingParams};
//! use any2any_core::{Error, GenerationParams, Modality, Request, ReplayNoise};
//!
//! let req = Request::new()
//!     .text("a red fox in snow")
//!     .want(Modality::Image)
//!     .seed(7);
//! req.validate()?;
//!
//! // an invalid parameter is refused, naming its argument
//! let bad = req.clone().params(GenerationParams { top_k: Some(0), ..Default::default() });
//! assert!(matches!(bad.validate(), Err(Error::InvalidArgument { name, .. }) if name == "top-k"));
//!
//! // temperature 1, top-k 2 over 4 tokens: tokens 1 and 2 are kept, token 1 holding 73% of
//! // their mass; the inverse-CDF draw of a uniform 0.9 lands on token 2
//! let logits = Tensor::new(&[[0f32, 3.0, 2.0, -1.0]], &Device::Cpu)?;
//! let pipe = LogitsPipeline::new(
//!     None,
//!     SamplingParams { temperature: 1.0, top_k: Some(2), top_p: None, min_p: None },
//! );
//! let id = pipe.sample(&logits, None, &mut ReplayNoise::uniforms(vec![0.9]))?;
//! assert_eq!(id.to_vec1::<u32>()?, vec![2]);
//! # Ok::<(), any2any_core::Error>(())
//! ```

#![warn(missing_docs)]

pub mod backbone;
pub mod backend;
pub mod codec;
pub mod decode;
pub mod edit;
pub mod error;
pub mod imageops;
pub mod kv_cache;
pub mod limits;
pub mod loading;
pub mod nn;
pub mod noise;
pub mod npy;
pub mod progress;
pub mod quant;
pub mod request;
pub mod sampling;
pub mod stream;
pub mod text_stream;

pub use backend::{Backend, Capabilities, Family, ModelInfo, Param};
pub use edit::{EditKind, Extend, ExtendDirection, ImageEdit};
pub use error::{Error, Result};
pub use loading::{LoadOptions, ModelFiles};
pub use noise::{NoiseSource, ReplayNoise, SeededNoise, StackedNoise};
pub use progress::{CancelToken, DecodeStats, Hooks, Preview, Progress, TextDelta};
pub use request::{Generated, GenerationParams, Output, Request, Speculative, Timings};
pub use stream::{Direction, ImageInput, Modality, Segment};
pub use text_stream::TextStream;

pub use candle_core;
pub use candle_nn;
pub use image;
pub use tokenizers;
