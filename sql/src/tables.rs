//! The store's tables: `memories`, `memory_history`, `events`, `dead_letters`, `cubes`.
//!
//! Every provider reads the query's [`QueryCtx`] from the session config at scan time: the
//! snapshot, the caller's [`Scope`] and the limits. Rows outside the scope are never produced,
//! whatever the query text says.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session as DfSession, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use store::heed::{RoTxn, WithoutTls};
use store::{DeadLetter, EventRecord, MemoryRecord, Store};

use crate::scan::{
    Cell, Column, ScanCounters, ScanExec, Snapshot, Source, SourceFactory, build_batch, col, info,
    json, opt, schema_of, text_list, ts, vector,
};
use crate::{Scope, Session, SqlConfig, SqlError, visible_cubes};

/// Everything a scan needs about the query it belongs to; travels as a session-config
/// extension.
pub struct QueryCtx {
    /// The snapshot every table of the query reads.
    pub snapshot: Arc<Snapshot>,
    /// The caller.
    pub session: Session,
    /// Limits.
    pub cfg: SqlConfig,
    /// The server's embedder (for `vector_search`).
    pub embed: Arc<dyn crate::Embed>,
}

/// The query context of a DataFusion session (set by [`crate::Engine`]).
pub fn query_ctx(state: &dyn DfSession) -> DfResult<Arc<QueryCtx>> {
    state
        .config()
        .get_extension::<QueryCtx>()
        .ok_or_else(|| DataFusionError::Internal("memos query context missing".into()))
}

// ---------------------------------------------------------------------------------------------
// Filter analysis

/// A filter a table understood.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Pred {
    /// `col = 'v'` or `col IN (…)`.
    In(String, BTreeSet<String>),
    /// `col <op> timestamp`, as an inclusive micros range.
    Range(String, i64, i64),
}

fn column_name(e: &Expr) -> Option<&str> {
    match e {
        Expr::Column(c) => Some(c.name.as_str()),
        Expr::Cast(c) => column_name(&c.expr),
        Expr::TryCast(c) => column_name(&c.expr),
        _ => None,
    }
}

fn literal_text(e: &Expr) -> Option<String> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)),
            _,
        ) => Some(s.clone()),
        Expr::Cast(c) => literal_text(&c.expr),
        _ => None,
    }
}

fn literal_micros(e: &Expr) -> Option<i64> {
    match e {
        Expr::Literal(v, _) => match v {
            ScalarValue::TimestampMicrosecond(Some(x), _) => Some(*x),
            ScalarValue::TimestampNanosecond(Some(x), _) => Some(x.div_euclid(1000)),
            ScalarValue::TimestampMillisecond(Some(x), _) => Some(x.saturating_mul(1000)),
            ScalarValue::TimestampSecond(Some(x), _) => Some(x.saturating_mul(1_000_000)),
            _ => None,
        },
        _ => None,
    }
}

/// Reads a filter as an equality/IN on a text column or a range on a time column.
pub(crate) fn analyse(e: &Expr) -> Option<Pred> {
    match e {
        Expr::BinaryExpr(b) => {
            let (col, lit, op) = match (column_name(&b.left), column_name(&b.right)) {
                (Some(c), None) => (c, &*b.right, b.op),
                (None, Some(c)) => (c, &*b.left, b.op.swap()?),
                _ => return None,
            };
            if op == Operator::Eq
                && let Some(v) = literal_text(lit)
            {
                return Some(Pred::In(col.to_string(), BTreeSet::from([v])));
            }
            let t = literal_micros(lit)?;
            let (lo, hi) = match op {
                Operator::Eq => (t, t),
                Operator::Gt => (t.saturating_add(1), i64::MAX),
                Operator::GtEq => (t, i64::MAX),
                Operator::Lt => (i64::MIN, t.saturating_sub(1)),
                Operator::LtEq => (i64::MIN, t),
                _ => return None,
            };
            Some(Pred::Range(col.to_string(), lo, hi))
        }
        Expr::InList(l) if !l.negated => {
            let col = column_name(&l.expr)?;
            let values: Option<BTreeSet<String>> = l.list.iter().map(literal_text).collect();
            Some(Pred::In(col.to_string(), values?))
        }
        _ => None,
    }
}

