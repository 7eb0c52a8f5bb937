//! The queue's data and rules, with no actor around them: what is queued, who holds which
//! lease, what retries when. The [`TaskQueue`](super::TaskQueue) actor owns one `QueueCore`
//! and turns its [`Outbox`] into messages. Time comes in as an argument, so the rules are
//! tested (and property-tested) without a runtime.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::ready::{Class, ClassKey, Ready};
use super::sink::{Capabilities, LeaseSink};
use super::{QueueConfig, QueueError, QueueStats};
use crate::events::EventKind;
use crate::handler::TaskError;
use crate::metrics::TaskMetrics;
use crate::task::{
    Attempt, IdMap, IdSet, Lease, Payload, TaskId, TaskOptions, TaskOutcome, TaskSnapshot,
    TaskSpec, TaskStatus,
};

/// How one attempt ended, as a worker reports it.
#[derive(Clone, Debug)]
pub(crate) enum AttemptOutcome {
    Completed(Payload),
    Failed(TaskError),
    TimedOut(Duration),
    /// The attempt stopped because its cancellation token fired.
    Cancelled,
}

/// One finished attempt, reported by a worker.
#[derive(Clone, Debug)]
pub(crate) struct AttemptReport {
    pub(crate) task_id: TaskId,
    pub(crate) attempt: u32,
    pub(crate) outcome: AttemptOutcome,
}

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
}

impl Outbox {
    fn event(&mut self, make: impl FnOnce() -> EventKind) {
        if self.events_on {
            self.events.push(make());
        }
    }
}

/// One task. Kept small, because a million of them may wait: what only a task that has run
/// needs lives behind `run`, allocated at its first lease.
struct Entry {
    task_type: Arc<str>,
    payload: Payload,
    options: Box<TaskOptions>,
    status: TaskStatus,
    class: usize,
    retries_used: u32,
    lease_losses: u32,
    /// Sequence number of the task's current place in its class heap; older heap entries
    /// for the same task are stale and skipped.
    seq: u64,
    /// When a pending task becomes runnable.
    ready_at: Option<Instant>,
    created_at: SystemTime,
    run: Option<Box<Run>>,
}

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
}

static NOT_RUN: Run = Run {
    attempts: Vec::new(),
    lease: None,
    result: None,
    error: None,
    finished_at: None,
    dead_seq: None,
    retention_tag: 0,
};

impl Entry {
    fn run(&self) -> &Run {
        self.run.as_deref().unwrap_or(&NOT_RUN)
    }

    fn run_mut(&mut self) -> &mut Run {
        self.run.get_or_insert_with(|| {
            Box::new(Run {
                attempts: Vec::with_capacity(1),
                lease: None,
                result: None,
                error: None,
                finished_at: None,
                dead_seq: None,
                retention_tag: 0,
            })
        })
    }
}

struct LeaseHold {
    worker: Arc<str>,
    attempt: u32,
    deadline: Option<Instant>,
}

struct Session {
    incarnation: u64,
    caps: Capabilities,
    credits: u32,
    sink: Arc<dyn LeaseSink>,
    leases: IdSet,
}

/// Leases for one worker, from one dispatch.
pub(crate) struct Delivery {
    pub(crate) worker: Arc<str>,
    pub(crate) sink: Arc<dyn LeaseSink>,
    pub(crate) leases: Vec<Lease>,
}

/// A submitted task's id, and whether an idempotency key matched an existing task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Submitted {
    /// The task's id (the existing one when `existing`).
    pub id: TaskId,
    /// True when the idempotency key was already known and no new task was made.
    pub existing: bool,
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
}

pub(crate) struct QueueCore {
    config: QueueConfig,
    tasks: IdMap<Entry>,
    classes: Vec<Class>,
    class_index: HashMap<ClassKey, usize>,
    /// Pending tasks by the time they become runnable.
    delayed: BTreeSet<(Instant, TaskId)>,
    /// Running tasks by lease deadline.
    deadlines: BTreeSet<(Instant, TaskId)>,
    workers: HashMap<Arc<str>, Session>,
    idempotency: HashMap<String, TaskId>,
    /// Finished tasks, oldest first, for retention.
    /// Each entry carries the task's retention tag when it was pushed; an entry whose tag
    /// is no longer the task's own is stale (the task was re-queued or re-listed since).
    finished: VecDeque<(TaskId, u32)>,
    dead: BTreeMap<u64, TaskId>,
    seq: u64,
    queued_by_priority: [usize; 4],
    running: usize,
    counters: Counters,
    rng: fastrand::Rng,
    metrics: Arc<TaskMetrics>,
    pub(crate) out: Outbox,
}

