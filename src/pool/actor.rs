use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::oneshot;

use super::{PoolConfig, PoolStats};
use crate::error::Error;
use crate::events::{EventBus, EventKind};
use crate::handler::HandlerRegistry;
use crate::mailbox::{Mailbox, MailboxDepth};
use crate::supervision::{ChildExit, OnExit, Supervisor, Verdict};
use crate::worker::{
    UplinkRef, Worker, WorkerArgs, WorkerMsg, WorkerRef, WorkerRegistry, WorkerShared,
};

/// The worker pool actor: the supervisor of its workers. Use it through
/// [`PoolRef`](super::PoolRef).
#[derive(Debug)]
pub(crate) struct WorkerPool;

/// A pool's messages. Built only by [`PoolRef`](super::PoolRef).
pub(crate) enum PoolMsg {
    /// Set the worker count.
    Scale {
        target: usize,
        reply: RpcReplyPort<Result<usize, Error>>,
    },
    /// The counters.
    Stats(RpcReplyPort<PoolStats>),
    /// Handles to the workers.
    Workers(RpcReplyPort<Vec<WorkerRef>>),
    /// Kill a worker and start it again.
    /// Kill a worker and start it again; only the named incarnation, when one is given,
    /// so a late request never kills the replacement.
    Replace {
        worker: String,
        incarnation: Option<u64>,
        reason: String,
    },
    /// The shared handlers changed; pass the new set to every worker.
    HandlersChanged,
    /// Stop every worker, then the pool.
    Stop {
        graceful: bool,
        done: oneshot::Sender<()>,
    },
}

impl ractor::Message for PoolMsg {}

pub(crate) struct PoolArgs {
    pub(crate) config: PoolConfig,
    pub(crate) handlers: HandlerRegistry,
    pub(crate) queue: UplinkRef,
    pub(crate) registry: WorkerRegistry,
    pub(crate) events: EventBus,
    pub(crate) depth: MailboxDepth,
}

struct Member {
    worker: WorkerRef,
    /// Set when the pool stops this worker on purpose; its end is then not a failure.
    retiring: bool,
    /// Why the pool killed it, when it did (a silent worker being replaced).
    replacing: Option<String>,
}

/// The pool actor's state.
pub(crate) struct PoolState {
    /// Bounds, worker settings and restart budget.
    config: PoolConfig,
    /// The pool's name, shared with its workers.
    name: Arc<str>,
    /// Handlers shared by all workers.
    handlers: HandlerRegistry,
    /// The queue the workers pull from.
    queue: UplinkRef,
    /// Where workers heartbeat.
    registry: WorkerRegistry,
    /// Lifecycle events.
    events: EventBus,
    /// The pool's own mailbox gauge.
    depth: MailboxDepth,
    /// Workers by id.
    members: BTreeMap<Arc<str>, Member>,
    /// Worker ids by actor id, to read supervision events.
    by_actor: HashMap<ActorId, Arc<str>>,
    /// The next worker number.
    next_index: u64,
    /// Its workers' restarts against the budget.
    supervisor: Supervisor,
    /// Completed and failed counts of workers that have stopped for good.
    retired: (u64, u64),
    /// Set while stopping: fires when the last worker is gone.
    stopping: Option<oneshot::Sender<()>>,
}

