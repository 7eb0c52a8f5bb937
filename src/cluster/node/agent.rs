//! The node's side of the cluster: the agent that stands in for the coordinator's queue.
//!
//! The node's workers make the same calls on the agent that local workers make on the
//! queue (attach, detach, credits, report, extend, progress); the agent batches them into
//! one frame per burst and sends it to the coordinator's gate, and hands the leases that
//! come back to the right worker (`relay`); progress is thinned out per task first
//! (`progress`). It also owns the link: it connects, says hello, heartbeats, notices a
//! silent or vanished coordinator, and connects again with backoff (`link`). This file
//! holds the actor, its messages and its state; which coordinator address it tries next is
//! `rotation`'s.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{
    Actor, ActorProcessingErr, ActorRef, BytesConvertable, RpcReplyPort, SupervisionEvent,
};

use super::link::LinkStatus;
use super::progress::{self, Coalescer};
use super::relay::LocalWorker;
use super::rotation::Rotation;
use crate::cluster::gate::{GateMsg, GATE_GROUP};
use crate::cluster::net::{Connector, SessionEvents};
use crate::cluster::wire::{self, BadFrame, FromGate, FromNode, Hello, SessionKey, Up};
use crate::worker::WorkerCall;
use crate::PoolRef;

/// The process group of one node's agent: how the gate finds it.
pub(crate) fn agent_group(node: &str) -> String {
    format!("wrangle.node.{node}")
}

/// The agent actor.
#[derive(Debug)]
pub(crate) struct Agent;

/// The agent's messages: frames from the coordinator, and calls from the node's workers.
pub(crate) enum AgentMsg {
    /// A frame from the coordinator.
    Coordinator {
        /// The coordinator's name.
        from: String,
        /// What it said.
        body: FromGate,
    },
    /// A frame that did not decode.
    Malformed(BadFrame),
    /// One of this node's workers, as it would speak to a queue in its own process.
    Worker(WorkerCall),
    /// Send the waiting changes (queued behind the messages that made them).
    Flush,
    /// Time to send held progress reports (see `progress`).
    ProgressDue,
    /// Heartbeat and liveness check.
    Tick,
    /// Connect to the coordinator now.
    Connect,
    /// How the last connection attempt went.
    Connected(Result<(), String>),
    /// A session of this node's server closed.
    SessionClosed { authenticated: bool, addr: String },
    /// The node's pool, once it exists.
    Pool(PoolRef),
    /// Leaving: say so to the coordinator, then answer.
    Leave(RpcReplyPort<()>),
    /// The link's state.
    Status(RpcReplyPort<LinkStatus>),
}

impl BytesConvertable for AgentMsg {
    fn into_bytes(self) -> Vec<u8> {
        match self {
            Self::Coordinator { from, body } => wire::encode(&from, wire::NO_KEY, &body),
            _ => Vec::new(),
        }
    }

    fn from_bytes(bytes: Vec<u8>) -> Self {
        match wire::decode(&bytes) {
            Ok(frame) => Self::Coordinator {
                from: frame.from,
                body: frame.body,
            },
            Err(bad) => Self::Malformed(bad),
        }
    }
}

/// What the agent is started with.
pub(crate) struct AgentArgs {
    /// The node's name.
    pub(crate) name: Arc<str>,
    /// What it says in each hello.
    pub(crate) hello: Hello,
    /// How it reaches each coordinator address, in the order it tries them (at least one).
    pub(crate) connectors: Vec<Connector>,
    /// Heartbeat period until the gate sets its own.
    pub(crate) heartbeat: Duration,
    /// Each worker's slots (the node's workers share one configuration).
    pub(crate) slots: u32,
    /// First and longest reconnect delay.
    pub(crate) reconnect_min: Duration,
    pub(crate) reconnect_max: Duration,
    /// The node's share of the coordinator's backlog, from the gate's last heartbeat
    /// answer (0 while not joined): what the node's autoscaler reads.
    pub(crate) backlog: Arc<std::sync::atomic::AtomicU64>,
}

/// The agent's state.
pub(crate) struct AgentState {
    pub(super) args: AgentArgs,
    /// The coordinator's gate, once its process group reached this node.
    pub(super) gate: Option<ActorRef<GateMsg>>,
    /// Registered with the gate.
    pub(super) joined: bool,
    /// The key the gate's welcome gave: in every frame, it tells the gate this node's frames
    /// from another node's that claim its name.
    pub(super) key: SessionKey,
    /// Heartbeat period and give-up timeout, as the gate set them.
    pub(super) heartbeat: Duration,
    pub(super) timeout: Duration,
    /// When the gate was last heard from.
    pub(super) last_heard: Instant,
    /// No hello before this (the gate refused, and said when to come back).
    pub(super) hold_until: Option<Instant>,
    /// A connection attempt is under way or scheduled.
    pub(super) connecting: bool,
    /// When the last connection attempt ended.
    pub(super) connected_at: Option<Instant>,
    /// When the last heartbeat went out.
    pub(super) last_beat: Instant,
    /// Which coordinator address it tries (or joined), and the wait between cycles.
    pub(super) rotation: Rotation,
    /// The node's workers, to deliver leases to and to re-announce after a (re)join.
    pub(super) workers: HashMap<Arc<str>, LocalWorker>,
    /// Changes waiting to go out in the next frame.
    pub(super) outbox: Vec<Up>,
    /// The number of the last `Up` frame sent.
    pub(super) seq: u64,
    /// The reports of `Up` frames the gate has not acknowledged yet, by frame number:
    /// sent again after the next welcome, in case the gate that got them died.
    pub(super) unacked: VecDeque<(u64, Vec<Up>)>,
    /// A `Flush` is in the mailbox already.
    pub(super) flush_queued: bool,
    /// Attempts' progress, thinned out per task.
    pub(super) progress: Coalescer,
    /// A `ProgressDue` is scheduled already.
    pub(super) progress_scheduled: bool,
    /// The node's pool, read for the heartbeat's load.
    pub(super) pool: Option<PoolRef>,
    /// A leave waiting for the gate's farewell.
    pub(super) leaving: Option<RpcReplyPort<()>>,
    /// Left on purpose: no more hellos.
    pub(super) left: bool,
    /// What `Node::status` shows.
    pub(super) status: LinkStatus,
    /// To send itself flushes and reconnects.
    pub(super) myself: ActorRef<AgentMsg>,
    /// Session-closed notices from the node server, while the agent lives.
    _events: SessionEvents,
}

