//! Chat routes: `/product/chat/complete`, `/product/chat/stream` (server-sent events) and the
//! cloud `chat` (complete, or SSE with `stream: true`).

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use utoipa::ToSchema;

use super::{AppState, Body};
use crate::auth::Principal;
use crate::chat::ChatRequest;
use crate::error::ServerError;

type P = Extension<Arc<Principal>>;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/product/chat/complete", post(complete))
        .route("/product/chat/stream", post(stream))
        .route("/product/chat/stream/playground", post(stream_playground))
        .route("/api/openmem/v1/chat", post(cloud_chat))
}

fn count(m: &crate::service::Memos, interface: &str, r: &Result<impl Sized, ServerError>) {
    let outcome = if r.is_ok() { "ok" } else { "error" };
    m.metrics
        .chats
        .with_label_values(&[interface, outcome])
        .inc();
}

fn sse(rx: mpsc::Receiver<Value>) -> Response {
    let events = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|v| {
            (
                Ok::<_, Infallible>(Event::default().data(v.to_string())),
                rx,
            )
        })
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Answers with the user's memories in the prompt: `{response, reasoning, references, usage,
/// model, task_id}`. 503 when no LLM is configured.
#[utoipa::path(post, path = "/product/chat/complete", tag = "chat", request_body = ChatRequest,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 403, body = crate::api::Envelope), (status = 503, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn complete(
    State(m): State<AppState>,
    Extension(p): P,
    Body(req): Body<ChatRequest>,
) -> Result<Json<Value>, ServerError> {
    let r = m.chat_complete(&req, &p).await;
    count(&m, "complete", &r);
    Ok(Json(
        json!({"code": 200, "message": "Chat completed", "data": r?}),
    ))
}

