//! memos store: one LMDB environment per data directory holding memory records, per-cube
//! bitmaps, an arroy vector index, a BM25 lexical index, version history and the ids of
//! processed events. No async: every write API takes the caller's [`RwTxn`], so a whole batch
//! (records + vectors + postings + history + event ids + source offsets) commits at once or
//! not at all.
//!
//! ```no_run
//! # fn main() -> store::Result<()> {
//! let store = store::Store::open("./data", store::StoreOptions::default())?;
//! let mut wtxn = store.write_txn()?;
//! // store.insert(&mut wtxn, &record, &embedding)?; …
//! store.commit(wtxn)?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod error;
pub mod filter;
pub mod lexical;
pub mod model;
pub mod recall;
pub mod scope;
pub mod search;
pub mod text;
pub mod time;
pub mod vecmem;
pub mod vector;

mod bitmaps;
mod catalog;
mod env;
mod jobs;
mod memories;
mod retrieval;

use std::path::{Path, PathBuf};

use arroy::distances::Cosine;
use heed::types::{Bytes, Str};
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions, PutFlags, RoTxn, RwTxn, WithoutTls};
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use error::{Result, StoreError};
pub use filter::Filter;
pub use heed;
pub use jobs::{JobKey, JobRecord};
pub use lexical::Bm25Params;
pub use model::{Bucket, HistoryEntry, MemoryRecord, MemoryType, SourceMessage, Status};
pub use roaring;
pub use scope::Scope;
use vector::{ANN_SHARDS, ArroyIndex, VectorIndex, bytes_to_vec, shard_of, vec_to_bytes};

/// Store options.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Embedding dimensions.
    pub dimensions: usize,
    /// Most bytes of data the store holds (`map_size_mb`); past it, writes that add data are
    /// refused with [`StoreError::Full`]. LMDB's map is this plus a reserve (an eighth, at
    /// least 8 MiB) so deletes, reads and bookkeeping keep working when it is reached. Virtual:
    /// the file grows only as needed.
    pub map_size: usize,
    /// BM25 parameters.
    pub bm25: Bm25Params,
    /// arroy oversampling factor (search_k multiplier).
    pub ann_oversampling: usize,
    /// The RAM-resident vector index (codes per cube, memory budget).
    pub vecmem: vecmem::VecMemOptions,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            dimensions: 384,
            map_size: 64 << 30,
            bm25: Bm25Params::default(),
            ann_oversampling: 2,
            vecmem: vecmem::VecMemOptions::default(),
        }
    }
}

/// A processed event: recorded in the same transaction as the memories it produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Memory ids it produced (or touched).
    pub memory_ids: Vec<String>,
    /// Processing time, unix micros.
    pub processed_at: i64,
    /// Source name (http, embedded, kafka, nats…).
    pub source: String,
    /// Source position (partition/offset, stream sequence), when there is one.
    pub position: Option<String>,
}

/// An input that could not be processed, kept with its reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Source name.
    pub source: String,
    /// Source position, if any.
    pub position: Option<String>,
    /// Why it failed.
    pub reason: String,
    /// The original bytes.
    pub payload: Vec<u8>,
    /// When, unix micros.
    pub at: i64,
}

/// A cube (MemOS MemCube): a partition of memories.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CubeInfo {
    /// Cube id.
    pub cube_id: String,
    /// Display name.
    pub name: String,
    /// Owner user id.
    pub owner_id: String,
    /// Creation time, unix micros.
    pub created_at: i64,
    /// `cube` or `knowledgebase`.
    pub kind: String,
    /// Free text (knowledge bases).
    pub description: String,
}

/// An API key as stored: only the SHA-256 of the secret is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// Public key id (shown in listings and logs).
    pub id: String,
    /// Human name.
    pub name: String,
    /// Hex SHA-256 of the secret.
    pub key_sha256: String,
    /// Cube patterns this key may use (`*` = any, `prefix*` = prefix).
    pub cubes: Vec<String>,
    /// User patterns this key may act for.
    pub users: Vec<String>,
    /// May read (search, get).
    pub read: bool,
    /// May write (add, delete, feedback).
    pub write: bool,
    /// Requests per minute (0 = the server default).
    pub rate_limit_per_minute: u32,
    /// Creation time, unix micros.
    pub created_at: i64,
}

