//! The core of any2any: one token stream over text, image codes, embeddings and latents; the
//! backbone contract; the logits pipeline with classifier-free guidance; KV cache; noise, progress
//! and cancellation; image codecs; checkpoint loading.

pub mod backbone;
pub mod backend;
pub mod codec;
pub mod decode;
pub mod edit;
pub mod error;
pub mod imageops;
pub mod kv_cache;
pub mod loading;
pub mod nn;
pub mod noise;
pub mod npy;
pub mod progress;
pub mod request;
pub mod sampling;
pub mod stream;
pub mod text_stream;

pub use backend::{Backend, Capabilities, Family, ModelInfo, Param};
pub use edit::{EditKind, Extend, ExtendDirection, ImageEdit};
pub use error::{Error, Result};
pub use loading::{LoadOptions, ModelFiles};
pub use noise::{NoiseSource, ReplayNoise, SeededNoise, StackedNoise};
pub use progress::{CancelToken, Hooks, Preview, Progress, TextDelta};
pub use request::{Generated, GenerationParams, Output, Request, Timings};
pub use stream::{Direction, ImageInput, Modality, Segment};
pub use text_stream::TextStream;

pub use candle_core;
pub use candle_nn;
pub use image;
pub use tokenizers;
