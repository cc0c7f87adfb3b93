//! Prometheus metrics (prometheus 0.14), served on their own port (`metrics_addr`,
//! `MEMOS_METRICS_ADDR`, default `127.0.0.1:9464`).
//!
//! Every metric name is in [`names`]. Labels are fixed and low-cardinality (source, outcome,
//! route, method, status, interface, memory_type) — never user, session, cube or memory ids.
//! Counters and histograms are updated where the work happens; store gauges (memories by type
//! and status, disk bytes, dead letters) and task gauges are read when scraped.

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Metric names, in one place.
pub mod names {
    /// Events handled by the pipeline, by `source` and `outcome`
    /// (stored, duplicate, dead_lettered, failed).
    pub const EVENTS: &str = "memos_events_total";
    /// Events decoded by the pipeline, by `source` and `kind` (messages, tool_call, document,
    /// feedback, delete, invalid).
    pub const EVENTS_RECEIVED: &str = "memos_events_received_total";
    /// Pipeline batch latency (operators + commit), seconds.
    pub const BATCH_SECONDS: &str = "memos_pipeline_batch_duration_seconds";
    /// Events per pipeline batch.
    pub const BATCH_EVENTS: &str = "memos_pipeline_batch_events";
    /// Operator latency per batch, by `operator` (window, extract, embed, dedupe), seconds.
    pub const OPERATOR_SECONDS: &str = "memos_operator_batch_duration_seconds";
    /// Items into and out of each operator, by `operator` and `direction` (in, out).
    pub const OPERATOR_ITEMS: &str = "memos_operator_items_total";
    /// Texts per embedder call.
    pub const EMBED_BATCH: &str = "memos_embedder_batch_size";
    /// LMDB commit latency of a pipeline batch, seconds.
    pub const COMMIT_SECONDS: &str = "memos_store_commit_duration_seconds";
    /// Write transactions committed, by `path` (batch, dead_letter, fine, kv_cache, delete,
    /// update, soft_delete, recover, knowledge_base, cube, api_key, import).
    pub const COMMITS: &str = "memos_store_commits_total";
    /// Memories written by the pipeline, by `kind` (inserted, merged, feedback).
    pub const MEMORIES_WRITTEN: &str = "memos_pipeline_memories_written_total";
    /// Feedback processed by the feedback-merge stage, by `intent` (replace, set, retract,
    /// forget, supplement).
    pub const FEEDBACK: &str = "memos_feedback_total";
    /// Memories forgotten by capacity limits, by `memory_type`.
    pub const FORGOTTEN: &str = "memos_memories_forgotten_total";
    /// LLM requests by `model` (configured name) and `outcome` (ok, error).
    pub const LLM_REQUESTS: &str = "memos_llm_requests_total";
    /// LLM tokens by `model` and `kind` (prompt, completion), as the server reported them.
    pub const LLM_TOKENS: &str = "memos_llm_tokens_total";
    /// LLM request latency by `model`, seconds (a stream: until its last token).
    pub const LLM_SECONDS: &str = "memos_llm_request_duration_seconds";
    /// Chat requests by `interface` (complete, stream, cloud) and `outcome`.
    pub const CHATS: &str = "memos_chat_requests_total";
    /// Fine-extraction jobs by `outcome` (ok, failed, dropped).
    pub const FINE_JOBS: &str = "memos_fine_jobs_total";
    /// Activation-memory KV-cache builds by `outcome` (built, unchanged, cleared, stale: the
    /// selection changed during the build and it was requeued, failed).
    pub const KV_BUILDS: &str = "memos_kv_cache_builds_total";
    /// Prefill latency of a KV-cache build, by `device` (cpu, cuda), seconds.
    pub const KV_PREFILL_SECONDS: &str = "memos_kv_cache_prefill_duration_seconds";
    /// Tokens prefilled by the local model, by `use` (cache, chat).
    pub const KV_TOKENS: &str = "memos_kv_prefill_tokens_total";
    /// HTTP requests by `route` (the matched path), `method` and `status`.
    pub const HTTP_REQUESTS: &str = "memos_http_requests_total";
    /// HTTP request latency by `route`, seconds.
    pub const HTTP_SECONDS: &str = "memos_http_request_duration_seconds";
    /// SQL statements by `interface` (http, postgres) and `outcome` (ok, error).
    pub const SQL_QUERIES: &str = "memos_sql_queries_total";
    /// SQL statement latency by `interface`, seconds.
    pub const SQL_SECONDS: &str = "memos_sql_query_duration_seconds";
    /// Searches by `interface` (rest, cloud, bus) and `outcome` (ok, error).
    pub const SEARCHES: &str = "memos_searches_total";
    /// Search latency by `interface`, seconds (query embedding included).
    pub const SEARCH_SECONDS: &str = "memos_search_duration_seconds";
    /// Memories returned per search (all buckets and cubes), by `interface`.
    pub const SEARCH_RESULTS: &str = "memos_search_results";
    /// Messages waiting in the broker per `source` and `partition` (Kafka partition of the
    /// events topic; the JetStream durable consumer).
    pub const CONSUMER_LAG: &str = "memos_consumer_lag_messages";
    /// 1 while a configured source (`source`: kafka, nats) is connected, else 0.
    pub const SOURCE_CONNECTED: &str = "memos_source_connected";
    /// Memories in the store by `memory_type` and `status`.
    pub const MEMORIES: &str = "memos_memories";
    /// Bytes of the LMDB file.
    pub const STORE_BYTES: &str = "memos_store_disk_bytes";
    /// Dead letters kept in the store.
    pub const DEAD_LETTERS: &str = "memos_dead_letters";
    /// Asynchronous add/feedback tasks waiting or running.
    pub const TASKS_ACTIVE: &str = "memos_tasks_active";
    /// 1 while the pipeline thread runs, 0 while it is down (restarting).
    pub const PIPELINE_UP: &str = "memos_pipeline_up";
    /// Restarts of the pipeline thread after a failure outside the per-event isolation.
    pub const PIPELINE_RESTARTS: &str = "memos_pipeline_restarts_total";

