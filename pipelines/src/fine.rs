//! Fine mode: LLM extraction as asynchronous work after the fast memories are committed
//! (memos-spec §3.3/§3.5), never on the request path.
//!
//! The pipeline's sink queues a [`FineJob`] for every stored `messages` event in `fine` mode
//! (after its commit). The worker reads the job's fast memories and runs the `fine_extract`
//! operator ([`FineExtractOperator`], through the `Operator` trait, on a blocking thread): it
//! asks the extraction model for memories (third person, pronouns and relative dates resolved,
//! key + tags + memory_type), validates the JSON (repairing the usual damage) and embeds the
//! values. The worker then, in **one** LMDB transaction on the commit path, writes the extracted
//! memories and archives the fast ones (`info.evolve_to` → the new ids). Unlike MemOS
//! (its issue #1950) a failed, timed-out or unusable extraction changes nothing: the fast
//! memories stay searchable, the job is `failed` in `scheduler/status` with its reason, and the
//! reason and the model's reply are kept as a dead letter (`source = "fine"`).

use std::sync::Arc;

use operators::llm::{ChatOptions, Msg};
use serde_json::{Value, json};
use store::{DeadLetter, MemoryRecord, MemoryType, Status};
use tokio::sync::mpsc;

use crate::commit::{Changes, CommitHook, Committer};
use crate::error::PipelineError;
use crate::metrics::Metrics;
pub use crate::tasks::FineJob;
use crate::tasks::{AddedMemory, TaskStatus, Tasks};

/// After a commit, the jobs it made due are queued.
impl CommitHook for FineQueue {
    fn committed(&self, changes: &Changes) {
        for job in &changes.fine_jobs {
            self.submit(job.clone());
        }
    }
}

/// The sink's side of the fine queue.
#[derive(Clone)]
pub struct FineQueue {
    /// Jobs.
    pub tx: mpsc::Sender<FineJob>,
    /// Task statuses (queued jobs show in `scheduler/status`).
    pub tasks: Arc<Tasks>,
    /// Metrics (dropped jobs).
    pub metrics: Arc<Metrics>,
}

impl FineQueue {
    /// Queues a job after its fast memories were committed; a full queue drops it (the fast
    /// memories stay) and counts it.
    pub fn submit(&self, job: FineJob) {
        self.tasks.set(task(&job, "waiting", vec![], None));
        if let Err(e) = self.tx.try_send(job) {
            let job = match e {
                mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j) => j,
            };
            tracing::warn!(task = %job.task_id(), "fine queue full: job dropped, fast memories kept");
            self.metrics.fine_jobs.with_label_values(&["dropped"]).inc();
            self.tasks.set(task(
                &job,
                "failed",
                vec![],
                Some("fine queue full; fast memories kept".into()),
            ));
        }
    }
}

const PROMPT: &str = "You turn a conversation into long-term memories about the user and the \
people and events they mention. Write every memory as one standalone sentence in the third \
person: name people instead of using pronouns, and turn relative dates (\"yesterday\", \"last \
week\") into absolute dates using the message times. Skip greetings and small talk. Answer with \
JSON only: {\"memory list\": [{\"key\": \"a short title\", \"memory_type\": \"UserMemory\" (a fact \
about the user) or \"LongTermMemory\" (anything else worth remembering), \"value\": \"the memory\", \
\"tags\": [\"keywords\"]}], \"preferences\": [{\"preference\": \"what the user likes or dislikes, \
one sentence\", \"preference_type\": \"explicit_preference\" (said outright) or \
\"implicit_preference\" (shown by habits or choices), \"reasoning\": \"why\"}], \
\"tool_trajectories\": [{\"tool\": \"name\", \"trajectory\": \"task -> action -> result\", \
\"correctness\": \"success\" or \"failed\", \"experience\": \"when ... then ...\"}], \"summary\": \
\"one or two sentences\"}. Use empty lists when nothing is worth remembering.";

/// One validated extracted memory (the model's JSON, checked; it never leaves the engine).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Extracted {
    /// Title.
    pub(crate) key: String,
    /// UserMemory or LongTermMemory.
    pub(crate) memory_type: MemoryType,
    /// The memory.
    pub(crate) value: String,
    /// Tags.
    pub(crate) tags: Vec<String>,
    /// Extra `info` (preference type and reasoning, tool name and outcome).
    pub(crate) info: serde_json::Map<String, Value>,
}

