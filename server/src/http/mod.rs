//! The REST API: a testable [`app`] and a server with graceful shutdown.
//!
//! - `product`: the self-hosted MemOS API (`/product/*`, memos-spec §1.2), envelope
//!   `{"code": 200, "message", "data"}`.
//! - `cloud`: the MemOS cloud shapes the official SDK calls (`/api/openmem/v1/*`, §1.6-1.7),
//!   envelope `{"code": 0, …}`.
//! - `admin`: API keys (master key only).
//! - `sql`: `POST /sql`, read-only SQL over the caller's memories.
//! - `openapi`: the OpenAPI document, generated from these handlers.
//!
//! Every route but `/health` and `/openapi.json` goes through [`authenticate`]: API key, scope
//! and rate limit. Errors are JSON `{"code": <status>, "message", "data": null}` with a 4xx/5xx
//! status (see [`ServerError::status`]); no failure is a 200.

pub mod admin;
pub mod chat;
pub mod cloud;
pub mod cloud_more;
pub mod control;
pub mod extras;
pub mod kv;
pub mod openapi;
pub mod product;
pub mod scheduler;
pub mod sql;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::error::ServerError;
use crate::service::Memos;

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let retry = match &self {
            ServerError::RateLimited {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            _ => None,
        };
        let mut r = (
            status,
            Json(json!({"code": status.as_u16(), "message": self.to_string(), "data": null})),
        )
            .into_response();
        if let Some(s) = retry
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Token"));
        }
        r
    }
}

/// JSON body extractor whose rejections are MemOS-shaped 4xx errors with a message (missing
/// body, wrong content type, malformed JSON, wrong field types, too large).
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = ServerError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(e) => Err(match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ServerError::TooLarge(e.body_text()),
                _ => ServerError::BadRequest(e.body_text()),
            }),
        }
    }
}

/// Query-string extractor with the same 400s.
pub struct Q<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S> for Q<T> {
    type Rejection = ServerError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Q(q.0))
            .map_err(|e| ServerError::BadRequest(e.body_text()))
    }
}

pub(crate) type AppState = Arc<Memos>;

/// The MemOS envelope (`code` 200).
pub fn ok(message: &str, data: Value) -> Json<Value> {
    Json(json!({"code": 200, "message": message, "data": data}))
}

/// Resolves the API key, checks the rate limit and hands the [`crate::auth::Principal`] to the
/// handler as a request extension.
pub async fn authenticate(
    State(m): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ServerError> {
    let h = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let p = m.auth.authenticate(h)?;
    m.auth.admit(&p)?;
    req.extensions_mut().insert(p);
    Ok(next.run(req).await)
}

/// Open mode (no keys) trusts whoever reaches the loopback port, so it must be reached by
/// loopback names only: a `Host` (and, from a browser, an `Origin`) that is not `localhost`, a
/// loopback IP or `[::1]` is refused with 403. This closes DNS rebinding (a web page whose name
/// resolves to 127.0.0.1 driving the admin principal from the browser). With keys, a request
/// needs a key whatever its Host, and this check is off.
pub async fn guard_open_mode(State(m): State<AppState>, req: Request, next: Next) -> Response {
    if m.auth.is_open() {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()));
        if let Some(h) = host
            && !loopback_authority(&h)
        {
            return ServerError::Forbidden(format!(
                "open mode answers only requests to a loopback host (localhost, 127.0.0.1, [::1]); Host was \"{h}\": configure API keys to serve other names"
            ))
            .into_response();
        }
        if let Some(o) = req.headers().get(header::ORIGIN) {
            let origin = o.to_str().unwrap_or("");
            let authority = origin.split_once("://").map_or(origin, |(_, a)| a);
            if origin != "null" && !loopback_authority(authority) {
                return ServerError::Forbidden(format!(
                    "open mode refuses cross-origin requests from \"{origin}\""
                ))
                .into_response();
            }
        }
    }
    next.run(req).await
}

/// Whether `host[:port]` names a loopback address.
fn loopback_authority(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Reads the request body up to `limits.max_body_bytes` before any handler runs. A larger body
/// (declared by `Content-Length` or found while reading a chunked one) is answered 413 with a
/// JSON message, after the rest is read and discarded (up to four times the limit), so the
/// client sees the answer instead of a connection reset in the middle of its upload.
pub async fn limit_body(State(m): State<AppState>, req: Request, next: Next) -> Response {
    use futures::StreamExt;
    let limit = m.cfg.limits.max_body_bytes as u64;
    let drain_cap = limit.saturating_mul(4).max(64 << 20);
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared == Some(0) {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let mut over = declared.is_some_and(|n| n > limit);
    let mut buf = bytes::BytesMut::new();
    let mut total: u64 = 0;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                return ServerError::BadRequest(format!("reading the request body: {e}"))
                    .into_response();
            }
        };
        total = total.saturating_add(chunk.len() as u64);
        if total > limit {
            over = true;
        }
        if over {
            buf.clear();
            if total > drain_cap {
                break;
            }
            continue;
        }
        buf.extend_from_slice(&chunk);
    }
    if over {
        let mut r = ServerError::TooLarge(format!(
            "the request body is larger than {limit} bytes (limits.max_body_bytes)"
        ))
        .into_response();
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    next.run(Request::from_parts(
        parts,
        axum::body::Body::from(buf.freeze()),
    ))
    .await
}

