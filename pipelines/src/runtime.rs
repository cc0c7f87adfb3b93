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
use operators::feedback::{FeedbackAction, FeedbackMergeOperator, FeedbackRequest};
use operators::window::WindowOperator;
use operators::{
    Action, Draft, EmbedOperator, IdentifiedEvent, OpContext, Operator, OperatorError, run_stage,
};
use serde::Serialize;
use serde_json::Value;
use store::{DeadLetter, EventRecord, Filter, MemoryType, Status, Store};
use tokio::sync::{mpsc, oneshot};

use crate::commit::Committer;
use crate::config::EngineConfig as Config;
use crate::delete::{Deletion, Missing, Target};
use crate::error::PipelineError;

/// What a source hands to the pipeline.
#[derive(Clone)]
pub enum Payload {
    /// Raw bytes (decoded and validated by the pipeline; failures are dead-lettered).
    Bytes(Vec<u8>),
    /// Raw bytes from a broker whose subject or message key names the cube: an event whose
    /// `cube_id` is another cube is dead-lettered (a producer allowed on one subject never
    /// writes another cube).
    Routed {
        /// The message.
        bytes: Vec<u8>,
        /// The cube its subject or key names.
        cube: String,
    },
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

pub use crate::tasks::AddedMemory;

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

/// Whether the pipeline thread is running; `/ready` answers 503 with the reason while it is not.
#[derive(Debug, Default)]
pub struct PipelineHealth {
    down: std::sync::Mutex<Option<String>>,
    restarts: std::sync::atomic::AtomicU64,
}

impl PipelineHealth {
    /// Why the pipeline thread is not running (None while it runs).
    pub fn down_reason(&self) -> Option<String> {
        self.down.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How many times the pipeline thread was restarted.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set_down(&self, reason: Option<String>) {
        *self.down.lock().unwrap_or_else(|p| p.into_inner()) = reason;
    }
}

/// Handle to a running pipeline.
#[derive(Clone)]
pub struct PipelineHandle {
    tx: mpsc::Sender<Incoming>,
    health: Arc<PipelineHealth>,
}

impl PipelineHandle {
    /// The pipeline thread's state.
    pub fn health(&self) -> &PipelineHealth {
        &self.health
    }

    /// Queues an input, waiting for room (backpressure).
    pub async fn submit(&self, inc: Incoming) -> Result<(), PipelineError> {
        self.tx
            .send(inc)
            .await
            .map_err(|_| PipelineError::Unavailable("the pipeline is shut down".into()))
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
    /// The per-event operators, and a second instance of them: a batch whose events span
    /// several cubes is split by cube and its two shares are prepared on two cores.
    chain: Chain,
    helper: Chain,
    feedback: FeedbackMergeOperator,
    /// Opens the batch's write transaction; its hooks queue fine jobs and KV-cache builds.
    committer: Committer,
    /// Whether fine-mode events queue extraction jobs (an extraction model is configured).
    fine_enabled: bool,
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
    /// Custom stages, between extract and embed.
    stages: Vec<Stage>,
    /// Set when an operator reported a fatal error: the supervisor replaces this processor.
    fatal: Option<String>,
}

/// Batches with fewer events than this are prepared on one core (a thread per batch costs
/// more than it saves on a handful of events).
const SPLIT_MIN_EVENTS: usize = 64;

/// The per-event operators for one share of a batch: window → extract → (custom stages) →
/// embed → dedupe. Dedupe compares a draft with its own cube only, so shares split by cube
/// give the same result as the whole batch.
struct Chain {
    window: WindowOperator,
    extract: ExtractOperator,
    embed: EmbedOperator,
    dedupe: DedupeOperator,
}

/// What a chain produced for its share: drafts, events that failed (id, reason), and when its
/// embedding and dedupe ended (since the chain started).
struct ChainOut {
    drafts: Vec<Draft>,
    failed: Vec<(String, String)>,
    t_embed: Duration,
    t_dedupe: Duration,
}

impl Chain {
    fn build(cfg: &Config, embedder: Arc<dyn Embedder>) -> Chain {
        Chain {
            window: cfg.window.build(),
            extract: cfg.extract.build(),
            embed: EmbedOperator::new(embedder),
            dedupe: cfg.dedupe.build(),
        }
    }

    fn start(&mut self, ctx: &OpContext, stages: &mut [Stage]) -> Result<(), OperatorError> {
        self.window.on_start(ctx)?;
        self.extract.on_start(ctx)?;
        for st in stages {
            st.on_start(ctx)?;
        }
        self.embed.on_start(ctx)?;
        self.dedupe.on_start(ctx)
    }

    fn close(&mut self, ctx: &OpContext, stages: &mut [Stage]) -> Vec<Result<(), OperatorError>> {
        let mut results = vec![self.window.on_close(ctx), self.extract.on_close(ctx)];
        for st in stages {
            results.push(st.on_close(ctx));
        }
        results.push(self.embed.on_close(ctx));
        results.push(self.dedupe.on_close(ctx));
        results
    }

