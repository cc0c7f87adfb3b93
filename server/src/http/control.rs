//! Memory-control routes: soft delete and recover by record id, knowledge bases and their files
//! (self-hosted `/product/knowledgebase…` and the cloud `get/`/`delete/knowledgebase-file`),
//! per-tool statistics, and MemCube export/import.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::cloud::knowledge_base;
use super::product::new_cube_id;
use super::{AppState, Body};
use crate::api::{DeleteKbFileRequest, GetKbFileRequest, KbFile};
use crate::auth::{Access, Principal};
use crate::error::ServerError;

type P = Extension<Arc<Principal>>;
type R = Result<Json<Value>, ServerError>;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/product/delete_memory_by_record_id",
            post(delete_by_record_id),
        )
        .route(
            "/product/recover_memory_by_record_id",
            post(recover_by_record_id),
        )
        .route("/product/knowledgebase", post(create_kb).get(list_kbs))
        .route("/product/knowledgebase/{id}", get(get_kb).delete(delete_kb))
        .route(
            "/product/knowledgebase/{id}/files",
            post(add_kb_files).get(list_kb_files),
        )
        .route(
            "/product/knowledgebase/{id}/files/{file_id}",
            axum::routing::delete(delete_kb_file),
        )
        .route("/product/tool_stats", get(tool_stats))
        .route("/product/export_cube", post(export_cube))
        .route("/product/import_cube", post(import_cube))
        .route(
            "/api/openmem/v1/get/knowledgebase-file",
            post(cloud_get_kb_files),
        )
        .route(
            "/api/openmem/v1/delete/knowledgebase-file",
            post(cloud_delete_kb_files),
        )
}

fn ok(message: &str, data: Value) -> Json<Value> {
    Json(json!({"code": 200, "message": message, "data": data}))
}

/// `POST /product/delete_memory_by_record_id`.
#[derive(Debug, Clone, Deserialize, Default, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DeleteByRecordRequest {
    /// Cube (required).
    pub mem_cube_id: Option<String>,
    /// Tag for this deletion, used to recover it (required).
    pub record_id: Option<String>,
    /// Hard delete instead (with a receipt; cannot be recovered).
    pub hard_delete: bool,
    /// Only these memories (default: every activated memory of the cube).
    pub memory_ids: Option<Vec<String>>,
}

/// `POST /product/recover_memory_by_record_id`.
#[derive(Debug, Clone, Deserialize, Default, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RecoverRequest {
    /// Cube (required).
    pub mem_cube_id: Option<String>,
    /// The `record_id` of the soft delete (required).
    pub delete_record_id: Option<String>,
}

fn required(v: Option<String>, name: &str) -> Result<String, ServerError> {
    v.filter(|s| !s.is_empty())
        .ok_or_else(|| ServerError::BadRequest(format!("{name} is required")))
}

