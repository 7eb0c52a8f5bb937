//! The coordinator's side of the cluster: the gate every node talks to.
//!
//! One actor, in the process group [`GATE_GROUP`] so that nodes find it through ractor's
//! process groups. For each node it keeps the node's workers attached to the queue, with a
//! [`RemoteSink`] that sends their leases over the node's session. A node that goes silent
//! past the timeout, or whose session closes, is given up at once: its workers are detached
//! and the queue hands their leases out again.
//!
//! A node is the session it registered on, not the name in its frames: the gate answers a
//! hello only through an agent on a session authenticated under the name the hello claims,
//! hands that session a random key in its welcome, and refuses every later frame that names
//! the node without that key (a frame from another node claiming its name). A closed session
//! loses the node only if it is the session the node is registered on now.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ractor::{Actor, ActorProcessingErr, ActorRef, BytesConvertable, RpcReplyPort};
use serde::Serialize;

mod credits;
mod remote;

/// A worker of a node, as the gate keeps it attached to the queue.
#[derive(Debug)]
struct RemoteWorker {
    /// Which life of it is attached.
    incarnation: u64,
    /// What it may hold.
    ledger: credits::Ledger,
}

use self::remote::{apply, find_agent};
use super::agent::AgentMsg;
use super::net::{session_of, SessionId, SessionTable};
use super::wire::{self, BadFrame, FromGate, FromNode, Hello, NodeLoad, SessionKey};
use super::NodeStatus;
use crate::events::{EventBus, EventKind};
use crate::queue::QueueRef;
use crate::store::NodeRow;
use crate::worker::WorkerCall;

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
    pub(crate) load: super::RemoteLoadCell,
    /// Joins, losses, refusals and bad frames, for `/stats` and `/metrics`.
    pub(crate) counters: Arc<super::ClusterCounters>,
}

/// Task types served by online nodes, shared with the coordinator's handle.
pub(crate) type RemoteTypes = Arc<std::sync::RwLock<std::collections::BTreeSet<Arc<str>>>>;

/// A node as the API shows it.
#[derive(Clone, Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RemoteNode {
    /// Its name.
    pub name: String,
    /// `online`, `lost` or `left`.
    pub status: NodeStatus,
    /// Where its node server listens.
    pub address: String,
    /// Its labels.
    pub labels: Vec<String>,
    /// Task types it serves.
    pub task_types: Vec<String>,
    /// The wrangle version it runs.
    pub version: String,
    /// Its pool's counters, from its last heartbeat.
    pub pool: crate::PoolStats,
    /// Its workers, from its last heartbeat.
    pub workers: Vec<crate::worker::WorkerInfo>,
    /// Milliseconds since it was last heard from.
    pub silent_ms: u64,
    /// How many times it has joined.
    pub joins: u64,
    /// Frames from it that did not decode.
    pub bad_frames: u64,
    /// Why it was lost, when it was.
    pub lost_reason: Option<String>,
}

/// One node as the gate tracks it.
struct NodeEntry {
    hello: Hello,
    agent: ActorRef<AgentMsg>,
    /// The session it is registered on (`None`: an agent in this process, in tests).
    session: Option<SessionId>,
    /// The key its frames must carry, sent only over that session.
    key: SessionKey,
    status: NodeStatus,
    last_seen: Instant,
    /// Attached workers with their incarnations and credits.
    workers: HashMap<Arc<str>, RemoteWorker>,
    /// Task types its workers announced.
    task_types: std::collections::BTreeSet<Arc<str>>,
    load: NodeLoad,
    /// When it joined, recently: re-joins past the limit are refused for a while.
    joins: VecDeque<Instant>,
    total_joins: u64,
    bad_frames: u64,
    lost_reason: Option<String>,
    /// Set once `Rejoin` was sent, so a stream of frames gets one answer.
    told_rejoin: bool,
    /// The last of its `Up` frames applied, acknowledged with each heartbeat.
    up_to: u64,
}

/// The gate's state.
pub(crate) struct GateState {
    args: GateArgs,
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
        _myself: ActorRef<GateMsg>,
        msg: GateMsg,
        state: &mut GateState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            GateMsg::Node { from, key, body } => state.on_frame(from, key, body),
            GateMsg::Malformed(bad) => state.malformed(bad),
            GateMsg::Tick => state.tick(),
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
        }
        Ok(())
    }
}

/// How often the gate looks for silent nodes.
pub(crate) fn tick_period(heartbeat: Duration, timeout: Duration) -> Duration {
    (timeout / 10).min(heartbeat).max(Duration::from_millis(10))
}

impl GateState {
    fn send(&self, agent: &ActorRef<AgentMsg>, body: FromGate) {
        if matches!(body, FromGate::Refused { .. }) {
            super::ClusterCounters::bump(&self.args.counters.refused);
        }
        let _ = agent.cast(AgentMsg::Coordinator {
            from: self.args.name.to_string(),
            body,
        });
    }