    /// Runs the chain over `events`. A per-event failure is listed, not returned; a transient
    /// or fatal error fails the share.
    fn run(
        &mut self,
        m: &crate::metrics::Metrics,
        ctx: &OpContext,
        stages: &mut [Stage],
        events: Vec<IdentifiedEvent>,
        retry_attempts: u32,
    ) -> Result<ChainOut, PipelineError> {
        let t0 = Instant::now();
        let mut failed: Vec<(String, String)> = Vec::new();
        let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
        let (drafts, f) = guarded(m, &mut self.window, events, ctx)?;
        failed.extend(f.into_iter().map(|(id, e)| (id, e.to_string())));
        let (mut drafts, f) = guarded(m, &mut self.extract, drafts, ctx)?;
        failed.extend(f.into_iter().map(|(id, e)| (id, e.to_string())));
        for st in stages {
            let (d, f) = guarded(m, st.as_mut(), drafts, ctx)?;
            failed.extend(f.into_iter().map(|(id, e)| (id, e.to_string())));
            drafts = d;
        }
        let embedded = {
            let embed = &mut self.embed;
            m.embed_batch.observe(drafts.len() as f64);
            retry(retry_attempts, || guarded(m, embed, drafts.clone(), ctx))
        };
        let drafts = match embedded {
            Ok((d, f)) => {
                failed.extend(f.into_iter().map(|(id, e)| (id, e.to_string())));
                d
            }
            Err(e) if !e.retryable() => {
                failed.extend(ids.into_iter().map(|id| (id, format!("embed: {e}"))));
                Vec::new()
            }
            Err(e) => return Err(e.into()),
        };
        let t_embed = t0.elapsed();
        let (drafts, f) = guarded(m, &mut self.dedupe, drafts, ctx)?;
        failed.extend(f.into_iter().map(|(id, e)| (id, e.to_string())));
        Ok(ChainOut {
            drafts,
            failed,
            t_embed,
            t_dedupe: t0.elapsed() - t_embed,
        })
    }
}

/// Splits a batch's events in two shares of whole cubes, as even as the cubes allow (largest
/// cube first to the lighter share). Returns one empty share when the batch has one cube.
fn split_by_cube(events: Vec<IdentifiedEvent>) -> (Vec<IdentifiedEvent>, Vec<IdentifiedEvent>) {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for e in &events {
        *counts.entry(e.event.cube_id.as_str()).or_default() += 1;
    }
    let mut cubes: Vec<(&str, usize)> = counts.into_iter().collect();
    cubes.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let (mut load_a, mut load_b) = (0, 0);
    let mut to_b: std::collections::HashSet<String> = std::collections::HashSet::new();
    for (cube, n) in cubes {
        if load_b < load_a {
            load_b += n;
            to_b.insert(cube.to_string());
        } else {
            load_a += n;
        }
    }
    events
        .into_iter()
        .partition(|e| !to_b.contains(e.event.cube_id.as_str()))
}

/// A custom stage: drafts in, drafts out; it runs between `extract` and `embed` (e.g. a redactor
/// or a classifier), with the same per-event fault isolation as the built-in stages.
pub type Stage = Box<dyn Operator<In = Draft, Out = Draft>>;

/// Builds the custom stages; called each time the pipeline thread (re)starts.
pub type StageFactory = Arc<dyn Fn() -> Vec<Stage> + Send + Sync>;

/// Runs one operator over a batch, timing it and counting items in and out.
fn stage<O: Operator + ?Sized>(
    m: &crate::metrics::Metrics,
    op: &mut O,
    batch: Vec<O::In>,
    ctx: &OpContext,
) -> Result<(Vec<O::Out>, operators::Failures), OperatorError> {
    let name = op.name();
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

/// What the stages produced for one event: its drafts, or its feedback as read.
struct EventInput<'a> {
    drafts: &'a [Draft],
    feedback: Option<FeedbackRequest>,
}

/// One event the sink applied: its id, its memories, what it inserted and merged, and its
/// feedback intent.
struct Done {
    event_id: String,
    ids: Vec<String>,
    inserted: usize,
    merged: usize,
    intent: Option<String>,
}

/// What the sink applied of a batch: per input index what the event did; the fine jobs; the
/// buffered index writes; and the events that failed on their own (input index, reason).
struct Applied {
    produced: HashMap<usize, Done>,
    fine_jobs: Vec<store::JobRecord>,
    index: store::IndexBuffer,
    dead: Vec<(usize, String)>,
}

/// What the sink did with one event.
#[derive(Default)]
struct SinkOut {
    ids: Vec<String>,
    inserted: usize,
    merged: usize,
    feedback_intent: Option<String>,
    fine_job: Option<store::JobRecord>,
}

/// "partition@position", as dead letters record a source position.
fn position_label(p: &Position) -> String {
    format!("{}@{}", p.0, p.1)
}

/// Whether a stage error must fail the whole stage instead of the one event: transient (the
/// batch is retried) or fatal (the pipeline restarts).
fn escalates(e: &OperatorError) -> bool {
    e.retryable() || matches!(e, OperatorError::Fatal(_))
}

fn is_fatal(e: &PipelineError) -> bool {
    matches!(e, PipelineError::Operator(OperatorError::Fatal(_)))
}

/// The text of a panic payload.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".into()
    }
}

/// An operator input that belongs to one event (so a failing batch can be retried event by
/// event).
pub trait EventScoped: Clone {
    /// The event's id.
    fn event_id(&self) -> &str;
}

impl EventScoped for IdentifiedEvent {
    fn event_id(&self) -> &str {
        &self.id
    }
}

impl EventScoped for Draft {
    fn event_id(&self) -> &str {
        &self.event_id
    }
}

/// Runs a stage with per-event fault isolation: when the batch panics, or fails with an error
/// that is not transient, the stage runs again once per event (each under `catch_unwind`), so
/// only the events that panic or fail on their own are reported as failures; the others go on.
/// Transient errors fail the whole stage (the caller retries the batch).
fn guarded<O: Operator + ?Sized>(
    m: &crate::metrics::Metrics,
    op: &mut O,
    batch: Vec<O::In>,
    ctx: &OpContext,
) -> Result<(Vec<O::Out>, operators::Failures), OperatorError>
where
    O::In: EventScoped,
{
    use std::panic::{AssertUnwindSafe, catch_unwind};
    let name = op.name();
    let copy = batch.clone();
    let why = match catch_unwind(AssertUnwindSafe(|| stage(m, op, batch, ctx))) {
        Ok(Ok(r)) => return Ok(r),
        Ok(Err(e)) if escalates(&e) => return Err(e),
        Ok(Err(e)) => e.to_string(),
        Err(p) => format!("panic: {}", panic_message(&*p)),
    };
    tracing::warn!(operator = name, reason = %why, events = copy.len(), "stage failed on its batch; isolating events");
    let mut groups: Vec<(String, Vec<O::In>)> = Vec::new();
    for item in copy {
        match groups.last_mut() {
            Some((id, items)) if id == item.event_id() => items.push(item),
            _ => groups.push((item.event_id().to_string(), vec![item])),
        }
    }
    let (mut out, mut failed) = (Vec::new(), Vec::new());
    for (id, items) in groups {
        match catch_unwind(AssertUnwindSafe(|| stage(m, op, items, ctx))) {
            Ok(Ok((o, f))) => {
                out.extend(o);
                failed.extend(f);
            }
            Ok(Err(e)) if escalates(&e) => return Err(e),
            Ok(Err(e)) => failed.push((id, e)),
            Err(p) => failed.push((
                id,
                OperatorError::Panic {
                    operator: name.into(),
                    message: panic_message(&*p),
                },
            )),
        }
    }
    Ok((out, failed))
}

/// A batch after decoding: the outcomes known already, dead letters, source positions, the
/// events to process and duplicates within the batch (index, index of its first).
struct Decoded {
    outcomes: Vec<Option<Outcome>>,
    dead: Vec<(usize, DeadLetter)>,
    positions: Vec<(String, String)>,
    pending: Vec<Pending>,
    same_as: Vec<(usize, usize)>,
}

/// The operator chain's output: drafts, the events that failed (id → reason), timings.
struct Staged {
    drafts: Vec<Draft>,
    /// Feedback events as the feedback stage read them, by event id.
    feedback: HashMap<String, FeedbackRequest>,
    failed: HashMap<String, String>,
    t_ops: Instant,
    t_embed: Duration,
    t_dedupe: Duration,
}

struct Pending {
    idx: usize,
    ie: IdentifiedEvent,
    bytes: Vec<u8>,
    source: String,
    /// "partition@position" of the source, when it has one.
    position: Option<String>,
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
    pub fn new(cfg: &Config, committer: Committer, embedder: Arc<dyn Embedder>) -> Self {
        let store = committer.store().clone();
        let metrics = committer.metrics().clone();
        Processor {
            ctx: OpContext {
                store: store.clone(),
            },
            store,
            chain: Chain::build(cfg, embedder.clone()),
            helper: Chain::build(cfg, embedder.clone()),
            feedback: cfg.feedback.build(embedder),
            committer,
            fine_enabled: false,
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
            stages: Vec::new(),
            fatal: None,
        }
    }

