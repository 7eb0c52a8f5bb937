//! The queue's data and rules, with no actor around them: what is queued, who holds which
//! lease, what retries when. The [`TaskQueue`](super::TaskQueue) actor owns one `QueueCore`
//! and turns its [`Outbox`] into messages. Time comes in as an argument, so the rules are
//! tested (and property-tested) without a runtime.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::ready::{Class, ClassKey, Ready};
use super::sorted::Sorted;
use super::{QueueConfig, QueueError, QueueStats};
use crate::events::EventKind;
use crate::metrics::TaskMetrics;
use crate::task::{
    Attempt, IdSet, Lease, LeaseToken, Payload, Submitted, TaskId, TaskOutcome, TaskPriority,
    TaskSnapshot, TaskSpec, TaskStatus,
};
pub(crate) use crate::worker::{AttemptOutcome, AttemptReport};
use crate::worker::{Capabilities, LeaseSink, RoutingStrategy};

/// What the queue asks its owner to do after a change.
#[derive(Default)]
pub(crate) struct Outbox {
    /// Tasks that reached a final state: wake their waiters.
    pub(crate) finished: Vec<(TaskId, TaskOutcome)>,
    /// Running attempts to cancel on their workers.
    pub(crate) cancels: Vec<(Arc<dyn LeaseSink>, TaskId)>,
    /// Lifecycle events, collected only while `events_on`.
    pub(crate) events: Vec<EventKind>,
    pub(crate) events_on: bool,
    /// Changes for the store, in order; filled only when the queue has one.
    pub(crate) writes: Vec<crate::store::StoreOp>,
}

impl Outbox {
    fn event(&mut self, make: impl FnOnce() -> EventKind) {
        if self.events_on {
            self.events.push(make());
        }
    }
}

/// Bytes counted for a finished task beyond its payload, result and error: the entry, its
/// options and attempts, and its place in the indexes (measured: about 500 B).
const ENTRY_OVERHEAD: usize = 512;

/// What a task gathers once it runs.
struct Run {
    attempts: Vec<Attempt>,
    lease: Option<LeaseHold>,
    result: Option<Payload>,
    error: Option<String>,
    finished_at: Option<SystemTime>,
    /// Position in the dead-letter list, while the task is there.
    dead_seq: Option<u64>,
    /// Bumped each time the task is put under retention (see `QueueCore::finished`).
    retention_tag: u32,
    /// Retries spent (a task that never ran has spent none).
    retries_used: u32,
    /// Times the task lost its worker.
    lease_losses: u32,
}

/// The state of a task that never ran.
const NOT_RUN: Run = Run {
    attempts: Vec::new(),
    lease: None,
    result: None,
    error: None,
    finished_at: None,
    dead_seq: None,
    retention_tag: 0,
    retries_used: 0,
    lease_losses: 0,
};

static EMPTY_RUN: Run = NOT_RUN;

impl Entry {
    pub(super) fn run(&self) -> &Run {
        self.run.as_deref().unwrap_or(&EMPTY_RUN)
    }

    pub(super) fn run_mut(&mut self) -> &mut Run {
        self.run.get_or_insert_with(|| Box::new(NOT_RUN))
    }

    /// The memory a finished task holds, for the byte bounds: its payload, result and error,
    /// and a fixed share for the entry itself.
    pub(super) fn bytes(&self) -> u64 {
        let run = self.run();
        let text =
            run.result.as_ref().map_or(0, |r| r.len()) + run.error.as_ref().map_or(0, |e| e.len());
        (ENTRY_OVERHEAD + self.payload.len() + text) as u64
    }
}

/// The lease a running task is held under.
struct LeaseHold {
    /// The worker holding it.
    worker: Arc<str>,
    /// The token its reports must carry.
    token: LeaseToken,
    /// When it is taken back unless reported on (or, without a task timeout, extended).
    deadline: Instant,
}

