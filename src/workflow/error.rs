//! What can go wrong with workflows.

use super::RunId;

/// A workflow error a caller can act on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WorkflowError {
    /// The definition cannot run; `step` names where (the workflow's name for the whole).
    #[error("invalid workflow at step {step:?}: {reason}")]
    Invalid {
        /// The step (or the workflow) at fault.
        step: String,
        /// What was expected.
        reason: String,
    },
    /// No workflow of that name is registered.
    #[error("no workflow named {0:?} is registered")]
    UnknownWorkflow(String),
    /// No run with that id.
    #[error("no workflow run {0}")]
    RunNotFound(RunId),
    /// The run is not in a status that allows this.
    #[error("run {run} is {status}: cannot {action}")]
    WrongStatus {
        /// The run.
        run: RunId,
        /// Its status.
        status: super::RunStatus,
        /// What was asked.
        action: &'static str,
    },
    /// The run did not end within the time waited.
    #[error("run {0} still running after the time waited")]
    WaitTimeout(RunId),
    /// The run's input is not a JSON object.
    #[error("invalid input: {0}")]
    BadInput(String),
    /// A run option is out of bounds; `option` names it.
    #[error("invalid run option {option}: {reason}")]
    BadOption {
        /// The option at fault.
        option: &'static str,
        /// What was expected.
        reason: String,
    },
    /// The store could not keep the definition or read the run.
    #[error("workflow store: {0}")]
    Store(String),
    /// The engine is not running.
    #[error("the workflow engine is not running")]
    Stopped,
    /// The engine has too many runs in memory.
    #[error("too many active runs ({0}); wait for some to finish")]
    TooManyRuns(usize),
}

impl WorkflowError {
    pub(crate) fn invalid(step: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            step: step.into(),
            reason: reason.into(),
        }
    }
}
