//! The queue's side of the store: the rows each change produces, reloading unfinished tasks
//! after a restart, and taking back tasks the store could not commit.
//!
//! Nothing here runs unless the queue has a store (`persist` is off by default), so the
//! in-memory queue pays nothing for it.

use super::*;
use crate::store::{AttemptRow, NewTask, Recovered, StoreOp, TaskState, WorkerRow};

/// Unix ms for a queue `Instant` (pending tasks' ready times).
fn wall_ms(at: Instant) -> i64 {
    let now = Instant::now();
    let wall = if at >= now {
        SystemTime::now() + (at - now)
    } else {
        SystemTime::now() - (now - at)
    };
    crate::store::ms(wall)
}

/// A queue `Instant` for a stored wall-clock time (past times are now).
fn instant_of(at: SystemTime, now: Instant) -> Instant {
    now + at.duration_since(SystemTime::now()).unwrap_or_default()
}

impl QueueCore {
    /// Turns on writing changes to `out.writes`, naming attempts after `node`.
    pub(crate) fn persist_as(&mut self, node: Arc<str>) {
        self.persist = Some(node);
    }

    /// Records the task's current state for the store.
    pub(super) fn save(&mut self, id: TaskId) {
        if self.persist.is_none() {
            return;
        }
        let Some(e) = self.tasks.get(&id) else {
            return;
        };
        let run = e.run();
        let state = TaskState {
            id,
            status: e.status(),
            retries_used: i64::from(e.run().retries_used),
            lease_losses: i64::from(e.run().lease_losses),
            ready_at_ms: e.ready_at().map(wall_ms),
            finished_at_ms: run.finished_at.map(crate::store::ms),
            result: run.result.clone(),
            error: run.error.clone(),
            dead_seq: run.dead_seq.map(|s| s as i64),
        };
        self.out.writes.push(StoreOp::State(state));
    }

    /// Records the task's latest attempt for the store.
    pub(super) fn save_attempt(&mut self, id: TaskId) {
        let Some(node) = &self.persist else {
            return;
        };
        let Some(a) = self.tasks.get(&id).and_then(|e| e.run().attempts.last()) else {
            return;
        };
        let row = AttemptRow::new(id, node.clone(), a);
        self.out.writes.push(StoreOp::Attempt(row));
    }

    /// Records a new task for the store (its state follows from `save`).
    pub(super) fn save_new(&mut self, id: TaskId) {
        if self.persist.is_none() {
            return;
        }
        let e = &self.tasks[&id];
        let row = NewTask::new(
            id,
            self.classes[e.class()].key.task_type.clone(),
            e.payload.clone(),
            &e.full_options(),
            e.created_at(id),
        );
        self.out.writes.push(StoreOp::Insert(row));
    }

    /// Records a worker joining (`active`) or leaving (`deregistered`).
    pub(super) fn save_worker(&mut self, worker: &Arc<str>, caps: &Capabilities, active: bool) {
        let Some(node) = &self.persist else {
            return;
        };
        let mut types: Vec<&str> = caps.task_types.iter().map(|t| &**t).collect();
        types.sort_unstable();
        let row = WorkerRow {
            id: worker.clone(),
            node: node.clone(),
            labels: serde_json::to_string(&caps.labels).expect("strings serialize"),
            task_types: serde_json::to_string(&types).expect("strings serialize"),
            status: if active { "active" } else { "deregistered" },
            at_ms: crate::store::ms(SystemTime::now()),
        };
        self.out.writes.push(StoreOp::Worker(row));
    }

