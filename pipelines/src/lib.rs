//! memos pipelines, the engine: batching, the operator chain, the sink (the one LMDB commit
//! per batch), and the workers its commits feed (fine extraction, KV-cache builds). It knows
//! nothing of HTTP, API keys or MemOS JSON shapes; the `server` crate does.
#![warn(missing_docs)]

pub mod activation;
pub mod commit;
pub mod config;
pub mod delete;
pub mod engine;
pub mod error;
pub mod fine;
pub mod metrics;
pub mod runtime;
pub mod tasks;

pub use commit::{Commit, Committer};
pub use config::EngineConfig;
pub use engine::Engine;
pub use error::PipelineError;
