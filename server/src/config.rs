//! Configuration: embedded defaults (`default.toml`), then `--config FILE`, then `MEMOS_*`
//! environment variables. Every struct denies unknown fields, so a typo is an error.

use std::path::{Path, PathBuf};

use operators::dedupe::DedupeConfig;
use operators::extract::ExtractConfig;
use operators::window::WindowConfig;
use serde::{Deserialize, Serialize};
use store::search::Fusion;

use pipelines::config::{EmbedderConfig, EngineConfig, MemoryConfig, PipelineConfig};

use crate::error::ServerError;

/// The embedded default configuration.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// Whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// LMDB data directory.
    pub data_dir: PathBuf,
    /// Model directory.
    pub model_dir: PathBuf,
    /// REST API address.
    pub http_addr: String,
    /// Prometheus `/metrics` address (`MEMOS_METRICS_ADDR`); empty disables it.
    pub metrics_addr: String,
    /// Most data the store holds, in MiB (LMDB map size less its reserve). When it is reached,
    /// adds answer 507 and broker events wait; reads and deletes keep working.
    pub map_size_mb: u64,
    /// On SIGTERM/SIGINT: how long the pipeline may take to finish its batch and fold the
    /// vector delta before the process exits anyway.
    pub shutdown_timeout_secs: u64,
    /// Fetch the model on first start.
    pub auto_fetch_model: bool,
    /// text | json.
    pub log_format: String,
    /// Embedder.
    pub embedder: EmbedderConfig,
    /// Pipeline runtime.
    pub pipeline: PipelineConfig,
    /// window stage.
    pub window: WindowConfig,
    /// extract stage.
    pub extract: ExtractConfig,
    /// dedupe stage.
    pub dedupe: DedupeConfig,
    /// feedback-merge stage.
    pub feedback: operators::feedback::FeedbackConfig,
    /// Capacity-based forgetting per memory type.
    pub memory: MemoryConfig,
    /// LLMs (OpenAI-compatible chat completions) for chat and fine extraction.
    pub llm: operators::llm::LlmConfig,
    /// Activation memory: KV caches of selected memories for the local model.
    pub activation: pipelines::activation::ActivationConfig,
    /// Search.
    pub search: SearchConfig,
    /// Request limits.
    pub limits: LimitsConfig,
    /// Files the server reads for a request (`doc_path`).
    pub documents: DocumentsConfig,
    /// `MEMOS_API_KEYS`: comma-separated `KEY` (every cube) or `KEY:CUBE+CUBE` (those cubes).
    pub api_keys: String,
    /// API keys, scopes and rate limits.
    pub auth: crate::auth::AuthConfig,
    /// Kafka source, search topics, dead letters (enabled by `brokers` / `MEMOS_KAFKA_BROKERS`).
    pub kafka: connectors::kafka::KafkaConfig,
    /// NATS source, search subject, dead letters (enabled by `url` / `MEMOS_NATS_URL`).
    pub nats: connectors::nats::NatsConfig,
    /// SQL: Postgres wire address (`MEMOS_PG_ADDR`), timeout, memory pool, row limit.
    pub sql: sql::SqlConfig,
}

/// Search settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchConfig {
    /// Fusion method.
    pub fusion: Fusion,
    /// Lexical candidates before fusion.
    pub pool: usize,
    /// Vector candidates before fusion.
    pub vector_pool: usize,
    /// Same-session boost.
    pub session_boost: f32,
    /// Largest accepted top_k.
    pub max_top_k: usize,
    /// Query time limit.
    pub timeout_ms: u64,
    /// arroy search_k multiplier.
    pub ann_oversampling: usize,
    /// RAM for the vector codes of all cubes (MiB); least recently used cubes are evicted.
    pub vector_memory_mb: usize,
    /// Candidate sets up to this size skip the sign-code step (int8 codes for all).
    pub exact_scan_below: usize,
    /// An HTTP reranker for `rerank` (none by default).
    #[serde(default)]
    pub rerank: RerankConfig,
    /// SearXNG for `internet_search` (none by default).
    #[serde(default)]
    pub internet: InternetConfig,
}

