use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::time::Instant;

use super::autoscaler::{Autoscaler, ScaleRule};
use super::{CoordinatorConfig, StopReport};
use crate::error::Error;
use crate::events::{EventBus, EventKind};
use crate::handler::HandlerRegistry;
use crate::mailbox::{Mailbox, MailboxDepth};
use crate::pool::{PoolArgs, PoolConfig, PoolRef};
use crate::queue::QueueRef;
use crate::scaling::{ScaleDecision, ScalePressure, ScaleSignals};
use crate::store::Store;
use crate::supervision::{ChildExit, OnExit, Supervisor, Verdict};
use crate::worker::WorkerRegistry;

/// How many scale decisions the coordinator keeps for the API.
const DECISIONS_KEPT: usize = 100;

/// The coordinator actor: the root supervisor of the queue and the local pool, and the home
/// of the autoscaler and the health check. Use it through [`Coordinator`](super::Coordinator).
#[derive(Debug)]
pub(crate) struct CoordinatorActor;

/// What the coordinator shares with its handles.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) queue: QueueRef,
    /// Replaced when the pool is restarted.
    pub(crate) pool: RwLock<PoolRef>,
    pub(crate) decisions: Mutex<VecDeque<ScaleDecision>>,
    /// Online nodes' load, written by the cluster's gate.
    pub(crate) remote: crate::cluster::RemoteLoadCell,
    /// The listener for nodes, once started: its gate is this actor's child.
    pub(crate) cluster: RwLock<Option<crate::cluster::Cluster>>,
    /// The handlers of pools added with `Coordinator::add_pool`: their task types are
    /// served here too.
    pub(crate) extra_handlers: RwLock<Vec<HandlerRegistry>>,
    /// Restarts of the coordinator's children, for `get_stats`.
    pub(crate) restarts: Restarts,
}

/// How many times the coordinator restarted its children, by kind; written by the actor
/// after each supervision event, read by `get_stats`.
#[derive(Debug, Default)]
pub(crate) struct Restarts {
    pools: AtomicU64,
    gate: AtomicU64,
}

impl Restarts {
    fn record(&self, pools: &Supervisor, gates: &Supervisor) {
        self.pools.store(pools.restarts(), Ordering::Relaxed);
        self.gate.store(gates.restarts(), Ordering::Relaxed);
    }

    /// Pool restarts (the local pool and added ones).
    pub(crate) fn pools(&self) -> u64 {
        self.pools.load(Ordering::Relaxed)
    }

