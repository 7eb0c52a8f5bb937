//! The NodeProxy actor: the owner of one compute node. It builds the node's backend client
//! (and with it the connection pool), publishes it to the node's requests together with a
//! token that ends them all if the proxy dies, and checks the node's health on a schedule
//! with backoff. Each check's outcome goes to the node's circuit breaker (see `breaker`):
//! failed checks count towards opening it, and while it is open because the node fails its
//! checks, the first passing one moves it to half-open. Requests themselves run in their
//! callers' tasks (see `state`), in the node's `max_concurrent` slots, with the breaker's
//! leave.

use std::sync::Arc;
use std::time::SystemTime;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::backend::{self, Backend};
use super::state::{Current, NodeShared};
use crate::mailbox::Mailbox;

pub(crate) enum ProxyMsg {
    /// Time for the health check of this generation.
    HealthTick(u64),
    /// A health check ended.
    HealthDone(Result<(), String>),
    /// Check now and answer whether the check passed.
    CheckNow(oneshot::Sender<bool>),
    /// The breaker opened on failing requests: check soon whether the node answers.
    CheckSoon,
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
    /// Ends every request this proxy's client is running, when the proxy ends.
    token: CancellationToken,
    me: Mailbox<ProxyMsg>,
    /// The health check running, if any (aborted with the proxy).
    checks: JoinSet<()>,
    checking: bool,
    /// Generation of the scheduled health tick: a tick of an older one is ignored.
    tick: u64,
    /// Checks failed in a row: the next one waits longer.
    failed_checks: u32,
    check_waiters: Vec<oneshot::Sender<bool>>,
}

impl Drop for ProxyState {
    fn drop(&mut self) {
        self.token.cancel();
    }
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
        let token = CancellationToken::new();
        *shared.current.write().expect("current") = Some(Current {
            backend: backend.clone(),
            token: token.clone(),
        });
        let me = Mailbox::new(myself, shared.depth.clone());
        let _ = me.send(ProxyMsg::HealthTick(0));
        Ok(ProxyState {
            shared,
            backend,
            token,
            me,
            checks: JoinSet::new(),
            checking: false,
            tick: 0,
            failed_checks: 0,
            check_waiters: Vec::new(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ProxyMsg>,
        state: &mut ProxyState,
    ) -> Result<(), ActorProcessingErr> {
        state.token.cancel();
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<ProxyMsg>,
        msg: ProxyMsg,
        state: &mut ProxyState,
    ) -> Result<(), ActorProcessingErr> {
        state.shared.depth.received();
        match msg {
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
            ProxyMsg::CheckSoon => state.check(),
            ProxyMsg::Crash => return Err("crash asked for".into()),
        }
        Ok(())
    }
}

impl ProxyState {
    fn check(&mut self) {
        if self.checking {
            return;
        }
        self.checking = true;
        while self.checks.try_join_next().is_some() {}
        let timeout = self.shared.config.health_timeout;
        let check = self.backend.health(timeout);
        let me = self.me.clone();
        self.checks.spawn(async move {
            let result = tokio::time::timeout(timeout, check)
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")));
            let _ = me.send(ProxyMsg::HealthDone(result));
        });
    }

    fn checked(&mut self, result: Result<(), String>) {
        self.checking = false;
        self.shared.last_check.lock().expect("health").0 = Some(SystemTime::now());
        let passed = result.is_ok();
        match result {
            Ok(()) => {
                self.failed_checks = 0;
                self.shared.passed();
            }
            Err(reason) => {
                self.failed_checks = self.failed_checks.saturating_add(1);
                self.shared.failed(reason);
            }
        }
        // Those who asked for a check hear how this one went; whether the node takes work
        // follows the breaker.
        for w in self.check_waiters.drain(..) {
            let _ = w.send(passed);
        }
        let failures = self.failed_checks;
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
}
