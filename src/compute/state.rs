//! What a node's proxy shares with the cluster handle: counters and health that
//! `select_node` and `list_nodes` read without asking the actor, and the current proxy.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};

use ractor::ActorRef;

use super::config::ComputeConfig;
use super::node::{ComputeNode, ComputeNodeInfo, NodeHealth};
use super::proxy::ProxyMsg;
use crate::mailbox::{Mailbox, MailboxDepth};
use crate::metrics::Histogram;

pub(crate) struct NodeShared {
    pub(crate) node: ComputeNode,
    pub(crate) config: ComputeConfig,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) waiting: AtomicUsize,
    pub(crate) healthy: AtomicBool,
    pub(crate) draining: AtomicBool,
    pub(crate) requests: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) restarts: AtomicU64,
    pub(crate) health: Mutex<NodeHealth>,
    pub(crate) depth: MailboxDepth,
    /// How long requests took, from start to answer (not counting their wait for a slot).
    pub(crate) latency: Histogram,
    /// The running proxy; `None` between a death and its restart, or once given up on.
    pub(crate) proxy: RwLock<Option<ActorRef<ProxyMsg>>>,
}

impl NodeShared {
    pub(crate) fn new(node: ComputeNode, config: ComputeConfig) -> Self {
        Self {
            node,
            config,
            in_flight: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            health: Mutex::new(NodeHealth {
                healthy: true,
                checked_at: None,
                reason: None,
                consecutive_failures: 0,
            }),
            depth: MailboxDepth::default(),
            latency: Histogram::default(),
            proxy: RwLock::new(None),
        }
    }

    /// The proxy's mailbox, when one runs.
    pub(crate) fn mailbox(&self) -> Option<Mailbox<ProxyMsg>> {
        let proxy = self.proxy.read().expect("proxy").clone()?;
        Some(Mailbox::new(proxy, self.depth.clone()))
    }

    /// Whether it may be picked for new work.
    pub(crate) fn available(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
            && !self.draining.load(Ordering::Relaxed)
            && self.proxy.read().expect("proxy").is_some()
    }

    /// Work on it for each slot it has: lower is less loaded.
    pub(crate) fn load(&self) -> f64 {
        let work = self.in_flight.load(Ordering::Relaxed) + self.waiting.load(Ordering::Relaxed);
        work as f64 / self.node.concurrency() as f64
    }

    pub(crate) fn info(&self) -> ComputeNodeInfo {
        let n = &self.node;
        ComputeNodeInfo {
            id: n.id().into(),
            name: n.display_name().into(),
            backend: n.backend(),
            endpoint: n.endpoint().to_string(),
            labels: n.labels().clone(),
            capabilities: n.capabilities().clone(),
            max_concurrent: n.concurrency(),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            waiting: self.waiting.load(Ordering::Relaxed),
            health: self.health.lock().expect("health").clone(),
            requests: self.requests.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            mailbox_depth: self.depth.get(),
            draining: self.draining.load(Ordering::Relaxed),
        }
    }
}
