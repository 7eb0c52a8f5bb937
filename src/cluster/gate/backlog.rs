//! Each node's share of the waiting work it can serve, sent with every heartbeat's answer
//! so that its own pool's autoscaler can size the pool (as the coordinator's autoscaler
//! sizes the local pool from the queue's backlog).
//!
//! At each tick the gate asks the queue for its backlog per routing class (off the gate's
//! path: the answer comes back as a message). A class's waiting tasks are split among the
//! online, undrained nodes that serve it (its task type among their workers' types, its
//! labels met by theirs) in proportion to their slots; a node's share is the sum over the
//! classes it serves, rounded up.

use ractor::ActorRef;

use super::nodes::NodeStatus;
use super::{GateMsg, GateState};
use crate::queue::ClassBacklog;
use crate::worker::labels_meet;

impl GateState {
    /// Asks the queue for its backlog per class; the answer arrives as [`GateMsg::Backlog`].
    pub(super) fn fetch_backlog(&self, myself: ActorRef<GateMsg>) {
        if !self.nodes.values().any(|n| n.status == NodeStatus::Online) {
            return;
        }
        let queue = self.args.queue.clone();
        tokio::spawn(async move {
            match queue.class_backlog().await {
                Ok(classes) => {
                    let _ = myself.cast(GateMsg::Backlog(classes));
                }
                Err(e) => tracing::debug!(error = %e, "the gate could not read the backlog"),
            }
        });
    }

    /// Works out each online node's share of `classes`.
    pub(super) fn share_backlog(&mut self, classes: &[ClassBacklog]) {
        let serving: Vec<(&String, u64, Vec<bool>)> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.status == NodeStatus::Online && !n.draining)
            .map(|(name, n)| {
                let slots = u64::from(n.hello.capacity)
                    .max(n.load.pool.total_slots)
                    .max(1);
                let serves = classes
                    .iter()
                    .map(|c| {
                        n.task_types.contains(&c.task_type)
                            && labels_meet(&n.hello.labels, &c.labels)
                    })
                    .collect();
                (name, slots, serves)
            })
            .collect();
        let totals: Vec<u64> = (0..classes.len())
            .map(|i| {
                serving
                    .iter()
                    .filter(|(_, _, s)| s[i])
                    .map(|(_, slots, _)| slots)
                    .sum()
            })
            .collect();
        let shares: Vec<(String, u64)> = serving
            .iter()
            .map(|(name, slots, serves)| {
                let share = classes
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| serves[*i])
                    .map(|(i, c)| (c.queued as u64 * slots).div_ceil(totals[i].max(1)))
                    .sum();
                ((*name).clone(), share)
            })
            .collect();
        for n in self.nodes.values_mut() {
            n.backlog_share = 0;
        }
        for (name, share) in shares {
            if let Some(n) = self.nodes.get_mut(&name) {
                n.backlog_share = share;
            }
        }
    }
}
