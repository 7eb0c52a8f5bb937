//! What a node's proxy shares with the cluster handle: its slots, counters and health,
//! which `select_node`, `list_nodes` and every request read without asking the actor, and
//! the running proxy's backend client.
//!
//! A request does not travel through the proxy's mailbox: the caller takes one of the
//! node's `max_concurrent` slots (a fair semaphore, so waiting requests are served in
//! order), then calls the backend of the proxy that is running, bounded by the node's
//! timeout and by that proxy's life: when the proxy dies, its token cancels every request
//! it was running and their callers get a retryable `Unavailable`. (Going through the
//! mailbox cost two actor messages and a spawned task per request: about 20% of a local
//! server's throughput, measured by `compute_report`.) The actor keeps what needs one
//! owner: the client, and the health checks and their schedule.
//!
//! The circuit breaker (`breaker`) sits here, behind a mutex, since every request asks it
//! for leave before it takes a slot and tells it how it ended: while it is open, requests
//! are refused at once with a retryable `Unavailable` whose `retry_after` is the cool-down
//! left, and `available` is false, so selection picks another node.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use ractor::ActorRef;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::backend::Backend;
use super::breaker::{self, Breaker, BreakerState, Outcome, Policy, Ticket};
use super::config::ComputeConfig;
use super::node::{BreakerInfo, ComputeNode, ComputeNodeInfo, NodeHealth};
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
    pub(crate) draining: AtomicBool,
    /// Its proxy could not be kept running: unhealthy for good.
    pub(crate) given_up: AtomicBool,
    /// Whether requests go through: counts node faults and failed checks (see `breaker`).
    breaker: Mutex<Breaker>,
    /// Woken when the breaker opens: what waits for a slot gives up.
    pub(crate) tripped: Notify,
    pub(crate) requests: AtomicU64,
    pub(crate) failures: AtomicU64,
    /// Requests the breaker refused at once.
    rejected: AtomicU64,
    pub(crate) restarts: AtomicU64,
    /// When it was last checked, and why its last check or request failed.
    pub(crate) last_check: Mutex<(Option<SystemTime>, Option<String>)>,
    pub(crate) depth: MailboxDepth,
    /// How long requests took, from start to answer (not counting their wait for a slot).
    pub(crate) latency: Histogram,
    /// The running proxy; `None` between a death and its restart, or once given up on.
    pub(crate) proxy: RwLock<Option<ActorRef<ProxyMsg>>>,
    /// The running proxy's client; `None` when `proxy` is.
    pub(crate) current: RwLock<Option<Current>>,
    /// Time the breaker sees ahead of the clock: tests end a cool-down without waiting.
    #[cfg(test)]
    pub(crate) skew: Mutex<std::time::Duration>,
}

/// The breaker's leave for one request: its outcome is recorded once, and a request
/// dropped half-way (its caller went away) gives a probe's place back.
struct Leave<'a> {
    shared: &'a NodeShared,
    ticket: Option<Ticket>,
}

