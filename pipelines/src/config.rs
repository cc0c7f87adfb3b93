//! The engine's settings: one serde struct per TOML section the engine reads (`[pipeline]`,
//! `[memory]`, `[embedder]`), and [`EngineConfig`], the sections the engine is started with.
//! The server assembles them with its own sections into the process configuration (embedded
//! defaults, then a file, then `MEMOS_*` variables).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use operators::dedupe::DedupeConfig;
use operators::embed::{Embedder, HashEmbedder, LocalEmbedder, OpenAiEmbedder};
use operators::extract::ExtractConfig;
use operators::window::WindowConfig;
use serde::{Deserialize, Serialize};

use crate::activation::ActivationConfig;
use crate::error::PipelineError;

/// What the engine is started with: the sections of the process configuration it reads.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Model directory (the local embedder).
    pub model_dir: PathBuf,
    /// Fetch the model on first start.
    pub auto_fetch_model: bool,
    /// `[embedder]`.
    pub embedder: EmbedderConfig,
    /// `[pipeline]`.
    pub pipeline: PipelineConfig,
    /// `[window]`.
    pub window: WindowConfig,
    /// `[extract]`.
    pub extract: ExtractConfig,
    /// `[dedupe]`.
    pub dedupe: DedupeConfig,
    /// `[feedback]`.
    pub feedback: operators::feedback::FeedbackConfig,
    /// `[memory]`.
    pub memory: MemoryConfig,
    /// `[llm]` (fine extraction).
    pub llm: operators::llm::LlmConfig,
    /// `[activation]`.
    pub activation: ActivationConfig,
}

/// Capacity limits: after each batch, a cube holding more activated memories of a type than
/// its limit forgets the oldest (by `updated_at`) of that type (memos-spec §3.6).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// Per memory type (`WorkingMemory = 20`); 0 or absent = unlimited.
    pub capacity: std::collections::BTreeMap<String, usize>,
    /// `archive` (kept in history and `as_of`, not searchable) or `delete` (hard delete).
    pub forget: String,
}

/// Embedder settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedderConfig {
    /// local | openai | hash.
    pub kind: String,
    /// Sentences per forward pass.
    pub batch_size: usize,
    /// Output dimensions.
    pub dimensions: usize,
    /// openai: base URL.
    pub url: String,
    /// openai: model.
    pub model: String,
    /// openai: key.
    pub api_key: String,
    /// openai: request timeout.
    pub timeout_secs: u64,
}

/// Runtime settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Events per batch.
    pub batch_size: usize,
    /// Batch linger.
    pub linger_ms: u64,
    /// Source → pipeline queue capacity.
    pub channel_capacity: usize,
    /// Largest accepted event.
    pub max_event_bytes: usize,
    /// Vector delta size that triggers a tree rebuild in the batch transaction.
    pub vector_delta_max: usize,
    /// Idle time after which the delta is folded into the trees.
    pub index_idle_ms: u64,
    /// Attempts for retryable failures.
    pub retry_attempts: u32,
    /// First wait before the pipeline thread is restarted after a failure outside the
    /// per-event isolation (doubles per consecutive failure).
    pub restart_backoff_ms: u64,
    /// Longest wait between pipeline restarts.
    pub restart_backoff_max_ms: u64,
}

impl MemoryConfig {
    /// Refuses unknown memory types and forget modes.
    pub fn validate(&self) -> Result<(), PipelineError> {
        for t in self.capacity.keys() {
            if store::MemoryType::parse(t).is_none() {
                return Err(PipelineError::Config(format!(
                    "memory.capacity: unknown memory type \"{t}\""
                )));
            }
        }
        if !["archive", "delete"].contains(&self.forget.as_str()) {
            return Err(PipelineError::Config(format!(
                "memory.forget must be \"archive\" or \"delete\", not \"{}\"",
                self.forget
            )));
        }
        Ok(())
    }
}

/// Loads the configured embedder (fetching the local model first if allowed and missing).
pub fn load_embedder(cfg: &EngineConfig) -> Result<Arc<dyn Embedder>, PipelineError> {
    let e = &cfg.embedder;
    Ok(match e.kind.as_str() {
        "local" => {
            if !operators::embed::fetch::model_present(&cfg.model_dir) {
                if !cfg.auto_fetch_model {
                    return Err(PipelineError::Config(format!(
                        "no model in {} (run `memos model fetch`)",
                        cfg.model_dir.display()
                    )));
                }
                operators::embed::fetch::fetch_model(&cfg.model_dir, &|m| {
                    tracing::info!("model: {m}")
                })?;
            }
            Arc::new(LocalEmbedder::load(&cfg.model_dir, e.batch_size)?)
        }
        "openai" => {
            if e.url.is_empty() {
                return Err(PipelineError::Config(
                    "embedder.url is required for kind = \"openai\"".into(),
                ));
            }
            let key = (!e.api_key.is_empty()).then(|| e.api_key.clone());
            Arc::new(OpenAiEmbedder::new(
                &e.url,
                &e.model,
                key,
                e.dimensions,
                Duration::from_secs(e.timeout_secs),
            )?)
        }
        "hash" => Arc::new(HashEmbedder::new(e.dimensions)),
        other => {
            return Err(PipelineError::Config(format!(
                "embedder.kind \"{other}\" is not local, openai or hash"
            )));
        }
    })
}
