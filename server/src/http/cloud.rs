//! The MemOS cloud API shapes (memos-spec §1.6-1.7) under [`BASE`], for the official SDK
//! (`MemOSClient(base_url="http://host:8000/api/openmem/v1", api_key=…)`) and the cloud
//! plugins. Success envelopes carry `code: 0`, as the cloud does. A cloud `user_id` is the cube.

use std::sync::Arc;

use axum::extract::{FromRequest, Path, Request, State};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use store::{Filter, MemoryRecord, MemoryType};
use utoipa::ToSchema;

use super::product::{bucket_types, new_cube_id};
use super::{AppState, Body};
use crate::api::{
    AddKbFileRequest, AddRequest, CloudAddRequest, CloudDeleteRequest, CloudFeedbackRequest,
    CloudGetMemoryRequest, CloudSearchRequest, CloudStatusRequest, CreateKbRequest,
    DeleteKbRequest, DeleteRequest, FeedbackRequest, SearchRequest,
};
use crate::auth::{Access, Principal};
use crate::error::ServerError;
use crate::service::Memos;

/// Where the cloud routes live.
pub const BASE: &str = "/api/openmem/v1";

type P = Extension<Arc<Principal>>;
type R = Result<Json<Value>, ServerError>;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/add/message", post(add_message))
        .route("/search/memory", post(search_memory))
        .route("/get/memory", post(get_memory))
        .route("/get/memory/{id}", get(get_memory_by_id))
        .route("/delete/memory", post(delete_memory))
        .route("/add/feedback", post(add_feedback))
        .route("/get/status", post(get_status))
        .route("/create/knowledgebase", post(create_knowledgebase))
        .route("/delete/knowledgebase", post(delete_knowledgebase))
        .route("/add/knowledgebase-file", post(add_knowledgebase_file))
        .route("/rerank", post(rerank))
        .merge(super::cloud_more::routes())
}

/// Cloud `POST rerank` (SDK `rerank(query, documents, model, top_n)`).
#[derive(Debug, Clone, Serialize, Deserialize, Default, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RerankRequest {
    /// Query (required).
    pub query: String,
    /// Documents to score (required, at most `limits.max_ids`).
    pub documents: Vec<String>,
    /// Must name the configured reranker's model when given (a 400 otherwise).
    pub model: Option<String>,
    /// Best results returned (default: all).
    pub top_n: Option<usize>,
}

/// Scores documents against a query with the configured reranker (`[search.rerank]`), else by
/// cosine of the embedder's vectors: `{"results": [{index, relevance_score, document}]}`, best
/// first.
#[utoipa::path(post, path = "/api/openmem/v1/rerank", tag = "cloud", request_body = RerankRequest,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 413, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn rerank(
    State(m): State<AppState>,
    Extension(p): P,
    Body(req): Body<RerankRequest>,
) -> R {
    p.check(Access::Read, &[], None)?;
    if req.query.trim().is_empty() || req.documents.is_empty() {
        return Err(ServerError::BadRequest(
            "query and documents are required".into(),
        ));
    }
    if req.documents.len() > m.cfg.limits.max_ids {
        return Err(ServerError::TooLarge(format!(
            "{} documents; the limit is {} (limits.max_ids)",
            req.documents.len(),
            m.cfg.limits.max_ids
        )));
    }
    let scores = match &m.reranker {
        Some(r) => {
            if let Some(model) = &req.model
                && *model != m.cfg.search.rerank.model
            {
                return Err(ServerError::BadRequest(format!(
                    "model: \"{model}\" is not the configured reranker ({})",
                    m.cfg.search.rerank.model
                )));
            }
            r.scores(&req.query, &req.documents).await?
        }
        None => {
            if req.model.is_some() {
                return Err(ServerError::BadRequest(
                    "model: no reranker is configured ([search.rerank]); omit model for the cosine fallback".into(),
                ));
            }
            let e = m.embedder.clone();
            let mut texts = vec![req.query.clone()];
            texts.extend(req.documents.iter().cloned());
            let mut v = tokio::task::spawn_blocking(move || e.embed(&texts))
                .await
                .map_err(|e| ServerError::Unavailable(e.to_string()))??;
            let q = v.remove(0);
            crate::rerank::cosine_scores(&q, &v)
        }
    };
    let mut results: Vec<(usize, f32)> = scores.into_iter().enumerate().collect();
    results.sort_by(|a, b| b.1.total_cmp(&a.1));
    results.truncate(req.top_n.unwrap_or(results.len()));
    let results: Vec<Value> = results
        .into_iter()
        .map(|(i, s)| json!({"index": i, "relevance_score": s, "document": req.documents[i]}))
        .collect();
    Ok(ok(json!({"results": results})))
}

