//! MemOS request and response shapes (memos-spec §1.3, §1.6, §1.7, §4.9). Unknown request
//! fields are ignored, as MemOS (pydantic) does; deprecated fields are normalised as MemOS does.
//! Wrong types are 400s with the field named.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use store::MemoryRecord;
use utoipa::ToSchema;

/// `POST /product/add`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, ToSchema)]
#[serde(default, deny_unknown_fields)]
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
    /// "fast" | "fine". Absent: fine for an async add (LLM extraction in the background, when
    /// an LLM is configured; the fast memories are searchable until it commits), fast for a
    /// sync add.
    pub mode: Option<String>,
    /// Tags.
    pub custom_tags: Option<Vec<String>>,
    /// Info stored on every memory.
    #[schema(value_type = Option<Object>)]
    pub info: Option<Map<String, Value>>,
    /// Messages: a string, OpenAI chat messages (with `chat_time`, `tool_calls`, content parts
    /// text/file/image_url) or raw content parts.
    #[schema(value_type = Object)]
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
    /// Context for extraction (kept as the feedback history when `is_feedback`).
    #[schema(value_type = Option<Object>)]
    pub chat_history: Option<Value>,
    /// Stamped on every memory as `info.manager_user_id`.
    pub manager_user_id: Option<String>,
    /// Stamped on every memory as `info.project_id`.
    pub project_id: Option<String>,
    /// The messages are skills, stored as SkillMemory in `skill_mem`: skill packages (zip with a
    /// `SKILL.md`), skill files, or skills written as message text.
    pub is_upload_skill: bool,
    /// Deprecated in MemOS, which ignores it; refused with a 400 when set.
    #[schema(value_type = Option<Object>)]
    pub operation: Option<Value>,
}

/// `POST /product/search`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
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
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Value>,
    /// All or one memory type.
    pub search_memory_type: String,
    /// Return embeddings in metadata.
    pub include_embedding: bool,
    /// System time (RFC 3339): search the memories as memos held them then (earlier versions,
    /// statuses of that moment; later additions invisible).
    pub as_of: Option<String>,
    /// Event time (RFC 3339): search what was true then (a fact replaced by feedback at a
    /// later event time shows its earlier version).
    pub event_as_of: Option<String>,
    /// Knowledge bases to search alongside the cubes (their chunks take at most half of
    /// top_k when the cubes have results too).
    pub knowledgebase_ids: Option<Vec<String>>,
    /// Rerank the candidates (default true): with the configured reranker, else the hybrid
    /// scorer's exact-cosine rescoring. false: refused (400) unless a reranker is configured.
    pub rerank: bool,
    /// "memory" (the only format; anything else is a 400).
    pub context_format: Option<String>,
    /// Web results as OuterMemory (a 400 when no internet search endpoint is configured).
    pub internet_search: bool,
    /// A minimum score, like `relativity` (the higher of the two applies).
    pub threshold: Option<f32>,
    /// "Now" for the fine-mode query rewrite (RFC 3339); fast mode refuses it.
    pub reference_time: Option<String>,
    /// The conversation so far, for the fine-mode query rewrite; fast mode refuses it.
    #[schema(value_type = Option<Object>)]
    pub chat_history: Option<Value>,
    /// MemOS's shared "MOS cube" (not supported: true is a 400).
    pub moscube: bool,
    /// Deprecated in MemOS, which ignores it; refused with a 400 when set.
    #[schema(value_type = Option<Object>)]
    pub operation: Option<Value>,
    /// MemOS's "plugin" retrieval path (not supported: a 400 when set).
    pub source: Option<String>,
    /// Adds the chunks before and after each document hit, at 0.8 × its score.
    pub neighbor_discovery: bool,
}

impl SearchRequest {
    /// The cubes searched: `readable_cube_ids` (or `mem_cube_id`, or `[user_id]`) then the
    /// knowledge bases, without repeats.
    pub fn cubes(&self) -> Result<Vec<String>, crate::error::ServerError> {
        let mut cubes = cube_list(&self.readable_cube_ids, &self.mem_cube_id, &self.user_id)?;
        for kb in self.knowledgebase_ids.iter().flatten() {
            store::validate_key_part("knowledge base id", kb)
                .map_err(|e| crate::error::ServerError::BadRequest(e.to_string()))?;
            if !cubes.contains(kb) {
                cubes.push(kb.clone());
            }
        }
        Ok(cubes)
    }
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
            as_of: None,
            event_as_of: None,
            knowledgebase_ids: None,
            rerank: true,
            context_format: None,
            internet_search: false,
            threshold: None,
            reference_time: None,
            chat_history: None,
            moscube: false,
            operation: None,
            source: None,
            neighbor_discovery: false,
        }
    }
}

