//! The engine's error type.

use thiserror::Error;

/// Errors of the engine: configuration, the pipeline thread, operators, the store, the
/// activation model. The server maps each to an HTTP status (`server::error`).
#[derive(Debug, Error)]
pub enum PipelineError {
    /// Bad configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// The input cannot be applied (it is dead-lettered alone).
    #[error("{0}")]
    BadRequest(String),
    /// Something named does not exist (or is out of the caller's scope).
    #[error("{0}")]
    NotFound(String),
    /// The pipeline is shutting down, restarting or overloaded.
    #[error("{0}")]
    Unavailable(String),
    /// A stage failed.
    #[error(transparent)]
    Operator(#[from] operators::OperatorError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// I/O.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The activation model or a KV cache failed.
    #[error(transparent)]
    Activation(#[from] activation::ActivationError),
}

impl PipelineError {
    /// Whether the failure belongs to the environment (I/O, a full map, a remote service, a
    /// pipeline restart), so the same input may succeed later: the batch is retried and not
    /// acknowledged. Anything else belongs to the input and dead-letters it alone.
    pub fn is_transient(&self) -> bool {
        match self {
            PipelineError::Store(s) => s.is_transient(),
            PipelineError::Operator(o) => {
                o.retryable() || matches!(o, operators::OperatorError::Fatal(_))
            }
            PipelineError::Io(_) | PipelineError::Unavailable(_) => true,
            PipelineError::Config(_)
            | PipelineError::BadRequest(_)
            | PipelineError::NotFound(_)
            | PipelineError::Activation(_) => false,
        }
    }
}
