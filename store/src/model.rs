//! The MemOS-compatible memory record (memos-spec §2) and its compact LMDB encoding.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Result, StoreError};

/// MemOS memory types ("scopes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum MemoryType {
    /// Short-term, capped.
    WorkingMemory,
    /// Conversation windows and facts.
    LongTermMemory,
    /// Facts about the user.
    UserMemory,
    /// Results from outside (internet, other cubes).
    OuterMemory,
    /// Tool specifications.
    ToolSchemaMemory,
    /// Tool call outcomes.
    ToolTrajectoryMemory,
    /// A document chunk.
    RawFileMemory,
    /// A learned skill.
    SkillMemory,
    /// An explicit or implicit preference.
    PreferenceMemory,
}

impl MemoryType {
    /// All variants, in declaration order.
    pub const ALL: [MemoryType; 9] = [
        MemoryType::WorkingMemory,
        MemoryType::LongTermMemory,
        MemoryType::UserMemory,
        MemoryType::OuterMemory,
        MemoryType::ToolSchemaMemory,
        MemoryType::ToolTrajectoryMemory,
        MemoryType::RawFileMemory,
        MemoryType::SkillMemory,
        MemoryType::PreferenceMemory,
    ];

    /// The MemOS name.
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryType::WorkingMemory => "WorkingMemory",
            MemoryType::LongTermMemory => "LongTermMemory",
            MemoryType::UserMemory => "UserMemory",
            MemoryType::OuterMemory => "OuterMemory",
            MemoryType::ToolSchemaMemory => "ToolSchemaMemory",
            MemoryType::ToolTrajectoryMemory => "ToolTrajectoryMemory",
            MemoryType::RawFileMemory => "RawFileMemory",
            MemoryType::SkillMemory => "SkillMemory",
            MemoryType::PreferenceMemory => "PreferenceMemory",
        }
    }

    /// Parses a MemOS name.
    pub fn parse(s: &str) -> Option<MemoryType> {
        MemoryType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The search-result bucket this type belongs to (memos-spec §2.2).
    pub fn bucket(self) -> Bucket {
        match self {
            MemoryType::ToolSchemaMemory | MemoryType::ToolTrajectoryMemory => Bucket::Tool,
            MemoryType::PreferenceMemory => Bucket::Pref,
            MemoryType::SkillMemory => Bucket::Skill,
            _ => Bucket::Text,
        }
    }
}

/// Search result buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// text_mem
    Text,
    /// pref_mem
    Pref,
    /// tool_mem
    Tool,
    /// skill_mem
    Skill,
}

impl Bucket {
    /// Every bucket, in MemOS order.
    pub const ALL: [Bucket; 4] = [Bucket::Text, Bucket::Pref, Bucket::Tool, Bucket::Skill];

    /// The MemOS name (`text_mem`, `pref_mem`, `tool_mem`, `skill_mem`).
    pub const fn name(self) -> &'static str {
        match self {
            Bucket::Text => "text_mem",
            Bucket::Pref => "pref_mem",
            Bucket::Tool => "tool_mem",
            Bucket::Skill => "skill_mem",
        }
    }

    /// Parses a MemOS bucket name.
    pub fn parse(name: &str) -> Option<Bucket> {
        Bucket::ALL.into_iter().find(|b| b.name() == name)
    }

    /// The memory types in this bucket (the inverse of [`MemoryType::bucket`]).
    pub fn types(self) -> Vec<MemoryType> {
        MemoryType::ALL
            .into_iter()
            .filter(|t| t.bucket() == self)
            .collect()
    }
}

/// Lifecycle status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Status {
    /// Searchable.
    Activated,
    /// Being resolved by an asynchronous stage.
    Resolving,
    /// Superseded; kept for history.
    Archived,
    /// Soft-deleted.
    Deleted,
}

impl Status {
    /// The MemOS name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Activated => "activated",
            Status::Resolving => "resolving",
            Status::Archived => "archived",
            Status::Deleted => "deleted",
        }
    }
    /// Parses a MemOS name.
    pub fn parse(s: &str) -> Option<Status> {
        [
            Status::Activated,
            Status::Resolving,
            Status::Archived,
            Status::Deleted,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }
}

