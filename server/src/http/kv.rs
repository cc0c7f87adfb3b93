//! Activation-memory routes: a cube's precomputed KV cache as safetensors, its metadata, and a
//! rebuild trigger.

use std::sync::Arc;

use axum::body::Body as RawBody;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{Value, json};

use super::AppState;
use crate::auth::{Access, Principal};
use crate::error::ServerError;

type P = Extension<Arc<Principal>>;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/product/kv/{cube_id}", get(download))
        .route("/product/kv/{cube_id}/meta", get(meta))
        .route("/product/kv/{cube_id}/rebuild", post(rebuild))
}

/// The cube's KV cache as f16 safetensors (`past_key_values.{layer}.key|value`,
/// `[1, kv_heads, tokens, head_dim]`; the header's metadata names model, tokenizer hash, token
/// count, memory ids and text hash). 404 until a cache has been built.
#[utoipa::path(get, path = "/product/kv/{cube_id}", tag = "activation",
    params(("cube_id" = String, Path, description = "Cube")),
    responses((status = 200, description = "safetensors bytes", content_type = "application/octet-stream"),
        (status = 403, body = crate::api::Envelope), (status = 404, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn download(
    State(m): State<AppState>,
    Extension(p): P,
    Path(cube): Path<String>,
) -> Result<Response, ServerError> {
    p.check(Access::Read, std::slice::from_ref(&cube), None)?;
    p.check_whole_cube("the KV cache")?;
    let e = m.kv_entry(cube).await?;
    let hv = |s: String| HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static(""));
    Ok((
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (
                header::CONTENT_DISPOSITION,
                hv(format!(
                    "attachment; filename=\"{}.kv.safetensors\"",
                    e.cube_id
                )),
            ),
            (
                header::HeaderName::from_static("x-memos-model-id"),
                hv(e.model_id.clone()),
            ),
            (
                header::HeaderName::from_static("x-memos-token-count"),
                hv(e.token_count.to_string()),
            ),
            (
                header::HeaderName::from_static("x-memos-text-hash"),
                hv(e.text_hash.clone()),
            ),
        ],
        RawBody::from(e.data),
    )
        .into_response())
}

/// The cube's KV cache metadata: model, tokenizer hash, token count, memory ids, size, shape.
#[utoipa::path(get, path = "/product/kv/{cube_id}/meta", tag = "activation",
    params(("cube_id" = String, Path, description = "Cube")),
    responses((status = 200, body = crate::api::Envelope), (status = 403, body = crate::api::Envelope),
        (status = 404, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn meta(
    State(m): State<AppState>,
    Extension(p): P,
    Path(cube): Path<String>,
) -> Result<Json<Value>, ServerError> {
    p.check(Access::Read, std::slice::from_ref(&cube), None)?;
    p.check_whole_cube("the KV cache")?;
    let e = m.kv_entry(cube).await?;
    let lm = m.activation.as_ref().map(|a| a.lm.as_ref());
    Ok(super::ok("KV cache", crate::kv::entry_meta(&e, lm)))
}

/// Queues a rebuild of the cube's KV cache (it also happens on every change to its memories).
#[utoipa::path(post, path = "/product/kv/{cube_id}/rebuild", tag = "activation",
    params(("cube_id" = String, Path, description = "Cube")),
    responses((status = 202, body = crate::api::Envelope), (status = 403, body = crate::api::Envelope),
        (status = 503, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn rebuild(
    State(m): State<AppState>,
    Extension(p): P,
    Path(cube): Path<String>,
) -> Result<(StatusCode, Json<Value>), ServerError> {
    p.check(Access::Write, std::slice::from_ref(&cube), None)?;
    p.check_whole_cube("the KV cache")?;
    m.kv_rebuild(&cube)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"code": 202, "message": "KV cache rebuild queued", "data": {"cube_id": cube}})),
    ))
}