/// `POST /product/delete_memory`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, ToSchema)]
#[serde(default, deny_unknown_fields)]
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
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Value>,
    /// Quick constraint.
    pub user_id: Option<String>,
    /// Quick constraint.
    pub session_id: Option<String>,
    /// Alias of session_id.
    pub conversation_id: Option<String>,
    /// With memory_ids: also delete the WorkingMemory bound to them (memos keeps no such
    /// bindings, so there is nothing more to delete); with another mode a 400.
    pub auto_cleanup_working: Option<bool>,
}

/// `POST /product/feedback`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FeedbackRequest {
    /// End user (required).
    pub user_id: Option<String>,
    /// Conversation.
    pub session_id: Option<String>,
    /// Business task id.
    pub task_id: Option<String>,
    /// The conversation the feedback is about.
    #[schema(value_type = Option<Object>)]
    pub history: Option<Value>,
    /// Memories the answer used.
    pub retrieved_memory_ids: Option<Vec<String>>,
    /// What the user said (required).
    pub feedback_content: Option<String>,
    /// When.
    pub feedback_time: Option<String>,
    /// Cubes (fallback `[user_id]`).
    pub writable_cube_ids: Option<Vec<String>>,
    /// Deprecated single cube.
    pub mem_cube_id: Option<String>,
    /// sync | async (default async).
    pub async_mode: Option<String>,
    /// Also produce a corrected answer (needs the LLM stage).
    pub corrected_answer: bool,
    /// Knowledge bases this feedback may change (none when absent).
    pub allow_knowledgebase_ids: Option<Vec<String>>,
    /// Agent (copied to the memories feedback writes).
    pub agent_id: Option<String>,
    /// App.
    pub app_id: Option<String>,
    /// Info.
    #[schema(value_type = Option<Object>)]
    pub info: Option<Map<String, Value>>,
}

/// `POST /product/get_memory`: a paginated export of one cube.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GetMemoryRequest {
    /// Cube (required).
    pub mem_cube_id: Option<String>,
    /// User (scope check).
    pub user_id: Option<String>,
    /// Include pref_mem.
    pub include_preference: bool,
    /// Include tool_mem.
    pub include_tool_memory: bool,
    /// Include skill_mem.
    pub include_skill_memory: bool,
    /// Filter (§4.8).
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Value>,
    /// 1-based page; with `page_size`. Both absent = export all (up to `limits.max_export`).
    pub page: Option<usize>,
    /// Items per page.
    pub page_size: Option<usize>,
}

impl Default for GetMemoryRequest {
    fn default() -> Self {
        GetMemoryRequest {
            mem_cube_id: None,
            user_id: None,
            include_preference: true,
            include_tool_memory: true,
            include_skill_memory: true,
            filter: None,
            page: None,
            page_size: None,
        }
    }
}

/// `POST /product/get_all`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GetAllRequest {
    /// User.
    pub user_id: Option<String>,
    /// text_mem | act_mem | param_mem | para_mem (required).
    pub memory_type: Option<String>,
    /// Cubes (fallback `[user_id]`).
    pub mem_cube_ids: Option<Vec<String>>,
    /// Only memories relevant to this query.
    pub search_query: Option<String>,
    /// fulltext (default) | embedding.
    pub search_type: Option<String>,
}

/// `POST /product/create_cube`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CreateCubeRequest {
    /// Name (required).
    pub cube_name: Option<String>,
    /// Owner (required).
    pub owner_id: Option<String>,
    /// Refused (400): cubes live in the server's data directory.
    pub cube_path: Option<String>,
    /// Id (default: a new uuid).
    pub cube_id: Option<String>,
}

/// `POST /product/exist_mem_cube_id`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ExistCubeRequest {
    /// Cube (required).
    pub mem_cube_id: Option<String>,
}

/// A string or a list of strings (the SDK accepts both for `user_id` and `agent_id`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    /// As a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// Cloud `POST add/message` (SDK `MemOSClient.add_message`).
#[derive(Debug, Clone, Serialize, Deserialize, Default, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CloudAddRequest {
    /// Messages (required).
    #[schema(value_type = Object)]
    pub messages: Option<Value>,
    /// User or users (each is a cube); this or agent_id is required.
    pub user_id: Option<OneOrMany>,
    /// Conversation.
    pub conversation_id: Option<String>,
    /// Info.
    #[schema(value_type = Option<Object>)]
    pub info: Option<Map<String, Value>>,
    /// Source.
    pub source: Option<String>,
    /// App.
    pub app_id: Option<String>,
    /// Agent or agents (the cube when no user_id is given).
    pub agent_id: Option<OneOrMany>,
    /// The SDK sends `asyncMode`; default true.
    #[serde(alias = "asyncMode")]
    pub async_mode: Option<bool>,
    /// Tags.
    pub tags: Option<Vec<String>>,
    /// Public memory (shared across keys) is not supported: true is a 400.
    pub allow_public: Option<bool>,
    /// Knowledge bases the extraction may consult: not supported, a non-empty list is a 400.
    pub allow_knowledgebase_ids: Option<Vec<String>>,
    /// Cloud memory views: not supported, a non-empty list is a 400.
    pub allow_memory_view: Option<Vec<String>>,
}