/// Files the server reads for a request: `doc_path`, and documents by URL.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentsConfig {
    /// The directory `doc_path` may name files under (resolved, links followed; a path
    /// outside it is a 400). Empty: `doc_path` is refused.
    pub doc_root: String,
    /// Largest file `doc_path` or a URL brings (a larger one is a 413).
    pub max_file_bytes: u64,
    /// Longest a document URL may take to fetch.
    pub fetch_timeout_ms: u64,
    /// Let document URLs reach loopback, private and link-local addresses (off: such a URL
    /// is a 400, so a request cannot make the server read its own network).
    pub allow_private_urls: bool,
}

/// Request limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest HTTP body.
    pub max_body_bytes: usize,
    /// Most messages in one add.
    pub max_messages_per_add: usize,
    /// Longest query.
    pub max_query_chars: usize,
    /// Most memories one export (`get_all`, unpaginated `get_memory`) returns.
    pub max_export: usize,
    /// Most ids in one `get_memory_by_ids` or delete by ids (memory ids, file ids).
    pub max_ids: usize,
    /// Most cubes (and knowledge bases) one request names.
    pub max_cubes: usize,
}

impl LimitsConfig {
    /// 413 when a request names more than `max_cubes` cubes.
    pub fn check_cubes(&self, cubes: &[String]) -> Result<(), crate::error::ServerError> {
        if cubes.len() > self.max_cubes {
            return Err(crate::error::ServerError::TooLarge(format!(
                "{} cubes in one request; the limit is {} (limits.max_cubes)",
                cubes.len(),
                self.max_cubes
            )));
        }
        Ok(())
    }

    /// 400 for an empty or over-long id, 413 for more than `max_ids` of them.
    pub fn check_ids(&self, what: &str, ids: &[String]) -> Result<(), crate::error::ServerError> {
        if ids.len() > self.max_ids {
            return Err(crate::error::ServerError::TooLarge(format!(
                "{} {what}; the limit is {} (limits.max_ids)",
                ids.len(),
                self.max_ids
            )));
        }
        for id in ids {
            store::validate_key_part(what, id)
                .map_err(|e| crate::error::ServerError::BadRequest(e.to_string()))?;
        }
        Ok(())
    }
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(bv) if bv.is_table() && v.is_table() => merge(bv, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

fn env_value(raw: &str) -> toml::Value {
    // Numbers, booleans and inline tables parse as TOML; anything else is a string.
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

impl Config {
    /// Loads defaults, then `file`, then `MEMOS_*` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ServerError> {
        let mut v: toml::Value = toml::from_str(DEFAULT_TOML)
            .map_err(|e| ServerError::Config(format!("embedded default: {e}")))?;
        if let Some(f) = file {
            let text = std::fs::read_to_string(f)
                .map_err(|e| ServerError::Config(format!("{}: {e}", f.display())))?;
            let o: toml::Value = toml::from_str(&text)
                .map_err(|e| ServerError::Config(format!("{}: {e}", f.display())))?;
            merge(&mut v, o);
        }
        let mut llm_env = operators::llm::ModelConfig {
            name: "default".into(),
            ..Default::default()
        };
        for (k, val) in env {
            // One LLM from the environment: MEMOS_LLM_URL, MEMOS_LLM_MODEL, MEMOS_LLM_API_KEY.
            match k.as_str() {
                "MEMOS_LLM_URL" => llm_env.url = val.clone(),
                "MEMOS_LLM_MODEL" => llm_env.model = val.clone(),
                "MEMOS_LLM_API_KEY" => llm_env.api_key = val.clone(),
                _ => {}
            }
            // The brief's short names for the broker addresses.
            let k = match k.as_str() {
                "MEMOS_KAFKA_BROKERS" => "MEMOS_KAFKA__BROKERS".to_string(),
                "MEMOS_NATS_URL" => "MEMOS_NATS__URL".to_string(),
                "MEMOS_PG_ADDR" => "MEMOS_SQL__PG_ADDR".to_string(),
                _ => k,
            };
            let Some(rest) = k.strip_prefix("MEMOS_") else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(|s| s.to_lowercase()).collect();
            // Only keys the configuration knows; other MEMOS_* variables (for components of
            // later releases or other tools) are left alone.
            let known = {
                let mut cur = &v;
                path.iter().all(|p| match cur.get(p) {
                    Some(n) => {
                        cur = n;
                        true
                    }
                    None => false,
                })
            };
            if !known {
                continue;
            }
            let mut o = env_value(&val);
            if let Some(toml::Value::String(_)) = {
                let mut cur = &v;
                for p in &path {
                    cur = &cur[p.as_str()];
                }
                Some(cur)
            } {
                o = toml::Value::String(val.clone());
            }
            for p in path.iter().rev() {
                let mut t = toml::Table::new();
                t.insert(p.clone(), o);
                o = toml::Value::Table(t);
            }
            merge(&mut v, o);
        }
        let mut cfg: Config = v
            .try_into()
            .map_err(|e: toml::de::Error| ServerError::Config(e.to_string()))?;
        if !llm_env.url.is_empty() {
            if llm_env.model.is_empty() {
                return Err(ServerError::Config(
                    "MEMOS_LLM_URL is set but MEMOS_LLM_MODEL is not".into(),
                ));
            }
            cfg.llm.models.retain(|m| m.name != "default");
            cfg.llm.models.insert(0, llm_env);
        }
        cfg.memory.validate()?;
        Ok(cfg)
    }

    /// The sections the engine is started with.
    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            model_dir: self.model_dir.clone(),
            auto_fetch_model: self.auto_fetch_model,
            embedder: self.embedder.clone(),
            pipeline: self.pipeline.clone(),
            window: self.window.clone(),
            extract: self.extract.clone(),
            dedupe: self.dedupe.clone(),
            feedback: self.feedback.clone(),
            memory: self.memory.clone(),
            llm: self.llm.clone(),
            activation: self.activation.clone(),
        }
    }

