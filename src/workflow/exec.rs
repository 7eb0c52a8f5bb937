//! The engine's side effects, in the order the journal allows: a round of events is
//! committed, then the steps it started are submitted to the queue (one batch), its timers
//! set, its cancelled tasks cancelled and its ended runs' waiters answered.

use std::time::Duration;

use super::engine::EngineState;
use super::msg::{Control, Deferred, EngineMsg};
use super::node::{Action, StepResult};
use super::run::RunEvent;
use super::WorkflowMetrics;
use super::{journal, RunId, RunSnapshot, RunStatus, WorkflowError};
use crate::store::WorkflowBatch;
use crate::task::{Payload, Submitted, TaskSpec};

/// Most journal rounds in flight for steps of overlapped runs to start without waiting for
/// a commit: a crash runs again at most the steps of this many rounds.
pub(crate) const AHEAD_ROUNDS: usize = 4;

/// How long an outcome that came before its submit's answer is kept.
const EARLY_KEEP: Duration = Duration::from_secs(60);

impl EngineState {
    /// Sends the round gathered so far to be committed. Rounds are pipelined: the next one
    /// goes while earlier ones are in flight (the task store's writer takes whatever has
    /// come in one transaction), and each is reported committed after the ones before it,
    /// so what waits on a round happens in the order the rounds were made. Without a
    /// store, what waits happens at once.
    pub(crate) fn flush(&mut self) {
        for id in std::mem::take(&mut self.dirty) {
            if let Some(entry) = self.runs.get_mut(&id) {
                self.batch.runs.push(journal::run_row(&mut entry.core));
            }
        }
        if self.batch.is_empty() && self.deferred.is_empty() && self.ahead.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        let mut deferred = std::mem::take(&mut self.deferred);
        let ahead = std::mem::take(&mut self.ahead);
        if self.store.is_none() || (batch.is_empty() && self.in_flight == 0) {
            deferred.splice(0..0, ahead);
            self.run_deferred(deferred);
            return;
        }
        // The queue gets the round now, in order; the spawned task only waits.
        let sent = (!batch.is_empty()).then(|| {
            let first = self.queue.journal(batch.clone());
            (first, batch)
        });
        // Overlapped runs' steps go after their round (the queue keeps a new step's row
        // for a later round), and do not wait for its commit, unless so many rounds are
        // uncommitted already (a store that stalls) that a crash would lose too many
        // steps: then they wait like any other.
        if !ahead.is_empty() && self.in_flight < AHEAD_ROUNDS {
            self.run_deferred(ahead);
        } else {
            deferred.splice(0..0, ahead);
        }
        let before = self.last_round.take();
        let (done, last) = tokio::sync::oneshot::channel();
        self.last_round = Some(last);
        self.in_flight += 1;
        let me = self.me.clone();
        let metrics = self.metrics.clone();
        let queue = self.queue.clone();
        tokio::spawn(async move {
            if let Some((first, batch)) = sent {
                let started = std::time::Instant::now();
                // The queue answers a step's waiter before the task's completion is
                // committed to its own tables: that commit must land too before the next
                // step starts, or a crash would run the finished step's task again. The
                // round goes into the task store's own transaction, after the completion:
                // one writer (on SQLite a second connection would wait on the task store's
                // lock, whose busy handler sleeps a millisecond or more; on PostgreSQL two
                // commits in a row, the completion's and the round's, were each on the
                // step's path).
                commit_with_tasks(&queue, first, batch).await;
                metrics.checkpoint_latency.observe(started.elapsed());
            }
            if let Some(before) = before {
                // Dropped (not sent) only if the engine stopped.
                let _ = before.await;
            }
            let _ = me.send(EngineMsg::Committed(deferred));
            let _ = done.send(());
        });
    }

