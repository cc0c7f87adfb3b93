//! memos connectors: the brokers events come from and searches arrive through.
//!
//! - [`kafka`]: a consumer-group source for `memos.events` (offsets committed to Kafka only after
//!   the LMDB transaction holding the events has committed; the same offsets are written in
//!   that transaction), request/response search on `memos.search.requests` →
//!   `reply-to`/`correlation-id`, dead letters to `memos.dlq`.
//! - [`nats`]: a JetStream durable pull consumer on `memos.events.>` (ack after commit,
//!   redelivery on crash), core-NATS fire-and-forget on `memos.ingest.>`, request-reply search on
//!   `memos.search` (queue group `memos`), dead letters to `memos.dlq`.
//!
//! Connectors are transport adapters: they hand raw bytes to an [`Ingest`] (the pipeline) and
//! search requests to a [`Search`] (the service), both implemented by the `pipelines` crate.
//! Each connector folder has the same split: `config.rs` (serde, `deny_unknown_fields`),
//! runtime files, and tests in `tests/tests/`.
#![warn(missing_docs)]

pub mod kafka;
pub mod nats;

use std::future::Future;
use std::time::Instant;

use bytes::Bytes;
use thiserror::Error;

/// The connectors crate's error type.
#[derive(Debug, Error)]
pub enum ConnectorError {
    /// Kafka client error.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// NATS client error.
    #[error("nats: {0}")]
    Nats(String),
    /// The pipeline refused or stopped.
    #[error("pipeline: {0}")]
    Pipeline(String),
    /// A batch failed after its retries; the source stops before acknowledging anything past it.
    #[error("processing failed: {0}")]
    Failed(String),
    /// Bad configuration.
    #[error("configuration: {0}")]
    Config(String),
}

impl ConnectorError {
    pub(crate) fn nats(e: impl std::fmt::Display) -> Self {
        ConnectorError::Nats(e.to_string())
    }
}

/// Raw bytes from a broker, with where they came from.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The message payload (an event envelope, if well-formed).
    pub payload: Bytes,
    /// Source name (`kafka`, `nats`, `nats-core`).
    pub source: &'static str,
    /// Source partition and the position to resume after this message, written in the same
    /// LMDB transaction as the event's memories.
    pub position: Option<(String, String)>,
    /// The cube the transport addressed (the NATS subject's tail, the Kafka message key); the
    /// event's `cube_id` must be this one.
    pub cube: Option<String>,
}

/// What happened to a delivery, known only after the store committed (or refused) it.
#[derive(Debug, Clone, PartialEq)]
pub enum Ack {
    /// Stored (or merged).
    Stored,
    /// Already processed earlier; nothing changed.
    Duplicate,
    /// Unusable; kept in the store's dead letters with this reason.
    DeadLettered(String),
    /// The batch failed after retries; not stored, not acknowledged.
    Failed(String),
}

/// Where deliveries go: the pipeline.
pub trait Ingest: Send + Sync + 'static {
    /// Resolves to the delivery's [`Ack`] once the batch holding it committed (or failed).
    type Receipt: Future<Output = Ack> + Send + 'static;

    /// Queues a delivery (waiting while the pipeline's bounded queue is full).
    fn submit(
        &self,
        d: Delivery,
    ) -> impl Future<Output = Result<Self::Receipt, ConnectorError>> + Send;

    /// The position stored with the last committed batch for a source partition (what
    /// [`Delivery::position`] carried), if any: a source resumes after it.
    fn resume_position(&self, _partition: &str) -> Option<String> {
        None
    }

    /// The source connected to its broker (`true`), or stopped (`false`): readiness.
    fn connected(&self, _source: &'static str, _up: bool) {}

    /// Messages waiting in the broker for a source partition (consumer lag), reported
    /// periodically while the source runs.
    fn lag(&self, _source: &'static str, _partition: &str, _messages: i64) {}
}

/// A search request from a bus.
#[derive(Debug, Clone)]
pub struct SearchCall {
    /// `/product/search` request JSON.
    pub body: Bytes,
    /// `Authorization` header, if any (`Token <key>` / `Bearer <key>`).
    pub authorization: Option<String>,
    /// Answer before this, or answer with a timeout error.
    pub deadline: Option<Instant>,
    /// Forwarded by another memos process: answer locally, never forward again.
    pub forwarded: bool,
    /// A forwarded search's signed scope (the `memos-principal` header), checked by the service.
    pub scope: Option<String>,
}

/// Who answers searches: the service. The reply is the `/product/search` response JSON, or an
/// error envelope `{"code": <4xx|5xx>, "message", "data": null}` — never nothing.
pub trait Search: Send + Sync + 'static {
    /// Answers one request.
    fn search(&self, call: SearchCall) -> impl Future<Output = Bytes> + Send;
}

/// An error envelope, for failures before the service could answer.
pub fn error_reply(code: u16, message: &str) -> Bytes {
    Bytes::from(serde_json::json!({"code": code, "message": message, "data": null}).to_string())
}