    /// Every name above (dashboards and alert rules are checked against it).
    pub const ALL: &[&str] = &[
        EVENTS,
        EVENTS_RECEIVED,
        OPERATOR_SECONDS,
        OPERATOR_ITEMS,
        EMBED_BATCH,
        COMMIT_SECONDS,
        COMMITS,
        BATCH_SECONDS,
        BATCH_EVENTS,
        MEMORIES_WRITTEN,
        FEEDBACK,
        FORGOTTEN,
        LLM_REQUESTS,
        LLM_TOKENS,
        LLM_SECONDS,
        CHATS,
        FINE_JOBS,
        KV_BUILDS,
        KV_PREFILL_SECONDS,
        KV_TOKENS,
        HTTP_REQUESTS,
        HTTP_SECONDS,
        SQL_QUERIES,
        SQL_SECONDS,
        SEARCHES,
        SEARCH_SECONDS,
        SEARCH_RESULTS,
        CONSUMER_LAG,
        SOURCE_CONNECTED,
        MEMORIES,
        STORE_BYTES,
        DEAD_LETTERS,
        TASKS_ACTIVE,
        PIPELINE_UP,
        PIPELINE_RESTARTS,
    ];

    /// Each metric's help text, as `/metrics` shows it.
    pub const HELP: &[(&str, &str)] = &[
        (
            EVENTS,
            "Events handled by the pipeline, by source and outcome.",
        ),
        (
            EVENTS_RECEIVED,
            "Events decoded by the pipeline, by source and kind.",
        ),
        (
            BATCH_SECONDS,
            "Pipeline batch latency: operators and the LMDB commit.",
        ),
        (BATCH_EVENTS, "Events per pipeline batch."),
        (OPERATOR_SECONDS, "Operator latency per batch."),
        (OPERATOR_ITEMS, "Items into and out of each operator."),
        (EMBED_BATCH, "Texts per embedder call."),
        (COMMIT_SECONDS, "LMDB commit latency of a pipeline batch."),
        (COMMITS, "Write transactions committed, by kind of work."),
        (
            MEMORIES_WRITTEN,
            "Memories written by the pipeline (inserted, merged, feedback).",
        ),
        (
            LLM_REQUESTS,
            "LLM requests by configured model and outcome.",
        ),
        (
            LLM_TOKENS,
            "LLM tokens by configured model and kind (prompt, completion).",
        ),
        (LLM_SECONDS, "LLM request latency by configured model."),
        (FINE_JOBS, "Fine-extraction jobs by outcome (ok, failed)."),
        (
            KV_BUILDS,
            "Activation-memory KV-cache builds by outcome (built, unchanged, cleared, stale, failed).",
        ),
        (
            KV_PREFILL_SECONDS,
            "Prefill latency of a KV-cache build by device.",
        ),
        (
            KV_TOKENS,
            "Tokens prefilled by the local model by use (cache, chat).",
        ),
        (CHATS, "Chat requests by interface and outcome."),
        (
            FEEDBACK,
            "Feedback processed by the feedback-merge stage, by intent.",
        ),
        (
            FORGOTTEN,
            "Memories forgotten by capacity limits, by memory type.",
        ),
        (
            HTTP_REQUESTS,
            "HTTP requests by matched route, method and status.",
        ),
        (HTTP_SECONDS, "HTTP request latency by matched route."),
        (SQL_QUERIES, "SQL statements by interface and outcome."),
        (SQL_SECONDS, "SQL statement latency by interface."),
        (SEARCHES, "Searches by interface and outcome."),
        (
            SEARCH_SECONDS,
            "Search latency by interface, query embedding included.",
        ),
        (
            SEARCH_RESULTS,
            "Memories returned per search, all buckets and cubes.",
        ),
        (
            CONSUMER_LAG,
            "Messages waiting in the broker per source partition.",
        ),
        (
            SOURCE_CONNECTED,
            "1 while a configured source is connected.",
        ),
        (STORE_BYTES, "Bytes of the LMDB data file."),
        (DEAD_LETTERS, "Dead letters kept in the store."),
        (TASKS_ACTIVE, "Asynchronous tasks waiting or running."),
        (
            PIPELINE_UP,
            "1 while the pipeline thread runs, 0 while it is down and restarting.",
        ),
        (MEMORIES, "Memories in the store by type and status."),
        (
            PIPELINE_RESTARTS,
            "Restarts of the pipeline thread after a failure outside the per-event isolation.",
        ),
    ];