/// A message a memory came from (MemOS `SourceMessage`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceMessage {
    /// chat, doc, file, tool, feedback…
    #[serde(rename = "type")]
    pub kind: String,
    /// user, assistant, system, tool.
    pub role: Option<String>,
    /// Speaker name (OpenAI `name`), e.g. a LoCoMo speaker.
    pub name: Option<String>,
    /// The message time, verbatim as given.
    pub chat_time: Option<String>,
    /// Producer's message id.
    pub message_id: Option<String>,
    /// The message text.
    pub content: Option<String>,
}

/// A previous version of a memory (MemOS `ArchivedTextualMemory`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The version this entry describes.
    pub version: u32,
    /// Its text.
    pub memory: String,
    /// Why it changed: duplicate, merge, feedback, update…
    pub update_type: String,
    /// When it was replaced (unix micros).
    pub archived_at: i64,
    /// A memory merged into this one, if any.
    pub merged_from: Option<String>,
}

/// One memory. `embedding` is kept in its own LMDB database and only filled when asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryRecord {
    /// UUID, derived from the event id for idempotency.
    pub id: String,
    /// The memory text.
    pub memory: String,
    /// Partition key.
    pub cube_id: String,
    /// End user.
    pub user_id: String,
    /// Conversation.
    pub session_id: String,
    /// Agent, if any.
    pub agent_id: Option<String>,
    /// Application, if any.
    pub app_id: Option<String>,
    /// MemOS memory type.
    pub memory_type: MemoryType,
    /// Lifecycle status.
    pub status: Status,
    /// Short title.
    pub key: Option<String>,
    /// Tags (system tags like `mode:fast` included).
    pub tags: Vec<String>,
    /// Arbitrary user info, filterable as `info.<k>`.
    #[serde(with = "json_map")]
    pub info: Map<String, Value>,
    /// Origin: conversation, file, tool, feedback…
    pub source: Option<String>,
    /// The messages it came from.
    pub sources: Vec<SourceMessage>,
    /// Extraction confidence.
    pub confidence: f32,
    /// Creation time, unix micros.
    pub created_at: i64,
    /// Last change, unix micros.
    pub updated_at: i64,
    /// Event time (when it happened in the conversation), unix micros, if known.
    pub event_time: Option<i64>,
    /// Version, starting at 1.
    pub version: u32,
    /// Previous versions.
    pub history: Vec<HistoryEntry>,
    /// The event that produced it.
    pub event_id: String,
    /// File ids for document-derived memories.
    pub file_ids: Vec<String>,
    /// Embedding; empty unless loaded.
    #[serde(skip)]
    pub embedding: Vec<f32>,
}

/// The first byte of every encoded record: its format. Format 1 (stores without
/// `meta.format_version`) had no such byte; opening such a store rewrites its records
/// ([`crate::Store::open`]).
pub const RECORD_FORMAT: u8 = 2;

