//! Search table functions and vector UDFs.
//!
//! - `search('query', k [, 'cube_id' [, 'filter_json']])`: the REST hybrid search (same
//!   buckets, fusion, thresholds and dedup), one row per hit with `bucket`, `rank`, `score`,
//!   `vector_score`, `bm25_score`.
//! - `vector_search('query', k [, 'cube_id'])`: nearest neighbours by cosine (arroy + delta).
//! - `bm25('query', k [, 'cube_id'])`: lexical search.
//! - `cosine(a, b)`: cosine similarity of two vectors (e.g. `embedding`, `embed('…')`).
//! - `embed('text')`: the server's embedding of a text.
//!
//! Without a cube, a function searches every cube the caller may read.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float32Array};
use datafusion::arrow::datatypes::{DataType, Float32Type, SchemaRef};
use datafusion::catalog::{
    Session as DfSession, TableFunctionArgs, TableFunctionImpl, TableProvider,
};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_plan::ExecutionPlan;
use store::{Filter, MemoryRecord, Store};

use crate::scan::{
    Cell, Column, build_array, build_batch, col, info, opt, schema_of, text_list, ts, vector,
};
use crate::tables::query_ctx;
use crate::{Embed, SearchArgs, SearchRow, SqlError, visible_cubes};

static HIT_COLUMNS: std::sync::LazyLock<Vec<Column<SearchRow>>> = std::sync::LazyLock::new(|| {
    vec![
        col("bucket", DataType::Utf8, |r| Cell::Str(&r.bucket)),
        col("rank", DataType::Int64, |r| Cell::I64(r.rank as i64)),
        col("score", DataType::Float32, |r| Cell::F32(r.score)),
        col("vector_score", DataType::Float32, |r| {
            r.vector_score.map(Cell::F32).unwrap_or(Cell::Null)
        }),
        col("bm25_score", DataType::Float32, |r| {
            r.bm25_score.map(Cell::F32).unwrap_or(Cell::Null)
        }),
        col("id", DataType::Utf8, |r| Cell::Str(&r.record.id)),
        col("memory", DataType::Utf8, |r| Cell::Str(&r.record.memory)),
        col("cube_id", DataType::Utf8, |r| Cell::Str(&r.record.cube_id)),
        col("user_id", DataType::Utf8, |r| Cell::Str(&r.record.user_id)),
        col("session_id", DataType::Utf8, |r| {
            Cell::Str(&r.record.session_id)
        }),
        col("memory_type", DataType::Utf8, |r| {
            Cell::Str(r.record.memory_type.as_str())
        }),
        col("key", DataType::Utf8, |r| opt(&r.record.key)),
        col("tags", text_list(), |r| Cell::List(&r.record.tags)),
        col("info", DataType::Utf8, |r| info(&r.record.info)),
        col("created_at", ts(), |r| Cell::Micros(r.record.created_at)),
        col("event_time", ts(), |r| {
            r.record.event_time.map(Cell::Micros).unwrap_or(Cell::Null)
        }),
    ]
});

fn hits_schema() -> SchemaRef {
    schema_of(&HIT_COLUMNS)
}

/// Which retrieval a table function runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// REST hybrid search.
    Hybrid,
    /// Vectors only.
    Vector,
    /// BM25 only.
    Lexical,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Hybrid => "search",
            Kind::Vector => "vector_search",
            Kind::Lexical => "bm25",
        }
    }
}

/// The table function (one per [`Kind`]).
#[derive(Debug)]
pub struct SearchFunction {
    kind: Kind,
    store: Arc<Store>,
    max_top_k: usize,
}

impl SearchFunction {
    /// `kind` over `store`; `k` may be at most `max_top_k`.
    pub fn new(kind: Kind, store: Arc<Store>, max_top_k: usize) -> SearchFunction {
        SearchFunction {
            kind,
            store,
            max_top_k,
        }
    }
}

fn arg_text(f: &str, i: usize, e: &Expr) -> DfResult<String> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)),
            _,
        ) => Ok(s.clone()),
        other => Err(DataFusionError::Plan(format!(
            "{f}(): argument {} must be a text literal, got {other}",
            i + 1
        ))),
    }
}