struct Session {
    incarnation: u64,
    caps: Capabilities,
    credits: u32,
    sink: Arc<dyn LeaseSink>,
    leases: IdSet,
    /// Its pool's strategy: which index holds it while it has credits (`with_credits` or
    /// `rotation`), and how many tasks it takes per turn.
    routing: RoutingStrategy,
    /// Round robin: the turn it was last served in (at first, the one it attached in); its
    /// place in `rotation`.
    turn: u64,
    /// Queued tasks whose affinity key is bound to this worker, waiting for it to have a
    /// free slot, best first: (priority lane reversed, sequence number, id). Entries of
    /// tasks no longer parked here are stale and skipped (see `affinity.rs`).
    parked: BTreeSet<(std::cmp::Reverse<usize>, u64, TaskId)>,
}

/// Leases for one worker, from one dispatch.
pub(crate) struct Delivery {
    pub(crate) worker: Arc<str>,
    pub(crate) sink: Arc<dyn LeaseSink>,
    pub(crate) leases: Vec<Lease>,
}

#[derive(Default)]
struct Counters {
    submitted: u64,
    completed: u64,
    failed: u64,
    cancelled: u64,
    timed_out: u64,
    retried: u64,
    lease_lost: u64,
    recovered: u64,
    /// Reports and extends refused because their token was not the current lease's.
    stale_reports: u64,
    /// Progress dropped because its token was not the current lease's.
    stale_progress: u64,
    /// Tasks refused by load shedding, by priority.
    shed: [u64; 4],
}

pub(crate) struct QueueCore {
    config: QueueConfig,
    tasks: Tasks,
    /// Routing classes by slot; a retired class (no task left) keeps its slot, empty, in
    /// `free_classes` until a new class reuses it.
    classes: Vec<Class>,
    class_index: HashMap<ClassKey, usize>,
    free_classes: Vec<usize>,
    /// The class the last task submitted went to: a batch of one type and label set finds
    /// its class without building and hashing a key per task.
    last_class: Option<usize>,
    /// Reused by `dispatch`: the classes the worker being served can take.
    matching: Vec<usize>,
    /// Reused by `report`: the tasks whose leases the reporting worker just ended.
    ended: Vec<TaskId>,
    /// The latest time the queue was told (each call that takes a `now` sets it): when a
    /// task became ready, for priority aging.
    clock: Instant,
    /// Pending tasks by the time they become runnable.
    delayed: Sorted<(Instant, TaskId)>,
    /// Running tasks by lease deadline.
    deadlines: Sorted<(Instant, TaskId)>,
    workers: HashMap<Arc<str>, Session>,
    /// The least-loaded workers with free credits, most first (ties by id): the order
    /// `dispatch` serves them in. Kept in step with every session's `credits`.
    with_credits: BTreeSet<(std::cmp::Reverse<u32>, Arc<str>)>,
    /// The round-robin workers with free credits, served longest ago first (by turn).
    rotation: BTreeSet<(u64, Arc<str>)>,
    /// The last round-robin turn handed out.
    turns: u64,
    /// Affinity keys bound to workers, and tasks waiting for their bound worker.
    affinity: affinity::Affinity,
    idempotency: HashMap<String, TaskId>,
    /// Finished tasks, oldest first, for retention.
    /// Each entry carries the task's retention tag when it was pushed; an entry whose tag
    /// is no longer the task's own is stale (the task was re-queued or re-listed since).
    finished: VecDeque<(TaskId, u32)>,
    dead: BTreeMap<u64, TaskId>,
    /// Payload bytes of unfinished tasks (bounded by `max_queue_bytes`).
    live_bytes: u64,
    /// Bytes of finished tasks kept for retention, dead letters aside.
    finished_bytes: u64,
    /// How many finished tasks are kept for retention, dead letters aside: what
    /// `max_finished_tasks` bounds (`finished` may also hold stale entries).
    finished_count: usize,
    /// Bytes of dead letters.
    dead_bytes: u64,
    seq: u64,
    queued_by_priority: [usize; 4],
    running: usize,
    counters: Counters,
    rng: fastrand::Rng,
    metrics: Arc<TaskMetrics>,
    /// The coordinator's epoch: the first part of every lease token. Raised by the store at
    /// each start, so tokens granted before a restart never match again.
    epoch: u64,
    /// Where lease nonces come from: a cryptographic generator, so that nobody who sees some
    /// tokens can predict another's.
    nonces: rand::rngs::StdRng,
    /// With a store: the node name attempts are recorded under. `None`: nothing is written.
    persist: Option<Arc<str>>,
    /// Set while every compute node's circuit breaker is open: new `Low` work is shed
    /// whatever the backlog (see `shed`).
    degraded: bool,
    pub(crate) out: Outbox,
}