pub(crate) fn ok(data: Value) -> Json<Value> {
    Json(json!({"code": 0, "message": "ok", "data": data}))
}

fn millis(micros: i64) -> i64 {
    micros / 1000
}

fn required(v: &Option<String>, name: &str) -> Result<String, ServerError> {
    v.clone()
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| ServerError::BadRequest(format!("{name} is required")))
}

/// A record in the cloud's item shape for its bucket.
pub fn cloud_item(r: &MemoryRecord, relativity: Option<f32>) -> Value {
    let mut v = match r.memory_type {
        MemoryType::PreferenceMemory => {
            let info = &r.info;
            json!({
                "id": r.id,
                "preference": r.memory,
                "preference_type": info.get("preference_type").cloned().unwrap_or(json!("explicit_preference")),
                "reasoning": info.get("reasoning").cloned().unwrap_or(json!("")),
            })
        }
        MemoryType::ToolSchemaMemory | MemoryType::ToolTrajectoryMemory => json!({
            "id": r.id,
            "tool_type": r.memory_type.as_str(),
            "tool_value": serde_json::from_str::<Value>(&r.memory).unwrap_or_else(|_| json!(r.memory)),
        }),
        _ => json!({
            "id": r.id,
            "memory_key": r.key.clone().unwrap_or_else(|| r.memory.chars().take(60).collect()),
            "memory_value": r.memory,
            "memory_type": r.memory_type.as_str(),
            "tags": r.tags,
            "confidence": r.confidence,
            "file_ids": r.file_ids,
        }),
    };
    v["create_time"] = json!(millis(r.created_at));
    v["update_time"] = json!(millis(r.updated_at));
    v["conversation_id"] = json!(r.session_id);
    v["status"] = json!(r.status.as_str());
    v["cube_id"] = json!(r.cube_id);
    if let Some(s) = relativity {
        v["relativity"] = json!(s);
    }
    v
}

/// Adds messages for a user (async by default: `asyncMode`); `{success, task_id, status}`.
#[utoipa::path(post, path = "/api/openmem/v1/add/message", tag = "cloud", request_body = CloudAddRequest,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 401, body = crate::api::Envelope), (status = 403, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn add_message(
    State(m): State<AppState>,
    Extension(p): P,
    Body(mut req): Body<CloudAddRequest>,
) -> R {
    crate::fields::check_cloud_add(&req)?;
    m.fetch_documents(&mut req.messages).await?;
    let users = req.user_id.as_ref().map(|u| u.to_vec()).unwrap_or_default();
    let agents = req
        .agent_id
        .as_ref()
        .map(|a| a.to_vec())
        .unwrap_or_default();
    // Each user is a cube; with no user, each agent is.
    let owners = if users.is_empty() {
        agents.clone()
    } else {
        users
    };
    if owners.is_empty() || owners.iter().any(|o| o.trim().is_empty()) {
        return Err(ServerError::BadRequest(
            "user_id or agent_id is required".into(),
        ));
    }
    if req.messages.as_ref().is_none_or(|v| v.is_null()) {
        return Err(ServerError::BadRequest("messages is required".into()));
    }
    let mut events = Vec::new();
    for owner in &owners {
        let add = AddRequest {
            user_id: Some(owner.clone()),
            session_id: req.conversation_id.clone(),
            info: req.info.clone(),
            messages: req.messages.clone(),
            source: req.source.clone(),
            agent_id: agents.first().cloned(),
            app_id: req.app_id.clone(),
            custom_tags: req.tags.clone(),
            async_mode: Some(
                if req.async_mode.unwrap_or(true) {
                    "async"
                } else {
                    "sync"
                }
                .into(),
            ),
            ..Default::default()
        };
        events.extend(m.add_events(&add, &p)?);
    }
    let user = owners[0].clone();
    if req.async_mode.unwrap_or(true) {
        let task_id = m.add_async(events, None, &user).await?;
        Ok(ok(
            json!({"success": true, "task_id": task_id, "status": "running"}),
        ))
    } else {
        let added = m.add_sync(events).await?;
        Ok(ok(json!({
            "success": true,
            "task_id": uuid::Uuid::new_v4().to_string(),
            "status": "completed",
            "memory_ids": added.iter().map(|a| a.memory_id.clone()).collect::<Vec<_>>(),
        })))
    }
}

