//! The OpenAPI document, generated from the handlers' annotations. `memos openapi` prints it;
//! `openapi.json` in the repository is that output, and a test keeps the two equal.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(c) = openapi.components.as_mut() {
            c.add_security_scheme(
                "token",
                SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                    "Authorization",
                    "`Token <key>` (the MemOS cloud scheme) or `Bearer <key>`. Not needed in open mode.",
                ))),
            );
        }
    }
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "memos", description = "A memory operating system for AI agents: the MemOS self-hosted API (/product), the MemOS cloud API shapes (/api/openmem/v1) key administration and SQL."),
    paths(
        super::health, super::ready,
        super::product::add, super::product::search, super::product::feedback,
        super::product::get_all, super::product::get_memory, super::product::get_memory_by_id,
        super::product::get_memory_by_ids, super::product::delete_memory,
        super::product::create_cube, super::product::exist_mem_cube_id,
        super::product::scheduler_status, super::product::scheduler_allstatus,
        super::product::scheduler_wait,
        super::scheduler::task_queue_status, super::scheduler::wait_stream,
        super::extras::get_memory_dashboard, super::extras::register_cube,
        super::extras::get_user_names_by_memory_ids, super::extras::suggestions,
        super::cloud::add_message, super::cloud::search_memory, super::cloud::get_memory,
        super::cloud::get_memory_by_id, super::cloud::delete_memory, super::cloud::add_feedback,
        super::cloud::get_status, super::cloud::create_knowledgebase,
        super::cloud::delete_knowledgebase, super::cloud::add_knowledgebase_file,
        super::cloud::rerank, super::cloud_more::update_memory, super::cloud_more::get_message,
        super::admin::create_key, super::admin::list_keys, super::admin::revoke_key,
        super::sql::query,
        super::control::delete_by_record_id, super::control::recover_by_record_id,
        super::control::create_kb, super::control::list_kbs, super::control::get_kb,
        super::control::delete_kb, super::control::add_kb_files, super::control::list_kb_files,
        super::control::delete_kb_file, super::control::cloud_get_kb_files,
        super::control::cloud_delete_kb_files, super::control::tool_stats,
        super::control::export_cube, super::control::import_cube,
        super::chat::complete, super::chat::stream, super::chat::stream_playground,
        super::chat::cloud_chat,
        super::kv::download, super::kv::meta, super::kv::rebuild,
    ),
    components(schemas(crate::api::Envelope, crate::api::KbFile)),
    modifiers(&Security),
    tags(
        (name = "product", description = "MemOS self-hosted API (memos-spec §1.2)"),
        (name = "scheduler", description = "Async task status"),
        (name = "cloud", description = "MemOS cloud API shapes, for MemOSClient (memos-spec §1.6)"),
        (name = "knowledgebase", description = "Knowledge bases: documents chunked, embedded and searchable beside a user's cube"),
        (name = "chat", description = "Chat with memory (needs an LLM: [llm] in the config)"),
        (name = "activation", description = "Activation memory: precomputed KV caches of each cube's activated memories for the local model ([activation] in the config)"),
        (name = "admin", description = "API keys (master key)"),
        (name = "sql", description = "Read-only SQL over memory (DataFusion)"),
        (name = "service", description = "Health and readiness"),
    )
)]
pub struct ApiDoc;

/// The document as pretty JSON (what `openapi.json` holds).
pub fn json() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    doc.to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// `GET /openapi.json`.
pub async fn serve() -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        json(),
    )
}
