//! The coordinator: one handle over the queue, the local pool, the autoscaler and the
//! health check, all under one root supervisor actor.

mod actor;
mod autoscaler;

pub(crate) use crate::scaling::ScaleDecision;
pub(crate) use actor::CoordinatorActor;

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;

use actor::{CoordinatorArgs, CoordinatorMsg, Shared};

use crate::error::Error;
use crate::events::EventBus;
use crate::handler::{HandlerRegistry, TaskHandler};
use crate::mailbox::{Mailbox, MailboxDepth};
use crate::pool::{PoolConfig, PoolRef, PoolStats};
use crate::queue::{QueueConfig, QueueRef, QueueStats};
use crate::store::{Store, StoreConfig};
use crate::supervision::RestartBudget;
use crate::task::{Payload, TaskId, TaskOutcome, TaskSnapshot, TaskSpec, TaskStatus};
use crate::worker::{WorkerConfig, WorkerInfo, WorkerRegistry};

/// Settings of a [`Coordinator`].
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// Fewest local workers. Default 2.
    pub min_workers: usize,
    /// Most local workers. Default 10.
    pub max_workers: usize,
    /// Scale up when waiting tasks per worker exceed this. Default 10.
    pub scale_up_threshold: f64,
    /// Scale down (one worker at a time) when waiting tasks per worker fall below this and
    /// a worker's worth of slots is idle. Default 2.
    pub scale_down_threshold: f64,
    /// How often silent workers are looked for. Default 10 s.
    pub health_check_interval: Duration,
    /// A worker silent this long is killed and replaced. Default 30 s.
    pub worker_timeout: Duration,
    /// Whether the autoscaler runs. Default true.
    pub auto_scale: bool,
    /// Least time between two scaling changes. Default 30 s.
    pub scale_cooldown: Duration,
    /// How often the autoscaler looks. Default 1 s.
    pub autoscale_interval: Duration,
    /// How long a graceful stop waits for queued and running tasks. Default 30 s.
    pub shutdown_timeout: Duration,
    /// The local pool's name. Default `local`.
    pub pool_name: String,
    /// Every local worker's settings.
    pub worker: WorkerConfig,
    /// The queue's settings.
    pub queue: QueueConfig,
    /// Restarts allowed to the pool (for its workers) and to the coordinator (for its pool).
    pub restart_budget: RestartBudget,
    /// Where tasks are stored; `None` keeps them in memory only. Default `None`; the
    /// coordinator example stores in `sqlite://wrangle.db` unless told otherwise.
    pub store: Option<StoreConfig>,
    /// Where nodes join over the network; `None` (default) runs without a cluster.
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            min_workers: 2,
            max_workers: 10,
            scale_up_threshold: 10.0,
            scale_down_threshold: 2.0,
            health_check_interval: Duration::from_secs(10),
            worker_timeout: Duration::from_secs(30),
            auto_scale: true,
            scale_cooldown: Duration::from_secs(30),
            autoscale_interval: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(30),
            pool_name: "local".into(),
            worker: WorkerConfig::default(),
            queue: QueueConfig::default(),
            restart_budget: RestartBudget::default(),
            store: None,
            cluster: None,
        }
    }
}

