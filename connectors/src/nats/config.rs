//! `[nats]` configuration.

use serde::{Deserialize, Serialize};

/// The NATS source (JetStream + core), search subject and dead-letter subject. Enabled when
/// `url` is set (`MEMOS_NATS_URL`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// `nats://host:port`; empty = disabled.
    pub url: String,
    /// JetStream stream holding the events.
    pub stream: String,
    /// Its subjects (`memos.events.<cube_id>`).
    pub subjects: String,
    /// Durable pull consumer shared by every memos process (work-queue delivery).
    pub durable: String,
    /// Core-NATS fire-and-forget subjects (no ack, no redelivery).
    pub core_subject: String,
    /// Request-reply search subject.
    pub search_subject: String,
    /// Queue group of the search subscription.
    pub queue_group: String,
    /// Dead letters: original bytes with `memos-reason`, `memos-source`, `memos-position`.
    pub dlq_subject: String,
    /// Answer searches on `search_subject`.
    pub serve_search: bool,
    /// Messages per pull.
    pub fetch_batch: usize,
    /// Unacknowledged messages the server lets this consumer hold.
    pub max_ack_pending: i64,
    /// Redelivery after this long without an ack.
    pub ack_wait_secs: u64,
    /// Events submitted but not yet committed, at most.
    pub max_in_flight: usize,
}

impl NatsConfig {
    /// Whether the source is configured.
    pub fn enabled(&self) -> bool {
        !self.url.trim().is_empty()
    }
}
