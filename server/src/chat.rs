//! Chat with memory (memos-spec §1.5): retrieve the user's memories (text, preference, tool),
//! build the system prompt, call the configured model, complete or stream, and optionally add
//! the exchange back as memory.

use std::sync::Arc;

use operators::llm::{ChatOptions, LlmClient, Msg, StreamItem};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use store::MemoryType;
use tokio::sync::mpsc;
use utoipa::ToSchema;

use crate::api::{AddRequest, FeedbackRequest, SearchRequest};
use crate::auth::{Access, Principal};
use crate::error::ServerError;
use crate::service::Memos;

/// `POST /product/chat/complete` and `/product/chat/stream` (MemOS `APIChatCompleteRequest` /
/// `ChatRequest`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ChatRequest {
    /// End user (required).
    pub user_id: Option<String>,
    /// The question (required).
    pub query: String,
    /// Cubes to read (fallback `[user_id]`).
    pub readable_cube_ids: Option<Vec<String>>,
    /// Cubes the exchange is added to (fallback `[user_id]`).
    pub writable_cube_ids: Option<Vec<String>>,
    /// Deprecated single cube.
    pub mem_cube_id: Option<String>,
    /// Knowledge bases to read as well.
    pub knowledgebase_ids: Option<Vec<String>>,
    /// Earlier messages (`{role, content}`), the last 20 are sent.
    #[schema(value_type = Option<Vec<Object>>)]
    pub history: Option<Vec<Value>>,
    /// Replaces the default system instructions (memories are still appended).
    pub system_prompt: Option<String>,
    /// Memories retrieved.
    pub top_k: usize,
    /// Session to prioritise and to add the exchange to.
    pub session_id: Option<String>,
    /// Use preferences.
    pub include_preference: bool,
    /// Preferences retrieved.
    pub pref_top_k: usize,
    /// A configured model name (default: `llm.chat`).
    #[serde(alias = "model_name")]
    pub model_name_or_path: Option<String>,
    /// Completion limit.
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// Add `[query, answer]` to the writable cubes afterwards.
    pub add_message_on_answer: bool,
    /// Search relativity threshold.
    pub relativity: Option<f32>,
    /// Memories scoring below this are left out (at least 3 are kept).
    pub threshold: f32,
    /// Search filter (§4.8).
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Value>,
    /// fast | fine | mixture.
    pub mode: Option<String>,
    /// Stamped on the added exchange as `info.manager_user_id`.
    pub manager_user_id: Option<String>,
    /// Stamped on the added exchange as `info.project_id`.
    pub project_id: Option<String>,
    /// Web results in the context (a 400 when no internet search endpoint is configured).
    pub internet_search: bool,
    /// MemOS's shared "MOS cube" (not supported: true is a 400).
    pub moscube: bool,
}

impl Default for ChatRequest {
    fn default() -> Self {
        ChatRequest {
            user_id: None,
            query: String::new(),
            readable_cube_ids: None,
            writable_cube_ids: None,
            mem_cube_id: None,
            knowledgebase_ids: None,
            history: None,
            system_prompt: None,
            top_k: 10,
            session_id: None,
            include_preference: true,
            pref_top_k: 6,
            model_name_or_path: None,
            max_tokens: None,
            temperature: None,
            top_p: None,
            add_message_on_answer: true,
            relativity: None,
            threshold: 0.5,
            filter: None,
            mode: None,
            manager_user_id: None,
            project_id: None,
            internet_search: false,
            moscube: false,
        }
    }
}

/// MemOS chat fields memos does not act on, refused by name (as `fields.rs` does for the rest).
fn check_chat(req: &ChatRequest, internet: bool) -> Result<(), ServerError> {
    if req.internet_search && !internet {
        return Err(crate::fields::refuse(
            "internet_search",
            "no internet search endpoint is configured ([search.internet])",
        ));
    }
    if req.moscube {
        return Err(crate::fields::refuse(
            "moscube",
            "MemOS's shared MOS cube is not supported; name the cubes in readable_cube_ids",
        ));
    }
    Ok(())
}

