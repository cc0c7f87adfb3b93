//! The pipeline runtime: sources push [`Incoming`] items into a bounded channel (backpressure),
//! one task groups them into batches (size or linger), runs the operator chain on a blocking
//! thread and writes each batch in ONE LMDB transaction (records, vectors, postings, history,
//! processed event ids, dead letters, source offsets). Replies/acks are sent only after that
//! transaction has committed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use operators::dedupe::{DedupeOperator, merge_records};
use operators::embed::Embedder;
use operators::event::{Event, EventKind};
use operators::extract::ExtractOperator;
use operators::window::WindowOperator;
use operators::{
    Action, Draft, EmbedOperator, IdentifiedEvent, OpContext, Operator, OperatorError, run_stage,
};
use serde::Serialize;
use serde_json::Value;
use store::{DeadLetter, EventRecord, Filter, MemoryType, Status, Store};
use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::error::PipelineError;

/// What a source hands to the pipeline.
pub enum Payload {
    /// Raw bytes (decoded and validated by the pipeline; failures are dead-lettered).
    Bytes(Vec<u8>),
    /// An already-parsed event (HTTP add).
    Event(Box<Event>),
}

/// A source position: (source partition name, position within it).
pub type Position = (String, String);

/// What [`Processor::process`] takes per input: payload, source name, position.
pub type BatchItem = (Payload, String, Option<Position>);

/// One input with its provenance and an optional reply channel (fired after commit).
pub struct Incoming {
    /// The event.
    pub payload: Payload,
    /// Source name (http, embedded, import, kafka, nats).
    pub source: String,
    /// Source position, stored with the batch.
    pub position: Option<(String, String)>,
    /// Reply after commit.
    pub reply: Option<oneshot::Sender<Outcome>>,
}

/// A memory written (or merged into) by an event.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AddedMemory {
    /// Memory text.
    pub memory: String,
    /// Memory id.
    pub memory_id: String,
    /// MemOS type.
    pub memory_type: String,
    /// Cube.
    pub cube_id: String,
}

/// What happened to one input.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Committed.
    Stored {
        /// Event id.
        event_id: String,
        /// Memories it produced or merged into.
        memories: Vec<AddedMemory>,
    },
    /// Already processed earlier; nothing changed.
    Duplicate {
        /// Event id.
        event_id: String,
        /// Memories of the first processing.
        memories: Vec<AddedMemory>,
    },
    /// Rejected and dead-lettered.
    DeadLettered {
        /// Why.
        reason: String,
    },
    /// The batch could not be committed (transient); the input was not acknowledged.
    Failed {
        /// Why.
        reason: String,
    },
}

/// Handle to a running pipeline.
#[derive(Clone)]
pub struct PipelineHandle {
    tx: mpsc::Sender<Incoming>,
}

impl PipelineHandle {
    /// Queues an input, waiting for room (backpressure).
    pub async fn submit(&self, inc: Incoming) -> Result<(), PipelineError> {
        self.tx
            .send(inc)
            .await
            .map_err(|_| PipelineError::Unavailable("the pipeline is shut down".into()))
    }

    /// Queues an event and waits until its batch has committed.
    pub async fn submit_wait(
        &self,
        payload: Payload,
        source: &str,
    ) -> Result<Outcome, PipelineError> {
        let (tx, rx) = oneshot::channel();
        self.submit(Incoming {
            payload,
            source: source.into(),
            position: None,
            reply: Some(tx),
        })
        .await?;
        rx.await
            .map_err(|_| PipelineError::Unavailable("the pipeline stopped before replying".into()))
    }
}

/// Per-batch statistics, for logs and benchmarks.
#[derive(Debug, Default, Clone, Copy)]
pub struct BatchStats {
    /// Inputs.
    pub events: usize,
    /// Memories inserted.
    pub inserted: usize,
    /// Memories merged.
    pub merged: usize,
    /// Feedback records kept.
    pub feedback: usize,
    /// Dead letters.
    pub dead_lettered: usize,
}