    /// Does what waited on a commit.
    pub(crate) fn run_deferred(&mut self, deferred: Vec<Deferred>) {
        // Steps with new idempotency keys, and steps that may have a task already.
        let (mut specs, mut steps) = (Vec::new(), Vec::new());
        let (mut unsure_specs, mut unsure_steps) = (Vec::new(), Vec::new());
        for d in deferred {
            match d {
                Deferred::Start(run, generation, action) => {
                    let Some(entry) = self.runs.get_mut(&run) else {
                        continue;
                    };
                    if entry.core.generation != generation || !entry.core.status.is_active() {
                        continue;
                    }
                    if entry.core.status == RunStatus::Paused {
                        entry.held.push(action);
                        continue;
                    }
                    match action {
                        Action::Start {
                            key,
                            task_type,
                            input,
                            mut options,
                        } => {
                            options.idempotency_key = Some(entry.core.task_key(&key));
                            // A run's steps share one trace: the run's id.
                            options.trace_id.get_or_insert(run.0.into());
                            let spec = TaskSpec::from_payload(task_type, Payload::from(input))
                                .with_options(options);
                            if self.unsure.remove(&(run, key.clone())) {
                                unsure_specs.push(spec);
                                unsure_steps.push((run, generation, key));
                            } else {
                                specs.push(spec);
                                steps.push((run, generation, key));
                            }
                        }
                        Action::Timer { key, due_ms, .. } => {
                            let wait = u64::try_from(due_ms - super::engine::now_ms()).unwrap_or(0);
                            let msg = move || EngineMsg::Fire {
                                run,
                                generation,
                                key,
                            };
                            self.me.send_after(Duration::from_millis(wait), msg);
                        }
                        Action::Child {
                            key,
                            workflow,
                            input,
                        } => self.start_child(run, generation, key, workflow, input),
                    }
                }
                Deferred::Cancel(tasks) => {
                    let queue = self.queue.clone();
                    tokio::spawn(async move {
                        for id in tasks {
                            let _ = queue.cancel(id).await;
                        }
                    });
                }
                Deferred::Ended(run) => self.ended(run),
                Deferred::Started(run, reply) => {
                    let _ = reply.send(Ok(run));
                }
            }
        }
        if !specs.is_empty() {
            self.submit(specs, steps, true);
        }
        if !unsure_specs.is_empty() {
            self.submit(unsure_specs, unsure_steps, false);
        }
        let now = std::time::Instant::now();
        self.early
            .retain(|_, (_, at)| now.duration_since(*at) < EARLY_KEEP);
    }

