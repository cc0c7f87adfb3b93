//! The started engine: the store, the embedder, the pipeline thread and the workers that run
//! after its commits (fine extraction, KV-cache builds), wired with explicit dependencies.

use std::sync::Arc;

use operators::embed::Embedder;
use store::Store;

use crate::activation::Activation;
use crate::commit::{CommitHook, Committer};
use crate::config::EngineConfig;
use crate::error::PipelineError;
use crate::fine::{FineQueue, FineWorker};
use crate::metrics::Metrics;
use crate::runtime::{self, PipelineHandle, StageFactory};
use crate::tasks::Tasks;

/// The parts of a running engine; interfaces (the server, the CLI) hold them.
pub struct Engine {
    /// The store.
    pub store: Arc<Store>,
    /// The embedder.
    pub embedder: Arc<dyn Embedder>,
    /// The pipeline's input.
    pub pipeline: PipelineHandle,
    /// Asynchronous work and its status.
    pub tasks: Arc<Tasks>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The configured LLMs (none: fine mode behaves as fast).
    pub llm: operators::llm::Llm,
    /// Activation memory (`[activation] enabled`): the local model and its KV-cache worker.
    pub activation: Option<Arc<Activation>>,
    /// The one commit path (every write transaction; hooks fire after each commit).
    pub committer: Committer,
}

impl Engine {
    /// Starts the pipeline over an opened store and embedder, with custom stages between
    /// `extract` and `embed` (built anew each time the pipeline thread starts), and the
    /// workers its commits feed. Runs inside a tokio runtime.
    pub fn start(
        cfg: &EngineConfig,
        store: Arc<Store>,
        embedder: Arc<dyn Embedder>,
        stages: Option<StageFactory>,
    ) -> Result<(Engine, tokio::task::JoinHandle<()>), PipelineError> {
        let metrics = Arc::new(Metrics::new());
        let tasks = Arc::new(Tasks::default());
        let llm = cfg
            .llm
            .build(Some(metrics.clone() as Arc<dyn operators::llm::LlmObserver>))
            .map_err(|e| PipelineError::Config(e.to_string()))?;
        // Fine mode: the sink queues jobs in the store in its commits; the worker runs them.
        let fine_wake = Arc::new(tokio::sync::Notify::new());
        let fine = llm.extract_model().is_some().then(|| FineQueue {
            wake: fine_wake.clone(),
            tasks: tasks.clone(),
        });
        let (activation, kv_rx) = if cfg.activation.enabled {
            let (a, rx) = Activation::load(&cfg.activation)?;
            (Some(a), Some(rx))
        } else {
            (None, None)
        };
        // The commit hooks: the KV worker hears of changed cubes, the fine worker of due jobs.
        let mut hooks: Vec<Arc<dyn CommitHook>> = Vec::new();
        if let Some(a) = &activation {
            hooks.push(a.clone());
        }
        let fine_enabled = fine.is_some();
        if let Some(q) = fine {
            hooks.push(Arc::new(q));
        }
        let committer = Committer::new(store.clone(), metrics.clone(), hooks);
        let (pipeline, task) = runtime::spawn(
            cfg,
            committer.clone(),
            embedder.clone(),
            fine_enabled,
            stages,
        );
        if let (Some(a), Some(rx)) = (&activation, kv_rx) {
            crate::activation::spawn_worker(a, committer.clone(), rx);
        }
        if fine_enabled {
            FineWorker {
                commits: committer.clone(),
                embedder: embedder.clone(),
                llm: llm.clone(),
                metrics: metrics.clone(),
                tasks: tasks.clone(),
            }
            .spawn(fine_wake);
        }
        Ok((
            Engine {
                store,
                embedder,
                pipeline,
                tasks,
                metrics,
                llm,
                activation,
                committer,
            },
            task,
        ))
    }
}