    /// The help text of `name` (empty for a name not in [`HELP`]).
    pub fn help(name: &str) -> &'static str {
        HELP.iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, h)| *h)
    }
}

/// The service's metrics.
pub struct Metrics {
    registry: Registry,
    /// [`names::EVENTS`].
    pub events: IntCounterVec,
    /// [`names::EVENTS_RECEIVED`].
    pub events_received: IntCounterVec,
    /// [`names::BATCH_SECONDS`].
    pub batch_seconds: Histogram,
    /// [`names::BATCH_EVENTS`].
    pub batch_events: Histogram,
    /// [`names::OPERATOR_SECONDS`].
    pub operator_seconds: HistogramVec,
    /// [`names::OPERATOR_ITEMS`].
    pub operator_items: IntCounterVec,
    /// [`names::EMBED_BATCH`].
    pub embed_batch: Histogram,
    /// [`names::COMMIT_SECONDS`].
    pub commit_seconds: Histogram,
    /// [`names::COMMITS`].
    pub commits: IntCounterVec,
    /// [`names::MEMORIES_WRITTEN`].
    pub memories_written: IntCounterVec,
    /// [`names::FEEDBACK`].
    pub feedback: IntCounterVec,
    /// [`names::LLM_REQUESTS`].
    pub llm_requests: IntCounterVec,
    /// [`names::LLM_TOKENS`].
    pub llm_tokens: IntCounterVec,
    /// [`names::LLM_SECONDS`].
    pub llm_seconds: HistogramVec,
    /// [`names::CHATS`].
    pub chats: IntCounterVec,
    /// [`names::FINE_JOBS`].
    pub fine_jobs: IntCounterVec,
    /// [`names::KV_BUILDS`].
    pub kv_builds: IntCounterVec,
    /// [`names::KV_PREFILL_SECONDS`].
    pub kv_prefill_seconds: HistogramVec,
    /// [`names::KV_TOKENS`].
    pub kv_tokens: IntCounterVec,
    /// [`names::FORGOTTEN`].
    pub forgotten: IntCounterVec,
    /// [`names::HTTP_REQUESTS`].
    pub http_requests: IntCounterVec,
    /// [`names::HTTP_SECONDS`].
    pub http_seconds: HistogramVec,
    /// [`names::SQL_QUERIES`].
    pub sql_queries: IntCounterVec,
    /// [`names::SQL_SECONDS`].
    pub sql_seconds: HistogramVec,
    /// [`names::SEARCHES`].
    pub searches: IntCounterVec,
    /// [`names::SEARCH_SECONDS`].
    pub search_seconds: HistogramVec,
    /// [`names::SEARCH_RESULTS`].
    pub search_results: HistogramVec,
    /// [`names::CONSUMER_LAG`].
    pub consumer_lag: IntGaugeVec,
    /// [`names::SOURCE_CONNECTED`].
    pub source_connected: IntGaugeVec,
    /// [`names::MEMORIES`].
    pub memories: IntGaugeVec,
    /// [`names::STORE_BYTES`].
    pub store_bytes: IntGauge,
    /// [`names::DEAD_LETTERS`].
    pub dead_letters: IntGauge,
    /// [`names::TASKS_ACTIVE`].
    pub tasks_active: IntGauge,
    /// [`names::PIPELINE_UP`].
    pub pipeline_up: IntGauge,
    /// [`names::PIPELINE_RESTARTS`].
    pub pipeline_restarts: IntCounter,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
const LLM_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];
const PREFILL_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
const RESULT_BUCKETS: &[f64] = &[0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0];