    /// Submits one round's step tasks in one batch; if the batch is refused, each on its
    /// own, so one bad step fails alone. Fresh steps are followed as soon as the queue took
    /// them: their commit does not hold the run up (the journal already says they started,
    /// and a recovery submits them again under the same idempotency keys); a batch the
    /// store then could not keep fails its steps.
    fn submit(&self, specs: Vec<TaskSpec>, steps: Vec<(RunId, u32, String)>, fresh: bool) {
        let queue = self.queue.clone();
        let outcomes = self.outcomes.clone();
        let me = self.me.clone();
        tokio::spawn(async move {
            // Batches taken whose commit is still to come (fresh steps only).
            let mut unsettled = Vec::new();
            let result = match queue
                .submit_batch_into(specs.clone(), outcomes.clone(), fresh)
                .await
            {
                Ok(accepted) if fresh => {
                    let taken = accepted.submitted.iter().map(|s| Ok(*s)).collect();
                    unsettled.push((steps.clone(), accepted));
                    taken
                }
                Ok(accepted) => match settled(accepted).await {
                    Ok(taken) => taken.into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e); steps.len()],
                },
                Err(_) if specs.len() > 1 => {
                    let mut each = Vec::with_capacity(specs.len());
                    for (spec, step) in specs.into_iter().zip(&steps) {
                        let r = match queue
                            .submit_batch_into(vec![spec], outcomes.clone(), fresh)
                            .await
                        {
                            Ok(accepted) if fresh => {
                                let taken = accepted.submitted[0];
                                unsettled.push((vec![step.clone()], accepted));
                                Ok(taken)
                            }
                            Ok(accepted) => settled(accepted).await.map(|mut v| v.remove(0)),
                            Err(e) => Err(e.to_string()),
                        };
                        each.push(r);
                    }
                    each
                }
                Err(e) => vec![Err(e.to_string())],
            };
            // A task an idempotency key found only in the store is followed by hand.
            for s in result.iter().flatten().filter(|s| s.existing) {
                let (queue, outcomes, id) = (queue.clone(), outcomes.clone(), s.id);
                tokio::spawn(async move {
                    if let Ok(outcome) = queue.wait_for(id, Duration::MAX).await {
                        let _ = outcomes.send((id, outcome));
                    }
                });
            }
            let _ = me.send(EngineMsg::Submitted { steps, result });
            // Their rows may wait for a later journal round: a batch the store refuses
            // then fails its steps.
            for (steps, accepted) in unsettled {
                if let Err(e) = settled(accepted).await {
                    let refused = vec![Err(e); steps.len()];
                    let _ = me.send(EngineMsg::Submitted {
                        steps,
                        result: refused,
                    });
                }
            }
        });
    }

    /// The queue took (or refused) a round of steps.
    pub(crate) fn submitted(
        &mut self,
        steps: Vec<(RunId, u32, String)>,
        result: Vec<Result<Submitted, String>>,
    ) {
        for ((run, generation, key), r) in steps.into_iter().zip(result) {
            let current = self.runs.get(&run).is_some_and(|e| {
                e.core.generation == generation && e.core.running.contains_key(&key)
            });
            match r {
                Ok(s) if current => {
                    let entry = self.runs.get_mut(&run).expect("checked");
                    entry.tasks.insert(key.clone(), s.id);
                    self.by_task.insert(s.id, (run, key));
                    if let Some((outcome, _)) = self.early.remove(&s.id) {
                        self.outcome(s.id, outcome);
                    }
                }
                // The run moved on (cancelled, failed, retried): the task is not wanted.
                Ok(s) => {
                    let queue = self.queue.clone();
                    tokio::spawn(async move {
                        let _ = queue.cancel(s.id).await;
                    });
                }
                Err(e) if current => {
                    // A fresh step followed before the store refused its task: forget it.
                    let entry = self.runs.get_mut(&run).expect("checked");
                    if let Some(id) = entry.tasks.remove(&key) {
                        self.by_task.remove(&id);
                    }
                    self.record(
                        run,
                        RunEvent::Step(key, StepResult::Failed(format!("not queued: {e}"))),
                    )
                }
                Err(_) => {}
            }
        }
    }

    fn ended(&mut self, run: RunId) {
        let Some(entry) = self.runs.get_mut(&run) else {
            return;
        };
        if entry.core.status.is_active() {
            return;
        }
        let snapshot = entry.core.snapshot();
        for w in entry.waiters.drain(..) {
            let _ = w.send(snapshot.clone());
        }
        self.finished.push_back(run);
        while self.finished.len() > self.config.keep_finished {
            if let Some(old) = self.finished.pop_front() {
                // A run retried since is active again: keep it.
                if self
                    .runs
                    .get(&old)
                    .is_some_and(|e| !e.core.status.is_active())
                {
                    self.runs.remove(&old);
                }
            }
        }
    }

    /// Pauses, resumes, cancels or retries `run`.
    pub(crate) async fn control(
        &mut self,
        run: RunId,
        op: Control,
    ) -> Result<RunSnapshot, WorkflowError> {
        if !self.runs.contains_key(&run) {
            if op != Control::Retry {
                return Err(match self.stored_status(run).await? {
                    Some(status) => WorkflowError::WrongStatus {
                        run,
                        status,
                        action: verb(op),
                    },
                    None => WorkflowError::RunNotFound(run),
                });
            }
            super::recover::load_run(self, run).await?;
        }
        let now = super::engine::now_ms();
        let entry = self.runs.get_mut(&run).expect("loaded above");
        let status = entry.core.status;
        let wrong = || WorkflowError::WrongStatus {
            run,
            status,
            action: verb(op),
        };
        match op {
            Control::Pause if status == RunStatus::Running => {
                entry.core.status = RunStatus::Paused;
                entry.core.updated_at_ms = now;
                WorkflowMetrics::add(&self.metrics.paused);
                self.announce(run, "paused");
            }
            Control::Resume if status == RunStatus::Paused => {
                entry.core.status = RunStatus::Running;
                entry.core.updated_at_ms = now;
                let generation = entry.core.generation;
                for action in std::mem::take(&mut entry.held) {
                    // A held step starts now, not when the pause held it back.
                    if let Action::Start { key, .. } = &action {
                        entry.core.running.insert(key.clone(), now);
                    }
                    self.deferred.push(Deferred::Start(run, generation, action));
                }
                self.announce(run, "resumed");
            }
            Control::Cancel if status.is_active() => {
                entry.core.finish(RunStatus::Cancelled, None, now);
                self.end(run);
            }
            Control::Retry if matches!(status, RunStatus::Failed | RunStatus::Stopped) => {
                self.finished.retain(|id| *id != run);
                WorkflowMetrics::add(&self.metrics.retried);
                WorkflowMetrics::add(&self.metrics.active);
                self.record(run, RunEvent::Retry);
                self.arm_deadline(run);
                self.announce(run, "retried");
            }
            _ => return Err(wrong()),
        }
        self.dirty.insert(run);
        Ok(self.runs[&run].snapshot())
    }

    /// Applies `op` to every run in memory that `filter` matches and `op` applies to:
    /// pause, resume and cancel take active runs (every active run is in memory), retry
    /// takes the failed and stopped runs still in memory.
    pub(crate) async fn bulk(
        &mut self,
        op: Control,
        filter: &super::BulkFilter,
    ) -> super::BulkOutcome {
        let applies = |status: RunStatus| match op {
            Control::Pause => status == RunStatus::Running,
            Control::Resume => status == RunStatus::Paused,
            Control::Cancel => status.is_active(),
            Control::Retry => matches!(status, RunStatus::Failed | RunStatus::Stopped),
        };
        let mut ids: Vec<RunId> = self
            .runs
            .iter()
            .filter(|(_, e)| {
                let status = e.core.status;
                filter
                    .workflow
                    .as_deref()
                    .is_none_or(|w| e.core.workflow.name() == w)
                    && filter.status.is_none_or(|s| s == status)
                    && applies(status)
            })
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        let mut out = super::BulkOutcome {
            matched: ids.len() as u64,
            ..Default::default()
        };
        for id in ids {
            // A cancel ends children too: one may have ended since it matched.
            if !self.runs.get(&id).is_some_and(|e| applies(e.core.status)) {
                continue;
            }
            match self.control(id, op).await {
                Ok(_) => out.changed += 1,
                Err(e) if out.errors.len() < 100 => out.errors.push(super::BulkError {
                    id,
                    error: e.to_string(),
                }),
                Err(_) => {}
            }
        }
        out
    }

    async fn stored_status(&self, run: RunId) -> Result<Option<RunStatus>, WorkflowError> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let found = store
            .workflow_run(run.0)
            .await
            .map_err(|e| WorkflowError::Store(e.to_string()))?;
        Ok(found.and_then(|(row, _)| row.status.parse().ok()))
    }
}

