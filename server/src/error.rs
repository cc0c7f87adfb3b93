//! The server's error type and its exhaustive mapping to HTTP statuses.

use thiserror::Error;

/// Errors of the service and its interfaces (REST, MCP, SQL, the bus search).
#[derive(Debug, Error)]
pub enum ServerError {
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

/// The engine's errors keep their meaning: each engine variant has a server variant.
impl From<pipelines::PipelineError> for ServerError {
    fn from(e: pipelines::PipelineError) -> Self {
        use pipelines::PipelineError as P;
        match e {
            P::Config(m) => ServerError::Config(m),
            P::BadRequest(m) => ServerError::BadRequest(m),
            P::NotFound(m) => ServerError::NotFound(m),
            P::Unavailable(m) => ServerError::Unavailable(m),
            P::Operator(o) => ServerError::Operator(o),
            P::Store(s) => ServerError::Store(s),
            P::Io(e) => ServerError::Io(e),
            P::Activation(a) => ServerError::Activation(a),
        }
    }
}

impl ServerError {
    /// The HTTP status for this error. Every variant is listed: adding one forces a decision.
    pub fn status(&self) -> u16 {
        use operators::OperatorError as O;
        match self {
            ServerError::Config(_) => 500,
            ServerError::BadRequest(_) => 400,
            ServerError::TooLarge(_) => 413,
            ServerError::NotFound(_) => 404,
            ServerError::Unauthorized(_) => 401,
            ServerError::Forbidden(_) => 403,
            ServerError::Conflict(_) => 409,
            ServerError::RateLimited { .. } => 429,
            ServerError::Timeout(_) => 504,
            ServerError::Unavailable(_) => 503,
            ServerError::Io(_) => 500,
            ServerError::Operator(o) => match o {
                O::Invalid(_) => 400,
                O::Remote(_) => 502,
                O::Model(_) | O::ModelFiles(_) | O::Io(_) | O::Panic { .. } => 500,
                O::Fatal(_) => 503,
                O::Store(s) => store_status(s),
            },
            ServerError::Store(s) => store_status(s),
            ServerError::Sql(e) => match e {
                sql::SqlError::Invalid(_) | sql::SqlError::Search(_) => 400,
                sql::SqlError::Execution(_) => 400,
                sql::SqlError::ReadOnly(_) | sql::SqlError::Forbidden(_) => 403,
                sql::SqlError::MemoryLimit { .. } | sql::SqlError::TooManyRows(_) => 413,
                sql::SqlError::Timeout(_) => 504,
                sql::SqlError::RateLimited(_) => 429,
                sql::SqlError::Revoked(_) => 401,
                sql::SqlError::Store(s) => store_status(s),
            },
            ServerError::Activation(e) => {
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
