//! One supervision behaviour for every wrangle supervisor (the coordinator over its queue,
//! pools and cluster gate; each pool over its workers): one-for-one restarts with a budget,
//! at most `max_restarts` in any `within` window, then the supervisor gives up and fails
//! upward. ractor has no restart strategies (its default stops the supervisor when any
//! child ends), so supervisors read their events here rather than unpacking them:
//!
//! 1. [`ChildExit::of`] reads a supervision event: which actor ended, why, and whether it
//!    failed; events that report no end (a child started, process groups) are `None`.
//! 2. The supervisor says which of its children that was and what its end means
//!    ([`OnExit`]: asked for, to be restarted, or fatal).
//! 3. [`Supervisor::judge`] answers with a [`Verdict`]: forget it, restart it (counted
//!    against the budget), or give up with the message to fail upward with.

use std::collections::VecDeque;
use std::time::Duration;

use ractor::{ActorId, SupervisionEvent};
use tokio::time::Instant;

use crate::error::Error;

/// How many restarts a supervisor allows in a window of time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartBudget {
    /// Restarts allowed within `within`. Default 10.
    pub max_restarts: u32,
    /// The sliding window. Default 60 s.
    pub within: Duration,
}

impl Default for RestartBudget {
    fn default() -> Self {
        Self {
            max_restarts: 10,
            within: Duration::from_secs(60),
        }
    }
}

impl RestartBudget {
    /// Checks for a window of zero length.
    pub fn validate(&self) -> Result<(), Error> {
        if self.within.is_zero() {
            return Err(Error::invalid(
                "restart_budget.within",
                "must be greater than zero",
            ));
        }
        Ok(())
    }
}

/// Restarts seen recently, against a budget.
#[derive(Debug)]
struct RestartTracker {
    budget: RestartBudget,
    recent: VecDeque<Instant>,
    total: u64,
}

impl RestartTracker {
    fn new(budget: RestartBudget) -> Self {
        Self {
            budget,
            recent: VecDeque::new(),
            total: 0,
        }
    }

    /// Records a restart at `now`; false when it would exceed the budget.
    fn allow(&mut self, now: Instant) -> bool {
        while let Some(&t) = self.recent.front() {
            if now.saturating_duration_since(t) >= self.budget.within {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.len() as u32 >= self.budget.max_restarts {
            return false;
        }
        self.recent.push_back(now);
        self.total += 1;
        true
    }

    /// Restarts since start.
    fn total(&self) -> u64 {
        self.total
    }
}

/// The end of a supervised child, read from a supervision event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ChildExit {
    /// The actor that ended.
    pub(crate) actor: ActorId,
    /// Why: its stop reason (`stopped` when it gave none), or `failed: ERROR`.
    pub(crate) reason: String,
    /// True when it failed (a panic or an error in a handler), false when it stopped.
    pub(crate) failed: bool,
}

impl ChildExit {
    /// The child end that `event` reports; `None` for events that report none (a child
    /// started, a process group changed).
    pub(crate) fn of(event: SupervisionEvent) -> Option<Self> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => Some(Self {
                actor: cell.get_id(),
                reason: reason.unwrap_or_else(|| "stopped".into()),
                failed: false,
            }),
            SupervisionEvent::ActorFailed(cell, err) => Some(Self {
                actor: cell.get_id(),
                reason: format!("failed: {err}"),
                failed: true,
            }),
            _ => None,
        }
    }

    /// True when the child stopped (did not fail) with one of `reasons`: a stop its
    /// supervisor asked for.
    pub(crate) fn stopped_with(&self, reasons: &[&str]) -> bool {
        !self.failed && reasons.contains(&self.reason.as_str())
    }
}

/// What the end of one child means to its supervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnExit {
    /// It was asked to end (stopped, drained, retired): not restarted, not counted.
    Expected,
    /// It ended unasked: start it again, within the restart budget.
    Restart,
    /// It ended and cannot be started again (it held what only it had): the supervisor
    /// fails upward.
    Escalate,
}

/// What a supervisor does about a child's end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Forget the child; start nothing.
    Stopped,
    /// Start the child again; the restart is counted.
    Restart,
    /// Fail upward with this message: the budget is spent, or the child is irreplaceable.
    GiveUp(String),
}