/// Soft-deletes (status `deleted`, tagged with `record_id`) or hard-deletes a cube's memories.
#[utoipa::path(post, path = "/product/delete_memory_by_record_id", tag = "product",
    request_body = DeleteByRecordRequest,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 403, body = crate::api::Envelope), (status = 404, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn delete_by_record_id(
    State(m): State<AppState>,
    Extension(p): P,
    Body(req): Body<DeleteByRecordRequest>,
) -> R {
    let cube = required(req.mem_cube_id, "mem_cube_id")?;
    let record = required(req.record_id, "record_id")?;
    let v = m
        .soft_delete(cube, record, req.memory_ids, req.hard_delete, &p)
        .await?;
    Ok(ok("Memories deleted", v))
}

/// Restores the memories a soft delete with this record id took.
#[utoipa::path(post, path = "/product/recover_memory_by_record_id", tag = "product",
    request_body = RecoverRequest,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 403, body = crate::api::Envelope), (status = 404, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn recover_by_record_id(
    State(m): State<AppState>,
    Extension(p): P,
    Body(req): Body<RecoverRequest>,
) -> R {
    let cube = required(req.mem_cube_id, "mem_cube_id")?;
    let record = required(req.delete_record_id, "delete_record_id")?;
    Ok(ok("Memories recovered", m.recover(cube, record, &p).await?))
}

/// `POST /product/knowledgebase`.
#[derive(Debug, Clone, Deserialize, Default, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CreateKb {
    /// Name (required).
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Id (default: a new one inside the key's cube scope).
    pub knowledgebase_id: Option<String>,
}

fn kb_json(c: &store::CubeInfo) -> Value {
    json!({"knowledgebase_id": c.cube_id, "name": c.name, "description": c.description,
           "owner_id": c.owner_id, "created_at": store::time::micros_to_rfc3339(c.created_at)})
}

/// Creates a knowledge base.
#[utoipa::path(post, path = "/product/knowledgebase", tag = "knowledgebase", request_body = CreateKb,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 403, body = crate::api::Envelope), (status = 409, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn create_kb(State(m): State<AppState>, Extension(p): P, Body(req): Body<CreateKb>) -> R {
    let name = required(req.name, "name")?;
    let id = match req.knowledgebase_id {
        Some(id) => id,
        None => new_cube_id(&p, "kb")?,
    };
    let info = m
        .create_kb(id, name, req.description.unwrap_or_default(), &p)
        .await?;
    Ok(ok("Knowledge base created", kb_json(&info)))
}

/// Lists the knowledge bases the key may read.
#[utoipa::path(get, path = "/product/knowledgebase", tag = "knowledgebase",
    responses((status = 200, body = crate::api::Envelope)), security(("token" = [])))]
pub async fn list_kbs(State(m): State<AppState>, Extension(p): P) -> R {
    p.check(Access::Read, &[], None)?;
    let list: Vec<Value> = visible_kbs(&m, &p).await?.iter().map(kb_json).collect();
    Ok(ok("Knowledge bases", json!(list)))
}