/// Counts and times every request by matched route (never the raw path: ids stay out of the
/// labels), method and status.
pub async fn track(State(m): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_string();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    m.metrics
        .http_requests
        .with_label_values(&[route.as_str(), method.as_str(), resp.status().as_str()])
        .inc();
    m.metrics
        .http_seconds
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    resp
}

/// The router of the metrics port: `GET /metrics` (Prometheus text format, no key needed; bind
/// it where only your Prometheus can reach it).
pub fn metrics_app(m: Arc<Memos>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(m)
}

async fn metrics(State(m): State<AppState>) -> Result<Response, ServerError> {
    let text = m.metrics_text().await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}

/// Serves [`metrics_app`] until `shutdown`.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    m: Arc<Memos>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, metrics_app(m))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The router over a running service.
pub fn app(m: Arc<Memos>) -> Router {
    let limit = m.cfg.limits.max_body_bytes;
    let protected = Router::new()
        .merge(product::routes())
        .merge(extras::routes())
        .merge(scheduler::routes())
        .merge(control::routes())
        .merge(chat::routes())
        .merge(kv::routes())
        .nest(cloud::BASE, cloud::routes())
        .merge(admin::routes())
        .merge(sql::routes())
        .nest_service("/mcp", crate::mcp::http_service(m.clone()))
        .route_layer(middleware::from_fn_with_state(m.clone(), authenticate));
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/openapi.json", get(openapi::serve))
        .merge(protected)
        .fallback(not_found)
        .route_layer(middleware::from_fn_with_state(m.clone(), track))
        .layer(middleware::from_fn_with_state(m.clone(), limit_body))
        .layer(middleware::from_fn_with_state(m.clone(), guard_open_mode))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(m)
}

async fn not_found(req: Request) -> ServerError {
    ServerError::NotFound(format!("no route {} {}", req.method(), req.uri().path()))
}

/// Liveness and the embedder in use.
#[utoipa::path(get, path = "/health", tag = "service",
    responses((status = 200, description = "Healthy", body = Object)))]
pub async fn health(State(m): State<AppState>) -> Json<Value> {
    Json(json!({
        "status": "healthy",
        "service": "memos",
        "version": env!("CARGO_PKG_VERSION"),
        "embedder": m.embedder.model_id(),
        "auth": if m.auth.is_open() { "open" } else { "keys" },
    }))
}

/// Readiness: 200 once the model is loaded (the service exists only then), the pipeline thread
/// runs and every configured broker source is connected; 503 with the pipeline's and the
/// sources' states otherwise.
#[utoipa::path(get, path = "/ready", tag = "service",
    responses((status = 200, description = "Ready", body = Object),
        (status = 503, description = "The pipeline is down (restarting) or a source is not connected", body = Object)))]
pub async fn ready(State(m): State<AppState>) -> Response {
    let sources = m.metrics.sources();
    let health = m.pipeline.health();
    let pipeline_down = health.down_reason();
    let all_up = sources.iter().all(|(_, up)| *up) && pipeline_down.is_none();
    let body = json!({
        "status": if all_up { "ready" } else { "not ready" },
        "embedder": m.embedder.model_id(),
        "pipeline": {
            "running": pipeline_down.is_none(),
            "reason": pipeline_down,
            "restarts": health.restarts(),
        },
        "sources": sources.iter().map(|(n, up)| (n.clone(), json!(up))).collect::<serde_json::Map<_, _>>(),
    });
    let status = if all_up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Serves `app` on `listener` until `shutdown` resolves; in-flight requests finish first.
/// Refuses a non-loopback listener in open mode (no API keys).
pub async fn serve(
    listener: tokio::net::TcpListener,
    m: Arc<Memos>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    if m.auth.is_open() && !addr.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "refusing to serve {addr} without API keys: configure [auth] keys or a master key, or bind 127.0.0.1"
            ),
        ));
    }
    axum::serve(listener, app(m))
        .with_graceful_shutdown(shutdown)
        .await
}
