//! The scheduler routes beside `status`, `allstatus` and `wait` (in `product.rs`):
//! `task_queue_status` (the durable fine-job queue, per cube) and `wait/stream` (the wait as
//! server-sent events).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, Q, ok};
use crate::auth::{Access, Principal};
use crate::error::ServerError;
use crate::service::Memos;
use pipelines::tasks::TaskStatus;

type P = Extension<Arc<Principal>>;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/product/scheduler/task_queue_status",
            get(task_queue_status),
        )
        .route("/product/scheduler/wait/stream", get(wait_stream))
}

/// `task_queue_status` query.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueQuery {
    /// User (required): the queue of the user's cube and of the cubes the key lets it read.
    pub user_id: Option<String>,
}

/// The background queue as MemOS reports its Redis streams: one "stream key" per cube with
/// queued fine-extraction jobs (`<cube>:fine`). `pending` counts the jobs running now,
/// `remaining` the jobs still queued (running ones included), per key as `"key:n"`.
#[utoipa::path(get, path = "/product/scheduler/task_queue_status", tag = "scheduler",
    params(("user_id" = String, Query, description = "User")),
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 403, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn task_queue_status(
    State(m): State<AppState>,
    Extension(p): P,
    Q(q): Q<QueueQuery>,
) -> Result<axum::Json<Value>, ServerError> {
    let user = q
        .user_id
        .clone()
        .ok_or_else(|| ServerError::BadRequest("user_id is required".into()))?;
    p.check(Access::Read, &[], Some(&user))?;
    let store = m.store.clone();
    let jobs = tokio::task::spawn_blocking(move || -> Result<_, ServerError> {
        let txn = store.read_txn()?;
        Ok(store.jobs(&txn)?)
    })
    .await
    .map_err(|e| ServerError::Unavailable(e.to_string()))??;
    let running: std::collections::HashSet<String> = m
        .tasks
        .list(Some(user.as_str()))
        .into_iter()
        .filter(|t| t.status == "in_progress")
        .map(|t| t.task_id)
        .collect();
    let mut remaining: std::collections::BTreeMap<String, usize> = Default::default();
    let mut pending: std::collections::BTreeMap<String, usize> = Default::default();
    let mut users = std::collections::BTreeSet::new();
    for (_, job) in jobs.iter().filter(|(_, j)| p.allows_cube(&j.cube_id)) {
        users.insert(job.user_id.clone());
        if job.user_id != user {
            continue;
        }
        let key = format!("{}:{}", job.cube_id, job.kind);
        *remaining.entry(key.clone()).or_default() += 1;
        if running.contains(&pipelines::tasks::task_id(job)) {
            *pending.entry(key).or_default() += 1;
        }
    }
    let detail = |m: &std::collections::BTreeMap<String, usize>| -> Vec<String> {
        m.iter().map(|(k, n)| format!("{k}:{n}")).collect()
    };
    Ok(ok(
        "Task queue status retrieved successfully",
        json!({
            "user_id": user, "user_name": user, "mem_cube_id": user,
            "stream_keys": remaining.keys().collect::<Vec<_>>(),
            "users_count": users.len(),
            "pending_tasks_count": pending.values().sum::<usize>(),
            "remaining_tasks_count": remaining.values().sum::<usize>(),
            "pending_tasks_detail": detail(&pending),
            "remaining_tasks_detail": detail(&remaining),
        }),
    ))
}

/// `wait/stream` query.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitStreamQuery {
    /// User or cube whose tasks are waited for (default: every task the key sees).
    pub user_name: Option<String>,
    /// Longest wait (default 120, at most 3600).
    pub timeout_seconds: Option<f64>,
    /// Seconds between events (default 0.5).
    pub poll_interval: Option<f64>,
}

/// Whether the key sees a task: its user and all its cubes.
pub(super) fn visible(p: &Principal, t: &TaskStatus) -> bool {
    p.allows_user(&t.user_id) && t.cubes.iter().all(|c| p.allows_cube(c))
}

/// Tasks of `who` (a user or a cube) the key sees that are still waiting or running (what
/// `scheduler/wait` and `wait/stream` wait for).
pub(super) fn active_tasks(m: &Memos, p: &Principal, who: Option<&str>) -> usize {
    m.tasks
        .list(None)
        .iter()
        .filter(|t| t.status == "waiting" || t.status == "in_progress")
        .filter(|t| visible(p, t))
        .filter(|t| who.is_none_or(|u| t.user_id == u || t.cubes.iter().any(|c| c == u)))
        .count()
}

/// The waits' `timeout_seconds` (default 120, at most 3600) and `poll_interval` (default
/// 0.5, 0.01..=60).
pub(super) fn wait_bounds(
    timeout: Option<f64>,
    poll: Option<f64>,
) -> Result<(f64, f64), ServerError> {
    let (timeout, poll) = (timeout.unwrap_or(120.0), poll.unwrap_or(0.5));
    if !(0.0..=3600.0).contains(&timeout) || !(0.01..=60.0).contains(&poll) {
        return Err(ServerError::BadRequest(
            "timeout_seconds must be 0..=3600 and poll_interval 0.01..=60".into(),
        ));
    }
    Ok((timeout, poll))
}

/// The wait as server-sent events: every `poll_interval` one
/// `data: {user_name, active_tasks, elapsed_seconds, status, timed_out, instance_id}` with
/// status `running`, ending with one `idle` or `timeout` event.
#[utoipa::path(get, path = "/product/scheduler/wait/stream", tag = "scheduler",
    params(("user_name" = Option<String>, Query, description = "User or cube"),
        ("timeout_seconds" = Option<f64>, Query, description = "Default 120, at most 3600"),
        ("poll_interval" = Option<f64>, Query, description = "Default 0.5")),
    responses((status = 200, description = "text/event-stream"), (status = 400, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn wait_stream(
    State(m): State<AppState>,
    Extension(p): P,
    Q(q): Q<WaitStreamQuery>,
) -> Result<Response, ServerError> {
    let (timeout, poll) = wait_bounds(q.timeout_seconds, q.poll_interval)?;
    if let Some(u) = &q.user_name {
        p.check(Access::Read, &[], Some(u))?;
    }
    let instance = format!("memos-{}", std::process::id());
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(timeout);
    // State: (first event, done) — the stream ends after the idle or timeout event.
    let events = futures::stream::unfold((true, false), move |(first, done)| {
        let (m, p, who, instance) = (m.clone(), p.clone(), q.user_name.clone(), instance.clone());
        async move {
            if done {
                return None;
            }
            if !first {
                let left = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(Duration::from_secs_f64(poll).min(left)).await;
            }
            let n = active_tasks(&m, &p, who.as_deref());
            let now = Instant::now();
            let status = match (n, now >= deadline) {
                (0, _) => "idle",
                (_, true) => "timeout",
                _ => "running",
            };
            let ev = json!({"user_name": who, "active_tasks": n,
                "elapsed_seconds": (now - start).as_secs_f64(), "status": status,
                "timed_out": status == "timeout", "instance_id": instance});
            Some((
                Ok::<_, Infallible>(Event::default().data(ev.to_string())),
                (false, status != "running"),
            ))
        }
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}
