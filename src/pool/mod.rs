//! Worker pools: supervisors that start, scale, drain and restart their workers.

mod actor;

pub(crate) use actor::WorkerPool;

pub(crate) use actor::{PoolArgs, PoolMsg};

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::handler::{HandlerRegistry, TaskHandler};
use crate::mailbox::{Mailbox, MailboxDepth};
use crate::queue::QueueRef;
use crate::supervision::RestartBudget;
use crate::task::{Payload, TaskSpec};
use crate::worker::UplinkRef;
use crate::worker::{RoutingStrategy, WorkerConfig, WorkerInfo, WorkerRef};

/// Settings of a worker pool (see [`PoolRef`]).
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// The pool's name; worker ids are `<name>/w-<n>`. Default `local`.
    pub name: String,
    /// Fewest workers. Default 1.
    pub min_workers: usize,
    /// Most workers. Default 10.
    pub max_workers: usize,
    /// Every worker's settings.
    pub worker: WorkerConfig,
    /// Restarts allowed before the pool fails upward.
    pub restart_budget: RestartBudget,
    /// How the queue spreads tasks over the pool's workers. Default
    /// [`RoutingStrategy::LeastLoaded`].
    pub routing: RoutingStrategy,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            name: "local".to_string(),
            min_workers: 1,
            max_workers: 10,
            worker: WorkerConfig::default(),
            restart_budget: RestartBudget::default(),
            routing: RoutingStrategy::default(),
        }
    }
}

impl PoolConfig {
    /// Checks the bounds and the worker settings.
    pub fn validate(&self) -> Result<(), Error> {
        if self.name.is_empty() || self.name.contains('/') {
            return Err(Error::invalid(
                "name",
                "must be non-empty and contain no `/`",
            ));
        }
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
        self.restart_budget.validate()?;
        self.worker.validate()
    }
}

/// A pool's counters.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PoolStats {
    /// The pool.
    pub name: String,
    /// Workers running (including draining ones).
    pub worker_count: usize,
    /// Workers draining.
    pub draining: usize,
    /// Tasks running on its workers.
    pub current_tasks: u64,
    /// Slots on workers that are not draining.
    pub total_slots: u64,
    /// Tasks completed, including by workers since stopped.
    pub total_completed: u64,
    /// Attempts failed, including by workers since stopped.
    pub total_failed: u64,
    /// Worker restarts since start.
    pub restarts: u64,
    /// `min_workers`.
    pub min_workers: usize,
    /// `max_workers`.
    pub max_workers: usize,
    /// Messages waiting in the pool actor's mailbox.
    pub mailbox_depth: u64,
    /// Messages waiting in its workers' mailboxes, summed.
    pub worker_mailbox_depth: u64,
}

/// A handle to a worker pool actor. Cloning shares it.
#[derive(Clone, Debug)]
pub struct PoolRef {
    pub(crate) mailbox: Mailbox<PoolMsg>,
    pub(crate) handlers: HandlerRegistry,
    pub(crate) queue: UplinkRef,
    pub(crate) name: Arc<str>,
}

const POOL: &str = "worker pool";

impl PoolRef {
    pub(crate) async fn spawn(
        args: PoolArgs,
        supervisor: Option<ractor::ActorCell>,
    ) -> Result<(Self, ractor::concurrency::JoinHandle<()>), Error> {
        args.config.validate()?;
        let depth = MailboxDepth::default();
        let handlers = args.handlers.clone();
        let queue = args.queue.clone();
        let name: Arc<str> = args.config.name.as_str().into();
        let args = PoolArgs {
            depth: depth.clone(),
            ..args
        };
        let spawned = match supervisor {
            Some(s) => ractor::Actor::spawn_linked(None, WorkerPool, args, s).await,
            None => ractor::Actor::spawn(None, WorkerPool, args).await,
        };
        let (actor, join) = spawned.map_err(|e| Error::Spawn {
            actor: POOL,
            reason: e.to_string(),
        })?;
        Ok((
            Self {
                mailbox: Mailbox::new(actor, depth),
                handlers,
                queue,
                name,
            },
            join,
        ))
    }

