//! The SQL engine: one DataFusion session state with the store's tables and functions
//! registered once; each query gets its own snapshot, scope, memory pool and deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ParamValues;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::dataframe::DataFrame;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::{LogicalPlan, ScalarUDF};
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use store::Store;

use crate::functions::{Cosine, EmbedUdf, Kind, SearchFunction};
use crate::scan::Snapshot;
use crate::tables::{
    Cubes, DeadLetters, Events, History, Memories, QueryCtx, StoreTable, TableDef,
};
use crate::{Embed, Result, Session, SqlConfig, SqlError};

/// A query's result.
#[derive(Debug, Clone)]
pub struct QueryOutput {
    /// Result schema.
    pub schema: SchemaRef,
    /// Result batches.
    pub batches: Vec<RecordBatch>,
    /// Total rows.
    pub rows: usize,
    /// Wall time.
    pub elapsed: Duration,
}

/// The engine (cheap to share behind an `Arc`).
pub struct Engine {
    store: Arc<Store>,
    cfg: SqlConfig,
    embed: Arc<dyn Embed>,
    base: SessionState,
}

/// The tables every query sees.
pub const TABLES: [&str; 5] = [
    "memories",
    "memory_history",
    "events",
    "dead_letters",
    "cubes",
];

impl Engine {
    /// Registers the tables and functions over `store`; `max_top_k` bounds `k` in the search
    /// functions.
    pub fn new(
        store: Arc<Store>,
        cfg: SqlConfig,
        embed: Arc<dyn Embed>,
        max_top_k: usize,
    ) -> Result<Engine> {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_batch_size(cfg.batch_size.max(1))
            .with_target_partitions(num_cpus());
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .build();
        let ctx = SessionContext::new_with_state(state);
        register::<Memories>(&ctx, &store)?;
        register::<History>(&ctx, &store)?;
        register::<Events>(&ctx, &store)?;
        register::<DeadLetters>(&ctx, &store)?;
        register::<Cubes>(&ctx, &store)?;
        for kind in [Kind::Hybrid, Kind::Vector, Kind::Lexical] {
            let name = match kind {
                Kind::Hybrid => "search",
                Kind::Vector => "vector_search",
                Kind::Lexical => "bm25",
            };
            ctx.register_udtf(
                name,
                Arc::new(SearchFunction::new(kind, store.clone(), max_top_k)),
            );
        }
        ctx.register_udf(ScalarUDF::from(Cosine::default()));
        ctx.register_udf(ScalarUDF::from(EmbedUdf::new(
            embed.clone(),
            store.options().dimensions,
        )));
        Ok(Engine {
            store,
            cfg,
            embed,
            base: ctx.state(),
        })
    }

    /// The limits in force.
    pub fn config(&self) -> &SqlConfig {
        &self.cfg
    }

