//! The service: the store, the embedder and the pipeline, with the operations every interface
//! (REST, CLI, eval, later the buses and SQL) shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use operators::embed::{Embedder, HashEmbedder, LocalEmbedder, OpenAiEmbedder};
use operators::event::{Event, EventKind, Mode};
use serde::Serialize;
use serde_json::{Map, Value, json};
use store::search::{Dedup, SearchRequest as StoreSearch, search};
use store::{Filter, MemoryType, Store};

use crate::api::{AddRequest, DeleteRequest, SearchRequest, format_item};
use crate::config::Config;
use crate::error::PipelineError;
use crate::runtime::{self, AddedMemory, Outcome, Payload, PipelineHandle};

/// Status of an asynchronous add.
#[derive(Debug, Clone, Serialize)]
pub struct TaskStatus {
    /// Task id.
    pub task_id: String,
    /// waiting | in_progress | completed | failed.
    pub status: String,
    /// User.
    pub user_id: String,
    /// Memories written (when completed).
    pub memories: Vec<AddedMemory>,
    /// Error (when failed).
    pub error: Option<String>,
}

/// Asynchronous tasks known to this process.
#[derive(Default)]
pub struct Tasks {
    inner: Mutex<HashMap<String, TaskStatus>>,
}

impl Tasks {
    fn set(&self, t: TaskStatus) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(t.task_id.clone(), t);
    }
    /// One task.
    pub fn get(&self, id: &str) -> Option<TaskStatus> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }
    /// All tasks, optionally of one user.
    pub fn list(&self, user: Option<&str>) -> Vec<TaskStatus> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.values()
            .filter(|t| user.is_none_or(|u| t.user_id == u))
            .cloned()
            .collect()
    }
    /// Tasks not finished.
    pub fn active(&self) -> usize {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.values()
            .filter(|t| t.status == "waiting" || t.status == "in_progress")
            .count()
    }
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
    pub tasks: Tasks,
}

/// Loads the configured embedder (fetching the local model first if allowed and missing).
pub fn load_embedder(cfg: &Config) -> Result<Arc<dyn Embedder>, PipelineError> {
    Ok(match cfg.embedder.kind.as_str() {
        "local" => {
            if !operators::embed::fetch::model_present(&cfg.model_dir) {
                if !cfg.auto_fetch_model {
                    return Err(PipelineError::Config(format!(
                        "no model in {} (run `memos model fetch`)",
                        cfg.model_dir.display()
                    )));
                }
                operators::embed::fetch::fetch_model(&cfg.model_dir, &|m| {
                    tracing::info!("model: {m}")
                })?;
            }
            Arc::new(LocalEmbedder::load(
                &cfg.model_dir,
                cfg.embedder.batch_size,
            )?)
        }
        "openai" => {
            if cfg.embedder.url.is_empty() {
                return Err(PipelineError::Config(
                    "embedder.url is required for kind = \"openai\"".into(),
                ));
            }
            let key = (!cfg.embedder.api_key.is_empty()).then(|| cfg.embedder.api_key.clone());
            Arc::new(OpenAiEmbedder::new(
                &cfg.embedder.url,
                &cfg.embedder.model,
                key,
                cfg.embedder.dimensions,
                Duration::from_secs(cfg.embedder.timeout_secs),
            )?)
        }
        "hash" => Arc::new(HashEmbedder::new(cfg.embedder.dimensions)),
        other => {
            return Err(PipelineError::Config(format!(
                "embedder.kind \"{other}\" is not local, openai or hash"
            )));
        }
    })
}

fn cube_list(
    primary: &Option<Vec<String>>,
    deprecated: &Option<String>,
    user: &Option<String>,
) -> Result<Vec<String>, PipelineError> {
    let mut cubes: Vec<String> = match (primary, deprecated, user) {
        (Some(c), _, _) if !c.is_empty() => c.clone(),
        (_, Some(c), _) => vec![c.clone()],
        (_, _, Some(u)) => vec![u.clone()],
        _ => {
            return Err(PipelineError::BadRequest(
                "user_id or cube ids are required".into(),
            ));
        }
    };
    let mut seen = std::collections::HashSet::new();
    cubes.retain(|c| seen.insert(c.clone()));
    for c in &cubes {
        store::validate_key_part("cube id", c)
            .map_err(|e| PipelineError::BadRequest(e.to_string()))?;
    }
    Ok(cubes)
}