impl QueueCore {
    #[cfg(test)]
    pub(crate) fn new(config: QueueConfig) -> Self {
        Self::with_metrics(config, Arc::default())
    }

    pub(crate) fn with_metrics(config: QueueConfig, metrics: Arc<TaskMetrics>) -> Self {
        let capacity = config.max_finished_tasks.min(1 << 17);
        Self {
            config,
            // Sized for the finished tasks it keeps, so the table does not stall the queue
            // while it doubles its way up (memory is only touched as entries arrive).
            tasks: IdMap::with_capacity_and_hasher(capacity, Default::default()),
            classes: Vec::new(),
            class_index: HashMap::new(),
            delayed: BTreeSet::new(),
            deadlines: BTreeSet::new(),
            workers: HashMap::new(),
            idempotency: HashMap::new(),
            finished: VecDeque::new(),
            dead: BTreeMap::new(),
            seq: 0,
            queued_by_priority: [0; 4],
            running: 0,
            counters: Counters::default(),
            rng: fastrand::Rng::new(),
            metrics,
            out: Outbox::default(),
        }
    }

    /// Tasks waiting to run (queued now or pending a delay).
    pub(crate) fn waiting(&self) -> usize {
        self.queued_by_priority.iter().sum::<usize>() + self.delayed.len()
    }

    /// Tasks not finished yet.
    pub(crate) fn live(&self) -> usize {
        self.waiting() + self.running
    }

    // ----- submit -------------------------------------------------------------------------

    /// Accepts every spec, or none: an invalid spec or a full queue refuses the whole batch.
    pub(crate) fn submit(
        &mut self,
        specs: Vec<TaskSpec>,
        now: Instant,
    ) -> Result<Vec<Submitted>, QueueError> {
        for (index, spec) in specs.iter().enumerate() {
            spec.validate().map_err(|e| QueueError::InvalidTask {
                index,
                reason: e.to_string(),
            })?;
        }
        // New tasks this batch makes: a key already known, or repeated within the batch,
        // makes none.
        let mut keys = HashSet::new();
        let fresh = specs
            .iter()
            .filter(|s| match &s.options.idempotency_key {
                Some(k) => !self.idempotency.contains_key(k) && keys.insert(k.as_str()),
                None => true,
            })
            .count();
        if self.waiting() + fresh > self.config.max_queue_size {
            return Err(QueueError::Full {
                capacity: self.config.max_queue_size,
                waiting: self.waiting(),
                refused: specs.len(),
            });
        }
        let created_at = SystemTime::now();
        let mut out = Vec::with_capacity(specs.len());
        for spec in specs {
            if let Some(key) = &spec.options.idempotency_key {
                if let Some(&id) = self.idempotency.get(key) {
                    out.push(Submitted { id, existing: true });
                    continue;
                }
            }
            let id = TaskId::new();
            if let Some(key) = &spec.options.idempotency_key {
                self.idempotency.insert(key.clone(), id);
            }
            let class = self.class_for(&spec.task_type, &spec.options.labels);
            let delay = spec.options.delay.filter(|d| !d.is_zero());
            self.out.event(|| EventKind::TaskSubmitted {
                id,
                task_type: spec.task_type.clone(),
                priority: spec.options.priority,
            });
            self.tasks.insert(
                id,
                Entry {
                    task_type: spec.task_type,
                    payload: spec.payload,
                    options: Box::new(spec.options),
                    status: TaskStatus::Pending,
                    class,
                    seq: 0,
                    ready_at: None,
                    retries_used: 0,
                    lease_losses: 0,
                    created_at,
                    run: None,
                },
            );
            match delay {
                Some(d) => self.make_pending(id, now + d),
                None => self.make_ready(id),
            }
            self.counters.submitted += 1;
            out.push(Submitted {
                id,
                existing: false,
            });
        }
        Ok(out)
    }

