//! What the API shows of a node group: its bounds, its nodes with their states, its
//! failures and counters.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::plan::{Counts, MemberState, Plan, DRAIN_BUCKETS};

/// A group as the API shows it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct GroupStatus {
    /// Its name.
    pub name: String,
    /// Which kind of launcher starts its nodes.
    pub launcher: String,
    /// Its labels.
    pub labels: Vec<String>,
    /// Its task types.
    pub task_types: Vec<String>,
    /// Fewest nodes.
    pub min_nodes: usize,
    /// Most nodes.
    pub max_nodes: usize,
    /// Tasks waiting that only this group serves, plus its nodes' mailbox depths, at the
    /// last tick.
    pub waiting: u64,
    /// Its nodes.
    pub members: Vec<MemberStatus>,
    /// Launch failures in a row.
    pub failures: u32,
    /// Milliseconds until launches may start again after failures (0: now).
    pub backoff_ms: u64,
    /// The last launch error.
    pub last_error: Option<String>,
    /// What it has done since the coordinator started.
    pub counts: Counts,
    /// Drain times (drain begun to node terminated) per bucket, for `/metrics`: each
    /// bucket's upper bound in seconds and the drains in it, not cumulative; the last bound
    /// is `f64::INFINITY`. They add up to `counts.drained`.
    #[serde(skip)]
    pub(crate) drain_times: Vec<(f64, u64)>,
}

/// One node of a group.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct MemberStatus {
    /// The node's name.
    pub node: String,
    /// `launching`, `joining`, `running`, `draining` or `stopping`.
    pub state: MemberState,
    /// The provider's id for it, once launched.
    pub resource: Option<String>,
    /// Milliseconds in its state.
    pub in_state_ms: u64,
    /// Milliseconds it has been idle (running nodes with nothing in flight).
    pub idle_ms: Option<u64>,
}

impl GroupStatus {
    /// Group `p` (whose nodes `launcher` starts) as of `now`.
    pub(crate) fn of(p: &Plan, launcher: &str, now: Instant) -> Self {
        let ms = |d: Duration| d.as_millis() as u64;
        GroupStatus {
            name: p.cfg.name.clone(),
            launcher: launcher.to_string(),
            labels: p.cfg.labels.clone(),
            task_types: p.cfg.task_types.clone(),
            min_nodes: p.cfg.min_nodes,
            max_nodes: p.cfg.max_nodes,
            waiting: p.waiting,
            members: p
                .members
                .iter()
                .map(|(name, m)| MemberStatus {
                    node: name.clone(),
                    state: m.state,
                    resource: m.resource.clone(),
                    in_state_ms: ms(now.saturating_duration_since(m.since)),
                    idle_ms: m.idle_since.map(|t| ms(now.saturating_duration_since(t))),
                })
                .collect(),
            failures: p.failures,
            backoff_ms: p
                .retry_at
                .map_or(0, |t| ms(t.saturating_duration_since(now))),
            last_error: p.last_error.clone(),
            counts: p.counts,
            drain_times: DRAIN_BUCKETS
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .zip(p.drain_buckets)
                .collect(),
        }
    }
}
