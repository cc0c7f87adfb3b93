//! `window`: fast mode. One memory per conversation turn (or per user→assistant round),
//! carrying speaker/role and the message time. The time is kept verbatim in `sources` and
//! parsed into `event_time` when possible; with `date_prefix` the memory text starts with it
//! ("[1:56 pm on 8 May, 2023] Caroline: …") so dates take part in search.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use store::{MemoryRecord, MemoryType, SourceMessage, Status};

use crate::event::{ChatMessage, EventKind, ToolCall, memory_id, parse_messages};
use crate::{
    Action, Collector, Draft, IdentifiedEvent, OpContext, Operator, OperatorError, Result,
};

/// How turns are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    /// One memory per message.
    #[default]
    Turn,
    /// One memory per user message and the replies that follow it.
    Round,
}

/// Config of the window stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowConfig {
    /// Turn or round.
    pub granularity: Granularity,
    /// Prefix each memory with its message time.
    pub date_prefix: bool,
    /// Document chunk size in characters.
    pub chunk_chars: usize,
    /// Overlap between document chunks in characters.
    pub chunk_overlap: usize,
    /// Where and under which limits documents are parsed.
    pub documents: crate::document::ParseLimits,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            granularity: Granularity::Turn,
            date_prefix: true,
            chunk_chars: 1200,
            chunk_overlap: 200,
            documents: crate::document::ParseLimits::default(),
        }
    }
}

impl WindowConfig {
    /// Builds the operator.
    pub fn build(&self) -> WindowOperator {
        WindowOperator { cfg: self.clone() }
    }
}

/// The window stage.
pub struct WindowOperator {
    cfg: WindowConfig,
}

/// First sentence, at most 80 characters: the MemOS `key`.
pub fn key_of(text: &str) -> String {
    let first = text
        .split(['.', '!', '?', '\n'])
        .next()
        .unwrap_or(text)
        .trim();
    first.chars().take(80).collect()
}