    fn class_for(&mut self, task_type: &Arc<str>, labels: &[String]) -> usize {
        let key = ClassKey::new(task_type.clone(), labels);
        if let Some(&i) = self.class_index.get(&key) {
            return i;
        }
        let mut class = Class::new(key.clone());
        class.routable = self.workers.values().any(|w| class.accepts(&w.caps));
        self.classes.push(class);
        self.class_index.insert(key, self.classes.len() - 1);
        self.classes.len() - 1
    }

    fn make_ready(&mut self, id: TaskId) {
        self.seq += 1;
        let seq = self.seq;
        let e = self.tasks.get_mut(&id).expect("task exists");
        e.status = TaskStatus::Queued;
        e.seq = seq;
        e.ready_at = None;
        let priority = e.options.priority;
        let class = &mut self.classes[e.class];
        class.heap.push(Ready { priority, seq, id });
        class.live += 1;
        self.queued_by_priority[priority.index()] += 1;
    }

    fn make_pending(&mut self, id: TaskId, at: Instant) {
        let e = self.tasks.get_mut(&id).expect("task exists");
        e.status = TaskStatus::Pending;
        e.ready_at = Some(at);
        self.delayed.insert((at, id));
    }

    /// Takes a queued task out of the ready counts (its heap entry goes stale).
    fn unready(&mut self, id: TaskId) {
        let e = &self.tasks[&id];
        self.queued_by_priority[e.options.priority.index()] -= 1;
        self.classes[e.class].live -= 1;
    }

    // ----- workers ------------------------------------------------------------------------

    /// A worker announces itself (or a new incarnation of itself) with what it can run and
    /// how many tasks it can take now.
    pub(crate) fn attach(
        &mut self,
        worker: Arc<str>,
        incarnation: u64,
        caps: Capabilities,
        credits: u32,
        sink: Arc<dyn LeaseSink>,
    ) {
        if let Some(old) = self.workers.get(&worker) {
            if old.incarnation != incarnation {
                let old_incarnation = old.incarnation;
                self.detach(&worker, old_incarnation);
            }
        }
        match self.workers.get_mut(&worker) {
            // The same incarnation announcing again (its handlers changed): leases already
            // on their way to it are not in its own count of free slots, so the queue keeps
            // its credit count rather than take the worker's.
            Some(s) => {
                s.caps = caps;
                s.sink = sink;
            }
            None => {
                self.workers.insert(
                    worker,
                    Session {
                        incarnation,
                        caps,
                        credits,
                        sink,
                        leases: IdSet::default(),
                    },
                );
            }
        }
        self.refresh_routable();
    }

    /// A worker is gone: every lease it held goes back to the queue at once.
    pub(crate) fn detach(&mut self, worker: &str, incarnation: u64) {
        let Some(s) = self.workers.get(worker) else {
            return;
        };
        if s.incarnation != incarnation {
            return;
        }
        let session = self.workers.remove(worker).expect("session exists");
        let worker: Arc<str> = Arc::from(worker);
        // Back in the order they were queued in, not the set's.
        let mut ids: Vec<TaskId> = session.leases.into_iter().collect();
        ids.sort_unstable_by_key(|id| self.tasks[id].seq);
        for id in ids {
            self.lose_lease(id, &worker, "worker stopped");
        }
        self.refresh_routable();
    }

    /// Gives a worker more credits (free slots).
    pub(crate) fn credit(&mut self, worker: &str, credits: u32) {
        if let Some(s) = self.workers.get_mut(worker) {
            s.credits = s.credits.saturating_add(credits);
        }
    }

    /// Sets a worker's credits to exactly `credits` (0 while it drains).
    pub(crate) fn set_credits(&mut self, worker: &str, credits: u32) {
        if let Some(s) = self.workers.get_mut(worker) {
            s.credits = credits;
        }
    }

    fn refresh_routable(&mut self) {
        for class in &mut self.classes {
            class.routable = self.workers.values().any(|w| class.accepts(&w.caps));
        }
    }

