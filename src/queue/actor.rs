use std::collections::HashMap;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::core::{Admission, AttemptReport, QueueCore};
use super::hold::{self, JournalHold};
use super::journal::{self, Accepted, StoreLink, WRITER_STOPPED};
use super::waiters::{add_waiter, register, Waiter, Waiting};
use super::{QueueConfig, QueueError, QueueStats, WorkerCall};
use crate::events::EventBus;
use crate::mailbox::{Mailbox, MailboxDepth};
use crate::store::{JournalWrite, NodeRow, Store, StoreError, StoreMsg, StoreOp};
use crate::task::{IdMap, TaskId, TaskOutcome, TaskSnapshot, TaskSpec, TaskStatus};

/// The task queue actor. Use it through [`QueueRef`](super::QueueRef).
#[derive(Debug)]
pub(crate) struct TaskQueue;

/// The queue's messages. Built only by [`QueueRef`](super::QueueRef).
pub(crate) enum QueueMsg {
    /// Accept tasks (all or none, but for those load shedding leaves out when `admission`
    /// allows it); optionally wait for their outcomes. `known`: the tasks the database
    /// holds for the idempotency keys memory did not, once looked up (`None` as the caller
    /// sends it).
    Submit {
        specs: Vec<TaskSpec>,
        known: Option<HashMap<String, TaskId>>,
        admission: Admission,
        waiter: Option<Waiter>,
        reply: RpcReplyPort<Result<Accepted, QueueError>>,
    },
    /// Register a waiter for one task (answered at once if it already finished).
    Wait {
        id: TaskId,
        waiter: Waiter,
        reply: RpcReplyPort<Result<(), QueueError>>,
    },
    /// One task's snapshot.
    Get {
        id: TaskId,
        reply: RpcReplyPort<Option<TaskSnapshot>>,
    },
    /// A page of tasks.
    List {
        query: crate::task::TaskQuery,
        reply: RpcReplyPort<Vec<TaskSnapshot>>,
    },
    /// The dead letters.
    DeadLetters {
        limit: usize,
        reply: RpcReplyPort<Vec<TaskSnapshot>>,
    },
    /// Cancel a task.
    Cancel {
        id: TaskId,
        reply: RpcReplyPort<Result<TaskStatus, QueueError>>,
    },
    /// Re-queue a dead letter.
    Requeue {
        id: TaskId,
        reply: RpcReplyPort<Result<(), QueueError>>,
    },
    /// The counters.
    Stats(RpcReplyPort<QueueStats>),
    /// Queued tasks per routing class (classes with none left out).
    Classes(RpcReplyPort<Vec<super::ClassBacklog>>),
    /// Stop taking submits; `drained` fires once nothing is waiting or running.
    Close {
        drained: oneshot::Sender<()>,
        reply: RpcReplyPort<()>,
    },
    /// The worker side of the credit protocol: attach, detach, credits, reports.
    Worker(WorkerCall),
    /// A worker call whose caller hears which tasks' reports or extensions were refused
    /// (their token was not the current lease's): the HTTP worker protocol answers them.
    Checked {
        call: WorkerCall,
        reply: RpcReplyPort<Vec<TaskId>>,
    },
    /// A pulling worker asks for up to `credits` tasks: its credits are set, and the
    /// reply comes once whatever the queue could lease it now has been delivered.
    Pull {
        worker: Arc<str>,
        credits: u32,
        reply: RpcReplyPort<()>,
    },
    /// Register one stream for many tasks; finished ones are answered at once. The reply
    /// names the tasks memory does not hold (the caller looks for them in the store).
    WaitMany {
        ids: Vec<TaskId>,
        tx: mpsc::UnboundedSender<(TaskId, TaskOutcome)>,
        reply: RpcReplyPort<Vec<TaskId>>,
    },
    /// Time to promote delayed tasks and expire leases.
    Tick,
    /// Nothing to do but what follows every message: ends the hold for a journal round
    /// that began after this many hand-offs to the writer, if it still lasts.
    Nudge(u64),
    /// The store could not commit these submitted tasks: take them back out.
    NotStored { ids: Vec<TaskId> },
    /// Workers seen alive, for the store's registry.
    Heartbeats(Vec<Arc<str>>),
    /// Every compute node's breaker is open (true) or not any more (false).
    Degraded(bool),
    /// Answer once everything changed so far is committed to the store.
    Flush(RpcReplyPort<Result<(), StoreError>>),
    /// A workflow journal round: committed with (or after) every change made so far, and
    /// answered once durable.
    Journal(JournalWrite),
    /// The coordinator is stopping: record its node as deregistered.
    Leaving,
    /// A remote node joined, left or was lost: record it.
    Node(NodeRow),
}