/// What a memories/history scan selects.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selection {
    /// `cube_id` values.
    cubes: Option<BTreeSet<String>>,
    /// Indexed fields (`user_id`…) and their values.
    fields: Vec<(String, BTreeSet<String>)>,
    /// Memory uuids.
    ids: Option<BTreeSet<String>>,
    /// Time ranges (checked on each record).
    ranges: Vec<(String, i64, i64)>,
}

const INDEXED: &[&str] = &[
    "user_id",
    "session_id",
    "agent_id",
    "app_id",
    "memory_type",
    "status",
];

fn intersect(slot: &mut Option<BTreeSet<String>>, v: BTreeSet<String>) {
    *slot = Some(match slot.take() {
        Some(cur) => cur.intersection(&v).cloned().collect(),
        None => v,
    });
}

impl Selection {
    fn from_filters(filters: &[Expr], id_col: &str, fields_ok: bool) -> Selection {
        let mut s = Selection::default();
        for f in filters {
            match analyse(f) {
                Some(Pred::In(c, v)) if c == "cube_id" => intersect(&mut s.cubes, v),
                Some(Pred::In(c, v)) if c == id_col => intersect(&mut s.ids, v),
                Some(Pred::In(c, v)) if fields_ok && INDEXED.contains(&c.as_str()) => {
                    s.fields.push((c, v))
                }
                Some(Pred::Range(c, lo, hi)) if fields_ok => s.ranges.push((c, lo, hi)),
                _ => {}
            }
        }
        s
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(c) = &self.cubes {
            parts.push(format!("cube_id in {c:?}"));
        }
        for (f, v) in &self.fields {
            parts.push(format!("{f} in {v:?}"));
        }
        if let Some(i) = &self.ids {
            parts.push(format!("id in {} values", i.len()));
        }
        for (c, lo, hi) in &self.ranges {
            parts.push(format!("{c} in [{lo}, {hi}]"));
        }
        parts.join(", ")
    }

    /// Whether a decoded record passes the selection (used where bitmaps were not); the
    /// scope is checked by [`RecordCursor`] through the store.
    fn admits(&self, r: &MemoryRecord) -> bool {
        if let Some(c) = &self.cubes
            && !c.contains(&r.cube_id)
        {
            return false;
        }
        for (f, values) in &self.fields {
            let v = match f.as_str() {
                "user_id" => Some(r.user_id.as_str()),
                "session_id" => Some(r.session_id.as_str()),
                "agent_id" => r.agent_id.as_deref(),
                "app_id" => r.app_id.as_deref(),
                "memory_type" => Some(r.memory_type.as_str()),
                "status" => Some(r.status.as_str()),
                _ => None,
            };
            if !v.is_some_and(|v| values.contains(v)) {
                return false;
            }
        }
        self.in_ranges(r)
    }

    fn in_ranges(&self, r: &MemoryRecord) -> bool {
        self.ranges.iter().all(|(c, lo, hi)| {
            let t = match c.as_str() {
                "created_at" => Some(r.created_at),
                "updated_at" => Some(r.updated_at),
                "event_time" => r.event_time,
                _ => return true,
            };
            t.is_some_and(|t| t >= *lo && t <= *hi)
        })
    }
}

/// Walks the records a [`Selection`] names, batch by batch.
struct RecordCursor {
    store: Arc<Store>,
    scope: Scope,
    /// The scope as the store applies it to each record ([`Store::sees`]).
    visible: store::Scope,
    sel: Selection,
    state: CursorState,
}

enum CursorState {
    Start,
    /// Whole table, next internal id.
    Range(u32),
    /// Precomputed ids, position.
    Ids(Vec<u32>, usize),
    Done,
}

impl RecordCursor {
    fn new(store: Arc<Store>, scope: Scope, sel: Selection) -> RecordCursor {
        RecordCursor {
            store,
            visible: scope.store_scope(),
            scope,
            sel,
            state: CursorState::Start,
        }
    }

