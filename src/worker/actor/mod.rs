//! The worker actor: its messages, its state, and how it starts, runs and reports the
//! attempts the queue leases it.

mod timers;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;
use tokio_util::sync::{CancellationToken, DropGuard};

use self::timers::{spawn_heartbeat, Extending};
use super::delivery::{self, LeasedJob};
use super::run::{run_attempt, AttemptJob};
use super::{
    AttemptOutcome, AttemptReport, Capabilities, LeaseSink, RoutingStrategy, UplinkRef,
    WorkerRegistry, WorkerShared, WorkerStatus,
};
use crate::events::{EventBus, EventKind};
use crate::handler::{HandlerMap, ProgressRoute, ProgressSink, TaskContext, TaskError};
use crate::mailbox::Mailbox;
use crate::task::{IdMap, Lease, LeaseToken, Payload, TaskId};

/// The worker actor. Workers are started by their [`WorkerPool`](crate::PoolRef).
#[derive(Debug)]
pub(crate) struct Worker;

/// A worker's messages. Built only inside the crate.
pub(crate) enum WorkerMsg {
    /// Leases from the queue: run them.
    Deliver(Vec<Lease>),
    /// Leased attempts that ended on their first poll, reported together by their delivery.
    Finished(Vec<AttemptReport>),
    /// Stop one attempt (the task was cancelled).
    Cancel(TaskId),
    /// An attempt ended (one that ran in a task of its own).
    Done {
        task_id: TaskId,
        outcome: AttemptOutcome,
        /// Where the outcome goes.
        origin: Origin,
    },
    /// Run one task directly.
    Execute {
        task_type: Arc<str>,
        input: Payload,
        reply: oneshot::Sender<Result<Payload, TaskError>>,
    },
    /// Time to heartbeat.
    Heartbeat,
    /// Time to extend the leases of running attempts whose tasks have no timeout.
    Extend,
    /// The pool's handlers changed: use the new set and tell the queue.
    Handlers(HandlerMap),
    /// Finish running tasks, take no new ones, then stop.
    Drain,
    /// Block the mailbox (fault drills).
    Stall(Duration),
}

impl ractor::Message for WorkerMsg {}

pub(crate) struct WorkerArgs {
    pub(crate) shared: Arc<WorkerShared>,
    pub(crate) handlers: HandlerMap,
    pub(crate) queue: UplinkRef,
    pub(crate) registry: WorkerRegistry,
    pub(crate) events: EventBus,
}

/// Attempts report back in batches of at most this many.
const REPORT_BATCH: usize = 64;

/// The worker actor's state.
pub(crate) struct WorkerState {
    /// Counters shared with the pool and the registry.
    shared: Arc<WorkerShared>,
    /// Handlers by task type.
    handlers: HandlerMap,
    /// Where leases come from and reports go.
    queue: UplinkRef,
    /// Where leased attempts report progress, when not on `events`: the uplink, on a node.
    progress: Option<Arc<dyn ProgressSink>>,
    /// Where heartbeats go.
    registry: WorkerRegistry,
    /// Lifecycle events.
    events: EventBus,
    /// This actor's own counted mailbox, for attempts to report to.
    me: Mailbox<WorkerMsg>,
    /// Attempts running now, with their cancellation tokens.
    running: IdMap<CancellationToken>,
    /// Leases of running attempts that last `lease_time` unless extended (tasks without a
    /// timeout): their tokens and when each was last extended.
    extending: IdMap<Extending>,
    /// Set while an `Extend` message is scheduled.
    extend_scheduled: bool,
    /// How many of `running` are `execute_task` calls: they take no credit, so they are
    /// left out when the free slots are counted.
    direct: u32,
    /// Finished attempts not yet reported.
    reports: Vec<AttemptReport>,
    /// Slots freed since the last report.
    credits: u32,
    /// Set once draining: no more credits, stop when idle.
    draining: bool,
    /// Stops the heartbeat and extend timers when this state is dropped. Attempts have
    /// tokens of their own (a child token would lock this one as it comes and goes, once
    /// per attempt); `Drop` cancels those.
    root: CancellationToken,
    _stop_timers: DropGuard,
}

impl Drop for WorkerState {
    /// A killed worker's attempts stop instead of running on unseen.
    fn drop(&mut self) {
        for token in self.running.values() {
            token.cancel();
        }
    }
}

impl fmt::Debug for WorkerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerState")
            .field("id", &self.shared.id)
            .field("running", &self.running.len())
            .finish()
    }
}

/// Where an attempt came from, so its outcome goes back there.
pub(crate) enum Origin {
    /// A lease from the queue: the outcome is reported with the lease's token.
    Lease(LeaseToken),
    /// An `execute_task` call, which bypasses the queue: the outcome answers it.
    Direct(oneshot::Sender<Result<Payload, TaskError>>),
}

