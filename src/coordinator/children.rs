//! The coordinator's children: which one a supervision event is about, how each is
//! started again, and the pools added next to the local one.

use ractor::{ActorProcessingErr, ActorRef};

use super::actor::{CoordinatorMsg, CoordinatorState};
use super::CoordinatorConfig;
use crate::error::Error;
use crate::events::EventBus;
use crate::handler::HandlerRegistry;
use crate::mailbox::MailboxDepth;
use crate::pool::{PoolArgs, PoolConfig, PoolRef};
use crate::queue::QueueRef;
use crate::supervision::ChildExit;
use crate::worker::WorkerRegistry;

/// A child of the coordinator, as a supervision event names it.
pub(super) enum Child {
    /// The task queue.
    Queue,
    /// The cluster's gate (the cluster knows its current actor).
    Gate(crate::cluster::Cluster),
    /// The local pool.
    Pool,
    /// A pool added with `Coordinator::add_pool`, by its index in `extra_pools`.
    ExtraPool(usize),
    /// The node groups' actor (the groups know their current actor).
    NodeGroups(crate::launch::NodeGroups),
    /// Not a child this coordinator restarts.
    Unknown,
}

/// Starts the local pool from the coordinator's settings, as a child of `myself`.
pub(super) async fn spawn_pool(
    myself: &ActorRef<CoordinatorMsg>,
    c: &CoordinatorConfig,
    queue: &QueueRef,
    handlers: &HandlerRegistry,
    registry: &WorkerRegistry,
    events: &EventBus,
) -> Result<PoolRef, Error> {
    let args = PoolArgs {
        config: c.pool_config(),
        handlers: handlers.clone(),
        queue: queue.clone().into(),
        registry: registry.clone(),
        events: events.clone(),
        depth: MailboxDepth::default(),
    };
    Ok(PoolRef::spawn(args, Some(myself.get_cell())).await?.0)
}

/// A pool added with `Coordinator::add_pool`, with what it is restarted from.
pub(super) struct ExtraPool {
    pub(super) config: PoolConfig,
    pub(super) handlers: HandlerRegistry,
    pub(super) pool: PoolRef,
}

/// A pool's arguments under this coordinator: its queue, worker registry and events.
fn pool_args(config: PoolConfig, handlers: &HandlerRegistry, state: &CoordinatorState) -> PoolArgs {
    PoolArgs {
        config,
        handlers: handlers.clone(),
        queue: state.shared.queue.clone().into(),
        registry: state.registry.clone(),
        events: state.events.clone(),
        depth: MailboxDepth::default(),
    }
}

impl CoordinatorState {
    /// Which child `exit` is about.
    pub(super) fn child(&self, exit: &ChildExit) -> Child {
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
        let groups = self
            .shared
            .node_groups
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(groups) = groups.filter(|g| g.is_actor(id)) {
            return Child::NodeGroups(groups);
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
    pub(super) async fn restart(
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
            Child::NodeGroups(groups) => {
                tracing::warn!(%reason, "node groups' actor ended; starting it again");
                groups.restart(myself.get_cell()).await?;
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

    pub(super) fn pool(&self) -> PoolRef {
        self.shared
            .pool
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Starts another pool under this coordinator (`Coordinator::add_pool`).
    pub(super) async fn add_pool(
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
    pub(super) fn pool_of(&self, worker: &str) -> PoolRef {
        let name = worker.split_once('/').map_or("", |(pool, _)| pool);
        self.extra_pools
            .iter()
            .find(|p| p.config.name == name)
            .map_or_else(|| self.pool(), |p| p.pool.clone())
    }
}