    /// Leases queued tasks to workers with credits, best first. Workers with the most free
    /// credits are served first, which balances load without asking anyone.
    pub(crate) fn dispatch(&mut self, now: Instant) -> Vec<Delivery> {
        if self.queued_by_priority.iter().all(|&n| n == 0) {
            return Vec::new();
        }
        let mut order: Vec<(u32, Arc<str>)> = self
            .workers
            .iter()
            .filter(|(_, s)| s.credits > 0)
            .map(|(id, s)| (s.credits, id.clone()))
            .collect();
        order.sort_unstable_by_key(|w| std::cmp::Reverse(w.0));
        let mut deliveries = Vec::new();
        for (_, worker) in order {
            let matching: Vec<usize> = {
                let caps = &self.workers[&worker].caps;
                (0..self.classes.len())
                    .filter(|&c| self.classes[c].live > 0 && self.classes[c].accepts(caps))
                    .collect()
            };
            if matching.is_empty() {
                continue;
            }
            let mut leases = Vec::new();
            while self.workers[&worker].credits > 0 {
                let Some(id) = self.pop_best(&matching) else {
                    break;
                };
                leases.push(self.lease_to(id, &worker, now));
            }
            if !leases.is_empty() {
                deliveries.push(Delivery {
                    sink: self.workers[&worker].sink.clone(),
                    worker,
                    leases,
                });
            }
            if self.queued_by_priority.iter().all(|&n| n == 0) {
                break;
            }
        }
        deliveries
    }

    /// Pops the best live task among `classes`: highest priority, then oldest.
    fn pop_best(&mut self, classes: &[usize]) -> Option<TaskId> {
        {
            let mut best: Option<(usize, Ready)> = None;
            for &c in classes {
                let heap = &mut self.classes[c].heap;
                // Drop stale heads (cancelled, or re-queued under a newer seq).
                while let Some(top) = heap.peek() {
                    let live = self
                        .tasks
                        .get(&top.id)
                        .is_some_and(|e| e.status == TaskStatus::Queued && e.seq == top.seq);
                    if live {
                        break;
                    }
                    heap.pop();
                }
                if let Some(top) = heap.peek() {
                    if best.as_ref().is_none_or(|(_, b)| top > b) {
                        best = Some((c, *top));
                    }
                }
            }
            let (c, top) = best?;
            self.classes[c].heap.pop();
            Some(top.id)
        }
    }

    fn lease_to(&mut self, id: TaskId, worker: &Arc<str>, now: Instant) -> Lease {
        self.unready(id);
        let grace = self.config.lease_grace;
        let e = self.tasks.get_mut(&id).expect("task exists");
        let attempt = e.run().attempts.len() as u32 + 1;
        let deadline = e.options.timeout.map(|t| now + t + grace);
        e.status = TaskStatus::Running;
        let run = e.run_mut();
        run.lease = Some(LeaseHold {
            worker: worker.clone(),
            attempt,
            deadline,
        });
        run.attempts.push(Attempt {
            number: attempt,
            worker: worker.clone(),
            started_at: SystemTime::now(),
            finished_at: None,
            outcome: None,
            error: None,
        });
        if let Some(d) = deadline {
            self.deadlines.insert((d, id));
        }
        self.running += 1;
        let session = self.workers.get_mut(worker).expect("worker exists");
        session.credits -= 1;
        session.leases.insert(id);
        Lease {
            task_id: id,
            attempt,
            task_type: e.task_type.clone(),
            payload: e.payload.clone(),
            timeout: e.options.timeout,
        }
    }

    /// Ends a running task's lease, closing its attempt record.
    fn release(&mut self, id: TaskId, outcome: &str, error: Option<String>) -> Option<Arc<str>> {
        let e = self.tasks.get_mut(&id)?;
        let run = e.run.as_deref_mut()?;
        let hold = run.lease.take()?;
        if let Some(a) = run.attempts.last_mut() {
            a.finished_at = Some(SystemTime::now());
            a.outcome = Some(outcome.to_string());
            a.error = error;
        }
        if let Some(d) = hold.deadline {
            self.deadlines.remove(&(d, id));
        }
        if let Some(s) = self.workers.get_mut(&hold.worker) {
            s.leases.remove(&id);
        }
        self.running -= 1;
        Some(hold.worker)
    }

    // ----- results ------------------------------------------------------------------------

