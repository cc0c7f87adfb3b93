//! The Kafka runtime: one consumer in the group subscribed to the event topic and the search
//! request topic (range assignment keeps partition *i* of both on the same process, so a cube's
//! searches reach the process holding its events), an acknowledger that commits offsets only
//! after the pipeline committed, and a producer for replies and dead letters.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};

use super::config::KafkaConfig;
use super::partition::Ownership;
use crate::{Ack, ConnectorError, Delivery, Ingest, Search, SearchCall, error_reply};

/// Offsets in flight per (topic, partition): a partition's commit point is its lowest
/// unfinished offset, or one past the highest finished one.
#[derive(Default)]
struct Tracker {
    inner: Mutex<TrackerState>,
    idle: Condvar,
}

#[derive(Default)]
struct TrackerState {
    open: HashMap<(String, i32), BTreeSet<i64>>,
    next: HashMap<(String, i32), i64>,
    committed: HashMap<(String, i32), i64>,
}

impl Tracker {
    fn start(&self, t: &str, p: i32, o: i64) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.open.entry((t.to_string(), p)).or_default().insert(o);
    }

    fn done(&self, t: &str, p: i32, o: i64) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let k = (t.to_string(), p);
        if let Some(s) = g.open.get_mut(&k) {
            s.remove(&o);
        }
        let n = g.next.entry(k).or_insert(0);
        *n = (*n).max(o + 1);
        self.idle.notify_all();
    }

    /// Commit points that moved since the last call.
    fn take_commits(&self, only: Option<&BTreeSet<(String, i32)>>) -> Vec<(String, i32, i64)> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        let keys: Vec<(String, i32)> = g.next.keys().cloned().collect();
        for k in keys {
            if only.is_some_and(|o| !o.contains(&k)) {
                continue;
            }
            let next = g.next[&k];
            let point = g
                .open
                .get(&k)
                .and_then(|s| s.iter().next().copied())
                .unwrap_or(next);
            if g.committed.get(&k) != Some(&point) {
                g.committed.insert(k.clone(), point);
                out.push((k.0, k.1, point));
            }
        }
        out
    }

    /// Blocks until no offset of `parts` is in flight (or `timeout`).
    fn wait_idle(&self, parts: &BTreeSet<(String, i32)>, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let busy = parts
                .iter()
                .any(|k| g.open.get(k).is_some_and(|s| !s.is_empty()));
            if !busy {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = self
                .idle
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn forget(&self, parts: &BTreeSet<(String, i32)>) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for k in parts {
            g.open.remove(k);
            g.next.remove(k);
            g.committed.remove(k);
        }
    }
}

fn tpl_of(points: &[(String, i32, i64)]) -> Option<TopicPartitionList> {
    if points.is_empty() {
        return None;
    }
    let mut tpl = TopicPartitionList::new();
    for (t, p, o) in points {
        if tpl.add_partition_offset(t, *p, Offset::Offset(*o)).is_err() {
            return None;
        }
    }
    Some(tpl)
}

/// Consumer context: on revoke, finish the partitions' in-flight events and commit them before
/// giving the partitions up; on assign, record ownership.
struct Ctx {
    tracker: Arc<Tracker>,
    owner: Arc<Ownership>,
    events_topic: String,
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts: BTreeSet<(String, i32)> = tpl
                .elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition()))
                .collect();
            let revoked: Vec<i32> = parts
                .iter()
                .filter(|(t, _)| *t == self.events_topic)
                .map(|(_, p)| *p)
                .collect();
            self.owner.revoke(revoked);
            if !self.tracker.wait_idle(&parts, Duration::from_secs(30)) {
                tracing::warn!(
                    "revoked partitions still had events in flight after 30 s; they will be redelivered to the new owner"
                );
            }
            let points = self.tracker.take_commits(Some(&parts));
            if let Some(tpl) = tpl_of(&points) {
                if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
                    tracing::warn!(error = %e, "commit on revoke failed");
                }
                drop(tpl);
            }
            self.tracker.forget(&parts);
            tracing::info!(partitions = ?parts, "kafka partitions revoked");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let ps: Vec<i32> = tpl
                .elements()
                .iter()
                .filter(|e| e.topic() == self.events_topic)
                .map(|e| e.partition())
                .collect();
            tracing::info!(partitions = ?ps, "kafka partitions assigned");
            self.owner.assign(ps);
        }
    }
}

fn client_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    for (k, v) in &cfg.client_options {
        c.set(k, v);
    }
    c
}