/// Searches a user's memories (plus knowledge bases): `memory_detail_list`,
/// `preference_detail_list`, `tool_memory_detail_list`, `skill_detail_list`, `preference_note`.
#[utoipa::path(post, path = "/api/openmem/v1/search/memory", tag = "cloud", request_body = CloudSearchRequest,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 401, body = crate::api::Envelope), (status = 403, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn search_memory(
    State(m): State<AppState>,
    Extension(p): P,
    Body(req): Body<CloudSearchRequest>,
) -> R {
    crate::fields::check_memory_view(&req.include_memory_view)?;
    // The user's cube, or the agent's when no user is given (as add/message stores it).
    let user = match (&req.user_id, &req.agent_id) {
        (Some(u), _) if !u.trim().is_empty() => u.clone(),
        (_, Some(a)) if !a.trim().is_empty() => a.clone(),
        _ => {
            return Err(ServerError::BadRequest(
                "user_id or agent_id is required".into(),
            ));
        }
    };
    let mut cubes = vec![user.clone()];
    cubes.extend(req.knowledgebase_ids.clone().unwrap_or_default());
    let mut filter = req.filter.clone();
    if let (Some(a), Some(_)) = (&req.agent_id, &req.user_id) {
        let cond = json!({"agent_id": a});
        filter = Some(match filter {
            Some(f) if !f.is_null() => json!({"and": [f, cond]}),
            _ => cond,
        });
    }
    let s = SearchRequest {
        query: req.query.clone(),
        user_id: Some(user),
        readable_cube_ids: Some(cubes),
        session_id: req.conversation_id.clone(),
        top_k: req.memory_limit_number,
        relativity: req.relativity,
        source: req.source.clone(),
        context_format: req.context_format.clone(),
        include_preference: req.include_preference,
        pref_top_k: req.preference_limit_number,
        search_tool_memory: req.include_tool_memory,
        tool_mem_top_k: req.tool_memory_limit_number,
        include_skill_memory: req.include_skill,
        skill_mem_top_k: req.skill_limit_number,
        filter,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let res = m.search_hits(&s, &p).await;
    m.metrics.search(
        "cloud",
        started.elapsed(),
        res.as_ref()
            .ok()
            .map(|r| r.buckets.iter().map(|b| b.hits.len()).sum()),
    );
    let res = res?;
    let mut lists: std::collections::HashMap<&str, Vec<(f32, Value)>> = Default::default();
    for b in &res.buckets {
        let list = match b.name {
            "text_mem" => "memory_detail_list",
            "pref_mem" => "preference_detail_list",
            "tool_mem" => "tool_memory_detail_list",
            _ => "skill_detail_list",
        };
        for h in &b.hits {
            lists
                .entry(list)
                .or_default()
                .push((h.score, cloud_item(&h.record, Some(h.score))));
        }
    }
    let mut data = json!({
        "preference_note": res.pref_note,
        "profile_detail_list": [], "event_detail_list": [],
    });
    for (list, k) in [
        ("memory_detail_list", req.memory_limit_number),
        ("preference_detail_list", req.preference_limit_number),
        ("tool_memory_detail_list", req.tool_memory_limit_number),
        ("skill_detail_list", req.skill_limit_number),
    ] {
        // Across the user's cube and knowledge bases: best first, the requested number.
        let mut v = lists.remove(list).unwrap_or_default();
        v.sort_by(|a, b| b.0.total_cmp(&a.0));
        data[list] = Value::Array(v.into_iter().take(k).map(|(_, x)| x).collect());
    }
    Ok(ok(data))
}

/// A user's (or an agent's) memories, paged: the lists plus `total, size, current, pages`.
#[utoipa::path(post, path = "/api/openmem/v1/get/memory", tag = "cloud", request_body = CloudGetMemoryRequest,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 403, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn get_memory(
    State(m): State<AppState>,
    Extension(p): P,
    Body(req): Body<CloudGetMemoryRequest>,
) -> R {
    crate::fields::check_memory_view(&req.include_memory_view)?;
    if req.page == 0 || req.size == 0 || req.size > 1000 {
        return Err(ServerError::BadRequest(
            "page must be >= 1 and size 1..=1000".into(),
        ));
    }
    let (cube, mut cond) = match (&req.user_id, &req.agent_id) {
        (Some(u), a) => (u.clone(), a.as_ref().map(|a| json!({"agent_id": a}))),
        (None, Some(a)) => (a.clone(), None),
        (None, None) => {
            return Err(ServerError::BadRequest(
                "user_id or agent_id is required".into(),
            ));
        }
    };
    p.check(
        Access::Read,
        std::slice::from_ref(&cube),
        req.user_id.as_deref(),
    )?;
    if let Some(f) = req.filter.clone().filter(|f| !f.is_null()) {
        cond = Some(match cond {
            Some(c) => json!({"and": [f, c]}),
            None => f,
        });
    }
    let filter = Filter::parse_for_cube(
        cond.as_ref().unwrap_or(&Value::Null),
        &cube,
        std::slice::from_ref(&cube),
    )?;
    let page = Some((req.page, req.size));
    let (facts, total) = m
        .export(&cube, filter.clone(), bucket_types("text_mem"), page, &p)
        .await?;
    let prefs = if req.include_preference {
        m.export(&cube, filter.clone(), bucket_types("pref_mem"), page, &p)
            .await?
            .0
    } else {
        vec![]
    };
    let tools = if req.include_tool_memory {
        m.export(&cube, filter, bucket_types("tool_mem"), page, &p)
            .await?
            .0
    } else {
        vec![]
    };
    let items = |v: &[MemoryRecord]| v.iter().map(|r| cloud_item(r, None)).collect::<Vec<_>>();
    Ok(ok(json!({
        "memory_detail_list": items(&facts),
        "preference_detail_list": items(&prefs),
        "tool_memory_detail_list": items(&tools),
        "total": total, "size": req.size, "current": req.page,
        "pages": total.div_ceil(req.size),
    })))
}

