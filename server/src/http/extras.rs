//! MemOS product routes beyond add/search/feedback/get/delete (memos-spec §1.2):
//! `get_memory_dashboard`, `register_cube`, `get_user_names_by_memory_ids` and `suggestions`.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::{AppState, Body, ok};
use crate::api::GetMemoryRequest;
use crate::auth::{Access, Principal};
use crate::error::ServerError;

type P = Extension<Arc<Principal>>;
type R = Result<Json<Value>, ServerError>;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/product/get_memory_dashboard", post(get_memory_dashboard))
        .route("/product/register_cube", post(register_cube))
        .route(
            "/product/get_user_names_by_memory_ids",
            post(get_user_names_by_memory_ids),
        )
        .route("/product/suggestions", post(suggestions))
}

/// `get_memory` with each bucket's count on top: `total_text_nodes`, `total_tool_nodes`,
/// `total_skill_nodes`, `total_preference_nodes` (MemOS `GetMemoryDashboardRequest` is
/// `GetMemoryRequest`).
#[utoipa::path(post, path = "/product/get_memory_dashboard", tag = "product", request_body = GetMemoryRequest,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 403, body = crate::api::Envelope), (status = 413, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn get_memory_dashboard(
    State(m): State<AppState>,
    Extension(p): P,
    Body(req): Body<GetMemoryRequest>,
) -> R {
    let Json(mut v) = super::product::get_memory(State(m), Extension(p), Body(req)).await?;
    for (bucket, total) in [
        ("text_mem", "total_text_nodes"),
        ("tool_mem", "total_tool_nodes"),
        ("skill_mem", "total_skill_nodes"),
        ("pref_mem", "total_preference_nodes"),
    ] {
        let n = v["data"][bucket][0]["total_nodes"].as_u64().unwrap_or(0);
        v["data"][total] = json!(n);
    }
    v["message"] = json!("Memory dashboard retrieved successfully");
    Ok(Json(v))
}

/// `POST /product/register_cube`.
#[derive(Debug, Clone, Deserialize, Serialize, Default, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RegisterCubeRequest {
    /// The cube's name (required). A path (a cube directory elsewhere) is a 400: cubes live in
    /// the data directory; `import_cube` loads an exported one.
    pub mem_cube_name_or_path: Option<String>,
    /// Id (default: the name).
    pub mem_cube_id: Option<String>,
    /// Owner (default `root`).
    pub user_id: Option<String>,
}

/// Registers a cube in the catalog (its id and name, owned by `user_id`): `{cube_id,
/// cube_name_or_path}`. Registering an existing cube again answers it as it is.
#[utoipa::path(post, path = "/product/register_cube", tag = "product", request_body = RegisterCubeRequest,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 403, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn register_cube(
    State(m): State<AppState>,
    Extension(p): P,
    Body(req): Body<RegisterCubeRequest>,
) -> R {
    let name = req
        .mem_cube_name_or_path
        .clone()
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| ServerError::BadRequest("mem_cube_name_or_path is required".into()))?;
    if name.contains('/') || name.contains('\\') {
        return Err(ServerError::BadRequest(format!(
            "mem_cube_name_or_path: \"{name}\" is a path; cubes live in the server's data directory (load an exported cube with /product/import_cube)"
        )));
    }
    let id = req.mem_cube_id.clone().unwrap_or_else(|| name.clone());
    store::validate_key_part("mem_cube_id", &id)
        .map_err(|e| ServerError::BadRequest(e.to_string()))?;
    let owner = req.user_id.clone().unwrap_or_else(|| "root".into());
    p.check(Access::Write, std::slice::from_ref(&id), Some(&owner))?;
    let info = match m.cube_info(&id).await? {
        Some(c) => c,
        None => {
            m.create_cube(store::CubeInfo {
                cube_id: id.clone(),
                name: name.clone(),
                owner_id: owner,
                created_at: store::time::now_micros(),
                kind: "cube".into(),
                description: String::new(),
            })
            .await?
        }
    };
    Ok(ok(
        "Cube registered successfully",
        json!({"cube_id": info.cube_id, "cube_name_or_path": info.name}),
    ))
}

/// `POST /product/get_user_names_by_memory_ids`.
#[derive(Debug, Clone, Deserialize, Serialize, Default, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct UserNamesRequest {
    /// Memory ids (required).
    pub memory_ids: Option<Vec<String>>,
}

/// Each memory's user: `{memory_id: user_id | null}` (null: no such memory, or not readable
/// with this key).
#[utoipa::path(post, path = "/product/get_user_names_by_memory_ids", tag = "product", request_body = UserNamesRequest,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 413, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn get_user_names_by_memory_ids(
    State(m): State<AppState>,
    Extension(p): P,
    Body(req): Body<UserNamesRequest>,
) -> R {
    let ids = req
        .memory_ids
        .clone()
        .ok_or_else(|| ServerError::BadRequest("memory_ids is required".into()))?;
    let (found, missing) = m.get_by_ids(ids, &p).await?;
    let mut out = serde_json::Map::new();
    for r in found {
        out.insert(r.id.clone(), json!(r.user_id));
    }
    for id in missing {
        out.insert(id, Value::Null);
    }
    Ok(ok("User names retrieved successfully", Value::Object(out)))
}

/// `POST /product/suggestions`.
#[derive(Debug, Clone, Deserialize, Serialize, Default, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SuggestionRequest {
    /// User (required).
    pub user_id: Option<String>,
    /// Cube whose recent memories inspire the suggestions (required).
    pub mem_cube_id: Option<String>,
    /// zh (default) | en.
    pub language: Option<String>,
    /// The conversation so far (a string or chat messages), if any.
    #[schema(value_type = Option<Object>)]
    pub message: Option<Value>,
}

/// Follow-up questions the user might ask, written by the chat model from the cube's most
/// recent memories (and the conversation, when given): `{"query": [three questions]}`. 503
/// when no LLM is configured.
#[utoipa::path(post, path = "/product/suggestions", tag = "chat", request_body = SuggestionRequest,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 403, body = crate::api::Envelope), (status = 503, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn suggestions(
    State(m): State<AppState>,
    Extension(p): P,
    Body(req): Body<SuggestionRequest>,
) -> R {
    let user = req
        .user_id
        .clone()
        .ok_or_else(|| ServerError::BadRequest("user_id is required".into()))?;
    let cube = req
        .mem_cube_id
        .clone()
        .ok_or_else(|| ServerError::BadRequest("mem_cube_id is required".into()))?;
    let zh = match req.language.as_deref() {
        None | Some("zh") => true,
        Some("en") => false,
        Some(o) => {
            return Err(ServerError::BadRequest(format!(
                "language: \"{o}\" is not zh or en"
            )));
        }
    };
    store::validate_key_part("mem_cube_id", &cube)
        .map_err(|e| ServerError::BadRequest(e.to_string()))?;
    p.check(Access::Read, std::slice::from_ref(&cube), Some(&user))?;
    let conversation = match req.message.as_ref().filter(|v| !v.is_null()) {
        Some(v) => operators::event::parse_messages(v)
            .map_err(|e| ServerError::BadRequest(format!("message: {e}")))?
            .into_iter()
            .map(|t| format!("{}: {}", t.role, t.content))
            .collect::<Vec<_>>()
            .join("\n"),
        None => String::new(),
    };
    let queries = m.suggest(&cube, &user, zh, &conversation, &p).await?;
    Ok(ok("Suggestions generated", json!({"query": queries})))
}
