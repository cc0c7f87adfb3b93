//! The service: the store, the embedder and the pipeline, with the operations every interface
//! (REST, CLI, eval, later the buses and SQL) shares.

use std::sync::Arc;
use std::time::{Duration, Instant};

use operators::embed::Embedder;
use operators::event::{Event, EventKind, Mode};
use serde::Serialize;
use serde_json::{Map, Value, json};
use store::search::Dedup;
use store::{Filter, MemoryType, Store};

use crate::api::{
    AddRequest, DeleteRequest, FeedbackRequest, SearchRequest, cube_list, format_item,
};
use crate::auth::{Access, Auth, Principal};
use crate::config::Config;
use crate::error::ServerError;
use pipelines::delete::{Deletion, Missing, Target};
use pipelines::runtime::{self, AddedMemory, Outcome, Payload, PipelineHandle};
use pipelines::tasks::{TaskStatus, Tasks};

/// Counts of tasks by status (MemOS `TaskSummary`).
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct TaskSummary {
    /// Queued.
    pub waiting: usize,
    /// Running.
    pub in_progress: usize,
    /// Fetched, not acknowledged (always 0: the pipeline acknowledges on commit).
    pub pending: usize,
    /// Done.
    pub completed: usize,
    /// Failed.
    pub failed: usize,
    /// Cancelled (never: tasks are not cancellable).
    pub cancelled: usize,
    /// All tracked.
    pub total: usize,
}

/// Counts by status of the tasks `keep` accepts.
pub fn summary_where(tasks: &Tasks, keep: impl Fn(&TaskStatus) -> bool) -> TaskSummary {
    let mut s = TaskSummary::default();
    for t in tasks.list(None).into_iter().filter(|t| keep(t)) {
        match t.status.as_str() {
            "waiting" => s.waiting += 1,
            "in_progress" => s.in_progress += 1,
            "completed" => s.completed += 1,
            _ => s.failed += 1,
        }
        s.total += 1;
    }
    s
}

/// Memories in a `/product/search` `data` object (every bucket, every cube).
pub fn result_count(data: &Value) -> usize {
    BUCKETS
        .iter()
        .filter_map(|b| data.get(*b).and_then(Value::as_array))
        .flatten()
        .filter_map(|c| c.get("memories").and_then(Value::as_array))
        .map(Vec::len)
        .sum()
}

/// The search buckets, in MemOS order.
pub const BUCKETS: [&str; 4] = [
    store::Bucket::Text.name(),
    store::Bucket::Pref.name(),
    store::Bucket::Tool.name(),
    store::Bucket::Skill.name(),
];

pub use store::recall::BucketHits;

/// What a search found.
pub struct SearchHits {
    /// Per bucket and cube.
    pub buckets: Vec<BucketHits>,
    /// Instruction that goes with the preferences ("" without any).
    pub pref_note: String,
    /// Preferences as a numbered prompt block ("" without any).
    pub pref_string: String,
}

/// The running service.
pub struct Memos {
    /// Configuration.
    pub cfg: Config,
    /// Store.
    pub store: Arc<Store>,
    /// Embedder.
    pub embedder: Arc<dyn Embedder>,
    /// Pipeline input.
    pub pipeline: PipelineHandle,
    /// Asynchronous tasks.
    pub tasks: Arc<Tasks>,
    /// API keys and rate limits.
    pub auth: Auth,
    /// Kafka partitions (hence cubes) this process owns.
    pub ownership: Arc<connectors::kafka::Ownership>,
    /// Sends searches for cubes owned by other processes to their owners (Kafka scale-out).
    pub forwarder: std::sync::OnceLock<Arc<connectors::kafka::Forwarder>>,
    /// SQL over the store (`POST /sql`, Postgres wire protocol).
    pub sql: Arc<sql::Engine>,
    /// Prometheus metrics.
    pub metrics: Arc<pipelines::metrics::Metrics>,
    /// The configured LLMs (none: chat is unavailable, fine mode behaves as fast).
    pub llm: operators::llm::Llm,
    /// Activation memory (`[activation] enabled`): the local model and its KV-cache worker.
    pub activation: Option<Arc<pipelines::activation::Activation>>,
    /// The one commit path: every write transaction (hooks and metrics fire after each).
    pub committer: pipelines::Committer,
    /// The HTTP reranker (`[search.rerank]`), if configured.
    pub reranker: Option<Arc<crate::rerank::HttpReranker>>,
}

/// Loads the configured embedder (fetching the local model first if allowed and missing).
pub fn load_embedder(cfg: &Config) -> Result<Arc<dyn Embedder>, ServerError> {
    Ok(pipelines::config::load_embedder(&cfg.engine())?)
}

impl Memos {
    /// Opens the store, loads the embedder and starts the pipeline.
    pub async fn start(
        cfg: Config,
    ) -> Result<(Arc<Memos>, tokio::task::JoinHandle<()>), ServerError> {
        let c = cfg.clone();
        let (store, embedder) = tokio::task::spawn_blocking(move || -> Result<_, ServerError> {
            let store = Arc::new(Store::open(&c.data_dir, c.store_options())?);
            let embedder = load_embedder(&c)?;
            Ok((store, embedder))
        })
        .await
        .map_err(|e| ServerError::Unavailable(e.to_string()))??;
        Self::with_parts(cfg, store, embedder)
    }

    /// Starts the pipeline over an opened store and embedder.
    pub fn with_parts(
        cfg: Config,
        store: Arc<Store>,
        embedder: Arc<dyn Embedder>,
    ) -> Result<(Arc<Memos>, tokio::task::JoinHandle<()>), ServerError> {
        Self::with_stages(cfg, store, embedder, None)
    }