    /// Records what a worker reports. Reports for leases the worker no longer holds are
    /// stale (the task was cancelled, or re-leased after a timeout); a stale success is
    /// still kept if the task has not finished since, because the work was done.
    pub(crate) fn report(&mut self, worker: &str, reports: Vec<AttemptReport>, now: Instant) {
        for r in reports {
            let holds = self.tasks.get(&r.task_id).is_some_and(|e| {
                e.run()
                    .lease
                    .as_ref()
                    .is_some_and(|l| &*l.worker == worker && l.attempt == r.attempt)
            });
            if !holds {
                self.stale_report(r);
                continue;
            }
            let id = r.task_id;
            match r.outcome {
                AttemptOutcome::Completed(result) => {
                    self.release(id, "completed", None);
                    self.complete(id, result);
                }
                AttemptOutcome::Failed(err) => {
                    self.release(id, "failed", Some(err.message().to_string()));
                    self.failed_attempt(id, err.message().to_string(), err.is_retryable(), now);
                }
                AttemptOutcome::TimedOut(after) => {
                    let msg = format!("timed out after {after:?}");
                    self.release(id, "timeout", Some(msg.clone()));
                    self.timed_out_attempt(id, msg, now);
                }
                AttemptOutcome::Cancelled => {
                    // The worker stopped the attempt on its own (it was told to stop now):
                    // the task was not cancelled, so it runs again elsewhere.
                    let w: Arc<str> = Arc::from(worker);
                    self.lose_lease(id, &w, "worker stopped the attempt");
                }
            }
        }
    }

    fn stale_report(&mut self, r: AttemptReport) {
        let AttemptOutcome::Completed(result) = r.outcome else {
            return;
        };
        let Some(e) = self.tasks.get(&r.task_id) else {
            return;
        };
        match e.status {
            TaskStatus::Queued => {
                self.unready(r.task_id);
                self.complete(r.task_id, result);
            }
            TaskStatus::Pending => {
                let at = e.ready_at.expect("pending tasks have a ready time");
                self.delayed.remove(&(at, r.task_id));
                self.complete(r.task_id, result);
            }
            TaskStatus::Running => {
                if let Some(holder) = self.release(r.task_id, "superseded", None) {
                    if let Some(s) = self.workers.get(&holder) {
                        self.out.cancels.push((s.sink.clone(), r.task_id));
                    }
                }
                self.complete(r.task_id, result);
            }
            _ => {}
        }
    }

    fn complete(&mut self, id: TaskId, result: Payload) {
        let e = self.tasks.get_mut(&id).expect("task exists");
        if let Ok(d) = e.created_at.elapsed() {
            self.metrics.latency.observe(d);
        }
        let run = e.run_mut();
        let attempt = run.attempts.len() as u32;
        if let Some(d) = run
            .attempts
            .last()
            .and_then(|a| a.finished_at?.duration_since(a.started_at).ok())
        {
            self.metrics.run_time.observe(d);
        }
        run.result = Some(result.clone());
        self.counters.completed += 1;
        self.out.event(|| EventKind::TaskCompleted { id, attempt });
        self.finish(id, TaskStatus::Completed, TaskOutcome::Completed { result });
    }

    fn failed_attempt(&mut self, id: TaskId, error: String, retryable: bool, now: Instant) {
        let e = self.tasks.get_mut(&id).expect("task exists");
        e.run_mut().error = Some(error.clone());
        let budget = e.options.retries.unwrap_or(self.config.default_retries);
        if retryable && e.retries_used < budget {
            self.retry(id, error, now);
        } else {
            self.counters.failed += 1;
            self.dead_letter(id, TaskStatus::Failed, error.clone());
            self.finish(id, TaskStatus::Failed, TaskOutcome::Failed { error });
        }
    }

    fn timed_out_attempt(&mut self, id: TaskId, error: String, now: Instant) {
        let e = self.tasks.get_mut(&id).expect("task exists");
        e.run_mut().error = Some(error.clone());
        let budget = e.options.retries.unwrap_or(self.config.default_retries);
        if e.retries_used < budget {
            self.retry(id, error, now);
        } else {
            self.counters.timed_out += 1;
            self.dead_letter(id, TaskStatus::Timeout, error);
            self.finish(id, TaskStatus::Timeout, TaskOutcome::Timeout);
        }
    }