    /// Takes back tasks reloaded from the store: dead letters return to the dead-letter
    /// list; unfinished tasks return to the queue in the order they were made. A task that
    /// was running when the previous process ended keeps its attempts; the interrupted one
    /// is closed as `lost` and counts as a lost lease, so a task that brings the whole
    /// process down is dead-lettered after `max_lease_losses` restarts instead of looping.
    pub(crate) fn restore(&mut self, tasks: Vec<Recovered>, now: Instant) -> usize {
        self.clock = self.clock.max(now);
        // Reloaded rows are already stored as they are: only what changes is written back.
        let persist = self.persist.take();
        let mut changed = Vec::new();
        let mut restored = 0;
        // Dead letters keep their stored order, and later ones go after them.
        let top = tasks.iter().filter_map(|t| t.dead_seq).max().unwrap_or(0);
        self.seq = self.seq.max(top.max(0) as u64);
        for r in tasks {
            if self.tasks.contains_key(&r.id) {
                continue;
            }
            let id = r.id;
            let class = self.class_for(&r.task_type, &r.options.labels);
            if let Some(key) = &r.options.idempotency_key {
                self.idempotency.insert(key.clone(), id);
            }
            let has_run = !r.attempts.is_empty()
                || r.result.is_some()
                || r.error.is_some()
                || r.retries_used > 0
                || r.lease_losses > 0;
            let run = has_run.then(|| {
                Box::new(Run {
                    attempts: r.attempts,
                    lease: None,
                    result: r.result,
                    error: r.error,
                    finished_at: r.finished_at,
                    dead_seq: None,
                    retention_tag: 0,
                    retries_used: r.retries_used,
                    lease_losses: r.lease_losses,
                })
            });
            let mut entry = Entry::new(id, class, r.payload, r.options, r.status, r.created_at);
            entry.run = run;
            self.tasks.insert(id, entry);
            restored += 1;
            if !r.status.is_finished() {
                self.live_bytes += self.tasks[&id].payload.len() as u64;
            }
            match r.status {
                status if status.is_finished() => {
                    if let Some(seq) = r.dead_seq {
                        let seq = seq.max(0) as u64;
                        self.tasks
                            .get_mut(&id)
                            .expect("inserted")
                            .run_mut()
                            .dead_seq = Some(seq);
                        self.dead.insert(seq, id);
                        self.dead_bytes += self.tasks[&id].bytes();
                        match status {
                            TaskStatus::Failed => self.counters.failed += 1,
                            TaskStatus::Timeout => self.counters.timed_out += 1,
                            _ => {}
                        }
                    } else {
                        self.retain(id, self.tasks.slot_of(&id));
                    }
                }
                TaskStatus::Running => {
                    self.interrupted(id);
                    changed.push(id);
                }
                TaskStatus::Pending => match r.ready_at {
                    Some(at) => self.make_pending(id, instant_of(at, now)),
                    None => self.make_ready(id),
                },
                _ => self.make_ready(id),
            }
        }
        self.persist = persist;
        for id in changed {
            self.save(id);
            self.save_attempt(id);
        }
        self.counters.recovered += restored as u64;
        restored
    }

    /// A task that was running when the previous process ended.
    fn interrupted(&mut self, id: TaskId) {
        let why = "the coordinator stopped while it ran";
        let e = self.tasks.get_mut(&id).expect("task exists");
        let run = e.run_mut();
        if let Some(a) = run.attempts.last_mut().filter(|a| a.finished_at.is_none()) {
            a.finished_at = Some(SystemTime::now());
            a.outcome = Some("lost".into());
            a.error = Some(why.into());
        }
        self.save_attempt(id);
        self.requeue_lost(id, why);
    }

    /// Takes tasks whose submit the store refused back out: they never existed. A task a
    /// worker already started is told to stop.
    pub(crate) fn abandon(&mut self, ids: &[TaskId]) {
        for &id in ids {
            let Some(e) = self.tasks.get(&id) else {
                continue;
            };
            match e.status() {
                TaskStatus::Queued => self.unready(id),
                TaskStatus::Pending => {
                    if let Some(at) = e.ready_at() {
                        self.delayed.remove(&(at, id));
                    }
                }
                TaskStatus::Running => {
                    if let Some(worker) = self.release(id, "cancelled", None) {
                        if let Some(s) = self.workers.get(&worker) {
                            self.out.cancels.push((s.sink.clone(), id));
                        }
                    }
                }
                _ => {
                    if let Some(seq) = e.run().dead_seq {
                        self.dead.remove(&seq);
                    }
                }
            }
            self.remove_entry(id);
            self.counters.submitted = self.counters.submitted.saturating_sub(1);
            tracing::warn!(task_id = %id, "task dropped: the store did not commit its submit");
        }
    }
}
