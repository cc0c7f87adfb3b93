//! `[kafka]` configuration.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The Kafka source, search topics and dead-letter topic. Enabled when `brokers` is set
/// (`MEMOS_KAFKA_BROKERS`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port,…`; empty = disabled.
    pub brokers: String,
    /// Consumer group: processes in one group split the partitions (and own their cubes).
    pub group_id: String,
    /// Event topic (key = cube id).
    pub events_topic: String,
    /// Search requests (key = cube id; co-partitioned with the events).
    pub search_requests_topic: String,
    /// Default reply topic when a request has no `reply-to` header.
    pub search_responses_topic: String,
    /// A request's `reply-to` must start with this (else the refusal goes to
    /// `search_responses_topic`).
    pub reply_topic_prefix: String,
    /// Dead letters: original bytes with `memos-reason`, `memos-source`, `memos-position`
    /// headers.
    pub dlq_topic: String,
    /// Answer search requests from `search_requests_topic`.
    pub serve_search: bool,
    /// Create the topics at start when missing.
    pub create_topics: bool,
    /// Partitions of created topics (events and search requests must have the same count).
    pub partitions: i32,
    /// Replication factor of created topics.
    pub replication: i32,
    /// Events submitted but not yet committed, at most (backpressure on the broker).
    pub max_in_flight: usize,
    /// How often acknowledged offsets are committed to Kafka.
    pub commit_interval_ms: u64,
    /// Consumer session timeout.
    pub session_timeout_ms: u64,
    /// Longest a fetch waits for new messages (librdkafka `fetch.wait.max.ms`): the latency a
    /// search request or reply can add on a quiet topic.
    pub fetch_wait_ms: u64,
    /// Extra librdkafka properties (e.g. `security.protocol`).
    pub client_options: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// Whether the source is configured.
    pub fn enabled(&self) -> bool {
        !self.brokers.trim().is_empty()
    }
}
