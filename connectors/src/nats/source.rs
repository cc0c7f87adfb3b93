//! The NATS runtime.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer::AckPolicy, consumer::pull};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};

use super::config::NatsConfig;
use crate::{Ack, ConnectorError, Delivery, Ingest, Search, SearchCall};

fn header(h: Option<&HeaderMap>, name: &str) -> Option<String> {
    let h = h?;
    h.iter()
        .find(|(k, _)| AsRef::<str>::as_ref(*k).eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.first())
        .map(|v| v.as_str().to_string())
}

enum Acker {
    Js(Box<jetstream::Message>),
    Core,
}

struct Pending<R> {
    acker: Acker,
    subject: String,
    position: Option<String>,
    payload: Bytes,
    rx: R,
}

async fn dead_letter(
    client: &async_nats::Client,
    subject: &str,
    reason: &str,
    source: &str,
    position: &str,
    payload: Bytes,
) {
    let mut h = HeaderMap::new();
    h.insert("memos-reason", reason);
    h.insert("memos-source", source);
    h.insert("memos-position", position);
    if let Err(e) = client
        .publish_with_headers(subject.to_string(), h, payload)
        .await
    {
        tracing::warn!(error = %e, "publishing a dead letter to {subject} failed");
    }
}

/// The JetStream pull consumer (stream and durable consumer created when missing) and its
/// message stream.
async fn jetstream_messages(
    client: &async_nats::Client,
    cfg: &NatsConfig,
) -> Result<
    (
        jetstream::consumer::PullConsumer,
        jetstream::consumer::pull::Stream,
    ),
    ConnectorError,
> {
    let js = jetstream::new(client.clone());
    let stream = js
        .get_or_create_stream(jetstream::stream::Config {
            name: cfg.stream.clone(),
            subjects: vec![cfg.subjects.clone()],
            ..Default::default()
        })
        .await
        .map_err(ConnectorError::nats)?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            &cfg.durable,
            pull::Config {
                durable_name: Some(cfg.durable.clone()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(cfg.ack_wait_secs.max(1)),
                max_ack_pending: cfg.max_ack_pending,
                ..Default::default()
            },
        )
        .await
        .map_err(ConnectorError::nats)?;
    let messages = consumer
        .stream()
        .max_messages_per_batch(cfg.fetch_batch.max(1))
        .messages()
        .await
        .map_err(ConnectorError::nats)?;
    Ok((consumer, messages))
}

/// The acknowledger: takes outcomes in arrival order; acks JetStream messages once stored or
/// dead-lettered (dead letters are copied to the DLQ subject), naks them after a failed batch
/// (and everything after it), and reports the first failure through `fail`.
fn spawn_acker<R>(
    mut pending: mpsc::Receiver<Pending<R>>,
    client: async_nats::Client,
    dlq: String,
    fail: watch::Sender<Option<String>>,
) -> tokio::task::JoinHandle<()>
where
    R: std::future::Future<Output = Ack> + Send + 'static,
{
    tokio::spawn(async move {
        let mut failed = false;
        while let Some(p) = pending.recv().await {
            let ack = if failed {
                Ack::Failed("an earlier batch failed".into())
            } else {
                p.rx.await
            };
            let source = match p.acker {
                Acker::Js(_) => "nats",
                Acker::Core => "nats-core",
            };
            let done = match &ack {
                Ack::Stored | Ack::Duplicate => true,
                Ack::DeadLettered(reason) => {
                    let pos = p.position.clone().unwrap_or_else(|| p.subject.clone());
                    dead_letter(&client, &dlq, reason, source, &pos, p.payload.clone()).await;
                    true
                }
                Ack::Failed(reason) => {
                    if !failed {
                        let _ = fail.send(Some(reason.clone()));
                    }
                    failed = true;
                    false
                }
            };
            if let Acker::Js(m) = p.acker {
                let r = if done {
                    m.ack().await
                } else {
                    m.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await
                };
                if let Err(e) = r {
                    // Not acknowledged: JetStream redelivers after ack_wait and the event id
                    // makes the redelivery a no-op.
                    tracing::warn!(error = %e, "jetstream ack failed");
                }
            }
        }
    })
}

/// A search request: answered on its own task, the reply published to its reply subject.
fn spawn_search_reply<S: Search>(
    m: async_nats::Message,
    search: Arc<S>,
    client: async_nats::Client,
) {
    let Some(reply) = m.reply.clone() else {
        tracing::warn!("a search request without a reply subject was ignored (use request-reply)");
        return;
    };
    let call = SearchCall {
        body: m.payload.clone(),
        authorization: header(m.headers.as_ref(), "authorization"),
        deadline: header(m.headers.as_ref(), "timeout-ms")
            .and_then(|t| t.parse::<u64>().ok())
            // A deadline past what an Instant can hold is no deadline (never an overflow).
            .and_then(|ms| Instant::now().checked_add(Duration::from_millis(ms))),
        forwarded: false,
        scope: None,
    };
    tokio::spawn(async move {
        let out = search.search(call).await;
        if let Err(e) = client.publish(reply, out).await {
            tracing::warn!(error = %e, "publishing a search reply failed");
        }
    });
}

