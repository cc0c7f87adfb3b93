//! The pipelines crate's error type and its exhaustive mapping to HTTP statuses.

use thiserror::Error;

/// Errors of the runtime, service and HTTP layers.
#[derive(Debug, Error)]
pub enum PipelineError {
    /// Bad configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// The request is malformed or out of limits.
    #[error("{0}")]
    BadRequest(String),
    /// The body is larger than allowed.
    #[error("{0}")]
    TooLarge(String),
    /// Not found.
    #[error("{0}")]
    NotFound(String),
    /// No or an unknown API key.
    #[error("{0}")]
    Unauthorized(String),
    /// The key may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// Already exists.
    #[error("{0}")]
    Conflict(String),
    /// Over the key's rate limit.
    #[error("{message}")]
    RateLimited {
        /// What happened.
        message: String,
        /// Seconds until a request is admitted again.
        retry_after_secs: u64,
    },
    /// The query took longer than allowed.
    #[error("{0}")]
    Timeout(String),
    /// The pipeline is shutting down or overloaded.
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
    /// A SQL statement failed (bad SQL, read-only, limits, scope).
    #[error(transparent)]
    Sql(#[from] sql::SqlError),
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
            PipelineError::Io(_) | PipelineError::Unavailable(_) | PipelineError::Timeout(_) => {
                true
            }
            PipelineError::Config(_)
            | PipelineError::BadRequest(_)
            | PipelineError::TooLarge(_)
            | PipelineError::NotFound(_)
            | PipelineError::Unauthorized(_)
            | PipelineError::Forbidden(_)
            | PipelineError::Conflict(_)
            | PipelineError::RateLimited { .. }
            | PipelineError::Sql(_)
            | PipelineError::Activation(_) => false,
        }
    }

    /// The HTTP status for this error. Every variant is listed: adding one forces a decision.
    pub fn status(&self) -> u16 {
        use operators::OperatorError as O;
        match self {
            PipelineError::Config(_) => 500,
            PipelineError::BadRequest(_) => 400,
            PipelineError::TooLarge(_) => 413,
            PipelineError::NotFound(_) => 404,
            PipelineError::Unauthorized(_) => 401,
            PipelineError::Forbidden(_) => 403,
            PipelineError::Conflict(_) => 409,
            PipelineError::RateLimited { .. } => 429,
            PipelineError::Timeout(_) => 504,
            PipelineError::Unavailable(_) => 503,
            PipelineError::Io(_) => 500,
            PipelineError::Operator(o) => match o {
                O::Invalid(_) => 400,
                O::Remote(_) => 502,
                O::Model(_) | O::ModelFiles(_) | O::Io(_) | O::Panic { .. } => 500,
                O::Fatal(_) => 503,
                O::Store(s) => store_status(s),
            },
            PipelineError::Store(s) => store_status(s),
            PipelineError::Sql(e) => match e {
                sql::SqlError::Invalid(_) | sql::SqlError::Search(_) => 400,
                sql::SqlError::Execution(_) => 400,
                sql::SqlError::ReadOnly(_) | sql::SqlError::Forbidden(_) => 403,
                sql::SqlError::MemoryLimit { .. } | sql::SqlError::TooManyRows(_) => 413,
                sql::SqlError::Timeout(_) => 504,
                sql::SqlError::RateLimited(_) => 429,
                sql::SqlError::Revoked(_) => 401,
                sql::SqlError::Store(s) => store_status(s),
            },
            PipelineError::Activation(e) => {
                use activation::ActivationError as A;
                match e {
                    A::Invalid(_) => 400,
                    A::Cuda(_) | A::ModelFile(_) => 503,
                    A::Tensor(_) | A::Tokenizer(_) | A::Cache(_) | A::Io(_) => 500,
                }
            }
        }
    }
}

fn store_status(s: &store::StoreError) -> u16 {
    use store::StoreError as S;
    match s {
        S::InvalidFilter(_) | S::InvalidArgument(_) | S::Dimensions { .. } => 400,
        S::NotFound(_) => 404,
        S::Full(_) => 507,
        S::Lmdb(_) | S::Vector(_) | S::Codec(_) | S::Io(_) => 500,
    }
}
