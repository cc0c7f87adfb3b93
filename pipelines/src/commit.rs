//! The one commit path. Every write transaction of the process is a [`Commit`] opened by the
//! [`Committer`]: the sink's batch, dead letters, fine results, KV caches, and every mutation
//! the server makes (deletes, updates, API keys, imports). When it commits, the hooks run in one
//! place: the `memos_store_commits_total{path}` counter, and the subscribers told what changed
//! (the KV-cache worker rebuilds the cubes touched, the fine worker takes the jobs that became
//! due). A `Commit` dropped without `commit()` aborts, and nothing is notified.

use std::collections::BTreeSet;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use store::Store;
use store::heed::RwTxn;

use crate::metrics::Metrics;
use crate::tasks::FineJob;

/// What one commit changed, for the subscribers.
#[derive(Debug, Default)]
pub struct Changes {
    /// Cubes whose memories changed.
    pub cubes: BTreeSet<String>,
    /// Fine extraction jobs whose fast memories this commit made durable.
    pub fine_jobs: Vec<FineJob>,
}

/// Told after each durable commit (never after an abort).
pub trait CommitHook: Send + Sync {
    /// Runs on the committing thread; it must only queue work.
    fn committed(&self, changes: &Changes);
}

/// Opens the process's write transactions and runs the hooks after they commit.
#[derive(Clone)]
pub struct Committer {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    hooks: Arc<Vec<Arc<dyn CommitHook>>>,
}

impl Committer {
    /// A committer over `store` with the given subscribers.
    pub fn new(
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        hooks: Vec<Arc<dyn CommitHook>>,
    ) -> Committer {
        Committer {
            store,
            metrics,
            hooks: Arc::new(hooks),
        }
    }

    /// The store it commits to.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The metrics it counts commits in.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Opens a write transaction; `path` names the kind of work in the metrics (batch,
    /// dead_letter, delete, update, fine, kv_cache, api_key, import, …).
    pub fn begin(&self, path: &'static str) -> Result<Commit<'_>, store::StoreError> {
        Ok(Commit {
            txn: self.store.write_txn()?,
            committer: self,
            path,
            changes: Changes::default(),
        })
    }

    /// Runs `f` in one write transaction and commits it (on a blocking thread).
    pub async fn run<T, E>(
        &self,
        path: &'static str,
        f: impl FnOnce(&Store, &mut Commit<'_>) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<store::StoreError> + From<crate::PipelineError> + Send + 'static,
    {
        let c = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut w = c.begin(path)?;
            let t = f(&c.store, &mut w)?;
            w.commit()?;
            Ok(t)
        })
        .await
        .map_err(|e| E::from(crate::PipelineError::Unavailable(e.to_string())))?
    }
}

/// An open write transaction of the commit path; derefs to the LMDB transaction, so the
/// store's APIs take it as they take any `RwTxn`.
pub struct Commit<'a> {
    txn: RwTxn<'a>,
    committer: &'a Committer,
    path: &'static str,
    changes: Changes,
}

impl Commit<'_> {
    /// Records that `cube`'s memories changed (its KV cache is rebuilt after the commit).
    pub fn touch(&mut self, cube: &str) {
        if !self.changes.cubes.contains(cube) {
            self.changes.cubes.insert(cube.to_string());
        }
    }

    /// Queues a fine job in this transaction: it is due once this commit is durable, and it
    /// stays queued (across restarts) until a commit settles it.
    pub fn fine_job(&mut self, job: store::JobRecord) -> Result<store::JobKey, store::StoreError> {
        let key = self.committer.store.put_job(&mut self.txn, &job)?;
        self.changes.fine_jobs.push(FineJob {
            key: key.clone(),
            job,
        });
        Ok(key)
    }

    /// Commits, then counts it and tells the subscribers.
    pub fn commit(self) -> Result<(), store::StoreError> {
        let Commit {
            txn,
            committer,
            path,
            changes,
        } = self;
        committer.store.commit(txn)?;
        committer.metrics.commits.with_label_values(&[path]).inc();
        for h in committer.hooks.iter() {
            h.committed(&changes);
        }
        Ok(())
    }
}

impl<'a> Deref for Commit<'a> {
    type Target = RwTxn<'a>;
    fn deref(&self) -> &RwTxn<'a> {
        &self.txn
    }
}

impl<'a> DerefMut for Commit<'a> {
    fn deref_mut(&mut self) -> &mut RwTxn<'a> {
        &mut self.txn
    }
}