/// Creates the event, search and dead-letter topics when missing (events and search requests
/// with the same partition count, so they are co-partitioned).
pub async fn create_topics(cfg: &KafkaConfig) -> Result<(), ConnectorError> {
    let admin: AdminClient<DefaultClientContext> = client_config(cfg).create()?;
    let topics = [
        (&cfg.events_topic, cfg.partitions),
        (&cfg.search_requests_topic, cfg.partitions),
        (&cfg.search_responses_topic, cfg.partitions),
        (&cfg.dlq_topic, 1),
    ];
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(t, n)| NewTopic::new(t, *n, TopicReplication::Fixed(cfg.replication)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in admin.create_topics(&new, &opts).await? {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => {
                return Err(ConnectorError::Config(format!("creating topic {t}: {e}")));
            }
        }
    }
    Ok(())
}

pub(crate) fn header(msg: &impl Message, name: &str) -> Option<String> {
    let h = msg.headers()?;
    h.iter()
        .find(|h| h.key.eq_ignore_ascii_case(name))
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

struct Pending<R> {
    topic: String,
    partition: i32,
    offset: i64,
    payload: Bytes,
    rx: R,
}

/// Reports, per assigned partition of the events topic, how many messages lie between the
/// consumer's position and the partition's high watermark (a blocking broker call: run it on a
/// blocking thread).
fn report_lag<I: Ingest>(consumer: &StreamConsumer<Ctx>, topic: &str, ingest: &I) {
    let Ok(positions) = consumer.position() else {
        return;
    };
    for e in positions.elements_for_topic(topic) {
        let Ok((_, high)) = consumer.fetch_watermarks(topic, e.partition(), Duration::from_secs(2))
        else {
            continue;
        };
        let lag = match e.offset() {
            Offset::Offset(pos) => (high - pos).max(0),
            _ => continue,
        };
        ingest.lag("kafka", &e.partition().to_string(), lag);
    }
}

/// The group consumer: manual offset commits, range assignment (co-partitioned events and
/// search requests), the rebalance context; records the events topic's partition count.
fn group_consumer(
    cfg: &KafkaConfig,
    tracker: &Arc<Tracker>,
    owner: &Arc<Ownership>,
) -> Result<Arc<StreamConsumer<Ctx>>, ConnectorError> {
    let ctx = Ctx {
        tracker: tracker.clone(),
        owner: owner.clone(),
        events_topic: cfg.events_topic.clone(),
    };
    let consumer: Arc<StreamConsumer<Ctx>> = Arc::new(
        client_config(cfg)
            .set("group.id", &cfg.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "range")
            .set("session.timeout.ms", cfg.session_timeout_ms.to_string())
            .set("fetch.wait.max.ms", cfg.fetch_wait_ms.to_string())
            .create_with_context(ctx)?,
    );
    let md = consumer.fetch_metadata(Some(&cfg.events_topic), Duration::from_secs(10))?;
    let n = md
        .topics()
        .iter()
        .find(|t| t.name() == cfg.events_topic)
        .map(|t| t.partitions().len() as i32)
        .unwrap_or(0);
    owner.set_count(n);
    Ok(consumer)
}

/// The acknowledger: takes outcomes in arrival order, marks their offsets done (dead letters
/// are copied to the DLQ topic first); a failed batch stops it and reports through `fail`.
fn spawn_acker<R>(
    mut pending: mpsc::Receiver<Pending<R>>,
    tracker: Arc<Tracker>,
    producer: FutureProducer,
    dlq: String,
    fail: watch::Sender<Option<String>>,
) -> tokio::task::JoinHandle<()>
where
    R: std::future::Future<Output = Ack> + Send + 'static,
{
    tokio::spawn(async move {
        while let Some(p) = pending.recv().await {
            let Pending {
                topic,
                partition,
                offset,
                payload,
                rx,
            } = p;
            match rx.await {
                Ack::Stored | Ack::Duplicate => {}
                Ack::DeadLettered(reason) => {
                    let pos = format!("{topic}/{partition}@{offset}");
                    publish_dead_letter(&producer, &dlq, &payload, &pos, &reason).await;
                }
                Ack::Failed(reason) => {
                    let _ = fail.send(Some(reason));
                    break;
                }
            }
            tracker.done(&topic, partition, offset);
        }
    })
}

/// Copies a dead letter to the DLQ topic with its reason, source and position as headers (the
/// dead letter is in the store already; the topic copy is best effort).
async fn publish_dead_letter(
    producer: &FutureProducer,
    dlq: &str,
    payload: &[u8],
    pos: &str,
    reason: &str,
) {
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "memos-reason",
            value: Some(reason),
        })
        .insert(Header {
            key: "memos-source",
            value: Some("kafka"),
        })
        .insert(Header {
            key: "memos-position",
            value: Some(pos),
        });
    let rec = FutureRecord::<(), [u8]>::to(dlq)
        .payload(payload)
        .headers(headers);
    if let Err((e, _)) = producer.send(rec, Duration::from_secs(10)).await {
        tracing::warn!(error = %e, "publishing a dead letter to {dlq} failed");
    }
}