    /// Exponential backoff with jitter: `base * 2^n`, capped, then scaled by 0.5..=1.0.
    fn backoff(&mut self, retries_used: u32) -> Duration {
        let exp = self
            .config
            .retry_base_delay
            .saturating_mul(1u32 << retries_used.min(20))
            .min(self.config.retry_max_delay);
        exp.mul_f64(0.5 + self.rng.f64() * 0.5)
    }

    fn retry(&mut self, id: TaskId, error: String, now: Instant) {
        let used = self.tasks[&id].retries_used;
        let delay = self.backoff(used);
        let e = self.tasks.get_mut(&id).expect("task exists");
        e.retries_used += 1;
        let attempt = e.run().attempts.len() as u32;
        self.counters.retried += 1;
        self.out.event(|| EventKind::TaskRetried {
            id,
            attempt,
            error,
            delay_ms: delay.as_millis() as u64,
        });
        self.make_pending(id, now + delay);
    }

    fn lose_lease(&mut self, id: TaskId, worker: &Arc<str>, why: &str) {
        if self.release(id, "lost", Some(why.to_string())).is_none() {
            return;
        }
        self.counters.lease_lost += 1;
        self.out.event(|| EventKind::LeaseLost {
            id,
            worker: worker.clone(),
        });
        let e = self.tasks.get_mut(&id).expect("task exists");
        e.lease_losses += 1;
        if e.lease_losses > self.config.max_lease_losses {
            let error = format!(
                "lost its worker {} times (last: {why}); dead-lettered to protect the workers",
                e.lease_losses
            );
            e.run_mut().error = Some(error.clone());
            self.counters.failed += 1;
            self.dead_letter(id, TaskStatus::Failed, error.clone());
            self.finish(id, TaskStatus::Failed, TaskOutcome::Failed { error });
        } else {
            self.make_ready(id);
        }
    }

    fn dead_letter(&mut self, id: TaskId, _status: TaskStatus, error: String) {
        self.seq += 1;
        let seq = self.seq;
        self.tasks
            .get_mut(&id)
            .expect("task exists")
            .run_mut()
            .dead_seq = Some(seq);
        self.dead.insert(seq, id);
        self.out.event(|| EventKind::TaskDeadLettered { id, error });
        while self.dead.len() > self.config.max_dead_letters {
            let (_, oldest) = self.dead.pop_first().expect("not empty");
            tracing::warn!(task_id = %oldest, "dead-letter list full, dropping the oldest");
            if self.tasks.get_mut(&oldest).is_some() {
                self.tasks
                    .get_mut(&oldest)
                    .expect("checked")
                    .run_mut()
                    .dead_seq = None;
                // Retention may have passed it by while it was a dead letter: it is an
                // ordinary finished task now, so it goes back under retention.
                self.retain(oldest);
            }
        }
    }

    fn finish(&mut self, id: TaskId, status: TaskStatus, outcome: TaskOutcome) {
        let e = self.tasks.get_mut(&id).expect("task exists");
        e.status = status;
        e.run_mut().finished_at = Some(SystemTime::now());
        self.out.finished.push((id, outcome));
        self.retain(id);
    }

    /// Puts a finished task under retention, pruning the oldest past `max_finished_tasks`.
    fn retain(&mut self, id: TaskId) {
        let run = self.tasks.get_mut(&id).expect("task exists").run_mut();
        run.retention_tag += 1;
        self.finished.push_back((id, run.retention_tag));
        while self.finished.len() > self.config.max_finished_tasks {
            let (oldest, tag) = self.finished.pop_front().expect("not empty");
            let evict = self.tasks.get(&oldest).is_some_and(|e| {
                e.status.is_finished() && e.run().dead_seq.is_none() && e.run().retention_tag == tag
            });
            if evict {
                let e = self.tasks.remove(&oldest).expect("checked");
                if let Some(key) = e.options.idempotency_key {
                    self.idempotency.remove(&key);
                }
            }
        }
    }

    // ----- cancel, requeue, time ----------------------------------------------------------