impl QueueCore {
    #[cfg(test)]
    pub(crate) fn new(config: QueueConfig) -> Self {
        Self::with_metrics(config, Arc::default())
    }

    pub(crate) fn with_metrics(config: QueueConfig, metrics: Arc<TaskMetrics>) -> Self {
        let affinity = affinity::Affinity::new(config.max_affinity_keys);
        Self {
            config,
            tasks: Tasks::new(),
            classes: Vec::new(),
            class_index: HashMap::new(),
            free_classes: Vec::new(),
            last_class: None,
            matching: Vec::new(),
            ended: Vec::new(),
            clock: Instant::now(),
            delayed: Sorted::default(),
            deadlines: Sorted::default(),
            workers: HashMap::new(),
            with_credits: BTreeSet::new(),
            rotation: BTreeSet::new(),
            turns: 0,
            affinity,
            idempotency: HashMap::new(),
            finished: VecDeque::new(),
            dead: BTreeMap::new(),
            live_bytes: 0,
            finished_bytes: 0,
            finished_count: 0,
            dead_bytes: 0,
            seq: 0,
            queued_by_priority: [0; 4],
            running: 0,
            counters: Counters::default(),
            rng: fastrand::Rng::new(),
            metrics,
            epoch: 0,
            nonces: rand::SeedableRng::from_entropy(),
            persist: None,
            degraded: false,
            out: Outbox::default(),
        }
    }

