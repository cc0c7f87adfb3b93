//! MemCube export and import: a lossless, documented snapshot of one cube.
//!
//! A cube directory holds:
//! - `manifest.json`: `format` (`memos-cube`), `format_version` (1), the cube's info (id,
//!   name, kind — `cube` or `knowledgebase` —, owner, description), the embedding
//!   `dimensions` and embedder, counts, and the SHA-256 of each data file;
//! - `memories.parquet`: one row per memory of any status (activated, archived, deleted…), in
//!   insertion order: `id`, `memory`, `memory_type`, `status`, `user_id`, `session_id`,
//!   `created_at`, `updated_at` (unix µs), `version`, `record` (the full record as JSON: the
//!   authoritative copy; the other columns are for tools that read Parquet) and `embedding`
//!   (`FixedSizeList<Float32, dimensions>`);
//! - `versions.parquet`: every earlier full version: `memory_id`, `version`, `record` (JSON).
//!
//! Preferences, tool memories and knowledge-base chunks are memories, so they travel in
//! `memories.parquet`. Importing writes the same ids, texts, statuses, histories and vectors
//! into an empty cube, in one transaction, so searches return what they returned before.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch, StringArray,
    UInt32Array,
};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use store::heed::RoTxn;
use store::{MemoryRecord, Store};

use crate::error::ServerError;
use crate::service::Memos;

/// The manifest's `format`.
pub const FORMAT: &str = "memos-cube";
/// The manifest's `format_version`.
pub const FORMAT_VERSION: u64 = 1;

fn bad(m: impl std::fmt::Display) -> ServerError {
    ServerError::BadRequest(m.to_string())
}

fn sha256_file(p: &Path) -> Result<String, ServerError> {
    let bytes = std::fs::read(p)?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

fn write_parquet(path: &Path, batch: RecordBatch) -> Result<(), ServerError> {
    let f = File::create(path)?;
    let mut w =
        ArrowWriter::try_new(f, batch.schema(), None).map_err(|e| bad(format!("parquet: {e}")))?;
    w.write(&batch).map_err(|e| bad(format!("parquet: {e}")))?;
    w.close().map_err(|e| bad(format!("parquet: {e}")))?;
    Ok(())
}

fn read_parquet(path: &Path) -> Result<Vec<RecordBatch>, ServerError> {
    let f = File::open(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .and_then(|b| b.build())
        .map_err(|e| bad(format!("{}: {e}", path.display())))?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("{}: {e}", path.display())))
}

fn column<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a T, ServerError> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| bad(format!("column {name} is missing or has the wrong type")))
}

fn to_json(r: &MemoryRecord) -> Result<String, ServerError> {
    serde_json::to_string(r).map_err(|e| bad(format!("record {}: {e}", r.id)))
}

/// A cube's memories and versions, column by column.
#[derive(Default)]
struct Columns {
    ids: Vec<String>,
    texts: Vec<String>,
    types: Vec<String>,
    statuses: Vec<String>,
    users: Vec<String>,
    sessions: Vec<String>,
    created: Vec<i64>,
    updated: Vec<i64>,
    versions: Vec<u32>,
    json_rows: Vec<String>,
    floats: Vec<f32>,
    v_ids: Vec<String>,
    v_versions: Vec<u32>,
    v_json: Vec<String>,
}

impl Columns {
    /// Reads every memory of `cube` (any status) with its vector and its earlier versions.
    fn read(store: &Store, txn: &RoTxn, cube: &str, dims: usize) -> Result<Columns, ServerError> {
        let records = store.cube_records(txn, cube)?;
        let mut c = Columns {
            floats: Vec::with_capacity(records.len() * dims),
            ..Default::default()
        };
        for r in &records {
            let internal = store
                .internal_id(txn, &r.id)?
                .ok_or_else(|| ServerError::NotFound(r.id.clone()))?;
            let e = store.embedding(txn, internal)?.unwrap_or_default();
            if e.len() != dims {
                return Err(bad(format!(
                    "memory {} has no {dims}-dimension vector",
                    r.id
                )));
            }
            c.floats.extend_from_slice(&e);
            c.ids.push(r.id.clone());
            c.texts.push(r.memory.clone());
            c.types.push(r.memory_type.as_str().to_string());
            c.statuses.push(r.status.as_str().to_string());
            c.users.push(r.user_id.clone());
            c.sessions.push(r.session_id.clone());
            c.created.push(r.created_at);
            c.updated.push(r.updated_at);
            c.versions.push(r.version);
            c.json_rows.push(to_json(r)?);
            for v in store.versions(txn, &r.id)? {
                c.v_ids.push(r.id.clone());
                c.v_versions.push(v.version);
                c.v_json.push(to_json(&v)?);
            }
        }
        Ok(c)
    }

