//! What a node's proxy shares with the cluster handle: its slots, counters and health,
//! which `select_node`, `list_nodes` and every request read without asking the actor, and
//! the running proxy's backend client.
//!
//! A request does not travel through the proxy's mailbox: the caller takes one of the
//! node's `max_concurrent` slots (a fair semaphore, so waiting requests are served in
//! order), then calls the backend of the proxy that is running, bounded by the node's
//! timeout and by that proxy's life: when the proxy dies, its token cancels every request
//! it was running and their callers get a retryable `Unavailable`. The actor keeps what
//! needs one owner: the client, the health checks and their schedule, and the breaker's
//! trips. (Going through the mailbox cost two actor messages and a spawned task per
//! request: about 20% of a local server's throughput, measured by `compute_report`.)

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use ractor::ActorRef;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::backend::Backend;
use super::config::ComputeConfig;
use super::node::{ComputeNode, ComputeNodeInfo, NodeHealth};
use super::proxy::ProxyMsg;
use super::request::{ComputeError, ComputeErrorKind, ComputeRequest, ComputeResponse, StreamSink};
use crate::mailbox::{Mailbox, MailboxDepth};
use crate::metrics::Histogram;

/// The running proxy's client, and the token that ends its requests when it dies.
#[derive(Clone)]
pub(crate) struct Current {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) token: CancellationToken,
}

pub(crate) struct NodeShared {
    pub(crate) node: ComputeNode,
    pub(crate) config: ComputeConfig,
    /// One permit per request that may run at once.
    pub(crate) slots: Semaphore,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) waiting: AtomicUsize,
    pub(crate) healthy: AtomicBool,
    pub(crate) draining: AtomicBool,
    /// Failed checks and node faults in a row.
    pub(crate) consecutive_failures: AtomicU32,
    /// Woken when the node becomes unhealthy: what waits for a slot gives up.
    pub(crate) tripped: Notify,
    pub(crate) requests: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) restarts: AtomicU64,
    /// When it was last checked and why it last failed.
    pub(crate) last_check: Mutex<(Option<SystemTime>, Option<String>)>,
    pub(crate) depth: MailboxDepth,
    /// How long requests took, from start to answer (not counting their wait for a slot).
    pub(crate) latency: Histogram,
    /// The running proxy; `None` between a death and its restart, or once given up on.
    pub(crate) proxy: RwLock<Option<ActorRef<ProxyMsg>>>,
    /// The running proxy's client; `None` when `proxy` is.
    pub(crate) current: RwLock<Option<Current>>,
}

/// Counts one waiting or running request for as long as it lives.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Self(n)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl NodeShared {
    pub(crate) fn new(node: ComputeNode, config: ComputeConfig) -> Self {
        Self {
            slots: Semaphore::new(node.concurrency()),
            node,
            config,
            in_flight: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            consecutive_failures: AtomicU32::new(0),
            tripped: Notify::new(),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            last_check: Mutex::new((None, None)),
            depth: MailboxDepth::default(),
            latency: Histogram::default(),
            proxy: RwLock::new(None),
            current: RwLock::new(None),
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
            && self.current.read().expect("current").is_some()
    }

    /// Work on it for each slot it has: lower is less loaded.
    pub(crate) fn load(&self) -> f64 {
        let work = self.in_flight.load(Ordering::Relaxed) + self.waiting.load(Ordering::Relaxed);
        work as f64 / self.node.concurrency() as f64
    }

    fn unavailable(&self, why: &str) -> ComputeError {
        ComputeError::unavailable(format!("node {} {why}", self.node.id()))
    }

    /// Runs one request: a slot (waiting in order if none is free), then the running
    /// proxy's backend, bounded by the node's timeout and the proxy's life.
    pub(crate) async fn execute(
        self: &Arc<Self>,
        request: ComputeRequest,
        sink: Option<StreamSink>,
    ) -> Result<ComputeResponse, ComputeError> {
        if self.draining.load(Ordering::Relaxed) {
            return Err(self.unavailable("is being removed"));
        }
        if !self.healthy.load(Ordering::Relaxed) {
            let why = self
                .last_check
                .lock()
                .expect("health")
                .1
                .clone()
                .unwrap_or_default();
            return Err(self.unavailable(&format!("is unhealthy: {why}")));
        }
        request.validate()?;
        let _permit = match self.slots.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                if self.waiting.load(Ordering::Relaxed) >= self.config.max_waiting {
                    return Err(ComputeError::new(
                        ComputeErrorKind::Busy,
                        format!(
                            "node {} has {} requests waiting",
                            self.node.id(),
                            self.config.max_waiting
                        ),
                    ));
                }
                let _waiting = Counted::new(&self.waiting);
                let tripped = self.tripped.notified();
                tokio::pin!(tripped);
                tripped.as_mut().enable();
                if !self.healthy.load(Ordering::Relaxed) {
                    return Err(self.unavailable("became unhealthy"));
                }
                tokio::select! {
                    permit = self.slots.acquire() => permit.map_err(|_| self.unavailable("was removed"))?,
                    () = tripped => return Err(self.unavailable("became unhealthy")),
                }
            }
        };
        let current = self
            .current
            .read()
            .expect("current")
            .clone()
            .ok_or_else(|| self.unavailable("has no running proxy (it is restarting)"))?;
        let _running = Counted::new(&self.in_flight);
        let started = tokio::time::Instant::now();
        let timeout = self.node.request_timeout();
        let result = tokio::select! {
            r = tokio::time::timeout(timeout, current.backend.execute(request, sink)) => {
                r.unwrap_or_else(|_| Err(ComputeError::new(
                    ComputeErrorKind::Timeout,
                    format!("no answer within {timeout:?}"),
                )))
            }
            () = current.token.cancelled() => Err(self.unavailable("lost its proxy mid-request")),
        };
        self.latency.observe(started.elapsed());
        self.requests.fetch_add(1, Ordering::Relaxed);
        match &result {
            Ok(_) => {
                if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
                    self.consecutive_failures.store(0, Ordering::Relaxed);
                }
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                if e.is_node_fault() && !current.token.is_cancelled() {
                    self.failed(e.message.clone());
                    if let Some(m) = self.mailbox() {
                        // A check soon confirms or clears it.
                        let _ = m.send(ProxyMsg::CheckSoon);
                    }
                }
            }
        }
        result
    }

    /// One more failure in a row (a failed check or a node fault): the node is unhealthy
    /// once they reach `unhealthy_after`. Answers the count.
    pub(crate) fn failed(&self, reason: String) -> u32 {
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        self.last_check.lock().expect("health").1 = Some(reason);
        if n >= self.config.unhealthy_after && self.healthy.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                node = self.node.id(),
                failures = n,
                "compute node unhealthy"
            );
            self.tripped.notify_waiters();
        }
        n
    }

    /// A passing check: healthy again, the breaker reset.
    pub(crate) fn passed(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.last_check.lock().expect("health").1 = None;
        self.healthy.store(true, Ordering::Relaxed);
    }

    pub(crate) fn info(&self) -> ComputeNodeInfo {
        let n = &self.node;
        let (checked_at, reason) = self.last_check.lock().expect("health").clone();
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
            health: NodeHealth {
                healthy: self.healthy.load(Ordering::Relaxed),
                checked_at,
                reason,
                consecutive_failures: self.consecutive_failures.load(Ordering::Relaxed),
            },
            requests: self.requests.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            mailbox_depth: self.depth.get(),
            draining: self.draining.load(Ordering::Relaxed),
        }
    }
}
