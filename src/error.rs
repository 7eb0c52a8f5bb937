//! The crate-level error, wrapping each module's own.

use crate::queue::QueueError;
use crate::store::StoreError;
use crate::task::TaskId;

/// Everything that can go wrong when using wrangle.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value given by the caller is not acceptable; `field` names it.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The offending field or argument.
        field: &'static str,
        /// What was expected.
        reason: String,
    },
    /// The queue refused or could not answer.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The store could not be opened, migrated or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A workflow was refused, or a run could not be found or changed.
    #[error(transparent)]
    Workflow(#[from] crate::workflow::WorkflowError),
    /// A pulling worker's call was refused.
    #[error(transparent)]
    Pull(#[from] crate::pull::PullError),
    /// The task ended without a result.
    #[error("task {id} {status}: {error}")]
    TaskFailed {
        /// The task.
        id: TaskId,
        /// How it ended (`failed`, `cancelled`, `timeout`).
        status: crate::TaskStatus,
        /// The last error, or a description of the outcome.
        error: String,
    },
    /// The result did not decode into the type asked for.
    #[error("task {id} result does not decode: {reason}")]
    Decode {
        /// The task.
        id: TaskId,
        /// Where and why decoding failed.
        reason: String,
    },
    /// An actor could not be reached (it stopped, or the runtime is shutting down).
    #[error("{actor} is not running")]
    Stopped {
        /// Which actor.
        actor: &'static str,
    },
    /// An actor failed to start.
    #[error("failed to start {actor}: {reason}")]
    Spawn {
        /// Which actor.
        actor: &'static str,
        /// Why.
        reason: String,
    },
}

impl Error {
    /// An actor that did not start: the reason its start-up gave, without ractor's
    /// "Actor panicked during startup" wrapping around a plain error.
    pub(crate) fn spawn(actor: &'static str, e: ractor::SpawnErr) -> Self {
        let reason = match e {
            ractor::SpawnErr::StartupFailed(inner) => inner.to_string(),
            other => other.to_string(),
        };
        Self::Spawn { actor, reason }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }
}
