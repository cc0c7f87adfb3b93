//! The event envelope (design brief "Events") and MemOS message formats (memos-spec §1.4).
//! Decoding validates: a malformed event is rejected with the reason, never half-applied.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{OperatorError, Result};

/// Envelope schema version this build writes and accepts.
pub const EVENT_VERSION: u32 = 1;

/// What an event carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Conversation messages.
    Messages,
    /// A tool call with its result.
    ToolCall,
    /// A document.
    Document,
    /// Feedback on memories.
    Feedback,
    /// A delete by ids or filter.
    Delete,
    /// Skills to store as `SkillMemory` (`payload.messages`: texts, skill files, packages).
    Skill,
}

/// Extraction mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Store turns as they are (no LLM).
    #[default]
    Fast,
    /// LLM extraction (later issue); behaves as fast until an LLM is configured.
    Fine,
}

/// One event, as published to Kafka/NATS or produced by an HTTP add.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Envelope version (default 1).
    #[serde(default = "default_version")]
    pub version: u32,
    /// Producer-chosen idempotency key.
    #[serde(default)]
    pub event_id: Option<String>,
    /// Kind.
    pub kind: EventKind,
    /// Cube (partition key).
    pub cube_id: String,
    /// End user.
    pub user_id: String,
    /// Conversation.
    #[serde(default)]
    pub session_id: Option<String>,
    /// Agent.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// Application.
    #[serde(default)]
    pub app_id: Option<String>,
    /// RFC 3339 event time.
    #[serde(default)]
    pub time: Option<String>,
    /// Extraction mode.
    #[serde(default)]
    pub mode: Mode,
    /// Tags for every memory produced.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Info stored on every memory produced.
    #[serde(default)]
    pub info: Map<String, Value>,
    /// Kind-specific payload.
    #[serde(default)]
    pub payload: Value,
}

fn default_version() -> u32 {
    EVENT_VERSION
}

/// A tool call of an assistant message (OpenAI `tool_calls`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ToolCall {
    /// Call id, matched by the tool message's `tool_call_id`.
    pub id: Option<String>,
    /// Tool name.
    pub name: String,
    /// Arguments (JSON text as sent).
    pub arguments: String,
}

/// A file part with its content inline (plain text, or a base64 `data:` URL such as a PDF).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FilePart {
    /// File id, if given.
    pub file_id: Option<String>,
    /// File name.
    pub filename: String,
    /// MIME type (from a `data:` URL).
    pub mime: Option<String>,
    /// Content.
    pub bytes: Vec<u8>,
}

/// A normalised chat message.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatMessage {
    /// user, assistant, system, tool (or "doc" for raw parts).
    pub role: String,
    /// Speaker name.
    pub name: Option<String>,
    /// Text (content parts joined).
    pub content: String,
    /// Time as given.
    pub chat_time: Option<String>,
    /// Producer message id.
    pub message_id: Option<String>,
    /// Tool call id (tool messages).
    pub tool_call_id: Option<String>,
    /// Tool calls an assistant message made.
    pub tool_calls: Vec<ToolCall>,
    /// Image parts: (url, caption or alt text).
    pub images: Vec<(String, Option<String>)>,
    /// File parts with inline content (chunked as documents).
    pub files: Vec<FilePart>,
    /// File ids of file parts.
    pub file_ids: Vec<String>,
}

/// Checks a list of memory ids: an array of strings, each a valid key part.
fn memory_id_list(what: &str, v: &Value) -> Result<()> {
    let list = v
        .as_array()
        .ok_or_else(|| bad(format!("{what} must be an array of memory ids")))?;
    for (i, id) in list.iter().enumerate() {
        let id = id
            .as_str()
            .ok_or_else(|| bad(format!("{what}[{i}] must be a string")))?;
        store::validate_key_part(&format!("{what}[{i}]"), id).map_err(|e| bad(e.to_string()))?;
    }
    Ok(())
}

fn bad(m: impl Into<String>) -> OperatorError {
    OperatorError::Invalid(m.into())
}

