//! What each frame from a node does: the node it names must be online and the frame must
//! carry that node's session key; then its workers' changes go to the queue, its heartbeat
//! refreshes its load, and its leave detaches its workers.

use std::time::Instant;

use super::nodes::NodeStatus;
use super::remote::{apply, find_agent};
use super::GateState;
use crate::cluster::stats::ClusterCounters;
use crate::cluster::wire::{BadFrame, FromGate, FromNode, SessionKey};
use crate::events::EventKind;

impl GateState {
    pub(super) fn on_frame(&mut self, from: String, key: SessionKey, body: FromNode) {
        let body = match body {
            FromNode::Hello(hello) => return self.hello(from, hello),
            body => body,
        };
        let online = match self.nodes.get_mut(&from) {
            Some(n) if n.status == NodeStatus::Online && n.key != key => {
                // Not the session the node registered on: another node using its name.
                return self.forged(&from, "a frame without the key of the node it names");
            }
            Some(n) => {
                n.last_seen = Instant::now();
                n.status == NodeStatus::Online
            }
            None => false,
        };
        if !online {
            // Someone this gate does not know (it restarted, or gave the node up): ask once
            // for a hello; what it sent now refers to leases that were handed out again.
            return self.ask_rejoin(&from);
        }
        let node = self.nodes.get_mut(&from).expect("checked above");
        match body {
            FromNode::Hello(_) => unreachable!("handled above"),
            FromNode::Up { seq, items } => {
                node.up_to = node.up_to.max(seq);
                let agent = node.agent.clone();
                let types = node.task_types.len();
                for item in items {
                    apply(&self.args, &from, node, &agent, item);
                }
                if node.task_types.len() != types {
                    self.publish();
                }
            }
            FromNode::Heartbeat(load) => {
                node.load = load;
                let agent = node.agent.clone();
                let (up_to, backlog) = (node.up_to, node.backlog_share);
                self.send(&agent, FromGate::Ack { up_to, backlog });
                self.publish();
            }
            FromNode::Leave => {
                let agent = node.agent.clone();
                self.detach_all(&from);
                let node = self.nodes.get_mut(&from).expect("checked above");
                node.status = NodeStatus::Left;
                self.publish();
                tracing::info!(node = %from, "node left");
                self.send(&agent, FromGate::Farewell);
                self.record(&from, "deregistered");
                self.args
                    .events
                    .publish(EventKind::NodeLeft { node: from.into() });
                self.forget_departed();
            }
        }
    }

    pub(super) fn ask_rejoin(&mut self, from: &str) {
        if let Some(n) = self.nodes.get_mut(from) {
            if n.told_rejoin {
                return;
            }
            n.told_rejoin = true;
            let agent = n.agent.clone();
            self.send(&agent, FromGate::Rejoin);
        } else if let Some(agent) = find_agent(from, &self.args.sessions, None) {
            // Unknown entirely: answered every time, the node stops sending once it hears.
            self.send(&agent, FromGate::Rejoin);
        }
    }

    /// Counts and logs a frame that claims a node it does not come from; nothing else
    /// happens (in particular the named node is not asked to join again).
    pub(super) fn forged(&mut self, claimed: &str, what: &str) {
        ClusterCounters::bump(&self.args.counters.forged_frames);
        tracing::warn!(node = %claimed, "refused {what}");
    }

    pub(super) fn malformed(&mut self, bad: BadFrame) {
        ClusterCounters::bump(&self.args.counters.bad_frames);
        let count = match bad.from.as_deref().and_then(|f| self.nodes.get_mut(f)) {
            Some(n) => {
                n.bad_frames += 1;
                n.bad_frames
            }
            None => {
                self.anonymous_bad_frames += 1;
                self.anonymous_bad_frames
            }
        };
        tracing::warn!(
            peer = bad.from.as_deref().unwrap_or("unknown"),
            reason = %bad.reason,
            count,
            "dropped a frame that did not decode"
        );
    }
}