/// What a chat sends to the model, prepared.
pub struct ChatPlan {
    client: Option<Arc<LlmClient>>,
    /// Set when the local model answers (activation memory): prefix, cache and prompt rest.
    local: Option<pipelines::activation::LocalPlan>,
    /// The messages sent (system prompt with memories, history, the query).
    pub messages: Vec<Msg>,
    /// The memories used: `{id, memory, memory_type, cube_id, score}`.
    pub references: Vec<Value>,
    opts: ChatOptions,
    add: Option<AddRequest>,
}

const DEFAULT_SYSTEM: &str = "You are a helpful assistant with a long-term memory of the user. \
Answer the user's question. Use the memories below when they are relevant, prefer the most recent \
one when they disagree, and never claim to remember anything that is not listed.";

/// Splits `<think>…</think>` reasoning from an answer: (reasoning, answer).
pub fn split_think(text: &str) -> (Option<String>, String) {
    match (text.find("<think>"), text.find("</think>")) {
        (Some(a), Some(b)) if b > a => {
            let reasoning = text[a + 7..b].trim().to_string();
            let answer = format!("{}{}", &text[..a], &text[b + 8..])
                .trim()
                .to_string();
            (Some(reasoning), answer)
        }
        (None, Some(b)) => (
            Some(text[..b].trim().to_string()),
            text[b + 8..].trim().to_string(),
        ),
        _ => (None, text.trim().to_string()),
    }
}

/// Routes streamed text into reasoning and answer, across chunk boundaries.
#[derive(Debug, Default)]
pub struct ThinkSplitter {
    in_think: bool,
    pending: String,
}

impl ThinkSplitter {
    /// Feeds a chunk; returns `(kind, text)` pieces, kind `reasoning` or `text`.
    pub fn push(&mut self, chunk: &str) -> Vec<(&'static str, String)> {
        self.pending.push_str(chunk);
        let mut out = Vec::new();
        loop {
            let tag = if self.in_think { "</think>" } else { "<think>" };
            let kind = if self.in_think { "reasoning" } else { "text" };
            if let Some(i) = self.pending.find(tag) {
                let before: String = self.pending.drain(..i).collect();
                self.pending.drain(..tag.len());
                if !before.is_empty() {
                    out.push((kind, before));
                }
                self.in_think = !self.in_think;
                continue;
            }
            // Keep a suffix that may be the start of the tag.
            let keep = (1..tag.len())
                .rev()
                .find(|n| self.pending.ends_with(&tag[..*n]))
                .unwrap_or(0);
            let cut = self.pending.len() - keep;
            if cut > 0 {
                let text: String = self.pending.drain(..cut).collect();
                out.push((kind, text));
            }
            return out;
        }
    }

    /// Whatever is left at the end.
    pub fn finish(&mut self) -> Option<(&'static str, String)> {
        let kind = if self.in_think { "reasoning" } else { "text" };
        (!self.pending.is_empty()).then(|| (kind, std::mem::take(&mut self.pending)))
    }
}

fn llm_error(e: operators::OperatorError) -> ServerError {
    match e {
        operators::OperatorError::Invalid(m) => ServerError::BadRequest(m),
        other => ServerError::Unavailable(format!("LLM: {other}")),
    }
}

impl Memos {
    /// Who answers: the local model when the request names it, or when no LLM is configured
    /// (first); else the named or default LLM (second). 503 without either.
    #[allow(clippy::type_complexity)]
    fn chat_answerer(
        &self,
        req: &ChatRequest,
    ) -> Result<
        (
            Option<Arc<pipelines::activation::Activation>>,
            Option<Arc<LlmClient>>,
        ),
        ServerError,
    > {
        let local = self
            .activation
            .clone()
            .filter(|a| match req.model_name_or_path.as_deref() {
                Some(n) => n == a.config().chat_model,
                None => !self.llm.is_configured(),
            });
        if local.is_some() {
            return Ok((local, None));
        }
        if !self.llm.is_configured() {
            return Err(ServerError::Unavailable(
                "no LLM is configured: add [[llm.models]] to the config (or set MEMOS_LLM_URL and MEMOS_LLM_MODEL), or enable [activation] for the local model".into(),
            ));
        }
        let client = self
            .llm
            .chat_model(req.model_name_or_path.as_deref())
            .map_err(llm_error)?;
        Ok((None, Some(client)))
    }

