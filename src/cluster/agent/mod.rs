//! The node's side of the cluster: the agent that stands in for the coordinator's queue.
//!
//! The node's workers make the same four calls on the agent that local workers make on the
//! queue (attach, detach, credits, report); the agent batches them into one frame per burst
//! and sends it to the coordinator's gate, and hands the leases that come back to the right
//! worker. It also owns the link: it connects, says hello, heartbeats, notices a silent or
//! vanished coordinator, and connects again with backoff.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{
    Actor, ActorProcessingErr, ActorRef, BytesConvertable, RpcReplyPort, SupervisionEvent,
};
use serde::Serialize;

use super::gate::{GateMsg, GATE_GROUP};
use super::net::{Connector, SessionEvents};
use super::wire::{self, BadFrame, FromGate, FromNode, Hello, NodeLoad, SessionKey, Up};
use crate::worker::{AttemptReport, Capabilities, LeaseSink, WorkerCall};
use crate::PoolRef;

/// The process group of one node's agent: how the gate finds it.
pub(crate) fn agent_group(node: &str) -> String {
    format!("wrangle.node.{node}")
}

/// Frames go out once this many changes are waiting, even mid-burst.
const MAX_BATCH: usize = 512;

/// `Up` frames whose reports are kept until the gate acknowledges them, at most.
const MAX_UNACKED: usize = 4096;

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

/// The node's link to its coordinator, as [`Node::status`](super::Node::status) shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LinkStatus {
    /// Registered with the coordinator, taking work.
    pub joined: bool,
    /// Times it has joined (1 after the first).
    pub joins: u64,
    /// Connection attempts that failed.
    pub failed_connects: u64,
    /// The last reason the coordinator gave for refusing it, or the last connection error.
    pub last_error: Option<String>,
    /// Frames from the coordinator that did not decode.
    pub bad_frames: u64,
}

/// A worker of this node, as the agent tracks it.
struct LocalWorker {
    incarnation: u64,
    caps: Capabilities,
    sink: Arc<dyn LeaseSink>,
    /// Free slots as far as the coordinator's leases and this worker's reports say.
    free: i64,
}

pub(crate) struct AgentArgs {
    pub(crate) name: Arc<str>,
    pub(crate) hello: Hello,
    pub(crate) connector: Connector,
    pub(crate) heartbeat: Duration,
    /// Each worker's slots (the node's workers share one configuration).
    pub(crate) slots: u32,
    pub(crate) reconnect_min: Duration,
    pub(crate) reconnect_max: Duration,
}