impl MemoryRecord {
    /// Encodes the record compactly: [`RECORD_FORMAT`], then postcard (`info` as JSON text).
    pub fn encode(&self) -> Result<Vec<u8>> {
        Ok(postcard::to_extend(self, vec![RECORD_FORMAT])?)
    }
    /// Decodes a record written by [`MemoryRecord::encode`]; a record of another format is a
    /// codec error naming it.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        match bytes.split_first() {
            Some((&RECORD_FORMAT, rest)) => Ok(postcard::from_bytes(rest)?),
            Some((v, _)) => Err(StoreError::Codec(format!(
                "memory record of format {v}; this memos reads format {RECORD_FORMAT}"
            ))),
            None => Err(StoreError::Codec("empty memory record".into())),
        }
    }
    /// Decodes a record of store format 1 (positional postcard, no format byte).
    pub fn decode_v1(bytes: &[u8]) -> Result<Self> {
        Ok(postcard::from_bytes(bytes)?)
    }
    /// Value of a top-level field or `info.<k>` as JSON, for filters.
    pub fn field(&self, name: &str) -> Option<Value> {
        let s = |v: &str| Some(Value::String(v.to_string()));
        let o = |v: &Option<String>| v.as_ref().map(|x| Value::String(x.clone()));
        match name {
            "id" => s(&self.id),
            "memory" => s(&self.memory),
            "cube_id" | "user_name" | "mem_cube_id" => s(&self.cube_id),
            "user_id" => s(&self.user_id),
            "session_id" | "conversation_id" => s(&self.session_id),
            "agent_id" => o(&self.agent_id),
            "app_id" => o(&self.app_id),
            "memory_type" => s(self.memory_type.as_str()),
            "status" => s(self.status.as_str()),
            "key" => o(&self.key),
            "tags" => Some(Value::Array(
                self.tags.iter().map(|t| Value::String(t.clone())).collect(),
            )),
            "file_ids" => Some(Value::Array(
                self.file_ids
                    .iter()
                    .map(|t| Value::String(t.clone()))
                    .collect(),
            )),
            "source" => o(&self.source),
            "confidence" => serde_json::Number::from_f64(self.confidence as f64).map(Value::Number),
            "version" => Some(Value::from(self.version)),
            "event_id" => s(&self.event_id),
            "created_at" => Some(Value::String(crate::time::micros_to_rfc3339(
                self.created_at,
            ))),
            "updated_at" => Some(Value::String(crate::time::micros_to_rfc3339(
                self.updated_at,
            ))),
            "event_time" | "chat_time" => self
                .event_time
                .map(|t| Value::String(crate::time::micros_to_rfc3339(t))),
            other => {
                let k = other.strip_prefix("info.").unwrap_or(other);
                self.info.get(k).cloned()
            }
        }
    }
}

/// `info` key naming the memory this one was derived from (extracted facts, preferences).
pub const DERIVED_FROM: &str = "derived_from";
/// `info` key naming the memory this one replaced (feedback); the old one is archived.
pub const COVERED_HISTORY: &str = "covered_history";
/// `info` key naming the memory that replaced an archived one.
pub const SUCCESSOR: &str = "successor_id";

/// `info` keys the server writes and follows (links between memories, archive and merge
/// bookkeeping). Events that carry them are refused: a caller naming another memory here could
/// otherwise steer a delete cascade or a time-travel read.
pub const INTERNAL_INFO_KEYS: &[&str] = &[
    DERIVED_FROM,
    COVERED_HISTORY,
    SUCCESSOR,
    "supplements",
    "evolve_to",
    "archived_reason",
    "delete_record_id",
    "delete_time",
];

/// Field names that belong to the record itself; `info` keys with these names are dropped on add
/// (MemOS does the same).
pub const RESERVED_FIELDS: &[&str] = &[
    "id",
    "memory",
    "cube_id",
    "user_id",
    "session_id",
    "agent_id",
    "app_id",
    "memory_type",
    "status",
    "key",
    "tags",
    "info",
    "source",
    "sources",
    "confidence",
    "created_at",
    "updated_at",
    "event_time",
    "version",
    "history",
    "embedding",
    "file_ids",
    "relativity",
    "usage",
    "background",
    "user_name",
];

mod json_map {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_json::{Map, Value};

    pub fn serialize<S: Serializer>(m: &Map<String, Value>, s: S) -> Result<S::Ok, S::Error> {
        if m.is_empty() {
            return s.serialize_str("");
        }
        let text = serde_json::to_string(m).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Map<String, Value>, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() {
            return Ok(Map::new());
        }
        serde_json::from_str(&text).map_err(serde::de::Error::custom)
    }
}

/// Content hash used for exact dedupe: sha256 of the bucket and the whitespace-normalised,
/// lowercased text. The same sentence as a preference and as a conversation turn are two
/// memories (they serve different buckets); within a bucket they are one.
pub fn content_hash(bucket: Bucket, text: &str) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let norm: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    let mut h = Sha256::new();
    h.update(format!("{bucket:?}\0").as_bytes());
    h.update(norm.as_bytes());
    let d = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// Validates an embedding's length.
pub fn check_dims(expected: usize, v: &[f32]) -> Result<()> {
    if v.len() != expected {
        return Err(StoreError::Dimensions {
            expected,
            received: v.len(),
        });
    }
    Ok(())
}
