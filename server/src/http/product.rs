//! The self-hosted MemOS API, `/product/*` (memos-spec §1.2-1.4, §4.9).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use store::{Filter, MemoryType};

use super::scheduler::{active_tasks, visible, wait_bounds};
use super::{AppState, Body, Q, ok};
use crate::api::cube_list;
use crate::api::{
    AddRequest, CreateCubeRequest, DeleteRequest, ExistCubeRequest, FeedbackRequest, GetAllRequest,
    GetMemoryRequest, SearchRequest, format_item,
};
use crate::auth::{Access, Principal};
use crate::error::ServerError;
use crate::service::Memos;
use pipelines::tasks::TaskStatus;

type P = Extension<Arc<Principal>>;
type R = Result<Json<Value>, ServerError>;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/product/add", post(add))
        .route("/product/search", post(search))
        .route("/product/feedback", post(feedback))
        .route("/product/get_all", post(get_all))
        .route("/product/get_memory", post(get_memory))
        .route("/product/get_memory/{id}", get(get_memory_by_id))
        .route("/product/get_memory_by_ids", post(get_memory_by_ids))
        .route("/product/delete_memory", post(delete_memory))
        .route("/product/create_cube", post(create_cube))
        .route("/product/exist_mem_cube_id", post(exist_mem_cube_id))
        .route("/product/scheduler/status", get(scheduler_status))
        .route("/product/scheduler/allstatus", get(scheduler_allstatus))
        .route("/product/scheduler/wait", post(scheduler_wait))
}

/// The memory types of each search/export bucket.
pub(crate) fn bucket_types(name: &str) -> Vec<MemoryType> {
    store::Bucket::parse(name)
        .map(store::Bucket::types)
        .unwrap_or_default()
}

/// Adds messages to the writable cubes (default `[user_id]`): `async_mode` "async" (default)
/// queues and returns a `task_id`; "sync" returns the memories written.
#[utoipa::path(post, path = "/product/add", tag = "product", request_body = AddRequest,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 403, body = crate::api::Envelope), (status = 413, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn add(State(m): State<AppState>, Extension(p): P, Body(mut req): Body<AddRequest>) -> R {
    m.fetch_documents(&mut req.messages).await?;
    let events = m.add_events(&req, &p)?;
    let user = req.user_id.clone().unwrap_or_default();
    let what = if req.is_feedback {
        "Feedback recorded"
    } else {
        "Memory added successfully"
    };
    match req.async_mode.as_deref() {
        Some("sync") => {
            let added = m.add_sync(events).await?;
            Ok(ok(what, json!(added)))
        }
        None | Some("async") => {
            let task_id = m.add_async(events, req.task_id.clone(), &user).await?;
            let mut v = ok("Memory add queued (async)", json!([]));
            v["task_id"] = json!(task_id);
            Ok(v)
        }
        Some(o) => Err(ServerError::BadRequest(format!(
            "async_mode \"{o}\" is not sync or async"
        ))),
    }
}

/// Hybrid search over the readable cubes (default `[user_id]`), bucketed as MemOS does.
#[utoipa::path(post, path = "/product/search", tag = "product", request_body = SearchRequest,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 403, body = crate::api::Envelope), (status = 504, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn search(
    State(m): State<AppState>,
    Extension(p): P,
    Body(req): Body<SearchRequest>,
) -> R {
    let started = std::time::Instant::now();
    let r = m.search(&req, &p).await;
    m.metrics.search(
        "rest",
        started.elapsed(),
        r.as_ref().ok().map(crate::service::result_count),
    );
    Ok(ok("Search completed successfully", r?))
}

