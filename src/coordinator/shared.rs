//! What the coordinator actor shares with its handles: its children's handles, the last
//! scaling decisions, the cluster, and its restart counters.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use crate::handler::HandlerRegistry;
use crate::pool::PoolRef;
use crate::queue::QueueRef;
use crate::scaling::ScaleDecision;
use crate::supervision::Supervisor;

/// What the coordinator shares with its handles.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The queue (never replaced: its end stops the coordinator).
    pub(crate) queue: QueueRef,
    /// Workers outside the process that pull tasks through calls (HTTP).
    pub(crate) pull: crate::pull::PullWorkers,
    /// Replaced when the pool is restarted.
    pub(crate) pool: RwLock<PoolRef>,
    /// The last scaling changes, oldest first.
    pub(crate) decisions: Mutex<VecDeque<ScaleDecision>>,
    /// Online nodes' load, written by the cluster's gate.
    pub(crate) remote: crate::cluster::RemoteLoadCell,
    /// The listener for nodes, once started: its gate is this actor's child.
    pub(crate) cluster: RwLock<Option<crate::cluster::Cluster>>,
    /// The node groups, once started: their actor is this actor's child.
    pub(crate) node_groups: RwLock<Option<crate::launch::NodeGroups>>,
    /// The handlers of pools added with `Coordinator::add_pool`: their task types are
    /// served here too.
    pub(crate) extra_handlers: RwLock<Vec<HandlerRegistry>>,
    /// Restarts of the coordinator's children, for `get_stats`.
    pub(crate) restarts: Restarts,
}

/// How many times the coordinator restarted its children, by kind; written by the actor
/// after each supervision event, read by `get_stats`.
#[derive(Debug, Default)]
pub(crate) struct Restarts {
    pools: AtomicU64,
    gate: AtomicU64,
}

impl Restarts {
    pub(super) fn record(&self, pools: &Supervisor, gates: &Supervisor) {
        self.pools.store(pools.restarts(), Ordering::Relaxed);
        self.gate.store(gates.restarts(), Ordering::Relaxed);
    }

    /// Pool restarts (the local pool and added ones).
    pub(crate) fn pools(&self) -> u64 {
        self.pools.load(Ordering::Relaxed)
    }

    /// Cluster gate restarts.
    pub(crate) fn gate(&self) -> u64 {
        self.gate.load(Ordering::Relaxed)
    }
}
