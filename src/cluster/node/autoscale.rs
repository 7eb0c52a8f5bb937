//! The node's own autoscaler: it sizes the node's pool between `workers` and
//! `max_workers` with the rule the coordinator uses for its local pool, reading the node's
//! share of the coordinator's backlog (sent with each heartbeat's answer, see the gate's
//! `backlog`) and the pool's own mailbox depths and busy slots.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::pool::PoolRef;
use crate::scaling::{Autoscaler, ScaleRule, ScaleSignals};

/// Starts the autoscaler of `pool`, looking every `every`; it ends when the pool is gone.
/// The pool grows when more than one worker's slots (`slots`) wait per worker, and shrinks
/// by one when less than one task waits per worker and a worker's slots are idle.
pub(super) fn spawn(
    pool: PoolRef,
    backlog: Arc<AtomicU64>,
    (min_workers, max_workers): (usize, usize),
    slots: u32,
    cooldown: Duration,
    every: Duration,
) -> JoinHandle<()> {
    let rule = ScaleRule {
        min_workers,
        max_workers,
        scale_up_threshold: f64::from(slots.max(1)),
        scale_down_threshold: 1.0,
        cooldown,
    };
    tokio::spawn(async move {
        let mut scaler = Autoscaler::new(rule);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Ok(p) = pool.stats().await else {
                return; // the pool stopped: so does its autoscaler
            };
            let signals = ScaleSignals {
                backlog: backlog.load(Ordering::Relaxed) as usize,
                pool_mailbox: p.mailbox_depth,
                worker_mailbox: p.worker_mailbox_depth,
                busy_slots: p.current_tasks,
                total_slots: p.total_slots,
                workers: p.worker_count.saturating_sub(p.draining),
                ..ScaleSignals::default()
            };
            let Some(d) = scaler.decide(pool.name(), signals, Instant::now()) else {
                continue;
            };
            match pool.scale(d.to).await {
                Ok(_) => tracing::info!(
                    from = d.from,
                    to = d.to,
                    reason = d.reason,
                    backlog = d.signals.backlog,
                    worker_mailbox = d.signals.worker_mailbox,
                    "node pool autoscaled"
                ),
                Err(e) => tracing::warn!(error = %e, "node pool autoscale failed"),
            }
        }
    })
}