/// Delivers a worker's leases into its mailbox.
/// A local worker's end of the queue: its mailbox, and its pool's routing.
struct ActorSink(Mailbox<WorkerMsg>, RoutingStrategy);

impl fmt::Debug for ActorSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ActorSink")
            .field(&self.0)
            .field(&self.1)
            .finish()
    }
}

impl LeaseSink for ActorSink {
    fn deliver(&self, leases: Vec<Lease>) -> Result<(), Vec<Lease>> {
        self.0
            .send(WorkerMsg::Deliver(leases))
            .map_err(|m| match m {
                Some(WorkerMsg::Deliver(leases)) => leases,
                _ => Vec::new(),
            })
    }

    fn cancel(&self, task_id: TaskId) {
        let _ = self.0.send(WorkerMsg::Cancel(task_id));
    }

    fn routing(&self) -> RoutingStrategy {
        self.1
    }
}

impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<WorkerMsg>,
        args: WorkerArgs,
    ) -> Result<WorkerState, ActorProcessingErr> {
        let me = Mailbox::new(myself, args.shared.depth.clone());
        let root = CancellationToken::new();
        let state = WorkerState {
            shared: args.shared,
            handlers: args.handlers,
            progress: args.queue.progress_sink(),
            queue: args.queue,
            registry: args.registry,
            events: args.events,
            me,
            running: IdMap::default(),
            extending: IdMap::default(),
            extend_scheduled: false,
            direct: 0,
            reports: Vec::new(),
            credits: 0,
            draining: false,
            _stop_timers: root.clone().drop_guard(),
            root,
        };
        state.shared.set_status(WorkerStatus::Idle);
        state.shared.set_current(0);
        state.registry.register_local(state.shared.clone());
        state.announce(state.shared.config.max_concurrent_tasks);
        spawn_heartbeat(&state);
        state.events.publish(EventKind::WorkerStarted {
            worker: state.shared.id.clone(),
            pool: state.shared.pool.clone(),
        });
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<WorkerMsg>,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        state.flush();
        state
            .queue
            .detach(state.shared.id.clone(), state.shared.incarnation);
        state.shared.set_status(WorkerStatus::Stopped);
        state.registry.unregister(&state.shared.id);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        state.me.depth().received();
        match msg {
            WorkerMsg::Deliver(leases) => state.deliver(leases),
            WorkerMsg::Finished(reports) => state.finished(reports),
            WorkerMsg::Cancel(id) => {
                if let Some(token) = state.running.get(&id) {
                    token.cancel();
                }
            }
            WorkerMsg::Done {
                task_id,
                outcome,
                origin,
            } => state.done(task_id, outcome, origin),
            WorkerMsg::Extend => state.extend_leases(),
            WorkerMsg::Execute {
                task_type,
                input,
                reply,
            } => state.execute(task_type, input, reply),
            WorkerMsg::Heartbeat => {
                state.registry.heartbeat(&state.shared.id);
            }
            WorkerMsg::Handlers(handlers) => {
                state.handlers = handlers;
                if !state.draining {
                    // Direct runs take no credit. Saturating: leases still on their way here
                    // when the queue reads this announce can put more attempts here than slots.
                    let leased = state.running.len() as u32 - state.direct;
                    let free = state
                        .shared
                        .config
                        .max_concurrent_tasks
                        .saturating_sub(leased);
                    state.flush();
                    state.announce(free);
                }
            }
            WorkerMsg::Drain => {
                state.draining = true;
                state.shared.set_status(WorkerStatus::Draining);
                state.queue.set_credits(state.shared.id.clone(), 0);
            }
            WorkerMsg::Stall(d) => tokio::time::sleep(d).await,
        }
        if state.me.depth().get() == 0 || state.reports.len() >= REPORT_BATCH {
            state.flush();
        }
        if state.draining && state.running.is_empty() {
            state.flush();
            myself.stop(Some(super::DRAINED.to_string()));
        }
        Ok(())
    }
}

impl WorkerState {
    /// Tells the queue what this worker serves and how many tasks it can take.
    fn announce(&self, credits: u32) {
        let caps = Capabilities {
            task_types: self.handlers.keys().cloned().collect(),
            labels: self.shared.config.labels.clone(),
        };
        self.queue.attach(
            self.shared.id.clone(),
            self.shared.incarnation,
            caps,
            credits,
            Arc::new(ActorSink(self.me.clone(), self.shared.routing)),
        );
    }

    /// Starts a delivery's attempts, on one task (see `delivery.rs`).
    fn deliver(&mut self, leases: Vec<Lease>) {
        // Asked once per delivery: the bus answers under a lock.
        let events_on = self.events.has_subscribers();
        let jobs: Vec<LeasedJob> = leases
            .into_iter()
            .map(|l| self.prepare(l, events_on))
            .collect();
        self.shared.set_current(self.running.len() as u32);
        self.shared.set_status(WorkerStatus::Busy);
        delivery::spawn(jobs, self.me.clone());
    }

