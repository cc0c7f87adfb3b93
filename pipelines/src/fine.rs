//! Fine mode: LLM extraction as asynchronous work after the fast memories are committed
//! (memos-spec §3.3/§3.5), never on the request path.
//!
//! The pipeline's sink queues a [`FineJob`] for every stored `messages` event in `fine` mode,
//! in the store's job queue, in the transaction that writes the fast memories. The worker takes
//! due jobs round-robin across cubes (one busy tenant cannot starve the others), at most as many
//! at once as the extraction model takes requests; jobs queued before a restart run after it.
//! The worker reads the job's fast memories and runs the `fine_extract`
//! operator ([`FineExtractOperator`], through the `Operator` trait, on a blocking thread): it
//! asks the extraction model for memories (third person, pronouns and relative dates resolved,
//! key + tags + memory_type), validates the JSON (repairing the usual damage) and embeds the
//! values. The worker then, in **one** LMDB transaction on the commit path, writes the extracted
//! memories, archives the fast ones (`info.evolve_to` → the new ids) and removes the job. A
//! crash before that commit runs the job again; the extracted ids are derived from the event,
//! so a rerun cannot duplicate them. Unlike MemOS
//! (its issue #1950) a failed, timed-out or unusable extraction changes nothing: the fast
//! memories stay searchable, the job is `failed` in `scheduler/status` with its reason, and the
//! reason and the model's reply are kept as a dead letter (`source = "fine"`) in the commit that
//! removes the job.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use operators::llm::{ChatOptions, Msg};
use serde_json::{Value, json};
use store::{DeadLetter, JobKey, MemoryRecord, MemoryType, Status};
use tokio::sync::{Notify, Semaphore};

use crate::commit::{Changes, CommitHook, Committer};
use crate::error::PipelineError;
use crate::metrics::Metrics;
pub use crate::tasks::FineJob;
use crate::tasks::{AddedMemory, TaskStatus, Tasks};

/// After a commit, the jobs it queued show as waiting and the worker is woken.
impl CommitHook for FineQueue {
    fn committed(&self, changes: &Changes) {
        if changes.fine_jobs.is_empty() {
            return;
        }
        for job in &changes.fine_jobs {
            self.tasks.set(task(job, "waiting", vec![], None));
        }
        self.wake.notify_one();
    }
}

/// The commit side of the fine queue: the jobs themselves are in the store.
#[derive(Clone)]
pub struct FineQueue {
    /// Wakes the worker when a commit queued jobs.
    pub wake: Arc<Notify>,
    /// Task statuses (queued jobs show in `scheduler/status`).
    pub tasks: Arc<Tasks>,
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
\"correctness\": \"success\" or \"failed\", \"experience\": \"when ... then ...\"}], \"skills\": \
[{\"name\": \"a short name\", \"description\": \"what the procedure achieves\", \"procedure\": \
\"the steps the user or assistant followed that worked and could be reused\"}], \"summary\": \
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
    extras(v, &mut out)?;
    Ok(out)
}

