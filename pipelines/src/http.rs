//! The REST API (MemOS shapes, memos-spec §1): a testable [`app`] and a server with graceful
//! shutdown.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{AddRequest, DeleteRequest, SearchRequest, envelope, format_item};
use crate::error::PipelineError;
use crate::service::Memos;

impl IntoResponse for PipelineError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        (
            status,
            Json(json!({"code": status.as_u16(), "message": self.to_string(), "data": null})),
        )
            .into_response()
    }
}

/// JSON body extractor whose rejections are MemOS-shaped 4xx errors with a message.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = PipelineError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(e) => Err(match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => PipelineError::TooLarge(e.body_text()),
                _ => PipelineError::BadRequest(e.body_text()),
            }),
        }
    }
}

type AppState = Arc<Memos>;

/// The router over a running service.
pub fn app(m: Arc<Memos>) -> Router {
    let limit = m.cfg.limits.max_body_bytes;
    Router::new()
        .route("/health", get(health))
        .route("/product/add", post(add))
        .route("/product/search", post(search))
        .route("/product/delete_memory", post(delete))
        .route("/product/get_memory/{id}", get(get_memory))
        .route("/product/scheduler/status", get(task_status))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(m)
}

async fn health(State(m): State<AppState>) -> Json<Value> {
    Json(
        json!({"status": "healthy", "service": "memos", "version": env!("CARGO_PKG_VERSION"), "embedder": m.embedder.model_id()}),
    )
}

async fn add(
    State(m): State<AppState>,
    Body(req): Body<AddRequest>,
) -> Result<Json<Value>, PipelineError> {
    let events = m.add_events(&req)?;
    let user = req.user_id.clone().unwrap_or_default();
    match req.async_mode.as_deref() {
        Some("sync") => {
            let added = m.add_sync(events).await?;
            Ok(Json(envelope("Memory added successfully", json!(added))))
        }
        None | Some("async") => {
            let task_id = m.add_async(events, req.task_id.clone(), &user).await?;
            let mut v = envelope("Memory add queued (async)", json!([]));
            v["task_id"] = json!(task_id);
            Ok(Json(v))
        }
        Some(o) => Err(PipelineError::BadRequest(format!(
            "async_mode \"{o}\" is not sync or async"
        ))),
    }
}

async fn search(
    State(m): State<AppState>,
    Body(req): Body<SearchRequest>,
) -> Result<Json<Value>, PipelineError> {
    let data = m.search(&req).await?;
    Ok(Json(envelope("Search completed successfully", data)))
}

async fn delete(
    State(m): State<AppState>,
    Body(req): Body<DeleteRequest>,
) -> Result<Json<Value>, PipelineError> {
    let data = m.delete(&req).await?;
    Ok(Json(envelope("Memories deleted successfully", data)))
}

async fn get_memory(
    State(m): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, PipelineError> {
    let txn = m.store.read_txn()?;
    match m.store.get(&txn, &id)? {
        Some(r) => Ok(Json(envelope(
            "Memory retrieved successfully",
            format_item(&r, None, None, false),
        ))),
        None => Ok(Json(envelope("Memory not found", Value::Null))),
    }
}

#[derive(Deserialize)]
struct StatusQuery {
    user_id: Option<String>,
    task_id: Option<String>,
}

async fn task_status(State(m): State<AppState>, Query(q): Query<StatusQuery>) -> Json<Value> {
    let list: Vec<Value> = match &q.task_id {
        Some(t) => m.tasks.get(t).into_iter().map(|t| json!(t)).collect(),
        None => m
            .tasks
            .list(q.user_id.as_deref())
            .into_iter()
            .map(|t| json!(t))
            .collect(),
    };
    Json(envelope("Task status retrieved", json!(list)))
}

/// Serves `app` on `listener` until `shutdown` resolves; in-flight requests finish first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    m: Arc<Memos>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(m))
        .with_graceful_shutdown(shutdown)
        .await
}
