//! The one error type of `any2any-core`, shared by every backend crate.

use std::path::PathBuf;

/// Result alias used across the workspace.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong while loading a model or generating.
///
/// Variants name the file, tensor, shape or argument at fault so the message alone tells a user
/// what to fix.
///
/// The enum is `#[non_exhaustive]`: match the variants you handle and keep a `_` arm.
///
/// ```
/// use any2any_core::{Error, GenerationParams};
/// let bad = GenerationParams { top_p: Some(1.5), ..Default::default() };
/// match bad.validate() {
///     Err(Error::InvalidArgument { name, .. }) => assert_eq!(name, "top-p"),
///     other => panic!("{other:?}"),
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file (or directory) at fault.
        path: PathBuf,
        /// What the operating system reported.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file (config.json, tokenizer_config.json, …) does not parse.
    #[error("{path}: malformed JSON: {source}")]
    Json {
        /// The file at fault.
        path: PathBuf,
        /// The parser's error, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// A configuration file parses but holds values the family cannot use.
    #[error("{path}: {msg}")]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// A file a checkpoint needs is absent (locally or in the hub repository).
    #[error("{dir}: no {what} found (looked for {looked_for})")]
    MissingFile {
        /// The directory, or `hub:<id>`, that was searched.
        dir: String,
        /// What was looked for ("config.json", "weights", "tokenizer").
        what: String,
        /// The file names or patterns tried.
        looked_for: String,
    },
    /// A weight file (safetensors, checkpoint) is unreadable or malformed.
    #[error("{path}: invalid weight file: {msg}")]
    WeightFile {
        /// The weight file.
        path: PathBuf,
        /// What is wrong with it (naming the key where one is at fault).
        msg: String,
    },
    /// A tensor the model needs is in none of the weight files.
    #[error("tensor `{name}` not found in {files}")]
    MissingTensor {
        /// The tensor's key, e.g. `model.layers.0.self_attn.q_proj.weight`.
        name: String,
        /// The weight files searched.
        files: String,
    },
    /// A tensor has another shape than the configuration implies.
    #[error("tensor `{name}` in {file}: expected shape {expected:?}, found {found:?} (the expected shape comes from the config's sizes: check its hidden_size, intermediate_size, vocab_size, head counts or channels against the weights)")]
    ShapeMismatch {
        /// The tensor's key.
        name: String,
        /// The weight file holding it.
        file: String,
        /// The shape the configuration implies.
        expected: Vec<usize>,
        /// The shape stored in the file.
        found: Vec<usize>,
    },
    /// No registered family recognises the checkpoint's config.json.
    #[error("unknown model family `{found}` in {path} (supported: {supported})")]
    UnknownFamily {
        /// The `model_type` (or `architectures[0]`, `_class_name`) found.
        found: String,
        /// The configuration file read.
        path: PathBuf,
        /// The families this build loads (with a hint where one applies).
        supported: String,
    },
    /// The family cannot serve what was asked (a direction, an image edit, an entry point).
    #[error("{family} does not support {direction} (supported: {supported})")]
    Unsupported {
        /// The family's short name ("janus").
        family: String,
        /// What was asked ("text→image", "inpainting (image + mask)", …).
        direction: String,
        /// What the family does serve.
        supported: String,
    },
    /// A request, parameter or input is invalid; `name` is the argument (the CLI flag) at fault.
    #[error("invalid argument `{name}`: {msg}")]
    InvalidArgument {
        /// The argument, as the CLI names it ("top-p", "mask", "raw-ids", …).
        name: String,
        /// Why the value is refused.
        msg: String,
    },
    /// An image file cannot be decoded or written.
    #[error("{path}: not a readable image: {msg}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// The image codec's error.
        msg: String,
    },
    /// The prompt and the tokens to generate do not fit the model's context.
    #[error("prompt is {len} tokens but the model's context holds {max} (including {reserved} tokens to generate)")]
    ContextOverflow {
        /// Tokens of the prompt (or of the cache after an append).
        len: usize,
        /// The context length (or cache capacity).
        max: usize,
        /// Tokens reserved for generation.
        reserved: usize,
    },
    /// The tokenizer failed to load, encode or decode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The Hugging Face hub (or its offline cache) could not provide a file.
    #[error("hub: {0}")]
    Hub(String),
    /// A [`CancelToken`](crate::CancelToken) stopped the loop.
    #[error("cancelled at {stage} step {step} of {total}")]
    Cancelled {
        /// The loop's stage ("image", "text tokens", …).
        stage: String,
        /// The step it stopped before.
        step: usize,
        /// The steps the loop would have run.
        total: usize,
    },
    /// An allocation sized by a request or a config would exceed the memory budget
    /// ([`limits::memory_budget`](crate::limits::memory_budget)); refused before it is made.
    #[error("{what} needs about {} but the memory budget is {} (physical memory, or ANY2ANY_MEMORY_LIMIT)", crate::limits::human_bytes(*bytes), crate::limits::human_bytes(*budget as u128))]
    TooLarge {
        /// What would be allocated, and the argument or config field that sized it.
        what: String,
        /// Its estimated size in bytes.
        bytes: u128,
        /// The budget in bytes.
        budget: u64,
    },
    /// A loop's values (logits, latents) or the decoded pixels hold NaN or infinity.
    #[error("NaN or infinite values at the {stage} stage: the weights or the config give no usable numbers (a corrupt tensor, rms_norm_eps ≤ 0, rope_theta ≤ 0, or a dtype too narrow)")]
    NonFinite {
        /// The stage whose values are not finite ("text logits", "decoded pixels", …).
        stage: String,
    },
    /// A weight cannot be quantized to, or run at, the asked type: a dimension not divisible by
    /// the type's block size, a type the device has no kernel for, a quantized file whose type
    /// or family does not match what is loaded.
    #[error("tensor `{tensor}` {shape:?} as {quant}: {msg}")]
    Quant {
        /// The tensor (its checkpoint name), or the file for a whole-file mismatch.
        tensor: String,
        /// Its shape (`[out, in]` for a linear weight); empty when not known.
        shape: Vec<usize>,
        /// The quantized type asked for or stored (`q4k`, `q8_0`, …).
        quant: String,
        /// What is wrong and what to do.
        msg: String,
    },
    /// An error of the tensor library.
    #[error(transparent)]
    Candle(candle_core::Error),
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(name: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::InvalidArgument {
            name: name.into(),
            msg: msg.into(),
        }
    }
}