    /// The `memories.parquet` and `versions.parquet` batches.
    fn batches(self, dims: usize) -> Result<(RecordBatch, RecordBatch), ServerError> {
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        let emb = FixedSizeListArray::try_new(
            item.clone(),
            dims as i32,
            Arc::new(Float32Array::from(self.floats)),
            None,
        )
        .map_err(|e| bad(format!("embeddings: {e}")))?;
        let s = |v: Vec<String>| Arc::new(StringArray::from(v)) as ArrayRef;
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("memory", DataType::Utf8, false),
            Field::new("memory_type", DataType::Utf8, false),
            Field::new("status", DataType::Utf8, false),
            Field::new("user_id", DataType::Utf8, false),
            Field::new("session_id", DataType::Utf8, false),
            Field::new("created_at", DataType::Int64, false),
            Field::new("updated_at", DataType::Int64, false),
            Field::new("version", DataType::UInt32, false),
            Field::new("record", DataType::Utf8, false),
            Field::new(
                "embedding",
                DataType::FixedSizeList(item, dims as i32),
                false,
            ),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                s(self.ids),
                s(self.texts),
                s(self.types),
                s(self.statuses),
                s(self.users),
                s(self.sessions),
                Arc::new(Int64Array::from(self.created)),
                Arc::new(Int64Array::from(self.updated)),
                Arc::new(UInt32Array::from(self.versions)),
                s(self.json_rows),
                Arc::new(emb),
            ],
        )
        .map_err(|e| bad(format!("memories: {e}")))?;
        let vschema = Arc::new(Schema::new(vec![
            Field::new("memory_id", DataType::Utf8, false),
            Field::new("version", DataType::UInt32, false),
            Field::new("record", DataType::Utf8, false),
        ]));
        let vbatch = RecordBatch::try_new(
            vschema,
            vec![
                s(self.v_ids),
                Arc::new(UInt32Array::from(self.v_versions)),
                s(self.v_json),
            ],
        )
        .map_err(|e| bad(format!("versions: {e}")))?;
        Ok((batch, vbatch))
    }
}

/// Writes a cube's snapshot into `dir` (created; must be empty). Returns the manifest.
pub fn export(store: &Store, cube: &str, dir: &Path, embedder: &str) -> Result<Value, ServerError> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        return Err(bad(format!("{} is not empty", dir.display())));
    }
    std::fs::create_dir_all(dir)?;
    let txn = store.read_txn()?;
    let info = store
        .cube(&txn, cube)?
        .ok_or_else(|| ServerError::NotFound(format!("cube {cube} not found")))?;
    let dims = store.options().dimensions;
    let (batch, vbatch) = Columns::read(store, &txn, cube, dims)?.batches(dims)?;
    let (n, nv) = (batch.num_rows(), vbatch.num_rows());
    write_parquet(&dir.join("memories.parquet"), batch)?;
    write_parquet(&dir.join("versions.parquet"), vbatch)?;
    let manifest = json!({
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "memos_version": env!("CARGO_PKG_VERSION"),
        "exported_at": store::time::micros_to_rfc3339(store::time::now_micros()),
        "cube": {
            "cube_id": info.cube_id, "name": info.name, "kind": info.kind,
            "owner_id": info.owner_id, "description": info.description,
            "created_at": info.created_at,
        },
        "embedding": {"dimensions": dims, "embedder": embedder},
        "counts": {"memories": n, "versions": nv},
        "files": {
            "memories.parquet": {"rows": n, "sha256": sha256_file(&dir.join("memories.parquet"))?},
            "versions.parquet": {"rows": nv, "sha256": sha256_file(&dir.join("versions.parquet"))?},
        },
    });
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest).map_err(bad)?,
    )?;
    Ok(manifest)
}