/// Feedback on memories, kept as received until the feedback stage processes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackRecord {
    /// Feedback id.
    pub id: String,
    /// Cube it applies to.
    pub cube_id: String,
    /// User.
    pub user_id: String,
    /// Session.
    pub session_id: Option<String>,
    /// What the user said.
    pub feedback_content: String,
    /// The conversation before it (JSON text).
    pub history: String,
    /// Memories the answer used.
    pub retrieved_memory_ids: Vec<String>,
    /// When the user gave it (as sent).
    pub feedback_time: Option<String>,
    /// `pending` until processed, then `processed` or `failed`.
    pub status: String,
    /// Received, unix micros.
    pub created_at: i64,
    /// What processing did (JSON: `{"add":[…],"update":[…],"archive":[…]}`), once processed.
    pub result: Option<String>,
}

/// The encoding of [`FeedbackRecord`] before it carried `result` (stores written by 0.1
/// releases); decoded as a pending record.
#[derive(Deserialize)]
struct FeedbackRecordV1 {
    id: String,
    cube_id: String,
    user_id: String,
    session_id: Option<String>,
    feedback_content: String,
    history: String,
    retrieved_memory_ids: Vec<String>,
    feedback_time: Option<String>,
    status: String,
    created_at: i64,
}

fn decode_feedback(b: &[u8]) -> Result<FeedbackRecord> {
    match postcard::from_bytes::<FeedbackRecord>(b) {
        Ok(f) => Ok(f),
        Err(e) => match postcard::from_bytes::<FeedbackRecordV1>(b) {
            Ok(o) => Ok(FeedbackRecord {
                id: o.id,
                cube_id: o.cube_id,
                user_id: o.user_id,
                session_id: o.session_id,
                feedback_content: o.feedback_content,
                history: o.history,
                retrieved_memory_ids: o.retrieved_memory_ids,
                feedback_time: o.feedback_time,
                status: o.status,
                created_at: o.created_at,
                result: None,
            }),
            Err(_) => Err(e.into()),
        },
    }
}

/// A precomputed activation (KV) cache for a set of memories (filled by the activation-memory
/// operator). Deleting any of `memory_ids` deletes the entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KvEntry {
    /// Cube it belongs to.
    pub cube_id: String,
    /// Name within the cube (e.g. `working_set`).
    pub name: String,
    /// The memories whose text the cache was built from.
    pub memory_ids: Vec<String>,
    /// Model the cache is for.
    pub model_id: String,
    /// Hash of the tokenizer.
    pub tokenizer_hash: String,
    /// Tokens in the cached prefix.
    pub token_count: u32,
    /// Hash of the composed memory text.
    pub text_hash: String,
    /// Built, unix micros.
    pub created_at: i64,
    /// The tensors (safetensors bytes).
    pub data: Vec<u8>,
}

/// A [`KvEntry`] without its tensors. `data` is the entry's last field, so postcard decodes
/// this from the stored bytes without reading (or copying) the tensors.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct KvHead {
    /// Cube it belongs to.
    pub cube_id: String,
    /// Name within the cube.
    pub name: String,
    /// The memories whose text the cache was built from.
    pub memory_ids: Vec<String>,
    /// Model the cache is for.
    pub model_id: String,
    /// Hash of the tokenizer.
    pub tokenizer_hash: String,
    /// Tokens in the cached prefix.
    pub token_count: u32,
    /// Hash of the composed memory text.
    pub text_hash: String,
    /// Built, unix micros.
    pub created_at: i64,
}

/// What a delete removed, per index.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeleteReceipt {
    /// Memory ids removed.
    pub ids: Vec<String>,
    /// Records removed.
    pub records: usize,
    /// Vectors removed (trees or delta).
    pub vectors: usize,
    /// Lexical postings removed.
    pub postings: usize,
    /// History versions removed.
    pub history: usize,
    /// Memories removed because they were derived from a removed one (extracted facts and
    /// preferences) or were its earlier, archived versions (feedback replacements).
    pub derived: usize,
    /// Activation (KV) cache entries removed because they covered a removed memory.
    pub kv_cache: usize,
    /// Cubes the removed memories belonged to.
    #[serde(default)]
    pub cubes: Vec<String>,
}

