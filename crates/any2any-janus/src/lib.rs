//! Janus-Pro (deepseek-community/Janus-Pro-1B, -7B; HF transformers layout) for any2any.

pub mod backend;
pub mod config;
pub mod model;
pub mod vision;
pub mod vq;

pub use backend::{load, matches, JanusBackend};