impl From<candle_core::Error> for Error {
    /// Unwraps our own errors that travelled through candle (the weight store raises them inside
    /// `VarBuilder` calls) so callers see the typed variant, not a string.
    fn from(e: candle_core::Error) -> Self {
        match e {
            candle_core::Error::WrappedContext { wrapped, context } => {
                match wrapped.downcast::<Error>() {
                    Ok(ours) => *ours,
                    Err(other) => Error::Candle(candle_core::Error::WrappedContext {
                        wrapped: other,
                        context,
                    }),
                }
            }
            candle_core::Error::WithBacktrace { inner, .. } => Error::from(*inner),
            candle_core::Error::Context { inner, context } => match Error::from(*inner) {
                Error::Candle(c) => Error::Candle(candle_core::Error::Context {
                    inner: Box::new(c),
                    context,
                }),
                ours => ours,
            },
            candle_core::Error::UnsupportedDTypeForOp(dtype, op) => Error::invalid(
                "dtype",
                format!(
                    "{dtype:?} has no `{op}` kernel on this device in candle (on CPU use f32, the \
                     default, or f16; bf16 needs CUDA or Metal)"
                ),
            ),
            other => Error::Candle(other),
        }
    }
}

impl From<Error> for candle_core::Error {
    /// Wraps our error so that it survives a trip through candle (see `From<candle_core::Error>`).
    fn from(e: Error) -> Self {
        match e {
            Error::Candle(c) => c,
            ours => candle_core::Error::WrappedContext {
                wrapped: Box::new(ours),
                context: String::new(),
            },
        }
    }
}
