//! memos SQL: DataFusion tables over the LMDB store, search table functions, and the Postgres
//! wire protocol.
//!
//! - Tables ([`tables`]): `memories`, `memory_history`, `events`, `dead_letters`, `cubes`. Each
//!   query reads one LMDB snapshot ([`Store::snapshot`]) shared by every table it touches.
//!   Equality / `IN` filters on `cube_id`, `user_id`, `session_id`, `agent_id`, `app_id`,
//!   `memory_type`, `status` and `id` are answered from the store's per-cube bitmaps, so a
//!   single-cube query never decodes another cube's records; `LIMIT` stops the scan early.
//! - Functions ([`functions`]): `search(q, k [, cube [, filter_json]])` (the REST hybrid path, via
//!   [`SearchBackend`]), `vector_search(q, k [, cube])`, `bm25(q, k [, cube])`, and the scalar
//!   UDFs `cosine(a, b)` and `embed(text)`.
//! - [`Engine::query`] runs one read-only statement under a [`Scope`] with the configured
//!   timeout, memory pool and row limit; [`pg`] serves it over the Postgres wire protocol.
//!
//! Tenant scoping is enforced inside the table providers (the [`Scope`] travels in the session
//! config of each query), never by rewriting the query text.
#![warn(missing_docs)]

pub mod engine;
pub mod format;
pub mod functions;
pub mod pg;
mod scan;
pub mod tables;

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use datafusion;
pub use datafusion::common::ScalarValue;
pub use engine::{Engine, QueryOutput};
pub use store::Store;

/// Everything that can go wrong running SQL.
#[derive(Debug, Error)]
pub enum SqlError {
    /// The statement does not parse, names something unknown, or has wrong types.
    #[error("{0}")]
    Invalid(String),
    /// DDL, DML or a session statement: memos SQL is read-only.
    #[error("{0}")]
    ReadOnly(String),
    /// The query ran longer than the configured timeout.
    #[error("query took longer than {0} ms (sql.timeout_ms)")]
    Timeout(u64),
    /// The query needed more memory than the configured pool.
    #[error("query exceeded the memory limit of {limit} bytes (sql.memory_limit_bytes): {detail}")]
    MemoryLimit {
        /// The pool size.
        limit: usize,
        /// What DataFusion reported.
        detail: String,
    },
    /// The result has more rows than allowed.
    #[error("result has more than {0} rows (sql.max_rows); add a LIMIT or aggregate")]
    TooManyRows(usize),
    /// The caller may not read what it asked for.
    #[error("{0}")]
    Forbidden(String),
    /// The search backend failed (bad filter, embedder down…).
    #[error("search: {0}")]
    Search(String),
    /// The caller is over its rate limit (a Postgres session: checked per statement).
    #[error("{0}")]
    RateLimited(String),
    /// The caller's key is no longer valid (revoked while a Postgres session was open).
    #[error("{0}")]
    Revoked(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    /// Anything else DataFusion reported while executing.
    #[error("{0}")]
    Execution(String),
}

impl From<datafusion::error::DataFusionError> for SqlError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as D;
        match e.find_root() {
            D::SQL(..) | D::Plan(_) | D::SchemaError(..) | D::NotImplemented(_) => {
                SqlError::Invalid(e.strip_backtrace())
            }
            D::External(inner) => match inner.downcast_ref::<SqlError>() {
                Some(SqlError::Forbidden(m)) => SqlError::Forbidden(m.clone()),
                Some(SqlError::Search(m)) => SqlError::Search(m.clone()),
                Some(SqlError::Invalid(m)) => SqlError::Invalid(m.clone()),
                _ => SqlError::Execution(e.strip_backtrace()),
            },
            _ => SqlError::Execution(e.strip_backtrace()),
        }
    }
}

/// Result alias.
pub type Result<T, E = SqlError> = std::result::Result<T, E>;

/// SQL limits and ports (`[sql]` in the config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlConfig {
    /// Postgres wire protocol address; empty disables it.
    pub pg_addr: String,
    /// Whole-query timeout.
    pub timeout_ms: u64,
    /// DataFusion memory pool per query (sorts, aggregates, joins); exceeding it is an error.
    pub memory_limit_bytes: usize,
    /// Most rows a result may have.
    pub max_rows: usize,
    /// Rows per Arrow batch produced by the scans.
    pub batch_size: usize,
    /// Longest statement accepted, in bytes.
    pub max_statement_bytes: usize,
}

impl Default for SqlConfig {
    fn default() -> Self {
        SqlConfig {
            pg_addr: "127.0.0.1:5433".into(),
            timeout_ms: 30_000,
            memory_limit_bytes: 512 << 20,
            max_rows: 100_000,
            batch_size: 4096,
            max_statement_bytes: 64 << 10,
        }
    }
}

