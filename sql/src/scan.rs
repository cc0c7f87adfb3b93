//! The one execution plan every store table uses: a lazy, single-partition scan that asks its
//! table's [`Source`] for one batch of rows at a time, under the query's snapshot, and builds
//! only the projected columns. Counts `rows_scanned` (records decoded) and `cubes_scanned` so
//! `EXPLAIN ANALYZE` shows what a filter saved.

use std::fmt;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, FixedSizeListBuilder, Float32Builder, Int64Builder, ListBuilder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use store::heed::{RoTxn, WithoutTls};

use crate::SqlError;

/// The query's snapshot: one LMDB read transaction shared by every scan of the query.
pub struct Snapshot {
    txn: Mutex<RoTxn<'static, WithoutTls>>,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Snapshot")
    }
}

impl Snapshot {
    /// Wraps a read transaction.
    pub fn new(txn: RoTxn<'static, WithoutTls>) -> Snapshot {
        Snapshot {
            txn: Mutex::new(txn),
        }
    }

    /// Runs `f` with the transaction (one batch at a time; LMDB read transactions may move
    /// between threads but not be used by two at once).
    pub fn with<T>(&self, f: impl FnOnce(&RoTxn<'static, WithoutTls>) -> T) -> T {
        let guard = self.txn.lock().unwrap_or_else(|p| p.into_inner());
        f(&guard)
    }
}

/// One table cell, borrowed from the decoded row where possible.
pub enum Cell<'a> {
    /// SQL NULL.
    Null,
    /// Text.
    Str(&'a str),
    /// Owned text.
    String(String),
    /// Integer.
    I64(i64),
    /// Float.
    F32(f32),
    /// Boolean.
    Bool(bool),
    /// Timestamp, unix micros.
    Micros(i64),
    /// List of text.
    List(&'a [String]),
    /// Vector.
    Vector(&'a [f32]),
}

/// A column of a table whose rows are `R`.
pub struct Column<R> {
    /// Name.
    pub name: &'static str,
    /// Arrow type.
    pub ty: DataType,
    /// Reads the cell of a row.
    pub get: fn(&R) -> Cell<'_>,
}

/// An optional text cell.
pub fn opt(s: &Option<String>) -> Cell<'_> {
    s.as_deref().map(Cell::Str).unwrap_or(Cell::Null)
}

/// A value as JSON text.
pub fn json(v: &impl serde::Serialize) -> Cell<'static> {
    Cell::String(serde_json::to_string(v).unwrap_or_default())
}

/// A memory's `info` as JSON text (`{}` when empty).
pub fn info(m: &serde_json::Map<String, serde_json::Value>) -> Cell<'static> {
    if m.is_empty() {
        Cell::Str("{}")
    } else {
        json(m)
    }
}

/// A column (shorthand for the table definitions).
pub fn col<R>(name: &'static str, ty: DataType, get: fn(&R) -> Cell<'_>) -> Column<R> {
    Column { name, ty, get }
}

impl<R> fmt::Debug for Column<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// Arrow timestamp type used by every time column (UTC, micros).
pub fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// List-of-text type.
pub fn text_list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

/// Embedding type.
pub fn vector(dims: usize) -> DataType {
    DataType::FixedSizeList(
        Arc::new(Field::new("item", DataType::Float32, true)),
        dims as i32,
    )
}

/// The schema of a column list (every column nullable: cells may be NULL).
pub fn schema_of<R>(cols: &[Column<R>]) -> SchemaRef {
    Arc::new(Schema::new(
        cols.iter()
            .map(|c| Field::new(c.name, c.ty.clone(), true))
            .collect::<Vec<_>>(),
    ))
}

/// Builds a batch of the projected columns from decoded rows.
pub fn build_batch<R>(
    schema: &SchemaRef,
    cols: &[&Column<R>],
    rows: &[R],
) -> DfResult<RecordBatch> {
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(cols.len());
    for c in cols {
        arrays.push(build_array(&c.ty, rows.iter().map(|r| (c.get)(r)))?);
    }
    let opts = RecordBatchOptions::new().with_row_count(Some(rows.len()));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        arrays,
        &opts,
    )?)
}

fn mismatch(ty: &DataType) -> DataFusionError {
    DataFusionError::Internal(format!("cell does not match column type {ty}"))
}