    /// The local model's plan: the cube's activated memories as the cached prefix (the first
    /// readable cube, else the user's); the caller fills the prompt's rest.
    async fn local_plan(
        &self,
        a: Arc<pipelines::activation::Activation>,
        cube: String,
        user: &str,
        system: Option<String>,
        p: &Principal,
    ) -> Result<pipelines::activation::LocalPlan, ServerError> {
        p.check(Access::Read, std::slice::from_ref(&cube), Some(user))?;
        p.check_whole_cube("the local model's cached memory prefix")?;
        let system = system.unwrap_or_else(|| a.config().system.clone());
        let a2 = a.clone();
        let (prefix, cache) = self
            .blocking(move |store| {
                let txn = store.read_txn()?;
                let sel = a2.selection(store, &txn, &cube)?;
                let prefix = a2.compose(&system, &sel)?;
                let cache = a2.cached(store, &txn, &cube, &prefix)?;
                Ok((prefix, cache))
            })
            .await?;
        Ok(pipelines::activation::LocalPlan {
            act: a,
            prefix,
            cache,
            suffix: String::new(),
        })
    }

    /// MemOS `suggestions`: three follow-up questions from the cube's most recent memories
    /// (and the conversation so far), in Chinese or English. 503 without an LLM.
    pub async fn suggest(
        &self,
        cube: &str,
        user: &str,
        zh: bool,
        conversation: &str,
        p: &Principal,
    ) -> Result<Vec<String>, ServerError> {
        if !self.llm.is_configured() {
            return Err(ServerError::Unavailable(
                "no LLM is configured: add [[llm.models]] to the config (or set MEMOS_LLM_URL and MEMOS_LLM_MODEL)".into(),
            ));
        }
        let client = self.llm.chat_model(None)?;
        let filter =
            store::Filter::parse_for_cube(&json!({"user_id": user}), cube, &[cube.to_string()])?;
        let (mut recent, _) = self
            .export(
                cube,
                filter,
                store::Bucket::Text.types(),
                Some((1, 10_000)),
                p,
            )
            .await?;
        recent.sort_by_key(|r| std::cmp::Reverse(r.updated_at));
        let memories: Vec<String> = recent
            .iter()
            .take(20)
            .map(|r| format!("- {}", r.memory))
            .collect();
        let language = if zh { "Chinese" } else { "English" };
        let system = format!(
            "Suggest three short questions the user might ask next, about themselves and what \
             they told you, in {language}. Use the memories and the conversation. Answer with \
             JSON only: {{\"query\": [\"question 1\", \"question 2\", \"question 3\"]}}."
        );
        let user_msg = format!(
            "Memories:\n{}\n\nConversation:\n{}",
            memories.join("\n"),
            if conversation.is_empty() {
                "(none)"
            } else {
                conversation
            }
        );
        let opts = ChatOptions {
            max_tokens: Some(256),
            temperature: Some(0.7),
            top_p: None,
        };
        let (v, _) = client
            .complete_json(
                &[Msg::new("system", system), Msg::new("user", user_msg)],
                &opts,
            )
            .await?;
        let list = v.get("query").and_then(Value::as_array).ok_or_else(|| {
            ServerError::Unavailable(format!(
                "suggestions: the model answered {v}, not {{\"query\": [...]}}"
            ))
        })?;
        Ok(list
            .iter()
            .filter_map(Value::as_str)
            .map(|q| q.trim().to_string())
            .filter(|q| !q.is_empty())
            .take(3)
            .collect())
    }