/// One memory (404 when unknown or outside the key's cubes).
#[utoipa::path(get, path = "/api/openmem/v1/get/memory/{id}", tag = "cloud",
    params(("id" = String, Path, description = "Memory id")),
    responses((status = 200, body = crate::api::Envelope), (status = 404, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn get_memory_by_id(
    State(m): State<AppState>,
    Extension(p): P,
    Path(id): Path<String>,
) -> R {
    let (found, _) = m.get_by_ids(vec![id.clone()], &p).await?;
    let r = found
        .first()
        .ok_or_else(|| ServerError::NotFound(format!("memory {id} not found")))?;
    Ok(ok(cloud_item(r, None)))
}

/// Deletes by exactly one of `memory_ids`, `user_id`, `agent_id`, `filter` (optionally of one
/// `memory_type`): `{success}`.
#[utoipa::path(post, path = "/api/openmem/v1/delete/memory", tag = "cloud", request_body = CloudDeleteRequest,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 403, body = crate::api::Envelope), (status = 404, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn delete_memory(
    State(m): State<AppState>,
    Extension(p): P,
    Body(req): Body<CloudDeleteRequest>,
) -> R {
    let filter_given = req.filter.as_ref().is_some_and(|f| !f.is_null());
    let n = req.memory_ids.is_some() as u8
        + req.user_id.is_some() as u8
        + req.agent_id.is_some() as u8
        + filter_given as u8;
    if n != 1 {
        return Err(ServerError::BadRequest(
            "give exactly one of memory_ids, user_id, agent_id or filter".into(),
        ));
    }
    let type_cond = match &req.memory_type {
        Some(t) => {
            MemoryType::parse(t).ok_or_else(|| {
                ServerError::BadRequest(format!("memory_type \"{t}\" is unknown"))
            })?;
            Some(json!({"memory_type": t}))
        }
        None => None,
    };
    let with_type = |f: Value| match &type_cond {
        Some(c) => json!({"and": [f, c]}),
        None => f,
    };
    let d = if let Some(ids) = &req.memory_ids {
        DeleteRequest {
            memory_ids: Some(ids.clone()),
            ..Default::default()
        }
    } else if let Some(u) = &req.user_id {
        DeleteRequest {
            user_id: Some(u.clone()),
            filter: type_cond.clone(),
            ..Default::default()
        }
    } else if let Some(a) = &req.agent_id {
        DeleteRequest {
            filter: Some(with_type(json!({"agent_id": a}))),
            ..Default::default()
        }
    } else {
        DeleteRequest {
            filter: req.filter.clone().map(with_type),
            ..Default::default()
        }
    };
    let res = m.delete(&d, &p).await?;
    Ok(ok(json!({"success": true, "deleted": res["deleted"]})))
}

/// Records feedback for a user: `{success, task_id, status}`.
#[utoipa::path(post, path = "/api/openmem/v1/add/feedback", tag = "cloud", request_body = CloudFeedbackRequest,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 403, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn add_feedback(
    State(m): State<AppState>,
    Extension(p): P,
    Body(req): Body<CloudFeedbackRequest>,
) -> R {
    crate::fields::check_public(req.allow_public)?;
    let user = required(&req.user_id, "user_id")?;
    let f = FeedbackRequest {
        user_id: Some(user.clone()),
        session_id: req.conversation_id.clone(),
        feedback_content: req.feedback_content.clone(),
        feedback_time: req.feedback_time.clone(),
        allow_knowledgebase_ids: req.allow_knowledgebase_ids.clone(),
        retrieved_memory_ids: req.retrieved_memory_ids.clone(),
        agent_id: req.agent_id.clone(),
        app_id: req.app_id.clone(),
        ..Default::default()
    };
    let events = m.feedback_events(&f, &p)?;
    match req.async_mode.as_deref() {
        Some("sync") => {
            let cubes: Vec<String> = events.iter().map(|e| e.cube_id.clone()).collect();
            let id = events.first().map(|e| e.id()).unwrap_or_default();
            m.add_sync(events).await?;
            let record = m.feedback_outcome(cubes, id).await?;
            Ok(ok(
                json!({"success": true, "status": "completed", "record": record}),
            ))
        }
        None | Some("async") => {
            let task_id = m.add_async(events, None, &user).await?;
            Ok(ok(
                json!({"success": true, "task_id": task_id, "status": "running"}),
            ))
        }
        Some(o) => Err(ServerError::BadRequest(format!(
            "async_mode \"{o}\" is not sync or async"
        ))),
    }
}