    /// Cancels a task that has not finished. A running one is told to stop.
    pub(crate) fn cancel(&mut self, id: TaskId) -> Result<TaskStatus, QueueError> {
        let e = self.tasks.get(&id).ok_or(QueueError::NotFound(id))?;
        let was = e.status;
        match was {
            TaskStatus::Queued => self.unready(id),
            TaskStatus::Pending => {
                let at = e.ready_at.expect("pending tasks have a ready time");
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
                status: e.status,
            });
        };
        e.retries_used = 0;
        e.lease_losses = 0;
        e.run_mut().finished_at = None;
        self.dead.remove(&seq);
        match e.status {
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
        self.next_wake()
    }

    /// The earliest time something is due (a pending task or a lease deadline).
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        let a = self.delayed.first().map(|x| x.0);
        let b = self.deadlines.first().map(|x| x.0);
        a.into_iter().chain(b).min()
    }

    // ----- reads --------------------------------------------------------------------------

    pub(crate) fn outcome(&self, id: TaskId) -> Option<Option<TaskOutcome>> {
        let e = self.tasks.get(&id)?;
        Some(match e.status {
            TaskStatus::Completed => Some(TaskOutcome::Completed {
                result: e.run().result.clone().unwrap_or_else(Payload::null),
            }),
            TaskStatus::Failed => Some(TaskOutcome::Failed {
                error: e.run().error.clone().unwrap_or_default(),
            }),
            TaskStatus::Cancelled => Some(TaskOutcome::Cancelled),
            TaskStatus::Timeout => Some(TaskOutcome::Timeout),
            _ => None,
        })
    }

    pub(crate) fn snapshot(&self, id: TaskId) -> Option<TaskSnapshot> {
        let e = self.tasks.get(&id)?;
        Some(TaskSnapshot {
            id,
            task_type: e.task_type.to_string(),
            status: e.status,
            options: (*e.options).clone(),
            payload: e.payload.clone(),
            result: e.run().result.clone(),
            error: e.run().error.clone(),
            attempts: e.run().attempts.clone(),
            created_at: e.created_at,
            finished_at: e.run().finished_at,
            unroutable: e.status == TaskStatus::Queued && !self.classes[e.class].routable,
        })
    }

    /// Tasks with `status` (all when `None`), oldest first, at most `limit`, starting after
    /// `after` (a cursor: the last id of the previous page).
    pub(crate) fn list(&self, q: &super::TaskQuery) -> Vec<TaskSnapshot> {
        let (status, after, limit) = (q.status, q.after, q.limit);
        let mut ids: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(id, e)| {
                status.is_none_or(|s| e.status == s)
                    && after.is_none_or(|a| **id > a)
                    && q.task_type.as_deref().is_none_or(|t| *e.task_type == *t)
            })
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids.truncate(limit);
        ids.into_iter().filter_map(|id| self.snapshot(id)).collect()
    }

    pub(crate) fn dead_letters(&self, limit: usize) -> Vec<TaskSnapshot> {
        self.dead
            .values()
            .take(limit)
            .filter_map(|id| self.snapshot(*id))
            .collect()
    }

    pub(crate) fn stats(&self) -> QueueStats {
        let queued: usize = self.queued_by_priority.iter().sum();
        QueueStats {
            queue_size: self.waiting(),
            queued,
            pending: self.delayed.len(),
            queued_by_priority: super::PriorityCounts::from_array(self.queued_by_priority),
            running: self.running,
            submitted: self.counters.submitted,
            completed: self.counters.completed,
            failed: self.counters.failed,
            cancelled: self.counters.cancelled,
            timed_out: self.counters.timed_out,
            retried: self.counters.retried,
            leases_lost: self.counters.lease_lost,
            dead_lettered: self.dead.len(),
            unroutable: self
                .classes
                .iter()
                .filter(|c| !c.routable)
                .map(|c| c.live)
                .sum(),
            workers: self.workers.len(),
            free_credits: self.workers.values().map(|w| w.credits as u64).sum(),
        }
    }
}

impl Class {
    fn accepts(&self, caps: &Capabilities) -> bool {
        caps.serves(&self.key.task_type) && caps.has_labels(&self.key.labels)
    }
}

#[cfg(test)]
mod tests;
