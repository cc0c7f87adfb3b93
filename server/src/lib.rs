//! memos server: everything that speaks to clients. The REST API (MemOS product and cloud
//! shapes), MCP, SQL over HTTP and the Postgres wire protocol, the bus search topics, API keys
//! and rate limits, OpenAPI — over the service layer ([`Memos`]) that holds the engine's parts.
//! The only crate that knows HTTP, JSON request shapes and API keys.
#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod bus;
pub mod chat;
pub mod config;
pub mod control;
pub mod error;
pub mod export;
pub mod fetch;
mod fields;
pub mod http;
pub mod kv;
pub mod mcp;
pub mod rerank;
pub mod service;
pub mod sqlapi;
pub mod web;

pub use config::Config;
pub use error::ServerError;
pub use service::Memos;