    /// Starts the pipeline over an opened store and embedder, with custom stages between
    /// `extract` and `embed` (built anew each time the pipeline thread starts).
    pub fn with_stages(
        cfg: Config,
        store: Arc<Store>,
        embedder: Arc<dyn Embedder>,
        stages: Option<runtime::StageFactory>,
    ) -> Result<(Arc<Memos>, tokio::task::JoinHandle<()>), ServerError> {
        let stored = {
            let txn = store.read_txn()?;
            store.api_keys(&txn)?
        };
        let auth = Auth::new(&cfg.auth, &cfg.api_keys, &stored)?;
        let reranker = crate::rerank::HttpReranker::new(&cfg.search.rerank)?.map(Arc::new);
        let sql = Arc::new(sql::Engine::new(
            store.clone(),
            cfg.sql.clone(),
            Arc::new(EmbedAdapter(embedder.clone())),
            cfg.search.max_top_k,
        )?);
        let (engine, task) = pipelines::Engine::start(&cfg.engine(), store, embedder, stages)?;
        let pipelines::Engine {
            store,
            embedder,
            pipeline,
            tasks,
            metrics,
            llm,
            activation,
            committer,
        } = engine;
        let memos = Arc::new(Memos {
            cfg,
            store,
            embedder,
            pipeline,
            tasks,
            auth,
            ownership: Arc::default(),
            forwarder: std::sync::OnceLock::new(),
            sql,
            metrics,
            llm,
            activation,
            committer,
            reranker,
        });
        Ok((memos, task))
    }

    /// The metrics in the Prometheus text format, with the store and task gauges read now.
    pub async fn metrics_text(&self) -> Result<String, ServerError> {
        let m = self.metrics.clone();
        m.tasks_active.set(self.tasks.active() as i64);
        self.blocking(move |store| {
            let stats = store.stats()?;
            m.store_bytes.set(stats.disk_bytes as i64);
            m.dead_letters.set(stats.dead_letters as i64);
            let txn = store.read_txn()?;
            let statuses = [
                store::Status::Activated,
                store::Status::Resolving,
                store::Status::Archived,
                store::Status::Deleted,
            ];
            let mut counts = std::collections::HashMap::new();
            for cube in store.cubes(&txn)? {
                let by_status: Vec<_> = statuses
                    .iter()
                    .map(|s| store.field_ids(&txn, &cube.cube_id, "status", s.as_str()))
                    .collect::<Result<_, _>>()?;
                for t in MemoryType::ALL {
                    let ids = store.field_ids(&txn, &cube.cube_id, "memory_type", t.as_str())?;
                    if ids.is_empty() {
                        continue;
                    }
                    for (s, b) in statuses.iter().zip(&by_status) {
                        *counts.entry((t, *s)).or_insert(0u64) += (&ids & b).len();
                    }
                }
            }
            for t in MemoryType::ALL {
                for s in statuses {
                    let n = counts.get(&(t, s)).copied().unwrap_or(0);
                    m.memories
                        .with_label_values(&[t.as_str(), s.as_str()])
                        .set(n as i64);
                }
            }
            Ok(m.render())
        })
        .await
    }

