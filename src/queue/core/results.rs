//! Results: what workers report, retries with backoff, lost leases, dead letters and
//! retention.

use super::*;

/// The longest `Retry-After` a retry waits for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

impl QueueCore {
    /// Records what a worker reports. A report counts only when it carries the token of
    /// the lease its task runs under now, from the worker holding it: anything else (a
    /// report from before a restart, a late one after the lease expired or the task was
    /// cancelled, one for a task the sender never leased) is refused, counted and logged.
    /// The queue never takes a stale success as the task's result: a task that was handed
    /// out again finishes by its current attempt, exactly once.
    ///
    /// Each task is looked up once and then reached by its slot; the attempts end at one
    /// wall-clock reading, and the worker's session is updated once for the whole report.
    ///
    /// Returns the tasks whose reports were refused (empty, without allocating, when all
    /// counted), so a caller that can answer its worker (the HTTP worker protocol) says so.
    pub(crate) fn report(
        &mut self,
        worker: &str,
        reports: Vec<AttemptReport>,
        now: Instant,
    ) -> Vec<TaskId> {
        let mut refused = Vec::new();
        self.clock = self.clock.max(now);
        let wall = SystemTime::now();
        let mut ended = std::mem::take(&mut self.ended);
        for r in reports {
            let id = r.task_id;
            let Some(at) = self.holder(worker, id, &r.token) else {
                if matches!(r.outcome, AttemptOutcome::Cancelled) {
                    // The echo of a cancel or a lost lease: the worker stopped an attempt
                    // the queue had already taken back. It changes nothing.
                    tracing::debug!(task_id = %id, worker, "a stopped attempt reported after its lease ended");
                } else {
                    self.refuse_stale(worker, id, &r.token, "report");
                }
                refused.push(id);
                continue;
            };
            match r.outcome {
                AttemptOutcome::Completed(result) => {
                    self.end_lease(id, at, "completed", None, wall);
                    ended.push(id);
                    self.complete(id, at, result);
                }
                AttemptOutcome::Failed(err) => {
                    self.end_lease(id, at, "failed", Some(err.message().to_string()), wall);
                    ended.push(id);
                    self.failed_attempt(
                        id,
                        err.message().to_string(),
                        err.is_retryable(),
                        err.retry_after(),
                        now,
                    );
                }
                AttemptOutcome::TimedOut(after) => {
                    let msg = format!("timed out after {after:?}");
                    self.end_lease(id, at, "timeout", Some(msg.clone()), wall);
                    ended.push(id);
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
        if let Some(s) = self.workers.get_mut(worker) {
            for id in &ended {
                s.leases.remove(id);
            }
        }
        ended.clear();
        self.ended = ended;
        refused
    }

    /// A task completed by the attempt just released: it finished when that attempt did
    /// (one clock reading for both).
    pub(super) fn complete(&mut self, id: TaskId, at: Slot, result: Payload) {
        let e = self.tasks.at_mut(at);
        let now = e
            .run()
            .attempts
            .last()
            .and_then(|a| a.finished_at)
            .unwrap_or_else(SystemTime::now);
        if let Ok(d) = now.duration_since(e.created_at(id)) {
            self.metrics.latency.observe(d);
        }
        self.metrics
            .completions
            .record(crate::util::system_time_ms::to_ms(now) / 1000);
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
        self.finish_at(
            id,
            at,
            TaskStatus::Completed,
            TaskOutcome::Completed { result },
            now,
        );
    }

    pub(super) fn failed_attempt(
        &mut self,
        id: TaskId,
        error: String,
        retryable: bool,
        retry_after: Option<Duration>,
        now: Instant,
    ) {
        let e = self.tasks.get_mut(&id).expect("task exists");
        e.run_mut().error = Some(error.clone());
        let budget = e.options().retries.unwrap_or(self.config.default_retries);
        if retryable && e.run().retries_used < budget {
            self.retry_not_before(id, error, now, retry_after);
        } else {
            self.counters.failed += 1;
            self.dead_letter(id, TaskStatus::Failed, error.clone());
            self.finish(id, TaskStatus::Failed, TaskOutcome::Failed { error });
        }
    }

    pub(super) fn timed_out_attempt(&mut self, id: TaskId, error: String, now: Instant) {
        let e = self.tasks.get_mut(&id).expect("task exists");
        e.run_mut().error = Some(error.clone());
        let budget = e.options().retries.unwrap_or(self.config.default_retries);
        if e.run().retries_used < budget {
            self.retry(id, error, now);
        } else {
            self.counters.timed_out += 1;
            self.dead_letter(id, TaskStatus::Timeout, error);
            self.finish(id, TaskStatus::Timeout, TaskOutcome::Timeout);
        }
    }

    /// Exponential backoff with jitter: `base * 2^n`, capped, then scaled by 0.5..=1.0.
    pub(super) fn backoff(&mut self, retries_used: u32) -> Duration {
        let exp = self
            .config
            .retry_base_delay
            .saturating_mul(1u32 << retries_used.min(20))
            .min(self.config.retry_max_delay);
        exp.mul_f64(0.5 + self.rng.f64() * 0.5)
    }

    pub(super) fn retry(&mut self, id: TaskId, error: String, now: Instant) {
        self.retry_not_before(id, error, now, None);
    }

    /// Retries after the backoff, or after `floor` when that is longer (a server's
    /// `Retry-After`, at most one day).
    pub(super) fn retry_not_before(
        &mut self,
        id: TaskId,
        error: String,
        now: Instant,
        floor: Option<Duration>,
    ) {
        let used = self.tasks[&id].run().retries_used;
        let floor = floor.unwrap_or_default().min(MAX_RETRY_AFTER);
        let delay = self.backoff(used).max(floor);
        let e = self.tasks.get_mut(&id).expect("task exists");
        e.run_mut().retries_used += 1;
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

    pub(super) fn lose_lease(&mut self, id: TaskId, worker: &Arc<str>, why: &str) {
        if self.release(id, "lost", Some(why.to_string())).is_none() {
            return;
        }
        self.counters.lease_lost += 1;
        self.out.event(|| EventKind::LeaseLost {
            id,
            worker: worker.clone(),
        });
        self.requeue_lost(id, why);
    }

    /// A task whose attempt ended with its worker (or its coordinator) gone: queued again,
    /// or dead-lettered once it has lost its worker more than `max_lease_losses` times.
    pub(super) fn requeue_lost(&mut self, id: TaskId, why: &str) {
        let e = self.tasks.get_mut(&id).expect("task exists");
        let losses = {
            let run = e.run_mut();
            run.lease_losses += 1;
            run.lease_losses
        };
        if losses > self.config.max_lease_losses {
            let error = format!(
                "lost its worker {losses} times (last: {why}); dead-lettered to protect the workers"
            );
            e.run_mut().error = Some(error.clone());
            self.counters.failed += 1;
            self.dead_letter(id, TaskStatus::Failed, error.clone());
            self.finish(id, TaskStatus::Failed, TaskOutcome::Failed { error });
        } else {
            self.make_ready(id);
        }
    }

    pub(super) fn dead_letter(&mut self, id: TaskId, _status: TaskStatus, error: String) {
        self.seq += 1;
        let seq = self.seq;
        self.tasks
            .get_mut(&id)
            .expect("task exists")
            .run_mut()
            .dead_seq = Some(seq);
        self.dead.insert(seq, id);
        self.dead_bytes += self.tasks[&id].bytes();
        self.out.event(|| EventKind::TaskDeadLettered { id, error });
        while self.dead.len() > self.config.max_dead_letters
            || (self.dead_bytes > self.config.max_dead_letter_bytes && !self.dead.is_empty())
        {
            let (_, oldest) = self.dead.pop_first().expect("not empty");
            tracing::warn!(task_id = %oldest, "dead-letter list full, dropping the oldest");
            if let Some(e) = self.tasks.get_mut(&oldest) {
                self.dead_bytes -= e.bytes();
                e.run_mut().dead_seq = None;
                self.save(oldest);
                // Retention may have passed it by while it was a dead letter: it is an
                // ordinary finished task now, so it goes back under retention.
                self.retain(oldest, self.tasks.slot_of(&oldest));
            }
        }
    }

    pub(super) fn finish(&mut self, id: TaskId, status: TaskStatus, outcome: TaskOutcome) {
        let at = self.tasks.slot_of(&id);
        self.finish_at(id, at, status, outcome, SystemTime::now());
    }

    /// Finishes the task in `at` at `when`: its waiters are answered, it is saved and put
    /// under retention (after which `at` may no longer hold it).
    pub(super) fn finish_at(
        &mut self,
        id: TaskId,
        at: Slot,
        status: TaskStatus,
        outcome: TaskOutcome,
        when: SystemTime,
    ) {
        debug_assert!(
            !self.tasks.at(at).status().is_finished(),
            "a task finishes once"
        );
        let e = self.tasks.set_status_at(at, id, status);
        self.live_bytes -= e.payload.len() as u64;
        e.run_mut().finished_at = Some(when);
        self.out.finished.push((id, outcome));
        self.save(id);
        self.retain(id, at);
    }

    /// Puts a finished task under retention, pruning the oldest past `max_finished_tasks`
    /// or `max_finished_bytes`. Dead letters are kept until they leave the dead-letter list.
    pub(super) fn retain(&mut self, id: TaskId, at: Slot) {
        let e = self.tasks.at_mut(at);
        if e.run().dead_seq.is_none() {
            self.finished_bytes += e.bytes();
            self.finished_count += 1;
        }
        let run = e.run_mut();
        run.retention_tag += 1;
        self.finished.push_back((id, run.retention_tag));
        while self.finished_count > self.config.max_finished_tasks
            || self.finished_bytes > self.config.max_finished_bytes
        {
            let Some((oldest, tag)) = self.finished.pop_front() else {
                break;
            };
            let evict = self.tasks.get(&oldest).is_some_and(|e| {
                e.status().is_finished()
                    && e.run().dead_seq.is_none()
                    && e.run().retention_tag == tag
            });
            if evict {
                self.remove_entry(oldest);
            }
        }
        // Entries left behind by tasks re-queued (or dead-lettered) since are skipped when
        // they reach the front; should they pile up, drop them all at once.
        if self.finished.len() > 2 * self.finished_count + 1024 {
            let tasks = &self.tasks;
            self.finished.retain(|(id, tag)| {
                tasks.get(id).is_some_and(|e| {
                    e.status().is_finished()
                        && e.run().dead_seq.is_none()
                        && e.run().retention_tag == *tag
                })
            });
        }
    }
}
