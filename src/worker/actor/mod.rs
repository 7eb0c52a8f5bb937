use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::run::run_attempt;
use super::{
    AttemptOutcome, AttemptReport, Capabilities, LeaseSink, UplinkRef, WorkerRegistry,
    WorkerShared, WorkerStatus,
};
use crate::events::{EventBus, EventKind};
use crate::handler::{HandlerMap, TaskContext, TaskError};
use crate::mailbox::Mailbox;
use crate::task::{IdMap, Lease, LeaseToken, Payload, TaskId};

/// The worker actor. Workers are started by their [`WorkerPool`](crate::PoolRef).
#[derive(Debug)]
pub(crate) struct Worker;

/// A worker's messages. Built only inside the crate.
pub(crate) enum WorkerMsg {
    /// Leases from the queue: run them.
    Deliver(Vec<Lease>),
    /// Stop one attempt (the task was cancelled).
    Cancel(TaskId),
    /// An attempt ended.
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
    /// Parent of every attempt's token; cancelled when this state is dropped, so a killed
    /// worker's attempts stop instead of running on unseen.
    root: CancellationToken,
    _stop_attempts: DropGuard,
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

/// A running attempt whose lease its worker extends.
struct Extending {
    /// The lease's token, which the extend carries.
    token: LeaseToken,
    /// How often to extend: a third of the lease's `lease_time`.
    every: Duration,
    /// When it was granted or last extended.
    last: tokio::time::Instant,
}

/// Delivers a worker's leases into its mailbox.
struct ActorSink(Mailbox<WorkerMsg>);

impl fmt::Debug for ActorSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ActorSink").field(&self.0).finish()
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
            _stop_attempts: root.clone().drop_guard(),
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
            WorkerMsg::Deliver(leases) => {
                for lease in leases {
                    state.start(lease);
                }
            }
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
            Arc::new(ActorSink(self.me.clone())),
        );
    }

    fn start(&mut self, lease: Lease) {
        let token = self.root.child_token();
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
        self.shared.set_current(self.running.len() as u32);
        self.shared.set_status(WorkerStatus::Busy);
        self.events.publish(EventKind::TaskStarted {
            id: lease.task_id,
            worker: self.shared.id.clone(),
            attempt: lease.attempt(),
        });
        let ctx = self.context(
            lease.task_id,
            lease.attempt(),
            lease.task_type.clone(),
            token,
        );
        let handler = self.handlers.get(&lease.task_type).cloned();
        let timeout = lease.timeout.or(self.shared.config.task_timeout);
        let me = self.me.clone();
        tokio::spawn(async move {
            let outcome = run_attempt(handler, ctx, lease.payload, timeout).await;
            let _ = me.send(WorkerMsg::Done {
                task_id: lease.task_id,
                outcome,
                origin: Origin::Lease(lease.token),
            });
        });
    }

    fn execute(
        &mut self,
        task_type: Arc<str>,
        input: Payload,
        reply: oneshot::Sender<Result<Payload, TaskError>>,
    ) {
        let id = TaskId::new();
        let token = self.root.child_token();
        self.running.insert(id, token.clone());
        self.direct += 1;
        self.shared.set_current(self.running.len() as u32);
        self.shared.set_status(WorkerStatus::Busy);
        let ctx = self.context(id, 1, task_type.clone(), token);
        let handler = self.handlers.get(&task_type).cloned();
        let timeout = self.shared.config.task_timeout;
        let me = self.me.clone();
        tokio::spawn(async move {
            let outcome = run_attempt(handler, ctx, input, timeout).await;
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
            worker: self.shared.id.clone(),
            cancel,
            events: self.events.clone(),
        }
    }

    fn done(&mut self, task_id: TaskId, outcome: AttemptOutcome, origin: Origin) {
        self.running.remove(&task_id);
        self.extending.remove(&task_id);
        self.shared.set_current(self.running.len() as u32);
        if self.running.is_empty() && !self.draining {
            self.shared.set_status(WorkerStatus::Idle);
        }
        self.shared
            .count(matches!(outcome, AttemptOutcome::Completed(_)));
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

    /// Sends `Extend` to this worker after `after`, unless one is already on its way.
    fn schedule_extend(&mut self, after: Duration) {
        if self.extend_scheduled {
            return;
        }
        self.extend_scheduled = true;
        let me = self.me.clone();
        let stop = self.root.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(after) => { let _ = me.send(WorkerMsg::Extend); }
            }
        });
    }

    /// Extends, in one message, every lease due for it (a third of its `lease_time` since
    /// the last), and schedules the next round while any such lease runs.
    fn extend_leases(&mut self) {
        self.extend_scheduled = false;
        let now = tokio::time::Instant::now();
        let mut due = Vec::new();
        let mut next: Option<Duration> = None;
        for (id, e) in self.extending.iter_mut() {
            if now.duration_since(e.last) >= e.every {
                e.last = now;
                due.push((*id, e.token));
            }
            let wait = e.every.saturating_sub(now.duration_since(e.last));
            next = Some(next.map_or(wait, |n| n.min(wait)));
        }
        if !due.is_empty() {
            self.queue.extend(self.shared.id.clone(), due);
        }
        if let Some(wait) = next {
            self.schedule_extend(wait.max(Duration::from_millis(1)));
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

/// Heartbeats through the counted mailbox, so a stalled worker stops heartbeating.
fn spawn_heartbeat(state: &WorkerState) {
    let me = state.me.clone();
    let every = state.shared.config.heartbeat_interval;
    let stop = state.root.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {
                    if me.send(WorkerMsg::Heartbeat).is_err() {
                        return;
                    }
                }
            }
        }
    });
}