/// One knowledge base with its files.
#[utoipa::path(get, path = "/product/knowledgebase/{id}", tag = "knowledgebase",
    params(("id" = String, Path, description = "Knowledge base id")),
    responses((status = 200, body = crate::api::Envelope), (status = 404, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn get_kb(State(m): State<AppState>, Extension(p): P, Path(id): Path<String>) -> R {
    let kb = knowledge_base(&m, &p, &id, Access::Read).await?;
    let files = m.kb_files(id, None, p.scope()).await?;
    let mut v = kb_json(&kb);
    v["files"] = json!(files);
    Ok(ok("Knowledge base", v))
}

/// Deletes a knowledge base and every chunk in it.
#[utoipa::path(delete, path = "/product/knowledgebase/{id}", tag = "knowledgebase",
    params(("id" = String, Path, description = "Knowledge base id")),
    responses((status = 200, body = crate::api::Envelope), (status = 404, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn delete_kb(State(m): State<AppState>, Extension(p): P, Path(id): Path<String>) -> R {
    knowledge_base(&m, &p, &id, Access::Write).await?;
    let receipt = m.drop_cube(&id, &p).await?;
    Ok(ok(
        "Knowledge base deleted",
        json!({"deleted": receipt.records, "receipt": receipt}),
    ))
}

/// `POST /product/knowledgebase/{id}/files`.
#[derive(Debug, Clone, Deserialize, Default, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AddFiles {
    /// Files.
    pub files: Vec<KbFile>,
}

/// Adds files (text, Markdown, HTML in `content`; PDF in `data_base64`).
#[utoipa::path(post, path = "/product/knowledgebase/{id}/files", tag = "knowledgebase",
    params(("id" = String, Path, description = "Knowledge base id")), request_body = AddFiles,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 404, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn add_kb_files(
    State(m): State<AppState>,
    Extension(p): P,
    Path(id): Path<String>,
    Body(req): Body<AddFiles>,
) -> R {
    if req.files.is_empty() {
        return Err(ServerError::BadRequest("files is empty".into()));
    }
    let kb = knowledge_base(&m, &p, &id, Access::Write).await?;
    Ok(ok(
        "Files added",
        json!(m.kb_add_files(&kb, &req.files, false).await?),
    ))
}

/// Lists a knowledge base's files.
#[utoipa::path(get, path = "/product/knowledgebase/{id}/files", tag = "knowledgebase",
    params(("id" = String, Path, description = "Knowledge base id")),
    responses((status = 200, body = crate::api::Envelope), (status = 404, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn list_kb_files(
    State(m): State<AppState>,
    Extension(p): P,
    Path(id): Path<String>,
) -> R {
    knowledge_base(&m, &p, &id, Access::Read).await?;
    Ok(ok("Files", json!(m.kb_files(id, None, p.scope()).await?)))
}

/// Deletes one file: every chunk, with a receipt.
#[utoipa::path(delete, path = "/product/knowledgebase/{id}/files/{file_id}", tag = "knowledgebase",
    params(("id" = String, Path, description = "Knowledge base id"), ("file_id" = String, Path, description = "File id")),
    responses((status = 200, body = crate::api::Envelope), (status = 404, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn delete_kb_file(
    State(m): State<AppState>,
    Extension(p): P,
    Path((id, file_id)): Path<(String, String)>,
) -> R {
    knowledge_base(&m, &p, &id, Access::Write).await?;
    let receipt = m
        .delete_files(vec![id], vec![file_id.clone()], p.scope())
        .await?;
    if receipt.records == 0 {
        return Err(ServerError::NotFound(format!("file {file_id} not found")));
    }
    Ok(ok("File deleted", json!({"receipt": receipt})))
}

/// Cloud: files of a knowledge base, or by id: `{file_detail_list, total, page, page_size}`.
#[utoipa::path(post, path = "/api/openmem/v1/get/knowledgebase-file", tag = "cloud",
    request_body = GetKbFileRequest,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 404, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn cloud_get_kb_files(
    State(m): State<AppState>,
    Extension(p): P,
    Body(req): Body<GetKbFileRequest>,
) -> R {
    crate::fields::check_kb_list_type(&req.file_type)?;
    if let Some(ids) = &req.file_ids {
        m.cfg.limits.check_ids("file id", ids)?;
    }
    let kbs = match &req.knowledgebase_id {
        Some(id) => vec![knowledge_base(&m, &p, id, Access::Read).await?.cube_id],
        None if req.file_ids.is_some() => readable_kbs(&m, &p).await?,
        None => {
            return Err(ServerError::BadRequest(
                "give knowledgebase_id or file_ids".into(),
            ));
        }
    };
    let mut files = Vec::new();
    for kb in kbs {
        files.extend(m.kb_files(kb, req.file_ids.clone(), p.scope()).await?);
    }
    let total = files.len();
    let (page, size) = (req.page.unwrap_or(1), req.page_size.unwrap_or(20));
    if page == 0 || !(1..=1000).contains(&size) {
        return Err(ServerError::BadRequest(
            "page must be >= 1 and page_size 1..=1000".into(),
        ));
    }
    let files: Vec<Value> = files
        .into_iter()
        .skip((page - 1).saturating_mul(size))
        .take(size)
        .collect();
    Ok(super::cloud::ok(json!({
        "file_detail_list": files, "total": total, "page": page, "page_size": size})))
}

/// The knowledge bases `p` may use.
async fn visible_kbs(
    m: &crate::service::Memos,
    p: &Principal,
) -> Result<Vec<store::CubeInfo>, ServerError> {
    let all = m
        .blocking(|store| {
            let txn = store.read_txn()?;
            Ok(store.cubes(&txn)?)
        })
        .await?;
    Ok(all
        .into_iter()
        .filter(|c| c.kind == "knowledgebase" && p.allows_cube(&c.cube_id))
        .collect())
}

async fn readable_kbs(
    m: &crate::service::Memos,
    p: &Principal,
) -> Result<Vec<String>, ServerError> {
    Ok(visible_kbs(m, p)
        .await?
        .into_iter()
        .map(|c| c.cube_id)
        .collect())
}

/// Cloud: deletes files by id: `{success, deleted}`.
#[utoipa::path(post, path = "/api/openmem/v1/delete/knowledgebase-file", tag = "cloud",
    request_body = DeleteKbFileRequest,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 404, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn cloud_delete_kb_files(
    State(m): State<AppState>,
    Extension(p): P,
    Body(req): Body<DeleteKbFileRequest>,
) -> R {
    let ids = req
        .file_ids
        .clone()
        .filter(|f| !f.is_empty())
        .ok_or_else(|| ServerError::BadRequest("file_ids is required".into()))?;
    p.check(Access::Write, &[], None)?;
    let kbs = match &req.knowledgebase_id {
        Some(id) => vec![knowledge_base(&m, &p, id, Access::Write).await?.cube_id],
        None => readable_kbs(&m, &p).await?,
    };
    p.check(Access::Write, &kbs, None)?;
    let receipt = m.delete_files(kbs, ids, p.scope()).await?;
    Ok(super::cloud::ok(json!({
        "success": true, "deleted": receipt.records, "receipt": receipt})))
}

/// `GET /product/tool_stats?mem_cube_id=`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolStatsQuery {
    /// Cube.
    pub mem_cube_id: String,
}

/// Success statistics per tool, from the cube's tool trajectories.
#[utoipa::path(get, path = "/product/tool_stats", tag = "product",
    params(("mem_cube_id" = String, Query, description = "Cube")),
    responses((status = 200, body = crate::api::Envelope), (status = 403, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn tool_stats(
    State(m): State<AppState>,
    Extension(p): P,
    super::Q(q): super::Q<ToolStatsQuery>,
) -> R {
    Ok(ok(
        "Tool statistics",
        json!(m.tool_stats(q.mem_cube_id, &p).await?),
    ))
}

/// `POST /product/export_cube` and `/product/import_cube` (admin: they read and write
/// directories on the server).
#[derive(Debug, Clone, Deserialize, Default, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CubeDirRequest {
    /// Cube to export (export only).
    pub mem_cube_id: Option<String>,
    /// Directory on the server (export: must be empty or absent).
    pub dir: Option<String>,
}

fn admin(p: &Principal) -> Result<(), ServerError> {
    super::admin::admin_only(p).map_err(|_| {
        ServerError::Forbidden(
            "export and import read and write server directories: admin key required".into(),
        )
    })
}

/// Writes a cube's MemCube snapshot (Parquet + manifest) to a server directory.
#[utoipa::path(post, path = "/product/export_cube", tag = "product", request_body = CubeDirRequest,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 403, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn export_cube(
    State(m): State<AppState>,
    Extension(p): P,
    Body(req): Body<CubeDirRequest>,
) -> R {
    admin(&p)?;
    let cube = required(req.mem_cube_id, "mem_cube_id")?;
    let dir = required(req.dir, "dir")?;
    let manifest = m.export_cube(cube, dir.into()).await?;
    Ok(ok("Cube exported", manifest))
}

/// Loads a MemCube snapshot into this store (the cube must not exist).
#[utoipa::path(post, path = "/product/import_cube", tag = "product", request_body = CubeDirRequest,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 403, body = crate::api::Envelope), (status = 409, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn import_cube(
    State(m): State<AppState>,
    Extension(p): P,
    Body(req): Body<CubeDirRequest>,
) -> R {
    admin(&p)?;
    let dir = required(req.dir, "dir")?;
    let manifest = m.import_cube(dir.into()).await?;
    Ok(ok("Cube imported", manifest))
}
