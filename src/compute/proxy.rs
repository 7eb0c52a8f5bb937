//! The NodeProxy actor: the one place that talks to a compute node. It owns the node's
//! backend client, runs at most `max_concurrent` requests at once (the rest wait in order,
//! up to a bound), checks the node's health on a schedule with backoff, and keeps a circuit
//! breaker: `unhealthy_after` failed checks or node faults in a row mark the node unhealthy
//! (nothing is sent to it, and what waited fails retryably so the task queue can retry it
//! elsewhere); one passing check brings it back.
//!
//! Requests run as tasks the proxy owns: when the proxy dies they are aborted and their
//! callers get a retryable `Unavailable` error; its supervisor starts a new proxy.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::backend::{self, Backend};
use super::request::{ComputeError, ComputeErrorKind, ComputeRequest, ComputeResponse, StreamSink};
use super::state::NodeShared;
use crate::mailbox::Mailbox;

/// A caller's answer.
pub(crate) type Reply = oneshot::Sender<Result<ComputeResponse, ComputeError>>;

pub(crate) enum ProxyMsg {
    /// Run a request.
    Execute {
        request: ComputeRequest,
        sink: Option<StreamSink>,
        reply: Reply,
    },
    /// A request ended; `fault` says why when the node itself was at fault.
    Finished { failed: bool, fault: Option<String> },
    /// Time for the health check of this generation.
    HealthTick(u64),
    /// A health check ended.
    HealthDone(Result<(), String>),
    /// Check now and answer whether the check passed.
    CheckNow(oneshot::Sender<bool>),
    /// Take nothing new; answer and stop once everything running and waiting is done.
    Drain(oneshot::Sender<()>),
    /// Fail on purpose (fault drills and tests of supervision).
    #[cfg_attr(not(test), allow(dead_code))]
    Crash,
}

impl ractor::Message for ProxyMsg {}

pub(crate) struct NodeProxy;

pub(crate) struct ProxyArgs {
    pub(crate) shared: Arc<NodeShared>,
}

pub(crate) struct ProxyState {
    shared: Arc<NodeShared>,
    backend: Arc<dyn Backend>,
    me: Mailbox<ProxyMsg>,
    waiting: VecDeque<(ComputeRequest, Option<StreamSink>, Reply)>,
    running: JoinSet<()>,
    in_flight: usize,
    checking: bool,
    /// Generation of the scheduled health tick: a tick of an older one is ignored.
    tick: u64,
    check_waiters: Vec<oneshot::Sender<bool>>,
    drain_waiters: Vec<oneshot::Sender<()>>,
}

