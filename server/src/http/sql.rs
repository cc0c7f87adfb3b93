//! `POST /sql`: one read-only SQL statement over the caller's memories. JSON rows by default;
//! an Arrow IPC stream when the request says `Accept: application/vnd.apache.arrow.stream`.

use std::sync::Arc;

use ::sql::ScalarValue;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::{AppState, Body, ok};
use crate::auth::Principal;
use crate::error::ServerError;

/// `POST /sql`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    /// One statement, e.g. `SELECT user_id, count(*) FROM memories GROUP BY user_id`.
    #[serde(alias = "query")]
    pub sql: String,
    /// Values of `$1`, `$2`… (null, boolean, number or string).
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub params: Vec<Value>,
}

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/sql", post(query))
}

fn scalar(v: &Value) -> Result<ScalarValue, ServerError> {
    Ok(match v {
        Value::Null => ScalarValue::Null,
        Value::Bool(b) => ScalarValue::Boolean(Some(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => ScalarValue::Int64(Some(i)),
            None => ScalarValue::Float64(n.as_f64()),
        },
        Value::String(s) => ScalarValue::Utf8(Some(s.clone())),
        other => {
            return Err(ServerError::BadRequest(format!(
                "params: {other} is not null, a boolean, a number or a string"
            )));
        }
    })
}

/// Runs one statement (read-only; tables `memories`, `memory_history`, `events`,
/// `dead_letters`, `cubes`; functions `search`, `vector_search`, `bm25`, `cosine`, `embed`).
#[utoipa::path(post, path = "/sql", tag = "sql", request_body = SqlRequest,
    responses(
        (status = 200, description = "`data`: `columns` (name, type), `rows` (objects), `row_count`, `elapsed_ms`; or an Arrow IPC stream", body = crate::api::Envelope),
        (status = 400, description = "Bad SQL", body = crate::api::Envelope),
        (status = 403, description = "DDL/DML, or outside the key's scope", body = crate::api::Envelope),
        (status = 413, description = "Over the row or memory limit", body = crate::api::Envelope),
        (status = 504, description = "Over the query timeout", body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn query(
    State(m): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    headers: HeaderMap,
    Body(req): Body<SqlRequest>,
) -> Result<Response, ServerError> {
    let session = crate::sqlapi::session(&m, &p)?;
    let params = req
        .params
        .iter()
        .map(scalar)
        .collect::<Result<Vec<_>, _>>()?;
    let started = std::time::Instant::now();
    let out = m.sql.query_with_params(&req.sql, params, &session).await;
    m.metrics.sql("http", started.elapsed(), out.is_ok());
    let out = out?;
    let wants_arrow = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains(::sql::format::ARROW_STREAM));
    if wants_arrow {
        let bytes = ::sql::format::arrow_ipc(&out.schema, &out.batches)?;
        let mut r = bytes.into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(::sql::format::ARROW_STREAM),
        );
        return Ok(r);
    }
    let rows = ::sql::format::json_rows(&out.batches)?;
    Ok(ok(
        "ok",
        json!({
            "columns": ::sql::format::columns(&out.schema),
            "rows": rows,
            "row_count": out.rows,
            "elapsed_ms": out.elapsed.as_secs_f64() * 1000.0,
        }),
    )
    .into_response())
}