/// Validates the model's answer: `{"memory list": [...]}` (or `memories`), each with a
/// non-empty `value`. Unknown memory types map to LongTermMemory, anything about the user or
/// preferences to UserMemory (as MemOS does).
pub(crate) fn validate(v: &Value) -> Result<Vec<Extracted>, String> {
    let list = v
        .get("memory list")
        .or_else(|| v.get("memory_list"))
        .or_else(|| v.get("memories"))
        .ok_or("no \"memory list\" in the reply")?
        .as_array()
        .ok_or("\"memory list\" is not a list")?;
    let mut out = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let value = m
            .get("value")
            .or_else(|| m.get("memory"))
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("memory list[{i}] has no value"))?;
        if value.chars().count() > 4000 {
            return Err(format!("memory list[{i}] is longer than 4000 characters"));
        }
        let ty = m
            .get("memory_type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_lowercase();
        let memory_type = if ty.contains("user") || ty.contains("pref") {
            MemoryType::UserMemory
        } else {
            MemoryType::LongTermMemory
        };
        let tags = m
            .get("tags")
            .and_then(Value::as_array)
            .map(|t| {
                t.iter()
                    .filter_map(Value::as_str)
                    .take(10)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        let key = m
            .get("key")
            .and_then(Value::as_str)
            .filter(|k| !k.trim().is_empty())
            .map(String::from)
            .unwrap_or_else(|| operators::window::key_of(value));
        out.push(Extracted {
            key,
            memory_type,
            value: value.to_string(),
            tags,
            info: Default::default(),
        });
    }
    let str_of = |m: &Value, k: &str| {
        m.get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
    };
    let list = |k: &str| {
        v.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    for (i, p) in list("preferences").iter().enumerate() {
        let pref =
            str_of(p, "preference").ok_or_else(|| format!("preferences[{i}] has no preference"))?;
        let ty = match str_of(p, "preference_type").as_deref() {
            Some(t) if t.starts_with("implicit") => "implicit_preference",
            _ => "explicit_preference",
        };
        let mut info = serde_json::Map::new();
        info.insert("preference_type".into(), json!(ty));
        if let Some(r) = str_of(p, "reasoning") {
            info.insert("reasoning".into(), json!(r));
        }
        out.push(Extracted {
            key: operators::window::key_of(&pref),
            memory_type: MemoryType::PreferenceMemory,
            value: pref,
            tags: vec![],
            info,
        });
    }
    for (i, t) in list("tool_trajectories").iter().enumerate() {
        let trajectory = str_of(t, "trajectory")
            .ok_or_else(|| format!("tool_trajectories[{i}] has no trajectory"))?;
        let tool = str_of(t, "tool").unwrap_or_else(|| "tool".into());
        let mut info = serde_json::Map::new();
        info.insert("tool_name".into(), json!(tool));
        info.insert(
            "success".into(),
            json!(str_of(t, "correctness").as_deref() != Some("failed")),
        );
        if let Some(e) = str_of(t, "experience") {
            info.insert("experience".into(), json!(e));
        }
        out.push(Extracted {
            key: tool,
            memory_type: MemoryType::ToolTrajectoryMemory,
            value: trajectory,
            tags: vec![],
            info,
        });
    }
    Ok(out)
}

/// What the fine worker works with: explicit dependencies, no service object.
#[derive(Clone)]
pub struct FineWorker {
    /// Reads the fast memories, commits the extracted ones.
    pub commits: Committer,
    /// Embeds the extracted memories.
    pub embedder: Arc<dyn operators::embed::Embedder>,
    /// The extraction model.
    pub llm: operators::llm::Llm,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Task statuses.
    pub tasks: Arc<Tasks>,
}

impl FineWorker {
    /// Starts the worker; it ends when every sender is dropped (the pipeline stopped).
    pub fn spawn(self, mut rx: mpsc::Receiver<FineJob>) {
        let w = Arc::new(self);
        tokio::spawn(async move {
            // As many jobs at once as the extraction model takes requests.
            let slots = Arc::new(tokio::sync::Semaphore::new(
                w.llm.extract_model().map(|c| c.concurrency()).unwrap_or(1),
            ));
            while let Some(job) = rx.recv().await {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    break;
                };
                let w = w.clone();
                tokio::spawn(async move {
                    run(&w, job).await;
                    drop(permit);
                });
            }
        });
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&store::Store) -> Result<T, PipelineError> + Send + 'static,
    ) -> Result<T, PipelineError> {
        let store = self.commits.store().clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| PipelineError::Unavailable(e.to_string()))?
    }
}

fn task(
    job: &FineJob,
    status: &str,
    memories: Vec<AddedMemory>,
    error: Option<String>,
) -> TaskStatus {
    TaskStatus {
        task_id: job.task_id(),
        status: status.into(),
        user_id: job.user_id.clone(),
        memories,
        error,
        created_at: store::time::now_micros(),
        cubes: vec![job.cube_id.clone()],
    }
}