/// Counts for `memos status` and metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StoreStats {
    /// Records of any status.
    pub memories: u64,
    /// Cubes.
    pub cubes: u64,
    /// Processed events.
    pub events: u64,
    /// Dead letters.
    pub dead_letters: u64,
    /// Vectors in the arroy trees.
    pub vectors_indexed: u64,
    /// Vector changes (adds and removals) not yet folded into the arroy trees.
    pub vectors_pending: u64,
    /// The RAM-resident vector index: cubes and vectors held, bytes of codes, evictions.
    pub vectors_in_memory: vecmem::VecMemStats,
    /// Bytes used on disk.
    pub disk_bytes: u64,
    /// Bytes in use per LMDB database (the file also holds free pages for reuse).
    pub databases: std::collections::BTreeMap<String, u64>,
}

const META_NEXT_ID: &str = "next_id";
const META_PENDING: &str = "vector_pending";
const META_DIMS: &str = "dimensions";
/// The layout of the arroy database: absent in stores written with one index for the whole
/// store (migrated on open: the trees are rebuilt per shard by the background fold).
const META_ANN_LAYOUT: &str = "ann_layout";
const ANN_LAYOUT: &[u8] = b"shards-64";
/// The store's format (u32 LE). Absent = format 1: records without their format byte.
const META_FORMAT: &str = "format_version";
/// The store format this build writes: 2 = every memory record (current and earlier versions)
/// starts with [`model::RECORD_FORMAT`].
pub const STORE_FORMAT: u32 = 2;

/// LMDB's map for a configured size: plus a reserve, rounded up to whole 1 MiB (a multiple of
/// the page size).
fn lmdb_map_size(configured: usize) -> usize {
    let reserve = (configured / 8).max(8 << 20);
    configured
        .saturating_add(reserve)
        .div_ceil(1 << 20)
        .saturating_mul(1 << 20)
}

/// The format recorded in `meta` (absent: 1).
fn read_format(b: Option<&[u8]>) -> Result<u32> {
    match b {
        None => Ok(1),
        Some(b) => Ok(u32::from_le_bytes(
            b.try_into()
                .map_err(|_| StoreError::Codec("format_version".into()))?,
        )),
    }
}

/// An `ann_pending` value: 1 = added or replaced, 0 = removed; then the cube's arroy shard.
fn pending_value(add: bool, cube: &str) -> [u8; 3] {
    let [hi, lo] = shard_of(cube).to_be_bytes();
    [add as u8, hi, lo]
}

/// The internal id of a key of the databases keyed by id (`vectors`, `ann_pending`, …).
fn id_of_key(k: &[u8], db: &str) -> Result<u32> {
    Ok(u32::from_be_bytes(
        k.try_into()
            .map_err(|_| StoreError::Codec(format!("{db} key")))?,
    ))
}
/// Field-bitmap name of the "derived from" links (`info.derived_from`).
const LINK_DERIVED: &str = "\u{1}derived";

/// The store. Cheap to share behind an `Arc`; LMDB allows one writer and many readers.
pub struct Store {
    env: Env<WithoutTls>,
    path: PathBuf,
    opts: StoreOptions,
    meta: Database<'static, Str, Bytes>,
    records: Database<'static, Bytes, Bytes>,
    ids: Database<'static, Str, Bytes>,
    vectors: Database<'static, Bytes, Bytes>,
    hashes: Database<'static, Bytes, Bytes>,
    events: Database<'static, Bytes, Bytes>,
    history: Database<'static, Bytes, Bytes>,
    fields: Database<'static, Bytes, Bytes>,
    cubes: Database<'static, Str, Bytes>,
    dead_letters: Database<'static, Bytes, Bytes>,
    offsets: Database<'static, Str, Bytes>,
    api_keys: Database<'static, Str, Bytes>,
    feedback: Database<'static, Bytes, Bytes>,
    kv: Database<'static, Bytes, Bytes>,
    /// Vector changes not yet in the arroy trees: big-endian id → 1 (added or replaced) or 0
    /// (removed). One small put per change; the background fold drains it.
    ann_pending: Database<'static, Bytes, Bytes>,
    /// The durable job queue (`jobs.rs`): `cube\0seq` → [`JobRecord`].
    jobs: Database<'static, Bytes, Bytes>,
    lexical: lexical::LexicalIndex,
    vindex: ArroyIndex,
    vecmem: vecmem::VecMem,
}

