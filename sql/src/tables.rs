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
    Cell, Column, ScanCounters, ScanExec, Snapshot, Source, SourceFactory, build_batch, schema_of,
    text_list, ts, vector,
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

    /// Whether a decoded record passes the selection (used where bitmaps were not).
    fn admits(&self, scope: &Scope, r: &MemoryRecord) -> bool {
        if !scope.allows(&r.cube_id) || !scope.allows_user(&r.user_id) {
            return false;
        }
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
                        if self.sel.admits(&self.scope, &r) {
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
                            if self.sel.admits(&self.scope, &r) {
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

fn opt(s: &Option<String>) -> Cell<'_> {
    s.as_deref().map(Cell::Str).unwrap_or(Cell::Null)
}

fn json(v: &impl serde::Serialize) -> Cell<'static> {
    Cell::String(serde_json::to_string(v).unwrap_or_default())
}

fn info(m: &serde_json::Map<String, serde_json::Value>) -> Cell<'static> {
    if m.is_empty() {
        Cell::Str("{}")
    } else {
        json(m)
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
        Column {
            name: "id",
            ty: DataType::Utf8,
            get: |r| Cell::Str(&r.rec.id),
        },
        Column {
            name: "memory",
            ty: DataType::Utf8,
            get: |r| Cell::Str(&r.rec.memory),
        },
        Column {
            name: "cube_id",
            ty: DataType::Utf8,
            get: |r| Cell::Str(&r.rec.cube_id),
        },
        Column {
            name: "user_id",
            ty: DataType::Utf8,
            get: |r| Cell::Str(&r.rec.user_id),
        },
        Column {
            name: "session_id",
            ty: DataType::Utf8,
            get: |r| Cell::Str(&r.rec.session_id),
        },
        Column {
            name: "agent_id",
            ty: DataType::Utf8,
            get: |r| opt(&r.rec.agent_id),
        },
        Column {
            name: "app_id",
            ty: DataType::Utf8,
            get: |r| opt(&r.rec.app_id),
        },
        Column {
            name: "memory_type",
            ty: DataType::Utf8,
            get: |r| Cell::Str(r.rec.memory_type.as_str()),
        },
        Column {
            name: "status",
            ty: DataType::Utf8,
            get: |r| Cell::Str(r.rec.status.as_str()),
        },
        Column {
            name: "key",
            ty: DataType::Utf8,
            get: |r| opt(&r.rec.key),
        },
        Column {
            name: "tags",
            ty: text_list(),
            get: |r| Cell::List(&r.rec.tags),
        },
        Column {
            name: "info",
            ty: DataType::Utf8,
            get: |r| info(&r.rec.info),
        },
        Column {
            name: "source",
            ty: DataType::Utf8,
            get: |r| opt(&r.rec.source),
        },
        Column {
            name: "sources",
            ty: DataType::Utf8,
            get: |r| json(&r.rec.sources),
        },
        Column {
            name: "confidence",
            ty: DataType::Float32,
            get: |r| Cell::F32(r.rec.confidence),
        },
        Column {
            name: "created_at",
            ty: ts(),
            get: |r| Cell::Micros(r.rec.created_at),
        },
        Column {
            name: "updated_at",
            ty: ts(),
            get: |r| Cell::Micros(r.rec.updated_at),
        },
        Column {
            name: "event_time",
            ty: ts(),
            get: |r| r.rec.event_time.map(Cell::Micros).unwrap_or(Cell::Null),
        },
        Column {
            name: "version",
            ty: DataType::Int64,
            get: |r| Cell::I64(r.rec.version as i64),
        },
        Column {
            name: "history",
            ty: DataType::Utf8,
            get: |r| json(&r.rec.history),
        },
        Column {
            name: "event_id",
            ty: DataType::Utf8,
            get: |r| Cell::Str(&r.rec.event_id),
        },
        Column {
            name: "file_ids",
            ty: text_list(),
            get: |r| Cell::List(&r.rec.file_ids),
        },
        Column {
            name: "embedding",
            ty: vector(dims),
            get: |r| {
                r.embedding
                    .as_deref()
                    .map(Cell::Vector)
                    .unwrap_or(Cell::Null)
            },
        },
    ]
}

