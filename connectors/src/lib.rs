//! memos connectors: where events come from.
//!
//! Today the only source is the embedded in-process one: the HTTP API, `memos import` and the
//! evaluation harness push [`pipelines::runtime::Incoming`](../pipelines/runtime/struct.Incoming.html)
//! items straight into the pipeline's bounded channel, so one `memos serve` process needs no
//! broker. The Kafka (rdkafka) and NATS JetStream sources, dead-letter topics and request-reply
//! search arrive with the streaming issue and will live here, each in its own folder
//! (config, runtime, tests).
#![warn(missing_docs)]

/// Names of the sources this build knows, as they appear in dead letters and offsets.
pub const SOURCES: &[&str] = &["http", "import", "eval"];