pub(crate) fn base_record(
    ie: &IdentifiedEvent,
    seq: u32,
    memory: String,
    ty: MemoryType,
) -> MemoryRecord {
    let e = &ie.event;
    let now = store::time::now_micros();
    let mut tags = e.tags.clone();
    tags.push("mode:fast".into());
    let info = e
        .info
        .iter()
        .filter(|(k, _)| !store::model::RESERVED_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    MemoryRecord {
        id: memory_id(&e.cube_id, &ie.id, seq),
        key: Some(key_of(&memory)),
        memory,
        cube_id: e.cube_id.clone(),
        user_id: e.user_id.clone(),
        session_id: e
            .session_id
            .clone()
            .unwrap_or_else(|| "default_session".into()),
        agent_id: e.agent_id.clone(),
        app_id: e.app_id.clone(),
        memory_type: ty,
        status: Status::Activated,
        tags,
        info,
        source: Some("conversation".into()),
        sources: Vec::new(),
        confidence: 0.99,
        created_at: now,
        updated_at: now,
        event_time: e.time.as_deref().and_then(store::time::parse_time),
        version: 1,
        history: Vec::new(),
        event_id: ie.id.clone(),
        file_ids: Vec::new(),
        embedding: Vec::new(),
    }
}

fn draft(ie: &IdentifiedEvent, record: MemoryRecord) -> Draft {
    draft_at(ie, 0, record)
}

fn draft_at(ie: &IdentifiedEvent, seq: u32, record: MemoryRecord) -> Draft {
    Draft {
        event_id: ie.id.clone(),
        seq,
        record,
        embedding: Vec::new(),
        action: Action::Insert,
    }
}

/// Appends a memory of the event numbered after the drafts it has so far (its id follows),
/// timed by the message it came from.
fn push_numbered(ie: &IdentifiedEvent, out: &mut Vec<Draft>, mut r: MemoryRecord, m: &ChatMessage) {
    let seq = out.iter().filter(|d| d.event_id == ie.id).count() as u32;
    r.id = memory_id(&ie.event.cube_id, &ie.id, seq);
    if let Some(t) = m.chat_time.as_deref().and_then(store::time::parse_time) {
        r.event_time = Some(t);
    }
    let mut d = draft(ie, r);
    d.seq = seq;
    out.push(d);
}

/// A tool schema from a system prompt's `<tool_schema>` block.
fn schema_record(ie: &IdentifiedEvent, schema: Value) -> MemoryRecord {
    let name = schema
        .get("name")
        .or_else(|| schema.pointer("/function/name"))
        .and_then(Value::as_str)
        .unwrap_or("tool")
        .to_string();
    let mut r = base_record(ie, 0, schema.to_string(), MemoryType::ToolSchemaMemory);
    r.source = Some("system".into());
    r.key = Some(name.clone());
    r.info.insert("tool_name".into(), Value::String(name));
    r
}

/// An answered tool call: its arguments, its result and whether it succeeded.
fn trajectory_record(ie: &IdentifiedEvent, call: &ToolCall, m: &ChatMessage) -> MemoryRecord {
    let (ok, error) = tool_outcome(&m.content);
    let mut r = base_record(
        ie,
        0,
        format!(
            "tool {}({}) {} {}",
            call.name,
            call.arguments,
            if ok { "succeeded:" } else { "failed:" },
            m.content
        ),
        MemoryType::ToolTrajectoryMemory,
    );
    r.source = Some("tool".into());
    r.key = Some(call.name.clone());
    r.info
        .insert("tool_name".into(), Value::String(call.name.clone()));
    r.info
        .insert("arguments".into(), Value::String(call.arguments.clone()));
    r.info
        .insert("result".into(), Value::String(m.content.clone()));
    r.info.insert("success".into(), Value::Bool(ok));
    if let Some(e) = error {
        r.info.insert("error".into(), Value::String(e));
    }
    r.sources.push(SourceMessage {
        kind: "tool".into(),
        role: Some("tool".into()),
        message_id: m.tool_call_id.clone(),
        content: Some(m.content.clone()),
        ..Default::default()
    });
    r
}

/// An image of a message: its URL and caption.
fn image_record(
    ie: &IdentifiedEvent,
    m: &ChatMessage,
    url: &str,
    caption: Option<&str>,
) -> MemoryRecord {
    let text = match caption {
        Some(c) => format!("[image_url]: {url} {c}"),
        None => format!("[image_url]: {url}"),
    };
    let mut r = base_record(ie, 0, text, MemoryType::UserMemory);
    r.source = Some("image".into());
    r.tags.push("multimodal:image".into());
    r.info
        .insert("image_url".into(), Value::String(url.to_string()));
    if let Some(c) = caption {
        r.info
            .insert("caption".into(), Value::String(c.to_string()));
    }
    r.sources.push(SourceMessage {
        kind: "image".into(),
        role: Some(m.role.clone()),
        name: m.name.clone(),
        chat_time: m.chat_time.clone(),
        content: Some(url.to_string()),
        ..Default::default()
    });
    r
}

impl WindowOperator {
    fn line(&self, m: &ChatMessage) -> String {
        let speaker = m.name.as_deref().unwrap_or(&m.role);
        match (&m.chat_time, self.cfg.date_prefix) {
            (Some(t), true) => format!("[{t}] {speaker}: {}", m.content),
            _ => format!("{speaker}: {}", m.content),
        }
    }

    /// Groups a conversation's messages into windows (a turn, or a round from one user
    /// message to the next): system prompts and answered tool results are left out (they
    /// become tool schemas and trajectories).
    fn windows<'m>(
        &self,
        msgs: &'m [ChatMessage],
        calls: &HashMap<&str, &ToolCall>,
    ) -> Vec<Vec<&'m ChatMessage>> {
        let mut groups: Vec<Vec<&ChatMessage>> = Vec::new();
        for m in msgs {
            if m.content.trim().is_empty() {
                continue;
            }
            // System prompts are not memories; their tool schemas are.
            if m.role == "system" {
                continue;
            }
            if m.role == "tool"
                && m.tool_call_id
                    .as_deref()
                    .is_some_and(|id| calls.contains_key(id))
            {
                continue;
            }
            let start_new = match (self.cfg.granularity, groups.last()) {
                (Granularity::Turn, _) | (_, None) => true,
                (Granularity::Round, Some(g)) => {
                    m.role == "user" && g.iter().any(|x| x.role != "user")
                }
            };
            if start_new {
                groups.push(vec![m]);
            } else if let Some(g) = groups.last_mut() {
                g.push(m);
            }
        }
        groups
    }

    /// One window's memory: its lines, its type by who spoke, its time and sources.
    fn window_record(&self, ie: &IdentifiedEvent, seq: u32, g: &[&ChatMessage]) -> MemoryRecord {
        let text = g
            .iter()
            .map(|m| self.line(m))
            .collect::<Vec<_>>()
            .join("\n");
        let ty = if g.iter().all(|m| m.role == "tool") {
            MemoryType::ToolTrajectoryMemory
        } else if g.iter().all(|m| m.role == "user") {
            MemoryType::UserMemory
        } else {
            MemoryType::LongTermMemory
        };
        let mut r = base_record(ie, seq, text, ty);
        if let Some(t) = g
            .iter()
            .find_map(|m| m.chat_time.as_deref().and_then(store::time::parse_time))
        {
            r.event_time = Some(t);
        }
        if g.iter().all(|m| m.role == "doc") {
            r.source = Some("doc".into());
        }
        r.key = Some(key_of(&g[0].content));
        r.file_ids = g.iter().flat_map(|m| m.file_ids.clone()).collect();
        r.sources = g
            .iter()
            .map(|m| SourceMessage {
                kind: if m.role == "doc" {
                    "doc".into()
                } else {
                    "chat".into()
                },
                role: Some(m.role.clone()),
                name: m.name.clone(),
                chat_time: m.chat_time.clone(),
                message_id: m.message_id.clone(),
                content: Some(m.content.clone()),
            })
            .collect();
        r
    }

    fn messages(&self, ie: &IdentifiedEvent, out: &mut Vec<Draft>) -> Result<()> {
        let msgs = parse_messages(ie.event.payload.get("messages").unwrap_or(&Value::Null))?;
        // Tool calls by id: their results become trajectories, not separate turns.
        let calls: HashMap<&str, &ToolCall> = msgs
            .iter()
            .flat_map(|m| m.tool_calls.iter())
            .filter_map(|c| c.id.as_deref().map(|id| (id, c)))
            .collect();
        for g in self.windows(&msgs, &calls) {
            let seq = out.iter().filter(|d| d.event_id == ie.id).count() as u32;
            let mut d = draft(ie, self.window_record(ie, seq, &g));
            d.seq = seq;
            out.push(d);
        }
        // Tool schemas from `<tool_schema>` blocks of system messages: one memory per schema.
        for m in msgs.iter().filter(|m| m.role == "system") {
            for schema in tool_schemas(&m.content) {
                push_numbered(ie, out, schema_record(ie, schema), m);
            }
        }
        // Trajectories: each answered tool call with its arguments and result.
        for m in msgs.iter().filter(|m| m.role == "tool") {
            if let Some(call) = m.tool_call_id.as_deref().and_then(|id| calls.get(id)) {
                push_numbered(ie, out, trajectory_record(ie, call, m), m);
            }
        }
        // Images: one memory each with the URL and any caption.
        for m in &msgs {
            for (url, caption) in &m.images {
                push_numbered(ie, out, image_record(ie, m, url, caption.as_deref()), m);
            }
        }
        // Files with their content inline: chunked like documents.
        for m in &msgs {
            for f in &m.files {
                self.file_chunks(ie, out, f, None, Some(m))?;
            }
        }
        Ok(())
    }

    fn tool_call(&self, ie: &IdentifiedEvent, out: &mut Vec<Draft>) -> Result<()> {
        let p = &ie.event.payload;
        let name = p.get("name").and_then(Value::as_str).unwrap_or("tool");
        let args = p
            .get("arguments")
            .map(|a| a.to_string())
            .unwrap_or_default();
        let result = match p.get("result") {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => String::new(),
        };
        let ok = p.get("success").and_then(Value::as_bool).unwrap_or(true);
        let text = format!(
            "tool {name}({args}) {} {result}",
            if ok { "succeeded:" } else { "failed:" }
        );
        let mut r = base_record(ie, 0, text, MemoryType::ToolTrajectoryMemory);
        r.source = Some("tool".into());
        r.info
            .insert("tool_name".into(), Value::String(name.into()));
        r.info.insert("success".into(), Value::Bool(ok));
        r.info
            .insert("arguments".into(), Value::String(args.clone()));
        r.info
            .insert("result".into(), Value::String(result.clone()));
        if let Some(e) = p.get("error").filter(|e| !e.is_null()) {
            r.info.insert(
                "error".into(),
                Value::String(e.as_str().map(String::from).unwrap_or(e.to_string())),
            );
        }
        r.key = Some(name.to_string());
        r.sources.push(SourceMessage {
            kind: "tool".into(),
            role: Some("tool".into()),
            message_id: p
                .get("tool_call_id")
                .and_then(Value::as_str)
                .map(str::to_string),
            content: Some(result),
            ..Default::default()
        });
        out.push(draft(ie, r));
        Ok(())
    }

    /// A skill upload (MemOS `is_upload_skill`): each file part is a skill package (zip with a
    /// `SKILL.md`) or a skill file, each message without files is a skill in its text; each
    /// becomes one `SkillMemory` (key = name; `info`: name, description, procedure, files).
    fn skills(&self, ie: &IdentifiedEvent, out: &mut Vec<Draft>) -> Result<()> {
        let msgs = parse_messages(ie.event.payload.get("messages").unwrap_or(&Value::Null))?;
        let mut skills = Vec::new();
        for m in &msgs {
            if m.files.is_empty() {
                if !m.content.trim().is_empty() {
                    skills.push((crate::skill::from_markdown(&m.content, "skill")?, None));
                }
                continue;
            }
            for f in &m.files {
                let s = if f.bytes.starts_with(b"PK\x03\x04") {
                    crate::skill::from_package(&f.bytes, &f.filename)?
                } else {
                    let text = std::str::from_utf8(&f.bytes).map_err(|_| {
                        OperatorError::Invalid(format!(
                            "skill {}: neither a zip package nor UTF-8 text",
                            f.filename
                        ))
                    })?;
                    crate::skill::from_markdown(text, &f.filename)?
                };
                skills.push((s, f.file_id.clone()));
            }
        }
        if skills.is_empty() {
            return Err(OperatorError::Invalid(
                "the skill upload holds no skill".into(),
            ));
        }
        for (seq, (s, file_id)) in skills.into_iter().enumerate() {
            let mut r = base_record(ie, seq as u32, s.memory(), MemoryType::SkillMemory);
            if let Some(f) = file_id {
                r.info.insert("file_id".into(), Value::from(f.clone()));
                r.file_ids.push(f);
            }
            r.key = Some(s.name.clone());
            r.source = Some("skill".into());
            r.tags.push("skill".into());
            for (k, v) in [
                ("name", Value::from(s.name)),
                ("description", Value::from(s.description)),
                ("procedure", Value::from(s.procedure)),
                ("files", Value::from(s.files)),
            ] {
                r.info.insert(k.into(), v);
            }
            out.push(draft_at(ie, seq as u32, r));
        }
        Ok(())
    }

    /// A document: text extracted by format (text, Markdown, HTML, PDF), cut into chunks by
    /// structure and size; each chunk is a `RawFileMemory` linked to its neighbours.
    fn document(&self, ie: &IdentifiedEvent, out: &mut Vec<Draft>) -> Result<()> {
        let p = &ie.event.payload;
        let filename = p
            .get("filename")
            .and_then(Value::as_str)
            .unwrap_or("document");
        let bytes = crate::document::payload_bytes(p)?;
        let file = crate::event::FilePart {
            file_id: p.get("file_id").and_then(Value::as_str).map(String::from),
            filename: filename.to_string(),
            mime: p.get("mime").and_then(Value::as_str).map(String::from),
            bytes,
        };
        self.file_chunks(ie, out, &file, p.get("kb_id"), None)
    }

    /// A file's chunks: text extracted by format (text, Markdown, HTML, PDF), cut by structure
    /// and size; each chunk is a `RawFileMemory` linked to its neighbours. Sequence numbers
    /// continue after what `out` already holds for this event.
    fn file_chunks(
        &self,
        ie: &IdentifiedEvent,
        out: &mut Vec<Draft>,
        file: &crate::event::FilePart,
        kb_id: Option<&Value>,
        from: Option<&ChatMessage>,
    ) -> Result<()> {
        use crate::document;
        let filename = file.filename.as_str();
        let format = document::detect(file.mime.as_deref(), filename, &file.bytes);
        let sections = document::parse(format, &file.bytes, &self.cfg.documents)
            .map_err(|e| OperatorError::Invalid(format!("file {filename}: {e}")))?;
        let chunks =
            document::chunk_sections(&sections, self.cfg.chunk_chars, self.cfg.chunk_overlap);
        if chunks.is_empty() {
            return Err(OperatorError::Invalid(format!(
                "document {filename} has no text"
            )));
        }
        let total = chunks.len();
        let cube = &ie.event.cube_id;
        let first = out.iter().filter(|d| d.event_id == ie.id).count() as u32;
        for (i, c) in chunks.into_iter().enumerate() {
            let seq = first + i as u32;
            let mut r = base_record(ie, seq, c.text, MemoryType::RawFileMemory);
            r.source = Some("file".into());
            r.tags.push("multimodal:file".into());
            r.tags.push(format!("chunk:{}/{}", i + 1, total));
            if let Some(f) = &file.file_id {
                r.file_ids.push(f.clone());
                r.info.insert("file_id".into(), Value::from(f.clone()));
            }
            if let Some(kb) = kb_id {
                r.info.insert("kb_id".into(), kb.clone());
            }
            r.info.insert("file_name".into(), Value::from(filename));
            r.info.insert("mime".into(), Value::from(format.mime()));
            r.info.insert("chunk_index".into(), Value::from(i));
            r.info.insert("chunk_total".into(), Value::from(total));
            if !c.section.is_empty() {
                r.info
                    .insert("section".into(), Value::from(c.section.clone()));
            }
            if i > 0 {
                r.info.insert(
                    "preceding_id".into(),
                    Value::from(memory_id(cube, &ie.id, seq - 1)),
                );
            }
            if i + 1 < total {
                r.info.insert(
                    "following_id".into(),
                    Value::from(memory_id(cube, &ie.id, seq + 1)),
                );
            }
            r.key = Some(if c.section.is_empty() {
                format!("{filename} ({}/{total})", i + 1)
            } else {
                format!("{filename}: {}", c.section)
            });
            if let Some(t) = from
                .and_then(|m| m.chat_time.as_deref())
                .and_then(store::time::parse_time)
            {
                r.event_time = Some(t);
            }
            r.sources.push(SourceMessage {
                kind: "file".into(),
                role: from.map(|m| m.role.clone()),
                name: from.and_then(|m| m.name.clone()),
                chat_time: from.and_then(|m| m.chat_time.clone()),
                content: Some(filename.to_string()),
                ..Default::default()
            });
            let mut d = draft(ie, r);
            d.seq = seq;
            out.push(d);
        }
        Ok(())
    }
}