    fn start(&mut self, txn: &RoTxn, counters: &ScanCounters) -> Result<CursorState, SqlError> {
        let store = &self.store;
        if let Some(uuids) = &self.sel.ids {
            let mut ids = Vec::new();
            for u in uuids {
                if let Some(id) = store.internal_id(txn, u)? {
                    ids.push(id);
                }
            }
            ids.sort_unstable();
            return Ok(CursorState::Ids(ids, 0));
        }
        if self.sel.cubes.is_none() && self.sel.fields.is_empty() && self.scope.unrestricted() {
            return Ok(CursorState::Range(0));
        }
        let cubes = visible_cubes(store, txn, &self.scope, self.sel.cubes.as_ref())?;
        let mut all = store::roaring::RoaringBitmap::new();
        for cube in &cubes {
            counters.cubes_scanned.add(1);
            let mut b = store.cube_ids(txn, cube)?;
            for (field, values) in &self.sel.fields {
                let mut any = store::roaring::RoaringBitmap::new();
                for v in values {
                    any |= store.field_ids(txn, cube, field, v)?;
                }
                b &= any;
                if b.is_empty() {
                    break;
                }
            }
            all |= b;
        }
        Ok(CursorState::Ids(all.into_iter().collect(), 0))
    }

    /// Up to `max` admitted records; empty when the scan is over.
    fn next(
        &mut self,
        txn: &RoTxn,
        max: usize,
        counters: &ScanCounters,
    ) -> Result<Vec<(u32, MemoryRecord)>, SqlError> {
        if matches!(self.state, CursorState::Start) {
            self.state = self.start(txn, counters)?;
        }
        let mut out = Vec::new();
        loop {
            match &mut self.state {
                CursorState::Start | CursorState::Done => return Ok(out),
                CursorState::Range(next) => {
                    let page = self.store.records_from(txn, *next, max - out.len())?;
                    if page.is_empty() {
                        self.state = CursorState::Done;
                        continue;
                    }
                    *next = page.last().map(|(id, _)| id + 1).unwrap_or(u32::MAX);
                    counters.rows_scanned.add(page.len());
                    for (id, r) in page {
                        if self.sel.admits(&r) && self.store.sees(txn, &self.visible, &r)? {
                            out.push((id, r));
                        }
                    }
                }
                CursorState::Ids(ids, pos) => {
                    if *pos >= ids.len() {
                        self.state = CursorState::Done;
                        continue;
                    }
                    let end = (*pos + (max - out.len())).min(ids.len());
                    for &id in &ids[*pos..end] {
                        if let Some(r) = self.store.record(txn, id)? {
                            counters.rows_scanned.add(1);
                            if self.sel.admits(&r) && self.store.sees(txn, &self.visible, &r)? {
                                out.push((id, r));
                            }
                        }
                    }
                    *pos = end;
                }
            }
            if out.len() >= max {
                return Ok(out);
            }
        }
    }
}

fn pushdown(
    filters: &[&Expr],
    exact: &[&str],
    inexact: &[&str],
) -> Vec<TableProviderFilterPushDown> {
    filters
        .iter()
        .map(|f| match analyse(f) {
            Some(Pred::In(c, _)) if exact.contains(&c.as_str()) => {
                TableProviderFilterPushDown::Exact
            }
            Some(Pred::Range(c, _, _)) if inexact.contains(&c.as_str()) => {
                TableProviderFilterPushDown::Inexact
            }
            _ => TableProviderFilterPushDown::Unsupported,
        })
        .collect()
}

fn project<R>(
    cols: &'static [Column<R>],
    projection: Option<&Vec<usize>>,
) -> Vec<&'static Column<R>> {
    match projection {
        Some(p) => p.iter().map(|i| &cols[*i]).collect(),
        None => cols.iter().collect(),
    }
}

fn projected_schema(full: &SchemaRef, projection: Option<&Vec<usize>>) -> DfResult<SchemaRef> {
    Ok(match projection {
        Some(p) => Arc::new(full.project(p)?),
        None => full.clone(),
    })
}

// ---------------------------------------------------------------------------------------------
// One provider for every table

/// What a table's [`Source`] is built from at scan time.
pub struct ScanArgs<R: 'static> {
    store: Arc<Store>,
    scope: Scope,
    sel: Selection,
    schema: SchemaRef,
    cols: Vec<&'static Column<R>>,
    limit: Option<usize>,
}

impl<R> Clone for ScanArgs<R> {
    fn clone(&self) -> Self {
        ScanArgs {
            store: self.store.clone(),
            scope: self.scope.clone(),
            sel: self.sel.clone(),
            schema: self.schema.clone(),
            cols: self.cols.clone(),
            limit: self.limit,
        }
    }
}

