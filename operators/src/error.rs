//! The operators crate's one error type.

use thiserror::Error;

/// Errors from operators, the embedder and event decoding.
#[derive(Debug, Error)]
pub enum OperatorError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The model could not be loaded or run.
    #[error("model: {0}")]
    Model(String),
    /// The model files are missing or wrong.
    #[error("model files: {0}")]
    ModelFiles(String),
    /// An event or request is malformed. Not retryable.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A remote service failed; retrying may help.
    #[error("remote: {0}")]
    Remote(String),
    /// I/O.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The operator cannot go on (a lost device, a corrupted model state): the batch fails
    /// without being acknowledged and the pipeline restarts with freshly built operators.
    #[error("fatal: {0}")]
    Fatal(String),
    /// An operator panicked on this event (caught; the event is dead-lettered).
    #[error("operator {operator} panicked: {message}")]
    Panic {
        /// The operator.
        operator: String,
        /// The panic message.
        message: String,
    },
}

impl OperatorError {
    /// Whether retrying the same input may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            OperatorError::Remote(_) | OperatorError::Io(_) => true,
            OperatorError::Store(s) => s.is_transient(),
            OperatorError::Panic { .. }
            | OperatorError::Fatal(_)
            | OperatorError::Model(_)
            | OperatorError::ModelFiles(_)
            | OperatorError::Invalid(_) => false,
        }
    }
}

impl From<candle_core::Error> for OperatorError {
    fn from(e: candle_core::Error) -> Self {
        OperatorError::Model(e.to_string())
    }
}

/// Result alias.
pub type Result<T, E = OperatorError> = std::result::Result<T, E>;