/// Columns are built once per dimension count (the store's, fixed for its lifetime).
fn leak_columns<R>(cols: Vec<Column<R>>) -> &'static [Column<R>] {
    Box::leak(cols.into_boxed_slice())
}

/// `memories`: one row per memory, every field of the record.
#[derive(Debug)]
pub struct MemoriesTable {
    store: Arc<Store>,
    schema: SchemaRef,
    cols: &'static [Column<MemRow>],
}

impl MemoriesTable {
    /// The table over `store`.
    pub fn new(store: Arc<Store>) -> MemoriesTable {
        let cols = leak_columns(memory_columns(store.options().dimensions));
        MemoriesTable {
            schema: schema_of(cols),
            store,
            cols,
        }
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

const MEM_EXACT: &[&str] = &[
    "cube_id",
    "id",
    "user_id",
    "session_id",
    "agent_id",
    "app_id",
    "memory_type",
    "status",
];
const MEM_TIMES: &[&str] = &["created_at", "updated_at", "event_time"];

#[async_trait]
impl TableProvider for MemoriesTable {
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
        Ok(pushdown(filters, MEM_EXACT, MEM_TIMES))
    }

    async fn scan(
        &self,
        state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let q = query_ctx(state)?;
        let sel = Selection::from_filters(filters, "id", true);
        let schema = projected_schema(&self.schema, projection)?;
        let cols = project(self.cols, projection);
        let embedding = cols.iter().any(|c| c.name == "embedding");
        let detail = describe(&sel.describe(), limit);
        let (store, scope) = (self.store.clone(), q.session.scope.clone());
        let schema2 = schema.clone();
        let factory: SourceFactory = Arc::new(move || {
            Box::new(MemSource {
                cursor: RecordCursor::new(store.clone(), scope.clone(), sel.clone()),
                schema: schema2.clone(),
                cols: cols.clone(),
                embedding,
                remaining: limit,
            })
        });
        Ok(Arc::new(ScanExec::new(
            "memories",
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
        Column {
            name: "memory_id",
            ty: DataType::Utf8,
            get: |r| Cell::Str(&r.rec.id),
        },
        Column {
            name: "version",
            ty: DataType::Int64,
            get: |r| Cell::I64(r.rec.version as i64),
        },
        Column {
            name: "is_current",
            ty: DataType::Boolean,
            get: |r| Cell::Bool(r.current),
        },
        Column {
            name: "memory",
            ty: DataType::Utf8,
            get: |r| Cell::Str(&r.rec.memory),
        },
        Column {
            name: "cube_id",
            ty: DataType::Utf8,
            get: |r| Cell::Str(&r.rec.cube_id),
        },
        Column {
            name: "user_id",
            ty: DataType::Utf8,
            get: |r| Cell::Str(&r.rec.user_id),
        },
        Column {
            name: "session_id",
            ty: DataType::Utf8,
            get: |r| Cell::Str(&r.rec.session_id),
        },
        Column {
            name: "memory_type",
            ty: DataType::Utf8,
            get: |r| Cell::Str(r.rec.memory_type.as_str()),
        },
        Column {
            name: "status",
            ty: DataType::Utf8,
            get: |r| Cell::Str(r.rec.status.as_str()),
        },
        Column {
            name: "tags",
            ty: text_list(),
            get: |r| Cell::List(&r.rec.tags),
        },
        Column {
            name: "info",
            ty: DataType::Utf8,
            get: |r| info(&r.rec.info),
        },
        Column {
            name: "update_type",
            ty: DataType::Utf8,
            get: |r| opt(&r.update_type),
        },
        Column {
            name: "merged_from",
            ty: DataType::Utf8,
            get: |r| opt(&r.merged_from),
        },
        Column {
            name: "created_at",
            ty: ts(),
            get: |r| Cell::Micros(r.rec.created_at),
        },
        Column {
            name: "updated_at",
            ty: ts(),
            get: |r| Cell::Micros(r.rec.updated_at),
        },
        Column {
            name: "archived_at",
            ty: ts(),
            get: |r| r.archived_at.map(Cell::Micros).unwrap_or(Cell::Null),
        },
    ]
}

/// `memory_history`: every version of every memory (archived snapshots plus the current one,
/// `is_current`), with why and when each was replaced.
#[derive(Debug)]
pub struct HistoryTable {
    store: Arc<Store>,
    schema: SchemaRef,
    cols: &'static [Column<HistRow>],
}

impl HistoryTable {
    /// The table over `store`.
    pub fn new(store: Arc<Store>) -> HistoryTable {
        let cols = leak_columns(history_columns());
        HistoryTable {
            schema: schema_of(cols),
            store,
            cols,
        }
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

#[async_trait]
impl TableProvider for HistoryTable {
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
        // cube_id never changes between versions and memory_id names all of them; other fields
        // may differ per version, so they are filtered by DataFusion on the rows.
        Ok(pushdown(filters, &["cube_id", "memory_id"], &[]))
    }

    async fn scan(
        &self,
        state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let q = query_ctx(state)?;
        let sel = Selection::from_filters(filters, "memory_id", false);
        let schema = projected_schema(&self.schema, projection)?;
        let cols = project(self.cols, projection);
        let detail = describe(&sel.describe(), None);
        let (store, scope) = (self.store.clone(), q.session.scope.clone());
        let schema2 = schema.clone();
        let factory: SourceFactory = Arc::new(move || {
            Box::new(HistSource {
                cursor: RecordCursor::new(store.clone(), scope.clone(), sel.clone()),
                schema: schema2.clone(),
                cols: cols.clone(),
            })
        });
        Ok(Arc::new(ScanExec::new(
            "memory_history",
            detail,
            schema,
            q.snapshot.clone(),
            factory,
            q.cfg.batch_size,
        )))
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
        Column {
            name: "cube_id",
            ty: DataType::Utf8,
            get: |r| Cell::Str(&r.cube_id),
        },
        Column {
            name: "event_id",
            ty: DataType::Utf8,
            get: |r| Cell::Str(&r.event_id),
        },
        Column {
            name: "source",
            ty: DataType::Utf8,
            get: |r| Cell::Str(&r.rec.source),
        },
        Column {
            name: "position",
            ty: DataType::Utf8,
            get: |r| opt(&r.rec.position),
        },
        Column {
            name: "processed_at",
            ty: ts(),
            get: |r| Cell::Micros(r.rec.processed_at),
        },
        Column {
            name: "memory_ids",
            ty: text_list(),
            get: |r| Cell::List(&r.rec.memory_ids),
        },
    ]
});

/// `events`: every processed event, with its source, position and the memories it produced.
#[derive(Debug)]
pub struct EventsTable {
    store: Arc<Store>,
    schema: SchemaRef,
}

impl EventsTable {
    /// The table over `store`.
    pub fn new(store: Arc<Store>) -> EventsTable {
        EventsTable {
            schema: schema_of(&EVENT_COLUMNS),
            store,
        }
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
                if self.scope.allows(&cube_id) {
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

#[async_trait]
impl TableProvider for EventsTable {
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
        Ok(pushdown(filters, &["cube_id"], &[]))
    }

    async fn scan(
        &self,
        state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let q = query_ctx(state)?;
        let sel = Selection::from_filters(filters, "", false);
        let schema = projected_schema(&self.schema, projection)?;
        let cols = project(&EVENT_COLUMNS, projection);
        let detail = describe(&sel.describe(), None);
        let (store, scope) = (self.store.clone(), q.session.scope.clone());
        let schema2 = schema.clone();
        let factory: SourceFactory = Arc::new(move || {
            Box::new(EventSource {
                store: store.clone(),
                scope: scope.clone(),
                only: sel.cubes.clone(),
                schema: schema2.clone(),
                cols: cols.clone(),
                cubes: None,
                started: false,
                after: None,
                done: false,
            })
        });
        Ok(Arc::new(ScanExec::new(
            "events",
            detail,
            schema,
            q.snapshot.clone(),
            factory,
            q.cfg.batch_size,
        )))
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
        Column {
            name: "seq",
            ty: DataType::Int64,
            get: |r| Cell::I64(r.seq as i64),
        },
        Column {
            name: "source",
            ty: DataType::Utf8,
            get: |r| Cell::Str(&r.dl.source),
        },
        Column {
            name: "position",
            ty: DataType::Utf8,
            get: |r| opt(&r.dl.position),
        },
        Column {
            name: "reason",
            ty: DataType::Utf8,
            get: |r| Cell::Str(&r.dl.reason),
        },
        Column {
            name: "payload",
            ty: DataType::Utf8,
            get: |r| Cell::String(String::from_utf8_lossy(&r.dl.payload).into_owned()),
        },
        Column {
            name: "payload_bytes",
            ty: DataType::Int64,
            get: |r| Cell::I64(r.dl.payload.len() as i64),
        },
        Column {
            name: "at",
            ty: ts(),
            get: |r| Cell::Micros(r.dl.at),
        },
    ]
});

/// `dead_letters`: inputs that could not be processed, with their reason. Store-wide (a dead
/// letter may not even name a cube), so only unscoped callers see rows.
#[derive(Debug)]
pub struct DeadLettersTable {
    store: Arc<Store>,
    schema: SchemaRef,
}

impl DeadLettersTable {
    /// The table over `store`.
    pub fn new(store: Arc<Store>) -> DeadLettersTable {
        DeadLettersTable {
            schema: schema_of(&DEAD_COLUMNS),
            store,
        }
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

#[async_trait]
impl TableProvider for DeadLettersTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let q = query_ctx(state)?;
        let schema = projected_schema(&self.schema, projection)?;
        let cols = project(&DEAD_COLUMNS, projection);
        let visible = q.session.scope.system;
        let store = self.store.clone();
        let schema2 = schema.clone();
        let factory: SourceFactory = Arc::new(move || {
            Box::new(DeadSource {
                store: store.clone(),
                visible,
                next: 0,
                schema: schema2.clone(),
                cols: cols.clone(),
            })
        });
        let detail = if visible {
            ""
        } else {
            "hidden from scoped keys"
        };
        Ok(Arc::new(ScanExec::new(
            "dead_letters",
            detail.into(),
            schema,
            q.snapshot.clone(),
            factory,
            q.cfg.batch_size,
        )))
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
        Column {
            name: "cube_id",
            ty: DataType::Utf8,
            get: |r| Cell::Str(&r.info.cube_id),
        },
        Column {
            name: "name",
            ty: DataType::Utf8,
            get: |r| Cell::Str(&r.info.name),
        },
        Column {
            name: "owner_id",
            ty: DataType::Utf8,
            get: |r| Cell::Str(&r.info.owner_id),
        },
        Column {
            name: "kind",
            ty: DataType::Utf8,
            get: |r| Cell::Str(&r.info.kind),
        },
        Column {
            name: "description",
            ty: DataType::Utf8,
            get: |r| Cell::Str(&r.info.description),
        },
        Column {
            name: "created_at",
            ty: ts(),
            get: |r| Cell::Micros(r.info.created_at),
        },
        Column {
            name: "memories",
            ty: DataType::Int64,
            get: |r| Cell::I64(r.memories as i64),
        },
    ]
});

/// `cubes`: every cube (and knowledge base) the caller may see, with its memory count.
#[derive(Debug)]
pub struct CubesTable {
    store: Arc<Store>,
    schema: SchemaRef,
}

impl CubesTable {
    /// The table over `store`.
    pub fn new(store: Arc<Store>) -> CubesTable {
        CubesTable {
            schema: schema_of(&CUBE_COLUMNS),
            store,
        }
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
                let memories = self.store.cube_ids(txn, &cube)?.len();
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

#[async_trait]
impl TableProvider for CubesTable {
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
        Ok(pushdown(filters, &["cube_id"], &[]))
    }

    async fn scan(
        &self,
        state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let q = query_ctx(state)?;
        let sel = Selection::from_filters(filters, "", false);
        let schema = projected_schema(&self.schema, projection)?;
        let cols = project(&CUBE_COLUMNS, projection);
        let detail = describe(&sel.describe(), None);
        let (store, scope) = (self.store.clone(), q.session.scope.clone());
        let schema2 = schema.clone();
        let factory: SourceFactory = Arc::new(move || {
            Box::new(CubeSource {
                store: store.clone(),
                scope: scope.clone(),
                only: sel.cubes.clone(),
                schema: schema2.clone(),
                cols: cols.clone(),
                done: false,
            })
        });
        Ok(Arc::new(ScanExec::new(
            "cubes",
            detail,
            schema,
            q.snapshot.clone(),
            factory,
            q.cfg.batch_size,
        )))
    }
}