/// Consumes JetStream and core events and answers searches until `shutdown` turns true
/// (finishing and acknowledging what is in flight), or a batch fails after its retries (its
/// messages are nak'ed for redelivery and [`ConnectorError::Failed`] is returned).
pub async fn run<I: Ingest, S: Search>(
    cfg: NatsConfig,
    ingest: Arc<I>,
    search: Arc<S>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ConnectorError> {
    let client = async_nats::connect(&cfg.url)
        .await
        .map_err(ConnectorError::nats)?;
    let (consumer, mut messages) = jetstream_messages(&client, &cfg).await?;
    let mut core = client
        .subscribe(cfg.core_subject.clone())
        .await
        .map_err(ConnectorError::nats)?;
    let mut searches = if cfg.serve_search {
        Some(
            client
                .queue_subscribe(cfg.search_subject.clone(), cfg.queue_group.clone())
                .await
                .map_err(ConnectorError::nats)?,
        )
    } else {
        None
    };
    tracing::info!(url = %cfg.url, stream = %cfg.stream, durable = %cfg.durable, "nats source started");
    ingest.connected("nats", true);
    let mut lag_tick = tokio::time::interval(Duration::from_secs(5));
    let (pending_tx, pending_rx) = mpsc::channel::<Pending<I::Receipt>>(cfg.max_in_flight.max(1));
    let (fail_tx, mut fail_rx) = watch::channel::<Option<String>>(None);
    let acker = spawn_acker(pending_rx, client.clone(), cfg.dlq_subject.clone(), fail_tx);
    let result = loop {
        tokio::select! {
            _ = shutdown.changed() => {
                if *shutdown.borrow() { break Ok(()); }
            }
            _ = lag_tick.tick() => {
                match consumer.get_info().await {
                    Ok(info) => ingest.lag("nats", &cfg.durable, info.num_pending as i64),
                    Err(e) => tracing::debug!(error = %e, "jetstream consumer info"),
                }
            }
            _ = fail_rx.changed() => {
                let reason = fail_rx.borrow().clone().unwrap_or_default();
                break Err(ConnectorError::Failed(reason));
            }
            m = messages.next() => {
                let m = match m {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "jetstream receive error");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    None => break Err(ConnectorError::Nats("the jetstream consumer ended".into())),
                };
                let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
                let payload = m.payload.clone();
                let subject = m.subject.to_string();
                let position = (format!("nats/{}", cfg.stream), seq.to_string());
                let cube = subject_cube(&cfg.subjects, &subject);
                let rx = match ingest.submit(Delivery { payload: payload.clone(), source: "nats", position: Some(position.clone()), cube }).await {
                    Ok(rx) => rx,
                    Err(e) => break Err(e),
                };
                let p = Pending { acker: Acker::Js(Box::new(m)), subject, position: Some(format!("{}@{}", position.0, position.1)), payload, rx };
                if pending_tx.send(p).await.is_err() {
                    break Err(ConnectorError::Pipeline("the acknowledger stopped".into()));
                }
            }
            m = core.next() => {
                let Some(m) = m else { break Err(ConnectorError::Nats("the core subscription ended".into())) };
                let cube = subject_cube(&cfg.core_subject, m.subject.as_str());
                let rx = match ingest.submit(Delivery { payload: m.payload.clone(), source: "nats-core", position: None, cube }).await {
                    Ok(rx) => rx,
                    Err(e) => break Err(e),
                };
                let p = Pending { acker: Acker::Core, subject: m.subject.to_string(), position: None, payload: m.payload, rx };
                if pending_tx.send(p).await.is_err() {
                    break Err(ConnectorError::Pipeline("the acknowledger stopped".into()));
                }
            }
            m = async { match searches.as_mut() { Some(s) => s.next().await, None => std::future::pending().await } } => {
                let Some(m) = m else { break Err(ConnectorError::Nats("the search subscription ended".into())) };
                spawn_search_reply(m, search.clone(), client.clone());
            }
        }
    };
    drop(pending_tx);
    let _ = acker.await;
    let _ = client.flush().await;
    tracing::info!("nats source stopped");
    result
}

/// The cube a subject addresses under a `prefix.>` pattern (`memos.events.<cube_id>`): the
/// subject's tail after the prefix. `None` for a pattern without a trailing `>` (nothing to
/// check against).
pub fn subject_cube(pattern: &str, subject: &str) -> Option<String> {
    let prefix = pattern.strip_suffix('>')?;
    subject
        .strip_prefix(prefix)
        .filter(|t| !t.is_empty())
        .map(String::from)
}

#[cfg(test)]
mod subject_tests {
    use super::subject_cube;

    #[test]
    fn the_tail_of_a_wildcard_subject_is_the_cube() {
        assert_eq!(
            subject_cube("memos.events.>", "memos.events.team-a.x").as_deref(),
            Some("team-a.x")
        );
        assert_eq!(subject_cube("memos.events.>", "other.subject"), None);
        assert_eq!(
            subject_cube("memos.events.fixed", "memos.events.fixed"),
            None
        );
    }
}