async fn run(m: &FineWorker, job: FineJob) {
    m.tasks.set(task(&job, "in_progress", vec![], None));
    let outcome = extract(m, &job).await;
    let label = match &outcome {
        Ok(_) => "ok",
        Err(_) => "failed",
    };
    m.metrics.fine_jobs.with_label_values(&[label]).inc();
    match outcome {
        Ok(added) => m.tasks.set(task(&job, "completed", added, None)),
        Err((reason, reply)) => {
            tracing::warn!(task = %job.task_id(), %reason, "fine extraction failed; fast memories kept");
            let dl = DeadLetter {
                source: "fine".into(),
                position: Some(job.task_id()),
                reason: reason.clone(),
                payload: reply
                    .unwrap_or_else(|| {
                        json!({"cube_id": job.cube_id, "event_id": job.event_id,
                        "memory_ids": job.memory_ids})
                        .to_string()
                    })
                    .into_bytes(),
                at: store::time::now_micros(),
            };
            let _ = m
                .commits
                .run("dead_letter", move |store, w| {
                    store.put_dead_letter(w, &dl)?;
                    Ok::<_, PipelineError>(())
                })
                .await;
            m.tasks.set(task(&job, "failed", vec![], Some(reason)));
        }
    }
}

/// An extracted memory as a record: the first fast memory's fields, the extracted text, key,
/// type and tags, lineage to the fast memories, the extraction model.
fn extracted_record(
    first: &MemoryRecord,
    fast: &[MemoryRecord],
    e: &Extracted,
    id: String,
    now: i64,
    model_name: &str,
) -> MemoryRecord {
    let mut r = first.clone();
    r.id = id;
    r.memory = e.value.clone();
    r.key = Some(e.key.clone());
    r.memory_type = e.memory_type;
    r.tags = first
        .tags
        .iter()
        .filter(|t| *t != "mode:fast")
        .cloned()
        .chain(std::iter::once("mode:fine".to_string()))
        .chain(e.tags.iter().cloned())
        .collect();
    r.sources = fast.iter().flat_map(|f| f.sources.clone()).collect();
    r.confidence = 0.99;
    r.created_at = now;
    r.updated_at = now;
    r.version = 1;
    r.history = vec![];
    for (k, v) in &e.info {
        r.info.insert(k.clone(), v.clone());
    }
    r.info
        .insert(store::model::DERIVED_FROM.into(), json!(first.id));
    r.info.insert(
        "extracted_from".into(),
        json!(fast.iter().map(|f| f.id.clone()).collect::<Vec<_>>()),
    );
    r.info.insert("extraction_model".into(), json!(model_name));
    r
}

/// A fine job with the fast memories it extracts from.
pub(crate) struct FineInput {
    job: FineJob,
    fast: Vec<MemoryRecord>,
}

/// What the extraction made of a job.
pub(crate) enum FineOutput {
    /// Validated memories with their embeddings, and the model that wrote them.
    Extracted {
        fast: Vec<MemoryRecord>,
        items: Vec<(Extracted, Vec<f32>)>,
        model: String,
    },
    /// Nothing usable: the reason, and the model's reply when there was one.
    Unusable {
        reason: String,
        reply: Option<String>,
    },
}

/// The `fine_extract` operator: asks the extraction model for memories, validates its JSON
/// (repairing the usual damage) and embeds the values. It runs on a blocking thread (the model
/// call is awaited on the runtime's handle) and writes nothing: the worker commits.
pub(crate) struct FineExtractOperator {
    client: Arc<operators::llm::LlmClient>,
    embedder: Arc<dyn operators::embed::Embedder>,
    rt: tokio::runtime::Handle,
}

impl FineExtractOperator {
    fn extract(&self, input: FineInput) -> FineOutput {
        let unusable =
            |reason: String, reply: Option<String>| FineOutput::Unusable { reason, reply };
        let FineInput { job, fast } = input;
        let conversation: String = fast
            .iter()
            .map(|r| r.memory.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        let mut user = format!("Conversation:\n{conversation}");
        if !job.tags.is_empty() {
            user.push_str(&format!(
                "\n\nPrefer these tags where they fit: {}",
                job.tags.join(", ")
            ));
        }
        let messages = [Msg::new("system", PROMPT), Msg::new("user", user)];
        let opts = ChatOptions {
            temperature: Some(0.0),
            ..Default::default()
        };
        let c = match self
            .rt
            .block_on(self.client.complete_json_mode(&messages, &opts))
        {
            Ok(c) => c,
            Err(e) => return unusable(format!("extraction: {e}"), None),
        };
        let v = match operators::llm::repair_json(&c.text) {
            Ok(v) => v,
            Err(why) => {
                let reason = format!("extraction: malformed JSON ({why})");
                return unusable(reason, Some(c.text));
            }
        };
        let items = match validate(&v) {
            Ok(items) => items,
            Err(why) => return unusable(format!("extraction: {why}"), Some(c.text)),
        };
        let texts: Vec<String> = items.iter().map(|e| e.value.clone()).collect();
        let vecs = if texts.is_empty() {
            Vec::new()
        } else {
            match self.embedder.embed(&texts) {
                Ok(v) => v,
                Err(e) => return unusable(format!("embedding: {e}"), None),
            }
        };
        FineOutput::Extracted {
            fast,
            items: items.into_iter().zip(vecs).collect(),
            model: self.client.name().to_string(),
        }
    }
}

impl operators::Operator for FineExtractOperator {
    type In = FineInput;
    type Out = FineOutput;

