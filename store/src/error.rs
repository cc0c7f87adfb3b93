//! The store's one error type.

use thiserror::Error;

/// Everything that can go wrong inside the store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// LMDB reported an error (I/O, corrupted page, too many readers…).
    #[error("lmdb: {0}")]
    Lmdb(heed::Error),
    /// The store reached its configured size (`map_size_mb`): writes that add data are refused;
    /// reads and deletes still work.
    #[error("the store is full: {0}")]
    Full(String),
    /// The vector index reported an error.
    #[error("vector index: {0}")]
    Vector(#[from] arroy::Error),
    /// A stored value could not be encoded or decoded.
    #[error("codec: {0}")]
    Codec(String),
    /// An embedding of the wrong length was given.
    #[error("embedding has {received} dimensions, the store expects {expected}")]
    Dimensions {
        /// Dimensions of the store.
        expected: usize,
        /// Dimensions received.
        received: usize,
    },
    /// A filter did not follow the grammar.
    #[error("invalid filter: {0}")]
    InvalidFilter(String),
    /// A request argument was out of range or malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The memory id is unknown.
    #[error("memory {0} not found")]
    NotFound(String),
    /// Filesystem error while opening the data directory.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl From<heed::Error> for StoreError {
    fn from(e: heed::Error) -> Self {
        match e {
            heed::Error::Mdb(heed::MdbError::MapFull) => StoreError::Full(
                "LMDB's map is full (map_size_mb plus its reserve); delete memories or raise map_size_mb and restart".into(),
            ),
            e => StoreError::Lmdb(e),
        }
    }
}

impl From<postcard::Error> for StoreError {
    fn from(e: postcard::Error) -> Self {
        StoreError::Codec(e.to_string())
    }
}

impl StoreError {
    /// Whether the failure belongs to the environment (map full, I/O, too many readers, a
    /// damaged page), so retrying the same write later may succeed. Everything else belongs to
    /// the data being written (a key LMDB cannot hold, a record that does not encode, a bad
    /// argument): retrying it fails again, so the sink dead-letters that one event instead.
    pub fn is_transient(&self) -> bool {
        use heed::MdbError as M;
        match self {
            StoreError::Lmdb(e) | StoreError::Vector(arroy::Error::Heed(e)) => match e {
                heed::Error::Io(_) => true,
                heed::Error::Mdb(m) => !matches!(m, M::BadValSize | M::KeyExist | M::NotFound),
                heed::Error::Encoding(_) | heed::Error::Decoding(_) => false,
                heed::Error::EnvAlreadyOpened => true,
            },
            StoreError::Vector(arroy::Error::Io(_)) | StoreError::Io(_) | StoreError::Full(_) => {
                true
            }
            StoreError::Vector(_)
            | StoreError::Codec(_)
            | StoreError::Dimensions { .. }
            | StoreError::InvalidFilter(_)
            | StoreError::InvalidArgument(_)
            | StoreError::NotFound(_) => false,
        }
    }
}

/// Result alias for the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
