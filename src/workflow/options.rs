//! What a run is started with beside its input (spec 3's execution options): its own
//! checkpoint mode, and a timeout for the whole run. Both are journaled as the run's first
//! entry, so that they hold after a restart. The engine's side of a timeout (a message
//! when it runs out, then the run's end) is here too.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::engine::{now_ms, EngineState};
use super::msg::EngineMsg;
use super::{Checkpoint, RunId, RunStatus, WorkflowError, WorkflowMetrics};

/// The longest run timeout (a year, like the longest sleep).
pub const MAX_RUN_TIMEOUT: Duration = super::MAX_SLEEP;

/// Checks a run timeout (a run's own, or a definition's), naming `option` if it is out of
/// bounds.
pub(crate) fn check_timeout(option: &'static str, t: Duration) -> Result<(), WorkflowError> {
    if t < Duration::from_millis(1) || t > MAX_RUN_TIMEOUT {
        return Err(WorkflowError::BadOption {
            option,
            reason: format!(
                "{t:?} is not from 1 ms to {} days",
                MAX_RUN_TIMEOUT.as_secs() / 86_400
            ),
        });
    }
    Ok(())
}

/// How one run goes, beside what its definition says.
///
/// ```
/// use std::time::Duration;
/// use wrangle::workflow::{Checkpoint, RunOptions};
///
/// let options = RunOptions::new()
///     .checkpoint(Checkpoint::Overlapped)
///     .timeout(Duration::from_secs(600));
/// assert_eq!(options.timeout, Some(Duration::from_secs(600)));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// This run's checkpoint mode; without it, the definition's.
    pub checkpoint: Option<Checkpoint>,
    /// The run fails (its running steps cancelled, its error saying it timed out) if it
    /// has not ended this long after it started. Paused time counts. A retry of the run
    /// gets the same time again, from the retry. Replaces the definition's `timeout_ms`.
    pub timeout: Option<Duration>,
}

impl RunOptions {
    /// No options: the definition decides.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs with this checkpoint mode, whatever the definition says.
    pub fn checkpoint(mut self, checkpoint: Checkpoint) -> Self {
        self.checkpoint = Some(checkpoint);
        self
    }

    /// Fails the run if it has not ended `timeout` after it started (1 ms to a year).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Checks the options, naming the one at fault.
    pub(crate) fn validate(&self) -> Result<(), WorkflowError> {
        self.timeout.map_or(Ok(()), |t| check_timeout("timeout", t))
    }

    pub(crate) fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// As journaled.
    pub(crate) fn to_json(self) -> String {
        let stored = Stored {
            checkpoint: self.checkpoint,
            timeout_ms: self
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        };
        serde_json::to_string(&stored).unwrap_or_else(|_| "{}".into())
    }

    /// From the journal.
    pub(crate) fn from_json(json: &str) -> Result<Self, String> {
        let stored: Stored = serde_json::from_str(json).map_err(|e| format!("run options: {e}"))?;
        Ok(Self {
            checkpoint: stored.checkpoint,
            timeout: stored.timeout_ms.map(Duration::from_millis),
        })
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    checkpoint: Option<Checkpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
}

/// What a run's timeout does in the engine: a message when it runs out, and the run's end.
impl EngineState {
    /// Has the engine told when `run`'s timeout (if it has one) runs out.
    pub(crate) fn arm_deadline(&self, run: RunId) {
        let Some(entry) = self.runs.get(&run) else {
            return;
        };
        let (Some(due), generation) = (entry.core.deadline_ms(), entry.core.generation) else {
            return;
        };
        if entry.core.status.is_active() {
            let wait = u64::try_from(due - now_ms()).unwrap_or(0);
            let msg = move || EngineMsg::Deadline { run, generation };
            self.me
                .send_after(std::time::Duration::from_millis(wait), msg);
        }
    }

    /// `run`'s timeout ran out, if it is still in `generation`: it fails, and its running
    /// steps are cancelled.
    pub(super) fn deadline(&mut self, run: RunId, generation: u32) {
        let now = now_ms();
        let Some(entry) = self.runs.get_mut(&run) else {
            return;
        };
        let core = &mut entry.core;
        let due = core.deadline_ms().is_some_and(|d| d <= now);
        if core.generation != generation || !core.status.is_active() || !due {
            return;
        }
        let timeout = core.timeout().unwrap_or_default();
        let error = format!("timed out: the run did not end within its timeout of {timeout:?}");
        core.finish(RunStatus::Failed, Some(error), now);
        WorkflowMetrics::add(&self.metrics.timed_out);
        self.end(run);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip_through_the_journal() {
        for options in [
            RunOptions::new(),
            RunOptions::new().checkpoint(Checkpoint::Overlapped),
            RunOptions::new().checkpoint(Checkpoint::BeforeNext),
            RunOptions::new().timeout(Duration::from_millis(1500)),
            RunOptions::new()
                .checkpoint(Checkpoint::Overlapped)
                .timeout(Duration::from_secs(3600)),
        ] {
            assert_eq!(RunOptions::from_json(&options.to_json()), Ok(options));
        }
        assert!(RunOptions::from_json("{\"checkpoint\":\"never\"}").is_err());
    }

    #[test]
    fn a_timeout_out_of_bounds_is_refused_by_name() {
        for bad in [Duration::ZERO, MAX_RUN_TIMEOUT + Duration::from_secs(1)] {
            match RunOptions::new().timeout(bad).validate() {
                Err(WorkflowError::BadOption { option, .. }) => assert_eq!(option, "timeout"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(RunOptions::new()
            .timeout(Duration::from_millis(1))
            .validate()
            .is_ok());
        assert!(RunOptions::new()
            .timeout(MAX_RUN_TIMEOUT)
            .validate()
            .is_ok());
    }
}
