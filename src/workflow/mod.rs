//! Durable workflows: named graphs of steps (sequences, parallel branches, maps and
//! pipelines over lists, conditions, bounded loops, durable timers, steps added at run time
//! by a step's output, child workflows) where every step runs as an ordinary task, so it is
//! queued, routed by labels, retried, timed out and supervised like any other, on any node.
//!
//! Every step's outcome is journaled in the store before anything that follows it starts
//! (or, for a workflow with [`Checkpoint::Overlapped`], while the steps it starts already
//! run: a run's end, timers and child runs still wait for the commit).
//! A run is rebuilt by replaying its journal through the same state machine (no user code
//! runs outside steps, so there are no determinism rules to follow), and after a crash
//! each unfinished run resumes from its journal, pinned to the definition version it
//! started with: completed steps are not run again, steps in flight are found again in
//! the queue by their idempotency key (or run again: at least once).
//!
//! - [`Workflow`], [`Step`], [`Input`], [`Condition`]: definitions, from Rust builders or
//!   as JSON ([`WorkflowDef`]); `validate` checks them and names the step at fault.
//! - `node` and `run`: a run's tree of steps and its state machine (pure).
//! - `engine`, `msg` and `exec`: the engine actor, its messages, and its side effects,
//!   group-committed; `child`: child runs.
//! - `journal` and `recover`: rows of the journal, replay, and recovery at start.
//! - [`Checkpoint`] and [`RunOptions`]: a definition's checkpoint mode, and what one run
//!   is started with (its own mode, a timeout for the whole run).
//! - [`Workflows`]: the handle ([`Coordinator::workflows`](crate::Coordinator::workflows)).

mod checkpoint;
mod child;
mod cond;
mod def;
mod engine;
mod error;
mod exec;
mod handle;
mod journal;
mod metrics;
mod msg;
mod node;
mod options;
mod recover;
mod run;
mod types;
mod validate;

pub use checkpoint::Checkpoint;
pub use child::MAX_CHILD_DEPTH;
pub use cond::{Condition, Op};
pub use def::{
    ChildStep, DynamicStep, Input, InputFn, MapStep, Step, TaskStep, Workflow, WorkflowDef,
};
pub use error::WorkflowError;
pub use handle::Workflows;
pub use metrics::{WorkflowCounts, WorkflowMetrics};
pub use msg::Control;
pub use options::{RunOptions, MAX_RUN_TIMEOUT};
pub use types::{RunId, RunSnapshot, RunStatus};
pub use validate::{
    MAX_CONCURRENCY, MAX_DEPTH, MAX_ITERATIONS, MAX_NAME_LEN, MAX_SLEEP, MAX_STEPS,
};

pub(crate) use engine::Serves;

/// Settings of the workflow engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkflowConfig {
    /// Most runs running or paused at once (default 100,000); more are refused at start.
    pub max_active_runs: usize,
    /// Finished runs kept in memory for quick reads (default 1,000); older ones are read
    /// from the store.
    pub keep_finished: usize,
}

impl Default for WorkflowConfig {
    fn default() -> Self {
        Self {
            max_active_runs: 100_000,
            keep_finished: 1_000,
        }
    }
}

/// Which runs a bulk operation takes: every run that matches all the fields given.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkFilter {
    /// Runs of this workflow only.
    #[serde(default)]
    #[schema(max_length = 64)]
    pub workflow: Option<String>,
    /// Runs in this status only (running or paused for pause, resume and cancel; failed or
    /// stopped for retry).
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "running")]
    pub status: Option<RunStatus>,
}

/// What a bulk operation did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct BulkOutcome {
    /// Runs that matched the filter.
    pub matched: u64,
    /// Runs it changed.
    pub changed: u64,
    /// Runs it could not change, with why (at most 100 listed).
    pub errors: Vec<BulkError>,
}

/// A run a bulk operation could not change.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct BulkError {
    /// The run.
    #[schema(value_type = String, format = Uuid)]
    pub id: RunId,
    /// Why.
    pub error: String,
}

#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod tests;