impl Memos {
    /// Opens the store, loads the embedder and starts the pipeline.
    pub async fn start(
        cfg: Config,
    ) -> Result<(Arc<Memos>, tokio::task::JoinHandle<()>), PipelineError> {
        let c = cfg.clone();
        let (store, embedder) = tokio::task::spawn_blocking(move || -> Result<_, PipelineError> {
            let store = Arc::new(Store::open(&c.data_dir, c.store_options())?);
            let embedder = load_embedder(&c)?;
            Ok((store, embedder))
        })
        .await
        .map_err(|e| PipelineError::Unavailable(e.to_string()))??;
        Ok(Self::with_parts(cfg, store, embedder))
    }

    /// Starts the pipeline over an opened store and embedder.
    pub fn with_parts(
        cfg: Config,
        store: Arc<Store>,
        embedder: Arc<dyn Embedder>,
    ) -> (Arc<Memos>, tokio::task::JoinHandle<()>) {
        let (pipeline, task) = runtime::spawn(&cfg, store.clone(), embedder.clone());
        (
            Arc::new(Memos {
                cfg,
                store,
                embedder,
                pipeline,
                tasks: Tasks::default(),
            }),
            task,
        )
    }

    /// Builds the events of an add (one per writable cube).
    pub fn add_events(&self, req: &AddRequest) -> Result<Vec<Event>, PipelineError> {
        let user = req
            .user_id
            .clone()
            .ok_or_else(|| PipelineError::BadRequest("user_id is required".into()))?;
        let cubes = cube_list(&req.writable_cube_ids, &req.mem_cube_id, &req.user_id)?;
        let mut messages = req.messages.clone().unwrap_or(Value::Null);
        let mut extra_parts = Vec::new();
        if let Some(t) = &req.memory_content {
            extra_parts.push(json!({"type": "text", "text": t}));
        }
        if let Some(p) = &req.doc_path {
            extra_parts.push(json!({"type": "file", "file": {"path": p, "filename": p}}));
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
            return Err(PipelineError::TooLarge(format!(
                "{} messages in one add; the limit is {}",
                a.len(),
                self.cfg.limits.max_messages_per_add
            )));
        }
        let mut info: Map<String, Value> = req.info.clone().unwrap_or_default();
        if let Some(s) = &req.source {
            info.insert("source".into(), Value::String(s.clone()));
        }
        let mode = match req.mode.as_deref() {
            Some("fine") => Mode::Fine,
            None | Some("fast") => Mode::Fast,
            Some(o) => {
                return Err(PipelineError::BadRequest(format!(
                    "mode \"{o}\" is not fast or fine"
                )));
            }
        };
        let kind = if req.is_feedback {
            EventKind::Feedback
        } else {
            EventKind::Messages
        };
        let payload = if req.is_feedback {
            let text = operators::event::parse_messages(&messages)?
                .into_iter()
                .rev()
                .find(|m| m.role == "user")
                .map(|m| m.content)
                .unwrap_or_default();
            json!({"feedback_content": text, "history": messages})
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

    /// Adds synchronously: returns after the memories are committed.
    pub async fn add_sync(&self, events: Vec<Event>) -> Result<Vec<AddedMemory>, PipelineError> {
        let rxs = self.submit_all(events).await?;
        let mut out = Vec::new();
        for rx in rxs {
            let o = rx.await.map_err(|_| {
                PipelineError::Unavailable("the pipeline stopped before replying".into())
            })?;
            match o {
                Outcome::Stored { memories, .. } | Outcome::Duplicate { memories, .. } => {
                    out.extend(memories)
                }
                Outcome::DeadLettered { reason } => return Err(PipelineError::BadRequest(reason)),
                Outcome::Failed { reason } => return Err(PipelineError::Unavailable(reason)),
            }
        }
        Ok(out)
    }

    async fn submit_all(
        &self,
        events: Vec<Event>,
    ) -> Result<Vec<tokio::sync::oneshot::Receiver<Outcome>>, PipelineError> {
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
    ) -> Result<String, PipelineError> {
        let task_id = task_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        self.tasks.set(TaskStatus {
            task_id: task_id.clone(),
            status: "waiting".into(),
            user_id: user.into(),
            memories: vec![],
            error: None,
        });
        let rxs = self.submit_all(events).await?;
        let me = self.clone();
        let (tid, uid) = (task_id.clone(), user.to_string());
        tokio::spawn(async move {
            let mut st = TaskStatus {
                task_id: tid,
                status: "in_progress".into(),
                user_id: uid,
                memories: vec![],
                error: None,
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
    pub async fn embed_query(&self, q: &str) -> Result<Vec<f32>, PipelineError> {
        let e = self.embedder.clone();
        let q = q.to_string();
        let mut v = tokio::task::spawn_blocking(move || e.embed(&[q]))
            .await
            .map_err(|e| PipelineError::Unavailable(e.to_string()))??;
        v.pop()
            .ok_or_else(|| PipelineError::Unavailable("embedder returned nothing".into()))
    }

    /// MemOS search (§4): per cube, per bucket, hybrid retrieval. Returns the `data` object.
    pub async fn search(&self, req: &SearchRequest) -> Result<Value, PipelineError> {
        if req.query.trim().is_empty() {
            return Err(PipelineError::BadRequest("query is required".into()));
        }
        if req.query.chars().count() > self.cfg.limits.max_query_chars {
            return Err(PipelineError::TooLarge(format!(
                "query is longer than {} characters",
                self.cfg.limits.max_query_chars
            )));
        }
        if req.top_k == 0 || req.top_k > self.cfg.search.max_top_k {
            return Err(PipelineError::BadRequest(format!(
                "top_k must be 1..={}",
                self.cfg.search.max_top_k
            )));
        }
        let cubes = cube_list(&req.readable_cube_ids, &req.mem_cube_id, &req.user_id)?;
        let dedup = match req.dedup.as_deref() {
            None | Some("mmr") => Dedup::Mmr,
            Some("sim") => Dedup::Sim,
            Some("no") => Dedup::No,
            Some(o) => {
                return Err(PipelineError::BadRequest(format!(
                    "dedup \"{o}\" is not no, sim or mmr"
                )));
            }
        };
        let only_type = match req.search_memory_type.as_str() {
            "All" | "" => None,
            t => Some(MemoryType::parse(t).ok_or_else(|| {
                PipelineError::BadRequest(format!("search_memory_type \"{t}\" is unknown"))
            })?),
        };
        let filters: Vec<Filter> = cubes
            .iter()
            .map(|c| Filter::parse_for_cube(req.filter.as_ref().unwrap_or(&Value::Null), c, &cubes))
            .collect::<Result<_, _>>()?;
        let deadline = Instant::now() + Duration::from_millis(self.cfg.search.timeout_ms);
        let qv = tokio::time::timeout_at(deadline.into(), self.embed_query(&req.query))
            .await
            .map_err(|_| {
                PipelineError::Timeout(format!(
                    "search took longer than {} ms",
                    self.cfg.search.timeout_ms
                ))
            })??;
        let store = self.store.clone();
        let req2 = req.clone();
        let cfg = self.cfg.search.clone();
        let work = tokio::task::spawn_blocking(move || -> Result<Value, PipelineError> {
            let txn = store.read_txn()?;
            let mut buckets: HashMap<&str, Vec<Value>> = HashMap::new();
            let specs: [(&str, Vec<MemoryType>, usize, bool); 4] = [
                (
                    "text_mem",
                    vec![
                        MemoryType::WorkingMemory,
                        MemoryType::LongTermMemory,
                        MemoryType::UserMemory,
                        MemoryType::OuterMemory,
                        MemoryType::RawFileMemory,
                    ],
                    req2.top_k,
                    true,
                ),
                (
                    "pref_mem",
                    vec![MemoryType::PreferenceMemory],
                    req2.pref_top_k,
                    req2.include_preference,
                ),
                (
                    "tool_mem",
                    vec![
                        MemoryType::ToolSchemaMemory,
                        MemoryType::ToolTrajectoryMemory,
                    ],
                    req2.tool_mem_top_k,
                    req2.search_tool_memory,
                ),
                (
                    "skill_mem",
                    vec![MemoryType::SkillMemory],
                    req2.skill_mem_top_k,
                    req2.include_skill_memory,
                ),
            ];
            let mut pref_lines = Vec::new();
            for (cube, filter) in cubes.iter().zip(&filters) {
                // BM25 once per cube over every requested bucket, shared by the bucket searches.
                let wanted: Vec<MemoryType> = specs
                    .iter()
                    .filter(|(_, _, k, on)| *on && *k > 0)
                    .flat_map(|(_, t, _, _)| t.iter().copied())
                    .filter(|t| only_type.is_none_or(|o| o == *t))
                    .collect();
                let all = store.candidates(&txn, cube, Some(&wanted), filter)?;
                let lexical = store.bm25_scores(&txn, cube, &req2.query, &all)?;
                for (name, types, k, on) in &specs {
                    let types: Vec<MemoryType> = types
                        .iter()
                        .copied()
                        .filter(|t| only_type.is_none_or(|o| o == *t))
                        .collect();
                    let mut memories = Vec::new();
                    if *on && *k > 0 && !types.is_empty() {
                        let mut s = StoreSearch::new(cube, &req2.query, Some(&qv), *k, filter);
                        s.types = Some(&types);
                        s.session_id = req2.session_id.as_deref();
                        s.relativity = req2.relativity.unwrap_or(0.0);
                        s.dedup = dedup;
                        s.fusion = cfg.fusion;
                        s.session_boost = cfg.session_boost;
                        s.pool = cfg.pool;
                        s.vector_pool = cfg.vector_pool;
                        s.lexical = Some(&lexical);
                        s.within = Some(&all);
                        for h in search(&store, &txn, &s)? {
                            if *name == "pref_mem" {
                                pref_lines.push(h.record.memory.clone());
                            }
                            let extra = json!({"vector_score": h.vector_score, "lexical_score": h.lexical_score});
                            memories.push(format_item(
                                &h.record,
                                Some(h.score),
                                Some(extra),
                                req2.include_embedding,
                            ));
                        }
                    }
                    let n = memories.len();
                    buckets
                        .entry(name)
                        .or_default()
                        .push(json!({"cube_id": cube, "memories": memories, "total_nodes": n}));
                }
            }
            let note = "In addition to the user's explicit preferences listed above, follow them when answering.";
            let pref_string = if pref_lines.is_empty() {
                String::new()
            } else {
                let list: Vec<String> = pref_lines
                    .iter()
                    .enumerate()
                    .map(|(i, p)| format!("{}. {p}", i + 1))
                    .collect();
                format!("Explicit Preference:\n{}\n{note}", list.join("\n"))
            };
            let mut data = json!({"act_mem": [], "para_mem": [], "pref_note": if pref_lines.is_empty() { "" } else { note }, "pref_string": pref_string});
            for (name, v) in buckets {
                data[name] = Value::Array(v);
            }
            Ok(data)
        });
        tokio::time::timeout_at(deadline.into(), work)
            .await
            .map_err(|_| {
                PipelineError::Timeout(format!(
                    "search took longer than {} ms",
                    self.cfg.search.timeout_ms
                ))
            })?
            .map_err(|e| PipelineError::Unavailable(e.to_string()))?
    }

    /// MemOS delete (§1.3): exactly one of memory_ids, file_ids, or filter + quick constraints.
    pub async fn delete(&self, req: &DeleteRequest) -> Result<Value, PipelineError> {
        let session = match (&req.session_id, &req.conversation_id) {
            (Some(a), Some(b)) if a != b => {
                return Err(PipelineError::BadRequest(
                    "session_id and conversation_id differ".into(),
                ));
            }
            (a, b) => a.clone().or(b.clone()),
        };
        let has_filter = req.filter.as_ref().is_some_and(|f| !f.is_null())
            || req.user_id.is_some()
            || session.is_some();
        let modes =
            req.memory_ids.is_some() as u8 + req.file_ids.is_some() as u8 + has_filter as u8;
        if modes != 1 {
            return Err(PipelineError::BadRequest("give exactly one of memory_ids, file_ids, or filter (with user_id/session_id constraints)".into()));
        }
        let store = self.store.clone();
        let req = req.clone();
        tokio::task::spawn_blocking(move || -> Result<Value, PipelineError> {
            let mut wtxn = store.write_txn()?;
            let ids: Vec<String> = if let Some(ids) = &req.memory_ids {
                ids.clone()
            } else {
                let cubes = match (&req.writable_cube_ids, &req.mem_cube_id) {
                    (Some(c), _) => c.clone(),
                    (None, Some(c)) => vec![c.clone()],
                    (None, None) => store.cubes(&wtxn)?.into_iter().map(|c| c.cube_id).collect(),
                };
                let filter = if let Some(f) = &req.file_ids {
                    Filter::Cond {
                        field: "file_ids".into(),
                        op: store::filter::Op::In,
                        value: json!(f),
                    }
                } else {
                    let mut parts = vec![];
                    if let Some(f) = req.filter.as_ref().filter(|f| !f.is_null()) {
                        let f = Filter::parse(f)?;
                        if f.is_true() && req.user_id.is_none() && session.is_none() {
                            return Err(PipelineError::BadRequest(
                                "an empty filter would delete everything; refused".into(),
                            ));
                        }
                        parts.push(f);
                    }
                    if let Some(u) = &req.user_id {
                        parts.push(Filter::Cond {
                            field: "user_id".into(),
                            op: store::filter::Op::Eq,
                            value: json!(u),
                        });
                    }
                    if let Some(s) = &session {
                        parts.push(Filter::Cond {
                            field: "session_id".into(),
                            op: store::filter::Op::Eq,
                            value: json!(s),
                        });
                    }
                    Filter::And(parts)
                };
                let mut ids = Vec::new();
                for c in &cubes {
                    ids.extend(store.matching_ids(&wtxn, c, &filter)?);
                }
                ids
            };
            let receipt = store.delete(&mut wtxn, &ids)?;
            store.commit(wtxn)?;
            Ok(json!({"status": "success", "deleted": receipt.ids.len(), "receipt": receipt}))
        })
        .await
        .map_err(|e| PipelineError::Unavailable(e.to_string()))?
    }
}