fn arg_int(f: &str, i: usize, e: &Expr) -> DfResult<i64> {
    let v = match e {
        Expr::Literal(v, _) => v.clone(),
        Expr::Negative(inner) => match &**inner {
            Expr::Literal(v, _) => v.arithmetic_negate()?,
            _ => ScalarValue::Null,
        },
        _ => ScalarValue::Null,
    };
    match v.cast_to(&DataType::Int64) {
        Ok(ScalarValue::Int64(Some(n))) => Ok(n),
        _ => Err(DataFusionError::Plan(format!(
            "{f}(): argument {} must be an integer literal, got {e}",
            i + 1
        ))),
    }
}

impl TableFunctionImpl for SearchFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let f = self.kind.name();
        let exprs = args.exprs();
        let max_args = if self.kind == Kind::Hybrid { 4 } else { 3 };
        if exprs.len() < 2 || exprs.len() > max_args {
            let usage = if self.kind == Kind::Hybrid {
                "search('query', k [, 'cube_id' [, 'filter_json']])".to_string()
            } else {
                format!("{f}('query', k [, 'cube_id'])")
            };
            return Err(DataFusionError::Plan(format!("usage: {usage}")));
        }
        let query = arg_text(f, 0, &exprs[0])?;
        if query.trim().is_empty() {
            return Err(DataFusionError::Plan(format!("{f}(): the query is empty")));
        }
        let k = arg_int(f, 1, &exprs[1])?;
        if k < 1 || k as usize > self.max_top_k {
            return Err(DataFusionError::Plan(format!(
                "{f}(): k must be 1..={}, got {k}",
                self.max_top_k
            )));
        }
        let cube = exprs.get(2).map(|e| arg_text(f, 2, e)).transpose()?;
        if let Some(c) = &cube {
            store::validate_key_part("cube_id", c)
                .map_err(|e| DataFusionError::Plan(format!("{f}(): {e}")))?;
        }
        let filter = match exprs.get(3) {
            Some(e) => {
                let text = arg_text(f, 3, e)?;
                Some(serde_json::from_str(&text).map_err(|e| {
                    DataFusionError::Plan(format!("search(): filter is not JSON: {e}"))
                })?)
            }
            None => None,
        };
        Ok(Arc::new(SearchTable {
            kind: self.kind,
            store: self.store.clone(),
            query,
            k: k as usize,
            cube,
            filter,
            schema: hits_schema(),
        }))
    }
}

/// The result of one table-function call, computed when scanned.
#[derive(Debug)]
struct SearchTable {
    kind: Kind,
    store: Arc<Store>,
    query: String,
    k: usize,
    cube: Option<String>,
    filter: Option<serde_json::Value>,
    schema: SchemaRef,
}

fn external(e: SqlError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

fn bucket_of(r: &MemoryRecord) -> &'static str {
    r.memory_type.bucket().name()
}

