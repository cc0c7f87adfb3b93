//! NATS: JetStream event source (ack after commit), core-NATS fire-and-forget subjects,
//! request-reply search, dead letters. See [`source::run`].

pub mod config;
pub mod source;

pub use config::NatsConfig;
pub use source::run;
