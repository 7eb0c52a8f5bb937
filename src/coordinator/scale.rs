//! The coordinator's scaling steps: reading the signals, applying the autoscaler's
//! decision or a manual one, and keeping the record.

use tokio::time::Instant;

use super::actor::CoordinatorState;
use crate::error::Error;
use crate::events::EventKind;
use crate::scaling::{ScaleDecision, ScalePressure, ScaleSignals};

/// How many scale decisions the coordinator keeps for the API.
const DECISIONS_KEPT: usize = 100;

impl CoordinatorState {
    async fn signals(&self) -> Result<ScaleSignals, Error> {
        let queue = self.shared.queue.stats().await?;
        let pool = self.pool();
        let p = pool.stats().await?;
        let remote = *self.shared.remote.read().unwrap_or_else(|e| e.into_inner());
        // Pulling workers take their share of the backlog like nodes' workers.
        let (pulling, pull_busy, pull_slots) = self.shared.pull.load();
        Ok(ScaleSignals {
            remote_workers: remote.workers + pulling,
            remote_busy_slots: remote.busy_slots + pull_busy,
            remote_total_slots: remote.total_slots + pull_slots,
            remote_mailbox: remote.mailbox,
            backlog: queue.queued.saturating_sub(queue.unroutable),
            queue_mailbox: self.shared.queue.mailbox_depth(),
            pool_mailbox: p.mailbox_depth,
            worker_mailbox: p.worker_mailbox_depth,
            busy_slots: p.current_tasks,
            total_slots: p.total_slots,
            workers: p.worker_count - p.draining,
        })
    }

    pub(super) async fn autoscale(&mut self) {
        let signals = match self.signals().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "autoscaler could not read its signals");
                return;
            }
        };
        let pool = self.pool();
        let Some(decision) = self.autoscaler.decide(pool.name(), signals, Instant::now()) else {
            return;
        };
        match pool.scale(decision.to).await {
            Ok(_) => {
                tracing::info!(
                    from = decision.from,
                    to = decision.to,
                    reason = decision.reason,
                    pressure_per_worker = decision.pressure_per_worker,
                    backlog = decision.signals.backlog,
                    worker_mailbox = decision.signals.worker_mailbox,
                    node_mailbox = decision.signals.remote_mailbox,
                    queue_mailbox = decision.signals.queue_mailbox,
                    pool_mailbox = decision.signals.pool_mailbox,
                    "autoscaled"
                );
                self.record(decision);
            }
            Err(e) => tracing::warn!(error = %e, "autoscale failed"),
        }
    }

    pub(super) async fn manual_scale(&mut self, target: usize) -> Result<ScaleDecision, Error> {
        let signals = self.signals().await?;
        let pressure = ScalePressure::of(&signals);
        let pool = self.pool();
        let from = pool.scale(target).await?;
        self.autoscaler.changed(Instant::now());
        let decision = ScaleDecision {
            pool: pool.name().to_string(),
            from,
            to: target,
            reason: "manual",
            pressure_per_worker: pressure.backlog,
            pressure,
            signals,
            at: std::time::SystemTime::now(),
        };
        self.record(decision.clone());
        Ok(decision)
    }

    fn record(&self, decision: ScaleDecision) {
        let mut d = self
            .shared
            .decisions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if d.len() == DECISIONS_KEPT {
            d.pop_front();
        }
        d.push_back(decision.clone());
        self.events.publish(EventKind::Scaled(decision));
    }
}