/// A table of the store: its rows and columns, which filters it answers, and its source.
pub trait TableDef: Send + Sync + 'static {
    /// One decoded row.
    type Row: 'static;
    /// Table name.
    const NAME: &'static str;
    /// Columns whose `=` / `IN` filters the source answers exactly.
    const EXACT: &'static [&'static str];
    /// Time columns whose ranges the source checks (DataFusion filters again).
    const RANGES: &'static [&'static str] = &[];
    /// The column naming a memory uuid, if any (`id` lookups).
    const ID: &'static str = "";
    /// Whether indexed fields other than `cube_id` narrow the scan.
    const FIELDS: bool = false;
    /// Whether the source stops at the pushed-down `LIMIT`.
    const LIMIT: bool = false;
    /// The definition for `store`.
    fn new(store: &Store) -> Self;
    /// Its columns.
    fn columns(&self) -> &'static [Column<Self::Row>];
    /// A fresh source.
    fn source(args: ScanArgs<Self::Row>) -> Box<dyn Source>;
}

/// The `TableProvider` of a [`TableDef`].
pub struct StoreTable<D: TableDef> {
    store: Arc<Store>,
    def: D,
    schema: SchemaRef,
}

impl<D: TableDef> std::fmt::Debug for StoreTable<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreTable({})", D::NAME)
    }
}

impl<D: TableDef> StoreTable<D> {
    /// The table over `store`.
    pub fn new(store: Arc<Store>) -> StoreTable<D> {
        let def = D::new(&store);
        StoreTable {
            schema: schema_of(def.columns()),
            store,
            def,
        }
    }
}

#[async_trait]
impl<D: TableDef> TableProvider for StoreTable<D> {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(pushdown(filters, D::EXACT, D::RANGES))
    }

    async fn scan(
        &self,
        state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let q = query_ctx(state)?;
        let limit = limit.filter(|_| D::LIMIT);
        let sel = Selection::from_filters(filters, D::ID, D::FIELDS);
        let schema = projected_schema(&self.schema, projection)?;
        let detail = describe(&sel.describe(), limit);
        let args = ScanArgs {
            store: self.store.clone(),
            scope: q.session.scope.clone(),
            sel,
            schema: schema.clone(),
            cols: project(self.def.columns(), projection),
            limit,
        };
        let factory: SourceFactory = Arc::new(move || D::source(args.clone()));
        Ok(Arc::new(ScanExec::new(
            D::NAME,
            detail,
            schema,
            q.snapshot.clone(),
            factory,
            q.cfg.batch_size,
        )))
    }
}

fn describe(sel: &str, limit: Option<usize>) -> String {
    match (sel.is_empty(), limit) {
        (true, None) => String::new(),
        (true, Some(l)) => format!("limit={l}"),
        (false, None) => format!("pushed=[{sel}]"),
        (false, Some(l)) => format!("pushed=[{sel}], limit={l}"),
    }
}

// ---------------------------------------------------------------------------------------------
// memories

/// A memories row: the record and, when selected, its embedding.
pub struct MemRow {
    rec: MemoryRecord,
    embedding: Option<Vec<f32>>,
}

fn memory_columns(dims: usize) -> Vec<Column<MemRow>> {
    vec![
        col("id", DataType::Utf8, |r| Cell::Str(&r.rec.id)),
        col("memory", DataType::Utf8, |r| Cell::Str(&r.rec.memory)),
        col("cube_id", DataType::Utf8, |r| Cell::Str(&r.rec.cube_id)),
        col("user_id", DataType::Utf8, |r| Cell::Str(&r.rec.user_id)),
        col("session_id", DataType::Utf8, |r| {
            Cell::Str(&r.rec.session_id)
        }),
        col("agent_id", DataType::Utf8, |r| opt(&r.rec.agent_id)),
        col("app_id", DataType::Utf8, |r| opt(&r.rec.app_id)),
        col("memory_type", DataType::Utf8, |r| {
            Cell::Str(r.rec.memory_type.as_str())
        }),
        col("status", DataType::Utf8, |r| {
            Cell::Str(r.rec.status.as_str())
        }),
        col("key", DataType::Utf8, |r| opt(&r.rec.key)),
        col("tags", text_list(), |r| Cell::List(&r.rec.tags)),
        col("info", DataType::Utf8, |r| info(&r.rec.info)),
        col("source", DataType::Utf8, |r| opt(&r.rec.source)),
        col("sources", DataType::Utf8, |r| json(&r.rec.sources)),
        col("confidence", DataType::Float32, |r| {
            Cell::F32(r.rec.confidence)
        }),
        col("created_at", ts(), |r| Cell::Micros(r.rec.created_at)),
        col("updated_at", ts(), |r| Cell::Micros(r.rec.updated_at)),
        col("event_time", ts(), |r| {
            r.rec.event_time.map(Cell::Micros).unwrap_or(Cell::Null)
        }),
        col("version", DataType::Int64, |r| {
            Cell::I64(r.rec.version as i64)
        }),
        col("history", DataType::Utf8, |r| json(&r.rec.history)),
        col("event_id", DataType::Utf8, |r| Cell::Str(&r.rec.event_id)),
        col("file_ids", text_list(), |r| Cell::List(&r.rec.file_ids)),
        col("embedding", vector(dims), |r| {
            r.embedding
                .as_deref()
                .map(Cell::Vector)
                .unwrap_or(Cell::Null)
        }),
    ]
}

