//! What a worker reports about an attempt it ran.
//!
//! These belong to the worker's protocol rather than to `task/`: an attempt's failure is a
//! handler's [`TaskError`], and the handler module already builds on `task/`.

use std::time::Duration;

use crate::handler::TaskError;
use crate::task::{LeaseToken, Payload, TaskId};

/// How one attempt ended, as a worker reports it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum AttemptOutcome {
    /// The handler returned this.
    Completed(Payload),
    /// The handler failed (or panicked, or had no handler).
    Failed(TaskError),
    /// The attempt ran past the task's timeout, after this long.
    TimedOut(Duration),
    /// The attempt stopped because its cancellation token fired.
    Cancelled,
}

/// One finished attempt, reported by a worker.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct AttemptReport {
    /// The task it ran.
    pub(crate) task_id: TaskId,
    /// The token of the lease the attempt ran under; a report with any other is refused.
    pub(crate) token: LeaseToken,
    /// How it ended.
    pub(crate) outcome: AttemptOutcome,
}