impl CoordinatorConfig {
    /// Checks every setting; the error names the first bad one.
    pub fn validate(&self) -> Result<(), Error> {
        if self.max_workers == 0 {
            return Err(Error::invalid("max_workers", "must be at least 1"));
        }
        if self.min_workers > self.max_workers {
            return Err(Error::invalid(
                "min_workers",
                format!(
                    "{} exceeds max_workers {}",
                    self.min_workers, self.max_workers
                ),
            ));
        }
        let finite_non_negative = |v: f64| v.is_finite() && v >= 0.0;
        if !finite_non_negative(self.scale_up_threshold) {
            return Err(Error::invalid(
                "scale_up_threshold",
                "must be a number >= 0",
            ));
        }
        if !finite_non_negative(self.scale_down_threshold) {
            return Err(Error::invalid(
                "scale_down_threshold",
                "must be a number >= 0",
            ));
        }
        if self.scale_down_threshold > self.scale_up_threshold {
            return Err(Error::invalid(
                "scale_down_threshold",
                "must not exceed scale_up_threshold",
            ));
        }
        for (field, d) in [
            ("health_check_interval", self.health_check_interval),
            ("worker_timeout", self.worker_timeout),
            ("autoscale_interval", self.autoscale_interval),
        ] {
            if d.is_zero() {
                return Err(Error::invalid(field, "must be greater than zero"));
            }
        }
        if self.worker_timeout <= self.worker.heartbeat_interval {
            return Err(Error::invalid(
                "worker_timeout",
                "must be longer than worker.heartbeat_interval",
            ));
        }
        self.worker.validate()?;
        self.queue.validate()?;
        if let Some(store) = &self.store {
            store.validate()?;
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        self.restart_budget.validate()
    }
}

/// Mailbox depths of the coordinator's actors.
#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct MailboxStats {
    /// The coordinator actor.
    pub coordinator: u64,
    /// The queue actor.
    pub queue: u64,
    /// The pool actor.
    pub pool: u64,
    /// All local workers, summed.
    pub workers: u64,
}

/// What `get_stats` returns.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct CoordinatorStats {
    /// True while the coordinator runs.
    pub running: bool,
    /// Seconds since start.
    pub uptime_secs: f64,
    /// The queue's counters.
    pub queue: QueueStats,
    /// The local pool's counters.
    pub workers: PoolStats,
    /// Mailbox depths.
    pub mailboxes: MailboxStats,
    /// Times the coordinator restarted a failed pool (the local one or an added one).
    pub pool_restarts: u64,
    /// Times the coordinator restarted the cluster's gate (counted apart from the pools).
    pub gate_restarts: u64,
    /// The last scaling change.
    pub last_scale: Option<ScaleDecision>,
    /// The store, when tasks are stored.
    pub store: Option<crate::store::StoreStats>,
    /// The cluster, when nodes can join.
    pub cluster: Option<crate::cluster::ClusterStats>,
}

/// What a stop left behind.
#[derive(Clone, Debug, Serialize)]
pub struct StopReport {
    /// Whether running tasks were allowed to finish.
    pub graceful: bool,
    /// Tasks still waiting or running when the runtime stopped (0 after a graceful stop
    /// that finished within `shutdown_timeout`).
    pub unfinished: usize,
    /// Tasks completed over the coordinator's life.
    pub completed: u64,
}

/// A submitted task, to wait on later.
#[derive(Clone, Debug)]
pub struct TaskHandle {
    /// The task's id.
    pub id: TaskId,
    /// True when an idempotency key matched an existing task.
    pub existing: bool,
    queue: QueueRef,
}

impl TaskHandle {
    /// Waits for the task's outcome, up to `timeout`.
    pub async fn wait(&self, timeout: Duration) -> Result<TaskOutcome, Error> {
        self.queue.wait_for(self.id, timeout).await
    }

    /// Waits for the task and decodes its result.
    pub async fn result<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T, Error> {
        let payload = self.wait(timeout).await?.into_result(self.id)?;
        payload.decode().map_err(|reason| Error::Decode {
            id: self.id,
            reason,
        })
    }
}

/// Builds and starts a [`Coordinator`].
#[derive(Debug, Default)]
pub struct CoordinatorBuilder {
    config: CoordinatorConfig,
    handlers: HandlerRegistry,
    events: Option<EventBus>,
    registry: Option<WorkerRegistry>,
    store: Option<Store>,
}

impl CoordinatorBuilder {
    /// Uses these settings.
    pub fn config(mut self, config: CoordinatorConfig) -> Self {
        self.config = config;
        self
    }

    /// Registers a handler for `task_type`.
    pub fn handler<H: TaskHandler>(self, task_type: impl Into<Arc<str>>, handler: H) -> Self {
        self.handlers.register(task_type, handler);
        self
    }

    /// Uses an existing handler registry.
    pub fn handlers(mut self, handlers: HandlerRegistry) -> Self {
        self.handlers = handlers;
        self
    }

    /// Publishes events on this bus (to subscribe before the coordinator starts).
    pub fn events(mut self, events: EventBus) -> Self {
        self.events = Some(events);
        self
    }

    /// Journals tasks to this (already open) store, instead of opening `config.store`.
    pub fn store(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
    }

