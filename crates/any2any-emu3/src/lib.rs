//! Emu3 (HF transformers layout, `model_type: emu3`) for any2any.

pub mod backend;
pub mod config;
pub mod model;
pub mod vq;

pub use backend::{load, matches, Emu3Backend};
pub use config::{Emu3Config, Emu3ImageProcessorConfig, Emu3Vocab};
pub use model::{Emu3Model, ImageTokens, Slot};