/// A search request: answered on its own task, the reply published to the request's
/// `reply-to` (only under `reply_topic_prefix`) or the responses topic, then its offset done.
fn spawn_search_reply<S: Search>(
    msg: &impl Message,
    cfg: &KafkaConfig,
    search: Arc<S>,
    producer: FutureProducer,
    tracker: Arc<Tracker>,
) {
    let (topic, partition, offset) = (msg.topic().to_string(), msg.partition(), msg.offset());
    let call = SearchCall {
        body: Bytes::copy_from_slice(msg.payload().unwrap_or(&[])),
        authorization: header(msg, "authorization"),
        deadline: header(msg, "timeout-ms")
            .and_then(|t| t.parse::<u64>().ok())
            // A deadline past what an Instant can hold is no deadline (never an overflow).
            .and_then(|ms| Instant::now().checked_add(Duration::from_millis(ms))),
        forwarded: header(msg, "memos-forwarded").is_some(),
        scope: header(msg, "memos-principal"),
    };
    // Replies go only to topics under `reply_topic_prefix`: a request can never make the
    // service write into another application's topic.
    let asked = header(msg, "reply-to");
    let refused = asked
        .as_ref()
        .filter(|t| !t.starts_with(&cfg.reply_topic_prefix))
        .cloned();
    let reply_to = asked
        .filter(|_| refused.is_none())
        .unwrap_or_else(|| cfg.search_responses_topic.clone());
    let correlation = header(msg, "correlation-id");
    let key = msg.key().map(|k| k.to_vec());
    tokio::spawn(async move {
        let reply = match (&correlation, &refused) {
            (None, _) => error_reply(400, "a search request needs a correlation-id header"),
            (Some(_), Some(t)) => error_reply(
                400,
                &format!("reply-to \"{t}\" is outside the reply topics (kafka.reply_topic_prefix)"),
            ),
            (Some(_), None) => search.search(call).await,
        };
        let mut headers = OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some("application/json"),
        });
        if let Some(c) = &correlation {
            headers = headers.insert(Header {
                key: "correlation-id",
                value: Some(c.as_str()),
            });
        }
        let mut rec = FutureRecord::<[u8], [u8]>::to(&reply_to)
            .payload(&reply[..])
            .headers(headers);
        if let Some(k) = &key {
            rec = rec.key(&k[..]);
        }
        if let Err((e, _)) = producer.send(rec, Duration::from_secs(10)).await {
            tracing::warn!(error = %e, topic = %reply_to, "publishing a search reply failed");
        }
        tracker.done(&topic, partition, offset);
    });
}