impl Actor for NodeProxy {
    type Msg = ProxyMsg;
    type State = ProxyState;
    type Arguments = ProxyArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ProxyMsg>,
        args: ProxyArgs,
    ) -> Result<ProxyState, ActorProcessingErr> {
        let shared = args.shared;
        let backend = backend::connect(&shared.node, &shared.config)?;
        shared.in_flight.store(0, Ordering::Relaxed);
        shared.waiting.store(0, Ordering::Relaxed);
        let me = Mailbox::new(myself, shared.depth.clone());
        let _ = me.send(ProxyMsg::HealthTick(0));
        Ok(ProxyState {
            shared,
            backend,
            me,
            waiting: VecDeque::new(),
            running: JoinSet::new(),
            in_flight: 0,
            checking: false,
            tick: 0,
            check_waiters: Vec::new(),
            drain_waiters: Vec::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ProxyMsg>,
        msg: ProxyMsg,
        state: &mut ProxyState,
    ) -> Result<(), ActorProcessingErr> {
        state.shared.depth.received();
        match msg {
            ProxyMsg::Execute {
                request,
                sink,
                reply,
            } => state.execute(request, sink, reply),
            ProxyMsg::Finished { failed, fault } => {
                state.in_flight -= 1;
                state
                    .shared
                    .in_flight
                    .store(state.in_flight, Ordering::Relaxed);
                state.shared.requests.fetch_add(1, Ordering::Relaxed);
                if failed {
                    state.shared.failures.fetch_add(1, Ordering::Relaxed);
                }
                while state.running.try_join_next().is_some() {}
                match fault {
                    Some(reason) => state.failed_once(reason),
                    None if !failed => {
                        state
                            .shared
                            .health
                            .lock()
                            .expect("health")
                            .consecutive_failures = 0
                    }
                    None => {}
                }
                state.pump();
            }
            ProxyMsg::HealthTick(generation) => {
                if generation == state.tick {
                    state.check();
                }
            }
            ProxyMsg::HealthDone(result) => state.checked(result),
            ProxyMsg::CheckNow(reply) => {
                state.check_waiters.push(reply);
                state.check();
            }
            ProxyMsg::Drain(reply) => {
                state.shared.draining.store(true, Ordering::Relaxed);
                state.drain_waiters.push(reply);
            }
            ProxyMsg::Crash => return Err("crash asked for".into()),
        }
        if state.shared.draining.load(Ordering::Relaxed)
            && state.in_flight == 0
            && state.waiting.is_empty()
        {
            for w in state.drain_waiters.drain(..) {
                let _ = w.send(());
            }
            myself.stop(Some("drained".into()));
        }
        Ok(())
    }
}

impl ProxyState {
    fn execute(&mut self, request: ComputeRequest, sink: Option<StreamSink>, reply: Reply) {
        let node = &self.shared.node;
        let refuse = |kind, why: String| Err(ComputeError::new(kind, why));
        let answer = if self.shared.draining.load(Ordering::Relaxed) {
            refuse(
                ComputeErrorKind::Unavailable,
                format!("node {} is being removed", node.id()),
            )
        } else if !self.shared.healthy.load(Ordering::Relaxed) {
            let why = self.shared.health.lock().expect("health").reason.clone();
            refuse(
                ComputeErrorKind::Unavailable,
                format!(
                    "node {} is unhealthy: {}",
                    node.id(),
                    why.unwrap_or_default()
                ),
            )
        } else if let Err(e) = request.validate() {
            Err(e)
        } else if self.waiting.len() >= self.shared.config.max_waiting {
            refuse(
                ComputeErrorKind::Busy,
                format!(
                    "node {} has {} requests waiting",
                    node.id(),
                    self.waiting.len()
                ),
            )
        } else {
            self.waiting.push_back((request, sink, reply));
            self.pump();
            return;
        };
        let _ = reply.send(answer);
    }

    /// Starts waiting requests while there are free slots.
    fn pump(&mut self) {
        while self.in_flight < self.shared.node.concurrency() {
            let Some((request, sink, reply)) = self.waiting.pop_front() else {
                break;
            };
            self.start(request, sink, reply);
        }
        self.shared
            .waiting
            .store(self.waiting.len(), Ordering::Relaxed);
        self.shared
            .in_flight
            .store(self.in_flight, Ordering::Relaxed);
    }

    fn start(&mut self, request: ComputeRequest, sink: Option<StreamSink>, mut reply: Reply) {
        self.in_flight += 1;
        let call = self.backend.execute(request, sink);
        let timeout = self.shared.node.request_timeout();
        let me = self.me.clone();
        let shared = self.shared.clone();
        self.running.spawn(async move {
            let started = tokio::time::Instant::now();
            let result = tokio::select! {
                r = tokio::time::timeout(timeout, call) => r.unwrap_or_else(|_| {
                    Err(ComputeError::new(
                        ComputeErrorKind::Timeout,
                        format!("no answer within {timeout:?}"),
                    ))
                }),
                // The caller went away (its task was cancelled): free the slot.
                () = reply.closed() => Err(ComputeError::new(
                    ComputeErrorKind::Unavailable,
                    "the caller went away",
                )),
            };
            let fault = result
                .as_ref()
                .err()
                .filter(|e| e.is_node_fault())
                .map(|e| e.message.clone());
            let failed = result.is_err();
            shared.latency.observe(started.elapsed());
            let _ = reply.send(result);
            let _ = me.send(ProxyMsg::Finished { failed, fault });
        });
    }

    fn check(&mut self) {
        if self.checking {
            return;
        }
        self.checking = true;
        let check = self.backend.health(self.shared.config.health_timeout);
        let timeout = self.shared.config.health_timeout;
        let me = self.me.clone();
        self.running.spawn(async move {
            let result = tokio::time::timeout(timeout, check)
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")));
            let _ = me.send(ProxyMsg::HealthDone(result));
        });
    }

    fn checked(&mut self, result: Result<(), String>) {
        self.checking = false;
        let failures = {
            let mut health = self.shared.health.lock().expect("health");
            health.checked_at = Some(SystemTime::now());
            match &result {
                Ok(()) => {
                    health.consecutive_failures = 0;
                    health.reason = None;
                    health.healthy = true;
                }
                Err(reason) => {
                    health.consecutive_failures += 1;
                    health.reason = Some(reason.clone());
                }
            }
            health.consecutive_failures
        };
        match result {
            Ok(()) => self.shared.healthy.store(true, Ordering::Relaxed),
            Err(_) => self.maybe_trip(failures),
        }
        // Those who asked for a check hear how this one went; whether the node takes work
        // follows the breaker (`unhealthy_after` failures in a row).
        let passed = failures == 0;
        for w in self.check_waiters.drain(..) {
            let _ = w.send(passed);
        }
        // The next check: on schedule, later and later while the node keeps failing.
        let config = &self.shared.config;
        let delay = if failures == 0 {
            config.health_interval
        } else {
            let factor = 1u32 << (failures - 1).min(16);
            config
                .health_interval
                .saturating_mul(factor)
                .min(config.max_backoff.max(config.health_interval))
        };
        self.tick += 1;
        let generation = self.tick;
        self.me
            .send_after(delay, move || ProxyMsg::HealthTick(generation));
    }

    /// A request found the node at fault: one more failure for the breaker, and a check
    /// soon to confirm.
    fn failed_once(&mut self, reason: String) {
        let failures = {
            let mut health = self.shared.health.lock().expect("health");
            health.consecutive_failures += 1;
            health.reason = Some(reason);
            health.consecutive_failures
        };
        self.maybe_trip(failures);
    }

    fn maybe_trip(&mut self, failures: u32) {
        if failures < self.shared.config.unhealthy_after {
            return;
        }
        if self.shared.healthy.swap(false, Ordering::Relaxed) {
            self.shared.health.lock().expect("health").healthy = false;
            tracing::warn!(
                node = self.shared.node.id(),
                failures,
                "compute node unhealthy"
            );
        }
        // What waited would wait for a node that is down: let the queue retry it elsewhere.
        let why = format!("node {} became unhealthy", self.shared.node.id());
        for (_, _, reply) in self.waiting.drain(..) {
            let _ = reply.send(Err(ComputeError::unavailable(why.clone())));
        }
        self.shared.waiting.store(0, Ordering::Relaxed);
    }
}