/// The f32 vectors of one LMDB snapshot, as the RAM index reads them.
struct SnapshotVectors<'a, 't> {
    store: &'a Store,
    txn: &'a RoTxn<'t>,
}

impl vecmem::VectorSource for SnapshotVectors<'_, '_> {
    fn vector(&self, id: u32) -> Result<Option<Vec<f32>>> {
        Ok(self
            .store
            .vectors
            .get(self.txn, &k32(id))?
            .map(bytes_to_vec))
    }

    fn dot(&self, id: u32, query: &[f32]) -> Result<Option<f32>> {
        self.store.cosine(self.txn, id, query)
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn k32(id: u32) -> [u8; 4] {
    id.to_be_bytes()
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            v.push(0);
        }
        v.extend_from_slice(p);
    }
    v
}

fn field_key(cube: &str, field: &str, value: &str) -> Vec<u8> {
    join(&[cube.as_bytes(), field.as_bytes(), value.as_bytes()])
}

/// The field-bitmap keys a record is indexed under.
fn field_keys(r: &MemoryRecord) -> Vec<Vec<u8>> {
    let cube = r.cube_id.as_str();
    let mut keys = vec![
        field_key(cube, "", ""),
        field_key(cube, "user_id", &r.user_id),
        field_key(cube, "session_id", &r.session_id),
        field_key(cube, "memory_type", r.memory_type.as_str()),
        field_key(cube, "status", r.status.as_str()),
    ];
    if let Some(a) = &r.agent_id {
        keys.push(field_key(cube, "agent_id", a));
    }
    if let Some(a) = &r.app_id {
        keys.push(field_key(cube, "app_id", a));
    }
    // Lineage: which memories were derived from which, so deletes can follow them.
    if let Some(Value::String(parent)) = r.info.get(model::DERIVED_FROM) {
        keys.push(field_key(cube, LINK_DERIVED, parent.as_str()));
    }
    keys
}

/// Index writes of a batch kept in memory until [`Store::flush_index`]: field-bitmap additions
/// per key and postings per term.
#[derive(Debug, Default)]
pub struct IndexBuffer {
    fields: std::collections::HashMap<Vec<u8>, RoaringBitmap>,
    lexical: lexical::PostingsBuffer,
    /// The memories whose index entries wait here.
    ids: RoaringBitmap,
}

impl IndexBuffer {
    /// Nothing buffered.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.lexical.is_empty()
    }

    /// Whether the index entries of memory `id` wait in this buffer (so a write that reads or
    /// changes them — an update, a delete — must flush it first).
    pub fn holds(&self, id: u32) -> bool {
        self.ids.contains(id)
    }

    /// Adds `other`'s writes (of later ids) to this buffer.
    pub fn absorb(&mut self, other: IndexBuffer) {
        for (k, b) in other.fields {
            *self.fields.entry(k).or_default() |= b;
        }
        self.lexical.absorb(other.lexical);
        self.ids |= other.ids;
    }
}

fn bitmap_from(bytes: Option<&[u8]>) -> Result<RoaringBitmap> {
    match bytes {
        Some(b) => RoaringBitmap::deserialize_from(b).map_err(|e| StoreError::Codec(e.to_string())),
        None => Ok(RoaringBitmap::new()),
    }
}

fn bitmap_bytes(b: &RoaringBitmap) -> Vec<u8> {
    let mut v = Vec::with_capacity(b.serialized_size());
    b.serialize_into(&mut v)
        .expect("writing to a Vec cannot fail");
    v
}