/// Records feedback (processed by the feedback stage).
#[utoipa::path(post, path = "/product/feedback", tag = "product", request_body = FeedbackRequest,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 403, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn feedback(
    State(m): State<AppState>,
    Extension(p): P,
    Body(req): Body<FeedbackRequest>,
) -> R {
    let events = m.feedback_events(&req, &p)?;
    let user = req.user_id.clone().unwrap_or_default();
    let cubes: Vec<String> = events.iter().map(|e| e.cube_id.clone()).collect();
    let sync = req.async_mode.as_deref() == Some("sync");
    if req.corrected_answer {
        m.can_correct_answers(sync)?;
    }
    match req.async_mode.as_deref() {
        Some("sync") => {
            let id = events.first().map(|e| e.id()).unwrap_or_default();
            m.add_sync(events).await?;
            let record = m.feedback_outcome(cubes.clone(), id).await?;
            let answer = if req.corrected_answer {
                m.corrected_answer(&req).await?
            } else {
                String::new()
            };
            Ok(ok(
                "Feedback processed",
                json!([{"answer": answer, "record": record, "status": "processed", "cube_ids": cubes}]),
            ))
        }
        None | Some("async") => {
            let task_id = m.add_async(events, req.task_id.clone(), &user).await?;
            let mut v = ok("Feedback queued (async)", json!([]));
            v["task_id"] = json!(task_id);
            Ok(v)
        }
        Some(o) => Err(ServerError::BadRequest(format!(
            "async_mode \"{o}\" is not sync or async"
        ))),
    }
}

fn page_of(
    page: Option<usize>,
    size: Option<usize>,
) -> Result<Option<(usize, usize)>, ServerError> {
    match (page, size) {
        (None, None) => Ok(None),
        (Some(p), Some(s)) if p >= 1 && (1..=10_000).contains(&s) => Ok(Some((p, s))),
        (Some(_), Some(_)) => Err(ServerError::BadRequest(
            "page must be >= 1 and page_size 1..=10000".into(),
        )),
        _ => Err(ServerError::BadRequest(
            "give both page and page_size, or neither to export everything".into(),
        )),
    }
}

/// Paginated export of one cube, bucketed (`text_mem`, `pref_mem`, `tool_mem`, `skill_mem`),
/// each with `total_nodes`.
#[utoipa::path(post, path = "/product/get_memory", tag = "product", request_body = GetMemoryRequest,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 403, body = crate::api::Envelope), (status = 413, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn get_memory(
    State(m): State<AppState>,
    Extension(p): P,
    Body(req): Body<GetMemoryRequest>,
) -> R {
    let cube = req
        .mem_cube_id
        .clone()
        .ok_or_else(|| ServerError::BadRequest("mem_cube_id is required".into()))?;
    store::validate_key_part("mem_cube_id", &cube)
        .map_err(|e| ServerError::BadRequest(e.to_string()))?;
    p.check(
        Access::Read,
        std::slice::from_ref(&cube),
        req.user_id.as_deref(),
    )?;
    let page = page_of(req.page, req.page_size)?;
    let filter = Filter::parse_for_cube(
        req.filter.as_ref().unwrap_or(&Value::Null),
        &cube,
        std::slice::from_ref(&cube),
    )?;
    let mut data = json!({});
    for (name, on) in [
        ("text_mem", true),
        ("pref_mem", req.include_preference),
        ("tool_mem", req.include_tool_memory),
        ("skill_mem", req.include_skill_memory),
    ] {
        let (records, total) = if on {
            m.export(&cube, filter.clone(), bucket_types(name), page, &p)
                .await?
        } else {
            (vec![], 0)
        };
        let memories: Vec<Value> = records
            .iter()
            .map(|r| format_item(r, None, None, false))
            .collect();
        data[name] = json!([{"cube_id": cube, "memories": memories, "total_nodes": total}]);
    }
    if let Some((page, size)) = page {
        data["page"] = json!(page);
        data["page_size"] = json!(size);
    }
    Ok(ok("Memories retrieved successfully", data))
}

/// `GET /product/get_memory/{id}` query.
#[derive(Debug, Clone, serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct GetOneQuery {
    /// Also list every earlier full version (`versions`).
    pub history: bool,
    /// System time: the memory as memos held it then.
    pub as_of: Option<String>,
    /// Event time: the version that was true then.
    pub event_as_of: Option<String>,
}

