//! memos pipelines: configuration, the pipeline runtime, the service shared by every
//! interface, the REST API and the LoCoMo evaluation harness. The `memos` binary is `main.rs`.
#![warn(missing_docs)]

pub mod activation;
pub mod api;
pub mod auth;
pub mod bus;
pub mod chat;
pub mod config;
pub mod control;
pub mod error;
pub mod eval;
pub mod export;
pub mod fine;
pub mod http;
pub mod mcp;
pub mod metrics;
pub mod runtime;
pub mod service;
pub mod sqlapi;

pub use config::Config;
pub use error::PipelineError;
pub use service::Memos;