/// Registers metrics in a registry; each one's help text comes from [`names::HELP`].
struct Registrar(Registry);

impl Registrar {
    fn add<M: prometheus::core::Collector + Clone + 'static>(&self, m: M) -> M {
        self.0.register(Box::new(m.clone())).expect("unique metric");
        m
    }

    fn counter(&self, name: &str, labels: &[&str]) -> IntCounterVec {
        self.add(
            IntCounterVec::new(Opts::new(name, names::help(name)), labels).expect("valid metric"),
        )
    }

    fn plain_counter(&self, name: &str) -> IntCounter {
        self.add(IntCounter::new(name, names::help(name)).expect("valid metric"))
    }

    fn histogram(&self, name: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
        let opts = HistogramOpts::new(name, names::help(name)).buckets(buckets.to_vec());
        self.add(HistogramVec::new(opts, labels).expect("valid metric"))
    }

    fn plain_histogram(&self, name: &str, buckets: &[f64]) -> Histogram {
        let opts = HistogramOpts::new(name, names::help(name)).buckets(buckets.to_vec());
        self.add(Histogram::with_opts(opts).expect("valid metric"))
    }

    fn gauge_vec(&self, name: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(
            IntGaugeVec::new(Opts::new(name, names::help(name)), labels).expect("valid metric"),
        )
    }

    fn gauge(&self, name: &str) -> IntGauge {
        self.add(IntGauge::new(name, names::help(name)).expect("valid metric"))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Metrics {
        let m = Registrar(Registry::new());
        Metrics {
            events: m.counter(names::EVENTS, &["source", "outcome"]),
            events_received: m.counter(names::EVENTS_RECEIVED, &["source", "kind"]),
            batch_seconds: m.plain_histogram(names::BATCH_SECONDS, LATENCY_BUCKETS),
            batch_events: m.plain_histogram(names::BATCH_EVENTS, SIZE_BUCKETS),
            operator_seconds: m.histogram(names::OPERATOR_SECONDS, &["operator"], LATENCY_BUCKETS),
            operator_items: m.counter(names::OPERATOR_ITEMS, &["operator", "direction"]),
            embed_batch: m.plain_histogram(names::EMBED_BATCH, SIZE_BUCKETS),
            commit_seconds: m.plain_histogram(names::COMMIT_SECONDS, LATENCY_BUCKETS),
            commits: m.counter(names::COMMITS, &["path"]),
            memories_written: m.counter(names::MEMORIES_WRITTEN, &["kind"]),
            llm_requests: m.counter(names::LLM_REQUESTS, &["model", "outcome"]),
            llm_tokens: m.counter(names::LLM_TOKENS, &["model", "kind"]),
            llm_seconds: m.histogram(names::LLM_SECONDS, &["model"], LLM_BUCKETS),
            fine_jobs: m.counter(names::FINE_JOBS, &["outcome"]),
            kv_builds: m.counter(names::KV_BUILDS, &["outcome"]),
            kv_prefill_seconds: m.histogram(
                names::KV_PREFILL_SECONDS,
                &["device"],
                PREFILL_BUCKETS,
            ),
            kv_tokens: m.counter(names::KV_TOKENS, &["use"]),
            chats: m.counter(names::CHATS, &["interface", "outcome"]),
            feedback: m.counter(names::FEEDBACK, &["intent"]),
            forgotten: m.counter(names::FORGOTTEN, &["memory_type"]),
            http_requests: m.counter(names::HTTP_REQUESTS, &["route", "method", "status"]),
            http_seconds: m.histogram(names::HTTP_SECONDS, &["route"], LATENCY_BUCKETS),
            sql_queries: m.counter(names::SQL_QUERIES, &["interface", "outcome"]),
            sql_seconds: m.histogram(names::SQL_SECONDS, &["interface"], LATENCY_BUCKETS),
            searches: m.counter(names::SEARCHES, &["interface", "outcome"]),
            search_seconds: m.histogram(names::SEARCH_SECONDS, &["interface"], LATENCY_BUCKETS),
            search_results: m.histogram(names::SEARCH_RESULTS, &["interface"], RESULT_BUCKETS),
            consumer_lag: m.gauge_vec(names::CONSUMER_LAG, &["source", "partition"]),
            source_connected: m.gauge_vec(names::SOURCE_CONNECTED, &["source"]),
            store_bytes: m.gauge(names::STORE_BYTES),
            dead_letters: m.gauge(names::DEAD_LETTERS),
            tasks_active: m.gauge(names::TASKS_ACTIVE),
            pipeline_up: m.gauge(names::PIPELINE_UP),
            memories: m.gauge_vec(names::MEMORIES, &["memory_type", "status"]),
            pipeline_restarts: m.plain_counter(names::PIPELINE_RESTARTS),
            registry: m.0,
        }
    }

    /// Records one SQL statement.
    pub fn sql(&self, interface: &str, elapsed: Duration, ok: bool) {
        self.sql_queries
            .with_label_values(&[interface, if ok { "ok" } else { "error" }])
            .inc();
        self.sql_seconds
            .with_label_values(&[interface])
            .observe(elapsed.as_secs_f64());
    }

    /// Marks a configured source connected or not.
    pub fn set_source(&self, source: &str, up: bool) {
        self.source_connected
            .with_label_values(&[source])
            .set(up as i64);
    }

    /// Configured sources and whether each is connected (read from
    /// [`names::SOURCE_CONNECTED`]).
    pub fn sources(&self) -> Vec<(String, bool)> {
        use prometheus::core::Collector;
        let mut out: Vec<(String, bool)> = self
            .source_connected
            .collect()
            .iter()
            .flat_map(|f| f.get_metric())
            .map(|m| {
                let source = m
                    .get_label()
                    .iter()
                    .find(|l| l.name() == "source")
                    .map(|l| l.value().to_string())
                    .unwrap_or_default();
                (source, m.get_gauge().get_value() > 0.0)
            })
            .collect();
        out.sort();
        out
    }

    /// Records one search and how many memories it returned.
    pub fn search(&self, interface: &str, elapsed: Duration, results: Option<usize>) {
        self.searches
            .with_label_values(&[interface, if results.is_some() { "ok" } else { "error" }])
            .inc();
        self.search_seconds
            .with_label_values(&[interface])
            .observe(elapsed.as_secs_f64());
        if let Some(n) = results {
            self.search_results
                .with_label_values(&[interface])
                .observe(n as f64);
        }
    }

    /// The text exposition format of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl operators::llm::LlmObserver for Metrics {
    fn observe(&self, model: &str, outcome: &str, seconds: f64, usage: &operators::llm::Usage) {
        self.llm_requests.with_label_values(&[model, outcome]).inc();
        self.llm_seconds
            .with_label_values(&[model])
            .observe(seconds);
        self.llm_tokens
            .with_label_values(&[model, "prompt"])
            .inc_by(usage.prompt_tokens);
        self.llm_tokens
            .with_label_values(&[model, "completion"])
            .inc_by(usage.completion_tokens);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_has_one_help_text_and_renders_it() {
        for name in names::ALL {
            let n = names::HELP.iter().filter(|(h, _)| h == name).count();
            assert_eq!(n, 1, "{name} has {n} help texts");
        }
        assert_eq!(names::HELP.len(), names::ALL.len());
        let m = Metrics::new();
        m.pipeline_up.set(1);
        let text = m.render();
        assert!(
            text.contains(&format!(
                "# HELP {} {}",
                names::PIPELINE_UP,
                names::help(names::PIPELINE_UP)
            )),
            "{text}"
        );
    }
}