    /// Starts the coordinator, its queue and its pool of `min_workers` workers. With a
    /// store, the queue first reloads every unfinished task stored there; an unreachable
    /// database fails here, naming its URL without the password.
    pub async fn start(self) -> Result<Coordinator, Error> {
        self.config.validate()?;
        let store = match (self.store, &self.config.store) {
            (Some(store), _) => Some(store),
            (None, Some(config)) => Some(Store::open(config.clone()).await?),
            (None, None) => None,
        };
        let events = self.events.unwrap_or_default();
        let registry = self.registry.unwrap_or_default();
        let depth = MailboxDepth::default();
        let cluster = self.config.cluster.clone();
        let args = CoordinatorArgs {
            config: self.config,
            handlers: self.handlers.clone(),
            registry: registry.clone(),
            events: events.clone(),
            depth: depth.clone(),
            store,
        };
        let (actor, _join) = ractor::Actor::spawn(None, CoordinatorActor, args)
            .await
            .map_err(|e| Error::spawn("coordinator", e))?;
        let mailbox = Mailbox::new(actor, depth);
        let shared = mailbox
            .call(CoordinatorMsg::Shared, None, COORDINATOR)
            .await?;
        // The pool starts its first workers in its `post_start`, which ends before it
        // answers anything: once it answers, they run and are registered, so a caller
        // sees them (`get_workers`, `/workers`) as soon as `start` returns.
        let pool = shared
            .pool
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        pool.stats().await?;
        let cluster = match &cluster {
            Some(config) => {
                match crate::cluster::Cluster::start(
                    config,
                    shared.queue.clone(),
                    events.clone(),
                    shared.remote.clone(),
                    mailbox.actor().get_cell(),
                )
                .await
                {
                    Ok(c) => {
                        *shared.cluster.write().unwrap_or_else(|e| e.into_inner()) =
                            Some(c.clone());
                        Some(c)
                    }
                    Err(e) => {
                        // Without its listener the coordinator is not what was asked for.
                        let _ = mailbox.actor().stop_and_wait(None, None).await;
                        return Err(e);
                    }
                }
            }
            None => None,
        };
        Ok(Coordinator {
            cluster,
            mailbox,
            shared,
            handlers: self.handlers,
            registry,
            events,
            started: Instant::now(),
        })
    }
}

const COORDINATOR: &str = "coordinator";

/// The runtime in one handle: submit tasks, wait for results, scale, inspect, stop.
///
/// ```
/// use wrangle::{handler_fn, Coordinator, TaskError};
///
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() -> Result<(), wrangle::Error> {
/// let coordinator = Coordinator::builder()
///     .handler("double", handler_fn(|_ctx, x: i64| async move { Ok::<_, TaskError>(x * 2) }))
///     .start()
///     .await?;
/// let doubled: i64 = coordinator.submit("double", &21).await?.decode().unwrap();
/// assert_eq!(doubled, 42);
/// coordinator.stop(true).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Coordinator {
    /// The listener for nodes, when the cluster is on.
    cluster: Option<crate::cluster::Cluster>,
    mailbox: Mailbox<CoordinatorMsg>,
    shared: Arc<Shared>,
    handlers: HandlerRegistry,
    registry: WorkerRegistry,
    events: EventBus,
    started: Instant,
}

impl Coordinator {
    /// A builder with default settings and no handlers.
    pub fn builder() -> CoordinatorBuilder {
        CoordinatorBuilder::default()
    }

    /// Starts a coordinator with `config` and `handlers`.
    pub async fn start(
        config: CoordinatorConfig,
        handlers: HandlerRegistry,
    ) -> Result<Self, Error> {
        Self::builder()
            .config(config)
            .handlers(handlers)
            .start()
            .await
    }

    /// Registers (or replaces) a handler; running workers pick it up at once.
    pub fn register_handler<H: TaskHandler>(&self, task_type: impl Into<Arc<str>>, handler: H) {
        self.pool().register_handler(task_type, handler);
    }

    /// Submits a task and waits for its result.
    pub async fn submit<T: Serialize + ?Sized>(
        &self,
        task_type: &str,
        input: &T,
    ) -> Result<Payload, Error> {
        self.submit_spec(TaskSpec::new(task_type, input)?).await
    }