impl ractor::Message for QueueMsg {}

pub(crate) struct QueueArgs {
    pub(crate) config: QueueConfig,
    pub(crate) events: EventBus,
    pub(crate) depth: MailboxDepth,
    pub(crate) metrics: Arc<crate::metrics::TaskMetrics>,
    pub(crate) store: Option<Store>,
}

/// The queue actor's state.
pub(crate) struct QueueState {
    /// The rules and the data.
    pub(super) core: QueueCore,
    /// Waiters by task.
    pub(super) waiters: IdMap<Waiting>,
    /// Where lifecycle events go.
    events: EventBus,
    /// This actor's own counted mailbox (for timers, and to read its depth).
    pub(super) me: Mailbox<QueueMsg>,
    /// The time the next `Tick` is scheduled for, if one is.
    wake_at: Option<Instant>,
    /// Set once closing: submits are refused and this fires when the queue is empty.
    closing: Option<Option<oneshot::Sender<()>>>,
    /// Messages handled since the last dispatch; bounds how long a flood defers it.
    since_dispatch: u32,
    /// Where changes are journaled, when the queue has a store.
    pub(super) store: Option<StoreLink>,
    /// Whether this message's changes wait for the workflow engine's journal round.
    pub(super) hold: JournalHold,
}

/// Dispatch at the latest after this many messages, even if more are waiting.
const DISPATCH_EVERY: u32 = 64;

