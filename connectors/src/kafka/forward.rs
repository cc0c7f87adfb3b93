//! Search forwarding for scale-out: a process asked about a cube it does not own publishes the
//! request to the cube's partition of the search-request topic (where the owner consumes it)
//! and waits for the reply on the response topic, matched by `correlation-id`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::oneshot;

use super::config::KafkaConfig;
use super::partition::partition_for;
use super::source::{header, publish};
use crate::ConnectorError;

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<Bytes>>>>;

/// Sends searches to the owners of cubes and collects their replies.
pub struct Forwarder {
    producer: FutureProducer,
    waiters: Waiters,
    requests_topic: String,
    reply_topic: String,
    partitions: i32,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Forwarder {
    /// Connects; replies are read from the response topic's current end.
    pub async fn start(cfg: &KafkaConfig) -> Result<Forwarder, ConnectorError> {
        let mut base = ClientConfig::new();
        base.set("bootstrap.servers", &cfg.brokers);
        for (k, v) in &cfg.client_options {
            base.set(k, v);
        }
        let producer: FutureProducer = base
            .clone()
            .set("partitioner", "murmur2_random")
            .set("message.timeout.ms", "10000")
            .create()?;
        let consumer: StreamConsumer = base
            .clone()
            .set(
                "group.id",
                format!("{}-fwd-{}", cfg.group_id, uuid::Uuid::new_v4().simple()),
            )
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", cfg.fetch_wait_ms.to_string())
            .create()?;
        let md = consumer.fetch_metadata(None, Duration::from_secs(10))?;
        let count = |t: &str| {
            md.topics()
                .iter()
                .find(|x| x.name() == t)
                .map(|x| x.partitions().len() as i32)
                .unwrap_or(0)
        };
        let partitions = count(&cfg.search_requests_topic);
        let reply_parts = count(&cfg.search_responses_topic);
        if partitions == 0 || reply_parts == 0 {
            return Err(ConnectorError::Config(format!(
                "topics {} and {} must exist to forward searches",
                cfg.search_requests_topic, cfg.search_responses_topic
            )));
        }
        // Start at each partition's high watermark, resolved now, so no reply to a request
        // sent after `start` returns can be missed.
        let mut tpl = TopicPartitionList::new();
        for p in 0..reply_parts {
            let (_, high) = consumer.fetch_watermarks(
                &cfg.search_responses_topic,
                p,
                Duration::from_secs(10),
            )?;
            tpl.add_partition_offset(&cfg.search_responses_topic, p, Offset::Offset(high))?;
        }
        consumer.assign(&tpl)?;
        drop(tpl);
        let waiters: Waiters = Arc::default();
        let w = waiters.clone();
        let reader = tokio::spawn(async move {
            loop {
                match consumer.recv().await {
                    Ok(m) => {
                        if let Some(c) = header(&m, "correlation-id") {
                            let tx = w.lock().unwrap_or_else(|e| e.into_inner()).remove(&c);
                            if let Some(tx) = tx {
                                let _ = tx.send(Bytes::copy_from_slice(m.payload().unwrap_or(&[])));
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "search reply receive error");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(Forwarder {
            producer,
            waiters,
            requests_topic: cfg.search_requests_topic.clone(),
            reply_topic: cfg.search_responses_topic.clone(),
            partitions,
            reader,
        })
    }

    /// Asks the owner of `cube`; the reply is its `/product/search` response (or error) JSON.
    /// `scope` is one header (name, value) that tells the owner who is asking.
    pub async fn search(
        &self,
        cube: &str,
        body: &[u8],
        scope: Option<(&str, &str)>,
        timeout: Duration,
    ) -> Result<Bytes, ConnectorError> {
        let corr = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(corr.clone(), tx);
        let mut h = BTreeMap::new();
        h.insert("correlation-id".to_string(), corr.clone());
        h.insert("reply-to".to_string(), self.reply_topic.clone());
        h.insert("memos-forwarded".to_string(), "1".to_string());
        h.insert("timeout-ms".to_string(), timeout.as_millis().to_string());
        // The caller's scope, signed by the service (never the caller's key).
        if let Some((name, value)) = scope {
            h.insert(name.to_string(), value.to_string());
        }
        let part = partition_for(cube, self.partitions);
        let sent = publish(
            &self.producer,
            &self.requests_topic,
            Some(cube),
            &h,
            Some(part),
            body,
        )
        .await;
        let out = match sent {
            Ok(_) => match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(b)) => Ok(b),
                _ => Err(ConnectorError::Pipeline(format!(
                    "no reply from the owner of cube {cube} within {timeout:?}"
                ))),
            },
            Err(e) => Err(e),
        };
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&corr);
        out
    }
}