fn part_text(p: &Value, file_ids: &mut Vec<String>) -> Result<String> {
    let ty = p.get("type").and_then(Value::as_str).unwrap_or("text");
    Ok(match ty {
        "text" | "input_text" => p
            .get("text")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("a text part needs \"text\""))?
            .to_string(),
        "file" => {
            let f = p
                .get("file")
                .ok_or_else(|| bad("a file part needs \"file\""))?;
            if let Some(id) = f.get("file_id").and_then(Value::as_str) {
                file_ids.push(id.to_string());
            }
            let name = f.get("filename").and_then(Value::as_str).unwrap_or("file");
            match f.get("file_data").and_then(Value::as_str) {
                // Inline content becomes document chunks (see `file_of`); the turn names it.
                Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                    format!("[file {name}: {url}]")
                }
                _ => format!("[file {name}]"),
            }
        }
        "image_url" => {
            let url = p
                .pointer("/image_url/url")
                .and_then(Value::as_str)
                .unwrap_or("");
            let url = if url.starts_with("data:") {
                "inline image"
            } else {
                url
            };
            match image_of(p).and_then(|(_, c)| c) {
                Some(c) => format!("[image: {url}] {c}"),
                None => format!("[image: {url}]"),
            }
        }
        "input_audio" => "[audio]".to_string(),
        other => return Err(bad(format!("unknown content part type \"{other}\""))),
    })
}

/// A file part's inline content: text as is, or a base64 `data:` URL decoded. URLs are not
/// fetched (the part stays a reference in the turn).
fn file_of(p: &Value) -> Result<Option<FilePart>> {
    if p.get("type").and_then(Value::as_str) != Some("file") {
        return Ok(None);
    }
    let Some(f) = p.get("file") else {
        return Ok(None);
    };
    let Some(d) = f.get("file_data").and_then(Value::as_str) else {
        return Ok(None);
    };
    if d.starts_with("http://") || d.starts_with("https://") || d.trim().is_empty() {
        return Ok(None);
    }
    let filename = f
        .get("filename")
        .and_then(Value::as_str)
        .unwrap_or("file")
        .to_string();
    let file_id = f.get("file_id").and_then(Value::as_str).map(String::from);
    let (mime, bytes) = match d.strip_prefix("data:") {
        Some(rest) => {
            let (meta, data) = rest
                .split_once(',')
                .ok_or_else(|| bad(format!("file {filename}: a data: URL needs a comma")))?;
            let mime = meta
                .split(';')
                .next()
                .filter(|m| !m.is_empty())
                .map(String::from);
            let bytes = if meta.ends_with(";base64") {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .map_err(|e| bad(format!("file {filename}: base64: {e}")))?
            } else {
                data.as_bytes().to_vec()
            };
            (mime, bytes)
        }
        None => match raw_base64(d) {
            Some(bytes) => (None, bytes),
            None => (None, d.as_bytes().to_vec()),
        },
    };
    Ok(Some(FilePart {
        file_id,
        filename,
        mime,
        bytes,
    }))
}

/// MemOS accepts `file_data` as raw base64 (no `data:` prefix). A string is taken for base64
/// when it is one token of at least 16 base64 characters that decodes to a known binary
/// document (PDF, zip container: DOCX/PPTX/XLSX/ODS, OLE: XLS) or to UTF-8 text; anything else
/// (prose, a hex digest) stays text.
fn raw_base64(d: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let compact: String = d.split_whitespace().collect();
    if compact.len() < 16 || d.trim().contains(' ') {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .ok()?;
    let binary = bytes.starts_with(b"%PDF-")
        || bytes.starts_with(b"PK\x03\x04")
        || bytes.starts_with(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]);
    (binary || std::str::from_utf8(&bytes).is_ok()).then_some(bytes)
}

/// An image part's URL and caption (`alt`, `caption` or `detail` text beside the URL).
fn image_of(p: &Value) -> Option<(String, Option<String>)> {
    if p.get("type").and_then(Value::as_str) != Some("image_url") {
        return None;
    }
    let url = p
        .pointer("/image_url/url")
        .and_then(Value::as_str)
        .filter(|u| !u.starts_with("data:"))?;
    let caption = ["alt", "caption"]
        .iter()
        .find_map(|k| {
            p.get(*k)
                .or_else(|| p.pointer(&format!("/image_url/{k}")))
                .and_then(Value::as_str)
        })
        .map(String::from);
    Some((url.to_string(), caption))
}

fn content_text(c: &Value, file_ids: &mut Vec<String>) -> Result<String> {
    match c {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let texts: Result<Vec<String>> = parts.iter().map(|p| part_text(p, file_ids)).collect();
            Ok(texts?
                .into_iter()
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
                .join("\n"))
        }
        other => Err(bad(format!(
            "message content must be a string or a list of parts, got {other}"
        ))),
    }
}

