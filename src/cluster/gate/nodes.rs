//! The gate's table of nodes: each node as the gate tracks it, what `/nodes` lists, and
//! what the coordinator reads (the task types online nodes serve, their summed load).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use ractor::ActorRef;
use serde::{Deserialize, Serialize};

use super::credits::Ledger;
use super::GateState;
use crate::cluster::net::SessionId;
use crate::cluster::node::AgentMsg;
use crate::cluster::stats::RemoteLoad;
use crate::cluster::wire::{Hello, NodeLoad, SessionKey};
use crate::store::NodeRow;

/// Where a node stands with the coordinator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Registered and heartbeating: its workers take tasks.
    Online,
    /// Given up (connection closed or silent past the timeout); its tasks went back to the
    /// queue. It becomes online again when it re-joins.
    Lost,
    /// Left on purpose.
    Left,
}

/// A worker of a node, as the gate keeps it attached to the queue.
#[derive(Debug)]
pub(super) struct RemoteWorker {
    /// Which life of it is attached.
    pub(super) incarnation: u64,
    /// What it may hold.
    pub(super) ledger: Ledger,
}

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
    /// Leases sent to its workers that they have not reported finished.
    pub in_flight: u64,
    /// Drained: it gets no new task (a node launcher is about to stop it).
    pub draining: bool,
    /// Its share of the queued tasks it can serve, as last sent to it (its own pool's
    /// autoscaler reads it).
    pub backlog: u64,
}

/// One node as the gate tracks it.
pub(super) struct NodeEntry {
    /// What it said in its hello (labels, task types, address, capacity).
    pub(super) hello: Hello,
    /// Its agent, reached over its session.
    pub(super) agent: ActorRef<AgentMsg>,
    /// The session it is registered on (`None`: an agent in this process, in tests).
    pub(super) session: Option<SessionId>,
    /// The key its frames must carry, sent only over that session.
    pub(super) key: SessionKey,
    /// Online, lost or left.
    pub(super) status: NodeStatus,
    /// When it was last heard from.
    pub(super) last_seen: Instant,
    /// Attached workers with their incarnations and credits.
    pub(super) workers: HashMap<Arc<str>, RemoteWorker>,
    /// Task types its workers announced.
    pub(super) task_types: std::collections::BTreeSet<Arc<str>>,
    /// Its load, from its last heartbeat.
    pub(super) load: NodeLoad,
    /// When it joined, recently: re-joins past the limit are refused for a while.
    pub(super) joins: VecDeque<Instant>,
    /// Joins since the gate started.
    pub(super) total_joins: u64,
    /// Frames from it that did not decode.
    pub(super) bad_frames: u64,
    /// Why it was lost, when it was.
    pub(super) lost_reason: Option<String>,
    /// Set once `Rejoin` was sent, so a stream of frames gets one answer.
    pub(super) told_rejoin: bool,
    /// The last of its `Up` frames applied, acknowledged with each heartbeat.
    pub(super) up_to: u64,
    /// Drained: its workers get no credits at the queue, so no new task (a node launcher
    /// is about to stop it).
    pub(super) draining: bool,
    /// Its share of the waiting tasks it can serve, as of the gate's last look at the
    /// queue (sent with each heartbeat's answer, for its pool's autoscaler).
    pub(super) backlog_share: u64,
}

impl GateState {
    /// Keeps the nodes that are gone (lost or left) to the [`MAX_DEPARTED`] heard from
    /// last: nodes named at random (the default) that come and go would otherwise grow the
    /// table, and `/nodes`, for as long as the coordinator runs.
    pub(super) fn forget_departed(&mut self) {
        let departed = self
            .nodes
            .iter()
            .map(|(name, n)| (name.as_str(), n.status, n.last_seen));
        for name in oldest_departed(departed, MAX_DEPARTED) {
            self.nodes.remove(&name);
        }
    }

    /// Shares what the online nodes serve and their load.
    pub(super) fn publish(&self) {
        let online = || {
            self.nodes
                .values()
                .filter(|n| n.status == NodeStatus::Online)
        };
        self.args.counters.online.store(
            online().count() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        let mut load = RemoteLoad::default();
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

    pub(super) fn record(&self, name: &str, status: &'static str) {
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

    /// Drains node `name` (`on`: its workers' credits at the queue go to zero, and stay
    /// there while it is drained) or undoes it (each worker gets its free slots back).
    pub(super) fn drain(&mut self, name: &str, on: bool) -> Result<(), String> {
        let Some(n) = self.nodes.get_mut(name) else {
            return Err(format!("no node {name:?} has joined"));
        };
        if n.draining == on {
            return Ok(());
        }
        n.draining = on;
        for (worker, w) in &mut n.workers {
            let credits = if on {
                w.ledger.set(0)
            } else {
                w.ledger.set(w.ledger.slots)
            };
            self.args
                .queue
                .worker_call(crate::worker::WorkerCall::SetCredits {
                    worker: worker.clone(),
                    credits,
                });
        }
        tracing::info!(node = %name, draining = on, "node drain changed");
        Ok(())
    }

    pub(super) fn list(&self) -> Vec<RemoteNode> {
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
                in_flight: n.workers.values().map(|w| w.ledger.in_flight()).sum(),
                draining: n.draining,
                backlog: n.backlog_share,
            })
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes
    }
}

/// Nodes that are gone (lost or left) the gate keeps listing, at most.
const MAX_DEPARTED: usize = 1_000;

/// The departed nodes past the `keep` heard from last, to forget.
pub(super) fn oldest_departed<'a>(
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