    /// Submits a task with options and waits for its result.
    pub async fn submit_spec(&self, spec: TaskSpec) -> Result<Payload, Error> {
        let (id, outcome) = self.queue().submit_and_wait(spec).await?;
        outcome.into_result(id)
    }

    /// Submits a task and returns at once with a handle to wait on.
    pub async fn submit_async(&self, spec: TaskSpec) -> Result<TaskHandle, Error> {
        let s = self.queue().submit(spec).await?;
        Ok(TaskHandle {
            id: s.id,
            existing: s.existing,
            queue: self.queue().clone(),
        })
    }

    /// Submits many tasks in one message: all are accepted, or none.
    pub async fn submit_batch(&self, specs: Vec<TaskSpec>) -> Result<Vec<TaskId>, Error> {
        Ok(self
            .queue()
            .submit_batch(specs)
            .await?
            .into_iter()
            .map(|s| s.id)
            .collect())
    }

    /// Waits for a task to finish, up to `timeout`.
    pub async fn wait_for(&self, id: TaskId, timeout: Duration) -> Result<TaskOutcome, Error> {
        self.queue().wait_for(id, timeout).await
    }

    /// Everything known about a task.
    pub async fn get_task(&self, id: TaskId) -> Result<TaskSnapshot, Error> {
        self.queue().get_task(id).await
    }

    /// Tasks with `status` (all when `None`), oldest first.
    pub async fn list_tasks(
        &self,
        status: Option<TaskStatus>,
        limit: usize,
    ) -> Result<Vec<TaskSnapshot>, Error> {
        self.queue().list(status, None, limit).await
    }

    /// Cancels a task; a running one is told to stop. Returns the status it had.
    pub async fn cancel_task(&self, id: TaskId) -> Result<TaskStatus, Error> {
        self.queue().cancel(id).await
    }

