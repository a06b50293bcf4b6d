//! The one error type of `any2any-core`, shared by every backend crate.

use std::path::PathBuf;

/// Result alias used across the workspace.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong while loading a model or generating.
///
/// Variants name the file, tensor, shape or argument at fault so the message alone tells a user
/// what to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: malformed JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {msg}")]
    Config { path: PathBuf, msg: String },
    #[error("{dir}: no {what} found (looked for {looked_for})")]
    MissingFile {
        dir: String,
        what: String,
        looked_for: String,
    },
    #[error("{path}: invalid weight file: {msg}")]
    WeightFile { path: PathBuf, msg: String },
    #[error("tensor `{name}` not found in {files}")]
    MissingTensor { name: String, files: String },
    #[error("tensor `{name}` in {file}: expected shape {expected:?}, found {found:?}")]
    ShapeMismatch {
        name: String,
        file: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("unknown model family `{found}` in {path} (supported: {supported})")]
    UnknownFamily {
        found: String,
        path: PathBuf,
        supported: String,
    },
    #[error("{family} does not support {direction} (supported: {supported})")]
    Unsupported {
        family: String,
        direction: String,
        supported: String,
    },
    #[error("invalid argument `{name}`: {msg}")]
    InvalidArgument { name: String, msg: String },
    #[error("{path}: not a readable image: {msg}")]
    Image { path: PathBuf, msg: String },
    #[error("prompt is {len} tokens but the model's context holds {max} (including {reserved} tokens to generate)")]
    ContextOverflow {
        len: usize,
        max: usize,
        reserved: usize,
    },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("hub: {0}")]
    Hub(String),
    #[error("cancelled at {stage} step {step} of {total}")]
    Cancelled {
        stage: String,
        step: usize,
        total: usize,
    },
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
            other => Error::Candle(other),
        }
    }
}

impl From<Error> for candle_core::Error {
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