/// The synchronous part: operators + sink. Owned by the pipeline task, run on a blocking thread.
pub struct Processor {
    store: Arc<Store>,
    ctx: OpContext,
    window: WindowOperator,
    extract: ExtractOperator,
    embed: EmbedOperator,
    dedupe: DedupeOperator,
    feedback: operators::feedback::FeedbackMergeOperator,
    fine: Option<crate::fine::FineQueue>,
    activation: Option<Arc<crate::activation::Activation>>,
    capacity: Vec<(MemoryType, usize)>,
    hard_forget: bool,
    max_event_bytes: usize,
    retry_attempts: u32,
    /// Source partitions whose offsets are held back after a failed batch: partition → the
    /// lowest position that failed. Later batches do not advance the partition's stored offset
    /// until the failed position has been processed again (the source redelivers from it), so
    /// a restart that resumes from the stored offset never skips a failed event.
    held: HashMap<String, u64>,
    metrics: Arc<crate::metrics::Metrics>,
}

/// Runs one operator over a batch, timing it and counting items in and out.
fn stage<O: Operator>(
    m: &crate::metrics::Metrics,
    name: &'static str,
    op: &mut O,
    batch: Vec<O::In>,
    ctx: &OpContext,
) -> Result<(Vec<O::Out>, operators::Failures), OperatorError> {
    let n = batch.len();
    let t = Instant::now();
    let r = run_stage(op, batch, ctx);
    m.operator_seconds
        .with_label_values(&[name])
        .observe(t.elapsed().as_secs_f64());
    m.operator_items
        .with_label_values(&[name, "in"])
        .inc_by(n as u64);
    if let Ok((out, _)) = &r {
        m.operator_items
            .with_label_values(&[name, "out"])
            .inc_by(out.len() as u64);
    }
    r
}

struct Pending {
    idx: usize,
    ie: IdentifiedEvent,
    bytes: Vec<u8>,
}

fn retry<T>(
    attempts: u32,
    mut f: impl FnMut() -> Result<T, OperatorError>,
) -> Result<T, OperatorError> {
    let mut delay = Duration::from_millis(50);
    let mut n = 0;
    loop {
        match f() {
            Err(e) if e.retryable() && n + 1 < attempts.max(1) => {
                tracing::warn!(error = %e, attempt = n + 1, "retryable failure, backing off");
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
                n += 1;
            }
            r => return r,
        }
    }
}

impl Processor {
    /// Builds the operator chain from the configuration.
    pub fn new(
        cfg: &Config,
        store: Arc<Store>,
        embedder: Arc<dyn Embedder>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        Processor {
            ctx: OpContext {
                store: store.clone(),
            },
            store,
            window: cfg.window.build(),
            extract: cfg.extract.build(),
            feedback: cfg.feedback.build(embedder.clone()),
            fine: None,
            activation: None,
            embed: EmbedOperator::new(embedder),
            dedupe: cfg.dedupe.build(),
            capacity: cfg
                .memory
                .capacity
                .iter()
                .filter(|(_, n)| **n > 0)
                .filter_map(|(t, n)| MemoryType::parse(t).map(|t| (t, *n)))
                .collect(),
            hard_forget: cfg.memory.forget == "delete",
            max_event_bytes: cfg.pipeline.max_event_bytes,
            retry_attempts: cfg.pipeline.retry_attempts,
            held: HashMap::new(),
            metrics,
        }
    }

    /// Capacity-based forgetting (memos-spec §3.6): per memory type with a limit, the oldest
    /// activated memories of `cube` beyond it are archived (or hard-deleted).
    fn forget_over_capacity(
        &self,
        wtxn: &mut store::heed::RwTxn,
        cube: &str,
    ) -> Result<usize, PipelineError> {
        let mut forgotten = 0;
        for &(ty, cap) in &self.capacity {
            let ids = self
                .store
                .field_ids(wtxn, cube, "memory_type", ty.as_str())?
                & self
                    .store
                    .field_ids(wtxn, cube, "status", Status::Activated.as_str())?;
            if ids.len() as usize <= cap {
                continue;
            }
            let mut recs = Vec::new();
            for id in &ids {
                if let Some(r) = self.store.record(wtxn, id)? {
                    recs.push(r);
                }
            }
            recs.sort_by_key(|r| (r.updated_at, r.created_at));
            let over: Vec<String> = recs[..recs.len() - cap]
                .iter()
                .map(|r| r.id.clone())
                .collect();
            if self.hard_forget {
                self.store.delete(wtxn, &over)?;
            } else {
                for id in &over {
                    self.store
                        .set_status(wtxn, id, Status::Archived, "capacity")?;
                }
            }
            forgotten += over.len();
            self.metrics
                .forgotten
                .with_label_values(&[ty.as_str()])
                .inc_by(over.len() as u64);
        }
        Ok(forgotten)
    }