/// One memory by id (404 when unknown or outside the key's cubes). `?history=true` adds every
/// earlier full version; `?as_of=` / `?event_as_of=` show the version of that moment (404 when
/// it did not exist or was not active then).
#[utoipa::path(get, path = "/product/get_memory/{id}", tag = "product",
    params(("id" = String, Path, description = "Memory id"),
        ("history" = Option<bool>, Query, description = "Include earlier versions"),
        ("as_of" = Option<String>, Query, description = "System time (RFC 3339)"),
        ("event_as_of" = Option<String>, Query, description = "Event time (RFC 3339)")),
    responses((status = 200, body = crate::api::Envelope), (status = 404, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn get_memory_by_id(
    State(m): State<AppState>,
    Extension(p): P,
    Path(id): Path<String>,
    Q(q): Q<GetOneQuery>,
) -> R {
    let at = store::search::AsOf {
        system: crate::service::parse_as_of("as_of", q.as_of.as_deref())?,
        event: crate::service::parse_as_of("event_as_of", q.event_as_of.as_deref())?,
    };
    let (shown, versions) = m.memory_versions(id.clone(), at, q.history, &p).await?;
    let Some(r) = shown else {
        return Err(ServerError::NotFound(format!(
            "memory {id} did not exist or was not active at that time"
        )));
    };
    let mut v = format_item(&r, None, None, false);
    if q.history {
        v["versions"] = json!(
            versions
                .iter()
                .map(|r| format_item(r, None, None, false))
                .collect::<Vec<_>>()
        );
    }
    Ok(ok("Memory retrieved successfully", v))
}

/// Memories by ids (a JSON list); ids that are unknown or outside the key's cubes are listed in
/// `not_found`; 404 when none is found.
#[utoipa::path(post, path = "/product/get_memory_by_ids", tag = "product", request_body = Vec<String>,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 404, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn get_memory_by_ids(
    State(m): State<AppState>,
    Extension(p): P,
    Body(ids): Body<Vec<String>>,
) -> R {
    if ids.is_empty() {
        return Err(ServerError::BadRequest(
            "the body must be a non-empty list of memory ids".into(),
        ));
    }
    let (found, missing) = m.get_by_ids(ids, &p).await?;
    if found.is_empty() {
        return Err(ServerError::NotFound(format!(
            "memories not found: {}",
            missing.join(", ")
        )));
    }
    let memories: Vec<Value> = found
        .iter()
        .map(|r| format_item(r, None, None, false))
        .collect();
    Ok(ok(
        "Memories retrieved successfully",
        json!({"memories": memories, "not_found": missing}),
    ))
}

/// Every memory of the cubes as a tree (root → memory type → items), or, with `search_query`,
/// the memories relevant to it.
#[utoipa::path(post, path = "/product/get_all", tag = "product", request_body = GetAllRequest,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 403, body = crate::api::Envelope), (status = 413, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn get_all(
    State(m): State<AppState>,
    Extension(p): P,
    Body(req): Body<GetAllRequest>,
) -> R {
    let kind = req
        .memory_type
        .clone()
        .ok_or_else(|| ServerError::BadRequest("memory_type is required".into()))?;
    let text = match kind.as_str() {
        "text_mem" => true,
        "act_mem" | "param_mem" | "para_mem" => false,
        o => {
            return Err(ServerError::BadRequest(format!(
                "memory_type \"{o}\" is not text_mem, act_mem, param_mem or para_mem"
            )));
        }
    };
    let cubes = cube_list(&req.mem_cube_ids, &None, &req.user_id)?;
    m.cfg.limits.check_cubes(&cubes)?;
    p.check(Access::Read, &cubes, req.user_id.as_deref())?;
    // MemOS: fulltext (the default) or embedding; each runs only that retriever.
    let retrievers = match req.search_type.as_deref() {
        None | Some("fulltext") => store::search::Retrievers::Lexical,
        Some("embedding") => store::search::Retrievers::Vector,
        Some(o) => {
            return Err(ServerError::BadRequest(format!(
                "search_type \"{o}\" is not fulltext or embedding"
            )));
        }
    };
    let mut out = Vec::new();
    for cube in &cubes {
        let mut items: Vec<(String, Value)> = Vec::new();
        if text {
            if let Some(q) = req.search_query.as_deref().filter(|q| !q.trim().is_empty()) {
                let s = SearchRequest {
                    query: q.into(),
                    user_id: req.user_id.clone(),
                    readable_cube_ids: Some(vec![cube.clone()]),
                    top_k: m.cfg.search.max_top_k.min(200),
                    dedup: Some("no".into()),
                    include_preference: false,
                    search_tool_memory: false,
                    include_skill_memory: false,
                    ..Default::default()
                };
                for b in m.search_hits_with(&s, &p, retrievers).await?.buckets {
                    for h in b.hits {
                        items.push((
                            h.record.memory_type.as_str().to_string(),
                            format_item(&h.record, Some(h.score), None, false),
                        ));
                    }
                }
            } else {
                let all: Vec<MemoryType> = crate::service::BUCKETS
                    .iter()
                    .flat_map(|b| bucket_types(b))
                    .collect();
                let (records, _) = m.export(cube, Filter::And(vec![]), all, None, &p).await?;
                for r in &records {
                    items.push((
                        r.memory_type.as_str().to_string(),
                        format_item(r, None, None, false),
                    ));
                }
            }
        }
        let mut by_type: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
        for (t, v) in items {
            by_type.entry(t).or_default().push(v);
        }
        let stats: serde_json::Map<String, Value> = by_type
            .iter()
            .map(|(t, v)| (t.clone(), json!(v.len())))
            .collect();
        let total: usize = by_type.values().map(Vec::len).sum();
        let children: Vec<Value> = by_type
            .into_iter()
            .map(|(t, v)| json!({"id": t, "memory": t, "children": v}))
            .collect();
        let tree = json!({"id": "root", "memory": "root", "children": children});
        out.push(json!({
            "cube_id": cube,
            "memories": if text { json!([tree]) } else { json!([]) },
            "memory_statistics": {"total": total, "by_memory_type": stats},
        }));
    }
    Ok(ok("Memories retrieved successfully", json!(out)))
}

