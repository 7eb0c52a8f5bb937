//! The coordinator's side of the cluster: the gate every node talks to.
//!
//! One actor, in the process group [`GATE_GROUP`] so that nodes find it through ractor's
//! process groups. For each node it keeps the node's workers attached to the queue, with a
//! sink that sends their leases over the node's session (`remote`). A node that goes silent
//! past the timeout, or whose session closes, is given up at once: its workers are detached
//! and the queue hands their leases out again (`liveness`).
//!
//! A node is the session it registered on, not the name in its frames: the gate answers a
//! hello only through an agent on a session authenticated under the name the hello claims,
//! hands that session a random key in its welcome (`join`), and refuses every later frame
//! that names the node without that key (`frames`). A closed session loses the node only
//! if it is the session the node is registered on now.
//!
//! - this file: the gate actor, its messages and its state.
//! - `listener`: the [`Cluster`] handle: the coordinator's node server, its accept loop
//!   and the gate, restarted by the coordinator when it fails.
//! - `nodes`: the table of nodes, what the API lists and the autoscaler reads.
//! - `frames`: what each frame from a node does.
//! - `join`: hellos, welcomes and the join rate limit.
//! - `liveness`: silent nodes and closed sessions.
//! - `remote`: remote workers' changes applied to the queue, and their lease sink.
//! - `credits`: what a remote worker may hold.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, BytesConvertable, RpcReplyPort};

mod backlog;
mod credits;
mod frames;
mod join;
mod listener;
mod liveness;
mod nodes;
mod remote;

pub(crate) use self::listener::Cluster;
pub use self::nodes::{NodeStatus, RemoteNode};

use self::nodes::NodeEntry;
use super::net::{SessionId, SessionTable};
use super::node::AgentMsg;
use super::stats::{ClusterCounters, RemoteLoadCell};
use super::wire::{self, BadFrame, FromGate, FromNode, SessionKey};
use crate::events::EventBus;
use crate::queue::QueueRef;

/// The process group the gate joins.
pub(crate) const GATE_GROUP: &str = "wrangle.gate";

/// The gate actor.
#[derive(Debug)]
pub(crate) struct Gate;

/// The gate's messages: frames from nodes, and local requests.
pub(crate) enum GateMsg {
    /// A frame from a node.
    Node {
        /// The node's name, as the frame claims it.
        from: String,
        /// The session key the frame carries.
        key: SessionKey,
        /// What it said.
        body: FromNode,
    },
    /// A frame that did not decode.
    Malformed(BadFrame),
    /// Time to look for silent nodes.
    Tick,
    /// A node's session closed (`authenticated: false`: it never got past the cookie).
    SessionClosed {
        /// The peer's node name, when it said one.
        peer: Option<String>,
        /// Which session closed.
        session: SessionId,
        /// Its address.
        addr: String,
        /// Whether it had authenticated.
        authenticated: bool,
    },
    /// The nodes, for the API.
    Nodes(RpcReplyPort<Vec<RemoteNode>>),
    /// The queue's backlog per routing class (fetched at each tick), from which each
    /// node's share is worked out.
    Backlog(Vec<crate::queue::ClassBacklog>),
    /// Drain a node (`on`), or undo it.
    Drain {
        node: String,
        on: bool,
        reply: RpcReplyPort<Result<(), String>>,
    },
}

impl BytesConvertable for GateMsg {
    fn into_bytes(self) -> Vec<u8> {
        match self {
            Self::Node { from, key, body } => wire::encode(&from, key, &body),
            // Local requests never cross the network; an empty frame decodes as malformed.
            _ => Vec::new(),
        }
    }

    fn from_bytes(bytes: Vec<u8>) -> Self {
        match wire::decode(&bytes) {
            Ok(frame) => Self::Node {
                from: frame.from,
                key: frame.key,
                body: frame.body,
            },
            Err(bad) => Self::Malformed(bad),
        }
    }
}

/// What the gate is started with.
pub(crate) struct GateArgs {
    pub(crate) name: Arc<str>,
    pub(crate) queue: QueueRef,
    pub(crate) events: EventBus,
    pub(crate) heartbeat: Duration,
    pub(crate) timeout: Duration,
    pub(crate) max_joins_per_minute: usize,
    pub(crate) server: Option<ActorRef<ractor_cluster::NodeServerMessage>>,
    /// The node server's authenticated sessions and the names they proved.
    pub(crate) sessions: SessionTable,
    /// Task types the online nodes serve, for the API's check of submitted types.
    pub(crate) remote_types: RemoteTypes,
    /// The online nodes' summed load, for the autoscaler.
    pub(crate) load: RemoteLoadCell,
    /// Joins, losses, refusals and bad frames, for `/stats` and `/metrics`.
    pub(crate) counters: Arc<ClusterCounters>,
}

/// Task types served by online nodes, shared with the coordinator's handle.
pub(crate) type RemoteTypes = Arc<std::sync::RwLock<std::collections::BTreeSet<Arc<str>>>>;

/// The gate's state.
pub(crate) struct GateState {
    /// What it was started with.
    args: GateArgs,
    /// Every node heard from (online, and the last departed ones), by name.
    nodes: HashMap<String, NodeEntry>,
    /// Frames whose sender could not be read.
    anonymous_bad_frames: u64,
}

impl Actor for Gate {
    type Msg = GateMsg;
    type State = GateState;
    type Arguments = GateArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<GateMsg>,
        args: GateArgs,
    ) -> Result<GateState, ActorProcessingErr> {
        ractor::pg::join(GATE_GROUP.to_string(), vec![myself.get_cell()]);
        myself.send_interval(tick_period(args.heartbeat, args.timeout), || GateMsg::Tick);
        Ok(GateState {
            args,
            nodes: HashMap::new(),
            anonymous_bad_frames: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<GateMsg>,
        msg: GateMsg,
        state: &mut GateState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            GateMsg::Node { from, key, body } => state.on_frame(from, key, body),
            GateMsg::Malformed(bad) => state.malformed(bad),
            GateMsg::Tick => {
                state.tick();
                state.fetch_backlog(myself);
            }
            GateMsg::Backlog(classes) => state.share_backlog(&classes),
            GateMsg::SessionClosed {
                peer,
                session,
                addr,
                authenticated,
            } => match (peer, authenticated) {
                (Some(peer), true) => state.session_closed(&peer, session),
                (peer, _) => tracing::warn!(
                    peer = peer.as_deref().unwrap_or("unknown"),
                    %addr,
                    "refused a node that did not authenticate (wrong cookie?)"
                ),
            },
            GateMsg::Nodes(reply) => {
                let _ = reply.send(state.list());
            }
            GateMsg::Drain { node, on, reply } => {
                let _ = reply.send(state.drain(&node, on));
            }
        }
        Ok(())
    }
}

/// How often the gate looks for silent nodes.
pub(crate) fn tick_period(heartbeat: Duration, timeout: Duration) -> Duration {
    (timeout / 10).min(heartbeat).max(Duration::from_millis(10))
}

impl GateState {
    /// Sends `body` to a node's agent.
    fn send(&self, agent: &ActorRef<AgentMsg>, body: FromGate) {
        if matches!(body, FromGate::Refused { .. }) {
            ClusterCounters::bump(&self.args.counters.refused);
        }
        let _ = agent.cast(AgentMsg::Coordinator {
            from: self.args.name.to_string(),
            body,
        });
    }
}

#[cfg(test)]
mod tests;