impl Leave<'_> {
    fn finish(mut self, outcome: Outcome) {
        if let Some(ticket) = self.ticket.take() {
            self.shared.breaker(|b, now| b.record(ticket, outcome, now));
        }
    }
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take().filter(|t| t.is_probe()) {
            self.shared
                .breaker(|b, now| b.record(ticket, Outcome::Ignored, now));
        }
    }
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
            breaker: Mutex::new(Breaker::new(Policy::from_config(&config))),
            config,
            in_flight: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            given_up: AtomicBool::new(false),
            tripped: Notify::new(),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            last_check: Mutex::new((None, None)),
            depth: MailboxDepth::default(),
            latency: Histogram::default(),
            proxy: RwLock::new(None),
            current: RwLock::new(None),
            #[cfg(test)]
            skew: Mutex::new(std::time::Duration::ZERO),
        }
    }

    /// The proxy's mailbox, when one runs.
    pub(crate) fn mailbox(&self) -> Option<Mailbox<ProxyMsg>> {
        let proxy = self.proxy.read().expect("proxy").clone()?;
        Some(Mailbox::new(proxy, self.depth.clone()))
    }

    /// The breaker's clock.
    fn now(&self) -> Instant {
        let now = Instant::now();
        #[cfg(test)]
        let now = now + *self.skew.lock().expect("skew");
        now
    }

    /// Runs `f` on the breaker, then says what changed: a warning when it opens (and
    /// what waits for a slot gives up), a note when it half-opens or closes.
    fn breaker<R>(&self, f: impl FnOnce(&mut Breaker, Instant) -> R) -> R {
        let now = self.now();
        let (r, before, after) = {
            let mut b = self.breaker.lock().expect("breaker");
            let before = b.current();
            let r = f(&mut b, now);
            let after = b.state(now);
            let changed = (before != after).then(|| b.snapshot(now));
            (r, before, changed)
        };
        if let Some(s) = after {
            self.transition(before, &s);
        }
        r
    }

    fn transition(&self, from: BreakerState, s: &breaker::Snapshot) {
        let node = self.node.id();
        match s.state {
            BreakerState::Open => {
                let reason = self.last_check.lock().expect("health").1.clone();
                tracing::warn!(
                    node,
                    from = from.as_str(),
                    why = %s.last_trip.as_ref().map(ToString::to_string).unwrap_or_default(),
                    last_error = reason.as_deref().unwrap_or(""),
                    cool_down = ?s.retry_in.unwrap_or_default(),
                    trips = s.trips,
                    "compute node circuit breaker opened"
                );
                self.tripped.notify_waiters();
                if !s.waiting_for_check {
                    // Opened on failing requests: a check soon says whether the node is
                    // reachable at all (if not, no probe is spent on it).
                    if let Some(m) = self.mailbox() {
                        let _ = m.send(ProxyMsg::CheckSoon);
                    }
                }
            }
            BreakerState::HalfOpen => {
                tracing::info!(
                    node,
                    from = from.as_str(),
                    "compute node circuit breaker half-open: probing"
                );
            }
            BreakerState::Closed => {
                tracing::info!(
                    node,
                    from = from.as_str(),
                    "compute node circuit breaker closed"
                );
            }
        }
    }

    /// Whether it may be picked for new work: not being removed, a proxy running, and a
    /// breaker that lets a request through (closed, or half-open with a probe to spare).
    pub(crate) fn available(&self) -> bool {
        !self.draining.load(Ordering::Relaxed)
            && self.current.read().expect("current").is_some()
            && self.breaker(|b, now| b.admits(now))
    }

    /// Work on it for each slot it has: lower is less loaded.
    pub(crate) fn load(&self) -> f64 {
        let work = self.in_flight.load(Ordering::Relaxed) + self.waiting.load(Ordering::Relaxed);
        work as f64 / self.node.concurrency() as f64
    }

    fn unavailable(&self, why: &str) -> ComputeError {
        ComputeError::unavailable(format!("node {} {why}", self.node.id()))
    }

    /// The fail-fast answer of a breaker that lets nothing through: retryable, not before
    /// the cool-down ends.
    fn refused(&self, retry_after: Option<Duration>) -> ComputeError {
        let (state, why) = {
            let now = self.now();
            let mut b = self.breaker.lock().expect("breaker");
            let s = b.snapshot(now);
            (
                s.state,
                s.last_trip.map(|t| t.to_string()).unwrap_or_default(),
            )
        };
        let what = match state {
            BreakerState::HalfOpen => {
                "circuit breaker is half-open and its probe is running".to_string()
            }
            _ => {
                let last = self.last_check.lock().expect("health").1.clone();
                match last {
                    Some(last) => format!("circuit breaker is open ({why}; last: {last})"),
                    None => format!("circuit breaker is open ({why})"),
                }
            }
        };
        ComputeError {
            retry_after,
            ..self.unavailable(&what)
        }
    }

    fn open_now(&self) -> bool {
        self.breaker(|b, now| b.state(now)) == BreakerState::Open
    }

    /// Runs one request: the breaker's leave (refused at once while it is open), a slot
    /// (waiting in order if none is free), then the running proxy's backend, bounded by
    /// the node's timeout and the proxy's life.
    pub(crate) async fn execute(
        self: &Arc<Self>,
        request: ComputeRequest,
        sink: Option<StreamSink>,
    ) -> Result<ComputeResponse, ComputeError> {
        if self.draining.load(Ordering::Relaxed) {
            return Err(self.unavailable("is being removed"));
        }
        if self.given_up.load(Ordering::Relaxed) {
            return Err(self.unavailable("has no proxy: its restarts were given up on"));
        }
        request.validate()?;
        let ticket = match self.breaker(|b, now| b.admit(now)) {
            Ok(ticket) => ticket,
            Err(retry_after) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(self.refused(retry_after));
            }
        };
        let leave = Leave {
            shared: self,
            ticket: Some(ticket),
        };
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
                if self.open_now() {
                    return Err(self.gave_up());
                }
                tokio::select! {
                    permit = self.slots.acquire() => permit.map_err(|_| self.unavailable("was removed"))?,
                    () = tripped => return Err(self.gave_up()),
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
        let outcome = match &result {
            Ok(_) => Outcome::Success,
            // Its proxy died: that says nothing of the node.
            Err(_) if current.token.is_cancelled() => Outcome::Ignored,
            Err(e) if e.is_node_fault() => {
                self.last_check.lock().expect("health").1 = Some(e.message.clone());
                Outcome::Failure
            }
            // The node answered; the request was wrong.
            Err(e) if e.kind == ComputeErrorKind::Rejected => Outcome::Success,
            Err(_) => Outcome::Ignored,
        };
        if result.is_err() {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        leave.finish(outcome);
        result
    }

    /// What a request waiting for a slot hears when the breaker opens.
    fn gave_up(&self) -> ComputeError {
        let retry_after = self.breaker(|b, now| b.snapshot(now).retry_in);
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.refused(retry_after.filter(|d| !d.is_zero()))
    }

    /// A failed health check: one more failure in a row for the breaker.
    pub(crate) fn failed(&self, reason: String) {
        self.last_check.lock().expect("health").1 = Some(reason);
        self.breaker(|b, now| b.check_failed(now));
    }

    /// A passing check: the row of failures ends, and a breaker that waited for the node
    /// to answer its checks again is half-open (a real request then decides).
    pub(crate) fn passed(&self) {
        self.last_check.lock().expect("health").1 = None;
        self.breaker(|b, now| b.check_passed(now));
    }

    pub(crate) fn info(&self) -> ComputeNodeInfo {
        let n = &self.node;
        let (checked_at, reason) = self.last_check.lock().expect("health").clone();
        let s = self.breaker(|b, now| b.snapshot(now));
        let wall = SystemTime::now();
        let breaker = BreakerInfo {
            state: s.state,
            consecutive_failures: s.consecutive_failures,
            window_requests: s.window_requests,
            window_failures: s.window_failures,
            failure_rate: if s.window_requests == 0 {
                0.0
            } else {
                f64::from(s.window_failures) / f64::from(s.window_requests)
            },
            opened_at: s.opened_ago.and_then(|ago| wall.checked_sub(ago)),
            retry_at: s.retry_in.and_then(|d| wall.checked_add(d)),
            waiting_for_check: s.waiting_for_check,
            reason: s.last_trip.map(|t| t.to_string()),
            trips: s.trips,
            rejected: self.rejected.load(Ordering::Relaxed),
        };
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
                healthy: s.state != BreakerState::Open && !self.given_up.load(Ordering::Relaxed),
                checked_at,
                reason,
                consecutive_failures: s.consecutive_failures,
            },
            breaker,
            requests: self.requests.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            mailbox_depth: self.depth.get(),
            draining: self.draining.load(Ordering::Relaxed),
        }
    }
}