    fn name(&self) -> &'static str {
        "fine_extract"
    }

    fn process(
        &mut self,
        batch: Vec<FineInput>,
        _ctx: &operators::OpContext,
        out: &mut operators::Collector<FineOutput>,
    ) -> operators::Result<()> {
        for input in batch {
            out.collect(self.extract(input));
        }
        Ok(())
    }
}

/// Runs the `fine_extract` operator over one input on a blocking thread, its lifecycle hooks
/// around it.
async fn run_operator(
    mut op: FineExtractOperator,
    ctx: operators::OpContext,
    input: FineInput,
) -> Result<FineOutput, String> {
    use operators::Operator;
    tokio::task::spawn_blocking(move || {
        op.on_start(&ctx).map_err(|e| format!("extraction: {e}"))?;
        let r = operators::run_stage(&mut op, vec![input], &ctx);
        if let Err(e) = op.on_close(&ctx) {
            tracing::warn!(error = %e, "fine_extract on_close failed");
        }
        let (mut out, failed) = r.map_err(|e| format!("extraction: {e}"))?;
        if let Some((_, e)) = failed.into_iter().next() {
            return Err(format!("extraction: {e}"));
        }
        out.pop()
            .ok_or_else(|| "extraction: the operator produced nothing".to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Runs one job: reads its fast memories, extracts through the `fine_extract` operator and
/// commits the result. On failure returns the reason and the model's reply when there was one.
async fn extract(
    m: &FineWorker,
    job: &FineJob,
) -> Result<Vec<AddedMemory>, (String, Option<String>)> {
    let fail = |e: PipelineError| (e.to_string(), None);
    let Some(client) = m.llm.extract_model() else {
        return Err(("no extraction model is configured".into(), None));
    };
    let ids = job.memory_ids.clone();
    let fast: Vec<MemoryRecord> = m
        .blocking(move |store| {
            let txn = store.read_txn()?;
            let mut out = Vec::new();
            for id in &ids {
                if let Some(r) = store.get(&txn, id)?
                    && r.status == Status::Activated
                {
                    out.push(r);
                }
            }
            Ok(out)
        })
        .await
        .map_err(fail)?;
    if fast.is_empty() {
        return Ok(vec![]);
    }
    let op = FineExtractOperator {
        client,
        embedder: m.embedder.clone(),
        rt: tokio::runtime::Handle::current(),
    };
    let ctx = operators::OpContext {
        store: m.commits.store().clone(),
    };
    let input = FineInput {
        job: job.clone(),
        fast,
    };
    let (fast, items, model_name) = match run_operator(op, ctx, input).await {
        Err(reason) => return Err((reason, None)),
        Ok(FineOutput::Unusable { reason, reply }) => return Err((reason, reply)),
        Ok(FineOutput::Extracted { fast, items, model }) => (fast, items, model),
    };
    if items.is_empty() {
        return Ok(vec![]);
    }
    let job2 = job.clone();
    m.commits
        .run("fine", move |store, w| {
            let first = &fast[0];
            let now = store::time::now_micros();
            let mut added = Vec::new();
            let mut new_ids = Vec::new();
            for (i, (e, v)) in items.iter().enumerate() {
                let id =
                    operators::event::memory_id(&job2.cube_id, &job2.event_id, 20_000 + i as u32);
                new_ids.push(id.clone());
                if store.get(w, &id)?.is_some() {
                    continue;
                }
                let r = extracted_record(first, &fast, e, id, now, &model_name);
                store.insert(w, &r, v)?;
                added.push(AddedMemory {
                    memory: r.memory.clone(),
                    memory_id: r.id.clone(),
                    memory_type: r.memory_type.as_str().into(),
                    cube_id: r.cube_id.clone(),
                });
            }
            // The fast memories are replaced in the same commit, never before it.
            for f in &fast {
                let mut a = f.clone();
                a.status = Status::Archived;
                a.info.insert("evolve_to".into(), json!(new_ids));
                store.update(w, &a, None, "fine", None)?;
            }
            // The extracted memories change the cube (its KV cache is rebuilt after the commit).
            w.touch(&job2.cube_id);
            Ok::<_, PipelineError>(added)
        })
        .await
        .map_err(fail)
}