/// The JSON schemas inside `<tool_schema>…</tool_schema>` blocks (a list gives one each).
pub fn tool_schemas(text: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("<tool_schema>") {
        let after = &rest[start + "<tool_schema>".len()..];
        let Some(end) = after.find("</tool_schema>") else {
            break;
        };
        match serde_json::from_str::<Value>(after[..end].trim()) {
            Ok(Value::Array(a)) => out.extend(a),
            Ok(v) => out.push(v),
            Err(_) => out.push(Value::String(after[..end].trim().to_string())),
        }
        rest = &after[end..];
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|v| seen.insert(v.to_string()));
    out
}

/// Whether a tool result reports success, and its error if not: a JSON object with an
/// `error` field (or `success: false`), or text starting with "error".
pub fn tool_outcome(result: &str) -> (bool, Option<String>) {
    if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(result) {
        if let Some(e) = o.get("error").filter(|e| !e.is_null()) {
            return (
                false,
                Some(e.as_str().map(String::from).unwrap_or(e.to_string())),
            );
        }
        if o.get("success").and_then(Value::as_bool) == Some(false) {
            return (false, Some(result.to_string()));
        }
        return (true, None);
    }
    let lower = result.trim_start().to_lowercase();
    if lower.starts_with("error")
        || lower.starts_with("exception")
        || lower.starts_with("traceback")
    {
        return (false, Some(result.trim().to_string()));
    }
    (true, None)
}

