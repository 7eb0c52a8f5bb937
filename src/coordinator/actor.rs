//! The coordinator actor: its messages, its state, and the root supervisor's reading of
//! its children's ends.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::children::{spawn_pool, Child, ExtraPool};
use super::shared::{Restarts, Shared};
use super::{CoordinatorConfig, StopReport};
use crate::error::Error;
use crate::events::{EventBus, EventKind};
use crate::handler::HandlerRegistry;
use crate::mailbox::{Mailbox, MailboxDepth};
use crate::pool::{PoolConfig, PoolRef};
use crate::queue::QueueRef;
use crate::scaling::ScaleDecision;
use crate::scaling::{Autoscaler, ScaleRule};
use crate::store::Store;
use crate::supervision::{ChildExit, OnExit, Supervisor, Verdict};
use crate::worker::WorkerRegistry;

/// The coordinator actor: the root supervisor of the queue and the local pool, and the home
/// of the autoscaler and the health check. Use it through [`Coordinator`](super::Coordinator).
#[derive(Debug)]
pub(crate) struct CoordinatorActor;

/// The coordinator's messages. Built only by [`Coordinator`](super::Coordinator).
pub(crate) enum CoordinatorMsg {
    /// The handles' view of the actors.
    Shared(RpcReplyPort<Arc<Shared>>),
    /// Autoscaler tick.
    Autoscale,
    /// Health-check tick.
    Health,
    /// Start another pool under this coordinator.
    AddPool {
        config: PoolConfig,
        handlers: HandlerRegistry,
        reply: RpcReplyPort<Result<PoolRef, Error>>,
    },
    /// Manual scale.
    Scale {
        target: usize,
        reply: RpcReplyPort<Result<ScaleDecision, Error>>,
    },
    /// Stop everything.
    Stop {
        graceful: bool,
        reply: RpcReplyPort<StopReport>,
    },
}

impl ractor::Message for CoordinatorMsg {}

pub(crate) struct CoordinatorArgs {
    pub(crate) config: CoordinatorConfig,
    pub(crate) handlers: HandlerRegistry,
    pub(crate) registry: WorkerRegistry,
    pub(crate) events: EventBus,
    pub(crate) depth: MailboxDepth,
    pub(crate) store: Option<Store>,
}

/// The coordinator actor's state.
pub(crate) struct CoordinatorState {
    /// Its settings.
    pub(super) config: CoordinatorConfig,
    /// Handlers for the local pool (kept to rebuild it after a failure).
    pub(super) handlers: HandlerRegistry,
    /// Every worker's heartbeat.
    pub(super) registry: WorkerRegistry,
    /// Lifecycle events.
    pub(super) events: EventBus,
    /// Its own mailbox gauge and counted sender.
    pub(super) me: Mailbox<CoordinatorMsg>,
    /// What handles see.
    pub(super) shared: Arc<Shared>,
    /// The scaling rule and its cool-down.
    pub(super) autoscaler: Autoscaler,
    /// Restarts of its pools (the local one and added ones) against the budget.
    pub(super) pools: Supervisor,
    /// Restarts of the cluster's gate against the budget, counted apart from the pools'.
    pub(super) gates: Supervisor,
    /// Restarts of the node groups' actor.
    pub(super) node_groups: Supervisor,
    /// The queue, which is never restarted: its end stops the coordinator.
    pub(super) queue_supervisor: Supervisor,
    /// Pools added with `Coordinator::add_pool`: supervised, health-checked and stopped
    /// like the local pool (each with what it is restarted from), but not autoscaled.
    pub(super) extra_pools: Vec<ExtraPool>,
    /// Set once a stop began: children ending is then expected.
    pub(super) stopping: bool,
}