    /// Records a leased attempt as running and builds what its delivery starts;
    /// `events_on`: someone subscribes to events (a `TaskStarted` is published).
    fn prepare(&mut self, lease: Lease, events_on: bool) -> LeasedJob {
        let token = CancellationToken::new();
        self.running.insert(lease.task_id, token.clone());
        if let Some(lease_time) = lease.lease_time {
            self.extending.insert(
                lease.task_id,
                Extending {
                    token: lease.token,
                    every: lease_time / 3,
                    last: tokio::time::Instant::now(),
                },
            );
            self.schedule_extend(lease_time / 3);
        }
        if events_on {
            self.events.publish(EventKind::TaskStarted {
                id: lease.task_id,
                worker: self.shared.id.clone(),
                attempt: lease.attempt(),
            });
        }
        let attempt = lease.attempt();
        let handler = self.handlers.get(&lease.task_type).cloned();
        let mut ctx = self.context(lease.task_id, attempt, lease.task_type, token);
        ctx.trace_id = lease.trace_id;
        ctx.progress = self.progress.as_ref().map(|sink| ProgressRoute {
            sink: sink.clone(),
            token: lease.token,
        });
        LeasedJob {
            task_id: lease.task_id,
            token: lease.token,
            job: AttemptJob {
                handler,
                ctx,
                input: lease.payload,
                timeout: lease.timeout.or(self.shared.config.task_timeout),
            },
        }
    }

    fn execute(
        &mut self,
        task_type: Arc<str>,
        input: Payload,
        reply: oneshot::Sender<Result<Payload, TaskError>>,
    ) {
        let id = TaskId::new();
        let token = CancellationToken::new();
        self.running.insert(id, token.clone());
        self.direct += 1;
        self.shared.set_current(self.running.len() as u32);
        self.shared.set_status(WorkerStatus::Busy);
        let handler = self.handlers.get(&task_type).cloned();
        let job = AttemptJob {
            handler,
            ctx: self.context(id, 1, task_type, token),
            input,
            timeout: self.shared.config.task_timeout,
        };
        let me = self.me.clone();
        tokio::spawn(async move {
            let outcome = run_attempt(job).await;
            let _ = me.send(WorkerMsg::Done {
                task_id: id,
                outcome,
                origin: Origin::Direct(reply),
            });
        });
    }

    fn context(
        &self,
        task_id: TaskId,
        attempt: u32,
        task_type: Arc<str>,
        cancel: CancellationToken,
    ) -> TaskContext {
        TaskContext {
            task_id,
            attempt,
            task_type,
            trace_id: task_id.into(),
            worker: self.shared.id.clone(),
            cancel,
            events: self.events.clone(),
            progress: None,
        }
    }

    /// Leased attempts that ended together: each is reported.
    fn finished(&mut self, reports: Vec<AttemptReport>) {
        for r in &reports {
            self.end(r.task_id, matches!(r.outcome, AttemptOutcome::Completed(_)));
        }
        if !self.draining {
            self.credits += reports.len() as u32;
        }
        if self.reports.is_empty() {
            self.reports = reports;
        } else {
            self.reports.extend(reports);
        }
        self.settle();
    }

    fn done(&mut self, task_id: TaskId, outcome: AttemptOutcome, origin: Origin) {
        self.end(task_id, matches!(outcome, AttemptOutcome::Completed(_)));
        self.settle();
        match origin {
            Origin::Direct(reply) => {
                self.direct -= 1;
                let _ = reply.send(match outcome {
                    AttemptOutcome::Completed(p) => Ok(p),
                    AttemptOutcome::Failed(e) => Err(e),
                    AttemptOutcome::TimedOut(t) => {
                        Err(TaskError::retryable(format!("timed out after {t:?}")))
                    }
                    AttemptOutcome::Cancelled => Err(TaskError::retryable("cancelled")),
                });
            }
            Origin::Lease(token) => {
                self.reports.push(AttemptReport {
                    task_id,
                    token,
                    outcome,
                });
                if !self.draining {
                    self.credits += 1;
                }
            }
        }
    }

    /// Forgets an attempt that ended, and counts it.
    fn end(&mut self, task_id: TaskId, completed: bool) {
        self.running.remove(&task_id);
        self.extending.remove(&task_id);
        self.shared.count(completed);
    }

    /// Publishes how many attempts run now, and goes idle when none do.
    fn settle(&self) {
        self.shared.set_current(self.running.len() as u32);
        if self.running.is_empty() && !self.draining {
            self.shared.set_status(WorkerStatus::Idle);
        }
    }

    /// Sends finished attempts and freed slots to the queue in one message.
    fn flush(&mut self) {
        if self.reports.is_empty() && self.credits == 0 {
            return;
        }
        let reports = std::mem::take(&mut self.reports);
        let credits = std::mem::take(&mut self.credits);
        self.queue.report(self.shared.id.clone(), reports, credits);
    }
}