    fn memories_of(
        &self,
        txn: &store::heed::RoTxn,
        ids: &[String],
    ) -> Result<Vec<AddedMemory>, PipelineError> {
        let mut out = Vec::new();
        for id in ids {
            if let Some(r) = self.store.get(txn, id)? {
                out.push(AddedMemory {
                    memory: r.memory,
                    memory_id: r.id,
                    memory_type: r.memory_type.as_str().into(),
                    cube_id: r.cube_id,
                });
            }
        }
        Ok(out)
    }

    /// Processes one batch; returns an outcome per input (same order) and statistics.
    pub fn process(&mut self, batch: Vec<BatchItem>) -> (Vec<Outcome>, BatchStats) {
        let n = batch.len();
        let positions: Vec<(String, String)> = batch.iter().filter_map(|b| b.2.clone()).collect();
        match self.try_process(batch) {
            Ok(r) => r,
            Err(e) => {
                for (src, pos) in positions {
                    // Positions are "next to read"; the failed input is the one before.
                    if let Ok(p) = pos.parse::<u64>() {
                        let at = p.saturating_sub(1);
                        let h = self.held.entry(src).or_insert(at);
                        *h = (*h).min(at);
                    }
                }
                tracing::error!(error = %e, "batch failed; inputs are not acknowledged");
                (
                    vec![
                        Outcome::Failed {
                            reason: e.to_string()
                        };
                        n
                    ],
                    BatchStats {
                        events: n,
                        ..Default::default()
                    },
                )
            }
        }
    }