    /// Lets fine-mode events queue extraction jobs (after their commit).
    pub fn with_fine(mut self, enabled: bool) -> Self {
        self.fine_enabled = enabled;
        self
    }

    /// Adds custom stages (run between `extract` and `embed`, in order).
    pub fn with_stages(mut self, stages: Vec<Stage>) -> Self {
        self.stages = stages;
        self
    }

    /// Runs every stage's `on_start` hook (once, before the first batch).
    pub fn start(&mut self) -> Result<(), OperatorError> {
        let ctx = &self.ctx;
        self.feedback.on_start(ctx)?;
        self.chain.start(ctx, &mut self.stages)?;
        self.helper.start(ctx, &mut [])
    }

    /// Runs every stage's `on_close` hook (after the last batch); failures are logged.
    pub fn close(&mut self) {
        let ctx = &self.ctx;
        let mut results = vec![self.feedback.on_close(ctx)];
        results.extend(self.chain.close(ctx, &mut self.stages));
        results.extend(self.helper.close(ctx, &mut []));
        for e in results.into_iter().filter_map(Result::err) {
            tracing::warn!(error = %e, "operator on_close failed");
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
    ///
    /// A batch that fails for a reason that is not transient (outside the per-event guards,
    /// e.g. a bug in a batch-level step) is split: each input is processed on its own, and one
    /// that still fails alone is dead-lettered, so no input can hold its partition back.
    pub fn process(&mut self, batch: Vec<BatchItem>) -> (Vec<Outcome>, BatchStats) {
        let n = batch.len();
        let positions: Vec<(String, String)> = batch.iter().filter_map(|b| b.2.clone()).collect();
        let copy: Vec<BatchItem> = batch
            .iter()
            .map(|(p, s, pos)| (p.clone(), s.clone(), pos.clone()))
            .collect();
        match self.try_process(batch) {
            Ok(r) => r,
            Err(e) if !e.is_transient() && !is_fatal(&e) => {
                tracing::warn!(error = %e, events = n, "batch failed for a non-transient reason; processing its inputs one by one");
                let mut outcomes = Vec::with_capacity(n);
                let mut stats = BatchStats {
                    events: n,
                    ..Default::default()
                };
                for item in copy {
                    let (o, s) = if n > 1 {
                        self.process(vec![item])
                    } else {
                        self.dead_letter_alone(item, e.to_string())
                    };
                    outcomes.extend(o);
                    stats.inserted += s.inserted;
                    stats.merged += s.merged;
                    stats.feedback += s.feedback;
                    stats.dead_lettered += s.dead_lettered;
                }
                (outcomes, stats)
            }
            Err(e) => {
                self.hold(positions);
                tracing::error!(error = %e, "batch failed; inputs are not acknowledged");
                if let PipelineError::Operator(OperatorError::Fatal(r)) = &e {
                    self.fatal = Some(format!("an operator cannot go on: {r}"));
                }
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
        let mut stats = BatchStats {
            events: batch.len(),
            ..Default::default()
        };
        let now = store::time::now_micros();
        let mut decoded = self.decode(batch, now)?;
        let staged = self.run_stages(&decoded.pending)?;
        let produced = self.sink(&mut decoded, staged, now, &mut stats)?;
        Ok((self.outcomes(decoded, produced)?, stats))
    }

    /// Decodes and validates every input (a failure is a dead letter at once) and looks up
    /// already-processed event ids (duplicates are answered with their memories).
    fn decode(&mut self, batch: Vec<BatchItem>, now: i64) -> Result<Decoded, PipelineError> {
        let n = batch.len();
        let mut outcomes: Vec<Option<Outcome>> = vec![None; n];
        let mut dead: Vec<(usize, DeadLetter)> = Vec::new();
        let mut positions: Vec<(String, String)> = Vec::new();
        let mut pending: Vec<Pending> = Vec::new();
        let mut first_of: HashMap<(String, String), usize> = HashMap::new();
        let mut same_as: Vec<(usize, usize)> = Vec::new();
        {
            let rtxn = self.store.read_txn()?;
            for (idx, (payload, source, position)) in batch.into_iter().enumerate() {
                if let Some(p) = &position {
                    positions.push(p.clone());
                }
                let (decoded, bytes) = match payload {
                    Payload::Bytes(b) => (Event::decode(&b, self.max_event_bytes), b),
                    Payload::Routed { bytes, cube } => {
                        let ev = Event::decode(&bytes, self.max_event_bytes).and_then(|e| {
                            if e.cube_id == cube {
                                Ok(e)
                            } else {
                                Err(operators::OperatorError::Invalid(format!(
                                    "the message was routed to cube \"{cube}\" (its subject or key) but its cube_id is \"{}\"",
                                    e.cube_id
                                )))
                            }
                        });
                        (ev, bytes)
                    }
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
                        EventKind::Skill => "skill",
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
                                position: position.as_ref().map(position_label),
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
                match self.store.event(&rtxn, &ev.cube_id, &id) {
                    Ok(Some(rec)) => {
                        outcomes[idx] = Some(Outcome::Duplicate {
                            event_id: id,
                            memories: self.memories_of(&rtxn, &rec.memory_ids)?,
                        });
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) if e.is_transient() => return Err(e.into()),
                    // E.g. cube id + event id longer than an LMDB key: this event alone.
                    Err(e) => {
                        dead.push((
                            idx,
                            DeadLetter {
                                source,
                                position: position.as_ref().map(position_label),
                                reason: format!("event id: {e}"),
                                payload: bytes,
                                at: now,
                            },
                        ));
                        continue;
                    }
                }
                first_of.insert(key, idx);
                pending.push(Pending {
                    idx,
                    ie: IdentifiedEvent { id, event: ev },
                    bytes,
                    source,
                    position: position.as_ref().map(position_label),
                });
            }
        }
        Ok(Decoded {
            outcomes,
            dead,
            positions,
            pending,
            same_as,
        })
    }

    /// Runs the operator chain; a per-event failure dead-letters that event only.
    fn run_stages(&mut self, pending: &[Pending]) -> Result<Staged, PipelineError> {
        let mut failed: HashMap<String, String> = HashMap::new();
        let events: Vec<IdentifiedEvent> = pending.iter().map(|p| p.ie.clone()).collect();
        let t_ops = Instant::now();
        let m = self.metrics.clone();
        let feedback_events: Vec<IdentifiedEvent> = events
            .iter()
            .filter(|ie| ie.event.kind == EventKind::Feedback)
            .cloned()
            .collect();
        let feedback = if feedback_events.is_empty() {
            HashMap::new()
        } else {
            let (reqs, f) = guarded(&m, &mut self.feedback, feedback_events, &self.ctx)?;
            failed.extend(f.into_iter().map(|(id, e)| (id, e.to_string())));
            reqs.into_iter().map(|r| (r.ie.id.clone(), r)).collect()
        };
        // Custom stages may keep state across events, so a batch with them runs on one core.
        let (mine, theirs) = if self.stages.is_empty() && events.len() >= SPLIT_MIN_EVENTS {
            split_by_cube(events)
        } else {
            (events, Vec::new())
        };
        let attempts = self.retry_attempts;
        let outs = if theirs.is_empty() {
            vec![
                self.chain
                    .run(&m, &self.ctx, &mut self.stages, mine, attempts)?,
            ]
        } else {
            let (chain, helper, ctx) = (&mut self.chain, &mut self.helper, &self.ctx);
            let (a, b) = std::thread::scope(|s| {
                let other = std::thread::Builder::new()
                    .name("memos-prepare".into())
                    .spawn_scoped(s, || helper.run(&m, ctx, &mut [], theirs, attempts));
                let a = chain.run(&m, ctx, &mut [], mine, attempts);
                let b = match other {
                    Ok(h) => h.join().unwrap_or_else(|p| {
                        Err(PipelineError::Operator(OperatorError::Fatal(format!(
                            "the second preparing thread panicked: {}",
                            panic_message(&*p)
                        ))))
                    }),
                    Err(e) => Err(PipelineError::Unavailable(format!(
                        "could not start the second preparing thread: {e}"
                    ))),
                };
                (a, b)
            });
            vec![a?, b?]
        };
        let mut drafts = Vec::new();
        let (mut t_embed, mut t_dedupe) = (Duration::ZERO, Duration::ZERO);
        for o in outs {
            drafts.extend(o.drafts);
            failed.extend(o.failed);
            t_embed = t_embed.max(o.t_embed);
            t_dedupe = t_dedupe.max(o.t_dedupe);
        }
        Ok(Staged {
            drafts,
            feedback,
            failed,
            t_ops,
            t_embed,
            t_dedupe,
        })
    }

    /// The sink: one write transaction (a `Commit`) for the whole batch — events applied
    /// straight into it, or, once one of them fails, each in its own child transaction;
    /// returns the memories each stored event produced, by input index.
    fn sink(
        &mut self,
        decoded: &mut Decoded,
        staged: Staged,
        now: i64,
        stats: &mut BatchStats,
    ) -> Result<HashMap<usize, (String, Vec<String>)>, PipelineError> {
        let Staged {
            drafts,
            feedback,
            failed,
            t_ops,
            t_embed,
            t_dedupe,
        } = staged;
        let (pending, dead, positions) = (&decoded.pending, &mut decoded.dead, &decoded.positions);
        let m = self.metrics.clone();
        // Sink: one write transaction for the whole batch.
        let committer = self.committer.clone();
        // By (cube, event id): one request fanned out to several cubes is one event id in each.
        let mut by_event: HashMap<(String, String), Vec<Draft>> = HashMap::new();
        for d in drafts {
            by_event
                .entry((d.record.cube_id.clone(), d.event_id.clone()))
                .or_default()
                .push(d);
        }
        // Optimistic first: every event applied straight into the batch's transaction. Only
        // when one fails for a reason of its own (or panics) is the transaction aborted and the
        // batch applied again with each event in a child transaction, so that event alone is
        // undone. Child transactions copy every page an event touches that the batch has
        // already dirtied, so the common case — nothing fails — skips them.
        let mut wtxn = committer.begin("batch")?;
        let applied = match self.apply_events(
            &mut wtxn, pending, &by_event, &feedback, &failed, now, false,
        )? {
            Ok(applied) => applied,
            Err(reason) => {
                tracing::debug!(%reason, "an event failed in the batch's transaction; applying each event in its own child transaction");
                drop(wtxn);
                wtxn = committer.begin("batch")?;
                match self
                    .apply_events(&mut wtxn, pending, &by_event, &feedback, &failed, now, true)?
                {
                    Ok(applied) => applied,
                    Err(reason) => {
                        return Err(PipelineError::BadRequest(format!(
                            "internal: an isolated event failed its batch: {reason}"
                        )));
                    }
                }
            }
        };
        let (produced, fine_jobs, index) = self.account(applied, pending, dead, stats, now);
        self.store.flush_index(&mut wtxn, index)?;
        for (_, dl) in dead.iter() {
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
        for (src, pos) in positions.iter() {
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
        // Once the batch is durable, the hooks rebuild the touched cubes' KV caches and start
        // fine extraction.
        for &cube in &cubes {
            wtxn.touch(cube);
        }
        for job in fine_jobs {
            wtxn.fine_job(job)?;
        }
        let t_sink = Instant::now();
        wtxn.commit()?;
        m.commit_seconds.observe(t_sink.elapsed().as_secs_f64());
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
        Ok(produced)
    }

    /// Books what the sink applied: dead letters for the events that failed alone, the batch's
    /// counts and feedback metrics; returns the memories per input index, the fine jobs and
    /// the index writes still to flush.
    #[allow(clippy::type_complexity)]
    fn account(
        &self,
        applied: Applied,
        pending: &[Pending],
        dead: &mut Vec<(usize, DeadLetter)>,
        stats: &mut BatchStats,
        now: i64,
    ) -> (
        HashMap<usize, (String, Vec<String>)>,
        Vec<store::JobRecord>,
        store::IndexBuffer,
    ) {
        let Applied {
            produced,
            fine_jobs,
            index,
            dead: sink_dead,
        } = applied;
        for (idx, reason) in sink_dead {
            if let Some(p) = pending.iter().find(|p| p.idx == idx) {
                dead.push((idx, self.dead_letter(p, reason, now)));
            }
        }
        let mut out = HashMap::with_capacity(produced.len());
        for (idx, done) in produced {
            stats.inserted += done.inserted;
            stats.merged += done.merged;
            if let Some(intent) = &done.intent {
                stats.feedback += 1;
                self.metrics.feedback.with_label_values(&[intent]).inc();
            }
            out.insert(idx, (done.event_id, done.ids));
        }
        (out, fine_jobs, index)
    }

    /// Applies the batch's events in `wtxn`. With `isolate`, each event runs in its own child
    /// transaction ([`Processor::apply_isolated`]) and one that fails is undone alone and
    /// listed in [`Applied::dead`]. Without it, events are applied straight into `wtxn` (under
    /// catch_unwind) and the first event that fails for a reason of its own stops the pass:
    /// its reason is returned and the caller must abort `wtxn`. A transient error fails the
    /// batch either way.
    #[allow(clippy::too_many_arguments)]
    fn apply_events(
        &self,
        wtxn: &mut store::heed::RwTxn,
        pending: &[Pending],
        by_event: &HashMap<(String, String), Vec<Draft>>,
        feedback: &HashMap<String, FeedbackRequest>,
        failed: &HashMap<String, String>,
        now: i64,
        isolate: bool,
    ) -> Result<Result<Applied, String>, PipelineError> {
        let mut applied = Applied {
            produced: HashMap::new(),
            fine_jobs: Vec::new(),
            index: store::IndexBuffer::default(),
            dead: Vec::new(),
        };
        // New memories' bitmaps and postings are buffered for the whole batch and written once
        // per key; the buffer is flushed before an event that reads them (merges, deletes,
        // feedback) and at the end (by the caller).
        for p in pending {
            if let Some(reason) = failed.get(&p.ie.id) {
                applied.dead.push((p.idx, reason.clone()));
                continue;
            }
            let key = (p.ie.event.cube_id.clone(), p.ie.id.clone());
            let drafts = by_event.get(&key).map(Vec::as_slice).unwrap_or_default();
            // Deletes and feedback read the indexes through filters and searches; a merge
            // rewrites its target's entries, which must not still wait in the buffer.
            let reads_index = matches!(p.ie.event.kind, EventKind::Delete | EventKind::Feedback)
                || self.merges_buffered(wtxn, &applied.index, drafts)?;
            if reads_index && !applied.index.is_empty() {
                self.store
                    .flush_index(wtxn, std::mem::take(&mut applied.index))?;
            }
            let input = EventInput {
                drafts,
                feedback: feedback.get(&p.ie.id).cloned(),
            };
            let r = if isolate {
                self.apply_isolated(wtxn, p, input, now, &mut applied.index)?
            } else {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.sink_event(wtxn, p, input, now, &mut applied.index)
                }));
                match r {
                    Ok(Ok(out)) => Ok(out),
                    Ok(Err(e)) if e.is_transient() => return Err(e),
                    Ok(Err(e)) => return Ok(Err(format!("sink: {e}"))),
                    Err(panic) => {
                        return Ok(Err(format!("sink panicked: {}", panic_message(&*panic))));
                    }
                }
            };
            match r {
                Ok(out) => {
                    applied.fine_jobs.extend(out.fine_job);
                    applied.produced.insert(
                        p.idx,
                        Done {
                            event_id: p.ie.id.clone(),
                            ids: out.ids,
                            inserted: out.inserted,
                            merged: out.merged,
                            intent: out.feedback_intent,
                        },
                    );
                }
                Err(reason) => {
                    tracing::warn!(event_id = %p.ie.id, %reason, "event dead-lettered by the sink");
                    applied.dead.push((p.idx, reason));
                }
            }
        }
        Ok(Ok(applied))
    }

    /// Whether one of `drafts` merges into a memory whose index entries wait in `index`.
    fn merges_buffered(
        &self,
        txn: &store::heed::RoTxn,
        index: &store::IndexBuffer,
        drafts: &[Draft],
    ) -> Result<bool, PipelineError> {
        if index.is_empty() {
            return Ok(false);
        }
        for d in drafts {
            if let Action::Merge { target, .. } = &d.action
                && self.store.buffered(txn, index, target)?
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Applies one event in its own child transaction of `wtxn`, under catch_unwind: an event
    /// that cannot be written (a key LMDB refuses, a record that does not encode, a panic) is
    /// undone alone and its reason returned (it becomes a dead letter); the rest of the batch
    /// commits. A transient failure fails the batch.
    fn apply_isolated(
        &self,
        wtxn: &mut store::heed::RwTxn,
        p: &Pending,
        input: EventInput<'_>,
        now: i64,
        index: &mut store::IndexBuffer,
    ) -> Result<Result<SinkOut, String>, PipelineError> {
        let mut event_index = store::IndexBuffer::default();
        let mut child = self.store.child_txn(wtxn)?;
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.sink_event(&mut child, p, input, now, &mut event_index)
        }));
        Ok(match r {
            Ok(Ok(out)) => {
                self.store.commit_child(child)?;
                index.absorb(event_index);
                Ok(out)
            }
            Ok(Err(e)) if e.is_transient() => return Err(e),
            Ok(Err(e)) => Err(format!("sink: {e}")),
            Err(panic) => Err(format!("sink panicked: {}", panic_message(&*panic))),
        })
    }

    /// Every input's outcome, duplicates within the batch answered like their first.
    fn outcomes(
        &self,
        decoded: Decoded,
        produced: HashMap<usize, (String, Vec<String>)>,
    ) -> Result<Vec<Outcome>, PipelineError> {
        let Decoded {
            mut outcomes,
            dead,
            same_as,
            ..
        } = decoded;
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
        Ok(outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or(Outcome::Failed {
                    reason: "internal: no outcome".into(),
                })
            })
            .collect())
    }

    /// Dead-letters one input that failed on its own for a non-transient reason, in a
    /// transaction of its own that also records its source position.
    fn dead_letter_alone(&mut self, item: BatchItem, reason: String) -> (Vec<Outcome>, BatchStats) {
        let (payload, source, position) = item;
        let bytes = match payload {
            Payload::Bytes(b) | Payload::Routed { bytes: b, .. } => b,
            Payload::Event(e) => serde_json::to_vec(&e).unwrap_or_default(),
        };
        let dl = DeadLetter {
            source,
            position: position.as_ref().map(position_label),
            reason: reason.clone(),
            payload: bytes,
            at: store::time::now_micros(),
        };
        let written = (|| -> Result<(), PipelineError> {
            let mut wtxn = self.committer.begin("dead_letter")?;
            self.store.put_dead_letter(&mut wtxn, &dl)?;
            if let Some((src, pos)) = &position
                && !self.held.contains_key(src)
            {
                self.store.set_offset(&mut wtxn, src, pos)?;
            }
            wtxn.commit()?;
            Ok(())
        })();
        let stats = BatchStats {
            events: 1,
            dead_lettered: 1,
            ..Default::default()
        };
        match written {
            Ok(()) => (vec![Outcome::DeadLettered { reason }], stats),
            Err(e) => {
                self.hold(position.into_iter().collect());
                (
                    vec![Outcome::Failed {
                        reason: format!("{reason}; the dead letter could not be written: {e}"),
                    }],
                    BatchStats {
                        events: 1,
                        ..Default::default()
                    },
                )
            }
        }
    }

    /// Holds back the stored offsets of the partitions of a batch that failed.
    fn hold(&mut self, positions: Vec<(String, String)>) {
        for (src, pos) in positions {
            // Positions are "next to read"; the failed input is the one before.
            if let Ok(p) = pos.parse::<u64>() {
                let at = p.saturating_sub(1);
                let h = self.held.entry(src).or_insert(at);
                *h = (*h).min(at);
            }
        }
    }

    fn dead_letter(&self, p: &Pending, reason: String, now: i64) -> DeadLetter {
        DeadLetter {
            source: p.source.clone(),
            position: p.position.clone(),
            reason,
            payload: p.bytes.clone(),
            at: now,
        }
    }

    /// Applies one event in `wtxn` (the event's child transaction): its memories (insert or
    /// merge), its delete or feedback-merge, and its processed-event record.
    fn sink_event(
        &self,
        wtxn: &mut store::heed::RwTxn,
        p: &Pending,
        input: EventInput<'_>,
        now: i64,
        index: &mut store::IndexBuffer,
    ) -> Result<SinkOut, PipelineError> {
        let ev = &p.ie.event;
        let mut out = SinkOut::default();
        match ev.kind {
            EventKind::Delete => out.ids = self.apply_delete(wtxn, ev)?,
            EventKind::Feedback => self.apply_feedback(wtxn, p, input.feedback, now, &mut out)?,
            _ => {
                let mut fast_turns = Vec::new();
                for d in input.drafts {
                    match &d.action {
                        Action::Skip => out.ids.push(d.record.id.clone()),
                        Action::Insert => {
                            self.store
                                .insert_into(wtxn, &d.record, &d.embedding, index)?;
                            out.inserted += 1;
                            out.ids.push(d.record.id.clone());
                            if matches!(
                                d.record.memory_type,
                                MemoryType::UserMemory | MemoryType::LongTermMemory
                            ) && d.record.tags.iter().any(|t| t == "mode:fast")
                            {
                                fast_turns.push(d.record.id.clone());
                            }
                        }
                        Action::Merge { target, reason } => {
                            // A target written earlier in this event (two near-identical
                            // sentences) still has its index entries in the buffer.
                            if self.store.buffered(wtxn, index, target)? {
                                self.store.flush_index(wtxn, std::mem::take(index))?;
                            }
                            match self.store.get(wtxn, target)? {
                                Some(existing) => {
                                    let merged = merge_records(&existing, &d.record);
                                    let emb = (merged.memory != existing.memory)
                                        .then_some(d.embedding.as_slice());
                                    self.store.update(
                                        wtxn,
                                        &merged,
                                        emb,
                                        reason,
                                        Some(d.record.id.clone()),
                                    )?;
                                    out.merged += 1;
                                    if !out.ids.contains(target) {
                                        out.ids.push(target.clone());
                                    }
                                }
                                // The target was not written (its event was dead-lettered): keep
                                // this memory on its own.
                                None => {
                                    self.store.insert(wtxn, &d.record, &d.embedding)?;
                                    out.inserted += 1;
                                    out.ids.push(d.record.id.clone());
                                }
                            }
                        }
                    }
                }
                if ev.mode == operators::event::Mode::Fine
                    && ev.kind == EventKind::Messages
                    && !fast_turns.is_empty()
                    && self.fine_enabled
                {
                    out.fine_job = Some(store::JobRecord {
                        kind: "fine".into(),
                        cube_id: ev.cube_id.clone(),
                        user_id: ev.user_id.clone(),
                        event_id: p.ie.id.clone(),
                        memory_ids: fast_turns,
                        tags: ev.tags.clone(),
                        queued_at: now,
                    });
                }
            }
        }
        self.store.mark_event(
            wtxn,
            &ev.cube_id,
            &p.ie.id,
            &EventRecord {
                memory_ids: out.ids.clone(),
                processed_at: now,
                source: "pipeline".into(),
                position: None,
            },
        )?;
        Ok(out)
    }

    /// A feedback event: the feedback stage read it; here, in the batch's transaction, its
    /// plan is resolved (seeing the memories this batch wrote before it) and its actions are
    /// applied in order, committing with the batch; the feedback is kept as processed with its
    /// outcome.
    fn apply_feedback(
        &self,
        wtxn: &mut store::heed::RwTxn,
        p: &Pending,
        req: Option<FeedbackRequest>,
        now: i64,
        out: &mut SinkOut,
    ) -> Result<(), PipelineError> {
        let ev = &p.ie.event;
        let req = req.ok_or_else(|| {
            PipelineError::BadRequest("feedback: the feedback stage did not read it".into())
        })?;
        let plan = self
            .feedback
            .resolve(&self.store, wtxn, &req)
            .map_err(|e| match e {
                e if e.retryable() => PipelineError::Operator(e),
                e => PipelineError::BadRequest(format!("feedback: {e}")),
            })?;
        for action in &plan.actions {
            match action {
                FeedbackAction::Archive { record, reason } => {
                    self.store.update(wtxn, record, None, reason, None)?;
                }
                FeedbackAction::Insert { record, embedding } => {
                    self.store.insert(wtxn, record, embedding)?;
                }
            }
        }
        let outcome = plan.outcome;
        for c in outcome.add.iter().chain(&outcome.update) {
            out.ids.push(c.id.clone());
        }
        let text = |k: &str| ev.payload.get(k).and_then(|v| v.as_str()).map(String::from);
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
        self.store.put_feedback(wtxn, &f)?;
        out.feedback_intent = Some(outcome.intent.clone());
        Ok(())
    }

    /// A delete event: by ids or by a filter, only in its own cube and only its own user's
    /// memories (ids it cannot see are skipped; validation refused an empty filter).
    fn apply_delete(
        &self,
        wtxn: &mut store::heed::RwTxn,
        ev: &Event,
    ) -> Result<Vec<String>, PipelineError> {
        let target = match ev.payload.get("memory_ids").and_then(Value::as_array) {
            Some(list) => Target::Ids(
                list.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect(),
            ),
            None => Target::Filters(vec![(
                ev.cube_id.clone(),
                Filter::parse(ev.payload.get("filter").unwrap_or(&Value::Null))?,
            )]),
        };
        let d = Deletion {
            target,
            scope: store::Scope::all(),
            cube: Some(ev.cube_id.clone()),
            user: Some(ev.user_id.clone()),
            missing: Missing::Skip,
        };
        Ok(crate::delete::apply(&self.store, wtxn, &d)?.ids)
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
    committer: Committer,
    embedder: Arc<dyn Embedder>,
    fine_enabled: bool,
    stages: Option<StageFactory>,
) -> (PipelineHandle, tokio::task::JoinHandle<()>) {
    let store = committer.store().clone();
    let metrics = committer.metrics().clone();
    let (tx, mut rx) = mpsc::channel::<Incoming>(cfg.pipeline.channel_capacity.max(1));
    let batch_size = cfg.pipeline.batch_size.max(1);
    let linger = Duration::from_millis(cfg.pipeline.linger_ms);
    let idle = Duration::from_millis(cfg.pipeline.index_idle_ms.max(1));
    // The operators and the sink run on one dedicated OS thread (CPU-bound model inference and
    // the LMDB writer); the async task only batches and replies. The thread supervises its
    // processor: a panic that escapes the per-event isolation, or a failing `on_start`, marks
    // the pipeline down (`/ready` 503 with the reason), fails that batch without acknowledging
    // it (its sources redeliver) and starts a fresh processor after a backoff.
    let (work_tx, work_rx) = std::sync::mpsc::channel::<Work>();
    let health = Arc::new(PipelineHealth::default());
    let build = {
        let (cfg, committer) = (cfg.clone(), committer.clone());
        move || {
            Processor::new(&cfg, committer.clone(), embedder.clone())
                .with_fine(fine_enabled)
                .with_stages(stages.as_ref().map(|f| f()).unwrap_or_default())
        }
    };
    let backoff_max = Duration::from_millis(cfg.pipeline.restart_backoff_max_ms.max(1));
    let backoff_min =
        Duration::from_millis(cfg.pipeline.restart_backoff_ms.max(1)).min(backoff_max);
    let worker = {
        let (health, metrics) = (health.clone(), metrics.clone());
        std::thread::Builder::new()
            .name("memos-pipeline".into())
            .spawn(move || supervise(build, work_rx, health, metrics, backoff_min, backoff_max))
    };
    if let Err(e) = &worker {
        down(
            &health,
            &metrics,
            format!("could not start the pipeline thread: {e}"),
        );
    }
    let task_health = health.clone();
    let folding = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let delta_max = cfg.pipeline.vector_delta_max.max(1) as u64;
    let task = tokio::spawn(async move {
        loop {
            let first = match tokio::time::timeout(idle, rx.recv()).await {
                Ok(Some(i)) => i,
                Ok(None) => break,
                Err(_) => {
                    // Idle: refresh the trees, but only where they serve searches (some cube
                    // is too large for the RAM codes); otherwise the fold is pure cost.
                    if store.ann_needed() {
                        fold_in_background(&store, &folding);
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
            // The supervisor thread ends only when this channel closes; should it end anyway,
            // the pipeline is marked down (`/ready` 503) and this task ends with it, so
            // `memos serve` exits non-zero for its supervisor to restart it.
            if work_tx.send((items, tx)).is_err() {
                down(&task_health, &metrics, "the pipeline thread ended".into());
                break;
            }
            let Ok((outcomes, stats)) = rx.await else {
                down(&task_health, &metrics, "the pipeline thread ended".into());
                break;
            };
            // Under load the trees are refreshed only when arroy is needed (some cube is too
            // large for the RAM codes) and enough changes wait; always off the sink's thread.
            if store.ann_needed() && store.pending_over(delta_max) {
                fold_in_background(&store, &folding);
            }
            answer(
                &metrics,
                &stats,
                started,
                replies.into_iter().zip(outcomes).zip(sources),
            );
        }
        drop(work_tx);
        if let Ok(w) = worker {
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
        // Fold what waits into the trees only where they serve searches (as when idle).
        if store.ann_needed() {
            let s = store.clone();
            let _ = tokio::task::spawn_blocking(move || s.index_pending()).await;
        }
        tracing::info!("pipeline stopped");
    });
    (PipelineHandle { tx, health }, task)
}

/// Records a committed batch in the metrics and sends every input its outcome.
fn answer(
    metrics: &crate::metrics::Metrics,
    stats: &BatchStats,
    started: Instant,
    replies: impl Iterator<Item = ((Option<oneshot::Sender<Outcome>>, Outcome), &'static str)>,
) {
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
    for ((r, o), source) in replies {
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

/// A batch for the pipeline thread and where its outcomes go.
type Work = (Vec<BatchItem>, oneshot::Sender<(Vec<Outcome>, BatchStats)>);

/// Folds the pending vector changes into the arroy trees on a blocking thread of its own (one
/// at a time): a write transaction separate from the sink's.
fn fold_in_background(store: &Arc<Store>, folding: &Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::Ordering;
    if folding.swap(true, Ordering::AcqRel) {
        return;
    }
    let (s, f) = (store.clone(), folding.clone());
    tokio::task::spawn_blocking(move || {
        match s.index_pending() {
            Ok(n) if n > 0 => tracing::debug!(changes = n, "folded vector changes into the trees"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "folding vector changes into the trees failed"),
        }
        f.store(false, Ordering::Release);
    });
}

/// The pipeline thread: builds a processor, runs batches, and replaces the processor (after a
/// growing backoff) whenever it fails outside the per-event isolation. Ends when the work
/// channel closes.
fn supervise(
    build: impl Fn() -> Processor,
    work_rx: std::sync::mpsc::Receiver<Work>,
    health: Arc<PipelineHealth>,
    metrics: Arc<crate::metrics::Metrics>,
    backoff_min: Duration,
    backoff_max: Duration,
) {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    let mut backoff = backoff_min;
    let mut first = true;
    // Offsets held back after failed batches survive a restart.
    let mut held: HashMap<String, u64> = HashMap::new();
    loop {
        if !first {
            health
                .restarts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            metrics.pipeline_restarts.inc();
            tracing::warn!(
                backoff_ms = backoff.as_millis() as u64,
                "restarting the pipeline"
            );
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(backoff_max);
        }
        first = false;
        let started = catch_unwind(AssertUnwindSafe(|| {
            let mut p = build();
            p.start().map(|_| p)
        }));
        let mut processor = match started {
            Ok(Ok(mut p)) => {
                p.held = std::mem::take(&mut held);
                p
            }
            Ok(Err(e)) => {
                down(
                    &health,
                    &metrics,
                    format!("an operator failed to start: {e}"),
                );
                continue;
            }
            Err(panic) => {
                down(
                    &health,
                    &metrics,
                    format!(
                        "the pipeline panicked while starting: {}",
                        panic_message(&*panic)
                    ),
                );
                continue;
            }
        };
        health.set_down(None);
        metrics.pipeline_up.set(1);
        loop {
            let Ok((items, reply)) = work_rx.recv() else {
                processor.close();
                return;
            };
            let n = items.len();
            let positions: Vec<Position> = items.iter().filter_map(|b| b.2.clone()).collect();
            match catch_unwind(AssertUnwindSafe(|| processor.process(items))) {
                Ok(r) => {
                    // Marked down before the reply, so whoever sees the failure sees why.
                    let fatal = processor.fatal.take();
                    if let Some(reason) = &fatal {
                        down(&health, &metrics, reason.clone());
                    }
                    let _ = reply.send(r);
                    if fatal.is_some() {
                        held = std::mem::take(&mut processor.held);
                        break;
                    }
                    backoff = backoff_min;
                }
                Err(panic) => {
                    let reason =
                        format!("the pipeline thread panicked: {}", panic_message(&*panic));
                    let failed = Outcome::Failed {
                        reason: reason.clone(),
                    };
                    processor.hold(positions);
                    held = std::mem::take(&mut processor.held);
                    down(&health, &metrics, reason);
                    let _ = reply.send((
                        vec![failed; n],
                        BatchStats {
                            events: n,
                            ..Default::default()
                        },
                    ));
                    break;
                }
            }
        }
    }
}

fn down(health: &PipelineHealth, metrics: &crate::metrics::Metrics, reason: String) {
    tracing::error!(%reason, "pipeline down");
    metrics.pipeline_up.set(0);
    health.set_down(Some(reason));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: usize, cube: &str) -> IdentifiedEvent {
        let json = serde_json::json!({"event_id": format!("e{id}"), "kind": "messages",
            "cube_id": cube, "user_id": "u",
            "payload": {"messages": [{"role": "user", "content": "hi"}]}});
        let event = Event::decode(json.to_string().as_bytes(), 1 << 20).expect("valid event");
        IdentifiedEvent {
            id: format!("e{id}"),
            event,
        }
    }

    #[test]
    fn a_batch_splits_into_whole_cubes_as_evenly_as_they_allow() {
        // Cubes of 50, 30, 15 and 5 events: 50 | 30 + 15 + 5.
        let sizes = [("w", 50), ("x", 30), ("y", 15), ("z", 5)];
        let mut events = Vec::new();
        for (cube, n) in sizes {
            for i in 0..n {
                events.push(ev(events.len() + i, cube));
            }
        }
        let (a, b) = split_by_cube(events);
        assert_eq!(a.len() + b.len(), 100);
        let cubes = |v: &[IdentifiedEvent]| {
            let mut c: Vec<String> = v.iter().map(|e| e.event.cube_id.clone()).collect();
            c.sort();
            c.dedup();
            c
        };
        let (ca, cb) = (cubes(&a), cubes(&b));
        assert!(ca.iter().all(|c| !cb.contains(c)), "{ca:?} {cb:?}");
        assert_eq!((a.len(), b.len()), (50, 50), "{ca:?} {cb:?}");
        // Order within a share is the batch's order.
        let pos: Vec<usize> = a.iter().map(|e| e.id[1..].parse().unwrap()).collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]));
        // One cube: nothing to split.
        let (a, b) = split_by_cube((0..80).map(|i| ev(i, "only")).collect());
        assert_eq!((a.len(), b.len()), (80, 0));
    }
}