/// Builds one array of type `ty` from cells.
pub fn build_array<'a>(ty: &DataType, cells: impl Iterator<Item = Cell<'a>>) -> DfResult<ArrayRef> {
    Ok(match ty {
        DataType::Utf8 => {
            let mut b = StringBuilder::new();
            for c in cells {
                match c {
                    Cell::Null => b.append_null(),
                    Cell::Str(s) => b.append_value(s),
                    Cell::String(s) => b.append_value(s),
                    _ => return Err(mismatch(ty)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Int64 => {
            let mut b = Int64Builder::new();
            for c in cells {
                match c {
                    Cell::Null => b.append_null(),
                    Cell::I64(v) => b.append_value(v),
                    _ => return Err(mismatch(ty)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Float32 => {
            let mut b = Float32Builder::new();
            for c in cells {
                match c {
                    Cell::Null => b.append_null(),
                    Cell::F32(v) => b.append_value(v),
                    _ => return Err(mismatch(ty)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Boolean => {
            let mut b = BooleanBuilder::new();
            for c in cells {
                match c {
                    Cell::Null => b.append_null(),
                    Cell::Bool(v) => b.append_value(v),
                    _ => return Err(mismatch(ty)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            let mut b = TimestampMicrosecondBuilder::new().with_timezone_opt(tz.clone());
            for c in cells {
                match c {
                    Cell::Null => b.append_null(),
                    Cell::Micros(v) => b.append_value(v),
                    _ => return Err(mismatch(ty)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::List(_) => {
            let mut b = ListBuilder::new(StringBuilder::new());
            for c in cells {
                match c {
                    Cell::Null => b.append_null(),
                    Cell::List(items) => {
                        for i in items {
                            b.values().append_value(i);
                        }
                        b.append(true);
                    }
                    _ => return Err(mismatch(ty)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::FixedSizeList(_, n) => {
            let n = *n as usize;
            let mut b = FixedSizeListBuilder::new(Float32Builder::new(), n as i32);
            for c in cells {
                match c {
                    Cell::Vector(v) if v.len() == n => {
                        b.values().append_slice(v);
                        b.append(true);
                    }
                    Cell::Null | Cell::Vector(_) => {
                        for _ in 0..n {
                            b.values().append_null();
                        }
                        b.append(false);
                    }
                    _ => return Err(mismatch(ty)),
                }
            }
            Arc::new(b.finish())
        }
        other => {
            return Err(DataFusionError::Internal(format!(
                "unsupported column type {other}"
            )));
        }
    })
}

/// Counters a source updates while it reads.
pub struct ScanCounters {
    /// Records (or entries) decoded from LMDB.
    pub rows_scanned: Count,
    /// Cubes visited.
    pub cubes_scanned: Count,
}

/// Produces a table's rows batch by batch.
pub trait Source: Send {
    /// Reads the next batch (at most `batch_size` rows) under `txn`; `None` when done.
    fn next_batch(
        &mut self,
        txn: &RoTxn<'static, WithoutTls>,
        batch_size: usize,
        counters: &ScanCounters,
    ) -> Result<Option<RecordBatch>, SqlError>;
}

/// Builds a fresh [`Source`] each time the plan is executed.
pub type SourceFactory = Arc<dyn Fn() -> Box<dyn Source> + Send + Sync>;

/// A lazy scan of one store table.
pub struct ScanExec {
    table: &'static str,
    detail: String,
    schema: SchemaRef,
    snapshot: Arc<Snapshot>,
    factory: SourceFactory,
    batch_size: usize,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl fmt::Debug for ScanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScanExec({})", self.table)
    }
}

impl ScanExec {
    /// A scan of `table` producing `schema` (already projected).
    pub fn new(
        table: &'static str,
        detail: String,
        schema: SchemaRef,
        snapshot: Arc<Snapshot>,
        factory: SourceFactory,
        batch_size: usize,
    ) -> ScanExec {
        let props = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        ScanExec {
            table,
            detail,
            schema,
            snapshot,
            factory,
            batch_size,
            props: Arc::new(props),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for ScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "StoreScan: table={}", self.table)?;
        if !self.detail.is_empty() {
            write!(f, ", {}", self.detail)?;
        }
        Ok(())
    }
}

impl ExecutionPlan for ScanExec {
    fn name(&self) -> &str {
        "StoreScan"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let counters = ScanCounters {
            rows_scanned: MetricBuilder::new(&self.metrics).counter("rows_scanned", partition),
            cubes_scanned: MetricBuilder::new(&self.metrics).counter("cubes_scanned", partition),
        };
        let source = (self.factory)();
        let snapshot = self.snapshot.clone();
        let batch_size = self.batch_size;
        let stream = futures::stream::unfold((true, source), move |(alive, mut source)| {
            let snapshot = snapshot.clone();
            let baseline = baseline.clone();
            let counters = ScanCounters {
                rows_scanned: counters.rows_scanned.clone(),
                cubes_scanned: counters.cubes_scanned.clone(),
            };
            async move {
                if !alive {
                    return None;
                }
                let timer = baseline.elapsed_compute().timer();
                let r = snapshot.with(|txn| source.next_batch(txn, batch_size, &counters));
                timer.done();
                match r {
                    Ok(Some(b)) => {
                        baseline.record_output(b.num_rows());
                        Some((Ok(b), (true, source)))
                    }
                    Ok(None) => {
                        baseline.done();
                        None
                    }
                    Err(e) => Some((Err(DataFusionError::External(Box::new(e))), (false, source))),
                }
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}
