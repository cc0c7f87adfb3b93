//! The service side of the broker connectors: the pipeline as their [`Ingest`], the search
//! service as their [`Search`], and the supervisor that runs (and restarts) the Kafka and NATS
//! sources next to the REST API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use connectors::{Ack, ConnectorError, Delivery, Ingest, Search, SearchCall, error_reply};
use futures::FutureExt;
use futures::future::Map;
use serde_json::json;
use tokio::sync::{oneshot, watch};

use crate::api::SearchRequest;
use crate::error::ServerError;
use crate::service::Memos;
use pipelines::runtime::{Incoming, Outcome, Payload};

/// The pipeline, seen from a connector.
pub struct PipelineIngest(pub Arc<Memos>);

fn to_ack(r: Result<Outcome, oneshot::error::RecvError>) -> Ack {
    match r {
        Ok(Outcome::Stored { .. }) => Ack::Stored,
        Ok(Outcome::Duplicate { .. }) => Ack::Duplicate,
        Ok(Outcome::DeadLettered { reason }) => Ack::DeadLettered(reason),
        Ok(Outcome::Failed { reason }) => Ack::Failed(reason),
        Err(_) => Ack::Failed("the pipeline stopped before replying".into()),
    }
}

type ToAck = fn(Result<Outcome, oneshot::error::RecvError>) -> Ack;

impl Ingest for PipelineIngest {
    type Receipt = Map<oneshot::Receiver<Outcome>, ToAck>;

    async fn submit(&self, d: Delivery) -> Result<Self::Receipt, ConnectorError> {
        let (tx, rx) = oneshot::channel();
        self.0
            .pipeline
            .submit(Incoming {
                payload: match d.cube {
                    Some(cube) => Payload::Routed {
                        bytes: d.payload.to_vec(),
                        cube,
                    },
                    None => Payload::Bytes(d.payload.to_vec()),
                },
                source: d.source.to_string(),
                position: d.position,
                reply: Some(tx),
            })
            .await
            .map_err(|e| ConnectorError::Pipeline(e.to_string()))?;
        Ok(rx.map(to_ack as ToAck))
    }

    fn resume_position(&self, partition: &str) -> Option<String> {
        let store = &self.0.store;
        let txn = store.read_txn().ok()?;
        store.offset(&txn, partition).ok().flatten()
    }

    fn connected(&self, source: &'static str, up: bool) {
        self.0.metrics.set_source(source, up);
    }

    fn lag(&self, source: &'static str, partition: &str, messages: i64) {
        self.0
            .metrics
            .consumer_lag
            .with_label_values(&[source, partition])
            .set(messages);
    }
}

/// The search service, seen from a connector: the `/product/search` request and response
/// shapes, the same auth and limits as REST.
pub struct ServiceSearch {
    memos: Arc<Memos>,
    /// Every broker address is a loopback one: open mode may answer (as HTTP in open mode
    /// listens only on loopback). Off loopback, open mode refuses bus searches.
    loopback: bool,
}

impl ServiceSearch {
    /// The search service for a connector whose brokers are `brokers` (`host:port` list or URLs).
    pub fn new(memos: Arc<Memos>, brokers: &str) -> ServiceSearch {
        ServiceSearch {
            memos,
            loopback: all_loopback(brokers),
        }
    }

    async fn answer(&self, call: SearchCall) -> Result<serde_json::Value, ServerError> {
        let m = &self.memos;
        if call.body.len() > m.cfg.limits.max_body_bytes {
            return Err(ServerError::TooLarge(format!(
                "request of {} bytes; the limit is {}",
                call.body.len(),
                m.cfg.limits.max_body_bytes
            )));
        }
        if m.auth.is_open() && !self.loopback {
            return Err(ServerError::Unauthorized(
                "bus search is off in open mode when the broker is not on loopback: configure API keys".into(),
            ));
        }
        // A search forwarded by another process carries the caller's signed scope (read only);
        // anything else authenticates with its own key, exactly as over HTTP.
        let p = match (&call.scope, call.forwarded) {
            (Some(token), true) if !m.auth.is_open() => Arc::new(m.auth.verify_forward(token)?),
            _ => {
                let p = m.auth.authenticate(call.authorization.as_deref())?;
                m.auth.admit(&p)?;
                p
            }
        };
        let req: SearchRequest = serde_json::from_slice(&call.body)
            .map_err(|e| ServerError::BadRequest(format!("search request: {e}")))?;
        let budget = Duration::from_millis(m.cfg.search.timeout_ms);
        let deadline = match call.deadline {
            Some(d) => d.min(Instant::now() + budget),
            None => Instant::now() + budget,
        };
        match tokio::time::timeout_at(deadline.into(), m.search_with(&req, &p, call.forwarded))
            .await
        {
            Ok(r) => r,
            Err(_) => Err(ServerError::Timeout(
                "the request's deadline passed before the search finished".into(),
            )),
        }
    }
}