/// The same, streamed as server-sent events: `data: {"type": "reference"|"reasoning"|"text"|
/// "end"|"error", …}`.
#[utoipa::path(post, path = "/product/chat/stream", tag = "chat", request_body = ChatRequest,
    responses((status = 200, description = "text/event-stream"), (status = 400, body = crate::api::Envelope),
        (status = 503, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn stream(
    State(m): State<AppState>,
    Extension(p): P,
    Body(req): Body<ChatRequest>,
) -> Result<Response, ServerError> {
    let r = m.chat_stream(&req, &p).await;
    count(&m, "stream", &r);
    Ok(sse(r?))
}

/// MemOS's playground stream: the same chat with the playground's extra events —
/// `{"type": "status", "data": "0"}` (started), `"1"` (memories retrieved, then the
/// `reference` event and `pref_md_string`: the preferences used, as a Markdown list), `"2"`
/// (answering), the `reasoning`/`text` chunks, `{"type": "time", "data": {"total_time",
/// "speed_improvement"}}` and `end`. The body is `ChatRequest` plus `beginner_guide_step`
/// (the playground's guided tour: not supported, a 400 when set).
#[utoipa::path(post, path = "/product/chat/stream/playground", tag = "chat", request_body = ChatRequest,
    responses((status = 200, description = "text/event-stream"), (status = 400, body = crate::api::Envelope),
        (status = 503, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn stream_playground(
    State(m): State<AppState>,
    Extension(p): P,
    Body(mut body): Body<Value>,
) -> Result<Response, ServerError> {
    if let Some(step) = body
        .as_object_mut()
        .and_then(|o| o.remove("beginner_guide_step"))
        .filter(|v| !v.is_null())
    {
        return Err(ServerError::BadRequest(format!(
            "beginner_guide_step: the playground's guided tour is not supported (got {step})"
        )));
    }
    let req: ChatRequest =
        serde_json::from_value(body).map_err(|e| ServerError::BadRequest(e.to_string()))?;
    let started = std::time::Instant::now();
    let r = m.chat_stream(&req, &p).await;
    count(&m, "stream", &r);
    let mut inner = r?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let _ = tx.send(json!({"type": "status", "data": "0"})).await;
        while let Some(ev) = inner.recv().await {
            match ev["type"].as_str() {
                Some("reference") => {
                    let prefs: Vec<String> = ev["data"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|r| r["memory_type"] == "PreferenceMemory")
                        .filter_map(|r| r["memory"].as_str().map(|t| format!("- {t}")))
                        .collect();
                    let _ = tx.send(json!({"type": "status", "data": "1"})).await;
                    let _ = tx.send(ev).await;
                    let _ = tx
                        .send(json!({"type": "pref_md_string", "data": prefs.join("\n")}))
                        .await;
                    let _ = tx.send(json!({"type": "status", "data": "2"})).await;
                }
                Some("end") => {
                    let total = started.elapsed().as_secs_f64();
                    let _ = tx
                        .send(json!({"type": "time", "data": {"total_time": total, "speed_improvement": "0%"}}))
                        .await;
                    let _ = tx.send(ev).await;
                }
                _ => {
                    let _ = tx.send(ev).await;
                }
            }
        }
    });
    Ok(sse(rx))
}

/// Cloud `POST chat` (the SDK's `chat`).
#[derive(Debug, Clone, Deserialize, Default, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CloudChatRequest {
    /// User (required).
    pub user_id: Option<String>,
    /// Conversation.
    pub conversation_id: Option<String>,
    /// Question (required).
    pub query: String,
    /// System prompt.
    pub system_prompt: Option<String>,
    /// Configured model name.
    pub model_name: Option<String>,
    /// Knowledge bases to read.
    pub knowledgebase_ids: Option<Vec<String>>,
    /// Filter.
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Value>,
    /// Add the exchange as memory (default true).
    pub add_message_on_answer: Option<bool>,
    /// Completion limit.
    pub max_tokens: Option<u32>,
    /// Temperature.
    pub temperature: Option<f32>,
    /// Top-p.
    pub top_p: Option<f32>,
    /// Use preferences (default true).
    pub include_preference: Option<bool>,
    /// Preferences retrieved.
    pub preference_limit_number: Option<usize>,
    /// Memories retrieved.
    pub memory_limit_number: Option<usize>,
    /// Server-sent events instead of one answer.
    pub stream: bool,
    /// Relativity threshold.
    pub relativity: Option<f32>,
    /// Web results (a 400 when no internet search endpoint is configured).
    pub internet_search: Option<bool>,
    /// Stop a running answer: not supported, true is a 400.
    pub force_stop: Option<bool>,
    /// MemOS's shared MOS cube: not supported, true is a 400.
    pub use_mem_os_cube: Option<bool>,
    /// MemOS's plugin retrieval path: not supported, a 400 when set.
    pub source: Option<String>,
    /// Not supported for chat: a 400 when set.
    pub app_id: Option<String>,
    /// Not supported for chat: a 400 when set.
    pub agent_id: Option<String>,
    /// The exchange is added asynchronously (default true); false is a 400.
    pub async_mode: Option<bool>,
    /// Not supported for chat: a 400 when set.
    pub tags: Option<Vec<String>>,
    /// Not supported for chat: a 400 when set.
    #[schema(value_type = Option<Object>)]
    pub info: Option<serde_json::Map<String, Value>>,
    /// Public memory: not supported, true is a 400.
    pub allow_public: Option<bool>,
    /// Not supported for chat: a non-empty list is a 400.
    pub allow_knowledgebase_ids: Option<Vec<String>>,
    /// Tool memory in the context: not supported for chat, true is a 400.
    pub include_tool_memory: Option<bool>,
    /// Tool memories wanted (with include_tool_memory).
    pub tool_memory_limit_number: Option<usize>,
}

impl CloudChatRequest {
    /// The SDK sends every field; those memos does not act on are refused by name when set.
    fn check(&self) -> Result<(), ServerError> {
        let refuse = |f: &str, why: &str| Err(crate::fields::refuse(f, why));
        if self.use_mem_os_cube == Some(true) {
            return refuse(
                "use_mem_os_cube",
                "MemOS's shared MOS cube is not supported; name knowledge bases in knowledgebase_ids",
            );
        }
        if self.force_stop == Some(true) {
            return refuse("force_stop", "stopping a running answer is not supported");
        }
        if self.source.is_some() {
            return refuse(
                "source",
                "MemOS's plugin path is not supported; omit source",
            );
        }
        if self.async_mode == Some(false) {
            return refuse("async_mode", "the exchange is always added asynchronously");
        }
        if self.allow_public == Some(true) {
            return refuse("allow_public", "public memory is not supported");
        }
        if self.include_tool_memory == Some(true) {
            return refuse("include_tool_memory", "chat does not use tool memory");
        }
        let unused = [
            ("app_id", self.app_id.is_some()),
            ("agent_id", self.agent_id.is_some()),
            ("tags", self.tags.as_ref().is_some_and(|t| !t.is_empty())),
            ("info", self.info.as_ref().is_some_and(|i| !i.is_empty())),
            (
                "allow_knowledgebase_ids",
                self.allow_knowledgebase_ids
                    .as_ref()
                    .is_some_and(|k| !k.is_empty()),
            ),
        ];
        if let Some((f, _)) = unused.iter().find(|(_, set)| *set) {
            return refuse(f, "not supported for chat; omit it");
        }
        Ok(())
    }
}

/// Cloud chat: `{response}` or SSE.
#[utoipa::path(post, path = "/api/openmem/v1/chat", tag = "cloud", request_body = CloudChatRequest,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 503, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn cloud_chat(
    State(m): State<AppState>,
    Extension(p): P,
    Body(req): Body<CloudChatRequest>,
) -> Result<Response, ServerError> {
    req.check()?;
    let c = ChatRequest {
        user_id: req.user_id.clone(),
        query: req.query.clone(),
        session_id: req.conversation_id.clone(),
        system_prompt: req.system_prompt.clone(),
        model_name_or_path: req.model_name.clone(),
        knowledgebase_ids: req.knowledgebase_ids.clone(),
        filter: req.filter.clone(),
        add_message_on_answer: req.add_message_on_answer.unwrap_or(true),
        max_tokens: req.max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        include_preference: req.include_preference.unwrap_or(true),
        pref_top_k: req.preference_limit_number.unwrap_or(6),
        top_k: req.memory_limit_number.unwrap_or(6),
        relativity: req.relativity,
        internet_search: req.internet_search.unwrap_or(false),
        ..Default::default()
    };
    if req.stream {
        let r = m.chat_stream(&c, &p).await;
        count(&m, "cloud", &r);
        return Ok(sse(r?));
    }
    let r = m.chat_complete(&c, &p).await;
    count(&m, "cloud", &r);
    let v = r?;
    Ok(super::cloud::ok(
        json!({"response": v["response"], "reasoning": v["reasoning"],
        "references": v["references"]}),
    )
    .into_response())
}