    /// Runs `f` with the store on a blocking thread.
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, ServerError> + Send + 'static,
    ) -> Result<T, ServerError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| ServerError::Unavailable(e.to_string()))?
    }

    /// Builds the events of an add (one per writable cube).
    pub fn add_events(&self, req: &AddRequest, p: &Principal) -> Result<Vec<Event>, ServerError> {
        let user = req
            .user_id
            .clone()
            .ok_or_else(|| ServerError::BadRequest("user_id is required".into()))?;
        crate::fields::check_add(req)?;
        let cubes = cube_list(&req.writable_cube_ids, &req.mem_cube_id, &req.user_id)?;
        self.cfg.limits.check_cubes(&cubes)?;
        p.check(Access::Write, &cubes, Some(&user))?;
        let mut messages = req.messages.clone().unwrap_or(Value::Null);
        let mut extra_parts = Vec::new();
        if let Some(t) = &req.memory_content {
            extra_parts.push(json!({"type": "text", "text": t}));
        }
        if let Some(p) = &req.doc_path {
            extra_parts.push(self.doc_path_part(p)?);
        }
        if !extra_parts.is_empty() {
            messages = match messages {
                Value::Array(mut a) => {
                    a.extend(extra_parts);
                    Value::Array(a)
                }
                Value::Null => Value::Array(extra_parts),
                Value::String(s) => {
                    let mut a = vec![json!({"role": "user", "content": s})];
                    a.extend(extra_parts);
                    Value::Array(a)
                }
                other => other,
            };
        }
        if let Value::Array(a) = &messages
            && a.len() > self.cfg.limits.max_messages_per_add
        {
            return Err(ServerError::TooLarge(format!(
                "{} messages in one add; the limit is {}",
                a.len(),
                self.cfg.limits.max_messages_per_add
            )));
        }
        let info = add_info(req);
        let mode = add_mode(req)?;
        let kind = if req.is_feedback {
            EventKind::Feedback
        } else if req.is_upload_skill {
            EventKind::Skill
        } else {
            EventKind::Messages
        };
        let payload = if req.is_feedback {
            // MemOS: the last user message of chat_history + messages is the feedback, the
            // messages before it are its history.
            let mut all = match &req.chat_history {
                Some(Value::Array(a)) => a.clone(),
                _ => vec![],
            };
            match &messages {
                Value::Array(a) => all.extend(a.iter().cloned()),
                Value::String(s) => all.push(json!({"role": "user", "content": s})),
                _ => {}
            }
            let all = Value::Array(all);
            let parsed = operators::event::parse_messages(&all)?;
            let last_user = parsed
                .iter()
                .rposition(|m| m.role == "user")
                .ok_or_else(|| {
                    ServerError::BadRequest("is_feedback needs a user message".into())
                })?;
            let history: Vec<Value> = all
                .as_array()
                .map(|a| a.iter().take(last_user).cloned().collect())
                .unwrap_or_default();
            json!({"feedback_content": parsed[last_user].content, "history": history})
        } else {
            json!({"messages": messages})
        };
        let base_id = req
            .event_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let events: Vec<Event> = cubes
            .iter()
            .map(|cube| Event {
                version: operators::event::EVENT_VERSION,
                event_id: Some(base_id.clone()),
                kind,
                cube_id: cube.clone(),
                user_id: user.clone(),
                session_id: req.session_id.clone(),
                agent_id: req.agent_id.clone(),
                app_id: req.app_id.clone(),
                time: Some(store::time::micros_to_rfc3339(store::time::now_micros())),
                mode,
                tags: req.custom_tags.clone().unwrap_or_default(),
                info: info.clone(),
                payload: payload.clone(),
            })
            .collect();
        for e in &events {
            e.validate()?;
        }
        Ok(events)
    }

    /// Fetches the documents named by URL in an add's messages (see [`crate::fetch`]) before
    /// the add becomes events: a failure is this request's error, naming the URL.
    pub async fn fetch_documents(&self, messages: &mut Option<Value>) -> Result<(), ServerError> {
        match messages.as_mut() {
            Some(m) => crate::fetch::resolve(m, &self.cfg.documents).await,
            None => Ok(()),
        }
    }

    /// MemOS `doc_path`: a file under `documents.doc_root`, read as a file part (its format
    /// detected from its name and bytes, as any uploaded file).
    fn doc_path_part(&self, path: &str) -> Result<Value, ServerError> {
        let bad = |why: String| ServerError::BadRequest(format!("doc_path: {why}"));
        let root = &self.cfg.documents.doc_root;
        if root.is_empty() {
            return Err(bad(
                "reading files on the server is off (set documents.doc_root)".into(),
            ));
        }
        let root = std::fs::canonicalize(root)
            .map_err(|e| ServerError::Unavailable(format!("documents.doc_root {root}: {e}")))?;
        let full =
            std::fs::canonicalize(root.join(path)).map_err(|e| bad(format!("{path}: {e}")))?;
        if !full.starts_with(&root) || !full.is_file() {
            return Err(bad(format!(
                "{path} is not a file under documents.doc_root"
            )));
        }
        let len = std::fs::metadata(&full)
            .map_err(|e| bad(format!("{path}: {e}")))?
            .len();
        if len > self.cfg.documents.max_file_bytes {
            return Err(ServerError::TooLarge(format!(
                "doc_path: {path} has {len} bytes; the limit is {} (documents.max_file_bytes)",
                self.cfg.documents.max_file_bytes
            )));
        }
        let bytes = std::fs::read(&full).map_err(|e| bad(format!("{path}: {e}")))?;
        let name = full
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.to_string());
        use base64::Engine;
        let data = base64::engine::general_purpose::STANDARD.encode(&bytes);
        Ok(
            json!({"type": "file", "file": {"file_data": format!("data:;base64,{data}"), "filename": name}}),
        )
    }

    /// Adds synchronously: returns after the memories are committed.
    pub async fn add_sync(&self, events: Vec<Event>) -> Result<Vec<AddedMemory>, ServerError> {
        Ok(self
            .add_sync_each(events)
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    /// Adds synchronously; the memories of each event, in order.
    pub async fn add_sync_each(
        &self,
        events: Vec<Event>,
    ) -> Result<Vec<Vec<AddedMemory>>, ServerError> {
        let mut out = Vec::new();
        for o in self.add_sync_outcomes(events).await? {
            out.push(o?);
        }
        Ok(out)
    }

    /// Like [`Memos::add_sync_each`], but one result per event: a dead-lettered event is a
    /// `BadRequest` with its reason while the others still report their memories.
    pub async fn add_sync_outcomes(
        &self,
        events: Vec<Event>,
    ) -> Result<Vec<Result<Vec<AddedMemory>, ServerError>>, ServerError> {
        let rxs = self.submit_all(events).await?;
        let mut out = Vec::new();
        for rx in rxs {
            let o = rx.await.map_err(|_| {
                ServerError::Unavailable("the pipeline stopped before replying".into())
            })?;
            out.push(match o {
                Outcome::Stored { memories, .. } | Outcome::Duplicate { memories, .. } => {
                    Ok(memories)
                }
                Outcome::DeadLettered { reason } => Err(ServerError::BadRequest(reason)),
                Outcome::Failed { reason } => return Err(ServerError::Unavailable(reason)),
            });
        }
        Ok(out)
    }

    async fn submit_all(
        &self,
        events: Vec<Event>,
    ) -> Result<Vec<tokio::sync::oneshot::Receiver<Outcome>>, ServerError> {
        let mut rxs = Vec::new();
        for e in events {
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.pipeline
                .submit(runtime::Incoming {
                    payload: Payload::Event(Box::new(e)),
                    source: "http".into(),
                    position: None,
                    reply: Some(tx),
                })
                .await?;
            rxs.push(rx);
        }
        Ok(rxs)
    }

    /// Adds asynchronously: queues the events and returns a task id at once.
    pub async fn add_async(
        self: &Arc<Self>,
        events: Vec<Event>,
        task_id: Option<String>,
        user: &str,
    ) -> Result<String, ServerError> {
        let task_id = task_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let cubes: Vec<String> = events.iter().map(|e| e.cube_id.clone()).collect();
        self.tasks.set(TaskStatus {
            cubes: cubes.clone(),
            task_id: task_id.clone(),
            status: "waiting".into(),
            user_id: user.into(),
            memories: vec![],
            error: None,
            created_at: store::time::now_micros(),
        });
        let rxs = self.submit_all(events).await?;
        let me = self.clone();
        let (tid, uid) = (task_id.clone(), user.to_string());
        let created_at = store::time::now_micros();
        tokio::spawn(async move {
            let mut st = TaskStatus {
                cubes,
                task_id: tid,
                status: "in_progress".into(),
                user_id: uid,
                memories: vec![],
                error: None,
                created_at,
            };
            me.tasks.set(st.clone());
            for rx in rxs {
                match rx.await {
                    Ok(Outcome::Stored { memories, .. } | Outcome::Duplicate { memories, .. }) => {
                        st.memories.extend(memories)
                    }
                    Ok(Outcome::DeadLettered { reason } | Outcome::Failed { reason }) => {
                        st.error = Some(reason)
                    }
                    Err(_) => st.error = Some("the pipeline stopped".into()),
                }
            }
            st.status = if st.error.is_some() {
                "failed".into()
            } else {
                "completed".into()
            };
            me.tasks.set(st);
        });
        Ok(task_id)
    }

    /// Embeds a query on a blocking thread.
    pub async fn embed_query(&self, q: &str) -> Result<Vec<f32>, ServerError> {
        let e = self.embedder.clone();
        let q = q.to_string();
        let mut v = tokio::task::spawn_blocking(move || e.embed(&[q]))
            .await
            .map_err(|e| ServerError::Unavailable(e.to_string()))??;
        v.pop()
            .ok_or_else(|| ServerError::Unavailable("embedder returned nothing".into()))
    }

    /// MemOS search (§4.9 shape): the `data` object. Cubes owned by other processes of a
    /// scaled-out deployment are searched by their owners (see [`Memos::search_with`]).
    pub async fn search(&self, req: &SearchRequest, p: &Principal) -> Result<Value, ServerError> {
        self.search_with(req, p, false).await
    }

    /// Search; unless `local_only`, cubes whose Kafka partition another process owns are
    /// forwarded to it over the search-request topic and the answers merged.
    pub async fn search_with(
        &self,
        req: &SearchRequest,
        p: &Principal,
        local_only: bool,
    ) -> Result<Value, ServerError> {
        if !local_only && let Some(f) = self.forwarder.get() {
            let cubes = req.cubes()?;
            p.check(Access::Read, &cubes, req.user_id.as_deref())?;
            let (remote, local): (Vec<String>, Vec<String>) =
                cubes.into_iter().partition(|c| !self.ownership.owns(c));
            if !remote.is_empty() {
                return self.search_forwarded(f, req, p, local, remote).await;
            }
        }
        self.search_local(req, p).await
    }

    async fn search_forwarded(
        &self,
        f: &connectors::kafka::Forwarder,
        req: &SearchRequest,
        p: &Principal,
        local: Vec<String>,
        remote: Vec<String>,
    ) -> Result<Value, ServerError> {
        let mut data = if local.is_empty() {
            json!({"text_mem": [], "pref_mem": [], "tool_mem": [], "skill_mem": [], "act_mem": [],
                   "para_mem": [], "pref_note": "", "pref_string": ""})
        } else {
            let mut r = req.clone();
            r.readable_cube_ids = Some(local);
            r.mem_cube_id = None;
            self.search_local(&r, p).await?
        };
        let timeout = Duration::from_millis(self.cfg.search.timeout_ms);
        for cube in remote {
            let mut r = req.clone();
            r.readable_cube_ids = Some(vec![cube.clone()]);
            r.mem_cube_id = None;
            let body =
                serde_json::to_vec(&r).map_err(|e| ServerError::BadRequest(e.to_string()))?;
            let reply = f
                .search(
                    &cube,
                    &body,
                    Some((
                        crate::auth::FORWARD_HEADER,
                        &self.auth.sign_forward(p, timeout),
                    )),
                    timeout,
                )
                .await
                .map_err(|e| ServerError::Unavailable(e.to_string()))?;
            let v: Value = serde_json::from_slice(&reply)
                .map_err(|e| ServerError::Unavailable(format!("owner's reply: {e}")))?;
            let code = v["code"].as_u64().unwrap_or(500);
            if code != 200 {
                let msg = format!(
                    "owner of cube {cube}: {}",
                    v["message"].as_str().unwrap_or("")
                );
                return Err(match code {
                    400 => ServerError::BadRequest(msg),
                    401 => ServerError::Unauthorized(msg),
                    403 => ServerError::Forbidden(msg),
                    404 => ServerError::NotFound(msg),
                    413 => ServerError::TooLarge(msg),
                    504 => ServerError::Timeout(msg),
                    _ => ServerError::Unavailable(msg),
                });
            }
            for name in BUCKETS {
                if let (Some(Value::Array(src)), Some(Value::Array(dst))) =
                    (v["data"].get(name), data.get_mut(name))
                {
                    dst.extend(src.iter().cloned());
                }
            }
            for k in ["pref_string", "pref_note"] {
                let add = v["data"][k].as_str().unwrap_or("");
                if !add.is_empty() {
                    let cur = data[k].as_str().unwrap_or("").to_string();
                    data[k] = json!(if cur.is_empty() {
                        add.to_string()
                    } else {
                        format!("{cur}\n{add}")
                    });
                }
            }
        }
        Ok(data)
    }

    async fn search_local(&self, req: &SearchRequest, p: &Principal) -> Result<Value, ServerError> {
        let include_embedding = req.include_embedding;
        let res = self.search_hits(req, p).await?;
        let mut data = json!({"act_mem": [], "para_mem": [], "pref_note": res.pref_note, "pref_string": res.pref_string});
        for name in BUCKETS {
            let list: Vec<Value> = res
                .buckets
                .iter()
                .filter(|b| b.name == name)
                .map(|b| {
                    let memories: Vec<Value> = b
                        .hits
                        .iter()
                        .map(|h| {
                            let extra = json!({"vector_score": h.vector_score, "lexical_score": h.lexical_score});
                            format_item(&h.record, Some(h.score), Some(extra), include_embedding)
                        })
                        .collect();
                    json!({"cube_id": b.cube, "memories": memories, "total_nodes": b.hits.len()})
                })
                .collect();
            data[name] = Value::Array(list);
        }
        Ok(data)
    }

    /// Asks the chat model for a search query; None (after a log line) when there is no model
    /// or it fails or takes more than half the search budget.
    /// The request's `reference_time` is "now" for relative times, and its `chat_history`
    /// comes before the question (pronouns resolved against it).
    async fn rewrite_query(&self, req: &SearchRequest, deadline: Instant) -> Option<String> {
        let client = self.llm.chat_model(None).ok()?;
        let now = req
            .reference_time
            .as_deref()
            .and_then(store::time::parse_time)
            .unwrap_or_else(store::time::now_micros);
        let now = store::time::micros_to_rfc3339(now);
        let mut messages = vec![operators::llm::Msg::new(
            "system",
            format!(
                "Rewrite the user's last question as a short search query for their memory store: keep names, places and dates, resolve pronouns from the conversation, turn relative times into dates (now is {now}), drop filler words. Answer with the query only."
            ),
        )];
        if let Some(h) = &req.chat_history
            && let Ok(turns) = operators::event::parse_messages(h)
        {
            for t in turns.iter().rev().take(20).rev() {
                let role = if t.role == "assistant" {
                    "assistant"
                } else {
                    "user"
                };
                messages.push(operators::llm::Msg::new(role, t.content.as_str()));
            }
        }
        messages.push(operators::llm::Msg::new("user", req.query.as_str()));
        let opts = operators::llm::ChatOptions {
            max_tokens: Some(64),
            temperature: Some(0.0),
            top_p: None,
        };
        let budget = deadline.saturating_duration_since(Instant::now()) / 2;
        match tokio::time::timeout(budget, client.complete(&messages, &opts)).await {
            Ok(Ok(c)) => {
                let q = c.text.trim().trim_matches('"').trim().to_string();
                (!q.is_empty() && q.chars().count() <= self.cfg.limits.max_query_chars).then_some(q)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "fine search: query rewrite failed; searching as fast");
                None
            }
            Err(_) => {
                tracing::warn!("fine search: query rewrite timed out; searching as fast");
                None
            }
        }
    }

    /// The request's own limits: query length, every top k, mode, relativity, ids.
    fn check_search(&self, req: &SearchRequest) -> Result<(), ServerError> {
        if req.query.trim().is_empty() {
            return Err(ServerError::BadRequest("query is required".into()));
        }
        if req.query.chars().count() > self.cfg.limits.max_query_chars {
            return Err(ServerError::TooLarge(format!(
                "query is longer than {} characters",
                self.cfg.limits.max_query_chars
            )));
        }
        let max_k = self.cfg.search.max_top_k;
        if req.top_k == 0 || req.top_k > max_k {
            return Err(ServerError::BadRequest(format!(
                "top_k must be 1..={max_k}"
            )));
        }
        for (name, k) in [
            ("pref_top_k", req.pref_top_k),
            ("tool_mem_top_k", req.tool_mem_top_k),
            ("skill_mem_top_k", req.skill_mem_top_k),
        ] {
            if k > max_k {
                return Err(ServerError::BadRequest(format!(
                    "{name} must be 0..={max_k} (search.max_top_k)"
                )));
            }
        }
        if !matches!(req.mode.as_str(), "fast" | "fine" | "mixture") {
            return Err(ServerError::BadRequest(format!(
                "mode \"{}\" is not fast, fine or mixture",
                req.mode
            )));
        }
        if let Some(r) = req.relativity
            && !(0.0..=1.0).contains(&r)
        {
            return Err(ServerError::BadRequest(format!(
                "relativity {r} is outside 0..=1"
            )));
        }
        for (what, v) in [("user_id", &req.user_id), ("session_id", &req.session_id)] {
            if let Some(v) = v {
                store::validate_key_part(what, v)?;
            }
        }
        let has = crate::fields::Configured {
            rewrites: matches!(req.mode.as_str(), "fine" | "mixture")
                && self.llm.chat_model(None).is_ok(),
            reranker: self.reranker.is_some(),
            internet: !self.cfg.search.internet.url.is_empty(),
        };
        crate::fields::check_search(req, &has)
    }

    /// Search (§4): per cube, per bucket (text, preference, tool, skill), hybrid retrieval.
    pub async fn search_hits(
        &self,
        req: &SearchRequest,
        p: &Principal,
    ) -> Result<SearchHits, ServerError> {
        self.search_hits_with(req, p, store::search::Retrievers::Hybrid)
            .await
    }

    /// [`Memos::search_hits`] with a choice of retrievers (`get_all`'s `search_type`).
    pub async fn search_hits_with(
        &self,
        req: &SearchRequest,
        p: &Principal,
        retrievers: store::search::Retrievers,
    ) -> Result<SearchHits, ServerError> {
        self.check_search(req)?;
        let cubes = req.cubes()?;
        self.cfg.limits.check_cubes(&cubes)?;
        p.check(Access::Read, &cubes, req.user_id.as_deref())?;
        let (dedup, only_type) = dedup_and_type(req)?;
        let filters: Vec<Filter> = cubes
            .iter()
            .map(|c| Filter::parse_for_cube(req.filter.as_ref().unwrap_or(&Value::Null), c, &cubes))
            .collect::<Result<_, _>>()?;
        let at = store::search::AsOf {
            system: parse_as_of("as_of", req.as_of.as_deref())?,
            event: parse_as_of("event_as_of", req.event_as_of.as_deref())?,
        };
        let embedder = self.embedder.clone();
        let deadline = Instant::now() + Duration::from_millis(self.cfg.search.timeout_ms);
        // Fine search: the LLM rewrites the question into a search query (pronouns and relative
        // times resolved); the embedding uses the rewrite, BM25 both. Any failure: as fast.
        let mut req = req.clone();
        let mut semantic = req.query.clone();
        if matches!(req.mode.as_str(), "fine" | "mixture")
            && let Some(rewritten) = self.rewrite_query(&req, deadline).await
        {
            req.query = format!("{} {rewritten}", req.query);
            semantic = rewritten;
        }
        let req = &req;
        let qv = tokio::time::timeout_at(deadline.into(), self.embed_query(&semantic))
            .await
            .map_err(|_| {
                ServerError::Timeout(format!(
                    "search took longer than {} ms",
                    self.cfg.search.timeout_ms
                ))
            })??;
        let store = self.store.clone();
        let req2 = req.clone();
        let cfg = self.cfg.search.clone();
        let scope = p.scope();
        let work = tokio::task::spawn_blocking(move || -> Result<SearchHits, ServerError> {
            let txn = store.read_txn()?;
            let cubes: Vec<(String, Filter)> = cubes.into_iter().zip(filters).collect();
            let recall = store::recall::Recall {
                cubes: &cubes,
                query: &req2.query,
                vector: &qv,
                top_k: store::Bucket::ALL.map(|b| match b {
                    store::Bucket::Text => req2.top_k,
                    store::Bucket::Pref => req2.pref_top_k * req2.include_preference as usize,
                    store::Bucket::Tool => req2.tool_mem_top_k * req2.search_tool_memory as usize,
                    store::Bucket::Skill => {
                        req2.skill_mem_top_k * req2.include_skill_memory as usize
                    }
                }),
                only_type,
                scope: &scope,
                at,
                session_id: req2.session_id.as_deref(),
                relativity: req2
                    .relativity
                    .unwrap_or(0.0)
                    .max(req2.threshold.unwrap_or(0.0)),
                dedup,
                fusion: cfg.fusion,
                session_boost: cfg.session_boost,
                pool: cfg.pool,
                vector_pool: cfg.vector_pool,
                retrievers,
            };
            let mut embed = |t: &[String]| {
                embedder
                    .embed(t)
                    .map_err(|e| store::StoreError::InvalidArgument(e.to_string()))
            };
            let mut buckets = store::recall::recall(&store, &txn, &recall, &mut embed)?;
            if req2.neighbor_discovery {
                store::recall::add_neighbors(&store, &txn, &mut buckets, &scope)?;
            }
            let pref_lines: Vec<(bool, String)> = buckets
                .iter()
                .filter(|b| b.name == store::Bucket::Pref.name())
                .flat_map(|b| &b.hits)
                .map(|h| {
                    let implicit =
                        h.record.info.get("preference_type") == Some(&json!("implicit_preference"));
                    (implicit, h.record.memory.clone())
                })
                .collect();
            let (pref_note, pref_string) = preference_text(&pref_lines);
            Ok(SearchHits {
                buckets,
                pref_note,
                pref_string,
            })
        });
        let mut hits = tokio::time::timeout_at(deadline.into(), work)
            .await
            .map_err(|_| {
                ServerError::Timeout(format!(
                    "search took longer than {} ms",
                    self.cfg.search.timeout_ms
                ))
            })?
            .map_err(|e| ServerError::Unavailable(e.to_string()))??;
        self.web_and_rerank(req, &mut hits).await?;
        Ok(hits)
    }

    /// After recall: web results when `internet_search`, then the HTTP reranker when
    /// configured and `rerank`.
    async fn web_and_rerank(
        &self,
        req: &SearchRequest,
        hits: &mut SearchHits,
    ) -> Result<(), ServerError> {
        if req.internet_search {
            self.add_web_results(req, hits).await?;
        }
        if req.rerank
            && let Some(r) = &self.reranker
        {
            let min = req
                .relativity
                .unwrap_or(0.0)
                .max(req.threshold.unwrap_or(0.0));
            crate::rerank::rerank_buckets(r, &req.query, &mut hits.buckets, min).await?;
        }
        Ok(())
    }

    /// MemOS delete (§1.3): exactly one of memory_ids, file_ids, or filter + quick constraints
    /// (user_id, session_id/conversation_id), within the caller's writable cubes. Unknown or
    /// out-of-scope ids are a 404 and nothing is deleted.
    pub async fn delete(&self, req: &DeleteRequest, p: &Principal) -> Result<Value, ServerError> {
        crate::fields::check_delete(req)?;
        p.check(Access::Write, &[], None)?;
        let session = match (&req.session_id, &req.conversation_id) {
            (Some(a), Some(b)) if a != b => {
                return Err(ServerError::BadRequest(
                    "session_id and conversation_id differ".into(),
                ));
            }
            (a, b) => a.clone().or(b.clone()),
        };
        let raw_filter = req.filter.as_ref().filter(|f| !f.is_null());
        let has_filter = raw_filter.is_some() || req.user_id.is_some() || session.is_some();
        let modes =
            req.memory_ids.is_some() as u8 + req.file_ids.is_some() as u8 + has_filter as u8;
        if modes != 1 {
            return Err(ServerError::BadRequest("give exactly one of memory_ids, file_ids, or filter (with user_id/session_id constraints)".into()));
        }
        if let Some(ids) = &req.memory_ids {
            if ids.is_empty() {
                return Err(ServerError::BadRequest("memory_ids is empty".into()));
            }
            self.cfg.limits.check_ids("memory id", ids)?;
        }
        if let Some(ids) = &req.file_ids {
            if ids.is_empty() {
                return Err(ServerError::BadRequest("file_ids is empty".into()));
            }
            self.cfg.limits.check_ids("file id", ids)?;
        }
        if let Some(c) = &req.writable_cube_ids {
            self.cfg.limits.check_cubes(c)?;
            for c in c {
                store::validate_key_part("cube id", c)?;
            }
        }
        for (what, v) in [
            ("mem_cube_id", &req.mem_cube_id),
            ("user_id", &req.user_id),
            ("session_id", &session),
        ] {
            if let Some(v) = v {
                store::validate_key_part(what, v)?;
            }
        }
        if let Some(f) = raw_filter {
            check_constraint_conflicts(f, "user_id", req.user_id.as_deref())?;
            check_constraint_conflicts(f, "session_id", session.as_deref())?;
        }
        let named_cubes: Option<Vec<String>> = match (&req.writable_cube_ids, &req.mem_cube_id) {
            (Some(c), _) if !c.is_empty() => Some(c.clone()),
            (_, Some(c)) => Some(vec![c.clone()]),
            _ => None,
        };
        if let Some(c) = &named_cubes {
            p.check(Access::Write, c, req.user_id.as_deref())?;
        } else if let Some(u) = &req.user_id {
            p.check(Access::Write, &[], Some(u))?;
        }
        let req = req.clone();
        let scope = p.scope();
        let receipt = self
            .committer
            .run("delete", move |store, wtxn| {
                let target = if let Some(ids) = &req.memory_ids {
                    Target::Ids(ids.clone())
                } else {
                    let cubes: Vec<String> = match &named_cubes {
                        Some(c) => c.clone(),
                        None => store
                            .cubes(wtxn)?
                            .into_iter()
                            .map(|c| c.cube_id)
                            .filter(|c| scope.allows_cube(c))
                            .collect(),
                    };
                    let mut per_cube = Vec::new();
                    for cube in &cubes {
                        let filter = delete_filter(&req, session.as_deref(), cube, &cubes)?;
                        per_cube.push((cube.clone(), filter));
                    }
                    Target::Filters(per_cube)
                };
                let deletion = Deletion {
                    target,
                    scope,
                    cube: None,
                    user: None,
                    missing: Missing::Refuse,
                };
                let receipt = pipelines::delete::apply(store, wtxn, &deletion)?;
                for c in &receipt.cubes {
                    wtxn.touch(c);
                }
                Ok::<_, ServerError>(receipt)
            })
            .await?;
        Ok(json!({"status": "success", "deleted": receipt.ids.len(), "receipt": receipt}))
    }

    /// Builds feedback events (one per writable cube); the pipeline keeps them as
    /// [`store::FeedbackRecord`]s.
    pub fn feedback_events(
        &self,
        req: &FeedbackRequest,
        p: &Principal,
    ) -> Result<Vec<Event>, ServerError> {
        let user = req
            .user_id
            .clone()
            .ok_or_else(|| ServerError::BadRequest("user_id is required".into()))?;
        let content = req
            .feedback_content
            .clone()
            .filter(|c| !c.trim().is_empty())
            .ok_or_else(|| ServerError::BadRequest("feedback_content is required".into()))?;
        let cubes = cube_list(&req.writable_cube_ids, &req.mem_cube_id, &req.user_id)?;
        self.cfg.limits.check_cubes(&cubes)?;
        p.check(Access::Write, &cubes, Some(&user))?;
        let kbs = req.allow_knowledgebase_ids.clone().unwrap_or_default();
        if !kbs.is_empty() {
            p.check(Access::Write, &kbs, None)?;
        }
        let payload = json!({
            "allow_knowledgebase_ids": kbs,
            "feedback_content": content,
            "history": req.history.clone().unwrap_or(Value::Null),
            "retrieved_memory_ids": req.retrieved_memory_ids.clone().unwrap_or_default(),
            "feedback_time": req.feedback_time,
            "corrected_answer": req.corrected_answer,
        });
        let base_id = uuid::Uuid::new_v4().to_string();
        let events: Vec<Event> = cubes
            .iter()
            .map(|cube| Event {
                version: operators::event::EVENT_VERSION,
                event_id: Some(base_id.clone()),
                kind: EventKind::Feedback,
                cube_id: cube.clone(),
                user_id: user.clone(),
                session_id: req.session_id.clone(),
                agent_id: req.agent_id.clone(),
                app_id: req.app_id.clone(),
                time: Some(
                    req.feedback_time
                        .as_deref()
                        .and_then(store::time::parse_time)
                        .map(store::time::micros_to_rfc3339)
                        .unwrap_or_else(|| {
                            store::time::micros_to_rfc3339(store::time::now_micros())
                        }),
                ),
                mode: Mode::Fast,
                tags: vec![],
                info: req.info.clone().unwrap_or_default(),
                payload: payload.clone(),
            })
            .collect();
        for e in &events {
            e.validate()?;
        }
        Ok(events)
    }

    /// What the feedback stage did with feedback `id` in each of `cubes` (after it ran):
    /// `{"add": […], "update": […], "archive": […]}` merged over the cubes.
    pub async fn feedback_outcome(
        &self,
        cubes: Vec<String>,
        id: String,
    ) -> Result<Value, ServerError> {
        self.blocking(move |store| {
            let txn = store.read_txn()?;
            let mut out = json!({"add": [], "update": [], "archive": []});
            for cube in &cubes {
                let Some(f) = store.feedback_by_id(&txn, cube, &id)? else {
                    continue;
                };
                let Some(r) = f.result.as_deref() else {
                    continue;
                };
                let r: Value = serde_json::from_str(r).unwrap_or_default();
                for k in ["add", "update", "archive"] {
                    if let (Some(dst), Some(src)) =
                        (out[k].as_array_mut(), r.get(k).and_then(Value::as_array))
                    {
                        dst.extend(src.iter().cloned());
                    }
                }
                out["intent"] = r.get("intent").cloned().unwrap_or(Value::Null);
            }
            Ok(out)
        })
        .await
    }

    /// Activated memories of a cube of `types` matching `filter` that `p` sees, in insertion
    /// order, one page (1-based) or all (then at most `limits.max_export`, else 413). Returns (page, total).
    pub async fn export(
        &self,
        cube: &str,
        filter: Filter,
        types: Vec<MemoryType>,
        page: Option<(usize, usize)>,
        p: &Principal,
    ) -> Result<(Vec<store::MemoryRecord>, usize), ServerError> {
        let cube = cube.to_string();
        let max = self.cfg.limits.max_export;
        let scope = p.scope();
        self.blocking(move |store| {
            let txn = store.read_txn()?;
            let ids = store.candidates(&txn, &cube, Some(&types), &filter)?;
            let ids = store.restrict(&txn, &cube, &scope, ids)?;
            let total = ids.len() as usize;
            let (skip, take) = match page {
                Some((page, size)) => ((page - 1).saturating_mul(size), size),
                None if total > max => {
                    return Err(ServerError::TooLarge(format!(
                        "{total} memories match; an export returns at most {max}: use page and page_size"
                    )));
                }
                None => (0, total),
            };
            let mut out = Vec::new();
            for id in ids.iter().skip(skip).take(take) {
                if let Some(r) = store.record(&txn, id)? {
                    out.push(r);
                }
            }
            Ok((out, total))
        })
        .await
    }

    /// Memories by id that the caller may read; returns (found, missing).
    pub async fn get_by_ids(
        &self,
        ids: Vec<String>,
        p: &Principal,
    ) -> Result<(Vec<store::MemoryRecord>, Vec<String>), ServerError> {
        p.check(Access::Read, &[], None)?;
        self.cfg.limits.check_ids("memory id", &ids)?;
        let scope = p.scope();
        self.blocking(move |store| {
            let txn = store.read_txn()?;
            let (mut found, mut missing) = (Vec::new(), Vec::new());
            for id in ids {
                match store.get_visible(&txn, &id, &scope)? {
                    Some(r) => found.push(r),
                    _ => missing.push(id),
                }
            }
            Ok((found, missing))
        })
        .await
    }

    /// Registers a cube or knowledge base; 409 if the id exists (as a cube or in memories).
    pub async fn create_cube(&self, info: store::CubeInfo) -> Result<store::CubeInfo, ServerError> {
        self.committer
            .run("cube", move |store, wtxn| {
                if store.cube(wtxn, &info.cube_id)?.is_some() {
                    return Err(ServerError::Conflict(format!(
                        "cube \"{}\" already exists",
                        info.cube_id
                    )));
                }
                store.put_cube(wtxn, &info)?;
                Ok(info)
            })
            .await
    }

    /// A cube's info (cubes are registered on their first memory or by `create_cube`).
    pub async fn cube_info(&self, cube: &str) -> Result<Option<store::CubeInfo>, ServerError> {
        let cube = cube.to_string();
        self.blocking(move |store| {
            let txn = store.read_txn()?;
            Ok(store.cube(&txn, &cube)?)
        })
        .await
    }

    /// Deletes every memory of a cube and its registration, in one transaction; returns the
    /// receipt. 403 for a key limited to some users (the cube holds other users' memories).
    pub async fn drop_cube(
        &self,
        cube: &str,
        p: &Principal,
    ) -> Result<store::DeleteReceipt, ServerError> {
        p.check(Access::Write, &[cube.to_string()], None)?;
        p.check_whole_cube("deleting a whole cube")?;
        let cube = cube.to_string();
        self.committer
            .run("cube", move |store, wtxn| {
                let ids =
                    store.matching_ids(wtxn, &cube, &Filter::And(vec![]), &store::Scope::all())?;
                let receipt = store.delete(wtxn, &ids)?;
                store.remove_cube(wtxn, &cube)?;
                // The cube's KV cache goes with its memories.
                wtxn.touch(&cube);
                Ok(receipt)
            })
            .await
    }
}