/// The agent's state.
pub(crate) struct AgentState {
    args: AgentArgs,
    /// The coordinator's gate, once its process group reached this node.
    gate: Option<ActorRef<GateMsg>>,
    /// Registered with the gate.
    joined: bool,
    /// The key the gate's welcome gave: in every frame, it tells the gate this node's frames
    /// from another node's that claim its name.
    key: SessionKey,
    /// Heartbeat period and give-up timeout, as the gate set them.
    heartbeat: Duration,
    timeout: Duration,
    /// When the gate was last heard from.
    last_heard: Instant,
    /// No hello before this (the gate refused, and said when to come back).
    hold_until: Option<Instant>,
    /// A connection attempt is under way or scheduled.
    connecting: bool,
    /// When the last connection attempt ended.
    connected_at: Option<Instant>,
    /// When the last heartbeat went out.
    last_beat: Instant,
    /// The next reconnect delay.
    backoff: Duration,
    /// The node's workers, to deliver leases to and to re-announce after a (re)join.
    workers: HashMap<Arc<str>, LocalWorker>,
    /// Changes waiting to go out in the next frame.
    outbox: Vec<Up>,
    /// The number of the last `Up` frame sent.
    seq: u64,
    /// The reports of `Up` frames the gate has not acknowledged yet, by frame number:
    /// sent again after the next welcome, in case the gate that got them died.
    unacked: std::collections::VecDeque<(u64, Vec<Up>)>,
    /// A `Flush` is in the mailbox already.
    flush_queued: bool,
    /// The node's pool, read for the heartbeat's load.
    pool: Option<PoolRef>,
    /// A leave waiting for the gate's farewell.
    leaving: Option<RpcReplyPort<()>>,
    /// Left on purpose: no more hellos.
    left: bool,
    /// What `Node::status` shows.
    status: LinkStatus,
    /// To send itself flushes and reconnects.
    myself: ActorRef<AgentMsg>,
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
        let events = args.connector.subscribe(move |closed| {
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
                        coordinator = %state.args.connector.address(),
                        error = %e,
                        retry_in_ms = state.backoff.as_millis() as u64,
                        "could not reach the coordinator"
                    );
                    state.status.last_error = Some(e);
                    state.retry_later();
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
                    state.retry_later();
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
    fn new(args: AgentArgs, myself: ActorRef<AgentMsg>, events: SessionEvents) -> Self {
        Self {
            heartbeat: args.heartbeat,
            timeout: args.heartbeat * 5,
            backoff: args.reconnect_min,
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
            unacked: std::collections::VecDeque::new(),
            flush_queued: false,
            pool: None,
            leaving: None,
            left: false,
            status: LinkStatus {
                joined: false,
                joins: 0,
                failed_connects: 0,
                last_error: None,
                bad_frames: 0,
            },
            myself,
            _events: events,
        }
    }

    fn frame(&self, body: FromNode) -> GateMsg {
        GateMsg::Node {
            from: self.args.name.to_string(),
            key: self.key,
            body,
        }
    }

    fn send(&self, body: FromNode) {
        if let Some(gate) = &self.gate {
            let _ = gate.cast(self.frame(body));
        }
    }

    /// A call from one of this node's workers: kept for the welcome's re-announce, and
    /// queued for the gate as a wire change.
    fn worker_call(&mut self, call: WorkerCall) {
        match call {
            WorkerCall::Attach {
                worker,
                incarnation,
                caps,
                credits,
                sink,
            } => {
                let free = match self.workers.get(&worker) {
                    // The same incarnation announcing again (its handlers changed): leases
                    // already on their way to it are not in its own count of free slots,
                    // so the agent keeps its count, as the queue does. Taking the worker's
                    // would announce too many free slots after the next join.
                    Some(w) if w.incarnation == incarnation => w.free,
                    _ => i64::from(credits),
                };
                self.push(Up::Attach {
                    worker: worker.clone(),
                    incarnation,
                    caps: caps.clone(),
                    credits,
                    slots: self.args.slots,
                });
                self.workers.insert(
                    worker,
                    LocalWorker {
                        incarnation,
                        caps,
                        sink,
                        free,
                    },
                );
            }
            WorkerCall::Detach {
                worker,
                incarnation,
            } => {
                if self.workers.get(&worker).map(|w| w.incarnation) == Some(incarnation) {
                    self.workers.remove(&worker);
                }
                self.push(Up::Detach {
                    worker,
                    incarnation,
                });
            }
            WorkerCall::SetCredits { worker, credits } => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.free = i64::from(credits);
                }
                self.push(Up::Credits { worker, credits });
            }
            WorkerCall::Report {
                worker,
                mut reports,
                credits,
            } => {
                for r in &mut reports {
                    refuse_oversized(r);
                }
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.free += i64::from(credits);
                }
                // A frame carries whole changes: results finished together are cut into
                // several reports here, or they would make one frame past the limit (and
                // the coordinator would end the session, losing the node, every time). The
                // freed slots go with the last, once every attempt they belong to is
                // reported (the gate lets through no more slots than are free then).
                let mut parts = wire::batches(reports, wire::report_weight);
                if parts.is_empty() {
                    parts.push(Vec::new());
                }
                let last = parts.len() - 1;
                for (i, reports) in parts.into_iter().enumerate() {
                    self.push(Up::Report {
                        worker: worker.clone(),
                        reports,
                        credits: if i == last { credits } else { 0 },
                    });
                }
            }
            WorkerCall::Extend { worker, leases } => self.push(Up::Extend { worker, leases }),
        }
    }

    /// Queues a change for the gate; it goes out with the rest of its burst.
    fn push(&mut self, up: Up) {
        if !self.joined {
            // Not registered: the welcome re-announces every worker as it is then. The
            // rest waits for the welcome and goes out before that announce: a gate that
            // restarted finds the leases still held by the queue, which needs the reports,
            // freed slots and detaches; a coordinator that restarted (a newer epoch) or
            // handed the leases out again refuses them by their fencing tokens.
            if !matches!(up, Up::Attach { .. }) {
                self.outbox.push(up);
            }
            return;
        }
        self.outbox.push(up);
        if self.outbox.len() >= MAX_BATCH {
            self.flush();
        } else if !self.flush_queued {
            self.flush_queued = true;
            let _ = self.myself.cast(AgentMsg::Flush);
        }
    }

    fn flush(&mut self) {
        if self.outbox.is_empty() || !self.joined {
            return;
        }
        let items = std::mem::take(&mut self.outbox);
        for items in wire::batches(items, wire::up_weight) {
            self.seq += 1;
            let reports: Vec<Up> = items
                .iter()
                .filter(|u| matches!(u, Up::Report { .. }))
                .cloned()
                .collect();
            if !reports.is_empty() {
                if self.unacked.len() >= MAX_UNACKED {
                    // A gate that never acknowledges (it is not answering heartbeats
                    // either, and will be given up): keep the newest.
                    self.unacked.pop_front();
                }
                self.unacked.push_back((self.seq, reports));
            }
            let seq = self.seq;
            self.send(FromNode::Up { seq, items });
        }
    }

    fn on_frame(&mut self, from: &str, body: FromGate) {
        self.last_heard = Instant::now();
        match body {
            FromGate::Welcome {
                heartbeat_ms,
                timeout_ms,
                key,
            } => {
                if self.joined || self.left {
                    return;
                }
                self.key = key;
                self.heartbeat = Duration::from_millis(heartbeat_ms.max(1));
                self.timeout = Duration::from_millis(timeout_ms.max(1));
                self.joined = true;
                self.backoff = self.args.reconnect_min;
                self.status.joined = true;
                self.status.joins += 1;
                self.status.last_error = None;
                tracing::info!(coordinator = %from, workers = self.workers.len(), "joined the coordinator");
                // Reports a gate got and did not acknowledge go again, first: if it died
                // with them, the queue still holds their leases (a queue that handed them
                // out again, or recorded them already, ignores them). Their freed slots go
                // nowhere: the announce below sets each worker's free slots outright.
                let again: Vec<Up> = std::mem::take(&mut self.unacked)
                    .into_iter()
                    .flat_map(|(_, reports)| reports)
                    .map(|up| match up {
                        Up::Report {
                            worker, reports, ..
                        } => Up::Report {
                            worker,
                            reports,
                            credits: 0,
                        },
                        other => other,
                    })
                    .collect();
                if !again.is_empty() {
                    tracing::info!(frames = again.len(), "sending unacknowledged reports again");
                }
                let waiting = std::mem::take(&mut self.outbox);
                self.outbox = again;
                self.outbox.extend(waiting);
                let attach: Vec<Up> = self
                    .workers
                    .iter()
                    .map(|(id, w)| Up::Attach {
                        worker: id.clone(),
                        incarnation: w.incarnation,
                        caps: w.caps.clone(),
                        credits: w.free.max(0) as u32,
                        slots: self.args.slots,
                    })
                    .collect();
                for up in attach {
                    self.push(up);
                }
                self.flush();
            }
            FromGate::Refused {
                reason,
                retry_after_ms,
            } => {
                tracing::warn!(coordinator = %from, %reason, "the coordinator refused this node");
                self.status.last_error = Some(reason);
                self.leave_link();
                self.hold_until = Some(Instant::now() + Duration::from_millis(retry_after_ms));
            }
            FromGate::Leases { worker, leases } => {
                let Some(w) = self.workers.get_mut(&worker) else {
                    // The worker is gone; its detach returns these to the queue.
                    tracing::debug!(%worker, count = leases.len(), "leases for a worker that is gone");
                    return;
                };
                w.free -= leases.len() as i64;
                if let Err(returned) = w.sink.deliver(leases) {
                    tracing::debug!(%worker, count = returned.len(), "worker refused leases");
                }
            }
            FromGate::Cancel { worker, task_id } => {
                if let Some(w) = self.workers.get(&worker) {
                    w.sink.cancel(task_id);
                }
            }
            FromGate::Ack { up_to } => {
                while self.unacked.front().is_some_and(|(seq, _)| *seq <= up_to) {
                    self.unacked.pop_front();
                }
            }
            FromGate::Farewell => {
                if let Some(reply) = self.leaving.take() {
                    let _ = reply.send(());
                }
            }
            FromGate::Rejoin => {
                if self.joined {
                    tracing::warn!(coordinator = %from, "the coordinator lost track of this node; joining again");
                }
                self.leave_link();
                self.hello();
            }
        }
    }

    /// Leaves for good: says so to the gate, and never says hello again (a hello before
    /// the agent stops would register the node anew, and it would then be listed as lost,
    /// not left, when its session closes).
    fn leave(&mut self, reply: RpcReplyPort<()>) {
        self.flush();
        match (&self.gate, self.joined) {
            (Some(gate), true) => {
                let _ = gate.cast(self.frame(FromNode::Leave));
                // Answered when the gate says farewell (the caller bounds the wait).
                self.leaving = Some(reply);
            }
            _ => {
                let _ = reply.send(());
            }
        }
        self.left = true;
        self.leave_link();
    }

    /// Forgets the registration (not the connection). Changes not yet sent wait for the
    /// next welcome, but for announces: the welcome makes its own.
    fn leave_link(&mut self) {
        self.joined = false;
        self.status.joined = false;
        self.outbox.retain(|up| !matches!(up, Up::Attach { .. }));
    }

    fn hello(&self) {
        if self.left || self.hold_until.is_some_and(|t| Instant::now() < t) {
            return;
        }
        self.send(FromNode::Hello(self.args.hello.clone()));
    }

    /// The gate's process group changed: it appeared, or it went with its session.
    fn gate_changed(&mut self) {
        let gate = ractor::pg::get_members(&GATE_GROUP.to_string())
            .into_iter()
            .find(|c| !c.get_id().is_local())
            .map(ActorRef::<GateMsg>::from);
        let same = match (&gate, &self.gate) {
            (Some(a), Some(b)) => a.get_id() == b.get_id(),
            (None, None) => true,
            _ => false,
        };
        if same {
            return;
        }
        self.gate = gate;
        self.leave_link();
        if self.gate.is_some() {
            self.last_heard = Instant::now();
            self.hello();
        } else {
            tracing::warn!(coordinator = %self.args.connector.address(), "lost the coordinator; reconnecting");
            self.retry_later();
        }
    }

    async fn tick(&mut self) {
        let now = Instant::now();
        if self.gate.is_none() {
            // Connected, yet the gate never showed up: start over.
            if !self.connecting
                && self
                    .connected_at
                    .is_some_and(|t| now.duration_since(t) > self.timeout)
            {
                self.connected_at = None;
                let connector = self.args.connector.clone();
                tokio::spawn(async move { connector.close_sessions().await });
                self.retry_later();
            }
            return;
        }
        if now.duration_since(self.last_heard) > self.timeout {
            tracing::warn!(
                coordinator = %self.args.connector.address(),
                silent_ms = now.duration_since(self.last_heard).as_millis() as u64,
                "the coordinator went silent; reconnecting"
            );
            self.gate = None;
            self.leave_link();
            let connector = self.args.connector.clone();
            tokio::spawn(async move { connector.close_sessions().await });
            self.retry_later();
            return;
        }
        if !self.joined {
            self.hello();
            return;
        }
        if now.duration_since(self.last_beat) >= self.heartbeat {
            self.last_beat = now;
            let load = self.load().await;
            self.send(FromNode::Heartbeat(load));
        }
    }

    async fn load(&self) -> NodeLoad {
        let (pool, workers) = match &self.pool {
            Some(p) => (
                p.stats().await.unwrap_or_default(),
                p.workers().await.unwrap_or_default(),
            ),
            None => Default::default(),
        };
        NodeLoad {
            pool,
            workers,
            agent_mailbox: 0,
            bad_frames: self.status.bad_frames,
        }
    }

    fn connect(&mut self) {
        if self.gate.is_some() || self.connecting {
            return;
        }
        self.connecting = true;
        let connector = self.args.connector.clone();
        let me = self.myself.clone();
        tokio::spawn(async move {
            let result = connector.connect().await;
            let _ = me.cast(AgentMsg::Connected(result));
        });
    }

    /// Schedules the next connection attempt, backing off (with jitter) up to the limit.
    fn retry_later(&mut self) {
        if self.connecting {
            return;
        }
        self.connecting = true;
        let jitter = 0.5 + fastrand::f64();
        let delay = self.backoff.mul_f64(jitter);
        self.backoff = (self.backoff * 2).min(self.args.reconnect_max);
        let me = self.myself.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = me.cast(AgentMsg::Connect);
        });
    }
}