impl Operator for WindowOperator {
    type In = IdentifiedEvent;
    type Out = Draft;

    fn name(&self) -> &'static str {
        "window"
    }

    fn process(
        &mut self,
        batch: Vec<IdentifiedEvent>,
        _ctx: &OpContext,
        out: &mut Collector<Draft>,
    ) -> Result<()> {
        for ie in batch {
            let mut drafts = Vec::new();
            let r = match ie.event.kind {
                EventKind::Messages => self.messages(&ie, &mut drafts),
                EventKind::ToolCall => self.tool_call(&ie, &mut drafts),
                EventKind::Document => self.document(&ie, &mut drafts),
                EventKind::Skill => self.skills(&ie, &mut drafts),
                // Feedback and deletes carry no new memories; the sink applies them.
                EventKind::Feedback | EventKind::Delete => Ok(()),
            };
            match r {
                Ok(()) => drafts.into_iter().for_each(|d| out.collect(d)),
                Err(e @ OperatorError::Invalid(_)) => out.fail(&ie.id, e),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use serde_json::json;

    fn ev(kind: &str, payload: serde_json::Value) -> IdentifiedEvent {
        let e: Event = serde_json::from_value(json!({"event_id": "e1", "kind": kind, "cube_id": "c", "user_id": "u",
            "time": "2024-03-01T10:00:00Z", "info": {"k": 1, "memory": "reserved"}, "payload": payload}))
        .unwrap();
        e.validate().unwrap();
        IdentifiedEvent {
            id: "e1".into(),
            event: e,
        }
    }

    fn run(cfg: WindowConfig, ie: IdentifiedEvent) -> Vec<Draft> {
        let mut out = Collector::default();
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(
            store::Store::open(dir.path(), store::StoreOptions::default()).unwrap(),
        );
        cfg.build()
            .process(vec![ie], &OpContext { store }, &mut out)
            .unwrap();
        let (items, failed) = out.finish();
        assert!(failed.is_empty());
        items
    }

    #[test]
    fn turns_rounds_tools_documents() {
        let msgs = json!({"messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "name": "Ann", "content": "Hi, I moved to Lisbon.", "chat_time": "1:56 pm on 8 May, 2023"},
            {"role": "assistant", "content": [{"type": "text", "text": "Nice!"}, {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]},
            {"role": "user", "content": "Thanks"}]});
        let turns = run(WindowConfig::default(), ev("messages", msgs.clone()));
        assert_eq!(
            turns.len(),
            4,
            "system messages are not memories; the image part is one"
        );
        assert_eq!(turns[3].record.memory, "[image_url]: http://x/y.png");
        assert_eq!(turns[3].record.info["image_url"], json!("http://x/y.png"));
        assert_eq!(
            turns[0].record.memory,
            "[1:56 pm on 8 May, 2023] Ann: Hi, I moved to Lisbon."
        );
        assert_eq!(turns[0].record.memory_type, MemoryType::UserMemory);
        assert_eq!(
            store::time::micros_to_rfc3339(turns[0].record.event_time.unwrap()),
            "2023-05-08T13:56:00Z"
        );
        assert_eq!(
            turns[0].record.sources[0].chat_time.as_deref(),
            Some("1:56 pm on 8 May, 2023")
        );
        assert_eq!(
            turns[1].record.memory,
            "assistant: Nice!\n[image: http://x/y.png]"
        );
        assert_eq!(turns[1].record.memory_type, MemoryType::LongTermMemory);
        assert_eq!(
            turns[2].record.event_time,
            store::time::parse_time("2024-03-01T10:00:00Z")
        );
        assert_eq!(turns[0].record.info.get("k"), Some(&json!(1)));
        assert!(
            turns[0].record.info.get("memory").is_none(),
            "reserved info keys are dropped"
        );
        let ids: std::collections::HashSet<_> = turns.iter().map(|d| d.record.id.clone()).collect();
        assert_eq!(ids.len(), 4);

        let rounds = run(
            WindowConfig {
                granularity: Granularity::Round,
                ..Default::default()
            },
            ev("messages", msgs),
        );
        assert_eq!(rounds.len(), 3);
        assert_eq!(rounds[0].record.sources.len(), 2);
        assert_eq!(rounds[0].record.memory_type, MemoryType::LongTermMemory);

        let tool = run(
            WindowConfig::default(),
            ev(
                "tool_call",
                json!({"name": "weather", "arguments": {"city": "Oslo"}, "result": "rain", "success": false}),
            ),
        );
        assert_eq!(tool[0].record.memory_type, MemoryType::ToolTrajectoryMemory);
        assert_eq!(
            tool[0].record.memory,
            "tool weather({\"city\":\"Oslo\"}) failed: rain"
        );

        let text = "First paragraph about memory systems. ".repeat(40);
        let doc = run(
            WindowConfig {
                chunk_chars: 300,
                chunk_overlap: 50,
                ..Default::default()
            },
            ev(
                "document",
                json!({"text": text, "filename": "a.txt", "file_id": "f1"}),
            ),
        );
        assert!(doc.len() > 4);
        assert!(
            doc.iter()
                .all(|d| d.record.memory.chars().count() <= 300 && d.record.file_ids == ["f1"])
        );
        assert_eq!(doc[0].record.memory_type, MemoryType::RawFileMemory);
        assert!(
            doc[1]
                .record
                .tags
                .iter()
                .any(|t| t == &format!("chunk:2/{}", doc.len()))
        );
    }

    #[test]
    fn tool_schemas_and_outcomes() {
        let t = "x <tool_schema>[{\"name\": \"a\"}, {\"name\": \"b\"}]</tool_schema> y <tool_schema>{\"name\": \"a\"}</tool_schema>";
        let s = tool_schemas(t);
        assert_eq!(s, vec![json!({"name": "a"}), json!({"name": "b"})]);
        assert_eq!(tool_outcome("Sunny"), (true, None));
        assert_eq!(
            tool_outcome("{\"error\": \"no such city\"}"),
            (false, Some("no such city".into()))
        );
        assert_eq!(
            tool_outcome("Error: timeout"),
            (false, Some("Error: timeout".into()))
        );
    }
}
