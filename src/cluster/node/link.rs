//! The agent's link to its coordinator: connecting (to each address in turn, with a backoff
//! between whole cycles: `rotation`), saying hello until the gate welcomes the node,
//! heartbeats, noticing a silent or vanished coordinator and moving on to the next address,
//! and leaving on purpose.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ractor::{ActorRef, RpcReplyPort};
use serde::Serialize;

use super::agent::{AgentMsg, AgentState};
use crate::cluster::gate::{GateMsg, GATE_GROUP};
use crate::cluster::wire::{FromGate, FromNode, NodeLoad, Up};

/// The node's link to its coordinator, as [`Node::status`](super::Node::status) shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LinkStatus {
    /// The coordinator address joined, or being tried.
    pub coordinator: String,
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

impl AgentState {
    /// A frame from the coordinator.
    pub(super) fn on_frame(&mut self, from: &str, body: FromGate) {
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
                self.rotation.joined();
                self.status.joined = true;
                self.status.joins += 1;
                self.status.last_error = None;
                let address = self.connector().address().to_string();
                tracing::info!(
                    coordinator = %from,
                    %address,
                    workers = self.workers.len(),
                    "joined the coordinator at {address}"
                );
                self.rejoined();
            }
            FromGate::Refused {
                reason,
                retry_after_ms,
            } => {
                tracing::warn!(
                    coordinator = %from,
                    address = %self.connector().address(),
                    %reason,
                    retry_after_ms,
                    "the coordinator refused this node"
                );
                self.status.last_error = Some(reason);
                self.leave_link();
                if self.args.connectors.len() == 1 {
                    // Its only coordinator: no hello until it said to come back.
                    self.hold_until = Some(Instant::now() + Duration::from_millis(retry_after_ms));
                } else {
                    // Another address may be the leader now: try it at once. This one is
                    // asked again after a whole cycle, so at most once per backoff.
                    self.gate = None;
                    self.retry_later(true);
                }
            }
            FromGate::Leases { worker, leases } => self.deliver(&worker, leases),
            FromGate::Cancel { worker, task_id } => self.cancel(&worker, task_id),
            FromGate::Ack { up_to, backlog } => {
                self.args.backlog.store(backlog, Ordering::Relaxed);
                self.acked(up_to);
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
    pub(super) fn leave(&mut self, reply: RpcReplyPort<()>) {
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
    pub(super) fn leave_link(&mut self) {
        self.args.backlog.store(0, Ordering::Relaxed);
        self.joined = false;
        self.status.joined = false;
        self.outbox.retain(|up| !matches!(up, Up::Attach { .. }));
    }

    /// Says hello to the gate, unless the node left or the gate said to wait.
    pub(super) fn hello(&self) {
        if self.left || self.hold_until.is_some_and(|t| Instant::now() < t) {
            return;
        }
        self.send(FromNode::Hello(self.args.hello.clone()));
    }

    /// The gate's process group changed: it appeared, or it went with its session.
    pub(super) fn gate_changed(&mut self) {
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
            tracing::warn!(coordinator = %self.connector().address(), "lost the coordinator; reconnecting");
            self.retry_later(false);
        }
    }

    /// Every tick: heartbeats, and gives up a coordinator that went silent or a
    /// connection whose gate never showed up.
    pub(super) async fn tick(&mut self) {
        let now = Instant::now();
        if self.gate.is_none() {
            // Connected, yet the gate never showed up: start over.
            if !self.connecting
                && self
                    .connected_at
                    .is_some_and(|t| now.duration_since(t) > self.timeout)
            {
                self.connected_at = None;
                tracing::warn!(
                    coordinator = %self.connector().address(),
                    "connected, but no coordinator answered; giving the connection up"
                );
                self.retry_later(true);
            }
            return;
        }
        if now.duration_since(self.last_heard) > self.timeout {
            tracing::warn!(
                coordinator = %self.connector().address(),
                silent_ms = now.duration_since(self.last_heard).as_millis() as u64,
                "the coordinator went silent; reconnecting"
            );
            self.gate = None;
            self.leave_link();
            self.retry_later(true);
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

    /// The node's load for a heartbeat: its pool's counters and its workers.
    pub(super) async fn load(&self) -> NodeLoad {
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

    /// Connects to the coordinator, unless connected or connecting.
    pub(super) fn connect(&mut self) {
        if self.gate.is_some() || self.connecting {
            return;
        }
        self.connecting = true;
        let connector = self.connector().clone();
        let me = self.myself.clone();
        tokio::spawn(async move {
            let result = connector.connect().await;
            let _ = me.cast(AgentMsg::Connected(result));
        });
    }

    /// The address tried (or joined) failed: schedules an attempt at the next one, at once
    /// while the cycle through the addresses has some left, else after the backoff (with
    /// jitter). With `close`, the sessions of the node's server are closed first (the one to
    /// the address given up), so that they cannot outlive the next attempt's.
    pub(super) fn retry_later(&mut self, close: bool) {
        if self.connecting || self.gate.is_some() {
            return;
        }
        self.connecting = true;
        let from = self.connector().address().to_string();
        let wait = self.rotation.failed();
        let delay = wait.mul_f64(0.5 + fastrand::f64());
        let to = self.connector().clone();
        self.status.coordinator = to.address().to_string();
        if self.args.connectors.len() > 1 {
            tracing::info!(
                from = %from,
                to = %to.address(),
                wait_ms = delay.as_millis() as u64,
                "moving on to the next coordinator address"
            );
        }
        let me = self.myself.clone();
        tokio::spawn(async move {
            if close {
                to.close_sessions().await;
            }
            tokio::time::sleep(delay).await;
            let _ = me.cast(AgentMsg::Connect);
        });
    }
}