/// Parses MemOS `MessagesType`: a string, a list of chat messages, or a list of raw parts.
pub fn parse_messages(v: &Value) -> Result<Vec<ChatMessage>> {
    match v {
        Value::String(s) => Ok(vec![ChatMessage {
            role: "user".into(),
            content: s.clone(),
            ..Default::default()
        }]),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, m) in items.iter().enumerate() {
                let Value::Object(o) = m else {
                    return Err(bad(format!("messages[{i}] must be an object")));
                };
                let mut file_ids = Vec::new();
                if let Some(role) = o.get("role") {
                    let role = role
                        .as_str()
                        .ok_or_else(|| bad(format!("messages[{i}].role must be a string")))?;
                    if !matches!(role, "user" | "assistant" | "system" | "tool" | "developer") {
                        return Err(bad(format!(
                            "messages[{i}].role \"{role}\" is not user, assistant, system or tool"
                        )));
                    }
                    let mut content =
                        content_text(o.get("content").unwrap_or(&Value::Null), &mut file_ids)?;
                    let (images, files) = match o.get("content") {
                        Some(Value::Array(parts)) => (
                            parts.iter().filter_map(image_of).collect(),
                            parts
                                .iter()
                                .map(file_of)
                                .filter_map(Result::transpose)
                                .collect::<Result<Vec<_>>>()?,
                        ),
                        _ => (Vec::new(), Vec::new()),
                    };
                    let mut tool_calls = Vec::new();
                    if let Some(Value::Array(calls)) = o.get("tool_calls") {
                        for c in calls {
                            let name = c
                                .pointer("/function/name")
                                .and_then(Value::as_str)
                                .unwrap_or("tool");
                            let args = c.pointer("/function/arguments").map(|a| match a {
                                Value::String(s) => s.clone(),
                                other => other.to_string(),
                            });
                            content.push_str(&format!(
                                "{}[tool call {name}({})]",
                                if content.is_empty() { "" } else { " " },
                                args.clone().unwrap_or_default()
                            ));
                            tool_calls.push(ToolCall {
                                id: c.get("id").and_then(Value::as_str).map(String::from),
                                name: name.to_string(),
                                arguments: args.unwrap_or_default(),
                            });
                        }
                    }
                    let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
                    out.push(ChatMessage {
                        role: if role == "developer" {
                            "system".into()
                        } else {
                            role.to_string()
                        },
                        name: s("name"),
                        content,
                        chat_time: s("chat_time"),
                        message_id: s("message_id"),
                        tool_call_id: s("tool_call_id"),
                        tool_calls,
                        images,
                        files,
                        file_ids,
                    });
                } else if o.contains_key("type") {
                    let content = part_text(m, &mut file_ids)?;
                    out.push(ChatMessage {
                        role: "doc".into(),
                        content,
                        images: image_of(m).into_iter().collect(),
                        files: file_of(m)?.into_iter().collect(),
                        file_ids,
                        ..Default::default()
                    });
                } else {
                    return Err(bad(format!(
                        "messages[{i}] has neither \"role\" nor \"type\""
                    )));
                }
            }
            Ok(out)
        }
        Value::Null => Err(bad("messages are missing")),
        other => Err(bad(format!(
            "messages must be a string or a list, got {other}"
        ))),
    }
}

impl Event {
    /// Decodes and validates an event from JSON bytes.
    pub fn decode(bytes: &[u8], max_bytes: usize) -> Result<Event> {
        if bytes.len() > max_bytes {
            return Err(bad(format!(
                "event is {} bytes, the limit is {max_bytes}",
                bytes.len()
            )));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|e| bad(format!("event is not valid UTF-8: {e}")))?;
        let ev: Event = serde_json::from_str(text).map_err(|e| bad(format!("event JSON: {e}")))?;
        ev.validate()?;
        Ok(ev)
    }

