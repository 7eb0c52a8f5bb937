//! What a scaling decision is made of: the numbers the autoscaler reads each tick
//! ([`ScaleSignals`]), the waiting work per worker it derives from them
//! ([`ScalePressure`]), and the decision itself ([`ScaleDecision`]). These types sit below
//! `events` and `coordinator`, so both can name them: the coordinator decides, the event
//! bus carries the decision. `autoscaler` holds the rule that turns signals into a
//! decision, used by the coordinator's pool and by each node's own pool.

mod autoscaler;

pub(crate) use autoscaler::{Autoscaler, ScaleRule};

use std::time::SystemTime;

use serde::Serialize;

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
    /// Workers on online nodes and pulling workers (HTTP): they take the same backlog, so
    /// they count in the work per worker (the local pool grows only for what they cannot
    /// absorb).
    pub remote_workers: usize,
    /// Tasks running on online nodes and pulling workers.
    pub remote_busy_slots: u64,
    /// Slots on online nodes and pulling workers (for a pulling worker: the most tasks it
    /// asked for in one call).
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

/// Waiting work per worker, one number per place where work waits. Each is compared with
/// the autoscaler's thresholds on its own, so any one of them can cause (or hold back) a
/// change, and the decision names which.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ScalePressure {
    /// Queued tasks and submits in the queue's mailbox, per worker (local and remote: all
    /// of them pull from the same queue).
    pub backlog: f64,
    /// Messages in local workers' mailboxes, per local worker: a worker that cannot keep up
    /// with its own mailbox is pressure even when the queue is short.
    pub worker_mailbox: f64,
    /// Messages in online nodes' mailboxes, per remote worker: nodes that fall behind leave
    /// work for the local pool.
    pub node_mailbox: f64,
    /// Messages in the coordinator-side mailboxes (queue and pool), per local worker: while
    /// they are deep the coordinator is behind on its own work, and no worker is taken away.
    pub coordinator_mailbox: f64,
}

impl ScalePressure {
    /// The pressure that `signals` describe.
    pub fn of(s: &ScaleSignals) -> Self {
        let per = |n: u64, workers: usize| n as f64 / workers.max(1) as f64;
        Self {
            backlog: per(s.pressure(), s.workers + s.remote_workers),
            worker_mailbox: per(s.worker_mailbox, s.workers),
            node_mailbox: per(s.remote_mailbox, s.remote_workers),
            coordinator_mailbox: per(s.queue_mailbox + s.pool_mailbox, s.workers),
        }
    }

    /// The highest of the four.
    pub fn max(&self) -> f64 {
        self.backlog
            .max(self.worker_mailbox)
            .max(self.node_mailbox)
            .max(self.coordinator_mailbox)
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
    /// What caused it: `backlog` (queued work per worker), `worker_mailbox` (local
    /// workers' mailboxes), `node_mailbox` (online nodes' mailboxes), `idle` (every
    /// pressure low and a worker's worth of slots free), `below_min` or `manual`.
    #[schema(value_type = String)]
    pub reason: &'static str,
    /// Waiting work per worker of the signal that caused it (for `idle`, the highest of
    /// all; for `manual` and `below_min`, the backlog's).
    pub pressure_per_worker: f64,
    /// Every pressure, per worker, as derived from `signals`.
    pub pressure: ScalePressure,
    /// Everything read.
    pub signals: ScaleSignals,
    /// When (Unix ms in JSON).
    #[serde(with = "crate::util::system_time_ms", rename = "at_ms")]
    #[schema(value_type = u64)]
    pub at: SystemTime,
}

/// One decision or outcome of a node group's scaling (see `wrangle::launch`): a node
/// launched, joined, drained, terminated or lost, with the numbers that caused it.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ScalingEvent {
    /// The node group.
    pub group: String,
    /// What happened: `launch` (asked), `launched` (the provider started it),
    /// `launch_failed`, `joined`, `drain`, `undrain`, `terminate` (asked), `terminated`,
    /// `terminate_failed`, `lost` (the provider no longer runs it) or `adopted` (found
    /// running with the group's label, online).
    pub action: String,
    /// The node, when the event is about one.
    pub node: Option<String>,
    /// Why, in words (`3 tasks wait for this group and its nodes have 0 slots`).
    pub reason: String,
    /// Tasks waiting that only this group serves, plus its nodes' mailbox depths.
    pub waiting: u64,
    /// The group's nodes at the time (starting and draining ones included).
    pub nodes: usize,
    /// Tasks leased or running on the node, when the event is about one.
    pub in_flight: u64,
    /// The provider's error, for a failed call.
    pub error: Option<String>,
    /// When (Unix ms in JSON).
    #[serde(with = "crate::util::system_time_ms", rename = "at_ms")]
    #[schema(value_type = u64)]
    pub at: SystemTime,
}