    /// Sets the epoch that every lease granted from now on carries (see [`LeaseToken`]).
    /// A queue without a store keeps epoch 0: its tasks die with it, so no report can
    /// outlive them.
    pub(crate) fn set_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
    }

    /// Tasks waiting to run (queued now or pending a delay).
    pub(crate) fn waiting(&self) -> usize {
        self.queued_by_priority.iter().sum::<usize>() + self.delayed.len()
    }

    /// Tasks not finished yet.
    pub(crate) fn live(&self) -> usize {
        self.waiting() + self.running
    }

    /// Takes a task out of memory; its class is retired once no task of it is left.
    fn remove_entry(&mut self, id: TaskId) -> Option<Entry> {
        let e = self.tasks.remove(&id)?;
        let bytes = e.bytes();
        match (e.status().is_finished(), e.run().dead_seq.is_some()) {
            (false, _) => self.live_bytes -= e.payload.len() as u64,
            (true, true) => self.dead_bytes -= bytes,
            (true, false) => {
                self.finished_bytes -= bytes;
                self.finished_count -= 1;
            }
        }
        let class = &mut self.classes[e.class()];
        class.tasks -= 1;
        if class.tasks == 0 {
            debug_assert_eq!(class.live, 0, "a class with queued tasks has tasks");
            self.class_index.remove(&class.key);
            class.lanes = Default::default();
            class.arrivals = Default::default();
            class.routable = true;
            self.free_classes.push(e.class());
        }
        if let Some(key) = &e.options().idempotency_key {
            if self.idempotency.get(key) == Some(&id) {
                self.idempotency.remove(key);
            }
        }
        self.affinity.forget(id);
        Some(e)
    }

    pub(super) fn make_ready(&mut self, id: TaskId) {
        let at = self.tasks.slot_of(&id);
        self.make_ready_at(id, at);
    }

    /// [`make_ready`](Self::make_ready) for the task in `at`.
    fn make_ready_at(&mut self, id: TaskId, at: Slot) {
        self.seq += 1;
        let seq = self.seq;
        let e = self.tasks.set_status_at(at, id, TaskStatus::Queued);
        e.set_seq(seq);
        let priority = e.priority;
        let class = &mut self.classes[e.class()];
        let ready = Ready { priority, seq, id };
        class.lanes[priority.index()].push_back((seq, id));
        if self.config.priority_aging.is_some() {
            class.arrivals.push_back((self.clock, ready));
        }
        class.live += 1;
        self.queued_by_priority[priority.index()] += 1;
        self.save(id);
    }

    pub(super) fn make_pending(&mut self, id: TaskId, at: Instant) {
        let e = self.tasks.set_status(id, TaskStatus::Pending);
        e.set_ready_at(at);
        self.delayed.insert((at, id));
        self.save(id);
    }

    /// Takes a queued task out of the ready counts (its heap entry goes stale).
    pub(super) fn unready(&mut self, id: TaskId) {
        self.affinity.unpark(id);
        self.unready_at(self.tasks.slot_of(&id));
    }

    /// [`unready`](Self::unready) for the task in `at`.
    fn unready_at(&mut self, at: Slot) {
        let e = self.tasks.at(at);
        self.queued_by_priority[e.priority.index()] -= 1;
        self.classes[e.class()].live -= 1;
    }

    // ----- cancel, requeue, time ----------------------------------------------------------

    /// Cancels a task that has not finished. A running one is told to stop.
    pub(crate) fn cancel(&mut self, id: TaskId) -> Result<TaskStatus, QueueError> {
        let e = self.tasks.get(&id).ok_or(QueueError::NotFound(id))?;
        let was = e.status();
        match was {
            TaskStatus::Queued => self.unready(id),
            TaskStatus::Pending => {
                let at = e.ready_at().expect("pending tasks have a ready time");
                self.delayed.remove(&(at, id));
            }
            TaskStatus::Running => {
                let worker = self.release(id, "cancelled", None).expect("running");
                if let Some(s) = self.workers.get(&worker) {
                    self.out.cancels.push((s.sink.clone(), id));
                }
            }
            status => return Err(QueueError::AlreadyFinished { id, status }),
        }
        self.counters.cancelled += 1;
        self.out.event(|| EventKind::TaskCancelled { id });
        self.finish(id, TaskStatus::Cancelled, TaskOutcome::Cancelled);
        Ok(was)
    }

    /// Puts a dead-lettered task back in the queue with a fresh retry budget.
    pub(crate) fn requeue(&mut self, id: TaskId) -> Result<(), QueueError> {
        let e = self.tasks.get_mut(&id).ok_or(QueueError::NotFound(id))?;
        let Some(seq) = e.run.as_mut().and_then(|r| r.dead_seq.take()) else {
            return Err(QueueError::NotDeadLettered {
                id,
                status: e.status(),
            });
        };
        let bytes = e.bytes();
        let run = e.run_mut();
        run.retries_used = 0;
        run.lease_losses = 0;
        run.finished_at = None;
        self.dead_bytes -= bytes;
        self.live_bytes += e.payload.len() as u64;
        self.dead.remove(&seq);
        match e.status() {
            TaskStatus::Failed => self.counters.failed -= 1,
            TaskStatus::Timeout => self.counters.timed_out -= 1,
            _ => {}
        }
        self.out.event(|| EventKind::TaskRequeued { id });
        self.make_ready(id);
        Ok(())
    }

    /// Moves pending tasks whose time has come into the queue and takes back leases past
    /// their deadline. Returns when it next needs to run.
    pub(crate) fn tick(&mut self, now: Instant) -> Option<Instant> {
        self.clock = self.clock.max(now);
        while let Some(&(at, id)) = self.delayed.first() {
            if at > now {
                break;
            }
            self.delayed.pop_first();
            self.make_ready(id);
        }
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            let worker = self.tasks[&id]
                .run()
                .lease
                .as_ref()
                .map(|l| l.worker.clone())
                .expect("a deadline belongs to a lease");
            tracing::warn!(task_id = %id, worker = %worker, "lease expired without a report");
            if let Some(s) = self.workers.get(&worker) {
                self.out.cancels.push((s.sink.clone(), id));
            }
            self.lose_lease(id, &worker, "lease expired without a report");
        }
        self.release_parked(now);
        self.next_wake()
    }

    /// The earliest time something is due (a pending task, a lease deadline, or the end of
    /// a task's wait for its bound worker).
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        let a = self.delayed.first().map(|x| x.0);
        let b = self.deadlines.first().map(|x| x.0);
        let c = self.affinity.next_release();
        a.into_iter().chain(b).chain(c).min()
    }
}

mod affinity;
mod dispatch;
mod index;
mod persist;
mod reads;
mod results;
mod shed;
mod submit;
mod table;
mod workers;

pub(crate) use shed::Admission;
use table::{Entry, Slot, Tasks};

#[cfg(test)]
mod tests;