    fn try_process(
        &mut self,
        batch: Vec<BatchItem>,
    ) -> Result<(Vec<Outcome>, BatchStats), PipelineError> {
        let n = batch.len();
        let mut stats = BatchStats {
            events: n,
            ..Default::default()
        };
        let mut outcomes: Vec<Option<Outcome>> = vec![None; n];
        let mut dead: Vec<(usize, DeadLetter)> = Vec::new();
        let mut positions: Vec<(String, String)> = Vec::new();
        let mut pending: Vec<Pending> = Vec::new();
        let mut first_of: HashMap<(String, String), usize> = HashMap::new();
        let mut same_as: Vec<(usize, usize)> = Vec::new();
        let now = store::time::now_micros();
        {
            let rtxn = self.store.read_txn()?;
            for (idx, (payload, source, position)) in batch.into_iter().enumerate() {
                if let Some(p) = &position {
                    positions.push(p.clone());
                }
                let (decoded, bytes) = match payload {
                    Payload::Bytes(b) => (Event::decode(&b, self.max_event_bytes), b),
                    Payload::Event(e) => {
                        let bytes = serde_json::to_vec(&e).unwrap_or_default();
                        (e.validate().map(|_| *e), bytes)
                    }
                };
                let kind = match &decoded {
                    Ok(ev) => match ev.kind {
                        EventKind::Messages => "messages",
                        EventKind::ToolCall => "tool_call",
                        EventKind::Document => "document",
                        EventKind::Feedback => "feedback",
                        EventKind::Delete => "delete",
                    },
                    Err(_) => "invalid",
                };
                self.metrics
                    .events_received
                    .with_label_values(&[source_label(&source), kind])
                    .inc();
                let ev = match decoded {
                    Ok(ev) => ev,
                    Err(e) => {
                        dead.push((
                            idx,
                            DeadLetter {
                                source,
                                position: position.map(|p| format!("{}@{}", p.0, p.1)),
                                reason: e.to_string(),
                                payload: bytes,
                                at: now,
                            },
                        ));
                        continue;
                    }
                };
                let id = ev.id();
                let key = (ev.cube_id.clone(), id.clone());
                if let Some(&first) = first_of.get(&key) {
                    same_as.push((idx, first));
                    continue;
                }
                if let Some(rec) = self.store.event(&rtxn, &ev.cube_id, &id)? {
                    outcomes[idx] = Some(Outcome::Duplicate {
                        event_id: id,
                        memories: self.memories_of(&rtxn, &rec.memory_ids)?,
                    });
                    continue;
                }
                first_of.insert(key, idx);
                let _ = source;
                pending.push(Pending {
                    idx,
                    ie: IdentifiedEvent { id, event: ev },
                    bytes,
                });
            }
        }

        // Operators. A per-event failure dead-letters that event only.
        let mut failed: HashMap<String, String> = HashMap::new();
        let events: Vec<IdentifiedEvent> = pending.iter().map(|p| p.ie.clone()).collect();
        let t_ops = Instant::now();
        let m = self.metrics.clone();
        let (drafts, f) = stage(&m, "window", &mut self.window, events, &self.ctx)?;
        failed.extend(f.into_iter().map(|(id, e)| (id, e.to_string())));
        let (drafts, f) = stage(&m, "extract", &mut self.extract, drafts, &self.ctx)?;
        failed.extend(f.into_iter().map(|(id, e)| (id, e.to_string())));
        let embedded = {
            let embed = &mut self.embed;
            let ctx = &self.ctx;
            m.embed_batch.observe(drafts.len() as f64);
            retry(self.retry_attempts, || {
                stage(&m, "embed", embed, drafts.clone(), ctx)
            })
        };
        let drafts = match embedded {
            Ok((d, f)) => {
                failed.extend(f.into_iter().map(|(id, e)| (id, e.to_string())));
                d
            }
            Err(e) if !e.retryable() => {
                for p in &pending {
                    failed.insert(p.ie.id.clone(), format!("embed: {e}"));
                }
                Vec::new()
            }
            Err(e) => return Err(e.into()),
        };
        let t_embed = t_ops.elapsed();
        let (drafts, f) = stage(&m, "dedupe", &mut self.dedupe, drafts, &self.ctx)?;
        let t_dedupe = t_ops.elapsed() - t_embed;
        failed.extend(f.into_iter().map(|(id, e)| (id, e.to_string())));

        // Sink: one write transaction for the whole batch.
        let mut wtxn = self.store.write_txn()?;
        let mut by_event: HashMap<String, Vec<Draft>> = HashMap::new();
        for d in drafts {
            by_event.entry(d.event_id.clone()).or_default().push(d);
        }
        let mut produced: HashMap<usize, (String, Vec<String>)> = HashMap::new();
        let mut fine_jobs: Vec<crate::fine::FineJob> = Vec::new();
        for p in &pending {
            if let Some(reason) = failed.get(&p.ie.id) {
                dead.push((
                    p.idx,
                    DeadLetter {
                        source: "pipeline".into(),
                        position: None,
                        reason: reason.clone(),
                        payload: p.bytes.clone(),
                        at: now,
                    },
                ));
                continue;
            }
            let ev = &p.ie.event;
            let mut ids: Vec<String> = Vec::new();
            match ev.kind {
                EventKind::Delete => match self.apply_delete(&mut wtxn, ev) {
                    Ok(deleted) => ids = deleted,
                    Err(e) => {
                        dead.push((
                            p.idx,
                            DeadLetter {
                                source: "pipeline".into(),
                                position: None,
                                reason: e.to_string(),
                                payload: p.bytes.clone(),
                                at: now,
                            },
                        ));
                        continue;
                    }
                },
                EventKind::Feedback => {
                    // feedback-merge runs here, in the batch's transaction: it sees the
                    // memories this batch wrote and commits with them.
                    let outcome = match self.feedback.apply(&self.store, &mut wtxn, &p.ie) {
                        Ok(o) => o,
                        Err(e) if !e.retryable() => {
                            dead.push((
                                p.idx,
                                DeadLetter {
                                    source: "pipeline".into(),
                                    position: None,
                                    reason: format!("feedback: {e}"),
                                    payload: p.bytes.clone(),
                                    at: now,
                                },
                            ));
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    };
                    for c in outcome.add.iter().chain(&outcome.update) {
                        ids.push(c.id.clone());
                    }
                    let text =
                        |k: &str| ev.payload.get(k).and_then(|v| v.as_str()).map(String::from);
                    let f = store::FeedbackRecord {
                        id: p.ie.id.clone(),
                        cube_id: ev.cube_id.clone(),
                        user_id: ev.user_id.clone(),
                        session_id: ev.session_id.clone(),
                        feedback_content: text("feedback_content").unwrap_or_default(),
                        history: ev
                            .payload
                            .get("history")
                            .map(|h| h.to_string())
                            .unwrap_or_default(),
                        retrieved_memory_ids: ev
                            .payload
                            .get("retrieved_memory_ids")
                            .and_then(|v| serde_json::from_value(v.clone()).ok())
                            .unwrap_or_default(),
                        feedback_time: text("feedback_time"),
                        status: "processed".into(),
                        created_at: now,
                        result: serde_json::to_string(&outcome).ok(),
                    };
                    self.store.put_feedback(&mut wtxn, &f)?;
                    stats.feedback += 1;
                    m.feedback.with_label_values(&[&outcome.intent]).inc();
                }
                _ => {
                    let mut fast_turns = Vec::new();
                    for d in by_event.remove(&p.ie.id).unwrap_or_default() {
                        match d.action {
                            Action::Skip => ids.push(d.record.id.clone()),
                            Action::Insert => {
                                self.store.insert(&mut wtxn, &d.record, &d.embedding)?;
                                stats.inserted += 1;
                                ids.push(d.record.id.clone());
                                if matches!(
                                    d.record.memory_type,
                                    MemoryType::UserMemory | MemoryType::LongTermMemory
                                ) && d.record.tags.iter().any(|t| t == "mode:fast")
                                {
                                    fast_turns.push(d.record.id.clone());
                                }
                            }
                            Action::Merge { target, reason } => {
                                match self.store.get(&wtxn, &target)? {
                                    Some(existing) => {
                                        let merged = merge_records(&existing, &d.record);
                                        let emb = (merged.memory != existing.memory)
                                            .then_some(d.embedding.as_slice());
                                        self.store.update(
                                            &mut wtxn,
                                            &merged,
                                            emb,
                                            reason,
                                            Some(d.record.id.clone()),
                                        )?;
                                        stats.merged += 1;
                                        if !ids.contains(&target) {
                                            ids.push(target);
                                        }
                                    }
                                    None => {
                                        self.store.insert(&mut wtxn, &d.record, &d.embedding)?;
                                        stats.inserted += 1;
                                        ids.push(d.record.id.clone());
                                    }
                                }
                            }
                        }
                    }
                    if ev.mode == operators::event::Mode::Fine
                        && ev.kind == EventKind::Messages
                        && !fast_turns.is_empty()
                        && self.fine.is_some()
                    {
                        fine_jobs.push(crate::fine::FineJob {
                            cube_id: ev.cube_id.clone(),
                            user_id: ev.user_id.clone(),
                            event_id: p.ie.id.clone(),
                            memory_ids: fast_turns,
                            tags: ev.tags.clone(),
                        });
                    }
                }
            }
            let source = "pipeline".to_string();
            self.store.mark_event(
                &mut wtxn,
                &ev.cube_id,
                &p.ie.id,
                &EventRecord {
                    memory_ids: ids.clone(),
                    processed_at: now,
                    source,
                    position: None,
                },
            )?;
            produced.insert(p.idx, (p.ie.id.clone(), ids));
        }
        for (_, dl) in &dead {
            self.store.put_dead_letter(&mut wtxn, dl)?;
        }
        let cubes: std::collections::BTreeSet<&str> = pending
            .iter()
            .map(|p| p.ie.event.cube_id.as_str())
            .collect();
        for &cube in &cubes {
            self.forget_over_capacity(&mut wtxn, cube)?;
        }
        stats.dead_lettered = dead.len();
        let mut released = Vec::new();
        for (src, pos) in &positions {
            if let Some(&h) = self.held.get(src) {
                let replayed = positions.iter().any(|(s2, p2)| {
                    s2 == src && p2.parse::<u64>().is_ok_and(|p| p.saturating_sub(1) <= h)
                });
                if !replayed {
                    continue;
                }
                released.push(src.clone());
            }
            self.store.set_offset(&mut wtxn, src, pos)?;
        }
        let t_sink = Instant::now();
        self.store.commit(wtxn)?;
        m.commit_seconds.observe(t_sink.elapsed().as_secs_f64());
        // The activation worker rebuilds the touched cubes' KV caches once the batch is durable.
        if let Some(a) = &self.activation {
            for c in &cubes {
                a.notify(c);
            }
        }
        // Fine extraction starts only once the fast memories are durable.
        if let Some(q) = &self.fine {
            for job in fine_jobs {
                q.submit(job);
            }
        }
        for src in released {
            self.held.remove(&src);
        }
        tracing::debug!(
            embed_ms = t_embed.as_millis() as u64,
            dedupe_ms = t_dedupe.as_millis() as u64,
            commit_ms = t_sink.elapsed().as_millis() as u64,
            total_ms = t_ops.elapsed().as_millis() as u64,
            "batch stages"
        );

        let rtxn = self.store.read_txn()?;
        for (idx, (event_id, ids)) in produced {
            outcomes[idx] = Some(Outcome::Stored {
                event_id,
                memories: self.memories_of(&rtxn, &ids)?,
            });
        }
        for (idx, dl) in dead {
            outcomes[idx] = Some(Outcome::DeadLettered { reason: dl.reason });
        }
        for (idx, first) in same_as {
            outcomes[idx] = Some(match outcomes[first].clone() {
                Some(Outcome::Stored { event_id, memories }) => {
                    Outcome::Duplicate { event_id, memories }
                }
                Some(o) => o,
                None => Outcome::Failed {
                    reason: "internal: no outcome".into(),
                },
            });
        }
        Ok((
            outcomes
                .into_iter()
                .map(|o| {
                    o.unwrap_or(Outcome::Failed {
                        reason: "internal: no outcome".into(),
                    })
                })
                .collect(),
            stats,
        ))
    }

    fn apply_delete(
        &self,
        wtxn: &mut store::heed::RwTxn,
        ev: &Event,
    ) -> Result<Vec<String>, PipelineError> {
        let cube = ev.cube_id.as_str();
        let ids: Vec<String> =
            if let Some(list) = ev.payload.get("memory_ids").and_then(Value::as_array) {
                // Only ids of this cube: an event can never delete another cube's memories.
                let mut ids = Vec::new();
                for v in list {
                    if let Some(id) = v.as_str()
                        && let Some(r) = self.store.get(wtxn, id)?
                        && r.cube_id == cube
                    {
                        ids.push(r.id);
                    }
                }
                ids
            } else {
                let f = Filter::parse(ev.payload.get("filter").unwrap_or(&Value::Null))?;
                self.store.matching_ids(wtxn, cube, &f)?
            };
        Ok(self.store.delete(wtxn, &ids)?.ids)
    }
}

/// The `source` label of an input: its transport, never anything caller-chosen.
fn source_label(source: &str) -> &'static str {
    match source.split(['/', ':', '-']).next().unwrap_or("") {
        "http" => "http",
        "kafka" => "kafka",
        "nats" => "nats",
        "import" => "import",
        "eval" => "eval",
        _ => "other",
    }
}