/// MemOS's preference note and text: the explicit and the implicit preferences found, numbered,
/// with the instruction how to use them (both empty when there are none).
fn preference_text(pref_lines: &[(bool, String)]) -> (String, String) {
    let note = "Follow the user's explicit preferences above; use the implicit ones (read from their habits) when they fit the request.";
    let list = |implicit: bool| -> Vec<String> {
        pref_lines
            .iter()
            .filter(|(i, _)| *i == implicit)
            .enumerate()
            .map(|(n, (_, p))| format!("{}. {p}", n + 1))
            .collect()
    };
    let mut parts = Vec::new();
    for (title, items) in [
        ("Explicit Preference:", list(false)),
        ("Implicit Preference:", list(true)),
    ] {
        if !items.is_empty() {
            parts.push(format!("{title}\n{}", items.join("\n")));
        }
    }
    let pref_string = if parts.is_empty() {
        String::new()
    } else {
        format!("{}\n{note}", parts.join("\n"))
    };
    let note = if pref_lines.is_empty() {
        String::new()
    } else {
        note.to_string()
    };
    (note, pref_string)
}

/// A REST delete's filter in one cube: the files named, or the filter (never an empty one on
/// its own) with the user and session constraints.
fn delete_filter(
    req: &DeleteRequest,
    session: Option<&str>,
    cube: &str,
    cubes: &[String],
) -> Result<Filter, ServerError> {
    Ok(if let Some(f) = &req.file_ids {
        Filter::Cond {
            field: "file_ids".into(),
            op: store::filter::Op::In,
            value: json!(f),
        }
    } else {
        let mut parts = vec![];
        if let Some(f) = req.filter.as_ref().filter(|f| !f.is_null()) {
            let f = Filter::parse_for_cube(f, cube, cubes)?;
            if f.is_true() && req.user_id.is_none() && session.is_none() {
                return Err(ServerError::BadRequest(
                    "an empty filter would delete everything; refused".into(),
                ));
            }
            parts.push(f);
        }
        if let Some(u) = &req.user_id {
            parts.push(eq("user_id", u));
        }
        if let Some(s) = session {
            parts.push(eq("session_id", s));
        }
        Filter::And(parts)
    })
}