/// Cloud `POST search/memory`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CloudSearchRequest {
    /// Query (required).
    pub query: String,
    /// User (this or agent_id is required).
    pub user_id: Option<String>,
    /// Conversation (soft priority).
    pub conversation_id: Option<String>,
    /// Agent (filter).
    pub agent_id: Option<String>,
    /// Facts wanted.
    pub memory_limit_number: usize,
    /// Include preferences.
    pub include_preference: bool,
    /// Knowledge bases searched too.
    pub knowledgebase_ids: Option<Vec<String>>,
    /// Filter (§4.8).
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Value>,
    /// MemOS's plugin retrieval path: not supported, a 400 when set.
    pub source: Option<String>,
    /// Include tool memory.
    pub include_tool_memory: bool,
    /// Preferences wanted.
    pub preference_limit_number: usize,
    /// Tool memories wanted.
    pub tool_memory_limit_number: usize,
    /// Minimum score.
    pub relativity: Option<f32>,
    /// Include skills.
    pub include_skill: bool,
    /// Skills wanted.
    pub skill_limit_number: usize,
    /// Cloud memory views: not supported, a non-empty list is a 400.
    pub include_memory_view: Option<Vec<String>>,
    /// "memory" (the only format; anything else is a 400).
    pub context_format: Option<String>,
}

impl Default for CloudSearchRequest {
    fn default() -> Self {
        CloudSearchRequest {
            query: String::new(),
            user_id: None,
            conversation_id: None,
            agent_id: None,
            memory_limit_number: 6,
            include_preference: true,
            knowledgebase_ids: None,
            filter: None,
            source: None,
            include_tool_memory: false,
            preference_limit_number: 6,
            tool_memory_limit_number: 6,
            relativity: None,
            include_skill: false,
            skill_limit_number: 6,
            include_memory_view: None,
            context_format: None,
        }
    }
}

/// Cloud `POST get/memory`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CloudGetMemoryRequest {
    /// User (this or agent_id).
    pub user_id: Option<String>,
    /// Agent.
    pub agent_id: Option<String>,
    /// Include preferences.
    pub include_preference: bool,
    /// Include tool memory.
    pub include_tool_memory: bool,
    /// 1-based page.
    pub page: usize,
    /// Page size.
    pub size: usize,
    /// Filter.
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Value>,
    /// Cloud memory views: not supported, a non-empty list is a 400.
    pub include_memory_view: Option<Vec<String>>,
}

impl Default for CloudGetMemoryRequest {
    fn default() -> Self {
        CloudGetMemoryRequest {
            user_id: None,
            agent_id: None,
            include_preference: true,
            include_tool_memory: false,
            page: 1,
            size: 10,
            filter: None,
            include_memory_view: None,
        }
    }
}

/// Cloud `POST delete/memory`: exactly one of memory_ids, user_id, agent_id, filter.
#[derive(Debug, Clone, Serialize, Deserialize, Default, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CloudDeleteRequest {
    /// Ids.
    pub memory_ids: Option<Vec<String>>,
    /// All of a user's memories.
    pub user_id: Option<String>,
    /// All of an agent's memories (within the key's cubes).
    pub agent_id: Option<String>,
    /// Filter (within the key's cubes).
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Value>,
    /// Restrict to one memory type.
    pub memory_type: Option<String>,
}

/// Cloud `POST add/feedback`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CloudFeedbackRequest {
    /// User (required).
    pub user_id: Option<String>,
    /// Conversation.
    pub conversation_id: Option<String>,
    /// Feedback (required).
    pub feedback_content: Option<String>,
    /// Agent.
    pub agent_id: Option<String>,
    /// App.
    pub app_id: Option<String>,
    /// When.
    pub feedback_time: Option<String>,
    /// Public memory (shared across keys) is not supported: true is a 400.
    pub allow_public: Option<bool>,
    /// Knowledge bases this feedback may change (none when absent).
    pub allow_knowledgebase_ids: Option<Vec<String>>,
    /// Memories the answer used.
    pub retrieved_memory_ids: Option<Vec<String>>,
    /// sync (wait and return what changed) | async (default).
    pub async_mode: Option<String>,
}

