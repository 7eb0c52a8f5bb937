//! The cluster's counters ([`ClusterStats`]) and the remote nodes' summed load, both
//! written by the gate and read by the coordinator.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;

/// The cluster's counters, as `/stats` and `/metrics` show them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ClusterStats {
    /// Nodes online now.
    pub online: u64,
    /// Joins accepted (first joins and re-joins).
    pub joins: u64,
    /// Times a node was given up (connection closed or silent).
    pub lost: u64,
    /// Joins refused (a flapping node, a name taken by the coordinator).
    pub refused: u64,
    /// Frames from peers that did not decode, dropped.
    pub bad_frames: u64,
    /// Connections closed before authenticating: over the limit of pending handshakes,
    /// or silent past the handshake timeout.
    pub handshakes_refused: u64,
    /// Frames refused because they named a node other than the one whose session they
    /// came on (a node speaking, reporting or leaving for another).
    pub forged_frames: u64,
    /// Times a node asked for credits past its workers' declared slots or its declared
    /// capacity, and got only those.
    pub credits_clamped: u64,
}

/// The counters behind [`ClusterStats`], written by the gate.
#[derive(Debug, Default)]
pub(crate) struct ClusterCounters {
    pub(crate) online: AtomicU64,
    pub(crate) joins: AtomicU64,
    pub(crate) lost: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) bad_frames: AtomicU64,
    pub(crate) handshakes_refused: AtomicU64,
    pub(crate) forged_frames: AtomicU64,
    pub(crate) credits_clamped: AtomicU64,
}

impl ClusterCounters {
    /// Adds one to `counter`.
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub(crate) fn snapshot(&self) -> ClusterStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ClusterStats {
            online: get(&self.online),
            joins: get(&self.joins),
            lost: get(&self.lost),
            refused: get(&self.refused),
            bad_frames: get(&self.bad_frames),
            handshakes_refused: get(&self.handshakes_refused),
            forged_frames: get(&self.forged_frames),
            credits_clamped: get(&self.credits_clamped),
        }
    }
}

/// The summed load of online nodes, as the autoscaler reads it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct RemoteLoad {
    pub(crate) workers: usize,
    pub(crate) busy_slots: u64,
    pub(crate) total_slots: u64,
    pub(crate) mailbox: u64,
}

/// Shared between the gate (which writes it on heartbeats) and the coordinator actor.
pub(crate) type RemoteLoadCell = Arc<std::sync::RwLock<RemoteLoad>>;
