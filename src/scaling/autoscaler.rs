//! The autoscaler's rule, as a pure function of what it reads each tick.
//!
//! Work waits in four places, and each counts on its own (see [`ScalePressure`]): the
//! queue's backlog, the local workers' mailboxes, the online nodes' mailboxes, and the
//! coordinator-side mailboxes (queue and pool). Any of the first three above
//! `scale_up_threshold` per worker grows the pool; the pool shrinks only while all four
//! are below `scale_down_threshold`.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::scaling::{ScaleDecision, ScalePressure, ScaleSignals};

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

    /// Decides a new size, or none. Up when any pressure (backlog, worker mailboxes, node
    /// mailboxes) per worker is above `scale_up_threshold`, to as many workers as bring the
    /// highest back to the threshold; the decision's reason names the signal that asked for
    /// the most. Down by one when every pressure, the coordinator-side mailboxes' included,
    /// is below `scale_down_threshold` and a worker's worth of slots is idle. Never within
    /// `cooldown` of the last change, never outside `min..=max`.
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
        let p = ScalePressure::of(&s);
        let (to, reason, per_worker) = if s.workers < r.min_workers {
            (r.min_workers, "below_min", p.backlog)
        } else if let Some((to, reason, per_worker)) = self.scale_up(&s, &p) {
            (to, reason, per_worker)
        } else if p.max() < r.scale_down_threshold && s.workers > r.min_workers {
            let slots_per_worker = s.total_slots / s.workers as u64;
            let idle = s.total_slots.saturating_sub(s.busy_slots);
            if idle < slots_per_worker.max(1) {
                return None;
            }
            (s.workers - 1, "idle", p.max())
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
            pressure: p,
            signals: s,
            at: SystemTime::now(),
        })
    }

    /// The size the most pressing signal above `scale_up_threshold` asks for, with its name
    /// and pressure per worker; none when all are at or below it, or the pool is at its max.
    fn scale_up(&self, s: &ScaleSignals, p: &ScalePressure) -> Option<(usize, &'static str, f64)> {
        let r = self.rule;
        if s.workers >= r.max_workers {
            return None;
        }
        let up = r.scale_up_threshold;
        // Workers that keep `n` waiting messages at the threshold.
        let workers_for = |n: u64| (n as f64 / up).ceil() as usize;
        let mut wanted = Vec::with_capacity(3);
        if p.backlog > up {
            // Remote workers take their share of the same backlog.
            let all = workers_for(s.pressure());
            wanted.push((all.saturating_sub(s.remote_workers), "backlog", p.backlog));
        }
        if p.worker_mailbox > up {
            wanted.push((
                workers_for(s.worker_mailbox),
                "worker_mailbox",
                p.worker_mailbox,
            ));
        }
        if p.node_mailbox > up {
            // What the nodes hold beyond the threshold is left for local workers to absorb.
            let excess = s.remote_mailbox as f64 - up * s.remote_workers as f64;
            let more = (excess / up).ceil().max(1.0) as usize;
            wanted.push((s.workers + more, "node_mailbox", p.node_mailbox));
        }
        // The largest ask wins; on a tie, the first signal (backlog, then workers, then nodes).
        let (to, reason, per_worker) = wanted.into_iter().rev().max_by_key(|(to, _, _)| *to)?;
        Some((to.clamp(s.workers + 1, r.max_workers), reason, per_worker))
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

    // Each signal on its own, on tokio's paused clock (the cool-down runs on it).

    #[tokio::test(start_paused = true)]
    async fn backed_up_worker_mailboxes_scale_up_with_an_empty_queue() {
        let mut a = scaler();
        // 45 messages in 2 workers' mailboxes: 22.5 each, over 10.
        let s = ScaleSignals {
            worker_mailbox: 45,
            ..signals(0, 2, 8)
        };
        let d = a.decide("p", s, Instant::now()).unwrap();
        assert_eq!((d.reason, d.from, d.to), ("worker_mailbox", 2, 5));
        assert_eq!(d.pressure_per_worker, 22.5);
        assert_eq!(d.pressure.worker_mailbox, 22.5);
        assert_eq!(d.pressure.backlog, 0.0);
        assert_eq!(d.signals.worker_mailbox, 45);
        // The cool-down holds the next change, then the same signal asks again.
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(a.decide("p", s, Instant::now()).is_none());
        tokio::time::advance(Duration::from_secs(1)).await;
        let s = ScaleSignals {
            worker_mailbox: 100,
            ..signals(0, 5, 20)
        };
        assert_eq!(a.decide("p", s, Instant::now()).unwrap().to, 8);
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_mailbox_at_the_threshold_is_not_pressure_yet() {
        // 20 over 2 workers is 10 each: not above 10, and too much to shrink.
        let s = ScaleSignals {
            worker_mailbox: 20,
            ..signals(0, 2, 0)
        };
        assert!(scaler().decide("p", s, Instant::now()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn backed_up_node_mailboxes_grow_the_local_pool() {
        // 3 remote workers hold 60 messages (20 each): 30 beyond the threshold, which 3
        // more local workers absorb. The queue itself is empty.
        let s = ScaleSignals {
            remote_workers: 3,
            remote_total_slots: 12,
            remote_mailbox: 60,
            ..signals(0, 2, 8)
        };
        let d = scaler().decide("p", s, Instant::now()).unwrap();
        assert_eq!((d.reason, d.from, d.to), ("node_mailbox", 2, 5));
        assert_eq!(d.pressure.node_mailbox, 20.0);
        assert_eq!(d.pressure_per_worker, 20.0);
        assert_eq!(d.signals.remote_mailbox, 60);
        // Nodes that keep up are no reason to grow.
        let s = ScaleSignals {
            remote_mailbox: 30,
            ..s
        };
        assert!(scaler().decide("p", s, Instant::now()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn the_signal_that_asks_for_most_names_the_decision() {
        // Backlog asks for 3 workers, worker mailboxes for 8.
        let s = ScaleSignals {
            worker_mailbox: 80,
            ..signals(30, 2, 8)
        };
        let d = scaler().decide("p", s, Instant::now()).unwrap();
        assert_eq!((d.reason, d.to), ("worker_mailbox", 8));
        assert_eq!(d.pressure.backlog, 15.0);
        // And the other way round.
        let s = ScaleSignals {
            worker_mailbox: 30,
            ..signals(80, 2, 8)
        };
        let d = scaler().decide("p", s, Instant::now()).unwrap();
        assert_eq!((d.reason, d.to), ("backlog", 8));
        assert_eq!(d.pressure.worker_mailbox, 15.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deep_pool_mailbox_holds_scale_down_until_it_drains() {
        let mut a = scaler();
        // Idle 4 workers would shrink to 3, but 8 messages wait for the pool (2 per worker).
        let held = ScaleSignals {
            pool_mailbox: 8,
            ..signals(0, 4, 2)
        };
        assert!(a.decide("p", held, Instant::now()).is_none());
        tokio::time::advance(Duration::from_secs(1)).await;
        let drained = ScaleSignals {
            pool_mailbox: 7,
            ..held
        };
        let d = a.decide("p", drained, Instant::now()).unwrap();
        assert_eq!((d.reason, d.from, d.to), ("idle", 4, 3));
        assert_eq!(d.pressure.coordinator_mailbox, 1.75);
        assert_eq!(
            d.pressure_per_worker, 1.75,
            "the highest pressure, still low"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_deep_queue_mailbox_holds_scale_down() {
        // 8 messages in the queue's mailbox over 4 idle workers: 2 per worker.
        let s = ScaleSignals {
            queue_mailbox: 8,
            ..signals(0, 4, 2)
        };
        assert!(scaler().decide("p", s, Instant::now()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn busy_worker_or_node_mailboxes_hold_scale_down() {
        let idle = signals(0, 4, 2);
        assert!(scaler().decide("p", idle, Instant::now()).is_some());
        let workers = ScaleSignals {
            worker_mailbox: 8,
            ..idle
        };
        assert!(scaler().decide("p", workers, Instant::now()).is_none());
        let nodes = ScaleSignals {
            remote_workers: 2,
            remote_mailbox: 4,
            ..idle
        };
        assert!(scaler().decide("p", nodes, Instant::now()).is_none());
    }
}
