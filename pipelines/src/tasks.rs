//! Asynchronous work the engine tracks: adds in `async` mode and fine extraction jobs, with
//! their status for `scheduler/status` and `get_status`.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;

/// A memory written (or merged into) by an event.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AddedMemory {
    /// Memory text.
    pub memory: String,
    /// Memory id.
    pub memory_id: String,
    /// MemOS type.
    pub memory_type: String,
    /// Cube.
    pub cube_id: String,
}

/// Work for the fine stage, as queued in the store: the fast memories one event produced.
#[derive(Debug, Clone)]
pub struct FineJob {
    /// Where it is queued (it leaves the queue in the transaction that settles it).
    pub key: store::JobKey,
    /// The job: cube, user, event, fast memory ids, `custom_tags` hint.
    pub job: store::JobRecord,
}

impl std::ops::Deref for FineJob {
    type Target = store::JobRecord;
    fn deref(&self) -> &store::JobRecord {
        &self.job
    }
}

impl FineJob {
    /// The job's task id in `scheduler/status`.
    pub fn task_id(&self) -> String {
        task_id(&self.job)
    }
}

/// A queued job's task id in `scheduler/status`.
pub fn task_id(job: &store::JobRecord) -> String {
    format!("{}:{}:{}", job.kind, job.cube_id, job.event_id)
}

/// Status of an asynchronous add.
#[derive(Debug, Clone, Serialize)]
pub struct TaskStatus {
    /// Task id.
    pub task_id: String,
    /// waiting | in_progress | completed | failed.
    pub status: String,
    /// User.
    pub user_id: String,
    /// Memories written (when completed).
    pub memories: Vec<AddedMemory>,
    /// Error (when failed).
    pub error: Option<String>,
    /// Submitted, unix micros.
    pub created_at: i64,
    /// Cubes it writes.
    pub cubes: Vec<String>,
}

/// Finished tasks kept for status queries; the oldest finished ones are forgotten beyond this.
const MAX_FINISHED_TASKS: usize = 100_000;

/// Asynchronous tasks known to this process.
#[derive(Default)]
pub struct Tasks {
    inner: Mutex<HashMap<String, TaskStatus>>,
}

impl Tasks {
    /// Records (or replaces) a task's status; beyond the limit the oldest finished are forgotten.
    pub fn set(&self, t: TaskStatus) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.insert(t.task_id.clone(), t);
        if g.len() > MAX_FINISHED_TASKS {
            let mut done: Vec<(i64, String)> = g
                .values()
                .filter(|t| t.status == "completed" || t.status == "failed")
                .map(|t| (t.created_at, t.task_id.clone()))
                .collect();
            done.sort();
            let excess = g.len() - MAX_FINISHED_TASKS;
            for (_, id) in done.into_iter().take(excess) {
                g.remove(&id);
            }
        }
    }

    /// One task.
    pub fn get(&self, id: &str) -> Option<TaskStatus> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }
    /// All tasks, optionally of one user.
    pub fn list(&self, user: Option<&str>) -> Vec<TaskStatus> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.values()
            .filter(|t| user.is_none_or(|u| t.user_id == u))
            .cloned()
            .collect()
    }
    /// Tasks not finished.
    pub fn active(&self) -> usize {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.values()
            .filter(|t| t.status == "waiting" || t.status == "in_progress")
            .count()
    }
}