/// The model's preferences, tool trajectories and skills, appended to `out`.
fn extras(v: &Value, out: &mut Vec<Extracted>) -> Result<(), String> {
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
    // Skills (MemOS extracts reusable procedures as SkillMemory).
    for (i, s) in list("skills").iter().enumerate() {
        let name = str_of(s, "name").ok_or_else(|| format!("skills[{i}] has no name"))?;
        let procedure =
            str_of(s, "procedure").ok_or_else(|| format!("skills[{i}] has no procedure"))?;
        let skill = operators::skill::Skill {
            name: name.clone(),
            description: str_of(s, "description").unwrap_or_default(),
            procedure,
            files: vec![],
        };
        let mut info = serde_json::Map::new();
        info.insert("name".into(), json!(skill.name));
        info.insert("description".into(), json!(skill.description));
        info.insert("procedure".into(), json!(skill.procedure));
        out.push(Extracted {
            key: name,
            memory_type: MemoryType::SkillMemory,
            value: skill.memory(),
            tags: vec!["skill".into()],
            info,
        });
    }
    Ok(())
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
    /// Starts the worker: the jobs already queued (from before a restart) show as waiting,
    /// then it takes due jobs round-robin across cubes, each on its own task, as many at once
    /// as the extraction model takes requests; with nothing due it sleeps until `wake`.
    pub fn spawn(self, wake: Arc<Notify>) {
        let w = Arc::new(self);
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(
                w.llm.extract_model().map(|c| c.concurrency()).unwrap_or(1),
            ));
            let queued = w
                .blocking(|store| {
                    let txn = store.read_txn()?;
                    Ok(store.jobs(&txn)?)
                })
                .await;
            match queued {
                Ok(queued) => {
                    for (key, job) in queued {
                        w.tasks
                            .set(task(&FineJob { key, job }, "waiting", vec![], None));
                    }
                }
                Err(e) => tracing::error!(error = %e, "fine queue: reading the queued jobs failed"),
            }
            let busy: Arc<Mutex<HashSet<JobKey>>> = Arc::default();
            let mut last: Option<String> = None;
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    break;
                };
                let taken = busy.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let after = last.clone();
                let next = w
                    .blocking(move |store| {
                        let txn = store.read_txn()?;
                        Ok(store.next_job(&txn, after.as_deref(), &taken)?)
                    })
                    .await;
                let job = match next {
                    Ok(Some((key, job))) => FineJob { key, job },
                    Ok(None) => {
                        drop(permit);
                        wake.notified().await;
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "fine queue: reading the next job failed");
                        drop(permit);
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        continue;
                    }
                };
                last = Some(job.cube_id.clone());
                busy.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(job.key.clone());
                let (w, busy, wake) = (w.clone(), busy.clone(), wake.clone());
                tokio::spawn(async move {
                    // A job whose settling commit failed stays busy: it runs again after a
                    // restart, never in a loop here.
                    if run(&w, &job).await {
                        busy.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&job.key);
                    }
                    drop(permit);
                    wake.notify_one();
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

/// Runs one job to its end: extracted and committed, or failed with the reason kept as a dead
/// letter; either way the job leaves the queue in that commit. False when that commit failed
/// (the job stays queued).
async fn run(m: &FineWorker, job: &FineJob) -> bool {
    m.tasks.set(task(job, "in_progress", vec![], None));
    let outcome = extract(m, job).await;
    let label = match &outcome {
        Ok(_) => "ok",
        Err(_) => "failed",
    };
    m.metrics.fine_jobs.with_label_values(&[label]).inc();
    match outcome {
        Ok(added) => {
            m.tasks.set(task(job, "completed", added, None));
            true
        }
        Err((reason, reply)) => {
            tracing::warn!(task = %job.task_id(), %reason, "fine extraction failed; fast memories kept");
            let settled = settle_failed(m, job, &reason, reply).await;
            m.tasks.set(task(job, "failed", vec![], Some(reason)));
            settled
        }
    }
}

/// Removes a failed job from the queue and keeps its reason (and the model's reply) as a dead
/// letter, in one commit.
async fn settle_failed(m: &FineWorker, job: &FineJob, reason: &str, reply: Option<String>) -> bool {
    let dl = DeadLetter {
        source: "fine".into(),
        position: Some(job.task_id()),
        reason: reason.to_string(),
        payload: reply
            .unwrap_or_else(|| {
                json!({"cube_id": job.cube_id, "event_id": job.event_id,
                "memory_ids": job.memory_ids})
                .to_string()
            })
            .into_bytes(),
        at: store::time::now_micros(),
    };
    let key = job.key.clone();
    let r = m
        .commits
        .run("fine", move |store, w| {
            store.put_dead_letter(w, &dl)?;
            store.delete_job(w, &key)?;
            Ok::<_, PipelineError>(())
        })
        .await;
    if let Err(e) = &r {
        tracing::error!(task = %job.task_id(), error = %e, "fine queue: the failed job could not be settled; it runs again after a restart");
    }
    r.is_ok()
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
        return settle_nothing(m, job).await.map_err(fail);
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
        return settle_nothing(m, job).await.map_err(fail);
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
            store.delete_job(w, &job2.key)?;
            Ok::<_, PipelineError>(added)
        })
        .await
        .map_err(fail)
}

/// Removes a job that had nothing to extract (its fast memories are gone, or the model found
/// nothing worth keeping).
async fn settle_nothing(m: &FineWorker, job: &FineJob) -> Result<Vec<AddedMemory>, PipelineError> {
    let key = job.key.clone();
    m.commits
        .run("fine", move |store, w| {
            store.delete_job(w, &key)?;
            Ok::<_, PipelineError>(vec![])
        })
        .await
}