/// Parses an `as_of`-style time parameter (RFC 3339 or `YYYY-MM-DD HH:MM`).
pub fn parse_as_of(name: &str, v: Option<&str>) -> Result<Option<i64>, ServerError> {
    match v.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => store::time::parse_time(s).map(Some).ok_or_else(|| {
            ServerError::BadRequest(format!(
                "{name} \"{s}\" is not a time (use RFC 3339, e.g. 2026-01-31T12:00:00Z)"
            ))
        }),
    }
}

fn eq(field: &str, v: &str) -> Filter {
    Filter::Cond {
        field: field.into(),
        op: store::filter::Op::Eq,
        value: json!(v),
    }
}

/// MemOS merges quick constraints into a filter and rejects a filter that already pins the same
/// field to a different value (§1.3): top-level conditions and every and/or branch are checked.
fn check_constraint_conflicts(
    filter: &Value,
    field: &str,
    quick: Option<&str>,
) -> Result<(), ServerError> {
    let Some(q) = quick else { return Ok(()) };
    let mut conds: Vec<&Value> = vec![filter];
    for k in ["and", "or"] {
        if let Some(Value::Array(a)) = filter.get(k) {
            conds.extend(a.iter());
        }
    }
    for c in conds {
        if let Some(Value::String(v)) = c.get(field)
            && v != q
        {
            return Err(ServerError::BadRequest(format!(
                "the filter sets {field} = \"{v}\" but the request's {field} is \"{q}\""
            )));
        }
    }
    Ok(())
}

