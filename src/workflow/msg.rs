//! The workflow engine's messages: what it is asked, and what waits on a journal commit.

use std::collections::BTreeMap;

use ractor::RpcReplyPort;
use serde_json::Value;
use tokio::sync::oneshot;

use super::def::Workflow;
use super::node::Action;
use super::{RunId, RunSnapshot, RunStatus, WorkflowError};
use crate::store::{WorkflowEventRow, WorkflowRunRow};
use crate::task::{Submitted, TaskId, TaskOutcome};

/// A change asked of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Let running steps finish; start nothing new.
    Pause,
    /// Start what waits.
    Resume,
    /// Cancel running steps and end the run.
    Cancel,
    /// Go on from the failed steps of a failed or stopped run.
    Retry,
}

/// The engine's messages.
pub(crate) enum EngineMsg {
    /// Validate, version and keep a definition.
    Register {
        workflow: Workflow,
        reply: RpcReplyPort<Result<String, WorkflowError>>,
    },
    /// Start a run of the newest version of a workflow.
    Start {
        name: String,
        input: BTreeMap<String, Value>,
        options: super::RunOptions,
        reply: RpcReplyPort<Result<RunId, WorkflowError>>,
    },
    /// A step's task ended.
    Outcome(TaskId, TaskOutcome),
    /// The queue's answer to a round of step submissions.
    Submitted {
        steps: Vec<(RunId, u32, String)>,
        result: Vec<Result<Submitted, String>>,
    },
    /// A timer is due.
    Fire {
        run: RunId,
        generation: u32,
        key: String,
    },
    /// A run's timeout may have run out (for the run's generation then).
    Deadline { run: RunId, generation: u32 },
    /// A journal commit landed; what waited on it may happen.
    Committed(Vec<Deferred>),
    /// Pause, resume, cancel or retry a run.
    Control {
        run: RunId,
        op: Control,
        reply: RpcReplyPort<Result<RunSnapshot, WorkflowError>>,
    },
    /// A run, if in memory.
    Get {
        run: RunId,
        reply: RpcReplyPort<Option<RunSnapshot>>,
    },
    /// Runs in memory (active ones and recently finished ones).
    List {
        status: Option<RunStatus>,
        limit: usize,
        reply: RpcReplyPort<Vec<RunSnapshot>>,
    },
    /// Answer once the run completes, fails, stops or is cancelled.
    Wait {
        run: RunId,
        reply: oneshot::Sender<RunSnapshot>,
    },
    /// Registered workflows: name, newest version, definition.
    Definitions(RpcReplyPort<Vec<(String, String, super::WorkflowDef)>>),
    /// What the store holds of a child run its parent wants to start (none: start it).
    ChildFound {
        want: super::child::ChildWanted,
        found: Result<Option<(WorkflowRunRow, Vec<WorkflowEventRow>)>, String>,
    },
    /// Pause, resume or cancel every active run that matches (or retry every failed one
    /// in memory).
    Bulk {
        op: Control,
        filter: super::BulkFilter,
        reply: RpcReplyPort<super::BulkOutcome>,
    },
}

impl ractor::Message for EngineMsg {}

/// Something a journal commit must land before.
// `Start` is the large variant and also the common one (one per step started), so boxing
// it would add an allocation per step and save no memory.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Deferred {
    /// Start a step's task or timer (for the run's generation then).
    Start(RunId, u32, Action),
    /// Cancel these step tasks (their run failed or was cancelled).
    Cancel(Vec<TaskId>),
    /// The run ended: answer its waiters.
    Ended(RunId),
    /// The run's row is stored: answer its start.
    Started(RunId, RpcReplyPort<Result<RunId, WorkflowError>>),
}
