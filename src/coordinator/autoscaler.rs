//! The autoscaler's rule, as a pure function of what it reads each tick.

use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;

/// What the autoscaler reads each tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ScaleSignals {
    /// Queued tasks that the pool's workers can take (unroutable ones excluded: more of the
    /// same workers would not help them).
    pub backlog: usize,
    /// Messages waiting in the queue actor's mailbox (submits not yet counted in `backlog`).
    pub queue_mailbox: u64,
    /// Messages waiting in the pool actor's mailbox.
    pub pool_mailbox: u64,
    /// Messages waiting in the workers' mailboxes, summed.
    pub worker_mailbox: u64,
    /// Tasks running on the pool.
    pub busy_slots: u64,
    /// Slots on the pool's active workers.
    pub total_slots: u64,
    /// Active (not draining) workers.
    pub workers: usize,
    /// Workers on online nodes: they take the same backlog, so they count in the work per
    /// worker (the local pool grows only for what they cannot absorb).
    pub remote_workers: usize,
    /// Tasks running on online nodes.
    pub remote_busy_slots: u64,
    /// Slots on online nodes.
    pub remote_total_slots: u64,
    /// Messages waiting in online nodes' pool and worker mailboxes, summed.
    pub remote_mailbox: u64,
}

impl ScaleSignals {
    /// Work waiting for this pool: queued tasks plus submits still in the queue's mailbox.
    pub fn pressure(&self) -> u64 {
        self.backlog as u64 + self.queue_mailbox
    }
}

/// One change of a pool's size, with the numbers that caused it.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ScaleDecision {
    /// The pool.
    pub pool: String,
    /// Workers before.
    pub from: usize,
    /// Workers after.
    pub to: usize,
    /// `backlog`, `idle`, `below_min` or `manual`.
    #[schema(value_type = String)]
    pub reason: &'static str,
    /// Waiting work per active worker when decided.
    pub pressure_per_worker: f64,
    /// Everything read.
    pub signals: ScaleSignals,
    /// When (Unix ms in JSON).
    #[serde(with = "crate::util::system_time_ms", rename = "at_ms")]
    #[schema(value_type = u64)]
    pub at: SystemTime,
}

/// Bounds and thresholds of the autoscaler.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ScaleRule {
    pub(crate) min_workers: usize,
    pub(crate) max_workers: usize,
    pub(crate) scale_up_threshold: f64,
    pub(crate) scale_down_threshold: f64,
    pub(crate) cooldown: Duration,
}

/// The autoscaler: a rule and the time of its last change.
#[derive(Debug)]
pub(crate) struct Autoscaler {
    rule: ScaleRule,
    last_change: Option<Instant>,
}

impl Autoscaler {
    pub(crate) fn new(rule: ScaleRule) -> Self {
        Self {
            rule,
            last_change: None,
        }
    }

    /// Notes a change made by someone else (a manual scale), which also starts a cool-down.
    pub(crate) fn changed(&mut self, now: Instant) {
        self.last_change = Some(now);
    }

    /// Decides a new size, or none. Up when waiting work per worker is above
    /// `scale_up_threshold` (to as many workers as keep it at the threshold); down by one
    /// when it is below `scale_down_threshold` and a worker's worth of slots is idle. Never
    /// within `cooldown` of the last change, never outside `min..=max`.
    pub(crate) fn decide(
        &mut self,
        pool: &str,
        s: ScaleSignals,
        now: Instant,
    ) -> Option<ScaleDecision> {
        let r = self.rule;
        if let Some(last) = self.last_change {
            if now.saturating_duration_since(last) < r.cooldown {
                return None;
            }
        }
        let workers = (s.workers + s.remote_workers).max(1);
        let per_worker = s.pressure() as f64 / workers as f64;
        let (to, reason) = if s.workers < r.min_workers {
            (r.min_workers, "below_min")
        } else if per_worker > r.scale_up_threshold && s.workers < r.max_workers {
            let wanted = (s.pressure() as f64 / r.scale_up_threshold).ceil() as usize;
            let local = wanted.saturating_sub(s.remote_workers);
            (local.clamp(s.workers + 1, r.max_workers), "backlog")
        } else if per_worker < r.scale_down_threshold && s.workers > r.min_workers {
            let slots_per_worker = s.total_slots / s.workers as u64;
            let idle = s.total_slots.saturating_sub(s.busy_slots);
            if idle < slots_per_worker.max(1) {
                return None;
            }
            (s.workers - 1, "idle")
        } else {
            return None;
        };
        if to == s.workers {
            return None;
        }
        self.last_change = Some(now);
        Some(ScaleDecision {
            pool: pool.to_string(),
            from: s.workers,
            to,
            reason,
            pressure_per_worker: per_worker,
            signals: s,
            at: SystemTime::now(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scaler() -> Autoscaler {
        Autoscaler::new(ScaleRule {
            min_workers: 1,
            max_workers: 8,
            scale_up_threshold: 10.0,
            scale_down_threshold: 2.0,
            cooldown: Duration::from_secs(30),
        })
    }

    fn signals(backlog: usize, workers: usize, busy: u64) -> ScaleSignals {
        ScaleSignals {
            backlog,
            workers,
            busy_slots: busy,
            total_slots: workers as u64 * 4,
            ..Default::default()
        }
    }

    #[test]
    fn scales_up_to_meet_the_threshold_within_max() {
        let now = Instant::now();
        let d = scaler().decide("p", signals(45, 2, 8), now).unwrap();
        assert_eq!((d.from, d.to, d.reason), (2, 5, "backlog"));
        let d = scaler().decide("p", signals(1000, 2, 8), now).unwrap();
        assert_eq!(d.to, 8);
    }

    #[test]
    fn scales_down_one_at_a_time_only_with_idle_slots() {
        let now = Instant::now();
        assert_eq!(scaler().decide("p", signals(0, 4, 2), now).unwrap().to, 3);
        assert!(
            scaler().decide("p", signals(0, 4, 16), now).is_none(),
            "all busy"
        );
        assert!(
            scaler().decide("p", signals(0, 1, 0), now).is_none(),
            "at min"
        );
    }

    #[test]
    fn cooldown_blocks_a_second_change() {
        let mut s = scaler();
        let now = Instant::now();
        assert!(s.decide("p", signals(100, 2, 8), now).is_some());
        assert!(s
            .decide("p", signals(0, 8, 0), now + Duration::from_secs(29))
            .is_none());
        assert!(s
            .decide("p", signals(0, 8, 0), now + Duration::from_secs(30))
            .is_some());
    }

    #[test]
    fn remote_workers_share_the_backlog() {
        let now = Instant::now();
        // 45 waiting over 2 local workers would need 5; 3 online remote workers take their
        // share, so the local pool grows to 2 + what is left.
        let s = ScaleSignals {
            remote_workers: 3,
            remote_total_slots: 12,
            ..signals(45, 2, 8)
        };
        let d = scaler().decide("p", s, now);
        assert!(
            d.is_none(),
            "45 over 5 workers is 9 per worker, under 10: {d:?}"
        );
        let s = ScaleSignals {
            remote_workers: 3,
            ..signals(80, 2, 8)
        };
        assert_eq!(scaler().decide("p", s, now).unwrap().to, 5);
    }

    #[test]
    fn counts_submits_still_in_the_queue_mailbox() {
        let s = ScaleSignals {
            queue_mailbox: 50,
            ..signals(0, 1, 4)
        };
        assert_eq!(
            scaler().decide("p", s, Instant::now()).unwrap().reason,
            "backlog"
        );
    }
}