    /// `corrected_answer` on feedback: it needs the chat model and a sync request (the answer
    /// comes back with the feedback); otherwise a 400 naming it.
    pub fn can_correct_answers(&self, sync: bool) -> Result<(), ServerError> {
        if self.llm.chat_model(None).is_err() {
            return Err(ServerError::BadRequest(
                "corrected_answer: needs an LLM, and none is configured".into(),
            ));
        }
        if !sync {
            return Err(ServerError::BadRequest(
                "corrected_answer: needs async_mode sync (the answer is returned with the feedback)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// MemOS `corrected_answer`: the chat model rewrites the assistant's last answer in the
    /// feedback's history so that it follows the feedback.
    pub async fn corrected_answer(&self, req: &FeedbackRequest) -> Result<String, ServerError> {
        let client = self
            .llm
            .chat_model(None)
            .map_err(|e| ServerError::BadRequest(format!("corrected_answer: {e}")))?;
        let mut messages = vec![Msg::new(
            "system",
            "The user gave feedback on your last answer. Write the corrected answer: follow the \
             feedback, keep what it does not contradict, answer in the user's language. Answer \
             with the corrected answer only.",
        )];
        if let Some(h) = req.history.as_ref().filter(|h| !h.is_null()) {
            let turns = operators::event::parse_messages(h)
                .map_err(|e| ServerError::BadRequest(format!("history: {e}")))?;
            for t in turns.iter().rev().take(20).rev() {
                let role = if t.role == "assistant" {
                    "assistant"
                } else {
                    "user"
                };
                messages.push(Msg::new(role, t.content.as_str()));
            }
        }
        messages.push(Msg::new(
            "user",
            format!(
                "Feedback: {}",
                req.feedback_content.as_deref().unwrap_or_default()
            ),
        ));
        let opts = ChatOptions {
            max_tokens: Some(512),
            temperature: Some(0.2),
            top_p: None,
        };
        let c = client.complete(&messages, &opts).await?;
        Ok(split_think(&c.text).1)
    }

    /// Retrieval and prompt for a chat; 503 without an LLM, 400 for an unknown model.
    pub async fn chat_plan(
        &self,
        req: &ChatRequest,
        p: &Principal,
    ) -> Result<ChatPlan, ServerError> {
        check_chat(req, !self.cfg.search.internet.url.is_empty())?;
        let (local, client) = self.chat_answerer(req)?;
        let user = req
            .user_id
            .clone()
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| ServerError::BadRequest("user_id is required".into()))?;
        if req.query.trim().is_empty() {
            return Err(ServerError::BadRequest("query is required".into()));
        }
        let readable = match (&req.readable_cube_ids, &req.mem_cube_id) {
            (Some(c), _) if !c.is_empty() => Some(c.clone()),
            (_, Some(c)) => Some(vec![c.clone()]),
            _ => None,
        };
        let base = req.system_prompt.clone().filter(|s| !s.trim().is_empty());
        let local = match local {
            Some(a) => {
                let cube = readable
                    .as_ref()
                    .and_then(|c| c.first().cloned())
                    .unwrap_or_else(|| user.clone());
                Some(self.local_plan(a, cube, &user, base.clone(), p).await?)
            }
            None => None,
        };
        let search = SearchRequest {
            query: req.query.clone(),
            user_id: Some(user.clone()),
            readable_cube_ids: readable,
            knowledgebase_ids: req.knowledgebase_ids.clone(),
            session_id: req.session_id.clone(),
            top_k: req.top_k.clamp(1, self.cfg.search.max_top_k),
            relativity: req.relativity,
            include_preference: req.include_preference,
            pref_top_k: req.pref_top_k,
            search_tool_memory: true,
            tool_mem_top_k: 3,
            include_skill_memory: false,
            filter: req.filter.clone(),
            mode: req.mode.clone().unwrap_or_else(|| "fast".into()),
            internet_search: req.internet_search,
            ..Default::default()
        };
        let hits = self.search_hits(&search, p).await?;
        let (context, references) =
            memory_context(&hits, local.as_ref().map(|l| &l.prefix), req.threshold);
        let system = format!(
            "{}{context}",
            base.unwrap_or_else(|| DEFAULT_SYSTEM.to_string())
        );
        let messages = conversation(
            system,
            req.history.as_deref().unwrap_or_default(),
            &req.query,
        )?;
        let local = local.map(|mut l| {
            let turns: Vec<(String, String)> = messages[1..]
                .iter()
                .map(|m| (m.role.clone(), m.content.clone()))
                .collect();
            l.suffix = activation::lm::chat_suffix(context.trim_start(), &turns);
            l
        });
        let add = if req.add_message_on_answer {
            let cubes =
                crate::api::cube_list(&req.writable_cube_ids, &req.mem_cube_id, &req.user_id)?;
            p.check(Access::Write, &cubes, Some(&user))?;
            Some(AddRequest {
                user_id: Some(user),
                writable_cube_ids: Some(cubes),
                session_id: req.session_id.clone(),
                manager_user_id: req.manager_user_id.clone(),
                project_id: req.project_id.clone(),
                ..Default::default()
            })
        } else {
            None
        };
        Ok(ChatPlan {
            client,
            local,
            messages,
            references,
            opts: ChatOptions {
                max_tokens: req.max_tokens,
                temperature: req.temperature,
                top_p: req.top_p,
            },
            add,
        })
    }

    /// Adds `[query, answer]` as memory in the background (fast, async): the chat's answer is
    /// not delayed by it. Returns the task id.
    async fn add_exchange(
        self: &Arc<Self>,
        add: Option<AddRequest>,
        query: &str,
        answer: &str,
        p: &Principal,
    ) -> Result<Option<String>, ServerError> {
        let Some(mut add) = add else {
            return Ok(None);
        };
        if answer.trim().is_empty() {
            return Ok(None);
        }
        add.messages = Some(json!([
            {"role": "user", "content": query},
            {"role": "assistant", "content": answer},
        ]));
        let user = add.user_id.clone().unwrap_or_default();
        let events = self.add_events(&add, p)?;
        Ok(Some(self.add_async(events, None, &user).await?))
    }

    /// [`Memos::add_exchange`] for streams, where a failure can only be logged: the answer
    /// was already sent.
    async fn add_exchange_logged(
        self: &Arc<Self>,
        add: Option<AddRequest>,
        query: &str,
        answer: &str,
        p: &Principal,
    ) -> Option<String> {
        self.add_exchange(add, query, answer, p)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "chat: adding the exchange failed");
                None
            })
    }