impl Actor for WorkerPool {
    type Msg = PoolMsg;
    type State = PoolState;
    type Arguments = PoolArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<PoolMsg>,
        args: PoolArgs,
    ) -> Result<PoolState, ActorProcessingErr> {
        Ok(PoolState {
            name: args.config.name.as_str().into(),
            supervisor: Supervisor::new("worker", args.config.restart_budget),
            config: args.config,
            handlers: args.handlers,
            queue: args.queue,
            registry: args.registry,
            events: args.events,
            depth: args.depth,
            members: BTreeMap::new(),
            by_actor: HashMap::new(),
            next_index: 1,
            retired: (0, 0),
            stopping: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<PoolMsg>,
        state: &mut PoolState,
    ) -> Result<(), ActorProcessingErr> {
        for _ in 0..state.config.min_workers {
            state.add_worker(&myself).await?;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<PoolMsg>,
        msg: PoolMsg,
        state: &mut PoolState,
    ) -> Result<(), ActorProcessingErr> {
        state.depth.received();
        match msg {
            PoolMsg::Scale { target, reply } => {
                let result = state.scale(&myself, target).await;
                let _ = reply.send(result);
            }
            PoolMsg::Stats(reply) => {
                let _ = reply.send(state.stats());
            }
            PoolMsg::Workers(reply) => {
                let _ = reply.send(state.members.values().map(|m| m.worker.clone()).collect());
            }
            PoolMsg::Replace {
                worker,
                incarnation,
                reason,
            } => {
                let member = state
                    .members
                    .get_mut(worker.as_str())
                    .filter(|m| incarnation.is_none_or(|i| i == m.worker.shared.incarnation));
                if let Some(m) = member {
                    tracing::warn!(worker = %worker, %reason, "killing worker to replace it");
                    m.replacing = Some(reason);
                    m.worker.actor().kill();
                }
            }
            PoolMsg::HandlersChanged => {
                let map = state.handlers.snapshot();
                for m in state.members.values() {
                    let _ = m.worker.mailbox.send(WorkerMsg::Handlers(map.clone()));
                }
            }
            PoolMsg::Stop { graceful, done } => {
                state.stopping = Some(done);
                for m in state.members.values_mut() {
                    m.retiring = true;
                    if graceful {
                        let _ = m.worker.mailbox.send(WorkerMsg::Drain);
                    } else {
                        m.worker.stop(false);
                    }
                }
                state.finish_stop_if_done(&myself);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<PoolMsg>,
        event: SupervisionEvent,
        state: &mut PoolState,
    ) -> Result<(), ActorProcessingErr> {
        let Some(exit) = ChildExit::of(event) else {
            return Ok(());
        };
        let Some(id) = state.by_actor.remove(&exit.actor) else {
            return Ok(());
        };
        let member = state.members.remove(&id).expect("member of a known actor");
        let shared = member.worker.shared.clone();
        // Whatever it held goes back to the queue now, whatever happens next.
        state.registry.unregister(&id);
        state.queue_detach(&member);
        let requested = exit.stopped_with(&[crate::worker::DRAINED, crate::worker::STOPPED]);
        let on_exit = if member.retiring || (requested && member.replacing.is_none()) {
            OnExit::Expected
        } else {
            OnExit::Restart
        };
        // A worker killed to be replaced ended for the reason it was killed.
        let reason = member.replacing.unwrap_or(exit.reason);
        let exit = ChildExit {
            reason: format!("worker {id} {reason}"),
            ..exit
        };
        match state.supervisor.judge(&exit, on_exit) {
            Verdict::Stopped => {
                state.retired.0 += shared.completed();
                state.retired.1 += shared.failed();
                state.events.publish(EventKind::WorkerStopped {
                    worker: id.clone(),
                    pool: state.name.clone(),
                });
                tracing::info!(worker = %id, "worker stopped");
                state.finish_stop_if_done(&myself);
            }
            Verdict::Restart => {
                let next = Arc::new(shared.restarted());
                tracing::warn!(worker = %id, %reason, restarts = next.restarts(), "restarting worker");
                state.spawn_worker(&myself, next.clone()).await?;
                state.events.publish(EventKind::WorkerRestarted {
                    worker: id,
                    pool: state.name.clone(),
                    reason,
                    restarts: next.restarts(),
                });
            }
            Verdict::GiveUp(why) => {
                tracing::error!(pool = %state.name, %why, "pool failing");
                state.events.publish(EventKind::PoolFailed {
                    pool: state.name.clone(),
                    reason: why.clone(),
                });
                // Failing kills the other workers without their `post_stop`, and this pool
                // sees no event for them: hand their leases back and forget them now, or
                // their tasks stay leased to dead workers and the health check chases them
                // forever.
                state.release_all();
                return Err(why.into());
            }
        }
        Ok(())
    }
}

impl PoolState {
    async fn add_worker(&mut self, myself: &ActorRef<PoolMsg>) -> Result<(), ActorProcessingErr> {
        let id: Arc<str> = format!("{}/w-{}", self.name, self.next_index).into();
        self.next_index += 1;
        let shared = Arc::new(
            WorkerShared::new(id, self.name.clone(), self.config.worker.clone())
                .with_routing(self.config.routing),
        );
        self.spawn_worker(myself, shared).await
    }

    async fn spawn_worker(
        &mut self,
        myself: &ActorRef<PoolMsg>,
        shared: Arc<WorkerShared>,
    ) -> Result<(), ActorProcessingErr> {
        let args = WorkerArgs {
            shared: shared.clone(),
            handlers: self.handlers.snapshot(),
            queue: self.queue.clone(),
            registry: self.registry.clone(),
            events: self.events.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, Worker, args, myself.get_cell()).await?;
        self.by_actor.insert(actor.get_id(), shared.id.clone());
        let worker = WorkerRef {
            mailbox: Mailbox::new(actor, shared.depth.clone()),
            shared: shared.clone(),
        };
        self.members.insert(
            shared.id.clone(),
            Member {
                worker,
                retiring: false,
                replacing: None,
            },
        );
        Ok(())
    }

    fn active(&self) -> usize {
        self.members.values().filter(|m| !m.retiring).count()
    }

    async fn scale(&mut self, myself: &ActorRef<PoolMsg>, target: usize) -> Result<usize, Error> {
        if target < self.config.min_workers || target > self.config.max_workers {
            return Err(Error::invalid(
                "target",
                format!(
                    "{target} is outside the pool's bounds {}..={}",
                    self.config.min_workers, self.config.max_workers
                ),
            ));
        }
        if self.stopping.is_some() {
            return Err(Error::Stopped {
                actor: "worker pool",
            });
        }
        let before = self.active();
        for _ in before..target {
            self.add_worker(myself).await.map_err(|e| Error::Spawn {
                actor: "worker",
                reason: e.to_string(),
            })?;
        }
        if target < before {
            // Drain idle workers first, then the newest.
            let mut candidates: Vec<(u32, Arc<str>)> = self
                .members
                .iter()
                .filter(|(_, m)| !m.retiring)
                .map(|(id, m)| (m.worker.shared.current(), id.clone()))
                .collect();
            candidates.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(&a.1)));
            for (_, id) in candidates.into_iter().take(before - target) {
                let m = self.members.get_mut(&id).expect("candidate exists");
                m.retiring = true;
                let _ = m.worker.mailbox.send(WorkerMsg::Drain);
            }
        }
        Ok(before)
    }

    /// Detaches every worker from the queue (their leases go back) and the registry; for a
    /// pool about to fail, whose workers ractor kills without `post_stop`.
    fn release_all(&mut self) {
        for (id, member) in std::mem::take(&mut self.members) {
            self.registry.unregister(&id);
            self.queue_detach(&member);
        }
        self.by_actor.clear();
    }

    /// The worker's own `post_stop` detaches too when it stops cleanly; after a kill or a
    /// panic only this one runs. The queue ignores a detach of an older incarnation.
    fn queue_detach(&self, member: &Member) {
        let w = &member.worker.shared;
        self.queue.detach(w.id.clone(), w.incarnation);
    }

    fn stats(&self) -> PoolStats {
        let mut s = PoolStats {
            name: self.name.to_string(),
            worker_count: self.members.len(),
            min_workers: self.config.min_workers,
            max_workers: self.config.max_workers,
            total_completed: self.retired.0,
            total_failed: self.retired.1,
            restarts: self.supervisor.restarts(),
            mailbox_depth: self.depth.get(),
            ..PoolStats::default()
        };
        for m in self.members.values() {
            let w = &m.worker.shared;
            s.current_tasks += w.current() as u64;
            s.total_completed += w.completed();
            s.total_failed += w.failed();
            s.worker_mailbox_depth += w.depth.get();
            if m.retiring {
                s.draining += 1;
            } else {
                s.total_slots += w.config.max_concurrent_tasks as u64;
            }
        }
        s
    }

    fn finish_stop_if_done(&mut self, myself: &ActorRef<PoolMsg>) {
        if self.members.is_empty() {
            if let Some(done) = self.stopping.take() {
                let _ = done.send(());
                myself.stop(Some("stopped".into()));
            }
        }
    }
}