    /// Cluster gate restarts.
    pub(crate) fn gate(&self) -> u64 {
        self.gate.load(Ordering::Relaxed)
    }
}

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
    config: CoordinatorConfig,
    /// Handlers for the local pool (kept to rebuild it after a failure).
    handlers: HandlerRegistry,
    /// Every worker's heartbeat.
    registry: WorkerRegistry,
    /// Lifecycle events.
    events: EventBus,
    /// Its own mailbox gauge and counted sender.
    me: Mailbox<CoordinatorMsg>,
    /// What handles see.
    shared: Arc<Shared>,
    /// The scaling rule and its cool-down.
    autoscaler: Autoscaler,
    /// Restarts of its pools (the local one and added ones) against the budget.
    pools: Supervisor,
    /// Restarts of the cluster's gate against the budget, counted apart from the pools'.
    gates: Supervisor,
    /// The queue, which is never restarted: its end stops the coordinator.
    queue_supervisor: Supervisor,
    /// Pools added with `Coordinator::add_pool`: supervised, health-checked and stopped
    /// like the local pool (each with what it is restarted from), but not autoscaled.
    extra_pools: Vec<ExtraPool>,
    /// Set once a stop began: children ending is then expected.
    stopping: bool,
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
        Ok(CoordinatorState {
            autoscaler: Autoscaler::new(rule),
            pools: Supervisor::new("worker pool", args.config.restart_budget),
            gates: Supervisor::new("cluster gate", args.config.restart_budget),
            queue_supervisor: Supervisor::new("task queue", args.config.restart_budget),
            config: args.config,
            handlers: args.handlers,
            registry: args.registry,
            events: args.events,
            me,
            shared: Arc::new(Shared {
                queue,
                pool: RwLock::new(pool),
                decisions: Mutex::new(VecDeque::new()),
                remote: Default::default(),
                cluster: RwLock::new(None),
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

/// A child of the coordinator, as a supervision event names it.
enum Child {
    Queue,
    /// The cluster's gate (the cluster knows its current actor).
    Gate(crate::cluster::Cluster),
    /// The local pool.
    Pool,
    /// A pool added with `Coordinator::add_pool`, by its index in `extra_pools`.
    ExtraPool(usize),
    /// Not a child this coordinator restarts.
    Unknown,
}

async fn spawn_pool(
    myself: &ActorRef<CoordinatorMsg>,
    c: &CoordinatorConfig,
    queue: &QueueRef,
    handlers: &HandlerRegistry,
    registry: &WorkerRegistry,
    events: &EventBus,
) -> Result<PoolRef, Error> {
    let config = PoolConfig {
        name: c.pool_name.clone(),
        min_workers: c.min_workers,
        max_workers: c.max_workers,
        worker: c.worker.clone(),
        restart_budget: c.restart_budget,
    };
    let args = PoolArgs {
        config,
        handlers: handlers.clone(),
        queue: crate::queue::Uplink::Queue(queue.clone()),
        registry: registry.clone(),
        events: events.clone(),
        depth: MailboxDepth::default(),
    };
    Ok(PoolRef::spawn(args, Some(myself.get_cell())).await?.0)
}

/// A pool added with `Coordinator::add_pool`, with what it is restarted from.
struct ExtraPool {
    config: PoolConfig,
    handlers: HandlerRegistry,
    pool: PoolRef,
}

/// A pool's arguments under this coordinator: its queue, worker registry and events.
fn pool_args(config: PoolConfig, handlers: &HandlerRegistry, state: &CoordinatorState) -> PoolArgs {
    PoolArgs {
        config,
        handlers: handlers.clone(),
        queue: crate::queue::Uplink::Queue(state.shared.queue.clone()),
        registry: state.registry.clone(),
        events: state.events.clone(),
        depth: MailboxDepth::default(),
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
    /// Which child `exit` is about.
    fn child(&self, exit: &ChildExit) -> Child {
        let id = exit.actor;
        if id == self.shared.queue.actor().get_id() {
            return Child::Queue;
        }
        let cluster = self
            .shared
            .cluster
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(cluster) = cluster.filter(|c| c.is_gate(id)) {
            return Child::Gate(cluster);
        }
        if let Some(i) = self
            .extra_pools
            .iter()
            .position(|p| p.pool.actor().get_id() == id)
        {
            return Child::ExtraPool(i);
        }
        if id == self.pool().actor().get_id() {
            return Child::Pool;
        }
        Child::Unknown
    }

    /// Starts `child` again after it ended for `reason`.
    async fn restart(
        &mut self,
        myself: &ActorRef<CoordinatorMsg>,
        child: Child,
        reason: &str,
    ) -> Result<(), ActorProcessingErr> {
        match child {
            Child::Gate(cluster) => {
                tracing::warn!(%reason, "cluster gate ended; starting it again");
                cluster.restart_gate(myself.get_cell()).await?;
            }
            Child::ExtraPool(i) => {
                let extra = &self.extra_pools[i];
                tracing::warn!(pool = %extra.config.name, %reason, "worker pool ended; starting it again");
                let args = pool_args(extra.config.clone(), &extra.handlers, self);
                self.extra_pools[i].pool = PoolRef::spawn(args, Some(myself.get_cell())).await?.0;
            }
            Child::Pool => {
                tracing::warn!(%reason, "worker pool ended; starting it again");
                let c = &self.config;
                let pool = spawn_pool(
                    myself,
                    c,
                    &self.shared.queue,
                    &self.handlers,
                    &self.registry,
                    &self.events,
                )
                .await?;
                *self.shared.pool.write().unwrap_or_else(|e| e.into_inner()) = pool;
            }
            Child::Queue | Child::Unknown => {}
        }
        Ok(())
    }

    fn pool(&self) -> PoolRef {
        self.shared
            .pool
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn signals(&self) -> Result<ScaleSignals, Error> {
        let queue = self.shared.queue.stats().await?;
        let pool = self.pool();
        let p = pool.stats().await?;
        let remote = *self.shared.remote.read().unwrap_or_else(|e| e.into_inner());
        Ok(ScaleSignals {
            remote_workers: remote.workers,
            remote_busy_slots: remote.busy_slots,
            remote_total_slots: remote.total_slots,
            remote_mailbox: remote.mailbox,
            backlog: queue.queued.saturating_sub(queue.unroutable),
            queue_mailbox: self.shared.queue.mailbox_depth(),
            pool_mailbox: p.mailbox_depth,
            worker_mailbox: p.worker_mailbox_depth,
            busy_slots: p.current_tasks,
            total_slots: p.total_slots,
            workers: p.worker_count - p.draining,
        })
    }

    async fn autoscale(&mut self) {
        let signals = match self.signals().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "autoscaler could not read its signals");
                return;
            }
        };
        let pool = self.pool();
        let Some(decision) = self.autoscaler.decide(pool.name(), signals, Instant::now()) else {
            return;
        };
        match pool.scale(decision.to).await {
            Ok(_) => {
                tracing::info!(
                    from = decision.from,
                    to = decision.to,
                    reason = decision.reason,
                    pressure_per_worker = decision.pressure_per_worker,
                    backlog = decision.signals.backlog,
                    worker_mailbox = decision.signals.worker_mailbox,
                    node_mailbox = decision.signals.remote_mailbox,
                    queue_mailbox = decision.signals.queue_mailbox,
                    pool_mailbox = decision.signals.pool_mailbox,
                    "autoscaled"
                );
                self.record(decision);
            }
            Err(e) => tracing::warn!(error = %e, "autoscale failed"),
        }
    }

    async fn manual_scale(&mut self, target: usize) -> Result<ScaleDecision, Error> {
        let signals = self.signals().await?;
        let pressure = ScalePressure::of(&signals);
        let pool = self.pool();
        let from = pool.scale(target).await?;
        self.autoscaler.changed(Instant::now());
        let decision = ScaleDecision {
            pool: pool.name().to_string(),
            from,
            to: target,
            reason: "manual",
            pressure_per_worker: pressure.backlog,
            pressure,
            signals,
            at: std::time::SystemTime::now(),
        };
        self.record(decision.clone());
        Ok(decision)
    }

    fn record(&self, decision: ScaleDecision) {
        let mut d = self
            .shared
            .decisions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if d.len() == DECISIONS_KEPT {
            d.pop_front();
        }
        d.push_back(decision.clone());
        self.events.publish(EventKind::Scaled(decision));
    }

    /// Replaces workers whose heartbeats stopped; their leases go back to the queue when
    /// the pool sees them die.
    async fn add_pool(
        &mut self,
        myself: &ActorRef<CoordinatorMsg>,
        config: PoolConfig,
        handlers: HandlerRegistry,
    ) -> Result<PoolRef, Error> {
        if self.stopping {
            return Err(Error::invalid("pool", "the coordinator is stopping"));
        }
        let taken = config.name == self.config.pool_name
            || self
                .extra_pools
                .iter()
                .any(|p| p.config.name == config.name);
        if taken {
            return Err(Error::invalid(
                "name",
                format!("a pool named {:?} already runs here", config.name),
            ));
        }
        let args = pool_args(config.clone(), &handlers, self);
        let pool = PoolRef::spawn(args, Some(myself.get_cell())).await?.0;
        self.shared
            .extra_handlers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(handlers.clone());
        self.extra_pools.push(ExtraPool {
            config,
            handlers,
            pool: pool.clone(),
        });
        Ok(pool)
    }

    /// The pool a worker belongs to (worker ids are `POOL/w-N`).
    fn pool_of(&self, worker: &str) -> PoolRef {
        let name = worker.split_once('/').map_or("", |(pool, _)| pool);
        self.extra_pools
            .iter()
            .find(|p| p.config.name == name)
            .map_or_else(|| self.pool(), |p| p.pool.clone())
    }

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