impl Actor for TaskQueue {
    type Msg = QueueMsg;
    type State = QueueState;
    type Arguments = QueueArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<QueueMsg>,
        args: QueueArgs,
    ) -> Result<QueueState, ActorProcessingErr> {
        let me = Mailbox::new(myself.clone(), args.depth);
        let mut core = QueueCore::with_metrics(args.config, args.metrics);
        let mut link = None;
        if let Some(store) = args.store {
            link = Some(StoreLink::open(store, &mut core, &me).await?);
        }
        let mut state = QueueState {
            core,
            waiters: IdMap::default(),
            events: args.events,
            me,
            wake_at: None,
            hold: JournalHold::default(),
            closing: None,
            since_dispatch: 0,
            store: link,
        };
        after_message(&mut state, Instant::now());
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<QueueMsg>,
        state: &mut QueueState,
    ) -> Result<(), ActorProcessingErr> {
        // Changes held for a journal round that will not come now.
        journal::send_writes(state);
        if let Some(claim) = state.store.as_mut().and_then(|l| l.claim.take()) {
            claim.release().await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<QueueMsg>,
        msg: QueueMsg,
        state: &mut QueueState,
    ) -> Result<(), ActorProcessingErr> {
        state.me.depth().received();
        state.hold.new_message();
        state.core.out.events_on = state.events.has_subscribers();
        let now = Instant::now();
        match msg {
            QueueMsg::Submit {
                specs,
                known,
                admission,
                waiter,
                reply,
            } => 'submit: {
                if let (Some(link), None) = (&state.store, &known) {
                    let keys = StoreLink::unknown_keys(&state.core, &specs);
                    if !keys.is_empty() && state.closing.is_none() {
                        link.look_up_keys(&state.me, keys, specs, admission, waiter, reply);
                        break 'submit;
                    }
                }
                let result = if state.closing.is_some() {
                    Err(QueueError::Closed)
                } else {
                    state
                        .core
                        .submit_known(specs, &known.unwrap_or_default(), now, admission)
                };
                let steps = match &waiter {
                    Some(Waiter::Steps { followed, .. }) => Some(*followed),
                    _ => None,
                };
                if let (Ok(admitted), Some(waiter)) = (&result, waiter) {
                    register(state, &admitted.submitted, waiter);
                }
                state.hold.steps_submitted = steps.filter(|_| result.is_ok());
                let answer = result.map(|admitted| {
                    let stored = state
                        .store
                        .as_mut()
                        .and_then(|link| link.journal(&admitted.submitted, steps.is_some()));
                    Accepted {
                        submitted: admitted.submitted,
                        shed: admitted.shed,
                        stored,
                    }
                });
                let _ = reply.send(answer);
            }
            QueueMsg::Wait { id, waiter, reply } => {
                let answer = match state.core.outcome(id) {
                    None => Err(QueueError::NotFound(id)),
                    Some(Some(outcome)) => {
                        waiter.send(id, outcome);
                        Ok(())
                    }
                    Some(None) => {
                        add_waiter(&mut state.waiters, id, waiter);
                        Ok(())
                    }
                };
                let _ = reply.send(answer);
            }
            QueueMsg::Get { id, reply } => {
                let _ = reply.send(state.core.snapshot(id));
            }
            QueueMsg::List { query, reply } => {
                let _ = reply.send(state.core.list(&query));
            }
            QueueMsg::DeadLetters { limit, reply } => {
                let _ = reply.send(state.core.dead_letters(limit));
            }
            QueueMsg::Cancel { id, reply } => {
                let _ = reply.send(state.core.cancel(id));
            }
            QueueMsg::Requeue { id, reply } => {
                let _ = reply.send(state.core.requeue(id));
            }
            QueueMsg::Stats(reply) => {
                let _ = reply.send(state.core.stats());
            }
            QueueMsg::Classes(reply) => {
                let _ = reply.send(state.core.class_backlog());
            }
            QueueMsg::Close { drained, reply } => {
                state.closing = Some(Some(drained));
                let _ = reply.send(());
            }
            QueueMsg::Worker(call) => {
                worker_call(state, call, now);
            }
            QueueMsg::Checked { call, reply } => {
                let _ = reply.send(worker_call(state, call, now));
            }
            QueueMsg::Pull {
                worker,
                credits,
                reply,
            } => {
                state.core.set_credits(&worker, credits);
                dispatch(state, now);
                let _ = reply.send(());
            }
            QueueMsg::WaitMany { ids, tx, reply } => {
                let mut unknown = Vec::new();
                for id in ids {
                    match state.core.outcome(id) {
                        None => unknown.push(id),
                        Some(Some(outcome)) => {
                            let _ = tx.send((id, outcome));
                        }
                        Some(None) => {
                            add_waiter(&mut state.waiters, id, Waiter::Stream(tx.clone()))
                        }
                    }
                }
                let _ = reply.send(unknown);
            }
            QueueMsg::Tick => {
                state.wake_at = None;
                state.core.tick(now);
            }
            QueueMsg::Nudge(n) => state.hold.nudged(n),
            QueueMsg::NotStored { ids } => {
                state.core.abandon(&ids);
                for id in &ids {
                    state.waiters.remove(id);
                }
            }
            QueueMsg::Leaving => {
                if let Some(link) = &state.store {
                    state.core.out.writes.push(StoreOp::Node(NodeRow {
                        id: link.node.clone(),
                        address: None,
                        labels: "[]".into(),
                        status: "deregistered",
                        at_ms: crate::store::ms(std::time::SystemTime::now()),
                    }));
                }
            }
            QueueMsg::Node(row) => {
                if state.store.is_some() {
                    state.core.out.writes.push(StoreOp::Node(row));
                }
            }
            QueueMsg::Degraded(on) => state.core.set_degraded(on),
            QueueMsg::Heartbeats(workers) => {
                if state.store.is_some() {
                    let at = crate::store::ms(std::time::SystemTime::now());
                    state.core.out.writes.push(StoreOp::Heartbeat(workers, at));
                }
            }
            QueueMsg::Journal(write) => match &mut state.store {
                // Sent with the changes made so far (`send_writes` below), never before them.
                Some(link) => link.journals.push(write),
                None => {
                    let _ = write.reply.send(Ok(()));
                }
            },
            QueueMsg::Flush(reply) => {
                // Everything before it goes to the writer first, so the flush covers it.
                journal::send_writes(state);
                match &state.store {
                    Some(link) => {
                        if let Err(Some(StoreMsg::Flush(reply))) =
                            link.writer.send(StoreMsg::Flush(reply))
                        {
                            let _ = reply.send(Err(StoreError::Unavailable(WRITER_STOPPED.into())));
                        }
                    }
                    None => {
                        let _ = reply.send(Ok(()));
                    }
                }
            }
        }
        if after_message(state, now) {
            // The workers just handed leases wait in this thread's next-task slot, which
            // tokio lets no other thread take: without a yield they wait until this actor
            // has worked through its mailbox (up to its budget of 128 messages), which was
            // the millisecond tail of the dispatch latency. Yielding runs them now and puts
            // this actor where the other thread can pick it up.
            tokio::task::yield_now().await;
        }
        Ok(())
    }
}