impl Actor for Agent {
    type Msg = AgentMsg;
    type State = AgentState;
    type Arguments = AgentArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<AgentMsg>,
        args: AgentArgs,
    ) -> Result<AgentState, ActorProcessingErr> {
        ractor::pg::join(agent_group(&args.name), vec![myself.get_cell()]);
        ractor::pg::monitor(GATE_GROUP.to_string(), myself.get_cell());
        let me = myself.clone();
        // Every connector shares the node's one server: any of them subscribes to it.
        let events = args.connectors[0].subscribe(move |closed| {
            let _ = me.cast(AgentMsg::SessionClosed {
                authenticated: closed.authenticated,
                addr: closed.addr,
            });
        });
        myself.send_interval(args.heartbeat.min(Duration::from_millis(250)), || {
            AgentMsg::Tick
        });
        let _ = myself.cast(AgentMsg::Connect);
        Ok(AgentState::new(args, myself, events))
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<AgentMsg>,
        _state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        ractor::pg::demonitor(GATE_GROUP.to_string(), _myself.get_id());
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<AgentMsg>,
        msg: AgentMsg,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AgentMsg::Coordinator { from, body } => state.on_frame(&from, body),
            AgentMsg::Malformed(bad) => {
                state.status.bad_frames += 1;
                tracing::warn!(
                    peer = bad.from.as_deref().unwrap_or("unknown"),
                    reason = %bad.reason,
                    count = state.status.bad_frames,
                    "dropped a frame that did not decode"
                );
            }
            AgentMsg::Worker(call) => state.worker_call(call),
            AgentMsg::Flush => {
                state.flush_queued = false;
                state.flush();
            }
            AgentMsg::ProgressDue => state.progress_due(),
            AgentMsg::Tick => state.tick().await,
            AgentMsg::Connect => {
                state.connecting = false;
                state.connect();
            }
            AgentMsg::Connected(result) => {
                state.connecting = false;
                state.connected_at = Some(Instant::now());
                if let Err(e) = result {
                    state.status.failed_connects += 1;
                    tracing::warn!(
                        coordinator = %state.connector().address(),
                        error = %e,
                        "could not reach the coordinator"
                    );
                    state.status.last_error = Some(e);
                    state.retry_later(false);
                }
            }
            AgentMsg::SessionClosed {
                authenticated,
                addr,
            } => {
                if !authenticated {
                    let why = format!(
                        "the coordinator at {addr} refused this node: authentication failed \
                         (check --cookie)"
                    );
                    tracing::error!("{why}");
                    state.status.last_error = Some(why);
                    state.status.failed_connects += 1;
                    state.retry_later(false);
                }
            }
            AgentMsg::Pool(pool) => state.pool = Some(pool),
            AgentMsg::Leave(reply) => state.leave(reply),
            AgentMsg::Status(reply) => {
                let _ = reply.send(state.status.clone());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<AgentMsg>,
        event: SupervisionEvent,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ProcessGroupChanged(_) = event {
            state.gate_changed();
        }
        Ok(())
    }
}

impl AgentState {
    /// A fresh state: not connected, not joined, nothing waiting to be sent.
    pub(super) fn new(args: AgentArgs, myself: ActorRef<AgentMsg>, events: SessionEvents) -> Self {
        Self {
            heartbeat: args.heartbeat,
            timeout: args.heartbeat * 5,
            rotation: Rotation::new(
                args.connectors.len(),
                args.reconnect_min,
                args.reconnect_max,
            ),
            status: LinkStatus {
                coordinator: args.connectors[0].address().to_string(),
                joined: false,
                joins: 0,
                failed_connects: 0,
                last_error: None,
                bad_frames: 0,
            },
            args,
            gate: None,
            joined: false,
            key: wire::NO_KEY,
            last_heard: Instant::now(),
            hold_until: None,
            connecting: false,
            connected_at: None,
            last_beat: Instant::now(),
            workers: HashMap::new(),
            outbox: Vec::new(),
            seq: 0,
            unacked: VecDeque::new(),
            flush_queued: false,
            progress: Coalescer::new(progress::EVERY),
            progress_scheduled: false,
            pool: None,
            leaving: None,
            left: false,
            myself,
            _events: events,
        }
    }

    /// How it reaches the coordinator address it tries (or joined).
    pub(super) fn connector(&self) -> &Connector {
        &self.args.connectors[self.rotation.current()]
    }

    /// A frame for the gate, with this node's name and session key.
    pub(super) fn frame(&self, body: FromNode) -> GateMsg {
        GateMsg::Node {
            from: self.args.name.to_string(),
            key: self.key,
            body,
        }
    }

    /// Sends `body` to the gate, if there is one.
    pub(super) fn send(&self, body: FromNode) {
        if let Some(gate) = &self.gate {
            let _ = gate.cast(self.frame(body));
        }
    }
}