    /// Chat, complete: `{response, reasoning, references, usage, task_id}`.
    pub async fn chat_complete(
        self: &Arc<Self>,
        req: &ChatRequest,
        p: &Principal,
    ) -> Result<Value, ServerError> {
        let mut plan = self.chat_plan(req, p).await?;
        if let Some(local) = plan.local.take() {
            let max_new = local_max_new(req, &local);
            let metrics = self.metrics.clone();
            let (local, g) = tokio::task::spawn_blocking(move || {
                let g = local.run(&metrics, max_new, |_| {});
                (local, g)
            })
            .await
            .map_err(|e| ServerError::Unavailable(e.to_string()))?;
            let g = g?;
            let response = g.text.trim().to_string();
            let task = self
                .add_exchange(plan.add, &req.query, &response, p)
                .await?;
            return Ok(json!({
                "response": response,
                "reasoning": null,
                "references": plan.references,
                "usage": local_usage(&g),
                "model": local.act.config().chat_model,
                "ttft_ms": g.ttft.as_secs_f64() * 1000.0,
                "task_id": task,
            }));
        }
        let client = remote(&plan)?;
        let c = client
            .complete(&plan.messages, &plan.opts)
            .await
            .map_err(llm_error)?;
        let (reasoning, response) = split_think(&c.text);
        let task = self
            .add_exchange(plan.add, &req.query, &response, p)
            .await?;
        Ok(json!({
            "response": response,
            "reasoning": reasoning,
            "references": plan.references,
            "usage": {"prompt_tokens": c.usage.prompt_tokens, "completion_tokens": c.usage.completion_tokens},
            "model": client.name(),
            "task_id": task,
        }))
    }