/// Consumes events and search requests until `shutdown` turns true (finishing what is in
/// flight and committing it), or a batch fails after its retries (returns
/// [`ConnectorError::Failed`] without committing past it: a restart redelivers from there).
pub async fn run<I: Ingest, S: Search>(
    cfg: KafkaConfig,
    ingest: Arc<I>,
    search: Arc<S>,
    owner: Arc<Ownership>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ConnectorError> {
    if cfg.create_topics {
        create_topics(&cfg).await?;
    }
    let producer: FutureProducer = client_config(&cfg)
        .set("partitioner", "murmur2_random")
        .set("message.timeout.ms", "30000")
        .create()?;
    let tracker = Arc::new(Tracker::default());
    let consumer = group_consumer(&cfg, &tracker, &owner)?;
    let mut topics = vec![cfg.events_topic.as_str()];
    if cfg.serve_search {
        topics.push(cfg.search_requests_topic.as_str());
    }
    consumer.subscribe(&topics)?;
    tracing::info!(brokers = %cfg.brokers, group = %cfg.group_id, topics = ?topics, "kafka source started");
    ingest.connected("kafka", true);
    let mut lag_tick = tokio::time::interval(Duration::from_secs(5));
    let (pending_tx, pending_rx) = mpsc::channel::<Pending<I::Receipt>>(cfg.max_in_flight.max(1));
    let (fail_tx, mut fail_rx) = watch::channel::<Option<String>>(None);
    let acker = spawn_acker(
        pending_rx,
        tracker.clone(),
        producer.clone(),
        cfg.dlq_topic.clone(),
        fail_tx,
    );
    let mut commit_tick =
        tokio::time::interval(Duration::from_millis(cfg.commit_interval_ms.max(10)));
    // Where the store says each partition resumes (written with the committed batches); a
    // message below it is already stored and is only acknowledged. The store never moves a
    // partition past a failed batch, so nothing unstored is skipped.
    let mut resume: HashMap<(String, i32), i64> = HashMap::new();
    let result = loop {
        tokio::select! {
            _ = shutdown.changed() => {
                if *shutdown.borrow() { break Ok(()); }
            }
            _ = fail_rx.changed() => {
                let reason = fail_rx.borrow().clone().unwrap_or_default();
                break Err(ConnectorError::Failed(reason));
            }
            _ = lag_tick.tick() => {
                let (c, ing, topic) = (consumer.clone(), ingest.clone(), cfg.events_topic.clone());
                tokio::task::spawn_blocking(move || report_lag(&c, &topic, ing.as_ref()));
            }
            _ = commit_tick.tick() => {
                let points = tracker.take_commits(None);
                if let Some(tpl) = tpl_of(&points)
                    && let Err(e) = consumer.commit(&tpl, CommitMode::Async)
                {
                    tracing::warn!(error = %e, "kafka offset commit failed; retrying on the next tick");
                }
            }
            m = consumer.recv() => {
                let msg = match m {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "kafka receive error");
                        continue;
                    }
                };
                let (topic, partition, offset) = (msg.topic().to_string(), msg.partition(), msg.offset());
                tracker.start(&topic, partition, offset);
                if topic != cfg.events_topic {
                    spawn_search_reply(&msg, &cfg, search.clone(), producer.clone(), tracker.clone());
                    continue;
                }
                let key = format!("kafka/{topic}/{partition}");
                let from = *resume.entry((topic.clone(), partition)).or_insert_with(|| {
                    ingest
                        .resume_position(&key)
                        .and_then(|p| p.parse::<i64>().ok())
                        .unwrap_or(-1)
                });
                if offset < from {
                    tracker.done(&topic, partition, offset);
                    continue;
                }
                let payload = Bytes::copy_from_slice(msg.payload().unwrap_or(&[]));
                let d = Delivery {
                    payload: payload.clone(),
                    source: "kafka",
                    position: Some((key, (offset + 1).to_string())),
                    // The message key is the cube id (it picks the partition, and so the
                    // process that owns the cube); a keyed event of another cube is refused.
                    cube: msg.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                };
                let rx = match ingest.submit(d).await {
                    Ok(rx) => rx,
                    Err(e) => break Err(e),
                };
                if pending_tx.send(Pending { topic, partition, offset, payload, rx }).await.is_err() {
                    break Err(ConnectorError::Pipeline("the acknowledger stopped".into()));
                }
            }
        }
    };
    // Finish what is in flight, then commit it.
    drop(pending_tx);
    let _ = acker.await;
    let points = tracker.take_commits(None);
    if let Some(tpl) = tpl_of(&points) {
        if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
            tracing::warn!(error = %e, "final kafka commit failed");
        }
        drop(tpl);
    }
    consumer.unsubscribe();
    tracing::info!("kafka source stopped");
    result
}

/// Publishes `payload` to `topic` with `key` and headers: the producer side used by tests,
/// benchmarks and search forwarding.
pub async fn publish(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&str>,
    headers: &BTreeMap<String, String>,
    partition: Option<i32>,
    payload: &[u8],
) -> Result<(i32, i64), ConnectorError> {
    let mut h = OwnedHeaders::new();
    for (k, v) in headers {
        h = h.insert(Header {
            key: k,
            value: Some(v.as_str()),
        });
    }
    let mut rec = FutureRecord::<str, [u8]>::to(topic)
        .payload(payload)
        .headers(h);
    if let Some(k) = key {
        rec = rec.key(k);
    }
    if let Some(p) = partition {
        rec = rec.partition(p);
    }
    let d = producer
        .send(rec, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| ConnectorError::Kafka(e))?;
    Ok((d.partition, d.offset))
}