/// Deletes by exactly one of `memory_ids`, `file_ids`, or `filter` with the quick constraints
/// `user_id` / `session_id` (`conversation_id`).
#[utoipa::path(post, path = "/product/delete_memory", tag = "product", request_body = DeleteRequest,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 403, body = crate::api::Envelope), (status = 404, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn delete_memory(
    State(m): State<AppState>,
    Extension(p): P,
    Body(req): Body<DeleteRequest>,
) -> R {
    let data = m.delete(&req, &p).await?;
    Ok(ok("Memories deleted successfully", data))
}

/// A new cube id inside the caller's cube scope: `<prefix><stem>-<uuid>` for a `prefix*`
/// pattern, `<stem>-<uuid>` for `*`.
pub(crate) fn new_cube_id(p: &Principal, stem: &str) -> Result<String, ServerError> {
    let u = uuid::Uuid::new_v4().simple().to_string();
    p.cubes
        .iter()
        .find_map(|pat| pat.strip_suffix('*').map(|pre| format!("{pre}{stem}-{u}")))
        .ok_or_else(|| {
            ServerError::Forbidden(format!(
                "key \"{}\" is limited to named cubes; give an id inside its scope",
                p.name
            ))
        })
}

/// Registers a cube (cubes are also created implicitly by their first memory).
#[utoipa::path(post, path = "/product/create_cube", tag = "product", request_body = CreateCubeRequest,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 403, body = crate::api::Envelope), (status = 409, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn create_cube(
    State(m): State<AppState>,
    Extension(p): P,
    Body(req): Body<CreateCubeRequest>,
) -> R {
    crate::fields::check_create_cube(&req)?;
    let name = req
        .cube_name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| ServerError::BadRequest("cube_name is required".into()))?;
    let owner = req
        .owner_id
        .clone()
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| ServerError::BadRequest("owner_id is required".into()))?;
    let id = match &req.cube_id {
        Some(c) => c.clone(),
        None => new_cube_id(&p, "cube")?,
    };
    store::validate_key_part("cube_id", &id).map_err(|e| ServerError::BadRequest(e.to_string()))?;
    p.check(Access::Write, std::slice::from_ref(&id), Some(&owner))?;
    let info = m
        .create_cube(store::CubeInfo {
            cube_id: id,
            name,
            owner_id: owner,
            created_at: store::time::now_micros(),
            kind: "cube".into(),
            description: String::new(),
        })
        .await?;
    Ok(ok(
        "Cube created successfully",
        json!({"cube_id": info.cube_id, "cube_name": info.name, "owner_id": info.owner_id}),
    ))
}

