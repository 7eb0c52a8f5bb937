//! Building and starting a [`Coordinator`]: its settings, handlers, event bus and store.

use std::sync::Arc;

use tokio::time::Instant;

use super::actor::{CoordinatorActor, CoordinatorArgs, CoordinatorMsg};
use super::{Coordinator, CoordinatorConfig, COORDINATOR};
use crate::compute::ComputeCluster;
use crate::error::Error;
use crate::events::EventBus;
use crate::handler::{HandlerRegistry, TaskHandler};
use crate::mailbox::{Mailbox, MailboxDepth};
use crate::store::Store;
use crate::worker::WorkerRegistry;

/// Builds and starts a [`Coordinator`].
#[derive(Debug, Default)]
pub struct CoordinatorBuilder {
    config: CoordinatorConfig,
    handlers: HandlerRegistry,
    events: Option<EventBus>,
    registry: Option<WorkerRegistry>,
    store: Option<Store>,
    compute: Option<ComputeCluster>,
    workflows: Vec<crate::workflow::Workflow>,
    node_groups: Vec<(
        crate::launch::NodeGroupConfig,
        Arc<dyn crate::launch::Launcher>,
    )>,
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

    /// Serves this compute cluster's nodes in the API (`/compute/nodes`), metrics and
    /// dashboard, and stops it with the coordinator. Handlers reach it by holding a clone
    /// (see `wrangle_actors::register_compute`).
    pub fn compute(mut self, cluster: ComputeCluster) -> Self {
        self.compute = Some(cluster);
        self
    }

    /// Registers a workflow before the engine starts, so that runs of it left unfinished
    /// by an earlier process resume (a workflow with input functions can only be recovered
    /// this way). Its task types are not checked: nodes serving them may join later.
    pub fn workflow(mut self, workflow: crate::workflow::Workflow) -> Self {
        self.workflows.push(workflow);
        self
    }

    /// Adds a node group: nodes `launcher` starts when tasks that only they can serve wait,
    /// and stops once they are idle (see [`crate::launch`]). Needs the cluster listener
    /// (`config.cluster`), which launched nodes join with its cookie.
    pub fn node_group(
        mut self,
        config: crate::launch::NodeGroupConfig,
        launcher: Arc<dyn crate::launch::Launcher>,
    ) -> Self {
        self.node_groups.push((config, launcher));
        self
    }

    /// Starts the coordinator, its queue and its pool of `min_workers` workers. With a
    /// store, the queue first reloads every unfinished task stored there; an unreachable
    /// database fails here, naming its URL without the password.
    pub async fn start(self) -> Result<Coordinator, Error> {
        self.config.validate()?;
        if !self.node_groups.is_empty() && self.config.cluster.is_none() {
            return Err(Error::invalid(
                "node_groups",
                "node groups need the cluster listener (cluster.listen) for their nodes to join",
            ));
        }
        for (group, _) in &self.node_groups {
            group.validate()?;
        }
        let local_labels = self.config.worker.labels.clone();
        let interval = self.config.autoscale_interval;
        let store = match (self.store, &self.config.store) {
            (Some(store), _) => Some(store),
            (None, Some(config)) => Some(Store::open(config.clone()).await?),
            (None, None) => None,
        };
        let events = self.events.unwrap_or_default();
        let registry = self.registry.unwrap_or_default();
        let depth = MailboxDepth::default();
        let cluster = self.config.cluster.clone();
        let workflow_config = self.config.workflows.clone();
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
        let serves: crate::workflow::Serves = {
            let (handlers, shared, cluster) =
                (self.handlers.clone(), shared.clone(), cluster.clone());
            Arc::new(move |t: &str| super::serves(&handlers, &shared, cluster.as_ref(), t))
        };
        let workflows = match crate::workflow::Workflows::spawn(
            shared.queue.clone(),
            shared.queue.store().cloned(),
            serves,
            workflow_config,
            self.workflows,
            events.clone(),
            Some(mailbox.actor().get_cell()),
        )
        .await
        {
            Ok(w) => w,
            Err(e) => {
                if let Some(c) = &cluster {
                    c.stop().await;
                }
                let _ = mailbox.actor().stop_and_wait(None, None).await;
                return Err(e);
            }
        };
        if let Some(c) = cluster.as_ref().filter(|_| !self.node_groups.is_empty()) {
            let elsewhere: crate::launch::ServedElsewhere = {
                let (handlers, shared) = (self.handlers.clone(), shared.clone());
                Arc::new(move |t: &str, required: &[String]| {
                    (handlers.contains(t) && crate::worker::labels_meet(&local_labels, required))
                        || super::served_nearby(&shared, t)
                })
            };
            let started = crate::launch::NodeGroups::start(crate::launch::Start {
                groups: self.node_groups,
                cluster: c.clone(),
                queue: shared.queue.clone(),
                store: shared.queue.store().cloned(),
                events: events.clone(),
                elsewhere,
                interval,
                supervisor: mailbox.actor().get_cell(),
            })
            .await;
            match started {
                Ok(groups) => {
                    *shared
                        .node_groups
                        .write()
                        .unwrap_or_else(|e| e.into_inner()) = Some(groups);
                }
                Err(e) => {
                    workflows.stop().await;
                    c.stop().await;
                    let _ = mailbox.actor().stop_and_wait(None, None).await;
                    return Err(e);
                }
            }
        }
        if let Some(compute) = &self.compute {
            watch_compute(compute.clone(), shared.queue.clone());
        }
        Ok(Coordinator {
            cluster,
            compute: self.compute,
            workflows,
            mailbox,
            shared,
            handlers: self.handlers,
            registry,
            events,
            started: Instant::now(),
        })
    }
}

/// Every second, tells the queue whether every compute node's circuit breaker is open
/// (graceful degradation: new low-priority work is then shed); ends with the queue.
fn watch_compute(compute: ComputeCluster, queue: crate::queue::QueueRef) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            if !queue.set_degraded(compute.all_open()) {
                return;
            }
        }
    });
}
