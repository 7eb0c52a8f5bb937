//! One-for-one restarts with a budget: at most `max_restarts` in any `within` window, then
//! the supervisor gives up and fails upward. ractor has no restart strategies (its default
//! stops the supervisor when any child ends), so every wrangle supervisor uses this.

use std::collections::VecDeque;
use std::time::Duration;

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
pub(crate) struct RestartTracker {
    budget: RestartBudget,
    recent: VecDeque<Instant>,
    total: u64,
}

impl RestartTracker {
    pub(crate) fn new(budget: RestartBudget) -> Self {
        Self {
            budget,
            recent: VecDeque::new(),
            total: 0,
        }
    }

    /// Records a restart at `now`; false when it would exceed the budget.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
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
    pub(crate) fn total(&self) -> u64 {
        self.total
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
}
