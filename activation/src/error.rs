//! The activation crate's one error type.

use thiserror::Error;

/// Errors from loading, running and serialising the activation model and its caches.
#[derive(Debug, Error)]
pub enum ActivationError {
    /// A tensor operation failed in candle.
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
    /// The model file is missing, unreadable or not a supported Llama model.
    #[error("model file: {0}")]
    ModelFile(String),
    /// The tokenizer could not be built or failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A cache does not fit the model (layers, heads, dims, tokenizer) or is malformed.
    #[error("cache: {0}")]
    Cache(String),
    /// Bad input (too many tokens, empty prompt, an id outside the vocabulary).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// CUDA is unavailable (no driver, no NVRTC) or a CUDA call failed.
    #[error("cuda: {0}")]
    Cuda(String),
    /// I/O.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// The crate's result type.
pub type Result<T, E = ActivationError> = std::result::Result<T, E>;
