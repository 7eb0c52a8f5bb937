//! Liveness: a node silent past the timeout, or whose session closed, is given up, and
//! every lease its workers hold goes back to the queue.

use std::time::{Duration, Instant};

use super::nodes::{NodeStatus, RemoteWorker};
use super::GateState;
use crate::cluster::net::SessionId;
use crate::cluster::stats::ClusterCounters;
use crate::events::EventKind;
use crate::worker::WorkerCall;

impl GateState {
    /// A session closed: the node registered on it is lost. A session the node left
    /// already (it connected again, and the close of the old one arrives late) is not it.
    pub(super) fn session_closed(&mut self, peer: &str, session: SessionId) {
        match self.nodes.get(peer) {
            Some(n) if n.session.is_some_and(|s| s != session) => tracing::debug!(
                node = %peer,
                session,
                current = ?n.session,
                "an old session of the node closed"
            ),
            _ => self.lose(peer, "its connection closed"),
        }
    }

    pub(super) fn tick(&mut self) {
        let now = Instant::now();
        let silent: Vec<(String, Duration)> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.status == NodeStatus::Online)
            .map(|(name, n)| (name.clone(), now.duration_since(n.last_seen)))
            .filter(|(_, quiet)| *quiet > self.args.timeout)
            .collect();
        for (name, quiet) in silent {
            self.lose(&name, &format!("silent for {} ms", quiet.as_millis()));
            self.close_session(&name);
        }
        for n in self.nodes.values_mut() {
            n.told_rejoin = false;
        }
    }

    /// Gives a node up: every lease its workers hold goes back to the queue now.
    pub(super) fn lose(&mut self, name: &str, reason: &str) {
        let Some(n) = self.nodes.get(name) else {
            return;
        };
        if n.status != NodeStatus::Online {
            return;
        }
        let workers = n.workers.len();
        self.detach_all(name);
        let n = self.nodes.get_mut(name).expect("checked above");
        n.status = NodeStatus::Lost;
        n.lost_reason = Some(reason.to_string());
        ClusterCounters::bump(&self.args.counters.lost);
        self.publish();
        tracing::warn!(node = %name, %reason, workers, "node lost; its tasks go back to the queue");
        self.record(name, "lost");
        self.args.events.publish(EventKind::NodeLost {
            node: name.into(),
            reason: reason.to_string(),
        });
        self.forget_departed();
    }

    pub(super) fn detach_all(&mut self, name: &str) {
        if let Some(n) = self.nodes.get_mut(name) {
            for (worker, RemoteWorker { incarnation, .. }) in n.workers.drain() {
                self.args.queue.worker_call(WorkerCall::Detach {
                    worker,
                    incarnation,
                });
            }
            n.task_types.clear();
        }
        self.publish();
    }

    /// Ends the session of a node given up for silence, so that when the network heals it
    /// connects afresh instead of talking over a session both sides have written off.
    pub(super) fn close_session(&self, name: &str) {
        let Some(server) = self.args.server.clone() else {
            return;
        };
        let Some(session) = self.nodes.get(name).and_then(|n| n.session) else {
            return;
        };
        tokio::spawn(async move {
            crate::cluster::net::close_sessions_with(&server, Some(session)).await;
        });
    }
}