    fn state(&self, session: &Session) -> Result<SessionState> {
        let snapshot = Arc::new(Snapshot::new(self.store.snapshot()?));
        let qctx = QueryCtx {
            snapshot,
            session: session.clone(),
            cfg: self.cfg.clone(),
            embed: self.embed.clone(),
        };
        // The catalog (with the tables) is shared with the base state: building must not
        // create a fresh default catalog over it.
        let config = self
            .base
            .config()
            .clone()
            .with_create_default_catalog_and_schema(false)
            .with_extension(Arc::new(qctx));
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(GreedyMemoryPool::new(self.cfg.memory_limit_bytes)))
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()?;
        Ok(SessionStateBuilder::new_from_existing(self.base.clone())
            .with_config(config)
            .with_runtime_env(runtime)
            .build())
    }

    async fn plan(&self, state: &SessionState, sql: &str) -> Result<LogicalPlan> {
        if sql.len() > self.cfg.max_statement_bytes {
            return Err(SqlError::Invalid(format!(
                "statement is longer than {} bytes (sql.max_statement_bytes)",
                self.cfg.max_statement_bytes
            )));
        }
        if sql.trim().trim_end_matches(';').trim().is_empty() {
            return Err(SqlError::Invalid("empty statement".into()));
        }
        let plan = state.create_logical_plan(sql).await?;
        read_only(&plan)?;
        Ok(plan)
    }

    /// The result schema and parameter types of a statement, without running it.
    pub async fn describe(
        &self,
        sql: &str,
        session: &Session,
    ) -> Result<(SchemaRef, Vec<Option<DataType>>)> {
        let state = self.state(session)?;
        let plan = self.plan(&state, sql).await?;
        let types = plan.get_parameter_types()?;
        let mut params: Vec<(usize, Option<DataType>)> = types
            .into_iter()
            .filter_map(|(name, t)| {
                name.trim_start_matches('$')
                    .parse::<usize>()
                    .ok()
                    .map(|i| (i, t))
            })
            .collect();
        params.sort_by_key(|p| p.0);
        let n = params.last().map(|p| p.0).unwrap_or(0);
        let mut out = vec![None; n];
        for (i, t) in params {
            if i >= 1 {
                out[i - 1] = t;
            }
        }
        Ok((Arc::new(plan.schema().as_arrow().clone()), out))
    }

    /// Runs one read-only statement.
    pub async fn query(&self, sql: &str, session: &Session) -> Result<QueryOutput> {
        self.query_with_params(sql, Vec::new(), session).await
    }

    /// Runs one read-only statement with positional parameters (`$1`, `$2`…).
    pub async fn query_with_params(
        &self,
        sql: &str,
        params: Vec<ScalarValue>,
        session: &Session,
    ) -> Result<QueryOutput> {
        let started = Instant::now();
        let timeout = Duration::from_millis(self.cfg.timeout_ms);
        let work = async {
            let state = self.state(session)?;
            let mut plan = self.plan(&state, sql).await?;
            if !params.is_empty() {
                plan = plan.with_param_values(ParamValues::List(
                    params.into_iter().map(Into::into).collect(),
                ))?;
            }
            let df = DataFrame::new(state, plan);
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let mut stream = df.execute_stream().await?;
            let mut batches = Vec::new();
            let mut rows = 0usize;
            while let Some(b) = stream.next().await {
                let b = b?;
                rows += b.num_rows();
                if rows > self.cfg.max_rows {
                    return Err(SqlError::TooManyRows(self.cfg.max_rows));
                }
                batches.push(b);
            }
            Ok::<_, SqlError>((schema, batches, rows))
        };
        let (schema, batches, rows) = match tokio::time::timeout(timeout, work).await {
            Ok(r) => r.map_err(|e| self.classify(e))?,
            Err(_) => return Err(SqlError::Timeout(self.cfg.timeout_ms)),
        };
        Ok(QueryOutput {
            schema,
            batches,
            rows,
            elapsed: started.elapsed(),
        })
    }

    /// Turns DataFusion's "resources exhausted" into the memory-limit error.
    fn classify(&self, e: SqlError) -> SqlError {
        match e {
            SqlError::Execution(m) if is_oom(&m) => SqlError::MemoryLimit {
                limit: self.cfg.memory_limit_bytes,
                detail: m,
            },
            other => other,
        }
    }
}

fn register<D: TableDef>(ctx: &SessionContext, store: &Arc<Store>) -> Result<()> {
    ctx.register_table(D::NAME, Arc::new(StoreTable::<D>::new(store.clone())))?;
    Ok(())
}

fn is_oom(m: &str) -> bool {
    m.contains("Resources exhausted") || m.contains("ResourcesExhausted")
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Refuses anything but queries (DDL, DML, COPY, SET and transaction statements), anywhere in
/// the plan (EXPLAIN ANALYZE INSERT … included).
fn read_only(plan: &LogicalPlan) -> Result<()> {
    let mut refused: Option<String> = None;
    plan.apply_with_subqueries(|p| {
        let what = match p {
            LogicalPlan::Ddl(d) => Some(format!("DDL ({})", d.name())),
            LogicalPlan::Dml(d) => Some(format!(
                "{} on table {}",
                d.op.to_string().to_uppercase(),
                d.table_name
            )),
            LogicalPlan::Copy(_) => Some("COPY".to_string()),
            LogicalPlan::Statement(s) => Some(s.name().to_string()),
            _ => None,
        };
        match what {
            Some(w) => {
                refused = Some(w);
                Ok(TreeNodeRecursion::Stop)
            }
            None => Ok(TreeNodeRecursion::Continue),
        }
    })?;
    match refused {
        Some(w) => Err(SqlError::ReadOnly(format!(
            "memos SQL is read-only: {w} is not allowed (memories change through add, feedback \
             and delete)"
        ))),
        None => Ok(()),
    }
}