/// Columns are built once per dimension count (the store's, fixed for its lifetime).
fn leak_columns<R>(cols: Vec<Column<R>>) -> &'static [Column<R>] {
    Box::leak(cols.into_boxed_slice())
}

/// `memories`: one row per memory, every field of the record.
pub struct Memories {
    cols: &'static [Column<MemRow>],
}

impl TableDef for Memories {
    type Row = MemRow;
    const NAME: &'static str = "memories";
    const EXACT: &'static [&'static str] = &[
        "cube_id",
        "id",
        "user_id",
        "session_id",
        "agent_id",
        "app_id",
        "memory_type",
        "status",
    ];
    const RANGES: &'static [&'static str] = &["created_at", "updated_at", "event_time"];
    const ID: &'static str = "id";
    const FIELDS: bool = true;
    const LIMIT: bool = true;

    fn new(store: &Store) -> Self {
        Memories {
            cols: leak_columns(memory_columns(store.options().dimensions)),
        }
    }

    fn columns(&self) -> &'static [Column<MemRow>] {
        self.cols
    }

    fn source(a: ScanArgs<MemRow>) -> Box<dyn Source> {
        Box::new(MemSource {
            embedding: a.cols.iter().any(|c| c.name == "embedding"),
            cursor: RecordCursor::new(a.store, a.scope, a.sel),
            schema: a.schema,
            cols: a.cols,
            remaining: a.limit,
        })
    }
}

struct MemSource {
    cursor: RecordCursor,
    schema: SchemaRef,
    cols: Vec<&'static Column<MemRow>>,
    embedding: bool,
    remaining: Option<usize>,
}