    fn on_frame(&mut self, from: String, key: SessionKey, body: FromNode) {
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
                let up_to = node.up_to;
                self.send(&agent, FromGate::Ack { up_to });
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

    fn ask_rejoin(&mut self, from: &str) {
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
    fn forged(&mut self, claimed: &str, what: &str) {
        super::ClusterCounters::bump(&self.args.counters.forged_frames);
        tracing::warn!(node = %claimed, "refused {what}");
    }

    /// A session closed: the node registered on it is lost. A session the node left
    /// already (it connected again, and the close of the old one arrives late) is not it.
    fn session_closed(&mut self, peer: &str, session: SessionId) {
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

    fn hello(&mut self, from: String, hello: Hello) {
        let now = Instant::now();
        let registered = self
            .nodes
            .get(&from)
            .filter(|n| n.status == NodeStatus::Online)
            .map(|n| n.agent.get_id());
        let Some(agent) = find_agent(&from, &self.args.sessions, registered) else {
            // Its process group has not reached this side yet (it says hello again
            // shortly), or no session was authenticated under that name.
            tracing::debug!(node = %from, "hello without an agent on a session of that name");
            return;
        };
        if from == *self.args.name {
            return self.send(
                &agent,
                FromGate::Refused {
                    reason: format!("node name `{from}` is the coordinator's own"),
                    retry_after_ms: 60_000,
                },
            );
        }
        let limit = self.args.max_joins_per_minute;
        let mut replaced = false;
        if let Some(n) = self.nodes.get_mut(&from) {
            let online = n.status == NodeStatus::Online;
            if online && n.agent.get_id() == agent.get_id() {
                // The session it is registered on: the same process saying hello again (it
                // missed the welcome). Another instance on that session is someone else's
                // hello under its name: the node keeps its registration either way.
                let (key, same) = (n.key, n.hello.instance == hello.instance);
                if !same {
                    return self.forged(&from, "a hello under the name of a registered node");
                }
                n.last_seen = now;
                return self.welcome(&agent, key);
            }
            if online && n.hello.instance == hello.instance {
                // The same process on a new session (it connected again before the old
                // one was seen to close): it moves there, with a new key.
                n.last_seen = now;
                n.agent = agent.clone();
                n.session = session_of(&agent.get_cell());
                n.key = wire::new_session_key();
                let key = n.key;
                tracing::info!(node = %from, session = ?n.session, "node moved to a new session");
                return self.welcome(&agent, key);
            }
            if let Err(wait) = admit(&mut n.joins, now, limit) {
                let joins = n.joins.len();
                tracing::warn!(node = %from, joins, "node flapping: join refused for now");
                return self.send(
                    &agent,
                    FromGate::Refused {
                        reason: format!(
                            "joined {joins} times in the last minute; try again in {} ms",
                            wait.as_millis()
                        ),
                        retry_after_ms: wait.as_millis() as u64,
                    },
                );
            }
            replaced = n.status == NodeStatus::Online;
        }
        if replaced {
            // Another process under the same name: the old one's work goes back.
            self.lose(&from, "a new process joined under its name");
        }
        let (joins, total_joins, bad_frames) = match self.nodes.remove(&from) {
            Some(old) => (old.joins, old.total_joins, old.bad_frames),
            None => (VecDeque::new(), 0, 0),
        };
        // What it says it serves counts at once; its workers' announcements follow.
        let task_types = hello
            .task_types
            .iter()
            .map(|t| Arc::from(t.as_str()))
            .collect();
        let mut entry = NodeEntry {
            hello,
            session: session_of(&agent.get_cell()),
            key: wire::new_session_key(),
            agent: agent.clone(),
            status: NodeStatus::Online,
            last_seen: now,
            workers: HashMap::new(),
            task_types,
            load: NodeLoad::default(),
            joins,
            total_joins: total_joins + 1,
            bad_frames,
            lost_reason: None,
            told_rejoin: false,
            up_to: 0,
        };
        entry.joins.push_back(now);
        tracing::info!(
            node = %from,
            labels = ?entry.hello.labels,
            task_types = ?entry.hello.task_types,
            address = %entry.hello.address,
            "node joined"
        );
        let labels = entry.hello.labels.clone();
        let key = entry.key;
        self.nodes.insert(from.clone(), entry);
        super::ClusterCounters::bump(&self.args.counters.joins);
        self.publish();
        self.record(&from, "active");
        self.args.events.publish(EventKind::NodeJoined {
            node: from.into(),
            labels,
        });
        self.welcome(&agent, key);
    }

    fn welcome(&self, agent: &ActorRef<AgentMsg>, key: SessionKey) {
        self.send(
            agent,
            FromGate::Welcome {
                heartbeat_ms: self.args.heartbeat.as_millis() as u64,
                timeout_ms: self.args.timeout.as_millis() as u64,
                key,
            },
        );
    }

    fn malformed(&mut self, bad: BadFrame) {
        super::ClusterCounters::bump(&self.args.counters.bad_frames);
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

    fn tick(&mut self) {
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
    fn lose(&mut self, name: &str, reason: &str) {
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
        super::ClusterCounters::bump(&self.args.counters.lost);
        self.publish();
        tracing::warn!(node = %name, %reason, workers, "node lost; its tasks go back to the queue");
        self.record(name, "lost");
        self.args.events.publish(EventKind::NodeLost {
            node: name.into(),
            reason: reason.to_string(),
        });
        self.forget_departed();
    }

    /// Keeps the nodes that are gone (lost or left) to the [`MAX_DEPARTED`] heard from
    /// last: nodes named at random (the default) that come and go would otherwise grow the
    /// table, and `/nodes`, for as long as the coordinator runs.
    fn forget_departed(&mut self) {
        let departed = self
            .nodes
            .iter()
            .map(|(name, n)| (name.as_str(), n.status, n.last_seen));
        for name in oldest_departed(departed, MAX_DEPARTED) {
            self.nodes.remove(&name);
        }
    }

    fn detach_all(&mut self, name: &str) {
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

    /// Shares what the online nodes serve and their load.
    fn publish(&self) {
        let online = || {
            self.nodes
                .values()
                .filter(|n| n.status == NodeStatus::Online)
        };
        self.args.counters.online.store(
            online().count() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        let mut load = super::RemoteLoad::default();
        for n in online() {
            let p = &n.load.pool;
            load.workers += p.worker_count.saturating_sub(p.draining);
            load.busy_slots += p.current_tasks;
            load.total_slots += p.total_slots;
            load.mailbox += p.mailbox_depth + p.worker_mailbox_depth + n.load.agent_mailbox;
        }
        *self.args.load.write().unwrap_or_else(|e| e.into_inner()) = load;
        let types = self
            .nodes
            .values()
            .filter(|n| n.status == NodeStatus::Online)
            .flat_map(|n| n.task_types.iter().cloned())
            .collect();
        *self
            .args
            .remote_types
            .write()
            .unwrap_or_else(|e| e.into_inner()) = types;
    }

    /// Ends the session of a node given up for silence, so that when the network heals it
    /// connects afresh instead of talking over a session both sides have written off.
    fn close_session(&self, name: &str) {
        let Some(server) = self.args.server.clone() else {
            return;
        };
        let Some(session) = self.nodes.get(name).and_then(|n| n.session) else {
            return;
        };
        tokio::spawn(async move {
            super::net::close_sessions_with(&server, Some(session)).await;
        });
    }

    fn record(&self, name: &str, status: &'static str) {
        let Some(n) = self.nodes.get(name) else {
            return;
        };
        self.args.queue.record_node(NodeRow {
            id: name.into(),
            address: Some(n.hello.address.clone()),
            labels: serde_json::to_string(&n.hello.labels).expect("strings serialize"),
            status,
            at_ms: crate::store::ms(SystemTime::now()),
        });
    }

    fn list(&self) -> Vec<RemoteNode> {
        let now = Instant::now();
        let mut nodes: Vec<RemoteNode> = self
            .nodes
            .iter()
            .map(|(name, n)| RemoteNode {
                name: name.clone(),
                status: n.status,
                address: n.hello.address.clone(),
                labels: n.hello.labels.clone(),
                task_types: n.hello.task_types.clone(),
                version: n.hello.version.clone(),
                pool: n.load.pool.clone(),
                workers: n.load.workers.clone(),
                silent_ms: now.duration_since(n.last_seen).as_millis() as u64,
                joins: n.total_joins,
                bad_frames: n.bad_frames,
                lost_reason: n.lost_reason.clone(),
            })
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes
    }
}

/// Nodes that are gone (lost or left) the gate keeps listing, at most.
const MAX_DEPARTED: usize = 1_000;

/// The departed nodes past the `keep` heard from last, to forget.
fn oldest_departed<'a>(
    nodes: impl Iterator<Item = (&'a str, NodeStatus, Instant)>,
    keep: usize,
) -> Vec<String> {
    let mut departed: Vec<(Instant, &str)> = nodes
        .filter(|(_, status, _)| *status != NodeStatus::Online)
        .map(|(name, _, seen)| (seen, name))
        .collect();
    if departed.len() <= keep {
        return Vec::new();
    }
    departed.sort_unstable();
    let excess = departed.len() - keep;
    departed[..excess]
        .iter()
        .map(|(_, name)| name.to_string())
        .collect()
}

/// The window of the join rate limit.
const JOIN_WINDOW: Duration = Duration::from_secs(60);

/// Admits a join unless `limit` joins happened in the last minute; then says how long until
/// the oldest of them leaves the window. Admitted joins are recorded by the caller.
fn admit(joins: &mut VecDeque<Instant>, now: Instant, limit: usize) -> Result<(), Duration> {
    while joins
        .front()
        .is_some_and(|t| now.duration_since(*t) > JOIN_WINDOW)
    {
        joins.pop_front();
    }
    match joins.front() {
        Some(oldest) if joins.len() >= limit => {
            Err(JOIN_WINDOW.saturating_sub(now.duration_since(*oldest)))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