#[async_trait]
impl TableProvider for SearchTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let q = query_ctx(state)?;
        let scope = &q.session.scope;
        let only = self.cube.as_ref().map(|c| BTreeSet::from([c.clone()]));
        if let Some(c) = &self.cube
            && !scope.allows(c)
        {
            return Err(external(SqlError::Forbidden(format!(
                "cube {c} is not readable with this key"
            ))));
        }
        let cubes = q
            .snapshot
            .with(|txn| visible_cubes(&self.store, txn, scope, only.as_ref()))
            .map_err(external)?;
        let rows = match self.kind {
            Kind::Hybrid => {
                if cubes.is_empty() {
                    Vec::new()
                } else {
                    q.session
                        .search
                        .search(SearchArgs {
                            query: self.query.clone(),
                            top_k: self.k,
                            cubes,
                            filter: self.filter.clone(),
                        })
                        .await
                        .map_err(external)?
                }
            }
            Kind::Vector => {
                let qv = q.embed.embed(&self.query).map_err(external)?;
                q.snapshot
                    .with(|txn| -> Result<Vec<SearchRow>, SqlError> {
                        let mut all = Vec::new();
                        for cube in &cubes {
                            let cands = scoped_candidates(&self.store, txn, cube, scope)?;
                            for (id, s) in self
                                .store
                                .vector_search_in(txn, cube, &qv, self.k, &cands)?
                            {
                                all.push((id, s));
                            }
                        }
                        rank(&self.store, txn, all, self.k, |row, s| {
                            row.vector_score = Some(s)
                        })
                    })
                    .map_err(external)?
            }
            Kind::Lexical => q
                .snapshot
                .with(|txn| -> Result<Vec<SearchRow>, SqlError> {
                    let mut all = Vec::new();
                    for cube in &cubes {
                        let cands = scoped_candidates(&self.store, txn, cube, scope)?;
                        all.extend(self.store.bm25_search(
                            txn,
                            cube,
                            &self.query,
                            self.k,
                            &cands,
                        )?);
                    }
                    rank(&self.store, txn, all, self.k, |row, s| {
                        row.bm25_score = Some(s)
                    })
                })
                .map_err(external)?,
        };
        let batch = build_batch(&self.schema, &HIT_COLUMNS.iter().collect::<Vec<_>>(), &rows)?;
        let exec = MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema.clone(),
            projection.cloned(),
        )?;
        Ok(exec)
    }
}