/// Starts the pipeline task. It ends (after finishing the batch in hand and folding the vector
/// delta into the trees) when every [`PipelineHandle`] is dropped.
pub fn spawn(
    cfg: &Config,
    store: Arc<Store>,
    embedder: Arc<dyn Embedder>,
    metrics: Arc<crate::metrics::Metrics>,
    fine: Option<crate::fine::FineQueue>,
    activation: Option<Arc<crate::activation::Activation>>,
) -> (PipelineHandle, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Incoming>(cfg.pipeline.channel_capacity.max(1));
    let batch_size = cfg.pipeline.batch_size.max(1);
    let linger = Duration::from_millis(cfg.pipeline.linger_ms);
    let idle = Duration::from_millis(cfg.pipeline.index_idle_ms.max(1));
    // The operators and the sink run on one dedicated OS thread (CPU-bound model inference and
    // the LMDB writer); the async task only batches and replies.
    type Work = (Vec<BatchItem>, oneshot::Sender<(Vec<Outcome>, BatchStats)>);
    let (work_tx, work_rx) = std::sync::mpsc::channel::<Work>();
    let mut processor = Processor::new(cfg, store.clone(), embedder, metrics.clone());
    processor.fine = fine;
    processor.activation = activation;
    let worker = std::thread::Builder::new()
        .name("memos-pipeline".into())
        .spawn(move || {
            while let Ok((items, reply)) = work_rx.recv() {
                let _ = reply.send(processor.process(items));
            }
        });
    if let Err(e) = &worker {
        tracing::error!(error = %e, "could not start the pipeline thread");
    }
    let task = tokio::spawn(async move {
        loop {
            let first = match tokio::time::timeout(idle, rx.recv()).await {
                Ok(Some(i)) => i,
                Ok(None) => break,
                Err(_) => {
                    let s = store.clone();
                    match tokio::task::spawn_blocking(move || s.index_pending()).await {
                        Ok(Ok(n)) if n > 0 => {
                            tracing::debug!(vectors = n, "folded vector delta into the trees")
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "indexing the vector delta failed")
                        }
                        _ => {}
                    }
                    continue;
                }
            };
            let mut batch = vec![first];
            let deadline = Instant::now() + linger;
            while batch.len() < batch_size {
                match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
                    Ok(Some(i)) => batch.push(i),
                    _ => break,
                }
            }
            let mut replies = Vec::with_capacity(batch.len());
            let mut items = Vec::with_capacity(batch.len());
            let mut sources = Vec::with_capacity(batch.len());
            for i in batch {
                replies.push(i.reply);
                sources.push(source_label(&i.source));
                items.push((i.payload, i.source, i.position));
            }
            let started = Instant::now();
            let (tx, rx) = oneshot::channel();
            if work_tx.send((items, tx)).is_err() {
                tracing::error!("pipeline thread stopped");
                break;
            }
            let Ok((outcomes, stats)) = rx.await else {
                tracing::error!("pipeline thread panicked");
                break;
            };
            tracing::debug!(
                events = stats.events,
                inserted = stats.inserted,
                merged = stats.merged,
                dead = stats.dead_lettered,
                ms = started.elapsed().as_millis() as u64,
                "batch committed"
            );
            metrics
                .batch_seconds
                .observe(started.elapsed().as_secs_f64());
            metrics.batch_events.observe(stats.events as f64);
            for (kind, n) in [
                ("inserted", stats.inserted),
                ("merged", stats.merged),
                ("feedback", stats.feedback),
            ] {
                metrics
                    .memories_written
                    .with_label_values(&[kind])
                    .inc_by(n as u64);
            }
            for ((r, o), source) in replies.into_iter().zip(outcomes).zip(sources) {
                let outcome = match &o {
                    Outcome::Stored { .. } => "stored",
                    Outcome::Duplicate { .. } => "duplicate",
                    Outcome::DeadLettered { .. } => "dead_lettered",
                    Outcome::Failed { .. } => "failed",
                };
                metrics.events.with_label_values(&[source, outcome]).inc();
                if let Some(r) = r {
                    let _ = r.send(o);
                }
            }
        }
        drop(work_tx);
        if let Ok(w) = worker {
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
        let s = store.clone();
        let _ = tokio::task::spawn_blocking(move || s.index_pending()).await;
        tracing::info!("pipeline stopped");
    });
    (PipelineHandle { tx }, task)
}