impl Source for MemSource {
    fn next_batch(
        &mut self,
        txn: &RoTxn<'static, WithoutTls>,
        batch_size: usize,
        counters: &ScanCounters,
    ) -> Result<Option<RecordBatch>, SqlError> {
        let want = match self.remaining {
            Some(0) => return Ok(None),
            Some(n) => n.min(batch_size),
            None => batch_size,
        };
        let recs = self.cursor.next(txn, want, counters)?;
        if recs.is_empty() {
            return Ok(None);
        }
        if let Some(n) = &mut self.remaining {
            *n -= recs.len().min(*n);
        }
        let mut rows = Vec::with_capacity(recs.len());
        for (id, rec) in recs {
            let embedding = if self.embedding {
                self.cursor.store.embedding(txn, id)?
            } else {
                None
            };
            rows.push(MemRow { rec, embedding });
        }
        Ok(Some(
            build_batch(&self.schema, &self.cols, &rows).map_err(SqlError::from)?,
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// memory_history

/// One version of a memory.
pub struct HistRow {
    rec: MemoryRecord,
    current: bool,
    update_type: Option<String>,
    archived_at: Option<i64>,
    merged_from: Option<String>,
}

fn history_columns() -> Vec<Column<HistRow>> {
    vec![
        col("memory_id", DataType::Utf8, |r| Cell::Str(&r.rec.id)),
        col("version", DataType::Int64, |r| {
            Cell::I64(r.rec.version as i64)
        }),
        col("is_current", DataType::Boolean, |r| Cell::Bool(r.current)),
        col("memory", DataType::Utf8, |r| Cell::Str(&r.rec.memory)),
        col("cube_id", DataType::Utf8, |r| Cell::Str(&r.rec.cube_id)),
        col("user_id", DataType::Utf8, |r| Cell::Str(&r.rec.user_id)),
        col("session_id", DataType::Utf8, |r| {
            Cell::Str(&r.rec.session_id)
        }),
        col("memory_type", DataType::Utf8, |r| {
            Cell::Str(r.rec.memory_type.as_str())
        }),
        col("status", DataType::Utf8, |r| {
            Cell::Str(r.rec.status.as_str())
        }),
        col("tags", text_list(), |r| Cell::List(&r.rec.tags)),
        col("info", DataType::Utf8, |r| info(&r.rec.info)),
        col("update_type", DataType::Utf8, |r| opt(&r.update_type)),
        col("merged_from", DataType::Utf8, |r| opt(&r.merged_from)),
        col("created_at", ts(), |r| Cell::Micros(r.rec.created_at)),
        col("updated_at", ts(), |r| Cell::Micros(r.rec.updated_at)),
        col("archived_at", ts(), |r| {
            r.archived_at.map(Cell::Micros).unwrap_or(Cell::Null)
        }),
    ]
}

/// `memory_history`: every version of every memory (archived snapshots plus the current one,
/// `is_current`), with why and when each was replaced. `cube_id` never changes between versions
/// and `memory_id` names all of them, so those two are answered by the scan; other fields may
/// differ per version and are filtered on the rows.
pub struct History;

static HISTORY_COLUMNS: std::sync::LazyLock<Vec<Column<HistRow>>> =
    std::sync::LazyLock::new(history_columns);

impl TableDef for History {
    type Row = HistRow;
    const NAME: &'static str = "memory_history";
    const EXACT: &'static [&'static str] = &["cube_id", "memory_id"];
    const ID: &'static str = "memory_id";

    fn new(_: &Store) -> Self {
        History
    }

    fn columns(&self) -> &'static [Column<HistRow>] {
        &HISTORY_COLUMNS
    }

    fn source(a: ScanArgs<HistRow>) -> Box<dyn Source> {
        Box::new(HistSource {
            cursor: RecordCursor::new(a.store, a.scope, a.sel),
            schema: a.schema,
            cols: a.cols,
        })
    }
}

struct HistSource {
    cursor: RecordCursor,
    schema: SchemaRef,
    cols: Vec<&'static Column<HistRow>>,
}

impl Source for HistSource {
    fn next_batch(
        &mut self,
        txn: &RoTxn<'static, WithoutTls>,
        batch_size: usize,
        counters: &ScanCounters,
    ) -> Result<Option<RecordBatch>, SqlError> {
        let recs = self.cursor.next(txn, batch_size, counters)?;
        if recs.is_empty() {
            return Ok(None);
        }
        let mut rows = Vec::with_capacity(recs.len());
        for (_, cur) in recs {
            let versions = if cur.version > 1 {
                self.cursor.store.versions(txn, &cur.id)?
            } else {
                Vec::new()
            };
            counters.rows_scanned.add(versions.len());
            for v in versions {
                let entry = cur.history.iter().find(|h| h.version == v.version);
                rows.push(HistRow {
                    update_type: entry.map(|h| h.update_type.clone()),
                    archived_at: entry.map(|h| h.archived_at),
                    merged_from: entry.and_then(|h| h.merged_from.clone()),
                    rec: v,
                    current: false,
                });
            }
            rows.push(HistRow {
                rec: cur,
                current: true,
                update_type: None,
                archived_at: None,
                merged_from: None,
            });
        }
        Ok(Some(
            build_batch(&self.schema, &self.cols, &rows).map_err(SqlError::from)?,
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// events

/// One processed event.
pub struct EventRow {
    cube_id: String,
    event_id: String,
    rec: EventRecord,
}

static EVENT_COLUMNS: std::sync::LazyLock<Vec<Column<EventRow>>> = std::sync::LazyLock::new(|| {
    vec![
        col("cube_id", DataType::Utf8, |r| Cell::Str(&r.cube_id)),
        col("event_id", DataType::Utf8, |r| Cell::Str(&r.event_id)),
        col("source", DataType::Utf8, |r| Cell::Str(&r.rec.source)),
        col("position", DataType::Utf8, |r| opt(&r.rec.position)),
        col("processed_at", ts(), |r| Cell::Micros(r.rec.processed_at)),
        col("memory_ids", text_list(), |r| Cell::List(&r.rec.memory_ids)),
    ]
});

/// `events`: every processed event, with its source, position and the memories it produced.
pub struct Events;

impl TableDef for Events {
    type Row = EventRow;
    const NAME: &'static str = "events";
    const EXACT: &'static [&'static str] = &["cube_id"];

    fn new(_: &Store) -> Self {
        Events
    }

    fn columns(&self) -> &'static [Column<EventRow>] {
        &EVENT_COLUMNS
    }

    fn source(a: ScanArgs<EventRow>) -> Box<dyn Source> {
        Box::new(EventSource {
            store: a.store,
            scope: a.scope,
            only: a.sel.cubes,
            schema: a.schema,
            cols: a.cols,
            cubes: None,
            started: false,
            after: None,
            done: false,
        })
    }
}

struct EventSource {
    store: Arc<Store>,
    scope: Scope,
    only: Option<BTreeSet<String>>,
    schema: SchemaRef,
    cols: Vec<&'static Column<EventRow>>,
    /// Cubes still to read (None = one pass over every cube).
    cubes: Option<Vec<String>>,
    started: bool,
    after: Option<(String, String)>,
    done: bool,
}

impl EventSource {
    /// A user-scoped key sees an event only when it produced memories and every one of them
    /// is a memory of its users (an event says nothing of its user itself).
    fn event_visible(
        &self,
        txn: &RoTxn<'static, WithoutTls>,
        rec: &store::EventRecord,
    ) -> Result<bool, SqlError> {
        if self.scope.users.is_none() {
            return Ok(true);
        }
        if rec.memory_ids.is_empty() {
            return Ok(false);
        }
        for id in &rec.memory_ids {
            match self.store.get(txn, id)? {
                Some(r) if self.scope.allows_user(&r.user_id) => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }
}

impl Source for EventSource {
    fn next_batch(
        &mut self,
        txn: &RoTxn<'static, WithoutTls>,
        batch_size: usize,
        counters: &ScanCounters,
    ) -> Result<Option<RecordBatch>, SqlError> {
        if !self.started {
            self.started = true;
            if self.only.is_some() || !self.scope.unrestricted() {
                let mut c = visible_cubes(&self.store, txn, &self.scope, self.only.as_ref())?;
                c.reverse();
                self.cubes = Some(c);
            }
        }
        let mut rows = Vec::new();
        while !self.done && rows.len() < batch_size {
            let cube = match &mut self.cubes {
                None => None,
                Some(list) => match list.last() {
                    Some(c) => Some(c.clone()),
                    None => {
                        self.done = true;
                        break;
                    }
                },
            };
            let after = self.after.as_ref().map(|(c, e)| (c.as_str(), e.as_str()));
            let page =
                self.store
                    .events_from(txn, cube.as_deref(), after, batch_size - rows.len())?;
            counters.rows_scanned.add(page.len());
            if page.len() < batch_size - rows.len() {
                // This cube (or the whole table) is exhausted.
                match &mut self.cubes {
                    None => self.done = true,
                    Some(list) => {
                        list.pop();
                        counters.cubes_scanned.add(1);
                    }
                }
                self.after = None;
            } else if let Some((c, e, _)) = page.last() {
                self.after = Some((c.clone(), e.clone()));
            }
            for (cube_id, event_id, rec) in page {
                if self.scope.allows(&cube_id) && self.event_visible(txn, &rec)? {
                    rows.push(EventRow {
                        cube_id,
                        event_id,
                        rec,
                    });
                }
            }
        }
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            build_batch(&self.schema, &self.cols, &rows).map_err(SqlError::from)?,
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// dead_letters

/// One dead letter.
pub struct DeadRow {
    seq: u64,
    dl: DeadLetter,
}

static DEAD_COLUMNS: std::sync::LazyLock<Vec<Column<DeadRow>>> = std::sync::LazyLock::new(|| {
    vec![
        col("seq", DataType::Int64, |r| Cell::I64(r.seq as i64)),
        col("source", DataType::Utf8, |r| Cell::Str(&r.dl.source)),
        col("position", DataType::Utf8, |r| opt(&r.dl.position)),
        col("reason", DataType::Utf8, |r| Cell::Str(&r.dl.reason)),
        col("payload", DataType::Utf8, |r| {
            Cell::String(String::from_utf8_lossy(&r.dl.payload).into_owned())
        }),
        col("payload_bytes", DataType::Int64, |r| {
            Cell::I64(r.dl.payload.len() as i64)
        }),
        col("at", ts(), |r| Cell::Micros(r.dl.at)),
    ]
});

/// `dead_letters`: inputs that could not be processed, with their reason. Store-wide (a dead
/// letter may not even name a cube), so only unscoped callers see rows.
pub struct DeadLetters;

impl TableDef for DeadLetters {
    type Row = DeadRow;
    const NAME: &'static str = "dead_letters";
    const EXACT: &'static [&'static str] = &[];

    fn new(_: &Store) -> Self {
        DeadLetters
    }

    fn columns(&self) -> &'static [Column<DeadRow>] {
        &DEAD_COLUMNS
    }

    fn source(a: ScanArgs<DeadRow>) -> Box<dyn Source> {
        Box::new(DeadSource {
            visible: a.scope.system,
            store: a.store,
            next: 0,
            schema: a.schema,
            cols: a.cols,
        })
    }
}

struct DeadSource {
    store: Arc<Store>,
    visible: bool,
    next: u64,
    schema: SchemaRef,
    cols: Vec<&'static Column<DeadRow>>,
}

impl Source for DeadSource {
    fn next_batch(
        &mut self,
        txn: &RoTxn<'static, WithoutTls>,
        batch_size: usize,
        counters: &ScanCounters,
    ) -> Result<Option<RecordBatch>, SqlError> {
        if !self.visible {
            return Ok(None);
        }
        let page = self.store.dead_letters_from(txn, self.next, batch_size)?;
        let Some((last, _)) = page.last() else {
            return Ok(None);
        };
        self.next = last + 1;
        counters.rows_scanned.add(page.len());
        let rows: Vec<DeadRow> = page
            .into_iter()
            .map(|(seq, dl)| DeadRow { seq, dl })
            .collect();
        Ok(Some(
            build_batch(&self.schema, &self.cols, &rows).map_err(SqlError::from)?,
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// cubes

/// One cube and its size.
pub struct CubeRow {
    info: store::CubeInfo,
    memories: u64,
}

static CUBE_COLUMNS: std::sync::LazyLock<Vec<Column<CubeRow>>> = std::sync::LazyLock::new(|| {
    vec![
        col("cube_id", DataType::Utf8, |r| Cell::Str(&r.info.cube_id)),
        col("name", DataType::Utf8, |r| Cell::Str(&r.info.name)),
        col("owner_id", DataType::Utf8, |r| Cell::Str(&r.info.owner_id)),
        col("kind", DataType::Utf8, |r| Cell::Str(&r.info.kind)),
        col("description", DataType::Utf8, |r| {
            Cell::Str(&r.info.description)
        }),
        col("created_at", ts(), |r| Cell::Micros(r.info.created_at)),
        col("memories", DataType::Int64, |r| {
            Cell::I64(r.memories as i64)
        }),
    ]
});

/// `cubes`: every cube (and knowledge base) the caller may see, with its memory count.
pub struct Cubes;

impl TableDef for Cubes {
    type Row = CubeRow;
    const NAME: &'static str = "cubes";
    const EXACT: &'static [&'static str] = &["cube_id"];

    fn new(_: &Store) -> Self {
        Cubes
    }

    fn columns(&self) -> &'static [Column<CubeRow>] {
        &CUBE_COLUMNS
    }

    fn source(a: ScanArgs<CubeRow>) -> Box<dyn Source> {
        Box::new(CubeSource {
            store: a.store,
            scope: a.scope,
            only: a.sel.cubes,
            schema: a.schema,
            cols: a.cols,
            done: false,
        })
    }
}

struct CubeSource {
    store: Arc<Store>,
    scope: Scope,
    only: Option<BTreeSet<String>>,
    schema: SchemaRef,
    cols: Vec<&'static Column<CubeRow>>,
    done: bool,
}

impl Source for CubeSource {
    fn next_batch(
        &mut self,
        txn: &RoTxn<'static, WithoutTls>,
        _batch_size: usize,
        counters: &ScanCounters,
    ) -> Result<Option<RecordBatch>, SqlError> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        let mut rows = Vec::new();
        for cube in visible_cubes(&self.store, txn, &self.scope, self.only.as_ref())? {
            if let Some(info) = self.store.cube(txn, &cube)? {
                counters.cubes_scanned.add(1);
                let memories = match self
                    .store
                    .scope_ids(txn, &cube, &self.scope.store_scope())?
                {
                    Some(visible) => visible.len(),
                    None => self.store.cube_ids(txn, &cube)?.len(),
                };
                rows.push(CubeRow { info, memories });
            }
        }
        counters.rows_scanned.add(rows.len());
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            build_batch(&self.schema, &self.cols, &rows).map_err(SqlError::from)?,
        ))
    }
}
