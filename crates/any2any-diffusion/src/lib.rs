//! Diffusion decoders shared by the any2any families that turn continuous latents or regressed
//! embeddings into pixels (JanusFlow's SDXL VAE; Emu2's UNet; later SEED-LLaMA and NExT-GPT).
//!
//! Every piece loads from a diffusers component directory (`config.json` + safetensors) as
//! diffusers saves it, so a `model_index.json` repository loads as is.
#![warn(missing_docs)]

pub mod scheduler;
pub mod unet;
pub mod vae;