/// Best `k` of (id, score) across cubes, as rows.
fn rank(
    store: &Store,
    txn: &store::heed::RoTxn,
    mut hits: Vec<(u32, f32)>,
    k: usize,
    set: impl Fn(&mut SearchRow, f32),
) -> Result<Vec<SearchRow>, SqlError> {
    hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    hits.truncate(k);
    let mut rows = Vec::with_capacity(hits.len());
    for (i, (id, s)) in hits.into_iter().enumerate() {
        if let Some(record) = store.record(txn, id)? {
            let mut row = SearchRow {
                bucket: bucket_of(&record).to_string(),
                rank: i + 1,
                record,
                score: s,
                vector_score: None,
                bm25_score: None,
            };
            set(&mut row, s);
            rows.push(row);
        }
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------------------------
// Scalar UDFs

/// `cosine(a, b)`: cosine similarity of two float vectors (NULL if either is NULL, empty or of
/// different lengths).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Cosine {
    signature: Signature,
}

impl Default for Cosine {
    fn default() -> Self {
        Cosine {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

fn vectors(a: &ArrayRef) -> DfResult<Vec<Option<Vec<f32>>>> {
    let to_vec = |v: ArrayRef| -> DfResult<Vec<f32>> {
        let f = datafusion::arrow::compute::cast(&v, &DataType::Float32)?;
        let f: &Float32Array = f.as_primitive::<Float32Type>();
        Ok(f.iter().map(|x| x.unwrap_or(0.0)).collect())
    };
    let mut out = Vec::with_capacity(a.len());
    match a.data_type() {
        DataType::FixedSizeList(..) => {
            let l = a.as_fixed_size_list();
            for i in 0..l.len() {
                out.push(if l.is_null(i) {
                    None
                } else {
                    Some(to_vec(l.value(i))?)
                });
            }
        }
        DataType::List(_) => {
            let l = a.as_list::<i32>();
            for i in 0..l.len() {
                out.push(if l.is_null(i) {
                    None
                } else {
                    Some(to_vec(l.value(i))?)
                });
            }
        }
        DataType::LargeList(_) => {
            let l = a.as_list::<i64>();
            for i in 0..l.len() {
                out.push(if l.is_null(i) {
                    None
                } else {
                    Some(to_vec(l.value(i))?)
                });
            }
        }
        other => {
            return Err(DataFusionError::Plan(format!(
                "cosine() takes two vectors (lists of floats), got {other}"
            )));
        }
    }
    Ok(out)
}

fn cos(a: &[f32], b: &[f32]) -> Option<f32> {
    if a.is_empty() || a.len() != b.len() {
        return None;
    }
    let (mut dot, mut na, mut nb) = (0f32, 0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return None;
    }
    Some(dot / (na.sqrt() * nb.sqrt()))
}

impl ScalarUDFImpl for Cosine {
    fn name(&self) -> &str {
        "cosine"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        for t in arg_types {
            if !matches!(
                t,
                DataType::FixedSizeList(..)
                    | DataType::List(_)
                    | DataType::LargeList(_)
                    | DataType::Null
            ) {
                return Err(DataFusionError::Plan(format!(
                    "cosine() takes two vectors (lists of floats), got {t}"
                )));
            }
        }
        Ok(DataType::Float32)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let (a, b) = (vectors(&arrays[0])?, vectors(&arrays[1])?);
        let out: Float32Array = (0..n)
            .map(|i| {
                match (
                    a.get(i).and_then(|x| x.as_ref()),
                    b.get(i).and_then(|x| x.as_ref()),
                ) {
                    (Some(x), Some(y)) => cos(x, y),
                    _ => None,
                }
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// `embed('text')`: the server's embedding (a `FixedSizeList<Float32>` like `embedding`).
pub struct EmbedUdf {
    embed: Arc<dyn Embed>,
    dims: usize,
    signature: Signature,
}

impl std::fmt::Debug for EmbedUdf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "embed({} dims)", self.dims)
    }
}

impl PartialEq for EmbedUdf {
    fn eq(&self, other: &Self) -> bool {
        self.dims == other.dims
    }
}
impl Eq for EmbedUdf {}
impl std::hash::Hash for EmbedUdf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.dims.hash(state)
    }
}

impl EmbedUdf {
    /// `embed()` with the server's model.
    pub fn new(embed: Arc<dyn Embed>, dims: usize) -> EmbedUdf {
        EmbedUdf {
            embed,
            dims,
            signature: Signature::string(1, Volatility::Stable),
        }
    }
}

impl ScalarUDFImpl for EmbedUdf {
    fn name(&self) -> &str {
        "embed"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(vector(self.dims))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        match &args.args[0] {
            ColumnarValue::Scalar(s) => {
                let text = match s {
                    ScalarValue::Utf8(t) | ScalarValue::Utf8View(t) | ScalarValue::LargeUtf8(t) => {
                        t.clone()
                    }
                    other => {
                        return Err(DataFusionError::Plan(format!(
                            "embed() takes text, got {}",
                            other.data_type()
                        )));
                    }
                };
                let v = match text {
                    Some(t) => Some(self.embed.embed(&t).map_err(external)?),
                    None => None,
                };
                let arr = build_array(
                    &vector(self.dims),
                    std::iter::once(v.as_deref().map(Cell::Vector).unwrap_or(Cell::Null)),
                )?;
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&arr, 0)?))
            }
            ColumnarValue::Array(a) => {
                let a = datafusion::arrow::compute::cast(a, &DataType::Utf8)?;
                let s = a.as_string::<i32>();
                let mut vs: Vec<Option<Vec<f32>>> = Vec::with_capacity(s.len());
                for i in 0..s.len() {
                    vs.push(if s.is_null(i) {
                        None
                    } else {
                        Some(self.embed.embed(s.value(i)).map_err(external)?)
                    });
                }
                let arr = build_array(
                    &vector(self.dims),
                    vs.iter()
                        .map(|v| v.as_deref().map(Cell::Vector).unwrap_or(Cell::Null)),
                )?;
                Ok(ColumnarValue::Array(arr))
            }
        }
    }
}

/// Activated memories of `cube` that `scope` sees (its users only, for a user-scoped key).
fn scoped_candidates(
    store: &Store,
    txn: &store::heed::RoTxn,
    cube: &str,
    scope: &crate::Scope,
) -> Result<store::roaring::RoaringBitmap, SqlError> {
    let mut cands = store.candidates(txn, cube, None, &Filter::True)?;
    if let Some(visible) = store.scope_ids(txn, cube, &scope.store_scope())? {
        cands &= visible;
    }
    Ok(cands)
}
