//! MemOS request fields memos does not act on are refused by name, never ignored: each check
//! here answers a 400 whose message starts with the field and says why. Fields outside MemOS's
//! request models are refused by serde (`deny_unknown_fields`) with the field named too. What
//! memos honours is listed beside each request type in `api.rs`; `tests/tests/fields.rs` walks
//! every field of every MemOS request model.

use serde_json::Value;

use crate::api::{AddRequest, CloudAddRequest, CreateCubeRequest, DeleteRequest, SearchRequest};
use crate::error::ServerError;

/// A 400 naming `field` and why it is refused.
pub(crate) fn refuse(field: &str, why: &str) -> ServerError {
    ServerError::BadRequest(format!("{field}: {why}"))
}

fn set(v: &Option<Value>) -> bool {
    v.as_ref().is_some_and(|v| !v.is_null())
}

/// MemOS's deprecated `operation` (a permission list its handlers never read).
const OPERATION: &str =
    "deprecated in MemOS and ignored there; memos refuses it rather than ignore it: remove it";

/// `POST /product/add`.
pub(crate) fn check_add(req: &AddRequest) -> Result<(), ServerError> {
    if req.is_upload_skill && req.is_feedback {
        return Err(refuse(
            "is_upload_skill",
            "a skill upload cannot also be feedback (is_feedback)",
        ));
    }
    if set(&req.operation) {
        return Err(refuse("operation", OPERATION));
    }
    Ok(())
}

/// What the server has configured that some fields need.
pub(crate) struct Configured {
    /// An LLM query rewrite runs (fine or mixture mode with a chat model configured).
    pub rewrites: bool,
    /// An HTTP reranker (`[search.rerank]`).
    pub reranker: bool,
    /// Internet search (`[search.internet]`).
    pub internet: bool,
}

/// `POST /product/search` (and every search built from one).
pub(crate) fn check_search(req: &SearchRequest, has: &Configured) -> Result<(), ServerError> {
    if !req.rerank && !has.reranker {
        return Err(refuse(
            "rerank",
            "false is not supported without a reranker ([search.rerank]): memos then always ranks with its hybrid scorer (exact cosine + BM25)",
        ));
    }
    if let Some(f) = req.context_format.as_deref()
        && f != "memory"
    {
        return Err(refuse(
            "context_format",
            &format!("\"{f}\" is not supported; the only format is \"memory\""),
        ));
    }
    if req.internet_search && !has.internet {
        return Err(refuse(
            "internet_search",
            "no internet search endpoint is configured ([search.internet])",
        ));
    }
    if let Some(t) = req.threshold
        && !(0.0..=1.0).contains(&t)
    {
        return Err(refuse("threshold", &format!("{t} is outside 0..=1")));
    }
    if req.moscube {
        return Err(refuse(
            "moscube",
            "MemOS's shared MOS cube is not supported; name the cubes in readable_cube_ids",
        ));
    }
    if set(&req.operation) {
        return Err(refuse("operation", OPERATION));
    }
    if req.source.is_some() {
        return Err(refuse(
            "source",
            "MemOS's plugin retrieval path is not supported; omit source",
        ));
    }
    for (field, given) in [
        ("chat_history", set(&req.chat_history)),
        ("reference_time", req.reference_time.is_some()),
    ] {
        if given && !has.rewrites {
            return Err(refuse(
                field,
                "used only by the fine-mode query rewrite, which needs mode fine or mixture and a configured LLM",
            ));
        }
    }
    if let Some(h) = req.chat_history.as_ref().filter(|h| !h.is_null())
        && let Err(e) = operators::event::parse_messages(h)
    {
        return Err(refuse("chat_history", &e.to_string()));
    }
    if let Some(t) = req.reference_time.as_deref()
        && store::time::parse_time(t).is_none()
    {
        return Err(refuse("reference_time", &format!("\"{t}\" is not a time")));
    }
    Ok(())
}

/// `POST /product/create_cube`.
pub(crate) fn check_create_cube(req: &CreateCubeRequest) -> Result<(), ServerError> {
    if req.cube_path.is_some() {
        return Err(refuse(
            "cube_path",
            "cubes live in the server's data directory; omit cube_path",
        ));
    }
    Ok(())
}

/// `POST /product/delete_memory`.
pub(crate) fn check_delete(req: &DeleteRequest) -> Result<(), ServerError> {
    if req.auto_cleanup_working == Some(true) && req.memory_ids.is_none() {
        return Err(refuse(
            "auto_cleanup_working",
            "applies to deletes by memory_ids only",
        ));
    }
    Ok(())
}

/// Cloud knowledge-base file uploads: `type` — absent (documents) or `skill` (each file is a
/// skill package or skill file, stored as SkillMemory). True when the files are skills.
pub(crate) fn kb_upload_type(t: &Option<String>) -> Result<bool, ServerError> {
    match t.as_deref() {
        None => Ok(false),
        Some("skill") => Ok(true),
        Some(t) => Err(refuse(
            "type",
            &format!("\"{t}\" is not a knowledge-base file type (absent: documents, or skill)"),
        )),
    }
}

/// Cloud knowledge-base file listing: `type` is not a filter memos offers.
pub(crate) fn check_kb_list_type(t: &Option<String>) -> Result<(), ServerError> {
    match t.as_deref() {
        None => Ok(()),
        Some(_) => Err(refuse(
            "type",
            "listing files by type is not supported; list by knowledgebase_id or file_ids",
        )),
    }
}

const PUBLIC: &str = "public memory (shared across API keys) is not supported";
const VIEWS: &str = "cloud memory views are not supported";

fn listed(v: &Option<Vec<String>>) -> bool {
    v.as_ref().is_some_and(|l| !l.is_empty())
}

/// Cloud `add/message`.
pub(crate) fn check_cloud_add(req: &CloudAddRequest) -> Result<(), ServerError> {
    if req.allow_public == Some(true) {
        return Err(refuse("allow_public", PUBLIC));
    }
    if listed(&req.allow_knowledgebase_ids) {
        return Err(refuse(
            "allow_knowledgebase_ids",
            "extraction does not consult knowledge bases; search them with knowledgebase_ids",
        ));
    }
    if listed(&req.allow_memory_view) {
        return Err(refuse("allow_memory_view", VIEWS));
    }
    Ok(())
}

/// Cloud `search/memory` and `get/memory`: `include_memory_view`.
pub(crate) fn check_memory_view(v: &Option<Vec<String>>) -> Result<(), ServerError> {
    if listed(v) {
        return Err(refuse("include_memory_view", VIEWS));
    }
    Ok(())
}

/// Cloud `add/feedback`: `allow_public`.
pub(crate) fn check_public(v: Option<bool>) -> Result<(), ServerError> {
    if v == Some(true) {
        return Err(refuse("allow_public", PUBLIC));
    }
    Ok(())
}