fn verb(op: Control) -> &'static str {
    match op {
        Control::Pause => "pause",
        Control::Resume => "resume",
        Control::Cancel => "cancel",
        Control::Retry => "retry",
    }
}

/// The store's word on submitted steps (the tasks an idempotency key matched in the store
/// replace those made), or why it could not keep them.
async fn settled(accepted: crate::queue::Accepted) -> Result<Vec<Submitted>, String> {
    accepted
        .settle()
        .await
        .map_err(|e| crate::Error::from(e).to_string())
}

/// Waits for `first`, the round `batch` sent to the task store's transaction through the
/// queue, and sends it again until it lands, with a backoff from 50 ms to 5 s between
/// tries. A stopped queue ends the wait (the coordinator is stopping; what was not
/// committed is recovered from the tasks' own rows).
async fn commit_with_tasks(
    queue: &crate::queue::QueueRef,
    first: impl std::future::Future<Output = Result<(), crate::Error>>,
    batch: WorkflowBatch,
) {
    let mut answer = first.await;
    let mut delay = Duration::from_millis(50);
    while let Err(e) = answer {
        if matches!(e, crate::Error::Stopped { .. }) {
            return;
        }
        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "workflow journal commit failed");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
        answer = queue.journal(batch.clone()).await;
    }
}