impl Actor for CoordinatorActor {
    type Msg = CoordinatorMsg;
    type State = CoordinatorState;
    type Arguments = CoordinatorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<CoordinatorMsg>,
        args: CoordinatorArgs,
    ) -> Result<CoordinatorState, ActorProcessingErr> {
        let c = &args.config;
        let (queue, _) = QueueRef::spawn_inner(
            c.queue.clone(),
            args.events.clone(),
            Some(myself.get_cell()),
            args.store.clone(),
        )
        .await?;
        let pool = spawn_pool(
            &myself,
            c,
            &queue,
            &args.handlers,
            &args.registry,
            &args.events,
        )
        .await?;
        let rule = ScaleRule {
            min_workers: c.min_workers,
            max_workers: c.max_workers,
            scale_up_threshold: c.scale_up_threshold,
            scale_down_threshold: c.scale_down_threshold,
            cooldown: c.scale_cooldown,
        };
        let me = Mailbox::new(myself, args.depth);
        spawn_ticker(me.clone(), c.autoscale_interval, || {
            CoordinatorMsg::Autoscale
        });
        spawn_ticker(me.clone(), c.health_check_interval, || {
            CoordinatorMsg::Health
        });
        let pull = crate::pull::PullWorkers::start(queue.clone(), args.config.worker_timeout);
        Ok(CoordinatorState {
            autoscaler: Autoscaler::new(rule),
            pools: Supervisor::new("worker pool", args.config.restart_budget),
            gates: Supervisor::new("cluster gate", args.config.restart_budget),
            node_groups: Supervisor::new("node groups", args.config.restart_budget),
            queue_supervisor: Supervisor::new("task queue", args.config.restart_budget),
            config: args.config,
            handlers: args.handlers,
            registry: args.registry,
            events: args.events,
            me,
            shared: Arc::new(Shared {
                pull,
                queue,
                pool: RwLock::new(pool),
                decisions: Mutex::new(VecDeque::new()),
                remote: Default::default(),
                cluster: RwLock::new(None),
                node_groups: RwLock::new(None),
                extra_handlers: RwLock::new(Vec::new()),
                restarts: Restarts::default(),
            }),
            stopping: false,
            extra_pools: Vec::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<CoordinatorMsg>,
        msg: CoordinatorMsg,
        state: &mut CoordinatorState,
    ) -> Result<(), ActorProcessingErr> {
        state.me.depth().received();
        match msg {
            CoordinatorMsg::Shared(reply) => {
                let _ = reply.send(state.shared.clone());
            }
            CoordinatorMsg::Autoscale => {
                if state.config.auto_scale && !state.stopping {
                    state.autoscale().await;
                }
            }
            CoordinatorMsg::Health => {
                if !state.stopping {
                    state.health_check();
                }
            }
            CoordinatorMsg::AddPool {
                config,
                handlers,
                reply,
            } => {
                let _ = reply.send(state.add_pool(&myself, config, handlers).await);
            }
            CoordinatorMsg::Scale { target, reply } => {
                let _ = reply.send(state.manual_scale(target).await);
            }
            CoordinatorMsg::Stop { graceful, reply } => {
                state.stopping = true;
                let report = state.stop(graceful).await;
                let _ = reply.send(report);
                myself.stop(Some("stopped".into()));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<CoordinatorMsg>,
        event: SupervisionEvent,
        state: &mut CoordinatorState,
    ) -> Result<(), ActorProcessingErr> {
        let Some(exit) = ChildExit::of(event) else {
            return Ok(());
        };
        if state.stopping {
            return Ok(());
        }
        let child = state.child(&exit);
        let verdict = match &child {
            // The queue holds every task in memory: it cannot be rebuilt from here.
            Child::Queue => state.queue_supervisor.judge(&exit, OnExit::Escalate),
            Child::Gate(_) => state.gates.judge(&exit, OnExit::Restart),
            Child::NodeGroups(_) => state.node_groups.judge(&exit, OnExit::Restart),
            Child::Pool | Child::ExtraPool(_) => state.pools.judge(&exit, OnExit::Restart),
            Child::Unknown => return Ok(()),
        };
        state.shared.restarts.record(&state.pools, &state.gates);
        match verdict {
            Verdict::Stopped => Ok(()),
            Verdict::GiveUp(why) => {
                tracing::error!(%why, "coordinator stopping");
                Err(why.into())
            }
            Verdict::Restart => state.restart(&myself, child, &exit.reason).await,
        }
    }
}

/// Sends `make()` every `every` through the counted mailbox, until the actor is gone.
fn spawn_ticker(
    me: Mailbox<CoordinatorMsg>,
    every: Duration,
    make: impl Fn() -> CoordinatorMsg + Send + 'static,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        tick.tick().await;
        loop {
            tick.tick().await;
            // Skip a tick while the previous one is still waiting.
            if me.depth().get() > 16 {
                continue;
            }
            if me.send(make()).is_err() {
                return;
            }
        }
    });
}

impl CoordinatorState {
    /// Replaces workers whose heartbeats stopped; their leases go back to the queue when
    /// the pool sees them die.
    fn health_check(&self) {
        let alive = self.registry.get_workers(None, &[]);
        self.shared
            .queue
            .persist_heartbeats(alive.into_iter().map(|w| w.id.into()).collect());
        let silent_workers = self
            .registry
            .silent_incarnations(self.config.worker_timeout);
        for (worker, silent, incarnation) in silent_workers {
            tracing::warn!(%worker, silent_ms = silent.as_millis() as u64, "worker unresponsive");
            self.events.publish(EventKind::WorkerUnresponsive {
                worker: worker.as_str().into(),
                silent_ms: silent.as_millis() as u64,
            });
            self.pool_of(&worker).replace_incarnation(
                &worker,
                incarnation,
                format!("no heartbeat for {} ms", silent.as_millis()),
            );
        }
    }

    async fn stop(&mut self, graceful: bool) -> StopReport {
        let queue = self.shared.queue.clone();
        let pool = self.pool();
        let unfinished = if graceful {
            queue
                .close_and_drain(self.config.shutdown_timeout)
                .await
                .unwrap_or(0)
        } else {
            0
        };
        // Past `shutdown_timeout` the wait is over: a graceful pool stop would wait on the
        // running tasks again, without a limit, so what is still running is cancelled.
        for extra in &self.extra_pools {
            let _ = extra.pool.stop(graceful && unfinished == 0).await;
        }
        let _ = pool.stop(graceful && unfinished == 0).await;
        let stats = queue.stats().await.ok();
        queue.leave();
        // Bounded: a store that stopped answering must not hold the stop up for ever.
        match tokio::time::timeout(self.config.shutdown_timeout, queue.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "last changes could not be stored"),
            Err(_) => tracing::warn!("the store did not commit the last changes in time"),
        }
        // Waited for, so that the database is free for the next queue once `stop` returns.
        let _ = queue
            .actor()
            .stop_and_wait(
                Some("coordinator stopped".into()),
                Some(Duration::from_secs(10)),
            )
            .await;
        StopReport {
            graceful,
            unfinished: stats
                .as_ref()
                .map(|s| s.queue_size + s.running)
                .unwrap_or(unfinished),
            completed: stats.map(|s| s.completed).unwrap_or(0),
        }
    }
}