/// Status of a task: `[{task_id, status}]` (status: waiting, in_progress, completed, failed).
#[utoipa::path(post, path = "/api/openmem/v1/get/status", tag = "cloud", request_body = CloudStatusRequest,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 404, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn get_status(
    State(m): State<AppState>,
    Extension(p): P,
    Body(req): Body<CloudStatusRequest>,
) -> R {
    let id = required(&req.task_id, "task_id")?;
    let t = m
        .tasks
        .get(&id)
        .filter(|t| p.allows_user(&t.user_id) && t.cubes.iter().all(|c| p.allows_cube(c)))
        .ok_or_else(|| ServerError::NotFound(format!("task {id} not found")))?;
    Ok(ok(json!([{
        "task_id": t.task_id, "status": t.status, "error": t.error,
        "memory_ids": t.memories.iter().map(|a| a.memory_id.clone()).collect::<Vec<_>>(),
    }])))
}

pub(crate) async fn knowledge_base(
    m: &Memos,
    p: &Principal,
    id: &str,
    access: Access,
) -> Result<store::CubeInfo, ServerError> {
    p.check(access, &[id.to_string()], None)?;
    m.cube_info(id)
        .await?
        .filter(|c| c.kind == "knowledgebase")
        .ok_or_else(|| ServerError::NotFound(format!("knowledge base {id} not found")))
}

/// Creates a knowledge base (a cube of kind `knowledgebase`, id inside the key's scope): `{id}`.
#[utoipa::path(post, path = "/api/openmem/v1/create/knowledgebase", tag = "cloud", request_body = CreateKbRequest,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 403, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn create_knowledgebase(
    State(m): State<AppState>,
    Extension(p): P,
    Body(req): Body<CreateKbRequest>,
) -> R {
    let name = required(&req.knowledgebase_name, "knowledgebase_name")?;
    let id = new_cube_id(&p, "kb")?;
    let info = m
        .create_kb(
            id,
            name,
            req.knowledgebase_description.clone().unwrap_or_default(),
            &p,
        )
        .await?;
    Ok(ok(json!({"id": info.cube_id, "name": info.name})))
}

