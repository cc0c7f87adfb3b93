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

/// Cloud `POST chat` (the SDK's `chat`).
#[derive(Debug, Clone, Deserialize, Default, ToSchema)]
#[serde(default)]
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
