//! Kafka: the event source (consumer group, commit-after-store), request/response search,
//! dead letters. See [`source::run`].

pub mod config;
pub mod forward;
pub mod partition;
pub mod source;

pub use config::KafkaConfig;
pub use forward::Forwarder;
pub use partition::{Ownership, partition_for};
pub use source::{create_topics, run};