    /// Starts a standalone pool pulling from `queue`, with `min_workers` workers. It lives
    /// outside any coordinator: nothing restarts it, health-checks its workers or lists
    /// them. Under a [`Coordinator`](crate::Coordinator), use
    /// [`Coordinator::add_pool`](crate::Coordinator::add_pool) instead.
    pub async fn start(
        config: PoolConfig,
        queue: QueueRef,
        handlers: HandlerRegistry,
    ) -> Result<(Self, ractor::concurrency::JoinHandle<()>), Error> {
        Self::spawn(
            PoolArgs {
                config,
                handlers,
                queue: queue.into(),
                registry: Default::default(),
                events: Default::default(),
                depth: Default::default(),
            },
            None,
        )
        .await
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pool actor's cell.
    pub fn actor(&self) -> ractor::ActorCell {
        self.mailbox.actor().get_cell()
    }

    /// Registers a handler for every worker of the pool, now and after restarts.
    pub fn register_handler<H: TaskHandler>(&self, task_type: impl Into<Arc<str>>, handler: H) {
        self.handlers.register(task_type, handler);
        let _ = self.mailbox.send(PoolMsg::HandlersChanged);
    }

    /// Submits a task to the queue this pool pulls from and waits for its result.
    pub async fn submit(&self, spec: TaskSpec) -> Result<Payload, Error> {
        let Some(queue) = self.queue.downcast_ref::<QueueRef>() else {
            return Err(Error::invalid(
                "pool",
                "this pool runs on a node: submit through the coordinator",
            ));
        };
        let (id, outcome) = queue.submit_and_wait(spec).await?;
        outcome.into_result(id)
    }

    /// Sets the number of workers. Scaling down drains workers (idle ones first): running
    /// tasks finish, none is killed. Returns the previous count.
    pub async fn scale(&self, target: usize) -> Result<usize, Error> {
        self.mailbox
            .call(|reply| PoolMsg::Scale { target, reply }, None, POOL)
            .await?
    }

    /// The pool's counters.
    pub async fn stats(&self) -> Result<PoolStats, Error> {
        self.mailbox.call(PoolMsg::Stats, None, POOL).await
    }

    /// Every worker's state, by id.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>, Error> {
        Ok(self
            .worker_refs()
            .await?
            .iter()
            .map(WorkerRef::info)
            .collect())
    }

    /// Handles to the workers, by id.
    pub async fn worker_refs(&self) -> Result<Vec<WorkerRef>, Error> {
        self.mailbox.call(PoolMsg::Workers, None, POOL).await
    }

    /// Kills a worker and starts it again (used by health checks on a silent worker). Its
    /// leased tasks go back to the queue.
    pub fn replace(&self, worker: &str, reason: impl Into<String>) {
        self.replace_incarnation(worker, None, reason.into());
    }

    pub(crate) fn replace_incarnation(
        &self,
        worker: &str,
        incarnation: Option<u64>,
        reason: String,
    ) {
        let _ = self.mailbox.send(PoolMsg::Replace {
            worker: worker.into(),
            incarnation,
            reason,
        });
    }

    /// Stops the pool. Graceful: workers finish their running tasks first. Otherwise
    /// running attempts are cancelled and their tasks go back to the queue.
    pub async fn stop(&self, graceful: bool) -> Result<(), Error> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self
            .mailbox
            .send(PoolMsg::Stop { graceful, done: tx })
            .is_err()
        {
            return Ok(());
        }
        let _ = rx.await;
        Ok(())
    }

    /// The pool actor's mailbox depth.
    pub fn mailbox_depth(&self) -> u64 {
        self.mailbox.depth().get()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{handler_fn, Coordinator, CoordinatorConfig, TaskError};

    /// Under paused time a sleep returns only once every task is idle: whatever the pool
    /// was going to do about a message has been done.
    async fn settle() {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_replace_for_a_dead_incarnation_spares_its_replacement() {
        let config = CoordinatorConfig {
            min_workers: 1,
            max_workers: 1,
            auto_scale: false,
            ..CoordinatorConfig::default()
        };
        let c = Coordinator::builder()
            .config(config)
            .handler(
                "noop",
                handler_fn(|_ctx, _: ()| async { Ok::<_, TaskError>(()) }),
            )
            .start()
            .await
            .unwrap();
        let pool = c.pool();
        let old = pool.worker_refs().await.unwrap().remove(0);
        let old_incarnation = old.shared.incarnation;
        pool.replace_incarnation(old.id(), Some(old_incarnation), "silent".into());
        settle().await;
        let new = pool.worker_refs().await.unwrap().remove(0);
        assert_ne!(
            new.shared.incarnation, old_incarnation,
            "the worker was replaced"
        );
        assert_eq!(pool.stats().await.unwrap().restarts, 1);

        // A second request about the old incarnation arrives late: nothing happens.
        pool.replace_incarnation(new.id(), Some(old_incarnation), "silent".into());
        settle().await;
        assert_eq!(
            pool.stats().await.unwrap().restarts,
            1,
            "the replacement was killed"
        );
        assert_eq!(
            pool.worker_refs().await.unwrap()[0].shared.incarnation,
            new.shared.incarnation
        );
        // Naming the live incarnation still replaces it.
        pool.replace_incarnation(new.id(), Some(new.shared.incarnation), "silent".into());
        settle().await;
        assert_eq!(pool.stats().await.unwrap().restarts, 2);
        c.stop(false).await.unwrap();
    }
}
