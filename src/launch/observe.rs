//! What a tick observes: the gate's view of each node, and the queued tasks only a group
//! can serve.

use super::actor::ServedElsewhere;
use super::plan::NodeView;
use super::NodeGroupConfig;
use crate::cluster::{NodeStatus, RemoteNode};
use crate::queue::ClassBacklog;

/// How the gate's view of a node reads for a plan.
pub(super) fn view(n: &RemoteNode) -> NodeView {
    NodeView {
        online: n.status == NodeStatus::Online,
        in_flight: n.in_flight.max(n.pool.current_tasks),
        slots: n.pool.total_slots,
        mailbox: n.pool.mailbox_depth + n.pool.worker_mailbox_depth,
    }
}

/// True when online node `n` can take tasks of `class`.
fn node_serves(n: &RemoteNode, class: &ClassBacklog) -> bool {
    n.status == NodeStatus::Online
        && !n.draining
        && n.task_types.iter().any(|t| **t == *class.task_type)
        && crate::worker::labels_meet(&n.labels, &class.labels)
}

/// Queued tasks that group `cfg` serves and nothing outside it does: not the
/// coordinator's pools, not pulling workers, not an online node that is not its own.
pub(super) fn queued_for(
    cfg: &NodeGroupConfig,
    own: &dyn Fn(&str) -> bool,
    classes: &[ClassBacklog],
    nodes: &[RemoteNode],
    elsewhere: &ServedElsewhere,
) -> u64 {
    classes
        .iter()
        .filter(|c| cfg.serves(&c.task_type, &c.labels))
        .filter(|c| !elsewhere(&c.task_type, &c.labels))
        .filter(|c| !nodes.iter().any(|n| !own(&n.name) && node_serves(n, c)))
        .map(|c| c.queued as u64)
        .sum()
}
