//! What the coordinator reports about itself: its counters and what a stop left behind.

use serde::Serialize;

use crate::pool::PoolStats;
use crate::queue::QueueStats;
use crate::scaling::ScaleDecision;

/// Mailbox depths of the coordinator's actors.
#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct MailboxStats {
    /// The coordinator actor.
    pub coordinator: u64,
    /// The queue actor.
    pub queue: u64,
    /// The pool actor.
    pub pool: u64,
    /// All local workers, summed.
    pub workers: u64,
}

/// What `get_stats` returns.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct CoordinatorStats {
    /// True while the coordinator runs.
    pub running: bool,
    /// Seconds since start.
    pub uptime_secs: f64,
    /// The queue's counters.
    pub queue: QueueStats,
    /// The local pool's counters.
    pub workers: PoolStats,
    /// Mailbox depths.
    pub mailboxes: MailboxStats,
    /// Times the coordinator restarted a failed pool (the local one or an added one).
    pub pool_restarts: u64,
    /// Times the coordinator restarted the cluster's gate (counted apart from the pools).
    pub gate_restarts: u64,
    /// The last scaling change.
    pub last_scale: Option<ScaleDecision>,
    /// The store, when tasks are stored.
    pub store: Option<crate::store::StoreStats>,
    /// The cluster, when nodes can join.
    pub cluster: Option<crate::cluster::ClusterStats>,
}

/// What a stop left behind.
#[derive(Clone, Debug, Serialize)]
pub struct StopReport {
    /// Whether running tasks were allowed to finish.
    pub graceful: bool,
    /// Tasks still waiting or running when the runtime stopped (0 after a graceful stop
    /// that finished within `shutdown_timeout`).
    pub unfinished: usize,
    /// Tasks completed over the coordinator's life.
    pub completed: u64,
}