/// A result too big for one frame would end the session each time it is sent (and the
/// task would run again and again): it fails the attempt instead, for good, saying why. A
/// failure's message longer than [`wire::MAX_ERROR_BYTES`] is cut to that, saying so; the
/// failure stays retryable or not as it was.
fn refuse_oversized(report: &mut AttemptReport) {
    if let crate::worker::AttemptOutcome::Failed(e) = &report.outcome {
        if e.message().len() > wire::MAX_ERROR_BYTES {
            let message = e.message();
            let mut end = wire::MAX_ERROR_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            let cut = format!(
                "{}... (cut: the message had {} bytes)",
                &message[..end],
                message.len()
            );
            tracing::warn!(task_id = %report.task_id, bytes = message.len(), "failure message cut to fit a cluster frame");
            report.outcome = crate::worker::AttemptOutcome::Failed(if e.is_retryable() {
                crate::TaskError::retryable(cut)
            } else {
                crate::TaskError::permanent(cut)
            });
        }
        return;
    }
    if let crate::worker::AttemptOutcome::Completed(p) = &report.outcome {
        if p.len() > wire::MAX_RESULT_BYTES {
            let why = format!(
                "result of {} bytes is larger than a cluster frame allows ({} bytes)",
                p.len(),
                wire::MAX_RESULT_BYTES
            );
            tracing::warn!(task_id = %report.task_id, "{why}");
            report.outcome =
                crate::worker::AttemptOutcome::Failed(crate::TaskError::permanent(why));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{Payload, TaskId};
    use crate::worker::AttemptOutcome;

    fn report(bytes: usize) -> AttemptReport {
        let text = "x".repeat(bytes.saturating_sub(2));
        AttemptReport {
            task_id: TaskId::new(),
            token: crate::task::LeaseToken {
                epoch: 1,
                attempt: 1,
                nonce: 7,
            },
            outcome: AttemptOutcome::Completed(Payload::encode(&text).unwrap()),
        }
    }

    #[test]
    fn a_failure_message_too_big_is_cut_and_keeps_its_kind() {
        let failed = |e: crate::TaskError| AttemptReport {
            task_id: TaskId::new(),
            token: crate::task::LeaseToken {
                epoch: 1,
                attempt: 1,
                nonce: 7,
            },
            outcome: AttemptOutcome::Failed(e),
        };
        // 20 MiB of a two-byte character: more than a frame, and no cut may split one.
        let huge = "é".repeat(10 * 1024 * 1024);
        for retryable in [true, false] {
            let e = if retryable {
                crate::TaskError::retryable(huge.clone())
            } else {
                crate::TaskError::permanent(huge.clone())
            };
            let mut r = failed(e);
            refuse_oversized(&mut r);
            let AttemptOutcome::Failed(e) = &r.outcome else {
                panic!("{:?}", r.outcome);
            };
            assert!(
                e.message().len() <= wire::MAX_ERROR_BYTES + 64,
                "{}",
                e.message().len()
            );
            assert!(e.message().starts_with("éé"));
            assert!(e
                .message()
                .ends_with("(cut: the message had 20971520 bytes)"));
            assert_eq!(e.is_retryable(), retryable);
        }
        let mut small = failed(crate::TaskError::permanent("no"));
        refuse_oversized(&mut small);
        let AttemptOutcome::Failed(e) = &small.outcome else {
            panic!("{:?}", small.outcome);
        };
        assert_eq!(e.message(), "no");
    }

    #[test]
    fn a_result_too_big_for_a_frame_fails_its_attempt_for_good() {
        let mut fits = report(1024);
        refuse_oversized(&mut fits);
        assert!(matches!(fits.outcome, AttemptOutcome::Completed(_)));

        let mut huge = report(wire::MAX_RESULT_BYTES + 10);
        refuse_oversized(&mut huge);
        let AttemptOutcome::Failed(e) = &huge.outcome else {
            panic!("{:?}", huge.outcome);
        };
        assert!(!e.is_retryable());
        assert!(
            e.message().contains("larger than a cluster frame"),
            "{}",
            e.message()
        );
    }
}

#[cfg(test)]
mod link_tests;
