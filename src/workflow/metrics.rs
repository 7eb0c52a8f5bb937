//! Counters and latencies of the workflow engine, read by `/metrics` and `/stats`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::metrics::Histogram;

/// What the engine counts (shared with its handle; relaxed atomics).
#[derive(Debug, Default)]
pub struct WorkflowMetrics {
    pub(crate) started: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) stopped: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) paused: AtomicU64,
    pub(crate) resumed: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) recovered: AtomicU64,
    pub(crate) steps_completed: AtomicU64,
    pub(crate) steps_failed: AtomicU64,
    /// Runs running or paused now.
    pub(crate) active: AtomicU64,
    /// From a step's start to its outcome.
    pub step_latency: Histogram,
    /// One journal commit.
    pub checkpoint_latency: Histogram,
}

/// The counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct WorkflowCounts {
    /// Runs started.
    pub started: u64,
    /// Runs completed.
    pub completed: u64,
    /// Runs that failed (each failure counts, also after a retry).
    pub failed: u64,
    /// Runs cancelled.
    pub cancelled: u64,
    /// Runs stopped (their definition version is gone).
    pub stopped: u64,
    /// Runs failed by their timeout (counted in `failed` too).
    pub timed_out: u64,
    /// Pauses.
    pub paused: u64,
    /// Resumes.
    pub resumed: u64,
    /// Retries of failed runs.
    pub retried: u64,
    /// Runs brought back from the journal at start.
    pub recovered: u64,
    /// Steps completed.
    pub steps_completed: u64,
    /// Steps failed.
    pub steps_failed: u64,
    /// Runs running or paused now.
    pub active: u64,
}

impl WorkflowMetrics {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn counts(&self) -> WorkflowCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WorkflowCounts {
            started: get(&self.started),
            completed: get(&self.completed),
            failed: get(&self.failed),
            cancelled: get(&self.cancelled),
            stopped: get(&self.stopped),
            timed_out: get(&self.timed_out),
            paused: get(&self.paused),
            resumed: get(&self.resumed),
            retried: get(&self.retried),
            recovered: get(&self.recovered),
            steps_completed: get(&self.steps_completed),
            steps_failed: get(&self.steps_failed),
            active: get(&self.active),
        }
    }
}