impl Search for ServiceSearch {
    async fn search(&self, call: SearchCall) -> Bytes {
        let started = Instant::now();
        let r = self.answer(call).await;
        self.memos.metrics.search(
            "bus",
            started.elapsed(),
            r.as_ref().ok().map(crate::service::result_count),
        );
        match r {
            Ok(data) => Bytes::from(
                json!({"code": 200, "message": "Search completed successfully", "data": data})
                    .to_string(),
            ),
            Err(e) => error_reply(e.status(), &e.to_string()),
        }
    }
}

/// Runs `run` until `shutdown` turns true, restarting it with a backoff when it fails.
async fn supervise<F, Fut>(
    name: &'static str,
    metrics: Arc<pipelines::metrics::Metrics>,
    mut shutdown: watch::Receiver<bool>,
    run: F,
) where
    F: Fn(watch::Receiver<bool>) -> Fut,
    Fut: std::future::Future<Output = Result<(), ConnectorError>>,
{
    let mut backoff = Duration::from_millis(500);
    metrics.set_source(name, false);
    loop {
        let r = run(shutdown.clone()).await;
        metrics.set_source(name, false);
        if *shutdown.borrow() {
            break;
        }
        if let Err(e) = r {
            tracing::error!(error = %e, "{name} source stopped; restarting in {backoff:?}");
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => break,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Runs the configured sources until `shutdown` turns true; a source that fails is restarted
/// after a backoff (a Kafka consumer resumes from its committed offsets, JetStream redelivers
/// what was not acknowledged).
pub fn start_sources(
    m: Arc<Memos>,
    shutdown: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    // Configured sources count as not ready until they connect.
    if m.cfg.kafka.enabled() {
        m.metrics.set_source("kafka", false);
    }
    if m.cfg.nats.enabled() {
        m.metrics.set_source("nats", false);
    }
    if m.cfg.kafka.enabled() {
        let m = m.clone();
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            // The forwarder (scale-out searches) needs the topics.
            let kc = m.cfg.kafka.clone();
            let fwd = async {
                if kc.create_topics {
                    connectors::kafka::create_topics(&kc).await?;
                }
                connectors::kafka::Forwarder::start(&kc).await
            };
            match fwd.await {
                Ok(f) => {
                    let _ = m.forwarder.set(Arc::new(f));
                }
                Err(e) => tracing::error!(error = %e, "search forwarding is off"),
            }
            supervise("kafka", m.metrics.clone(), shutdown, |stop| {
                connectors::kafka::run(
                    m.cfg.kafka.clone(),
                    Arc::new(PipelineIngest(m.clone())),
                    Arc::new(ServiceSearch::new(m.clone(), &m.cfg.kafka.brokers)),
                    m.ownership.clone(),
                    stop,
                )
            })
            .await
        }));
    }
    if m.cfg.nats.enabled() {
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            supervise("nats", m.metrics.clone(), shutdown, |stop| {
                connectors::nats::run(
                    m.cfg.nats.clone(),
                    Arc::new(PipelineIngest(m.clone())),
                    Arc::new(ServiceSearch::new(m.clone(), &m.cfg.nats.url)),
                    stop,
                )
            })
            .await
        }));
    }
    tasks
}

/// Whether every address of a broker list (`host:port,…` or `nats://host:port`) is loopback.
pub fn all_loopback(brokers: &str) -> bool {
    let hosts: Vec<&str> = brokers
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(|b| {
            let b = b.split_once("://").map_or(b, |(_, rest)| rest);
            let b = b.rsplit_once('@').map_or(b, |(_, host)| host);
            let b = b.split('/').next().unwrap_or(b);
            match b.strip_prefix('[') {
                Some(v6) => v6.split(']').next().unwrap_or(v6),
                None => b.rsplit_once(':').map_or(b, |(h, _)| h),
            }
        })
        .collect();
    !hosts.is_empty()
        && hosts.iter().all(|h| {
            h.eq_ignore_ascii_case("localhost")
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        })
}

#[cfg(test)]
mod tests {
    use super::all_loopback;

    #[test]
    fn loopback_brokers() {
        assert!(all_loopback("127.0.0.1:9092"));
        assert!(all_loopback("nats://127.0.0.1:4222"));
        assert!(all_loopback("localhost:9092, [::1]:9093"));
        assert!(all_loopback("nats://user:pw@127.0.0.2:4222"));
        assert!(!all_loopback("127.0.0.1:9092,10.0.0.5:9092"));
        assert!(!all_loopback("nats://broker.internal:4222"));
        assert!(!all_loopback(""));
    }
}