/// Cloud `POST get/status`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CloudStatusRequest {
    /// Task (required).
    pub task_id: Option<String>,
}

/// Cloud `POST create/knowledgebase`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CreateKbRequest {
    /// Name (required).
    #[serde(alias = "name")]
    pub knowledgebase_name: Option<String>,
    /// Description.
    #[serde(alias = "description")]
    pub knowledgebase_description: Option<String>,
}

/// Cloud `POST delete/knowledgebase`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DeleteKbRequest {
    /// Knowledge base (required).
    pub knowledgebase_id: Option<String>,
}

/// One file of `add/knowledgebase-file`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct KbFile {
    /// File id (default: a new uuid).
    pub file_id: Option<String>,
    /// Name.
    #[serde(alias = "filename", alias = "name")]
    pub file_name: Option<String>,
    /// Text content.
    #[serde(alias = "text", alias = "file_data")]
    pub content: Option<String>,
    /// MIME type (else guessed from the name and content: text, Markdown, HTML, PDF).
    #[serde(alias = "type")]
    pub mime: Option<String>,
    /// Binary content (e.g. a PDF), base64; instead of `content`.
    pub data_base64: Option<String>,
}

/// Cloud `POST get/knowledgebase-file`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GetKbFileRequest {
    /// Files to list (or every file of `knowledgebase_id`).
    pub file_ids: Option<Vec<String>>,
    /// Knowledge base.
    pub knowledgebase_id: Option<String>,
    /// Page (1-based).
    pub page: Option<usize>,
    /// Page size.
    pub page_size: Option<usize>,
    /// File type (`skill`): not supported yet, a 400 when set.
    #[serde(rename = "type")]
    pub file_type: Option<String>,
}

/// Cloud `POST delete/knowledgebase-file`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DeleteKbFileRequest {
    /// Files to delete (required).
    pub file_ids: Option<Vec<String>>,
    /// Knowledge base (default: every knowledge base the key may write).
    pub knowledgebase_id: Option<String>,
}

/// Cloud `POST add/knowledgebase-file` (JSON form).
#[derive(Debug, Clone, Serialize, Deserialize, Default, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AddKbFileRequest {
    /// Knowledge base (required).
    pub knowledgebase_id: Option<String>,
    /// Files with text content.
    pub file: Vec<KbFile>,
    /// File type (`skill`): not supported yet, a 400 when set.
    #[serde(rename = "type")]
    pub file_type: Option<String>,
}

/// `POST /admin/keys`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// Name (required).
    pub name: String,
    /// Cube patterns ("*", "prefix*", exact).
    pub cubes: Vec<String>,
    /// User patterns.
    pub users: Vec<String>,
    /// May read.
    pub read: bool,
    /// May write.
    pub write: bool,
    /// Requests per minute (0 = server default).
    pub rate_limit_per_minute: u32,
}

impl Default for CreateKeyRequest {
    fn default() -> Self {
        CreateKeyRequest {
            name: String::new(),
            cubes: vec![],
            users: vec!["*".into()],
            read: true,
            write: true,
            rate_limit_per_minute: 0,
        }
    }
}

/// The envelope every `/product` and cloud response uses.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Envelope {
    /// 200 on success (`/product`), 0 (cloud), the HTTP status on errors.
    pub code: i32,
    /// What happened.
    pub message: String,
    /// The payload; null on errors.
    #[schema(value_type = Object)]
    pub data: Value,
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

/// The cubes a request names: its list, else the deprecated single cube, else `[user_id]`;
/// de-duplicated and validated.
pub fn cube_list(
    primary: &Option<Vec<String>>,
    deprecated: &Option<String>,
    user: &Option<String>,
) -> Result<Vec<String>, crate::error::ServerError> {
    let mut cubes: Vec<String> = match (primary, deprecated, user) {
        (Some(c), _, _) if !c.is_empty() => c.clone(),
        (_, Some(c), _) => vec![c.clone()],
        (_, _, Some(u)) => vec![u.clone()],
        _ => {
            return Err(crate::error::ServerError::BadRequest(
                "user_id or cube ids are required".into(),
            ));
        }
    };
    let mut seen = std::collections::HashSet::new();
    cubes.retain(|c| seen.insert(c.clone()));
    for c in &cubes {
        store::validate_key_part("cube id", c)
            .map_err(|e| crate::error::ServerError::BadRequest(e.to_string()))?;
    }
    Ok(cubes)
}