/// Checks an id used as a key component (cube, user, session): non-empty, no NUL, bounded.
pub fn validate_key_part(what: &str, s: &str) -> Result<()> {
    if s.is_empty() || s.len() > 256 || s.contains('\0') {
        return Err(StoreError::InvalidArgument(format!(
            "{what} must be 1-256 bytes without NUL characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_with_one_arroy_index_is_migrated_to_shards() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            dimensions: 4,
            ..Default::default()
        };
        let cubes = ["a", "b", "c", "d", "e", "f"];
        {
            let s = Store::open(dir.path(), opts.clone()).unwrap();
            let mut w = s.write_txn().unwrap();
            for (i, cube) in cubes.iter().enumerate() {
                let r = MemoryRecord {
                    id: format!("m{i}"),
                    memory: format!("memory {i}"),
                    cube_id: cube.to_string(),
                    user_id: "u".into(),
                    session_id: "s".into(),
                    agent_id: None,
                    app_id: None,
                    memory_type: MemoryType::LongTermMemory,
                    status: Status::Activated,
                    key: None,
                    tags: vec![],
                    info: serde_json::Map::new(),
                    source: None,
                    sources: vec![],
                    confidence: 1.0,
                    created_at: 1,
                    updated_at: 1,
                    event_time: None,
                    version: 1,
                    history: vec![],
                    event_id: "e".into(),
                    file_ids: vec![],
                    embedding: vec![],
                };
                let mut v = vec![0.1f32; 4];
                v[i % 4] = 1.0;
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter_mut().for_each(|x| *x /= n);
                s.insert(&mut w, &r, &v).unwrap();
            }
            // The layout of older stores: every vector in arroy index 0, folded, no layout mark.
            let db = s.vindex.db;
            let writer = arroy::Writer::<Cosine>::new(db, 0, 4);
            for id in 0..cubes.len() as u32 {
                let v = s.embedding(&w, id).unwrap().unwrap();
                writer.add_item(&mut w, id, &v).unwrap();
            }
            let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
            writer.builder(&mut rng).build(&mut w).unwrap();
            s.ann_pending.clear(&mut w).unwrap();
            s.meta.delete(&mut w, META_ANN_LAYOUT).unwrap();
            s.commit(w).unwrap();
            assert_eq!(s.ann_shard_sizes().unwrap(), vec![(0, cubes.len() as u64)]);
        }
        let s = Store::open(dir.path(), opts).unwrap();
        // The old trees are gone and every vector waits for the fold, into its cube's shard.
        assert_eq!(s.stats().unwrap().vectors_pending, cubes.len() as u64);
        assert_eq!(s.index_pending().unwrap(), cubes.len() as u64);
        let mut expected: std::collections::BTreeMap<u16, u64> = Default::default();
        for c in cubes {
            *expected.entry(shard_of(c)).or_default() += 1;
        }
        let got: std::collections::BTreeMap<u16, u64> =
            s.ann_shard_sizes().unwrap().into_iter().collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn feedback_records_of_older_stores_still_decode() {
        #[derive(Serialize)]
        struct V1<'a> {
            id: &'a str,
            cube_id: &'a str,
            user_id: &'a str,
            session_id: Option<&'a str>,
            feedback_content: &'a str,
            history: &'a str,
            retrieved_memory_ids: Vec<&'a str>,
            feedback_time: Option<&'a str>,
            status: &'a str,
            created_at: i64,
        }
        let old = postcard::to_stdvec(&V1 {
            id: "f1",
            cube_id: "c",
            user_id: "u",
            session_id: None,
            feedback_content: "no",
            history: "[]",
            retrieved_memory_ids: vec!["m1"],
            feedback_time: None,
            status: "pending",
            created_at: 7,
        })
        .unwrap();
        let f = decode_feedback(&old).unwrap();
        assert_eq!(
            (f.id.as_str(), f.status.as_str(), f.result.as_deref()),
            ("f1", "pending", None)
        );
        assert_eq!(f.retrieved_memory_ids, vec!["m1".to_string()]);
        let mut new = f.clone();
        new.result = Some("{}".into());
        let b = postcard::to_stdvec(&new).unwrap();
        assert_eq!(decode_feedback(&b).unwrap(), new);
        assert!(decode_feedback(b"\xff").is_err());
    }
}
