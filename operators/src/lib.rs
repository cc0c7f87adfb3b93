//! memos operators: the stages between a source and the store sink.
//!
//! ```text
//! Event ─► window ─► extract ─► embed ─► dedupe ─► (store sink, in pipelines)
//! ```
//! Every stage implements [`Operator`]: one required `process` method that reads a batch and
//! writes its output through a [`Collector`]; lifecycle hooks have defaults. Each stage has a
//! serde config struct with a `build()`. An input that a stage cannot handle is reported through
//! [`Collector::fail`] with its event id: the batch goes on, the event is dead-lettered.
#![warn(missing_docs)]

pub mod dedupe;
pub mod document;
pub mod embed;
pub mod error;
pub mod event;
pub mod extract;
pub mod feedback;
pub mod llm;
pub mod skill;
pub mod window;

use std::sync::Arc;

pub use error::{OperatorError, Result};
use store::{MemoryRecord, Store};

/// A memory on its way to the store.
#[derive(Debug, Clone)]
pub struct Draft {
    /// The event it came from.
    pub event_id: String,
    /// Its index among the event's memories (the memory id derives from event id + seq).
    pub seq: u32,
    /// The record to write.
    pub record: MemoryRecord,
    /// Its embedding (filled by `embed`).
    pub embedding: Vec<f32>,
    /// What the sink should do with it (decided by `dedupe`).
    pub action: Action,
}

/// The sink's instruction for a draft.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Write as a new memory.
    Insert,
    /// Merge into an existing memory (same or near-same content): bump its version, keep
    /// the previous text in history, keep the newer information.
    Merge {
        /// Uuid of the memory kept.
        target: String,
        /// Why: "duplicate" (same text) or "near_duplicate".
        reason: &'static str,
    },
    /// Already stored (a replay); nothing to do.
    Skip,
}

/// An event with its id resolved, as the window stage receives it.
#[derive(Debug, Clone)]
pub struct IdentifiedEvent {
    /// Event id (producer's, or derived from content).
    pub id: String,
    /// The event.
    pub event: event::Event,
}

/// Events that failed in a stage, with the error.
pub type Failures = Vec<(String, OperatorError)>;

/// Output of a stage: items and per-event failures.
#[derive(Debug)]
pub struct Collector<T> {
    items: Vec<T>,
    failed: Vec<(String, OperatorError)>,
}

impl<T> Default for Collector<T> {
    fn default() -> Self {
        Collector {
            items: Vec::new(),
            failed: Vec::new(),
        }
    }
}

impl<T> Collector<T> {
    /// Emits an item.
    pub fn collect(&mut self, item: T) {
        self.items.push(item);
    }
    /// Reports that the event `event_id` failed in this stage.
    pub fn fail(&mut self, event_id: &str, err: OperatorError) {
        self.failed.push((event_id.to_string(), err));
    }
    /// Splits into (items, failures).
    pub fn finish(self) -> (Vec<T>, Failures) {
        (self.items, self.failed)
    }
}

/// What operators may read: the store (a fresh snapshot per call) and the clock.
pub struct OpContext {
    /// The store, for reads only (the sink is the one writer).
    pub store: Arc<Store>,
}

/// A pipeline stage.
pub trait Operator: Send {
    /// Input item.
    type In;
    /// Output item.
    type Out;
    /// Stage name, for metrics and logs.
    fn name(&self) -> &'static str;
    /// Called once before the first batch.
    fn on_start(&mut self, _ctx: &OpContext) -> Result<()> {
        Ok(())
    }
    /// Processes one batch.
    fn process(
        &mut self,
        batch: Vec<Self::In>,
        ctx: &OpContext,
        out: &mut Collector<Self::Out>,
    ) -> Result<()>;
    /// Called once after the last batch.
    fn on_close(&mut self, _ctx: &OpContext) -> Result<()> {
        Ok(())
    }
}

/// Runs one stage over a batch and returns (items, failures).
pub fn run_stage<O: Operator + ?Sized>(
    op: &mut O,
    batch: Vec<O::In>,
    ctx: &OpContext,
) -> Result<(Vec<O::Out>, Failures)> {
    let mut c = Collector::default();
    op.process(batch, ctx, &mut c)?;
    Ok(c.finish())
}

/// `embed`: fills each draft's embedding, batching the whole input into one embedder call.
pub struct EmbedOperator {
    embedder: Arc<dyn embed::Embedder>,
}

impl EmbedOperator {
    /// Wraps an embedder.
    pub fn new(embedder: Arc<dyn embed::Embedder>) -> Self {
        EmbedOperator { embedder }
    }
}

impl Operator for EmbedOperator {
    type In = Draft;
    type Out = Draft;

    fn name(&self) -> &'static str {
        "embed"
    }

    fn process(
        &mut self,
        mut batch: Vec<Draft>,
        _ctx: &OpContext,
        out: &mut Collector<Draft>,
    ) -> Result<()> {
        let idx: Vec<usize> = (0..batch.len())
            .filter(|&i| batch[i].action != Action::Skip)
            .collect();
        let texts: Vec<String> = idx
            .iter()
            .map(|&i| batch[i].record.memory.clone())
            .collect();
        let vecs = self.embedder.embed(&texts)?;
        for (i, v) in idx.into_iter().zip(vecs) {
            batch[i].embedding = v;
        }
        batch.into_iter().for_each(|d| out.collect(d));
        Ok(())
    }
}