/// The service's embedder as `embed()` / `vector_search()` see it.
pub struct EmbedAdapter(pub Arc<dyn Embedder>);

impl sql::Embed for EmbedAdapter {
    fn embed(&self, text: &str) -> sql::Result<Vec<f32>> {
        self.0
            .embed(&[text.to_string()])
            .map_err(|e| sql::SqlError::Search(format!("embedder: {e}")))?
            .pop()
            .ok_or_else(|| sql::SqlError::Search("embedder returned nothing".into()))
    }
}

/// An add's `info`: the request's, with `source` and MemOS's stamped fields.
fn add_info(req: &AddRequest) -> Map<String, Value> {
    let mut info: Map<String, Value> = req.info.clone().unwrap_or_default();
    if let Some(s) = &req.source {
        info.insert("source".into(), Value::String(s.clone()));
    }
    // MemOS stamps these on every item.
    for (k, v) in [
        ("manager_user_id", &req.manager_user_id),
        ("project_id", &req.project_id),
    ] {
        if let Some(v) = v {
            info.insert(k.into(), Value::String(v.clone()));
        }
    }
    info
}

/// MemOS: an async add is fine-extracted in the background (here: when an LLM is configured;
/// without one fine behaves as fast), a sync add is fast unless it asks for fine. An explicit
/// mode is honoured either way.
fn add_mode(req: &AddRequest) -> Result<Mode, ServerError> {
    let asynchronous = !matches!(req.async_mode.as_deref(), Some("sync"));
    match req.mode.as_deref() {
        Some("fine") => Ok(Mode::Fine),
        Some("fast") => Ok(Mode::Fast),
        None if asynchronous => Ok(Mode::Fine),
        None => Ok(Mode::Fast),
        Some(o) => Err(ServerError::BadRequest(format!(
            "mode \"{o}\" is not fast or fine"
        ))),
    }
}

/// A search's `dedup` and `search_memory_type`.
fn dedup_and_type(req: &SearchRequest) -> Result<(Dedup, Option<MemoryType>), ServerError> {
    let dedup = match req.dedup.as_deref() {
        None | Some("mmr") => Dedup::Mmr,
        Some("sim") => Dedup::Sim,
        Some("no") => Dedup::No,
        Some(o) => {
            return Err(ServerError::BadRequest(format!(
                "dedup \"{o}\" is not no, sim or mmr"
            )));
        }
    };
    let only_type = match req.search_memory_type.as_str() {
        "All" | "" => None,
        t => Some(MemoryType::parse(t).ok_or_else(|| {
            ServerError::BadRequest(format!("search_memory_type \"{t}\" is unknown"))
        })?),
    };
    Ok((dedup, only_type))
}
