//! A worker's timers: heartbeats, and the lease extensions of attempts without a timeout.

use std::time::Duration;

use super::{WorkerMsg, WorkerState};
use crate::task::LeaseToken;

/// A running attempt whose lease its worker extends.
pub(super) struct Extending {
    /// The lease's token, which the extend carries.
    pub(super) token: LeaseToken,
    /// How often to extend: a third of the lease's `lease_time`.
    pub(super) every: Duration,
    /// When it was granted or last extended.
    pub(super) last: tokio::time::Instant,
}

impl WorkerState {
    /// Sends `Extend` to this worker after `after`, unless one is already on its way.
    pub(super) fn schedule_extend(&mut self, after: Duration) {
        if self.extend_scheduled {
            return;
        }
        self.extend_scheduled = true;
        let me = self.me.clone();
        let stop = self.root.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(after) => { let _ = me.send(WorkerMsg::Extend); }
            }
        });
    }

    /// Extends, in one message, every lease due for it (a third of its `lease_time` since
    /// the last), and schedules the next round while any such lease runs.
    pub(super) fn extend_leases(&mut self) {
        self.extend_scheduled = false;
        let now = tokio::time::Instant::now();
        let mut due = Vec::new();
        let mut next: Option<Duration> = None;
        for (id, e) in self.extending.iter_mut() {
            if now.duration_since(e.last) >= e.every {
                e.last = now;
                due.push((*id, e.token));
            }
            let wait = e.every.saturating_sub(now.duration_since(e.last));
            next = Some(next.map_or(wait, |n| n.min(wait)));
        }
        if !due.is_empty() {
            self.queue.extend(self.shared.id.clone(), due);
        }
        if let Some(wait) = next {
            self.schedule_extend(wait.max(Duration::from_millis(1)));
        }
    }
}

/// Heartbeats through the counted mailbox, so a stalled worker stops heartbeating.
pub(super) fn spawn_heartbeat(state: &WorkerState) {
    let me = state.me.clone();
    let every = state.shared.config.heartbeat_interval;
    let stop = state.root.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {
                    if me.send(WorkerMsg::Heartbeat).is_err() {
                        return;
                    }
                }
            }
        }
    });
}