    /// Chat, streamed: MemOS SSE payloads — `{"type":"reference","data":[…]}` first, then
    /// `{"type":"reasoning"|"text","data":chunk}`, and `{"type":"end","data":{usage,task_id}}`
    /// or `{"type":"error","content":…}`.
    pub async fn chat_stream(
        self: &Arc<Self>,
        req: &ChatRequest,
        p: &Principal,
    ) -> Result<mpsc::Receiver<Value>, ServerError> {
        let mut plan = self.chat_plan(req, p).await?;
        if let Some(local) = plan.local.take() {
            return Ok(self.local_stream(local, plan, req, p));
        }
        let mut rx = remote(&plan)?
            .stream(&plan.messages, &plan.opts)
            .await
            .map_err(llm_error)?;
        let (tx, out) = mpsc::channel(64);
        let memos = self.clone();
        let p = p.clone();
        let query = req.query.clone();
        tokio::spawn(async move {
            let _ = tx
                .send(json!({"type": "reference", "data": plan.references}))
                .await;
            let mut split = ThinkSplitter::default();
            let mut answer = String::new();
            while let Some(item) = rx.recv().await {
                match item {
                    Ok(StreamItem::Text(t)) => {
                        for (kind, piece) in split.push(&t) {
                            if kind == "text" {
                                answer.push_str(&piece);
                            }
                            let _ = tx.send(json!({"type": kind, "data": piece})).await;
                        }
                    }
                    Ok(StreamItem::Done(usage)) => {
                        if let Some((kind, piece)) = split.finish() {
                            if kind == "text" {
                                answer.push_str(&piece);
                            }
                            let _ = tx.send(json!({"type": kind, "data": piece})).await;
                        }
                        let task = memos
                            .add_exchange_logged(plan.add.clone(), &query, answer.trim(), &p)
                            .await;
                        let _ = tx
                            .send(json!({"type": "end", "data": {"usage": usage, "task_id": task}}))
                            .await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx
                            .send(json!({"type": "error", "content": e.to_string()}))
                            .await;
                        return;
                    }
                }
            }
        });
        Ok(out)
    }
}

impl Memos {
    /// The local model's answer, streamed in the same SSE payloads as a remote model's.
    fn local_stream(
        self: &Arc<Self>,
        local: pipelines::activation::LocalPlan,
        plan: ChatPlan,
        req: &ChatRequest,
        p: &Principal,
    ) -> mpsc::Receiver<Value> {
        let (tx, out) = mpsc::channel(64);
        let memos = self.clone();
        let p = p.clone();
        let query = req.query.clone();
        let max_new = local_max_new(req, &local);
        tokio::spawn(async move {
            let _ = tx
                .send(json!({"type": "reference", "data": plan.references}))
                .await;
            let tokens = tx.clone();
            let metrics = memos.metrics.clone();
            let res = tokio::task::spawn_blocking(move || {
                local.run(&metrics, max_new, |t| {
                    let _ = tokens.blocking_send(json!({"type": "text", "data": t}));
                })
            })
            .await;
            let g = match res
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
            {
                Ok(g) => g,
                Err(e) => {
                    let _ = tx.send(json!({"type": "error", "content": e})).await;
                    return;
                }
            };
            let task = memos
                .add_exchange_logged(plan.add, &query, g.text.trim(), &p)
                .await;
            let _ = tx
                .send(
                    json!({"type": "end", "data": {"usage": local_usage(&g), "task_id": task,
                    "ttft_ms": g.ttft.as_secs_f64() * 1000.0}}),
                )
                .await;
        });
        out
    }
}

fn remote(plan: &ChatPlan) -> Result<Arc<LlmClient>, ServerError> {
    plan.client
        .clone()
        .ok_or_else(|| ServerError::Unavailable("no chat model".into()))
}

