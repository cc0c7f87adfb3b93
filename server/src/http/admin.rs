//! API-key administration, master key only: create (the secret is shown once), list, revoke.
//! Created keys are stored in LMDB (SHA-256 only) and take effect at once.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use rand::RngExt;
use serde_json::{Value, json};

use super::{AppState, Body, ok};
use crate::api::CreateKeyRequest;
use crate::auth::{Principal, key_hash};
use crate::error::ServerError;

type P = Extension<Arc<Principal>>;
type R = Result<Json<Value>, ServerError>;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/keys", get(list_keys).post(create_key))
        .route("/admin/keys/{id}", delete(revoke_key))
}

pub(super) fn admin_only(p: &Principal) -> Result<(), ServerError> {
    if p.admin {
        Ok(())
    } else {
        Err(ServerError::Forbidden(
            "the admin endpoints need the master key".into(),
        ))
    }
}

fn public(k: &store::ApiKeyRecord) -> Value {
    json!({"id": k.id, "name": k.name, "cubes": k.cubes, "users": k.users, "read": k.read,
           "write": k.write, "rate_limit_per_minute": k.rate_limit_per_minute,
           "created_at": store::time::micros_to_rfc3339(k.created_at)})
}

/// Creates a key scoped to cube and user patterns; the response carries the secret once.
#[utoipa::path(post, path = "/admin/keys", tag = "admin", request_body = CreateKeyRequest,
    responses((status = 200, body = crate::api::Envelope), (status = 400, body = crate::api::Envelope),
        (status = 403, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn create_key(
    State(m): State<AppState>,
    Extension(p): P,
    Body(req): Body<CreateKeyRequest>,
) -> R {
    admin_only(&p)?;
    if req.name.trim().is_empty() {
        return Err(ServerError::BadRequest("name is required".into()));
    }
    if req.cubes.is_empty() || req.users.is_empty() {
        return Err(ServerError::BadRequest(
            "cubes and users must list at least one pattern (\"*\" for any)".into(),
        ));
    }
    if !req.read && !req.write {
        return Err(ServerError::BadRequest(
            "a key must be able to read or write".into(),
        ));
    }
    let mut bytes = [0u8; 24];
    rand::rng().fill(&mut bytes[..]);
    let secret = format!("mk-{}", hex::encode(bytes));
    let rec = store::ApiKeyRecord {
        id: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
        name: req.name.clone(),
        key_sha256: key_hash(&secret),
        cubes: req.cubes.clone(),
        users: req.users.clone(),
        read: req.read,
        write: req.write,
        rate_limit_per_minute: req.rate_limit_per_minute,
        created_at: store::time::now_micros(),
    };
    let r2 = rec.clone();
    m.committer
        .run("api_key", move |store, wtxn| {
            if store.api_keys(wtxn)?.iter().any(|k| k.name == r2.name) {
                return Err(ServerError::Conflict(format!(
                    "a key named \"{}\" exists",
                    r2.name
                )));
            }
            store.put_api_key(wtxn, &r2)?;
            Ok::<_, ServerError>(())
        })
        .await?;
    m.auth.insert(&rec);
    let mut v = public(&rec);
    v["key"] = json!(secret);
    Ok(ok("API key created; the secret is not shown again", v))
}

/// Lists created keys (no secrets).
#[utoipa::path(get, path = "/admin/keys", tag = "admin",
    responses((status = 200, body = crate::api::Envelope), (status = 403, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn list_keys(State(m): State<AppState>, Extension(p): P) -> R {
    admin_only(&p)?;
    let keys = m
        .blocking(|store| {
            let txn = store.read_txn()?;
            Ok(store.api_keys(&txn)?)
        })
        .await?;
    Ok(ok(
        "API keys",
        json!(keys.iter().map(public).collect::<Vec<_>>()),
    ))
}

/// Revokes a created key at once.
#[utoipa::path(delete, path = "/admin/keys/{id}", tag = "admin",
    params(("id" = String, Path, description = "Key id")),
    responses((status = 200, body = crate::api::Envelope), (status = 403, body = crate::api::Envelope),
        (status = 404, body = crate::api::Envelope)),
    security(("token" = [])))]
pub async fn revoke_key(State(m): State<AppState>, Extension(p): P, Path(id): Path<String>) -> R {
    admin_only(&p)?;
    let id2 = id.clone();
    let rec = m
        .committer
        .run("api_key", move |store, wtxn| {
            let rec = store.api_keys(wtxn)?.into_iter().find(|k| k.id == id2);
            if let Some(r) = &rec {
                store.delete_api_key(wtxn, &r.id)?;
            }
            Ok::<_, ServerError>(rec)
        })
        .await?
        .ok_or_else(|| ServerError::NotFound(format!("key {id} not found")))?;
    m.auth.remove(&rec);
    Ok(ok(
        "API key revoked",
        json!({"id": rec.id, "name": rec.name}),
    ))
}