/// Applies one call of the worker side of the credit protocol; returns the tasks whose
/// reports or extensions were refused.
fn worker_call(state: &mut QueueState, call: WorkerCall, now: Instant) -> Vec<TaskId> {
    match call {
        WorkerCall::Attach {
            worker,
            incarnation,
            caps,
            credits,
            sink,
        } => state.core.attach(worker, incarnation, caps, credits, sink),
        WorkerCall::Detach {
            worker,
            incarnation,
        } => state.core.detach(&worker, incarnation),
        WorkerCall::SetCredits { worker, credits } => state.core.set_credits(&worker, credits),
        WorkerCall::Report {
            worker,
            reports,
            credits,
        } => {
            let refused = state.core.report(&worker, reports, now);
            state.core.credit(&worker, credits);
            return refused;
        }
        WorkerCall::Extend { worker, leases } => return state.core.extend(&worker, &leases, now),
        WorkerCall::Progress {
            worker,
            task_id,
            token,
            fraction,
            message,
        } => state
            .core
            .progress(&worker, task_id, &token, fraction, message),
    }
    Vec::new()
}

/// Leases queued tasks to workers with credits and delivers them; true when any went out.
fn dispatch(state: &mut QueueState, now: Instant) -> bool {
    state.since_dispatch = 0;
    let mut delivered = false;
    for d in state.core.dispatch(now) {
        delivered = true;
        if let Err(returned) = d.sink.deliver(d.leases) {
            // The worker is gone; its detach will follow. Put the tasks back now.
            tracing::debug!(worker = %d.worker, count = returned.len(), "delivery refused");
            let reports = returned
                .into_iter()
                .map(|l| AttemptReport {
                    task_id: l.task_id,
                    token: l.token,
                    outcome: super::AttemptOutcome::Cancelled,
                })
                .collect();
            state.core.report(&d.worker, reports, now);
            state.core.set_credits(&d.worker, 0);
        }
    }
    delivered
}

/// Runs after every message: hand out work when the mailbox is quiet (so a burst of reports
/// becomes one delivery per worker), wake waiters, cancel attempts, publish events, and keep
/// the timer set for the next deadline. True when leases were handed to a worker.
fn after_message(state: &mut QueueState, now: Instant) -> bool {
    state.since_dispatch += 1;
    let mut delivered = false;
    if state.me.depth().get() == 0 || state.since_dispatch >= DISPATCH_EVERY {
        delivered = dispatch(state, now);
    }
    hold::send_or_hold(state);
    // Drained in place: the outbox keeps its buffers from one message to the next.
    let out = &mut state.core.out;
    for (id, outcome) in out.finished.drain(..) {
        if let Some(waiting) = state.waiters.remove(&id) {
            waiting.send(id, outcome);
        }
    }
    for (sink, id) in out.cancels.drain(..) {
        sink.cancel(id);
    }
    for event in out.events.drain(..) {
        state.events.publish(event);
    }
    if let Some(at) = state.core.next_wake() {
        if state.wake_at.is_none_or(|w| at < w) {
            state.wake_at = Some(at);
            // Measured from the current time, not `now` (the message's start), so the tick
            // is never early.
            let delay = at.saturating_duration_since(Instant::now());
            state.me.send_after(delay, || QueueMsg::Tick);
        }
    }
    if let Some(slot) = &mut state.closing {
        if state.core.live() == 0 {
            if let Some(tx) = slot.take() {
                let _ = tx.send(());
            }
        }
    }
    delivered
}
