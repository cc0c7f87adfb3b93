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
pub mod scope;
pub mod search;
pub mod text;
pub mod time;
pub mod vecmem;
pub mod vector;

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
}

impl IndexBuffer {
    /// Nothing buffered.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.lexical.is_empty()
    }

    /// Adds `other`'s writes (of later ids) to this buffer.
    pub fn absorb(&mut self, other: IndexBuffer) {
        for (k, b) in other.fields {
            *self.fields.entry(k).or_default() |= b;
        }
        self.lexical.absorb(other.lexical);
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

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: impl AsRef<Path>, opts: StoreOptions) -> Result<Store> {
        let path = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&path)?;
        // SAFETY: the data directory is owned by this process; LMDB's documented caveat is
        // about opening the same environment twice in one process, which `memos` never does.
        let env = unsafe {
            EnvOpenOptions::new()
                .read_txn_without_tls()
                .map_size(lmdb_map_size(opts.map_size))
                .max_dbs(32)
                .max_readers(1024)
                .open(&path)?
        };
        let wtxn = env.write_txn()?;
        type B = Database<'static, Bytes, Bytes>;
        #[allow(clippy::type_complexity)]
        let (
            meta,
            records,
            ids,
            vectors,
            postings,
            stats,
            hashes,
            events,
            history,
            fields,
            cubes,
            arroy_db,
        ): (
            Database<'static, Str, Bytes>,
            B,
            Database<'static, Str, Bytes>,
            B,
            B,
            B,
            B,
            B,
            B,
            B,
            Database<'static, Str, Bytes>,
            arroy::Database<'static, Cosine>,
        ) = env
            .create_databases_and_commit(wtxn, |dbo, wtxn| -> Result<_> {
                Ok(CommitOrAbort::<_, ()>::Commit((
                    dbo.create_database(wtxn, Some("meta"))?,
                    dbo.create_database(wtxn, Some("records"))?,
                    dbo.create_database(wtxn, Some("ids"))?,
                    dbo.create_database(wtxn, Some("vectors"))?,
                    dbo.create_database(wtxn, Some("postings"))?,
                    dbo.create_database(wtxn, Some("lexical_stats"))?,
                    dbo.create_database(wtxn, Some("hashes"))?,
                    dbo.create_database(wtxn, Some("events"))?,
                    dbo.create_database(wtxn, Some("history"))?,
                    dbo.create_database(wtxn, Some("fields"))?,
                    dbo.create_database(wtxn, Some("cubes"))?,
                    dbo.create_database(wtxn, Some("arroy"))?,
                )))
            })?
            .unwrap_commit();
        let wtxn = env.write_txn()?;
        let (dead_letters, offsets, api_keys, feedback, kv, ann_pending) = env
            .create_databases_and_commit(wtxn, |dbo, wtxn| -> Result<_> {
                Ok(CommitOrAbort::<_, ()>::Commit((
                    dbo.create_database(wtxn, Some("dead_letters"))?,
                    dbo.create_database(wtxn, Some("offsets"))?,
                    dbo.create_database(wtxn, Some("api_keys"))?,
                    dbo.create_database(wtxn, Some("feedback"))?,
                    dbo.create_database(wtxn, Some("kv_cache"))?,
                    dbo.create_database(wtxn, Some("ann_pending"))?,
                )))
            })?
            .unwrap_commit();
        let mut vindex = ArroyIndex::new(arroy_db, opts.dimensions);
        vindex.oversampling = opts.ann_oversampling.max(1);
        let store = Store {
            env,
            path,
            meta,
            records,
            ids,
            vectors,
            hashes,
            events,
            history,
            fields,
            cubes,
            dead_letters,
            offsets,
            api_keys,
            feedback,
            kv,
            ann_pending,
            lexical: lexical::LexicalIndex { postings, stats },
            vindex,
            vecmem: vecmem::VecMem::new(opts.dimensions, opts.vecmem),
            opts,
        };
        store.check_dimensions()?;
        store.migrate_format()?;
        store.migrate_pending()?;
        Ok(store)
    }

    /// The format of the data on disk ([`STORE_FORMAT`] once opened by this build).
    pub fn format_version(&self) -> Result<u32> {
        let txn = self.env.read_txn()?;
        read_format(self.meta.get(&txn, META_FORMAT)?)
    }

    /// Brings a store of an older format up to [`STORE_FORMAT`] in one transaction (format 1:
    /// every record and earlier version gains its format byte); refuses a newer format.
    fn migrate_format(&self) -> Result<()> {
        let mut wtxn = self.env.write_txn()?;
        let found = read_format(self.meta.get(&wtxn, META_FORMAT)?)?;
        if found > STORE_FORMAT {
            return Err(StoreError::InvalidArgument(format!(
                "the store in {} has format {found}; this memos reads formats up to {STORE_FORMAT}: upgrade memos",
                self.path.display()
            )));
        }
        if found == STORE_FORMAT {
            return Ok(());
        }
        // Format 1 → 2.
        for db in [&self.records, &self.history] {
            let old: Vec<(Vec<u8>, MemoryRecord)> = db
                .iter(&wtxn)?
                .map(|item| {
                    let (k, v) = item?;
                    Ok((k.to_vec(), MemoryRecord::decode_v1(v)?))
                })
                .collect::<Result<_>>()?;
            for (k, r) in old {
                db.put(&mut wtxn, &k, &r.encode()?)?;
            }
        }
        self.meta
            .put(&mut wtxn, META_FORMAT, &STORE_FORMAT.to_le_bytes())?;
        wtxn.commit()?;
        Ok(())
    }

    /// Stores written before `ann_pending` kept the delta as one bitmap in `meta`.
    fn migrate_pending(&self) -> Result<()> {
        let mut wtxn = self.env.write_txn()?;
        if let Some(b) = self.meta.get(&wtxn, META_PENDING)? {
            let old = bitmap_from(Some(b))?;
            for id in &old {
                self.ann_pending.put(&mut wtxn, &k32(id), &[1])?;
            }
            self.meta.delete(&mut wtxn, META_PENDING)?;
        }
        // One arroy index for the whole store → one per shard: drop the old trees and queue
        // every vector for the background fold, which builds each shard (searches meanwhile
        // use the RAM codes, or read the pending vectors exactly).
        if self.meta.get(&wtxn, META_ANN_LAYOUT)? != Some(ANN_LAYOUT) {
            if !self.vindex.is_empty(&wtxn)? {
                self.vindex.clear(&mut wtxn)?;
                self.ann_pending.clear(&mut wtxn)?;
                let ids: Vec<u32> = self
                    .vectors
                    .iter(&wtxn)?
                    .map(|r| {
                        r.map_err(StoreError::from)
                            .and_then(|(k, _)| id_of_key(k, "vectors"))
                    })
                    .collect::<Result<_>>()?;
                for id in ids {
                    if let Some(r) = self.record(&wtxn, id)? {
                        self.ann_pending.put(
                            &mut wtxn,
                            &k32(id),
                            &pending_value(true, &r.cube_id),
                        )?;
                    }
                }
            }
            self.meta.put(&mut wtxn, META_ANN_LAYOUT, ANN_LAYOUT)?;
        }
        wtxn.commit()?;
        Ok(())
    }

    fn check_dimensions(&self) -> Result<()> {
        let mut wtxn = self.env.write_txn()?;
        match self.meta.get(&wtxn, META_DIMS)? {
            Some(b) => {
                let d =
                    u32::from_le_bytes(b.try_into().map_err(|_| StoreError::Codec("dims".into()))?)
                        as usize;
                if d != self.opts.dimensions {
                    return Err(StoreError::Dimensions {
                        expected: d,
                        received: self.opts.dimensions,
                    });
                }
            }
            None => {
                self.meta.put(
                    &mut wtxn,
                    META_DIMS,
                    &(self.opts.dimensions as u32).to_le_bytes(),
                )?;
            }
        }
        wtxn.commit()?;
        Ok(())
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.opts
    }

    /// The vector backend.
    pub fn vector_index(&self) -> &dyn VectorIndex {
        &self.vindex
    }

    /// Begins the (single) write transaction.
    pub fn write_txn(&self) -> Result<RwTxn<'_>> {
        Ok(self.env.write_txn()?)
    }

    /// Begins a child of `parent` (an LMDB nested transaction). Its writes become part of the
    /// parent with [`Store::commit_child`]; dropping it undoes them and leaves the parent as it
    /// was. The sink applies each event in its own child, so one event that cannot be written
    /// (a key LMDB refuses, a record that does not encode, a panic) is isolated from the rest
    /// of its batch, which still commits in the parent's one transaction.
    pub fn child_txn<'p>(&'p self, parent: &'p mut RwTxn) -> Result<RwTxn<'p>> {
        Ok(self.env.nested_write_txn(parent)?)
    }

    /// The largest key LMDB accepts in this environment (511 bytes in a default LMDB build,
    /// more with the `longer-keys` build heed uses here).
    pub fn max_key_size(&self) -> usize {
        self.env.max_key_size()
    }

    /// LMDB refuses empty keys and keys over [`Store::max_key_size`]; an index key is checked
    /// before it is buffered, so the refusal is the one event's error, not its batch's.
    fn check_key(&self, k: &[u8]) -> Result<()> {
        let max = self.max_key_size();
        if k.is_empty() || k.len() > max {
            return Err(StoreError::InvalidArgument(format!(
                "an index key of {} bytes (cube, field and value together) is beyond LMDB's {max}-byte limit",
                k.len()
            )));
        }
        Ok(())
    }

    /// Folds a child transaction into its parent (nothing is durable until the parent commits).
    pub fn commit_child(&self, child: RwTxn<'_>) -> Result<()> {
        child.commit()?;
        Ok(())
    }

    /// Begins a read transaction: a consistent snapshot.
    pub fn read_txn(&self) -> Result<RoTxn<'_, WithoutTls>> {
        Ok(self.env.read_txn()?)
    }

    /// Commits a write transaction. Vector changes wait in `ann_pending` for the background
    /// fold ([`Store::index_pending`]); nothing is built inside the caller's transaction.
    pub fn commit(&self, wtxn: RwTxn<'_>) -> Result<()> {
        wtxn.commit()?;
        Ok(())
    }

    /// With `force_index`, folds every pending vector change into the arroy trees in the
    /// caller's transaction (imports and benchmarks that want a built index at once); without,
    /// does nothing.
    pub fn finish(&self, wtxn: &mut RwTxn<'_>, force_index: bool) -> Result<()> {
        if !force_index {
            return Ok(());
        }
        let changes: Vec<(u32, bool, Option<u16>)> = self
            .ann_pending
            .iter(wtxn)?
            .map(|r| {
                r.map_err(StoreError::from).and_then(|(k, v)| {
                    let id = id_of_key(k, "ann_pending")?;
                    let shard = match v {
                        [_, hi, lo] => Some(u16::from_be_bytes([*hi, *lo])),
                        _ => None,
                    };
                    Ok((id, v.first() == Some(&1), shard))
                })
            })
            .collect::<Result<_>>()?;
        if changes.is_empty() {
            return Ok(());
        }
        let mut touched = std::collections::BTreeSet::new();
        for (id, add, shard) in changes {
            let v = if add {
                self.vectors.get(wtxn, &k32(id))?.map(bytes_to_vec)
            } else {
                None
            };
            // A change queued without its shard (an older store): the record names the cube.
            let shard = match shard {
                Some(s) => Some(s),
                None => self.record(wtxn, id)?.map(|r| shard_of(&r.cube_id)),
            };
            match (v, shard) {
                (Some(v), Some(shard)) => {
                    self.vindex.add(wtxn, shard, id, &v)?;
                    touched.insert(shard);
                }
                (None, Some(shard)) => {
                    self.vindex.remove(wtxn, shard, id)?;
                    touched.insert(shard);
                }
                // Gone, and its shard unknown: after the layout migration no shard holds it.
                (_, None) => {}
            }
        }
        for shard in touched {
            self.vindex.build(wtxn, shard)?;
        }
        self.ann_pending.clear(wtxn)?;
        Ok(())
    }

    /// Folds the pending vector changes into the arroy trees in a transaction of its own (the
    /// background indexer; never the sink's transaction). Returns how many changes it folded.
    pub fn index_pending(&self) -> Result<u64> {
        let mut wtxn = self.write_txn()?;
        let n = self.ann_pending.len(&wtxn)?;
        if n == 0 {
            return Ok(0);
        }
        self.finish(&mut wtxn, true)?;
        wtxn.commit()?;
        Ok(n)
    }

    /// Whether the persisted ANN (arroy) is needed: the store holds more vectors than the RAM
    /// codes' budget, so some cube may be searched through the trees.
    pub fn ann_needed(&self) -> bool {
        let Ok(txn) = self.read_txn() else {
            return true;
        };
        let n = self.vectors.len(&txn).unwrap_or(u64::MAX);
        n.saturating_mul(self.vecmem.bytes_per_vector() as u64)
            > self.opts.vecmem.budget_bytes as u64
    }

    /// Whether at least `n` vector changes wait for the fold.
    pub fn pending_over(&self, n: u64) -> bool {
        self.read_txn()
            .and_then(|t| Ok(self.ann_pending.len(&t)?))
            .is_ok_and(|len| len >= n)
    }

    /// How many vector changes wait for the background fold.
    pub fn pending_changes(&self, txn: &RoTxn) -> Result<u64> {
        Ok(self.ann_pending.len(txn)?)
    }

    /// Ids whose vector was added or replaced since the last fold (searched exactly).
    fn pending(&self, txn: &RoTxn) -> Result<RoaringBitmap> {
        let mut b = RoaringBitmap::new();
        for r in self.ann_pending.iter(txn)? {
            let (k, v) = r?;
            if v.first() == Some(&1)
                && let Ok(k) = <[u8; 4]>::try_from(k)
            {
                b.insert(u32::from_be_bytes(k));
            }
        }
        Ok(b)
    }

    fn next_id(&self, wtxn: &mut RwTxn) -> Result<u32> {
        let id = match self.meta.get(wtxn, META_NEXT_ID)? {
            Some(b) => u32::from_le_bytes(
                b.try_into()
                    .map_err(|_| StoreError::Codec("next_id".into()))?,
            ),
            None => 0,
        };
        let next = id
            .checked_add(1)
            .ok_or_else(|| StoreError::InvalidArgument("id space exhausted".into()))?;
        self.meta.put(wtxn, META_NEXT_ID, &next.to_le_bytes())?;
        Ok(id)
    }

    /// Upper bound (exclusive) of internal ids handed out so far.
    pub fn id_bound(&self, txn: &RoTxn) -> Result<u32> {
        Ok(match self.meta.get(txn, META_NEXT_ID)? {
            Some(b) => u32::from_le_bytes(
                b.try_into()
                    .map_err(|_| StoreError::Codec("next_id".into()))?,
            ),
            None => 0,
        })
    }

    fn bitmap(&self, txn: &RoTxn, key: &[u8]) -> Result<RoaringBitmap> {
        bitmap_from(self.fields.get(txn, key)?)
    }

    fn bitmap_update(&self, wtxn: &mut RwTxn, key: &[u8], id: u32, add: bool) -> Result<()> {
        let mut b = self.bitmap(wtxn, key)?;
        let changed = if add { b.insert(id) } else { b.remove(id) };
        if changed {
            if b.is_empty() {
                self.fields.delete(wtxn, key)?;
            } else {
                self.fields.put(wtxn, key, &bitmap_bytes(&b))?;
            }
        }
        Ok(())
    }

    fn index_fields(&self, wtxn: &mut RwTxn, r: &MemoryRecord, id: u32, add: bool) -> Result<()> {
        for k in field_keys(r) {
            self.bitmap_update(wtxn, &k, id, add)?;
        }
        self.index_hash(wtxn, r, id, add)
    }

    fn index_hash(&self, wtxn: &mut RwTxn, r: &MemoryRecord, id: u32, add: bool) -> Result<()> {
        let cube = r.cube_id.as_str();
        let hk = join(&[
            cube.as_bytes(),
            &model::content_hash(r.memory_type.bucket(), &r.memory),
        ]);
        if add {
            if r.status == Status::Activated {
                self.hashes.put(wtxn, &hk, &k32(id))?;
            }
        } else if self.hashes.get(wtxn, &hk)? == Some(&k32(id)[..]) {
            self.hashes.delete(wtxn, &hk)?;
        }
        Ok(())
    }

    /// Inserts a new memory like [`Store::insert`], but its field bitmaps, postings and lexical
    /// statistics go to `buf` instead of LMDB: a batch writes each of those keys once, with
    /// [`Store::flush_index`], instead of re-reading and re-writing it per memory. Everything
    /// else (record, id, vector, content hash, cube) is written in `wtxn` at once. Until the
    /// buffer is flushed, the bitmaps and postings in `wtxn` do not show the memory: flush
    /// before anything that reads them in the same transaction (updates, deletes, filters).
    /// Keys LMDB could not hold are refused here, so a flush fails only for transient reasons.
    pub fn insert_into(
        &self,
        wtxn: &mut RwTxn,
        r: &MemoryRecord,
        embedding: &[f32],
        buf: &mut IndexBuffer,
    ) -> Result<u32> {
        model::check_dims(self.opts.dimensions, embedding)?;
        validate_key_part("cube_id", &r.cube_id)?;
        self.check_room(wtxn)?;
        let keys = field_keys(r);
        for k in &keys {
            self.check_key(k)?;
        }
        if self.ids.get(wtxn, &r.id)?.is_some() {
            return Err(StoreError::InvalidArgument(format!(
                "memory {} already exists",
                r.id
            )));
        }
        let id = self.next_id(wtxn)?;
        self.ids.put(wtxn, &r.id, &k32(id))?;
        // Ids only grow, so new records and vectors are appended: LMDB then fills pages
        // completely instead of splitting them in half (half the file size for vectors).
        self.records
            .put_with_flags(wtxn, PutFlags::APPEND, &k32(id), &r.encode()?)?;
        self.vectors
            .put_with_flags(wtxn, PutFlags::APPEND, &k32(id), &vec_to_bytes(embedding))?;
        self.ann_pending
            .put(wtxn, &k32(id), &pending_value(true, &r.cube_id))?;
        for k in keys {
            buf.fields.entry(k).or_default().insert(id);
        }
        self.index_hash(wtxn, r, id, true)?;
        if r.status == Status::Activated {
            self.lexical
                .buffer(&mut buf.lexical, &r.cube_id, id, &r.memory);
        }
        if self.cubes.get(wtxn, &r.cube_id)?.is_none() {
            let info = CubeInfo {
                cube_id: r.cube_id.clone(),
                name: r.cube_id.clone(),
                owner_id: r.user_id.clone(),
                created_at: r.created_at,
                kind: "cube".into(),
                description: String::new(),
            };
            self.put_cube(wtxn, &info)?;
        }
        Ok(id)
    }

    /// Writes a batch's buffered bitmaps, postings and statistics: each key read and written
    /// once; postings appended to the last block of their term without decoding it.
    pub fn flush_index(&self, wtxn: &mut RwTxn, buf: IndexBuffer) -> Result<()> {
        for (k, add) in buf.fields {
            let b = self.bitmap(wtxn, &k)? | add;
            self.fields.put(wtxn, &k, &bitmap_bytes(&b))?;
        }
        self.lexical.flush(wtxn, buf.lexical)
    }

    /// Internal id of a memory uuid.
    pub fn internal_id(&self, txn: &RoTxn, uuid: &str) -> Result<Option<u32>> {
        Ok(self
            .ids
            .get(txn, uuid)?
            .map(|b| u32::from_be_bytes(b.try_into().unwrap_or([0; 4]))))
    }

    /// Loads a record by internal id (without its embedding).
    pub fn record(&self, txn: &RoTxn, id: u32) -> Result<Option<MemoryRecord>> {
        self.records
            .get(txn, &k32(id))?
            .map(MemoryRecord::decode)
            .transpose()
    }

    /// Loads a record by uuid (without its embedding).
    pub fn get(&self, txn: &RoTxn, uuid: &str) -> Result<Option<MemoryRecord>> {
        match self.internal_id(txn, uuid)? {
            Some(id) => self.record(txn, id),
            None => Ok(None),
        }
    }

    /// Loads a record by uuid with its embedding.
    pub fn get_with_embedding(&self, txn: &RoTxn, uuid: &str) -> Result<Option<MemoryRecord>> {
        let Some(id) = self.internal_id(txn, uuid)? else {
            return Ok(None);
        };
        let Some(mut r) = self.record(txn, id)? else {
            return Ok(None);
        };
        r.embedding = self.embedding(txn, id)?.unwrap_or_default();
        Ok(Some(r))
    }

    /// Cosine of `query` with the stored (unit) embedding of an internal id, without copying it.
    pub fn cosine(&self, txn: &RoTxn, id: u32, query: &[f32]) -> Result<Option<f32>> {
        Ok(self
            .vectors
            .get(txn, &k32(id))?
            .map(|b| vector::dot_bytes(query, b)))
    }

    /// The stored embedding of an internal id.
    pub fn embedding(&self, txn: &RoTxn, id: u32) -> Result<Option<Vec<f32>>> {
        Ok(self.vectors.get(txn, &k32(id))?.map(bytes_to_vec))
    }

    /// Inserts a new memory with its embedding. Returns its internal id.
    /// Fails if the uuid already exists (use [`Store::update`]).
    pub fn insert(&self, wtxn: &mut RwTxn, r: &MemoryRecord, embedding: &[f32]) -> Result<u32> {
        let mut buf = IndexBuffer::default();
        let id = self.insert_into(wtxn, r, embedding, &mut buf)?;
        self.flush_index(wtxn, buf)?;
        Ok(id)
    }

    /// Replaces a memory with a new version. The previous version is appended to `history`
    /// (and its full snapshot kept in the history database); `version` is bumped.
    /// `embedding` None keeps the existing vector.
    pub fn update(
        &self,
        wtxn: &mut RwTxn,
        new: &MemoryRecord,
        embedding: Option<&[f32]>,
        update_type: &str,
        merged_from: Option<String>,
    ) -> Result<MemoryRecord> {
        let id = self
            .internal_id(wtxn, &new.id)?
            .ok_or_else(|| StoreError::NotFound(new.id.clone()))?;
        let old = self
            .record(wtxn, id)?
            .ok_or_else(|| StoreError::NotFound(new.id.clone()))?;
        let mut hk = new.id.as_bytes().to_vec();
        hk.push(0);
        hk.extend_from_slice(&old.version.to_be_bytes());
        self.history.put(wtxn, &hk, &old.encode()?)?;
        let mut rec = new.clone();
        rec.cube_id = old.cube_id.clone();
        rec.version = old.version + 1;
        rec.history = old.history.clone();
        rec.history.push(HistoryEntry {
            version: old.version,
            memory: old.memory.clone(),
            update_type: update_type.to_string(),
            archived_at: time::now_micros(),
            merged_from,
        });
        rec.updated_at = time::now_micros();
        self.index_fields(wtxn, &old, id, false)?;
        if old.status == Status::Activated {
            self.lexical.remove(wtxn, &old.cube_id, id, &old.memory)?;
        }
        self.records.put(wtxn, &k32(id), &rec.encode()?)?;
        self.index_fields(wtxn, &rec, id, true)?;
        if rec.status == Status::Activated {
            self.lexical.add(wtxn, &rec.cube_id, id, &rec.memory)?;
        }
        if let Some(v) = embedding {
            model::check_dims(self.opts.dimensions, v)?;
            self.vectors.put(wtxn, &k32(id), &vec_to_bytes(v))?;
            self.ann_pending
                .put(wtxn, &k32(id), &pending_value(true, &rec.cube_id))?;
            self.vecmem.invalidate(&rec.cube_id, id);
        }
        Ok(rec)
    }

    /// Stores a full earlier version of a memory (its `version` numbers it), as [`Store::update`]
    /// does; used to import a cube's history.
    pub fn put_version(&self, wtxn: &mut RwTxn, v: &MemoryRecord) -> Result<()> {
        let mut hk = v.id.as_bytes().to_vec();
        hk.push(0);
        hk.extend_from_slice(&v.version.to_be_bytes());
        self.history.put(wtxn, &hk, &v.encode()?)?;
        Ok(())
    }

    /// Previous full versions of a memory, oldest first.
    pub fn versions(&self, txn: &RoTxn, uuid: &str) -> Result<Vec<MemoryRecord>> {
        let mut prefix = uuid.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.history.prefix_iter(txn, &prefix)? {
            let (_, v) = item?;
            out.push(MemoryRecord::decode(v)?);
        }
        Ok(out)
    }

    /// Hard-deletes memories by uuid, completely and in the caller's transaction: the record,
    /// its vector (trees and delta), postings, field bitmaps, content hash and history; the
    /// memories derived from it (`info.derived_from`, e.g. extracted preferences) and its
    /// earlier archived versions (`info.covered_history`, feedback replacements), recursively;
    /// and every activation (KV) cache entry that covered any of them.
    pub fn delete(&self, wtxn: &mut RwTxn, uuids: &[String]) -> Result<DeleteReceipt> {
        let mut receipt = DeleteReceipt::default();
        // (uuid, reached through a link, the cube a linked memory must be in: links are never
        // followed across cubes, whatever an `info` value says).
        let mut queue: std::collections::VecDeque<(String, bool, Option<String>)> =
            uuids.iter().map(|u| (u.clone(), false, None)).collect();
        let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut removed: std::collections::HashSet<String> = std::collections::HashSet::new();
        // KV entries are keyed by cube and only cover that cube's memories.
        let mut removed_cubes: std::collections::BTreeSet<String> = Default::default();
        while let Some((uuid, derived, within)) = queue.pop_front() {
            let Some(id) = self.internal_id(wtxn, &uuid)? else {
                continue;
            };
            let Some(r) = self.record(wtxn, id)? else {
                continue;
            };
            if within.as_ref().is_some_and(|c| *c != r.cube_id) || !seen.insert(uuid.clone()) {
                continue;
            }
            for child in self.bitmap(wtxn, &field_key(&r.cube_id, LINK_DERIVED, &uuid))? {
                if let Some(c) = self.record(wtxn, child)? {
                    queue.push_back((c.id, true, Some(r.cube_id.clone())));
                }
            }
            if let Some(Value::String(prev)) = r.info.get(model::COVERED_HISTORY) {
                queue.push_back((prev.clone(), true, Some(r.cube_id.clone())));
            }
            self.index_fields(wtxn, &r, id, false)?;
            if r.status == Status::Activated {
                receipt.postings += self.lexical.remove(wtxn, &r.cube_id, id, &r.memory)?;
            }
            self.records.delete(wtxn, &k32(id))?;
            self.ids.delete(wtxn, &uuid)?;
            if self.vectors.delete(wtxn, &k32(id))? {
                receipt.vectors += 1;
            }
            // The trees drop it at the next fold; searches never return it meanwhile, since
            // every candidate set comes from the snapshot's bitmaps.
            self.ann_pending
                .put(wtxn, &k32(id), &pending_value(false, &r.cube_id))?;
            let mut prefix = uuid.as_bytes().to_vec();
            prefix.push(0);
            let keys: Vec<Vec<u8>> = self
                .history
                .prefix_iter(wtxn, &prefix)?
                .map(|i| i.map(|(k, _)| k.to_vec()))
                .collect::<std::result::Result<_, _>>()?;
            for k in keys {
                self.history.delete(wtxn, &k)?;
                receipt.history += 1;
            }
            receipt.records += 1;
            if derived {
                receipt.derived += 1;
            }
            receipt.ids.push(uuid.clone());
            removed.insert(uuid);
            removed_cubes.insert(r.cube_id);
        }
        for cube in &removed_cubes {
            let mut prefix = cube.as_bytes().to_vec();
            prefix.push(0);
            let stale: Vec<Vec<u8>> = self
                .kv
                .prefix_iter(wtxn, &prefix)?
                .filter_map(|i| match i {
                    Ok((k, v)) => match postcard::from_bytes::<KvHead>(v) {
                        Ok(e) if e.memory_ids.iter().any(|m| removed.contains(m)) => {
                            Some(Ok(k.to_vec()))
                        }
                        Ok(_) => None,
                        Err(e) => Some(Err(StoreError::from(e))),
                    },
                    Err(e) => Some(Err(e.into())),
                })
                .collect::<Result<_>>()?;
            for k in stale {
                self.kv.delete(wtxn, &k)?;
                receipt.kv_cache += 1;
            }
        }
        receipt.cubes = removed_cubes.into_iter().collect();
        Ok(receipt)
    }

    /// Stores an activation (KV) cache entry under its cube and name, replacing any previous.
    pub fn put_kv(&self, wtxn: &mut RwTxn, e: &KvEntry) -> Result<()> {
        validate_key_part("cube_id", &e.cube_id)?;
        let k = join(&[e.cube_id.as_bytes(), e.name.as_bytes()]);
        self.kv.put(wtxn, &k, &postcard::to_stdvec(e)?)?;
        Ok(())
    }

    /// A cube's activation (KV) cache entries.
    pub fn kv_entries(&self, txn: &RoTxn, cube: &str) -> Result<Vec<KvEntry>> {
        let mut prefix = cube.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.kv.prefix_iter(txn, &prefix)? {
            let (_, v) = item?;
            out.push(postcard::from_bytes(v)?);
        }
        Ok(out)
    }

    /// One activation (KV) cache entry by cube and name.
    pub fn kv_entry(&self, txn: &RoTxn, cube: &str, name: &str) -> Result<Option<KvEntry>> {
        let k = join(&[cube.as_bytes(), name.as_bytes()]);
        match self.kv.get(txn, &k)? {
            Some(v) => Ok(Some(postcard::from_bytes(v)?)),
            None => Ok(None),
        }
    }

    /// One activation (KV) cache entry's metadata, without decoding its tensors.
    pub fn kv_head(&self, txn: &RoTxn, cube: &str, name: &str) -> Result<Option<KvHead>> {
        let k = join(&[cube.as_bytes(), name.as_bytes()]);
        match self.kv.get(txn, &k)? {
            Some(v) => Ok(Some(postcard::from_bytes(v)?)),
            None => Ok(None),
        }
    }

    /// Removes an activation (KV) cache entry; whether one was there.
    pub fn delete_kv(&self, wtxn: &mut RwTxn, cube: &str, name: &str) -> Result<bool> {
        let k = join(&[cube.as_bytes(), name.as_bytes()]);
        Ok(self.kv.delete(wtxn, &k)?)
    }

    /// Every record of a cube, any status, in insertion order.
    pub fn cube_records(&self, txn: &RoTxn, cube: &str) -> Result<Vec<MemoryRecord>> {
        let mut out = Vec::new();
        for id in self.cube_ids(txn, cube)? {
            if let Some(r) = self.record(txn, id)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// The version of a memory that was current at system time `t` (unix micros): the last
    /// version whose `updated_at` is at or before `t`, or None if it did not exist yet. Its
    /// `status` says whether it was searchable then. Hard-deleted memories have no versions.
    pub fn version_at(
        &self,
        txn: &RoTxn,
        current: &MemoryRecord,
        t: i64,
    ) -> Result<Option<MemoryRecord>> {
        if current.updated_at <= t {
            return Ok(Some(current.clone()));
        }
        if current.created_at > t {
            return Ok(None);
        }
        let mut best = None;
        for v in self.versions(txn, &current.id)? {
            let since = if v.version == 1 {
                v.created_at
            } else {
                v.updated_at
            };
            if since <= t {
                best = Some(v);
            }
        }
        Ok(best)
    }

    /// Changes the status of a memory (e.g. archive, soft-delete, recover), keeping history.
    pub fn set_status(
        &self,
        wtxn: &mut RwTxn,
        uuid: &str,
        status: Status,
        why: &str,
    ) -> Result<MemoryRecord> {
        let mut r = self
            .get(wtxn, uuid)?
            .ok_or_else(|| StoreError::NotFound(uuid.to_string()))?;
        r.status = status;
        self.update(wtxn, &r, None, why, None)
    }

    /// Whether an event was already processed for this cube.
    pub fn event(&self, txn: &RoTxn, cube: &str, event_id: &str) -> Result<Option<EventRecord>> {
        let k = join(&[cube.as_bytes(), event_id.as_bytes()]);
        Ok(match self.events.get(txn, &k)? {
            Some(b) => Some(postcard::from_bytes(b)?),
            None => None,
        })
    }

    /// Records that an event was processed (in the same transaction as its memories).
    pub fn mark_event(
        &self,
        wtxn: &mut RwTxn,
        cube: &str,
        event_id: &str,
        rec: &EventRecord,
    ) -> Result<()> {
        let k = join(&[cube.as_bytes(), event_id.as_bytes()]);
        self.events.put(wtxn, &k, &postcard::to_stdvec(rec)?)?;
        Ok(())
    }

    /// The activated memory of a cube's bucket with exactly this (normalised) text, if any.
    pub fn find_by_content(
        &self,
        txn: &RoTxn,
        cube: &str,
        bucket: Bucket,
        text: &str,
    ) -> Result<Option<u32>> {
        let hk = join(&[cube.as_bytes(), &model::content_hash(bucket, text)]);
        Ok(self
            .hashes
            .get(txn, &hk)?
            .map(|b| u32::from_be_bytes(b.try_into().unwrap_or([0; 4]))))
    }

    /// Creates or replaces a cube's info.
    pub fn put_cube(&self, wtxn: &mut RwTxn, c: &CubeInfo) -> Result<()> {
        validate_key_part("cube_id", &c.cube_id)?;
        self.cubes.put(wtxn, &c.cube_id, &postcard::to_stdvec(c)?)?;
        Ok(())
    }

    /// A cube's info.
    pub fn cube(&self, txn: &RoTxn, cube: &str) -> Result<Option<CubeInfo>> {
        self.cubes
            .get(txn, cube)?
            .map(|b| Ok(postcard::from_bytes(b)?))
            .transpose()
    }

    /// Removes a cube's info (its memories are deleted separately, in the same transaction).
    pub fn remove_cube(&self, wtxn: &mut RwTxn, cube: &str) -> Result<bool> {
        self.vecmem.forget(cube);
        Ok(self.cubes.delete(wtxn, cube)?)
    }

    /// All cubes.
    pub fn cubes(&self, txn: &RoTxn) -> Result<Vec<CubeInfo>> {
        let mut out = Vec::new();
        for item in self.cubes.iter(txn)? {
            let (_, b) = item?;
            out.push(postcard::from_bytes(b)?);
        }
        Ok(out)
    }

    /// Every internal id of a cube (any status).
    pub fn cube_ids(&self, txn: &RoTxn, cube: &str) -> Result<RoaringBitmap> {
        self.bitmap(txn, &field_key(cube, "", ""))
    }

    /// Ids of a cube whose indexed `field` equals `value`.
    pub fn field_ids(
        &self,
        txn: &RoTxn,
        cube: &str,
        field: &str,
        value: &str,
    ) -> Result<RoaringBitmap> {
        self.bitmap(txn, &field_key(cube, field, value))
    }

    /// Ids of a cube that satisfy `filter`, among `base`. Equality/`in` on indexed fields are
    /// answered from bitmaps; other conditions are checked on the records of the narrowed set.
    pub fn filter_ids(
        &self,
        txn: &RoTxn,
        cube: &str,
        filter: &Filter,
        base: &RoaringBitmap,
    ) -> Result<RoaringBitmap> {
        if filter.is_true() {
            return Ok(base.clone());
        }
        if filter.fully_indexed() {
            return Ok(self.bitmap_eval(txn, cube, filter, base)? & base);
        }
        let (narrowed, rest): (RoaringBitmap, Vec<&Filter>) = match filter {
            Filter::And(parts) => {
                let mut b = base.clone();
                let mut rest = Vec::new();
                for p in parts {
                    if p.fully_indexed() {
                        b &= self.bitmap_eval(txn, cube, p, base)?;
                    } else {
                        rest.push(p);
                    }
                }
                (b, rest)
            }
            f => (base.clone(), vec![f]),
        };
        let mut out = RoaringBitmap::new();
        for id in &narrowed {
            if let Some(r) = self.record(txn, id)?
                && rest.iter().all(|f| f.matches(&r))
            {
                out.insert(id);
            }
        }
        Ok(out)
    }

    fn bitmap_eval(
        &self,
        txn: &RoTxn,
        cube: &str,
        f: &Filter,
        base: &RoaringBitmap,
    ) -> Result<RoaringBitmap> {
        Ok(match f {
            Filter::True => base.clone(),
            Filter::And(v) => {
                let mut b = base.clone();
                for p in v {
                    b &= self.bitmap_eval(txn, cube, p, base)?;
                }
                b
            }
            Filter::Or(v) => {
                let mut b = RoaringBitmap::new();
                for p in v {
                    b |= self.bitmap_eval(txn, cube, p, base)?;
                }
                b
            }
            Filter::Not(p) => base - self.bitmap_eval(txn, cube, p, base)?,
            Filter::Cond { .. } => {
                let (field, values) = f
                    .indexed_values()
                    .ok_or_else(|| StoreError::InvalidFilter("not indexed".into()))?;
                let mut b = RoaringBitmap::new();
                for v in values {
                    b |= self.bitmap(txn, &field_key(cube, field, &v))?;
                }
                b
            }
        })
    }

    /// Activated ids of a cube, optionally of some memory types, that satisfy `filter`.
    pub fn candidates(
        &self,
        txn: &RoTxn,
        cube: &str,
        types: Option<&[MemoryType]>,
        filter: &Filter,
    ) -> Result<RoaringBitmap> {
        let mut base = self.field_ids(txn, cube, "status", Status::Activated.as_str())?;
        if let Some(types) = types {
            base &= self.type_ids(txn, cube, types)?;
        }
        self.filter_ids(txn, cube, filter, &base)
    }

    /// Ids of a cube (any status) whose memory type is one of `types`.
    pub fn type_ids(&self, txn: &RoTxn, cube: &str, types: &[MemoryType]) -> Result<RoaringBitmap> {
        let mut t = RoaringBitmap::new();
        for ty in types {
            t |= self.field_ids(txn, cube, "memory_type", ty.as_str())?;
        }
        Ok(t)
    }

    /// Uuids of every memory of a cube (any status) that `scope` sees and that satisfies
    /// `filter`: what a delete by filter removes.
    pub fn matching_ids(
        &self,
        txn: &RoTxn,
        cube: &str,
        filter: &Filter,
        scope: &Scope,
    ) -> Result<Vec<String>> {
        let all = self.restrict(txn, cube, scope, self.cube_ids(txn, cube)?)?;
        let mut ids = Vec::new();
        for id in &self.filter_ids(txn, cube, filter, &all)? {
            if let Some(r) = self.record(txn, id)? {
                ids.push(r.id);
            }
        }
        Ok(ids)
    }

    /// Nearest neighbours among `candidates` (ids of `cube`): the cube's RAM-resident codes pick
    /// them and their f32 vectors in this snapshot score them exactly; a cube too large for the
    /// memory budget goes to [`Store::vector_search`]. Returns (id, cosine), best first.
    pub fn vector_search_in(
        &self,
        txn: &RoTxn,
        cube: &str,
        query: &[f32],
        k: usize,
        candidates: &RoaringBitmap,
    ) -> Result<Vec<(u32, f32)>> {
        let mut hits = self.search_in(txn, cube, &[query], k, candidates, None)?;
        Ok(hits.pop().unwrap_or_default())
    }

    /// The `k` nearest of `candidates` (ids of `cube`) to each of `queries`, for probes with a
    /// high similarity threshold (near-duplicate detection): the cube's codes are brought up to
    /// date once, and each query is narrowed by the sign codes to a short list before the int8
    /// and exact f32 rescoring. A cube too large for the memory budget goes to
    /// [`Store::vector_search`] per query.
    pub fn near_neighbours_in(
        &self,
        txn: &RoTxn,
        cube: &str,
        queries: &[&[f32]],
        k: usize,
        candidates: &RoaringBitmap,
    ) -> Result<Vec<Vec<(u32, f32)>>> {
        self.search_in(txn, cube, queries, k, candidates, Some(64))
    }

    /// The RAM codes' search for [`Store::vector_search_in`] and [`Store::near_neighbours_in`],
    /// falling back to [`Store::vector_search`] per query for a cube over the memory budget.
    fn search_in(
        &self,
        txn: &RoTxn,
        cube: &str,
        queries: &[&[f32]],
        k: usize,
        candidates: &RoaringBitmap,
        shortlist: Option<usize>,
    ) -> Result<Vec<Vec<(u32, f32)>>> {
        for q in queries {
            model::check_dims(self.opts.dimensions, q)?;
        }
        let all = self.cube_ids(txn, cube)?;
        let src = SnapshotVectors { store: self, txn };
        match self
            .vecmem
            .search_many(&src, cube, &all, queries, k, candidates, shortlist)?
        {
            Some(hits) => Ok(hits),
            None => queries
                .iter()
                .map(|q| self.vector_search_shards(txn, &[shard_of(cube)], q, k, candidates))
                .collect(),
        }
    }

    /// The arroy shards that hold built trees, with how many vectors each indexes.
    pub fn ann_shard_sizes(&self) -> Result<Vec<(u16, u64)>> {
        let txn = self.read_txn()?;
        self.shard_sizes(&txn)
    }

    fn shard_sizes(&self, txn: &RoTxn) -> Result<Vec<(u16, u64)>> {
        let mut out = Vec::new();
        for shard in 0..ANN_SHARDS {
            let n = self.vindex.indexed(txn, shard)?.len();
            if n > 0 {
                out.push((shard, n));
            }
        }
        Ok(out)
    }

    /// Nearest neighbours among `candidates` (any cubes): arroy trees for indexed items plus an
    /// exact scan of the vectors changed since the last fold. Returns (id, cosine), best first.
    pub fn vector_search(
        &self,
        txn: &RoTxn,
        query: &[f32],
        k: usize,
        candidates: &RoaringBitmap,
    ) -> Result<Vec<(u32, f32)>> {
        let all: Vec<u16> = (0..ANN_SHARDS).collect();
        self.vector_search_shards(txn, &all, query, k, candidates)
    }

    /// [`Store::vector_search`] in the arroy shards `shards` (those of the candidates' cubes).
    fn vector_search_shards(
        &self,
        txn: &RoTxn,
        shards: &[u16],
        query: &[f32],
        k: usize,
        candidates: &RoaringBitmap,
    ) -> Result<Vec<(u32, f32)>> {
        model::check_dims(self.opts.dimensions, query)?;
        let pending = self.pending(txn)?;
        let in_delta = candidates & &pending;
        let in_trees = candidates - &pending;
        // Readers of the trees may lag behind deletes; candidates come from the snapshot, so a
        // removed id is never among them.
        let mut hits = Vec::new();
        for &shard in shards {
            hits.extend(self.vindex.search(txn, shard, query, k, &in_trees)?);
        }
        for id in &in_delta {
            if let Some(b) = self.vectors.get(txn, &k32(id))? {
                hits.push((id, vector::dot_bytes(query, b)));
            }
        }
        Ok(lexical::top_k(hits, k))
    }

    /// BM25 scores of every matching document among `candidates`, unsorted: compute once and
    /// share between searches over subsets (the buckets of one request).
    pub fn bm25_scores(
        &self,
        txn: &RoTxn,
        cube: &str,
        query: &str,
        candidates: &RoaringBitmap,
    ) -> Result<Vec<(u32, f32)>> {
        self.lexical
            .scores(txn, cube, query, candidates, self.opts.bm25)
    }

    /// BM25 over the cube among `candidates`. Returns (id, score), best first.
    pub fn bm25_search(
        &self,
        txn: &RoTxn,
        cube: &str,
        query: &str,
        k: usize,
        candidates: &RoaringBitmap,
    ) -> Result<Vec<(u32, f32)>> {
        self.lexical
            .search(txn, cube, query, k, candidates, self.opts.bm25)
    }

    /// Records a dead letter: the original bytes, where they came from and why they failed.
    pub fn put_dead_letter(&self, wtxn: &mut RwTxn, dl: &DeadLetter) -> Result<u64> {
        let seq = match self.dead_letters.last(wtxn)? {
            Some((k, _)) => u64::from_be_bytes(k.try_into().unwrap_or([0; 8])) + 1,
            None => 0,
        };
        self.dead_letters
            .put(wtxn, &seq.to_be_bytes(), &postcard::to_stdvec(dl)?)?;
        Ok(seq)
    }

    /// All dead letters, oldest first, with their sequence numbers.
    pub fn dead_letters(&self, txn: &RoTxn) -> Result<Vec<(u64, DeadLetter)>> {
        let mut out = Vec::new();
        for item in self.dead_letters.iter(txn)? {
            let (k, v) = item?;
            out.push((
                u64::from_be_bytes(k.try_into().unwrap_or([0; 8])),
                postcard::from_bytes(v)?,
            ));
        }
        Ok(out)
    }

    /// Stores a source position (e.g. `kafka/memos.events/3` → next offset) in the batch's
    /// transaction, so a restart resumes exactly after the last committed batch.
    pub fn set_offset(&self, wtxn: &mut RwTxn, source: &str, position: &str) -> Result<()> {
        self.offsets.put(wtxn, source, position.as_bytes())?;
        Ok(())
    }

    /// A stored source position.
    pub fn offset(&self, txn: &RoTxn, source: &str) -> Result<Option<String>> {
        Ok(self
            .offsets
            .get(txn, source)?
            .map(|b| String::from_utf8_lossy(b).into_owned()))
    }

    /// Stores (or replaces) an API key, keyed by its id.
    pub fn put_api_key(&self, wtxn: &mut RwTxn, k: &ApiKeyRecord) -> Result<()> {
        validate_key_part("key id", &k.id)?;
        self.api_keys.put(wtxn, &k.id, &postcard::to_stdvec(k)?)?;
        Ok(())
    }

    /// Removes an API key; false if there was none.
    pub fn delete_api_key(&self, wtxn: &mut RwTxn, id: &str) -> Result<bool> {
        Ok(self.api_keys.delete(wtxn, id)?)
    }

    /// All stored API keys.
    pub fn api_keys(&self, txn: &RoTxn) -> Result<Vec<ApiKeyRecord>> {
        let mut out = Vec::new();
        for item in self.api_keys.iter(txn)? {
            let (_, v) = item?;
            out.push(postcard::from_bytes(v)?);
        }
        Ok(out)
    }

    /// Records feedback under its cube, in arrival order.
    pub fn put_feedback(&self, wtxn: &mut RwTxn, f: &FeedbackRecord) -> Result<()> {
        validate_key_part("cube_id", &f.cube_id)?;
        let mut key = f.cube_id.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(&f.created_at.to_be_bytes());
        key.extend_from_slice(f.id.as_bytes());
        self.feedback.put(wtxn, &key, &postcard::to_stdvec(f)?)?;
        Ok(())
    }

    /// One feedback record by cube and id.
    pub fn feedback_by_id(
        &self,
        txn: &RoTxn,
        cube: &str,
        id: &str,
    ) -> Result<Option<FeedbackRecord>> {
        Ok(self.feedback(txn, cube)?.into_iter().find(|f| f.id == id))
    }

    /// A cube's feedback, oldest first.
    pub fn feedback(&self, txn: &RoTxn, cube: &str) -> Result<Vec<FeedbackRecord>> {
        let mut prefix = cube.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.feedback.prefix_iter(txn, &prefix)? {
            let (_, v) = item?;
            out.push(decode_feedback(v)?);
        }
        Ok(out)
    }

    /// A read transaction that owns its handle on the environment, so it can live as long as a
    /// query does (SQL reads a whole query from one snapshot). It is `Send`, not `Sync`: use it
    /// from one thread at a time.
    pub fn snapshot(&self) -> Result<RoTxn<'static, WithoutTls>> {
        Ok(self.env.clone().static_read_txn()?)
    }

    /// Up to `max` records with internal ids `>= from`, in id order (any status, any cube).
    /// A caller pages through the whole table by passing the last id + 1.
    pub fn records_from(
        &self,
        txn: &RoTxn,
        from: u32,
        max: usize,
    ) -> Result<Vec<(u32, MemoryRecord)>> {
        let mut out = Vec::with_capacity(max.min(4096));
        let start = k32(from);
        for item in self.records.range(
            txn,
            &(
                std::ops::Bound::Included(&start[..]),
                std::ops::Bound::Unbounded,
            ),
        )? {
            if out.len() >= max {
                break;
            }
            let (k, v) = item?;
            let id = u32::from_be_bytes(k.try_into().unwrap_or([0; 4]));
            out.push((id, MemoryRecord::decode(v)?));
        }
        Ok(out)
    }

    /// Processed events of one cube (or of every cube with `None`) after `after` (an event id
    /// of that cube previously returned), at most `max`, in (cube, event id) order.
    pub fn events_from(
        &self,
        txn: &RoTxn,
        cube: Option<&str>,
        after: Option<(&str, &str)>,
        max: usize,
    ) -> Result<Vec<(String, String, EventRecord)>> {
        let mut out = Vec::new();
        let prefix: Vec<u8> = match cube {
            Some(c) => {
                let mut p = c.as_bytes().to_vec();
                p.push(0);
                p
            }
            None => Vec::new(),
        };
        // LMDB rejects an empty key, so a scan of every cube starts unbounded.
        let lower = match after {
            Some((c, e)) => std::ops::Bound::Excluded(join(&[c.as_bytes(), e.as_bytes()])),
            None if prefix.is_empty() => std::ops::Bound::Unbounded,
            None => std::ops::Bound::Included(prefix.clone()),
        };
        let lower_ref = match &lower {
            std::ops::Bound::Excluded(k) => std::ops::Bound::Excluded(&k[..]),
            std::ops::Bound::Included(k) => std::ops::Bound::Included(&k[..]),
            std::ops::Bound::Unbounded => std::ops::Bound::Unbounded,
        };
        for item in self
            .events
            .range(txn, &(lower_ref, std::ops::Bound::Unbounded))?
        {
            if out.len() >= max {
                break;
            }
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            let Some(nul) = k.iter().position(|b| *b == 0) else {
                continue;
            };
            let cube = String::from_utf8_lossy(&k[..nul]).into_owned();
            let event = String::from_utf8_lossy(&k[nul + 1..]).into_owned();
            out.push((cube, event, postcard::from_bytes(v)?));
        }
        Ok(out)
    }

    /// Dead letters with sequence numbers `>= from`, at most `max`, oldest first.
    pub fn dead_letters_from(
        &self,
        txn: &RoTxn,
        from: u64,
        max: usize,
    ) -> Result<Vec<(u64, DeadLetter)>> {
        let mut out = Vec::new();
        let start = from.to_be_bytes();
        for item in self.dead_letters.range(
            txn,
            &(
                std::ops::Bound::Included(&start[..]),
                std::ops::Bound::Unbounded,
            ),
        )? {
            if out.len() >= max {
                break;
            }
            let (k, v) = item?;
            out.push((
                u64::from_be_bytes(k.try_into().unwrap_or([0; 8])),
                postcard::from_bytes(v)?,
            ));
        }
        Ok(out)
    }

    /// Store-wide counts.
    pub fn stats(&self) -> Result<StoreStats> {
        let txn = self.read_txn()?;
        Ok(StoreStats {
            memories: self.records.len(&txn)?,
            cubes: self.cubes.len(&txn)?,
            events: self.events.len(&txn)?,
            dead_letters: self.dead_letters.len(&txn)?,
            vectors_indexed: self.shard_sizes(&txn)?.iter().map(|(_, n)| n).sum(),
            vectors_pending: self.ann_pending.len(&txn)?,
            vectors_in_memory: self.vecmem.stats(),
            disk_bytes: self.env.real_disk_size().unwrap_or(0),
            databases: self.database_sizes(&txn)?,
        })
    }

    /// Bytes in the pages of every database (what the configured `map_size` limits).
    pub fn used_bytes(&self, txn: &RoTxn) -> Result<u64> {
        let p = |s: heed::DatabaseStat| s.non_free_page_size() as u64;
        Ok(p(self.meta.stat(txn)?)
            + p(self.records.stat(txn)?)
            + p(self.ids.stat(txn)?)
            + p(self.vectors.stat(txn)?)
            + p(self.lexical.postings.stat(txn)?)
            + p(self.lexical.stats.stat(txn)?)
            + p(self.hashes.stat(txn)?)
            + p(self.events.stat(txn)?)
            + p(self.history.stat(txn)?)
            + p(self.fields.stat(txn)?)
            + p(self.cubes.stat(txn)?)
            + p(self.dead_letters.stat(txn)?)
            + p(self.offsets.stat(txn)?)
            + p(self.api_keys.stat(txn)?)
            + p(self.feedback.stat(txn)?)
            + p(self.kv.stat(txn)?)
            + p(self.vindex.stat(txn)?)
            + p(self.ann_pending.stat(txn)?))
    }

    /// [`StoreError::Full`] when the data has reached the configured `map_size` (checked on a
    /// write that adds memories; deletes never check).
    pub fn check_room(&self, txn: &RoTxn) -> Result<()> {
        let used = self.used_bytes(txn)?;
        if used >= self.opts.map_size as u64 {
            return Err(StoreError::Full(format!(
                "{used} bytes in use of map_size_mb = {} MiB: adding is refused, reads and deletes work; delete memories or raise map_size_mb",
                self.opts.map_size >> 20
            )));
        }
        Ok(())
    }

    fn database_sizes(&self, txn: &RoTxn) -> Result<std::collections::BTreeMap<String, u64>> {
        let size = |s: heed::DatabaseStat| s.non_free_page_size() as u64;
        let mut m = std::collections::BTreeMap::new();
        m.insert("meta".into(), size(self.meta.stat(txn)?));
        m.insert("records".into(), size(self.records.stat(txn)?));
        m.insert("ids".into(), size(self.ids.stat(txn)?));
        m.insert("vectors".into(), size(self.vectors.stat(txn)?));
        m.insert("postings".into(), size(self.lexical.postings.stat(txn)?));
        m.insert("hashes".into(), size(self.hashes.stat(txn)?));
        m.insert("events".into(), size(self.events.stat(txn)?));
        m.insert("history".into(), size(self.history.stat(txn)?));
        m.insert("fields".into(), size(self.fields.stat(txn)?));
        m.insert("dead_letters".into(), size(self.dead_letters.stat(txn)?));
        m.insert("api_keys".into(), size(self.api_keys.stat(txn)?));
        m.insert("feedback".into(), size(self.feedback.stat(txn)?));
        m.insert("arroy".into(), size(self.vindex.stat(txn)?));
        m.insert("ann_pending".into(), size(self.ann_pending.stat(txn)?));
        Ok(m)
    }
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