/// Deletes a knowledge base and every memory in it: `{success}`.
#[utoipa::path(post, path = "/api/openmem/v1/delete/knowledgebase", tag = "cloud", request_body = DeleteKbRequest,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 403, body = crate::api::Envelope), (status = 404, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn delete_knowledgebase(
    State(m): State<AppState>,
    Extension(p): P,
    Body(req): Body<DeleteKbRequest>,
) -> R {
    let id = required(&req.knowledgebase_id, "knowledgebase_id")?;
    knowledge_base(&m, &p, &id, Access::Write).await?;
    let receipt = m.drop_cube(&id, &p).await?;
    Ok(ok(
        json!({"success": true, "deleted": receipt.records, "receipt": receipt}),
    ))
}

/// The SDK's form variant: `?knowledgebase_id=…` and one multipart `file` field per file
/// (UTF-8 text files; anything else is a 400 naming the file).
async fn multipart_files(req: Request) -> Result<AddKbFileRequest, ServerError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Kb {
        knowledgebase_id: Option<String>,
        #[serde(rename = "type")]
        file_type: Option<String>,
    }
    let q = axum::extract::Query::<Kb>::try_from_uri(req.uri())
        .map_err(|e| ServerError::BadRequest(e.body_text()))?
        .0;
    let (kb, file_type) = (q.knowledgebase_id, q.file_type);
    let mut mp = axum::extract::Multipart::from_request(req, &())
        .await
        .map_err(|e| ServerError::BadRequest(e.body_text()))?;
    let mut files = Vec::new();
    while let Some(field) = mp.next_field().await.map_err(|e| match e.status() {
        axum::http::StatusCode::PAYLOAD_TOO_LARGE => ServerError::TooLarge(e.body_text()),
        _ => ServerError::BadRequest(e.body_text()),
    })? {
        let name = field.file_name().map(String::from);
        let mime = field.content_type().map(String::from);
        let bytes = field
            .bytes()
            .await
            .map_err(|e| ServerError::BadRequest(e.body_text()))?;
        let (content, data_base64) = match String::from_utf8(bytes.to_vec()) {
            Ok(text) => (Some(text), None),
            Err(_) => {
                use base64::Engine;
                (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(&bytes)),
                )
            }
        };
        files.push(crate::api::KbFile {
            file_id: None,
            file_name: name,
            content,
            mime,
            data_base64,
        });
    }
    Ok(AddKbFileRequest {
        knowledgebase_id: kb,
        file: files,
        file_type,
    })
}

/// Adds text files to a knowledge base (chunked, embedded, searchable by `knowledgebase_ids`);
/// returns one entry per file with its memory ids. JSON (`{knowledgebase_id, file: [...]}`) or
/// the SDK's multipart form (`?knowledgebase_id=`, `file` fields with UTF-8 text).
#[utoipa::path(post, path = "/api/openmem/v1/add/knowledgebase-file", tag = "cloud",
    request_body(content((AddKbFileRequest = "application/json"), (Object = "multipart/form-data"))),
    params(("knowledgebase_id" = Option<String>, Query, description = "Knowledge base (multipart form only)")),
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 403, body = crate::api::Envelope), (status = 404, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn add_knowledgebase_file(
    State(m): State<AppState>,
    Extension(p): P,
    request: Request,
) -> R {
    let multipart = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let req = if multipart {
        multipart_files(request).await?
    } else {
        Body::<AddKbFileRequest>::from_request(request, &())
            .await?
            .0
    };
    let skills = crate::fields::kb_upload_type(&req.file_type)?;
    let id = required(&req.knowledgebase_id, "knowledgebase_id")?;
    if req.file.is_empty() {
        return Err(ServerError::BadRequest(
            "file must list at least one file".into(),
        ));
    }
    let kb = knowledge_base(&m, &p, &id, Access::Write).await?;
    let out = m.kb_add_files(&kb, &req.file, skills).await?;
    Ok(ok(json!(out)))
}