    /// Checks the envelope and its payload.
    pub fn validate(&self) -> Result<()> {
        if self.version != EVENT_VERSION {
            return Err(bad(format!(
                "event version {} is not supported (expected {EVENT_VERSION})",
                self.version
            )));
        }
        store::validate_key_part("cube_id", &self.cube_id).map_err(|e| bad(e.to_string()))?;
        store::validate_key_part("user_id", &self.user_id).map_err(|e| bad(e.to_string()))?;
        if let Some(s) = &self.session_id {
            store::validate_key_part("session_id", s).map_err(|e| bad(e.to_string()))?;
        }
        for (what, v) in [
            ("event_id", &self.event_id),
            ("agent_id", &self.agent_id),
            ("app_id", &self.app_id),
        ] {
            if let Some(v) = v {
                store::validate_key_part(what, v).map_err(|e| bad(e.to_string()))?;
            }
        }
        if let Some(k) = self
            .info
            .keys()
            .find(|k| store::model::INTERNAL_INFO_KEYS.contains(&k.as_str()))
        {
            return Err(bad(format!(
                "info key \"{k}\" is reserved for the server (internal links between memories); rename it"
            )));
        }
        if let Some(t) = &self.time
            && store::time::parse_time(t).is_none()
        {
            return Err(bad(format!("time \"{t}\" is not RFC 3339")));
        }
        match self.kind {
            EventKind::Messages | EventKind::Skill => {
                let m = self
                    .payload
                    .get("messages")
                    .ok_or_else(|| bad("a messages or skill event needs payload.messages"))?;
                let msgs = parse_messages(m)?;
                if msgs.is_empty() {
                    return Err(bad("payload.messages is empty"));
                }
            }
            EventKind::ToolCall => {
                if self.payload.get("name").and_then(Value::as_str).is_none() {
                    return Err(bad("a tool_call event needs payload.name"));
                }
            }
            EventKind::Document => {
                let text = self.payload.get("text").and_then(Value::as_str);
                let data = self.payload.get("data_base64").and_then(Value::as_str);
                if text.is_none() == data.is_none() {
                    return Err(bad(
                        "a document event needs exactly one of payload.text (UTF-8: text, Markdown, HTML) or payload.data_base64 (e.g. PDF)",
                    ));
                }
            }
            EventKind::Feedback => {
                if let Some(ids) = self
                    .payload
                    .get("retrieved_memory_ids")
                    .filter(|v| !v.is_null())
                {
                    memory_id_list("payload.retrieved_memory_ids", ids)?;
                }
                if self
                    .payload
                    .get("feedback_content")
                    .and_then(Value::as_str)
                    .is_none()
                {
                    return Err(bad("a feedback event needs payload.feedback_content"));
                }
            }
            EventKind::Delete => {
                let ids = self.payload.get("memory_ids").and_then(Value::as_array);
                let filter = self.payload.get("filter").filter(|f| !f.is_null());
                if ids.is_none() == filter.is_none() {
                    return Err(bad(
                        "a delete event needs exactly one of payload.memory_ids or payload.filter",
                    ));
                }
                if let Some(f) = filter
                    && store::Filter::parse(f)
                        .map_err(|e| bad(e.to_string()))?
                        .is_true()
                {
                    return Err(bad(
                        "a delete event's payload.filter is empty: it would delete every memory of the user; refused",
                    ));
                }
                if let Some(ids) = self.payload.get("memory_ids") {
                    memory_id_list("payload.memory_ids", ids)?;
                }
            }
        }
        Ok(())
    }

    /// The event id, or a content-derived one (so a producer that omits it still gets
    /// idempotent replays of byte-identical events).
    pub fn id(&self) -> String {
        match &self.event_id {
            Some(id) => id.clone(),
            None => {
                use sha2::{Digest, Sha256};
                let bytes = serde_json::to_vec(self).unwrap_or_default();
                format!("sha256:{}", hex::encode(&Sha256::digest(&bytes)[..16]))
            }
        }
    }
}

/// Memory id for the `seq`-th memory of an event in a cube: a UUIDv5, stable across replays.
pub fn memory_id(cube: &str, event_id: &str, seq: u32) -> String {
    const NS: uuid::Uuid = uuid::Uuid::from_u128(0x6d656d6f_735f_4e53_8000_6d656d6f7331);
    uuid::Uuid::new_v5(&NS, format!("{cube}\u{0}{event_id}\u{0}{seq}").as_bytes()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn raw_base64_is_decoded_only_when_it_is_a_document() {
        use base64::Engine;
        let enc = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        assert_eq!(
            raw_base64(&enc(b"%PDF-1.7 body")).unwrap(),
            b"%PDF-1.7 body"
        );
        assert_eq!(
            raw_base64(&enc(b"Some UTF-8 text, long enough.")).unwrap(),
            b"Some UTF-8 text, long enough."
        );
        // A hex digest is valid base64 but decodes to noise: it stays text. So do prose and
        // short tokens.
        assert!(raw_base64("d41d8cd98f00b204e9800998ecf8427e").is_none());
        assert!(raw_base64("I like green tea very much").is_none());
        assert!(raw_base64("aGk=").is_none());
        let part =
            json!({"type": "file", "file": {"filename": "a.pdf", "file_data": enc(b"%PDF-1.4 x")}});
        assert_eq!(file_of(&part).unwrap().unwrap().bytes, b"%PDF-1.4 x");
    }
}
