//! MemOS request and response shapes (memos-spec §1.3, §4.9). Unknown request fields are
//! ignored, as MemOS (pydantic) does; deprecated fields are normalised as MemOS does.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use store::MemoryRecord;

/// `POST /product/add`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct AddRequest {
    /// End user.
    pub user_id: Option<String>,
    /// Conversation.
    pub session_id: Option<String>,
    /// Business task id.
    pub task_id: Option<String>,
    /// Cubes to write (fallback `[user_id]`).
    pub writable_cube_ids: Option<Vec<String>>,
    /// Deprecated: single cube.
    pub mem_cube_id: Option<String>,
    /// "sync" | "async" (default async).
    pub async_mode: Option<String>,
    /// "fast" | "fine".
    pub mode: Option<String>,
    /// Tags.
    pub custom_tags: Option<Vec<String>>,
    /// Info stored on every memory.
    pub info: Option<Map<String, Value>>,
    /// Messages (any MemOS format).
    pub messages: Option<Value>,
    /// Deprecated: text appended as a text part.
    pub memory_content: Option<String>,
    /// Deprecated: a file path appended as a file part.
    pub doc_path: Option<String>,
    /// Deprecated: moved to `info.source`.
    pub source: Option<String>,
    /// Agent.
    pub agent_id: Option<String>,
    /// App.
    pub app_id: Option<String>,
    /// Producer-chosen idempotency key (memos extension).
    pub event_id: Option<String>,
    /// Route to feedback.
    pub is_feedback: bool,
}

/// `POST /product/search`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SearchRequest {
    /// Query text.
    pub query: String,
    /// End user.
    pub user_id: Option<String>,
    /// Cubes to read (fallback `[user_id]`).
    pub readable_cube_ids: Option<Vec<String>>,
    /// Deprecated: single cube.
    pub mem_cube_id: Option<String>,
    /// fast | fine | mixture (fine and mixture behave as fast until an LLM is configured).
    pub mode: String,
    /// Session to prioritise.
    pub session_id: Option<String>,
    /// Text results wanted.
    pub top_k: usize,
    /// Minimum fused score (None = server default).
    pub relativity: Option<f32>,
    /// no | sim | mmr.
    pub dedup: Option<String>,
    /// Include pref_mem.
    pub include_preference: bool,
    /// pref_mem size.
    pub pref_top_k: usize,
    /// Include tool_mem.
    pub search_tool_memory: bool,
    /// tool_mem size.
    pub tool_mem_top_k: usize,
    /// Include skill_mem.
    pub include_skill_memory: bool,
    /// skill_mem size.
    pub skill_mem_top_k: usize,
    /// Filter (§4.8).
    pub filter: Option<Value>,
    /// All or one memory type.
    pub search_memory_type: String,
    /// Return embeddings in metadata.
    pub include_embedding: bool,
}

impl Default for SearchRequest {
    fn default() -> Self {
        SearchRequest {
            query: String::new(),
            user_id: None,
            readable_cube_ids: None,
            mem_cube_id: None,
            mode: "fast".into(),
            session_id: None,
            top_k: 10,
            relativity: None,
            dedup: None,
            include_preference: true,
            pref_top_k: 6,
            search_tool_memory: true,
            tool_mem_top_k: 6,
            include_skill_memory: true,
            skill_mem_top_k: 3,
            filter: None,
            search_memory_type: "All".into(),
            include_embedding: false,
        }
    }
}

/// `POST /product/delete_memory`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct DeleteRequest {
    /// Mode (a): ids.
    pub memory_ids: Option<Vec<String>>,
    /// Mode (b): file ids.
    pub file_ids: Option<Vec<String>>,
    /// Scope for file ids and filters.
    pub writable_cube_ids: Option<Vec<String>>,
    /// Deprecated single cube.
    pub mem_cube_id: Option<String>,
    /// Mode (c): filter.
    pub filter: Option<Value>,
    /// Quick constraint.
    pub user_id: Option<String>,
    /// Quick constraint.
    pub session_id: Option<String>,
    /// Alias of session_id.
    pub conversation_id: Option<String>,
}

/// The MemOS envelope.
pub fn envelope(message: &str, data: Value) -> Value {
    json!({"code": 200, "message": message, "data": data})
}

/// A search/get item in MemOS shape: `{id, memory, ref_id, metadata{…}}`.
pub fn format_item(
    r: &MemoryRecord,
    relativity: Option<f32>,
    extra: Option<Value>,
    include_embedding: bool,
) -> Value {
    let ref_id = format!("[{}]", r.id.split('-').next().unwrap_or(&r.id));
    let mut meta = json!({
        "id": r.id,
        "memory": r.memory,
        "ref_id": ref_id,
        "cube_id": r.cube_id,
        "user_id": r.user_id,
        "session_id": r.session_id,
        "agent_id": r.agent_id,
        "app_id": r.app_id,
        "status": r.status.as_str(),
        "type": "fact",
        "memory_type": r.memory_type.as_str(),
        "key": r.key,
        "tags": r.tags,
        "info": r.info,
        "source": r.source,
        "sources": r.sources,
        "confidence": r.confidence,
        "created_at": store::time::micros_to_rfc3339(r.created_at),
        "updated_at": store::time::micros_to_rfc3339(r.updated_at),
        "event_time": r.event_time.map(store::time::micros_to_rfc3339),
        "version": r.version,
        "history": r.history.iter().map(|h| json!({
            "version": h.version, "memory": h.memory, "update_type": h.update_type,
            "archived_at": store::time::micros_to_rfc3339(h.archived_at), "merged_from": h.merged_from,
        })).collect::<Vec<_>>(),
        "file_ids": r.file_ids,
        "is_fast": r.tags.iter().any(|t| t == "mode:fast"),
        "embedding": if include_embedding { json!(r.embedding) } else { json!([]) },
        "usage": [],
        "background": "",
        "visibility": null,
    });
    if let Some(s) = relativity {
        meta["relativity"] = json!(s);
    }
    if let (Some(Value::Object(e)), Value::Object(m)) = (extra, &mut meta) {
        m.extend(e);
    }
    json!({"id": r.id, "memory": r.memory, "ref_id": ref_id, "metadata": meta})
}