/// One supervisor's restart policy for one kind of child (`worker`, `worker pool`,
/// `cluster gate`): a budget and the restarts counted against it.
#[derive(Debug)]
pub(crate) struct Supervisor {
    /// What its children are, for the messages it gives up with.
    child: &'static str,
    /// Restarts against the budget.
    restarts: RestartTracker,
}

impl Supervisor {
    /// A supervisor of `child`ren with `budget`.
    pub(crate) fn new(child: &'static str, budget: RestartBudget) -> Self {
        Self {
            child,
            restarts: RestartTracker::new(budget),
        }
    }

    /// What to do about `exit`, whose meaning the supervisor gave as `on_exit`. A restart
    /// is counted only when the budget allows it.
    pub(crate) fn judge(&mut self, exit: &ChildExit, on_exit: OnExit) -> Verdict {
        match on_exit {
            OnExit::Expected => Verdict::Stopped,
            OnExit::Escalate => Verdict::GiveUp(format!(
                "{} ended and cannot be restarted: {}",
                self.child, exit.reason
            )),
            OnExit::Restart if self.restarts.allow(Instant::now()) => Verdict::Restart,
            OnExit::Restart => {
                let budget = self.restarts.budget;
                Verdict::GiveUp(format!(
                    "{} restart budget spent ({} restarts within {:?}); last: {}",
                    self.child, budget.max_restarts, budget.within, exit.reason
                ))
            }
        }
    }

    /// Restarts since start.
    pub(crate) fn restarts(&self) -> u64 {
        self.restarts.total()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_refuses_past_the_limit_and_recovers_after_the_window() {
        let mut t = RestartTracker::new(RestartBudget {
            max_restarts: 2,
            within: Duration::from_secs(10),
        });
        let t0 = Instant::now();
        assert!(t.allow(t0));
        assert!(t.allow(t0 + Duration::from_secs(1)));
        assert!(!t.allow(t0 + Duration::from_secs(2)));
        assert!(t.allow(t0 + Duration::from_secs(11)));
        assert_eq!(t.total(), 3);
    }

    fn exit(reason: &str, failed: bool) -> ChildExit {
        ChildExit {
            actor: ActorId::Local(7),
            reason: reason.into(),
            failed,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn restarts_within_the_budget_then_gives_up_naming_the_child_and_the_reason() {
        let mut s = Supervisor::new(
            "worker",
            RestartBudget {
                max_restarts: 2,
                within: Duration::from_secs(10),
            },
        );
        let crash = exit("failed: boom", true);
        assert_eq!(s.judge(&crash, OnExit::Restart), Verdict::Restart);
        assert_eq!(s.judge(&crash, OnExit::Restart), Verdict::Restart);
        let Verdict::GiveUp(why) = s.judge(&crash, OnExit::Restart) else {
            panic!("the third restart within 10 s is past the budget");
        };
        assert!(why.contains("worker restart budget spent"), "{why}");
        assert!(why.contains("2 restarts within 10s"), "{why}");
        assert!(why.ends_with("failed: boom"), "{why}");
        assert_eq!(s.restarts(), 2, "a refused restart is not counted");
        // Ends that were asked for cost nothing; the window moves on.
        assert_eq!(
            s.judge(&exit("drained", false), OnExit::Expected),
            Verdict::Stopped
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(s.judge(&crash, OnExit::Restart), Verdict::Restart);
        assert_eq!(s.restarts(), 3);
    }

    #[test]
    fn an_irreplaceable_child_escalates_whatever_the_budget() {
        let mut s = Supervisor::new("task queue", RestartBudget::default());
        let verdict = s.judge(&exit("stopped", false), OnExit::Escalate);
        assert_eq!(
            verdict,
            Verdict::GiveUp("task queue ended and cannot be restarted: stopped".into())
        );
        assert_eq!(s.restarts(), 0);
    }

    #[test]
    fn a_stop_with_a_requested_reason_is_not_a_failure() {
        assert!(exit("drained", false).stopped_with(&["drained", "stopped"]));
        assert!(!exit("killed", false).stopped_with(&["drained", "stopped"]));
        assert!(!exit("drained", true).stopped_with(&["drained"]));
    }
}
