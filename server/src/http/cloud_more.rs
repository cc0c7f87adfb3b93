//! Cloud routes beyond the SDK's core: `update/memory` and `get/message` (memos-spec §1.6).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use store::{Filter, MemoryType, Status};
use utoipa::ToSchema;

use super::cloud::ok;
use super::{AppState, Body};
use crate::auth::{Access, Principal};
use crate::error::ServerError;

type P = Extension<Arc<Principal>>;
type R = Result<Json<Value>, ServerError>;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/update/memory", post(update_memory))
        .route("/get/message", post(get_message))
}

/// Cloud `POST update/memory` (SDK `update_memory(memory_id, content, title, status)`).
#[derive(Debug, Clone, Serialize, Deserialize, Default, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CloudUpdateRequest {
    /// Memory (required).
    pub memory_id: Option<String>,
    /// New text (re-embedded; the old text stays in the history).
    pub content: Option<String>,
    /// New title (the memory's key).
    pub title: Option<String>,
    /// `activated` or `archived`.
    pub status: Option<String>,
}

/// Updates a memory's text, title or status (at least one): a new version, the old one kept in
/// its history. `{success, memory_id, version}`.
#[utoipa::path(post, path = "/api/openmem/v1/update/memory", tag = "cloud", request_body = CloudUpdateRequest,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 403, body = crate::api::Envelope), (status = 404, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn update_memory(
    State(m): State<AppState>,
    Extension(p): P,
    Body(req): Body<CloudUpdateRequest>,
) -> R {
    let id = req
        .memory_id
        .clone()
        .ok_or_else(|| ServerError::BadRequest("memory_id is required".into()))?;
    let status = match req.status.as_deref() {
        None => None,
        Some("activated") => Some(Status::Activated),
        Some("archived") => Some(Status::Archived),
        Some(o) => {
            return Err(ServerError::BadRequest(format!(
                "status: \"{o}\" is not activated or archived"
            )));
        }
    };
    if req.content.is_none() && req.title.is_none() && status.is_none() {
        return Err(ServerError::BadRequest(
            "give at least one of content, title, status".into(),
        ));
    }
    let r = m
        .update_fields(id, req.content.clone(), req.title.clone(), status, &p)
        .await?;
    Ok(ok(
        json!({"success": true, "memory_id": r.id, "version": r.version}),
    ))
}

/// Cloud `POST get/message` (SDK `get_message`).
#[derive(Debug, Clone, Serialize, Deserialize, Default, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CloudGetMessageRequest {
    /// User (required): the cube.
    pub user_id: Option<String>,
    /// One conversation (default: the most recent ones).
    pub conversation_id: Option<String>,
    /// Conversations returned at most (default 1; the most recent).
    pub conversation_limit_number: Option<usize>,
    /// Messages per conversation at most (default 50; the last ones).
    pub message_limit_number: Option<usize>,
    /// MemOS's plugin path: not supported, a 400 when set.
    pub source: Option<String>,
}

/// The conversations' messages as memos keeps them (each memory's source messages): `{
/// message_detail_list: [{conversation_id, role, content, chat_time, message_id}] }`, oldest
/// first within a conversation, conversations most recent first.
#[utoipa::path(post, path = "/api/openmem/v1/get/message", tag = "cloud", request_body = CloudGetMessageRequest,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 403, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn get_message(
    State(m): State<AppState>,
    Extension(p): P,
    Body(req): Body<CloudGetMessageRequest>,
) -> R {
    if req.source.is_some() {
        return Err(ServerError::BadRequest(
            "source: MemOS's plugin path is not supported; omit source".into(),
        ));
    }
    let user = req
        .user_id
        .clone()
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| ServerError::BadRequest("user_id is required".into()))?;
    store::validate_key_part("user_id", &user)?;
    p.check(Access::Read, std::slice::from_ref(&user), Some(&user))?;
    let mut cond = json!({"user_id": user});
    if let Some(c) = &req.conversation_id {
        store::validate_key_part("conversation_id", c)?;
        cond = json!({"and": [{"user_id": user}, {"session_id": c}]});
    }
    let filter = Filter::parse_for_cube(&cond, &user, std::slice::from_ref(&user))?;
    let types = vec![
        MemoryType::UserMemory,
        MemoryType::LongTermMemory,
        MemoryType::WorkingMemory,
    ];
    let (records, _) = m
        .export(&user, filter, types, Some((1, m.cfg.limits.max_export)), &p)
        .await?;
    // Per conversation: its messages without repeats (a message is the source of several
    // memories), by first appearance; conversations ordered by their latest memory.
    let mut convs: BTreeMap<String, (i64, Vec<Value>)> = BTreeMap::new();
    // Export order is insertion order; a stable sort by creation keeps it for equal times.
    let mut sorted = records;
    sorted.sort_by_key(|r| r.created_at);
    for r in &sorted {
        let entry = convs
            .entry(r.session_id.clone())
            .or_insert_with(|| (0, Vec::new()));
        entry.0 = entry.0.max(r.created_at);
        for s in r.sources.iter().filter(|s| s.kind == "chat") {
            let msg = json!({"conversation_id": r.session_id, "role": s.role, "content": s.content,
                "chat_time": s.chat_time, "message_id": s.message_id});
            if !entry.1.contains(&msg) {
                entry.1.push(msg);
            }
        }
    }
    let mut order: Vec<(i64, String)> = convs.iter().map(|(k, v)| (v.0, k.clone())).collect();
    order.sort_by(|a, b| b.cmp(a));
    let per = req.message_limit_number.unwrap_or(50);
    let mut out = Vec::new();
    for (_, c) in order
        .into_iter()
        .take(req.conversation_limit_number.unwrap_or(1))
    {
        let msgs = &convs[&c].1;
        out.extend(msgs[msgs.len().saturating_sub(per)..].iter().cloned());
    }
    Ok(ok(json!({"message_detail_list": out})))
}