/// What one caller may see.
#[derive(Debug, Clone, PartialEq)]
pub struct Scope {
    /// Cube patterns (`*`, `prefix*`, exact); `None` = every cube.
    pub cubes: Option<Vec<String>>,
    /// User patterns; `None` = every user.
    pub users: Option<Vec<String>>,
    /// May read store-wide tables without an owner (`dead_letters`).
    pub system: bool,
    /// Who, for errors and logs.
    pub name: String,
}

impl Scope {
    /// Sees everything (no keys configured, or an unscoped key).
    pub fn all(name: &str) -> Scope {
        Scope {
            cubes: None,
            users: None,
            system: true,
            name: name.to_string(),
        }
    }

    /// Only these cube patterns.
    pub fn cubes(name: &str, patterns: Vec<String>) -> Scope {
        Scope {
            cubes: Some(patterns),
            users: None,
            system: false,
            name: name.to_string(),
        }
    }

    /// Whether this caller may read `cube`.
    pub fn allows(&self, cube: &str) -> bool {
        match &self.cubes {
            None => true,
            Some(p) => p.iter().any(|p| pattern_matches(p, cube)),
        }
    }

    /// Whether this caller may read memories of `user`.
    pub fn allows_user(&self, user: &str) -> bool {
        match &self.users {
            None => true,
            Some(p) => p.iter().any(|p| pattern_matches(p, user)),
        }
    }

    /// The store's view of this scope (cube and user patterns), for
    /// [`Store::scope_ids`](store::Store::scope_ids).
    pub fn store_scope(&self) -> store::Scope {
        store::Scope {
            cubes: self.cubes.clone(),
            users: self.users.clone(),
        }
    }

    /// Whether every cube is visible (no per-cube filtering needed).
    pub fn unrestricted(&self) -> bool {
        self.cubes
            .as_ref()
            .is_none_or(|p| p.iter().any(|p| p == "*"))
    }
}

pub use store::scope::pattern_matches;

/// One `search()` call.
#[derive(Debug, Clone)]
pub struct SearchArgs {
    /// Query text.
    pub query: String,
    /// Results per bucket and cube.
    pub top_k: usize,
    /// Cubes to search (already checked against the scope).
    pub cubes: Vec<String>,
    /// MemOS filter JSON, if any.
    pub filter: Option<serde_json::Value>,
}

/// One `search()` result row.
#[derive(Debug, Clone)]
pub struct SearchRow {
    /// text_mem, pref_mem, tool_mem or skill_mem.
    pub bucket: String,
    /// Rank within its bucket and cube (1 = best).
    pub rank: usize,
    /// The memory.
    pub record: store::MemoryRecord,
    /// Fused relevance (the REST `relativity`).
    pub score: f32,
    /// Cosine similarity, when the vector retriever ran.
    pub vector_score: Option<f32>,
    /// BM25 score, when the lexical retriever found it.
    pub bm25_score: Option<f32>,
}

/// What `search()` and `embed()` call into: the service's hybrid search, bound to the caller.
#[async_trait::async_trait]
pub trait SearchBackend: Send + Sync {
    /// The same search REST `/product/search` runs.
    async fn search(&self, args: SearchArgs) -> Result<Vec<SearchRow>>;
}

/// Text → embedding, with the server's model (blocking).
pub trait Embed: Send + Sync {
    /// Embeds one text.
    fn embed(&self, text: &str) -> Result<Vec<f32>>;
}

/// Checked before every statement of a long-lived session (a Postgres connection): the key
/// still exists and is within its rate limit.
pub trait StatementGuard: Send + Sync {
    /// `Err` refuses the statement.
    fn admit(&self) -> Result<()>;
}

/// One caller's session: what it may see and how its searches run.
#[derive(Clone)]
pub struct Session {
    /// Visibility.
    pub scope: Scope,
    /// Search path for `search()`.
    pub search: Arc<dyn SearchBackend>,
    /// Per-statement check (None: the caller was checked per request, as over HTTP).
    pub guard: Option<Arc<dyn StatementGuard>>,
}

/// Cube ids of a snapshot that a scope may read, optionally narrowed to `only`.
pub(crate) fn visible_cubes(
    store: &Store,
    txn: &store::heed::RoTxn,
    scope: &Scope,
    only: Option<&BTreeSet<String>>,
) -> Result<Vec<String>> {
    let cubes: Vec<String> = match only {
        Some(only) => only
            .iter()
            .filter(|c| store.cube(txn, c).ok().flatten().is_some())
            .cloned()
            .collect(),
        None => store.cubes(txn)?.into_iter().map(|c| c.cube_id).collect(),
    };
    Ok(cubes.into_iter().filter(|c| scope.allows(c)).collect())
}