/// Whether a cube exists: `{<cube>: bool}`.
#[utoipa::path(post, path = "/product/exist_mem_cube_id", tag = "product", request_body = ExistCubeRequest,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 403, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn exist_mem_cube_id(
    State(m): State<AppState>,
    Extension(p): P,
    Body(req): Body<ExistCubeRequest>,
) -> R {
    let cube = req
        .mem_cube_id
        .clone()
        .ok_or_else(|| ServerError::BadRequest("mem_cube_id is required".into()))?;
    p.check(Access::Read, std::slice::from_ref(&cube), None)?;
    let exists = m.cube_info(&cube).await?.is_some();
    let mut data = serde_json::Map::new();
    data.insert(cube, json!(exists));
    Ok(ok("Cube checked", Value::Object(data)))
}

/// `scheduler/status` query.
#[derive(Deserialize)]
pub struct StatusQuery {
    /// User.
    pub user_id: Option<String>,
    /// Task.
    pub task_id: Option<String>,
}

/// Status of async tasks: `[{task_id, status, …}]`, one task (`task_id`) or a user's.
#[utoipa::path(get, path = "/product/scheduler/status", tag = "scheduler",
    params(("user_id" = Option<String>, Query, description = "User"), ("task_id" = Option<String>, Query, description = "Task")),
    responses((status = 200, body = crate::api::Envelope), (status = 404, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn scheduler_status(
    State(m): State<AppState>,
    Extension(p): P,
    Q(q): Q<StatusQuery>,
) -> R {
    p.check(Access::Read, &[], q.user_id.as_deref())?;
    let list: Vec<TaskStatus> = match &q.task_id {
        Some(t) => {
            let task = m
                .tasks
                .get(t)
                .filter(|t| visible(&p, t))
                .ok_or_else(|| ServerError::NotFound(format!("task {t} not found")))?;
            vec![task]
        }
        None => m
            .tasks
            .list(q.user_id.as_deref())
            .into_iter()
            .filter(|t| visible(&p, t))
            .collect(),
    };
    Ok(ok("Memory get status successfully", json!(list)))
}

fn summary(m: &Memos, p: &Principal) -> crate::service::TaskSummary {
    crate::service::summary_where(&m.tasks, |t| visible(p, t))
}

/// Counts of the caller's tasks by status: `scheduler_summary` counts the scheduler's
/// background jobs (fine extraction), `all_tasks_summary` every task (async adds too).
#[utoipa::path(get, path = "/product/scheduler/allstatus", tag = "scheduler",
    responses((status = 200, body = crate::api::Envelope)), security(("token" = [])))]
pub async fn scheduler_allstatus(State(m): State<AppState>, Extension(p): P) -> R {
    let all = summary(&m, &p);
    let scheduler = crate::service::summary_where(&m.tasks, |t| {
        visible(&p, t) && t.task_id.starts_with("fine:")
    });
    Ok(ok(
        "Scheduler status summary retrieved successfully",
        json!({"scheduler_summary": scheduler, "all_tasks_summary": all}),
    ))
}

/// `scheduler/wait` query.
#[derive(Deserialize)]
pub struct WaitQuery {
    /// User or cube.
    pub user_name: Option<String>,
    /// Longest wait.
    pub timeout_seconds: Option<f64>,
    /// Poll period.
    pub poll_interval: Option<f64>,
}

/// Waits until the user's (or cube's) async tasks are done: message `idle` or `timeout`.
#[utoipa::path(post, path = "/product/scheduler/wait", tag = "scheduler",
    params(("user_name" = Option<String>, Query, description = "User or cube"),
        ("timeout_seconds" = Option<f64>, Query, description = "Default 120, at most 3600"),
        ("poll_interval" = Option<f64>, Query, description = "Default 0.5")),
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn scheduler_wait(State(m): State<AppState>, Extension(p): P, Q(q): Q<WaitQuery>) -> R {
    let (timeout, poll) = wait_bounds(q.timeout_seconds, q.poll_interval)?;
    let running = |m: &Memos| active_tasks(m, &p, q.user_name.as_deref());
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(timeout);
    let mut n = running(&m);
    while n > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs_f64(poll)).await;
        n = running(&m);
    }
    let timed_out = n > 0;
    Ok(Json(json!({
        "code": 200,
        "message": if timed_out { "timeout" } else { "idle" },
        "data": {"running_tasks": n, "waited_seconds": start.elapsed().as_secs_f64(),
                 "timed_out": timed_out, "user_name": q.user_name},
    })))
}