/// The memory part of the system prompt — memories (those above `threshold`, at least three;
/// none already in the local model's cached `local` prefix), preferences, tool experience — and
/// the references the answer cites.
fn memory_context(
    hits: &crate::service::SearchHits,
    local: Option<&pipelines::activation::Prefix>,
    threshold: f32,
) -> (String, Vec<Value>) {
    let mut personal: Vec<&store::search::Hit> = hits
        .buckets
        .iter()
        .filter(|b| b.name == "text_mem")
        .flat_map(|b| b.hits.iter())
        .filter(|h| h.record.memory_type != MemoryType::OuterMemory)
        .collect();
    personal.sort_by(|a, b| b.score.total_cmp(&a.score));
    let above = personal.iter().filter(|h| h.score >= threshold).count();
    personal.truncate(above.max(3));
    let tools: Vec<&store::search::Hit> = hits
        .buckets
        .iter()
        .filter(|b| b.name == "tool_mem")
        .flat_map(|b| b.hits.iter())
        .collect();
    // Memories already in the local model's cached prefix are not repeated.
    if let Some(prefix) = local {
        personal.retain(|h| !prefix.memory_ids.contains(&h.record.id));
    }
    let mut system = String::new();
    system.push_str(&format!(
        "\n\nCurrent time: {}.",
        store::time::micros_to_rfc3339(store::time::now_micros())
    ));
    let mut references = Vec::new();
    if !personal.is_empty() {
        system.push_str("\n\n# Memories\n");
        for (i, h) in personal.iter().enumerate() {
            let when = h
                .record
                .event_time
                .map(|t| format!("[{}] ", store::time::micros_to_rfc3339(t)))
                .unwrap_or_default();
            system.push_str(&format!("{}. {when}{}\n", i + 1, h.record.memory));
            references.push(json!({"id": h.record.id, "memory": h.record.memory,
                "memory_type": h.record.memory_type.as_str(), "cube_id": h.record.cube_id,
                "score": h.score}));
        }
    }
    if !hits.pref_string.is_empty() {
        system.push_str("\n# Preferences\n");
        system.push_str(&hits.pref_string);
        system.push('\n');
    }
    if !tools.is_empty() {
        system.push_str("\n# Tool experience\n");
        for h in &tools {
            system.push_str(&format!("- {}\n", h.record.memory));
        }
    }
    (system, references)
}

/// The messages sent to the model: the system prompt, the last 20 turns of `history` (roles
/// checked), the question.
fn conversation(system: String, history: &[Value], query: &str) -> Result<Vec<Msg>, ServerError> {
    let mut messages = vec![Msg::new("system", system)];
    let skip = history.len().saturating_sub(20);
    for (i, m) in history.iter().enumerate().skip(skip) {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        if !matches!(role, "user" | "assistant" | "system") {
            return Err(ServerError::BadRequest(format!(
                "history[{i}].role must be user, assistant or system"
            )));
        }
        let content = m.get("content").and_then(Value::as_str).ok_or_else(|| {
            ServerError::BadRequest(format!("history[{i}].content must be a string"))
        })?;
        messages.push(Msg::new(role, content));
    }
    messages.push(Msg::new("user", query.to_string()));
    Ok(messages)
}

fn local_max_new(req: &ChatRequest, local: &pipelines::activation::LocalPlan) -> usize {
    req.max_tokens
        .map(|m| m as usize)
        .unwrap_or(local.act.config().max_new_tokens)
}

fn local_usage(g: &activation::Generation) -> Value {
    json!({"prompt_tokens": g.prompt_tokens + g.cached_tokens,
        "completion_tokens": g.tokens.len(), "cached_tokens": g.cached_tokens})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn think_is_split_from_the_answer() {
        assert_eq!(
            split_think("<think>hmm</think> Paris."),
            (Some("hmm".into()), "Paris.".into())
        );
        assert_eq!(split_think("Paris."), (None, "Paris.".into()));
        let mut s = ThinkSplitter::default();
        let mut got = Vec::new();
        for c in ["<thi", "nk>let me", " see</th", "ink>The ans", "wer"] {
            got.extend(s.push(c));
        }
        got.extend(s.finish());
        let reasoning: String = got
            .iter()
            .filter(|(k, _)| *k == "reasoning")
            .map(|(_, t)| t.as_str())
            .collect();
        let text: String = got
            .iter()
            .filter(|(k, _)| *k == "text")
            .map(|(_, t)| t.as_str())
            .collect();
        assert_eq!(
            (reasoning.as_str(), text.as_str()),
            ("let me see", "The answer")
        );
    }
}