    /// Store options derived from this configuration.
    pub fn store_options(&self) -> store::StoreOptions {
        store::StoreOptions {
            dimensions: self.embedder.dimensions,
            ann_oversampling: self.search.ann_oversampling,
            map_size: usize::try_from(self.map_size_mb)
                .unwrap_or(usize::MAX)
                .saturating_mul(1 << 20),
            vecmem: store::vecmem::VecMemOptions {
                budget_bytes: self.search.vector_memory_mb.saturating_mul(1 << 20),
                exact_below: self.search.exact_scan_below,
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layering() {
        let c = Config::load(None, vec![]).unwrap();
        assert_eq!(c.http_addr, "127.0.0.1:8000");
        let c = Config::load(
            None,
            vec![
                ("MEMOS_HTTP_ADDR".into(), "127.0.0.1:0".into()),
                ("MEMOS_PIPELINE__BATCH_SIZE".into(), "7".into()),
                ("MEMOS_UNRELATED".into(), "x".into()),
                ("MEMOS_API_KEYS".into(), "12345,k2:c1+c2".into()),
                ("MEMOS_KAFKA_BROKERS".into(), "127.0.0.1:9092".into()),
                ("MEMOS_NATS_URL".into(), "nats://127.0.0.1:4222".into()),
            ],
        )
        .unwrap();
        assert_eq!(c.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(c.nats.url, "nats://127.0.0.1:4222");
        assert_eq!(c.api_keys, "12345,k2:c1+c2");
        assert_eq!(c.http_addr, "127.0.0.1:0");
        assert_eq!(c.pipeline.batch_size, 7);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[pipeline]\nbatch_sizes = 3\n").unwrap();
        let err = Config::load(Some(&f), vec![]).unwrap_err().to_string();
        assert!(err.contains("batch_sizes"), "{err}");
    }

    #[test]
    fn the_deploy_example_is_valid() {
        let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/memos.example.toml");
        let c = Config::load(Some(&f), vec![]).unwrap();
        assert!(c.kafka.enabled() && c.nats.enabled());
        assert_eq!(c.auth.keys[0].cubes, vec!["team-a-*".to_string()]);
    }
}

/// `[search.rerank]`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RerankConfig {
    /// The rerank endpoint (e.g. `http://127.0.0.1:8080/rerank`); empty: no HTTP reranker.
    pub url: String,
    /// `cohere` (also Jina, vLLM: `documents`, `results[].relevance_score`) or `tei`
    /// (`texts`, `[{index, score}]`).
    pub api: String,
    /// Model name sent with the request (Cohere/Jina/vLLM).
    pub model: String,
    /// Bearer token, if the endpoint wants one.
    pub api_key: String,
    /// Request time limit.
    pub timeout_ms: u64,
}

/// `[search.internet]`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct InternetConfig {
    /// A SearXNG base URL (its JSON format enabled); empty: `internet_search` is refused.
    pub url: String,
    /// Results taken (MemOS fetches 2 × top_k; this caps it).
    pub max_results: usize,
    /// Request time limit.
    pub timeout_ms: u64,
}
