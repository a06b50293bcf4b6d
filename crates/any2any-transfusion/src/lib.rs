//! Transfusion for any2any: one transformer that decodes text autoregressively and generates
//! images by flow matching inside the same sequence (causal text, bidirectional attention inside
//! each image, one rotary position per image).
//!
//! Meta released no Transfusion weights; this crate runs checkpoints of lucidrains' open
//! implementation (`pip install transfusion-pytorch`, 0.20), saved by
//! `scripts/export_transfusion.py` as a directory of `config.json` (the `Transfusion(...)`
//! keyword arguments, [`TransfusionConfig`]) and `model.safetensors` (the module's state dict,
//! its own key names). Text uses the directory's `tokenizer.json`, else bytes when
//! `num_text_tokens` is 256 ([`tokenizer`]).
//!
//! - [`model`]: the transformer ([`TransfusionModel`]); [`config`]: its configuration and
//!   vocabulary; [`sequence`]: text and latents laid out in one sequence;
//! - [`flow`]: sampling a latent (midpoint or Euler ODE, classifier-free guidance, cached
//!   prefix); [`decode`]: latent → pixels behind [`LatentDecoder`];
//! - [`backend`]: text→text, image→text, text→image and interleaved answers
//!   ([`TransfusionBackend`]).
//!
//! # Example
//!
//! The tiny random checkpoint of the repository's tests: a 4×4 pixel-space image in 2 steps.
//!
//! ```
//! use any2any_core::{Backend, Generated, GenerationParams, Hooks, LoadOptions, Modality};
//! use any2any_core::{ModelFiles, Request};
//! # let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/transfusion-tiny"));
//! let files = ModelFiles::from_dir(dir)?;
//! let tf = any2any_transfusion::load(&files, &LoadOptions::default())?;
//! let req = Request::new()
//!     .text("hi")
//!     .want(Modality::Image)
//!     .params(GenerationParams { steps: Some(2), ..Default::default() });
//! let out = tf.generate_batch(&[req], &mut Hooks::new())?;
//! let Generated::Image { image, .. } = &out[0].segments[0] else { panic!("image expected") };
//! assert_eq!(image.dimensions(), (4, 4));
//! # Ok::<(), any2any_core::Error>(())
//! ```
#![warn(missing_docs)]

pub mod backend;
pub mod config;
pub mod decode;
pub mod flow;
pub mod model;
pub mod sequence;
pub mod tokenizer;

pub use backend::TransfusionBackend;
pub use config::{OdeMethod, TransfusionConfig, Vocab};
pub use decode::{LatentDecoder, PixelSpace, VaeLatent};

use any2any_diffusion::vae::{KlVae, VAE_LAYOUT};

/// Transfusion's own components (for `Family::components`): the optional diffusers `vae`.
pub const COMPONENTS: &[any2any_core::loading::ComponentLayout] = &[VAE_LAYOUT];
pub use model::TransfusionModel;

use any2any_core::{Backend, Error, LoadOptions, ModelFiles, Result};

/// Tokens a sequence may hold (the cache is allocated for at most this many).
pub const MAX_CONTEXT: usize = 8192;

/// Whether a config.json is a Transfusion checkpoint: `_class_name: "Transfusion"` (what
/// `scripts/export_transfusion.py` writes), or the constructor's own `num_text_tokens` and
/// `transformer` arguments.
pub fn matches(cfg: &serde_json::Value) -> bool {
    cfg.get("_class_name").and_then(|v| v.as_str()) == Some("Transfusion")
        || (cfg.get("num_text_tokens").is_some_and(|v| v.is_u64())
            && cfg
                .get("transformer")
                .is_some_and(|t| t.get("dim").is_some()))
}

/// Loads a checkpoint directory (see the crate docs).
pub fn load(files: &ModelFiles, opts: &LoadOptions) -> Result<Box<dyn Backend>> {
    Ok(Box::new(load_backend(files, opts)?))
}

/// [`load`], typed.
pub fn load_backend(files: &ModelFiles, opts: &LoadOptions) -> Result<TransfusionBackend> {
    let cfg = TransfusionConfig::load(&files.config)?;
    let vb = files.var_builder(opts.dtype(), &opts.device)?;
    let model = TransfusionModel::load(vb, cfg)?;
    let tokenizer = match files.load_tokenizer()? {
        Some(t) => Some(t),
        None if model.config.num_text_tokens == 256 => Some(tokenizer::byte_level(&model.vocab)?),
        None => None,
    };
    let decoder: Option<Box<dyn LatentDecoder>> = match files.layout_component(&VAE_LAYOUT, &[])? {
        Some(c) => {
            let vae = VaeLatent::new(KlVae::from_component(&c, opts.dtype(), &opts.device)?);
            if vae.channels() != model.modality.dim_latent {
                return Err(Error::invalid(
                    "vae",
                    format!(
                        "the `vae` component has {} latent channels but the model's dim_latent \
                         is {}",
                        vae.channels(),
                        model.modality.dim_latent
                    ),
                ));
            }
            Some(Box::new(vae))
        }
        None if PixelSpace::takes(model.modality.dim_latent) => Some(Box::new(PixelSpace)),
        None => None,
    };
    TransfusionBackend::new(model, tokenizer, decoder, files.name.clone())
}