    /// The dead letters, oldest first.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<TaskSnapshot>, Error> {
        self.queue().dead_letters(limit).await
    }

    /// Puts a dead-lettered task back in the queue.
    pub async fn requeue(&self, id: TaskId) -> Result<(), Error> {
        self.queue().requeue(id).await
    }

    /// Sets the local pool's size (within its bounds). The change is an event, and starts
    /// the autoscaler's cool-down.
    pub async fn scale(&self, workers: usize) -> Result<ScaleDecision, Error> {
        self.mailbox
            .call(
                |reply| CoordinatorMsg::Scale {
                    target: workers,
                    reply,
                },
                None,
                COORDINATOR,
            )
            .await?
    }

    /// Starts another pool of workers under this coordinator, pulling from its queue: it
    /// is supervised (restarted within the restart budget), its workers are health-checked
    /// and listed with the others (`get_workers`, `/workers`), and it stops with the
    /// coordinator. The autoscaler sizes only the local pool; size this one with
    /// [`PoolRef::scale`]. Pool names are unique (worker ids are `POOL/w-N`).
    ///
    /// ```
    /// # use wrangle::prelude::*;
    /// # use wrangle::{HandlerRegistry, PoolConfig};
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> Result<(), wrangle::Error> {
    /// let coordinator = Coordinator::builder().start().await?;
    /// let gpu = HandlerRegistry::new();
    /// gpu.register("infer", handler_fn(|_ctx, x: u32| async move { Ok::<_, TaskError>(x * 2) }));
    /// let pool = coordinator
    ///     .add_pool(PoolConfig { name: "gpu".into(), ..PoolConfig::default() }, gpu)
    ///     .await?;
    /// let doubled: u32 = coordinator.submit("infer", &21).await?.decode().expect("a number");
    /// assert_eq!(doubled, 42);
    /// # let _ = pool;
    /// # coordinator.stop(true).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn add_pool(
        &self,
        config: PoolConfig,
        handlers: HandlerRegistry,
    ) -> Result<PoolRef, Error> {
        config.validate()?;
        self.mailbox
            .call(
                |reply| CoordinatorMsg::AddPool {
                    config,
                    handlers,
                    reply,
                },
                None,
                COORDINATOR,
            )
            .await?
    }

    /// Every registered worker, by id.
    pub async fn get_workers(&self) -> Result<Vec<WorkerInfo>, Error> {
        Ok(self.registry.get_workers(None, &[]))
    }

    /// Running state, queue and pool counters, mailbox depths, the last scaling change.
    pub async fn get_stats(&self) -> Result<CoordinatorStats, Error> {
        let queue = self.queue().stats().await?;
        let workers = self.pool().stats().await?;
        let last_scale = self
            .shared
            .decisions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .back()
            .cloned();
        Ok(CoordinatorStats {
            running: self.is_running(),
            uptime_secs: self.started.elapsed().as_secs_f64(),
            mailboxes: MailboxStats {
                coordinator: self.mailbox.depth().get(),
                queue: self.queue().mailbox_depth(),
                pool: workers.mailbox_depth,
                workers: workers.worker_mailbox_depth,
            },
            queue,
            workers,
            pool_restarts: self.shared.restarts.pools(),
            gate_restarts: self.shared.restarts.gate(),
            last_scale,
            store: self.store().map(Store::stats),
            cluster: self.cluster.as_ref().map(|c| c.stats()),
        })
    }

    /// The most recent scaling changes, oldest first (up to 100).
    pub fn scale_history(&self) -> Vec<ScaleDecision> {
        self.shared
            .decisions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// The lifecycle event stream.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// The worker registry.
    pub fn registry(&self) -> &WorkerRegistry {
        &self.registry
    }

    /// The handlers.
    pub fn handlers(&self) -> &HandlerRegistry {
        &self.handlers
    }

    /// The queue.
    pub fn queue(&self) -> &QueueRef {
        &self.shared.queue
    }

    /// The store tasks are journaled to, if any.
    pub fn store(&self) -> Option<&Store> {
        self.shared.queue.store()
    }

    /// The local pool (a new one after the coordinator restarted a failed pool).
    pub fn pool(&self) -> PoolRef {
        self.shared
            .pool
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The coordinator actor's cell.
    pub fn actor(&self) -> ractor::ActorCell {
        self.mailbox.actor().get_cell()
    }

    /// True while the coordinator actor runs.
    pub fn is_running(&self) -> bool {
        matches!(
            self.mailbox.actor().get_status(),
            ractor::ActorStatus::Running | ractor::ActorStatus::Upgrading
        )
    }

    /// True when a local handler (of any pool here) or an online node serves `task_type`.
    pub fn serves(&self, task_type: &str) -> bool {
        self.handlers.contains(task_type)
            || self.extra_handlers().iter().any(|h| h.contains(task_type))
            || self
                .cluster
                .as_ref()
                .is_some_and(|c| c.remote_types().iter().any(|t| &**t == task_type))
    }

    fn extra_handlers(&self) -> Vec<HandlerRegistry> {
        self.shared
            .extra_handlers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Task types served here or by online nodes, sorted.
    pub fn task_types(&self) -> Vec<Arc<str>> {
        let mut types = self.handlers.task_types();
        for h in self.extra_handlers() {
            types.extend(h.task_types());
        }
        if let Some(c) = &self.cluster {
            types.extend(c.remote_types());
        }
        types.sort();
        types.dedup();
        types
    }

    /// The nodes that joined over the network (empty without a cluster).
    pub async fn nodes(&self) -> Result<Vec<crate::cluster::RemoteNode>, Error> {
        match &self.cluster {
            Some(c) => c.nodes().await,
            None => Ok(Vec::new()),
        }
    }

    /// Stops everything. Graceful: new submits are refused, queued and running tasks finish
    /// (up to `shutdown_timeout`), then workers, pool and queue stop. Otherwise running
    /// attempts are cancelled at once.
    pub async fn stop(&self, graceful: bool) -> Result<StopReport, Error> {
        let actor = self.mailbox.actor().get_cell();
        let report = self
            .mailbox
            .call(
                |reply| CoordinatorMsg::Stop { graceful, reply },
                None,
                COORDINATOR,
            )
            .await;
        // After the drain: remote workers report through the cluster until then.
        if let Some(cluster) = &self.cluster {
            cluster.stop().await;
        }
        let report = report?;
        actor.wait(Some(Duration::from_secs(10))).await.ok();
        Ok(report)
    }
}
