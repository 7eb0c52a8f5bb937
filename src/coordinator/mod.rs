//! The coordinator: one handle over the queue, the local pool, the autoscaler and the
//! health check, all under one root supervisor actor.
//!
//! `config` holds its settings, `builder` starts it, `actor` is the root supervisor (with
//! its children in `children`, its shared view in `shared` and its scaling steps in
//! `scale`), `autoscaler` is the scaling rule, `stats` what it reports, and `task_handle`
//! a task submitted without waiting.

mod actor;
mod builder;
mod children;
mod config;
mod scale;
mod shared;
mod stats;
mod task_handle;

pub(crate) use crate::scaling::ScaleDecision;
pub use builder::CoordinatorBuilder;
pub use config::CoordinatorConfig;
pub use stats::{CoordinatorStats, MailboxStats, StopReport};
pub use task_handle::TaskHandle;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use actor::CoordinatorMsg;
use shared::Shared;

use crate::error::Error;
use crate::events::EventBus;
use crate::handler::{HandlerRegistry, TaskHandler};
use crate::mailbox::Mailbox;
use crate::pool::{PoolConfig, PoolRef};
use crate::queue::QueueRef;
use crate::store::Store;
use crate::task::{Payload, TaskId, TaskOutcome, TaskSnapshot, TaskSpec, TaskStatus};
use crate::worker::{WorkerInfo, WorkerRegistry};

pub(super) const COORDINATOR: &str = "coordinator";

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
    /// The external compute nodes, when given.
    compute: Option<crate::compute::ComputeCluster>,
    /// The workflow engine.
    workflows: crate::workflow::Workflows,
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

    /// The compute cluster given to the builder, if any.
    pub fn compute(&self) -> Option<&crate::compute::ComputeCluster> {
        self.compute.as_ref()
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
        serves(
            &self.handlers,
            &self.shared,
            self.cluster.as_ref(),
            task_type,
        )
    }

    /// Workers outside the process that pull tasks through calls: the worker protocol the
    /// HTTP API serves at `/workers/lease` and beside it, open to Rust callers too.
    pub fn pull_workers(&self) -> &crate::pull::PullWorkers {
        &self.shared.pull
    }

    /// The node groups the coordinator launches and stops nodes for, if it has any.
    pub fn node_groups(&self) -> Option<crate::launch::NodeGroups> {
        self.shared
            .node_groups
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The workflow engine: register workflows, start and steer runs.
    pub fn workflows(&self) -> &crate::workflow::Workflows {
        &self.workflows
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
        types.extend(self.shared.pull.task_types());
        if let Some(g) = self.node_groups() {
            types.extend(g.task_types());
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
        // First, so that no run starts a step on a closing queue: runs wait in the journal
        // and resume at the next start, finding the steps that ran during the drain done.
        self.workflows.stop().await;
        let actor = self.mailbox.actor().get_cell();
        let report = self
            .mailbox
            .call(
                |reply| CoordinatorMsg::Stop { graceful, reply },
                None,
                COORDINATOR,
            )
            .await;
        // After the drain, before the cluster: launched nodes leave through it.
        if let Some(groups) = self.node_groups() {
            groups.stop().await;
        }
        // After the drain: remote workers report through the cluster until then.
        if let Some(cluster) = &self.cluster {
            cluster.stop().await;
        }
        // After the drain too: the handlers that ran until then used it.
        if let Some(compute) = &self.compute {
            compute.stop().await;
        }
        let report = report?;
        actor.wait(Some(Duration::from_secs(10))).await.ok();
        Ok(report)
    }
}

/// True when a local handler (of any pool here) or an online node serves `task_type`.
fn serves(
    handlers: &HandlerRegistry,
    shared: &Shared,
    cluster: Option<&crate::cluster::Cluster>,
    task_type: &str,
) -> bool {
    handlers.contains(task_type)
        || served_nearby(shared, task_type)
        || cluster.is_some_and(|c| c.remote_types().iter().any(|t| &**t == task_type))
        || shared
            .node_groups
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|g| g.task_types().iter().any(|t| &**t == task_type))
}

/// True when a pool added with `add_pool` or a pulling worker serves `task_type`.
fn served_nearby(shared: &Shared, task_type: &str) -> bool {
    shared
        .extra_handlers
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|h| h.contains(task_type))
        || shared.pull.serves(task_type)
}