/// Loads a snapshot written by [`export`] into `store`, in one transaction. The cube must not
/// exist here yet (409), the dimensions must match, and the files must match their checksums.
pub fn import(commits: &pipelines::Committer, dir: &Path) -> Result<Value, ServerError> {
    let store = commits.store();
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(dir.join("manifest.json"))
            .map_err(|e| bad(format!("{}/manifest.json: {e}", dir.display())))?,
    )
    .map_err(|e| bad(format!("manifest.json: {e}")))?;
    if manifest["format"] != FORMAT || manifest["format_version"].as_u64() != Some(FORMAT_VERSION) {
        return Err(bad(format!(
            "not a {FORMAT} v{FORMAT_VERSION} directory (format {}, version {})",
            manifest["format"], manifest["format_version"]
        )));
    }
    let dims = store.options().dimensions;
    if manifest["embedding"]["dimensions"].as_u64() != Some(dims as u64) {
        return Err(bad(format!(
            "the cube's embeddings have {} dimensions, this store {dims}",
            manifest["embedding"]["dimensions"]
        )));
    }
    for f in ["memories.parquet", "versions.parquet"] {
        let want = manifest["files"][f]["sha256"].as_str().unwrap_or_default();
        if sha256_file(&dir.join(f))? != want {
            return Err(bad(format!(
                "{f} does not match its checksum in manifest.json"
            )));
        }
    }
    let c = &manifest["cube"];
    let cube = c["cube_id"]
        .as_str()
        .ok_or_else(|| bad("manifest.json: cube.cube_id is missing"))?
        .to_string();
    let str_of = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    let mut wtxn = commits.begin("import")?;
    if store.cube(&wtxn, &cube)?.is_some() || !store.cube_ids(&wtxn, &cube)?.is_empty() {
        return Err(ServerError::Conflict(format!(
            "cube {cube} already exists here; import into a store without it"
        )));
    }
    store.put_cube(
        &mut wtxn,
        &store::CubeInfo {
            cube_id: cube.clone(),
            name: str_of("name"),
            owner_id: str_of("owner_id"),
            created_at: c["created_at"].as_i64().unwrap_or_default(),
            kind: str_of("kind"),
            description: str_of("description"),
        },
    )?;
    let mut n = 0usize;
    for b in read_parquet(&dir.join("memories.parquet"))? {
        let rec = column::<StringArray>(&b, "record")?;
        let emb = column::<FixedSizeListArray>(&b, "embedding")?;
        for i in 0..b.num_rows() {
            let r: MemoryRecord = serde_json::from_str(rec.value(i))
                .map_err(|e| bad(format!("memories.parquet row {n}: {e}")))?;
            if r.cube_id != cube {
                return Err(bad(format!(
                    "memories.parquet row {n} belongs to cube {}, not {cube}",
                    r.cube_id
                )));
            }
            let v = emb.value(i);
            let v = v
                .as_any()
                .downcast_ref::<Float32Array>()
                .ok_or_else(|| bad("embedding items are not float32"))?;
            store.insert(&mut wtxn, &r, v.values())?;
            n += 1;
        }
    }
    let mut nv = 0usize;
    for b in read_parquet(&dir.join("versions.parquet"))? {
        let rec = column::<StringArray>(&b, "record")?;
        for i in 0..b.num_rows() {
            let v: MemoryRecord = serde_json::from_str(rec.value(i))
                .map_err(|e| bad(format!("versions.parquet row {nv}: {e}")))?;
            store.put_version(&mut wtxn, &v)?;
            nv += 1;
        }
    }
    wtxn.touch(&cube);
    wtxn.commit()?;
    Ok(json!({"cube_id": cube, "memories": n, "versions": nv}))
}

impl Memos {
    /// [`export`] on a blocking thread.
    pub async fn export_cube(&self, cube: String, dir: PathBuf) -> Result<Value, ServerError> {
        let embedder = format!("{} {}", self.cfg.embedder.kind, self.cfg.embedder.model)
            .trim()
            .to_string();
        self.blocking(move |store| export(store, &cube, &dir, &embedder))
            .await
    }

    /// [`import`] on a blocking thread.
    pub async fn import_cube(&self, dir: PathBuf) -> Result<Value, ServerError> {
        let commits = self.committer.clone();
        self.blocking(move |_| import(&commits, &dir)).await
    }
}
