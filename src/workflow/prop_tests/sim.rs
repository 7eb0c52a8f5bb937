//! A simulated engine and queue around one [`RunCore`], as the engine actor drives it but
//! with every interleaving in the test's hands.
//!
//! It follows `engine.rs` and `exec.rs` step for step: an event is journaled (in the
//! round not yet committed) and applied; new timers are journaled; the tasks and timers a
//! round starts are submitted only once the round is committed; a paused run holds them;
//! a run that stops being active cancels its tasks. The queue keeps each task's outcome
//! by idempotency key (generation and step key), so a task submitted again after a crash
//! is found again and delivers the same outcome (at least once).
//!
//! A crash throws away the core, the round not yet committed and everything in memory,
//! and rebuilds the run with [`journal::replay`] from the rows committed so far, exactly
//! as `recover.rs` does.
//!
//! Every check returns a [`TestCaseError`], so that proptest shrinks the case.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::Value;

use super::gen::output;
use crate::store::{WorkflowEventRow, WorkflowRunRow};
use crate::workflow::def::Workflow;
use crate::workflow::journal::{self, event_row, replay, Entry, DONE, FAILED, RETRY, TIMER};
use crate::workflow::node::{Action, StepResult};
use crate::workflow::run::{RunCore, RunEvent};
use crate::workflow::{Checkpoint, RunId, RunStatus};

type Check = Result<(), TestCaseError>;

/// One run, its store and its queue.
pub(super) struct Sim {
    wf: Arc<Workflow>,
    pub(super) core: RunCore,
    /// The committed run row.
    pub(super) row: WorkflowRunRow,
    /// The committed journal, in seq order.
    pub(super) journal: Vec<WorkflowEventRow>,
    /// Rows of the round not yet committed (a crash loses them).
    pending: Vec<WorkflowEventRow>,
    /// What waits on the commit: starts and timers, with the generation that made them.
    deferred: Vec<(u32, Action)>,
    /// Starts and timers held while the run is paused.
    held: Vec<Action>,
    /// Tasks the engine submitted and waits for, by step key, with their generation.
    submitted: BTreeMap<String, u32>,
    /// Steps of an overlapped run submitted before the round that started them was
    /// committed (a crash may forget that they started).
    ahead: BTreeSet<String>,
    /// Timers set, by step key: generation and deadline.
    timers: BTreeMap<String, (u32, i64)>,
    /// The queue: each task's outcome, decided once, by (generation, step key).
    outcomes: HashMap<(u32, String), StepResult>,
    /// Outcomes delivered so far, for duplicate deliveries.
    delivered: Vec<(String, StepResult)>,
    /// Each step outcome the engine accepted, in order: (key, `done` or `failed`).
    pub(super) reported: Vec<(String, &'static str)>,
    /// How many of `reported` are committed.
    reported_committed: usize,
    /// The last journaled outcome of each key, committed or not: generation and kind.
    ended: HashMap<String, (u32, &'static str)>,
    /// Retries of the run so far, and most allowed.
    pub(super) retries: u32,
    max_retries: u32,
    pub(super) crashes: u32,
    now: i64,
}

impl Sim {
    /// A run of `wf` on `input`, started and committed.
    pub(super) fn start(
        wf: Workflow,
        input: BTreeMap<String, Value>,
        max_retries: u32,
    ) -> Result<Self, TestCaseError> {
        let wf = Arc::new(wf);
        let now = 1_000;
        let mut core = RunCore::new(RunId::new(), wf.clone(), "v1".into(), input, now).new_row();
        let actions = core.start(now);
        let row = journal::run_row(&mut core);
        let mut sim = Self {
            wf,
            core,
            row,
            journal: Vec::new(),
            pending: Vec::new(),
            deferred: Vec::new(),
            held: Vec::new(),
            submitted: BTreeMap::new(),
            ahead: BTreeSet::new(),
            timers: BTreeMap::new(),
            outcomes: HashMap::new(),
            delivered: Vec::new(),
            reported: Vec::new(),
            reported_committed: 0,
            ended: HashMap::new(),
            retries: 0,
            max_retries,
            crashes: 0,
            now,
        };
        sim.after(actions)?;
        // A start is answered once its run row is committed.
        sim.commit()?;
        Ok(sim)
    }

    /// Whether anything is left to commit, start, deliver or fire.
    pub(super) fn has_work(&self) -> bool {
        !self.pending.is_empty()
            || !self.deferred.is_empty()
            || !self.submitted.is_empty()
            || !self.timers.is_empty()
    }

    /// Commits the round (the run row and the rows journaled since the last commit), then
    /// does what waited on it, and checks that a replay of the store gives the live run.
    pub(super) fn commit(&mut self) -> Check {
        self.journal.append(&mut self.pending);
        // Updated in place, as the store does: the input stays as first written.
        let earlier = std::mem::replace(&mut self.row, journal::run_row(&mut self.core));
        self.row.input = self.row.input.take().or(earlier.input);
        self.reported_committed = self.reported.len();
        self.ahead.clear();
        for (generation, action) in std::mem::take(&mut self.deferred) {
            if self.core.generation != generation || !self.core.status.is_active() {
                continue;
            }
            if self.core.status == RunStatus::Paused {
                self.held.push(action);
                continue;
            }
            self.submit(action)?;
        }
        self.check_replay()
    }

    fn submit(&mut self, action: Action) -> Check {
        let generation = self.core.generation;
        match action {
            // A child run is found again by its id after a crash, as a task by its
            // idempotency key: the queue stands for both.
            Action::Start { key, .. } | Action::Child { key, .. } => {
                prop_assert!(
                    self.submitted.insert(key.clone(), generation).is_none(),
                    "{key} submitted twice in generation {generation}"
                );
            }
            Action::Timer { key, due_ms, .. } => {
                self.timers.insert(key, (generation, due_ms));
            }
        }
        Ok(())
    }

    /// The engine's `record`: journals `event` and applies it; a step's outcome counts
    /// only while the step runs in an active run. Says whether it was taken.
    fn record(&mut self, event: RunEvent) -> Result<bool, TestCaseError> {
        if let RunEvent::Step(key, _) = &event {
            if !self.core.running.contains_key(key) || !self.core.status.is_active() {
                return Ok(false);
            }
        }
        self.now += 1;
        self.core.seq += 1;
        let row = event_row(
            self.core.id,
            self.core.seq,
            &Entry::Event(event.clone()),
            self.now,
        );
        self.pending.push(row);
        match &event {
            RunEvent::Step(key, result) => {
                let kind = if matches!(result, StepResult::Done(_)) {
                    DONE
                } else {
                    FAILED
                };
                self.ended.insert(key.clone(), (self.core.generation, kind));
                self.reported.push((key.clone(), kind));
            }
            RunEvent::Retry => {}
        }
        let actions = self.core.apply(event, self.now);
        self.after(actions)?;
        Ok(true)
    }

    /// The engine's `after`: journals new timers, defers (or holds) what starts, and ends
    /// the run if it ended. Checks that nothing already ended starts again.
    fn after(&mut self, actions: Vec<Action>) -> Check {
        let generation = self.core.generation;
        let overlapped = self.core.checkpoint() == Checkpoint::Overlapped;
        for action in actions {
            if let Action::Timer { key, due_ms, new } = &action {
                if *new {
                    self.core.seq += 1;
                    self.core.timers.insert(key.clone(), *due_ms);
                    let e = Entry::Timer(key.clone(), *due_ms);
                    self.pending
                        .push(event_row(self.core.id, self.core.seq, &e, self.now));
                }
            }
            match self.core.status {
                // The engine queues an overlapped run's task steps as the round goes.
                RunStatus::Running if overlapped && matches!(action, Action::Start { .. }) => {
                    self.check_not_ended(&action)?;
                    self.ahead.insert(action_key(&action).to_string());
                    self.submit(action)?;
                }
                RunStatus::Running => {
                    self.check_not_ended(&action)?;
                    self.deferred.push((generation, action));
                }
                RunStatus::Paused => {
                    self.check_not_ended(&action)?;
                    self.held.push(action);
                }
                _ => {}
            }
        }
        if !self.core.status.is_active() {
            // The engine's `end`: its tasks are cancelled, nothing held starts.
            self.held.clear();
            self.submitted.clear();
            self.core.running.clear();
        }
        Ok(())
    }

    /// A step whose outcome is journaled `done` never starts again; one journaled
    /// `failed` starts again only in a later generation (a retry).
    fn check_not_ended(&self, action: &Action) -> Check {
        let key = action_key(action);
        if let Some((g, kind)) = self.ended.get(key) {
            prop_assert!(
                *kind == FAILED && *g < self.core.generation,
                "{key} starts again in generation {} after it ended {kind} in generation {g}",
                self.core.generation
            );
        }
        Ok(())
    }

    /// Delivers the outcome of the `pick`-th task in flight: the queue's, or (the first
    /// time) done with [`output`], or failed when `fail`.
    pub(super) fn deliver(&mut self, pick: usize, fail: bool) -> Check {
        let Some(key) = nth(self.submitted.keys(), pick) else {
            return Ok(());
        };
        let generation = self.submitted.remove(&key).expect("picked from it");
        prop_assert_eq!(generation, self.core.generation);
        let result = self
            .outcomes
            .entry((generation, key.clone()))
            .or_insert_with(|| {
                if fail {
                    StepResult::Failed(format!("boom at {key}"))
                } else {
                    StepResult::Done(output(&key))
                }
            })
            .clone();
        self.delivered.push((key.clone(), result.clone()));
        let taken = self.record(RunEvent::Step(key.clone(), result))?;
        prop_assert!(taken, "the engine waits for {} but the run does not", key);
        Ok(())
    }

    /// Fires the `pick`-th timer set (the engine's `Fire`: only a current one counts).
    pub(super) fn fire(&mut self, pick: usize) -> Check {
        let Some(key) = nth(self.timers.keys(), pick) else {
            return Ok(());
        };
        let (generation, due) = self.timers.remove(&key).expect("picked from it");
        self.now = self.now.max(due);
        if generation == self.core.generation && self.core.running.contains_key(&key) {
            self.record(RunEvent::Step(key, StepResult::Done(Value::Null)))?;
        }
        Ok(())
    }

    /// Applies an outcome delivered before straight to the core again: a step not in
    /// flight is ignored, with nothing started and nothing changed.
    pub(super) fn duplicate(&mut self, pick: usize) -> Check {
        if self.delivered.is_empty() {
            return Ok(());
        }
        let (key, result) = self.delivered[pick % self.delivered.len()].clone();
        if self.core.running.contains_key(&key) {
            return Ok(()); // In flight again (a retry): a delivery, not a duplicate.
        }
        let before = (
            self.core.status,
            self.core.state.clone(),
            self.core.steps_completed,
        );
        let actions = self
            .core
            .apply(RunEvent::Step(key.clone(), result), self.now);
        prop_assert!(
            actions.is_empty(),
            "duplicate of {} started {:?}",
            key,
            actions
        );
        let after = (
            self.core.status,
            self.core.state.clone(),
            self.core.steps_completed,
        );
        prop_assert_eq!(before, after, "duplicate of {} changed the run", key);
        Ok(())
    }

    /// The engine's pause: nothing new starts.
    pub(super) fn pause(&mut self) {
        if self.core.status == RunStatus::Running {
            self.core.status = RunStatus::Paused;
            self.core.updated_at_ms = self.now;
        }
    }

    /// The engine's resume: what was held starts after the next commit.
    pub(super) fn resume(&mut self) {
        if self.core.status == RunStatus::Paused {
            self.core.status = RunStatus::Running;
            self.core.updated_at_ms = self.now;
            let generation = self.core.generation;
            for action in std::mem::take(&mut self.held) {
                self.deferred.push((generation, action));
            }
        }
    }

    /// Retries a failed run, if retries are left. Says whether it did.
    pub(super) fn retry(&mut self) -> Result<bool, TestCaseError> {
        if self.core.status != RunStatus::Failed || self.retries >= self.max_retries {
            return Ok(false);
        }
        self.retries += 1;
        self.record(RunEvent::Retry)
    }

    /// Loses everything not committed and rebuilds the run from the store; what was in
    /// flight is submitted again and found again in the queue.
    pub(super) fn crash(&mut self) -> Check {
        self.crashes += 1;
        let generation = self.core.generation;
        // Steps whose start is committed and whose outcome is not: in flight at the crash.
        // (An overlapped run's steps whose start is not committed are forgotten: they run
        // again once the steps before them have.)
        let mut in_flight: BTreeSet<String> = self.submitted.keys().cloned().collect();
        in_flight.extend(
            self.pending
                .iter()
                .filter(|r| r.kind == DONE || r.kind == FAILED)
                .map(|r| r.step.clone()),
        );
        in_flight.retain(|k| !self.ahead.contains(k));
        self.ahead.clear();
        self.pending.clear();
        self.deferred.clear();
        self.held.clear();
        self.submitted.clear();
        self.timers.clear();
        self.reported.truncate(self.reported_committed);
        self.ended = ended_in(&self.journal);
        let (core, again) = replay(&self.row, &self.journal, self.wf.clone())
            .map_err(|e| TestCaseError::fail(format!("replay failed: {e}")))?;
        self.core = core;
        let again_keys: BTreeSet<String> = again.iter().map(|a| action_key(a).into()).collect();
        if self.core.status.is_active() && self.core.generation == generation {
            prop_assert!(
                in_flight.is_subset(&again_keys),
                "in flight at the crash: {:?}, started again: {:?}",
                in_flight,
                again_keys
            );
        }
        for action in again {
            if let Action::Timer { key, due_ms, new } = &action {
                let journaled = self
                    .journal
                    .iter()
                    .find(|r| r.kind == TIMER && r.step == *key)
                    .map(|r| r.value.parse::<i64>().expect("a deadline"));
                if let Some(due) = journaled {
                    prop_assert!(
                        *due_ms == due && !*new,
                        "timer {} re-armed at {} (new: {}), journaled at {}",
                        key,
                        due_ms,
                        new,
                        due
                    );
                }
            }
            match self.core.status {
                RunStatus::Running => {
                    self.check_not_ended(&action)?;
                    self.submit(action)?;
                }
                RunStatus::Paused => {
                    self.check_not_ended(&action)?;
                    self.held.push(action);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A replay of the store equals the live run (called when all is committed).
    pub(super) fn check_replay(&self) -> Check {
        let (rebuilt, again) = replay(&self.row, &self.journal, self.wf.clone())
            .map_err(|e| TestCaseError::fail(format!("replay failed: {e}")))?;
        let (live, re) = (&self.core, &rebuilt);
        prop_assert_eq!(re.status, live.status);
        prop_assert_eq!(&re.state, &live.state);
        prop_assert_eq!(re.steps_completed, live.steps_completed);
        prop_assert_eq!(re.generation, live.generation);
        prop_assert_eq!(&re.error, &live.error);
        prop_assert_eq!(re.seq, live.seq);
        if live.status.is_active() {
            let running: Vec<&String> = live.running.keys().collect();
            prop_assert_eq!(re.running.keys().collect::<Vec<_>>(), running.clone());
            let again: Vec<&str> = again.iter().map(action_key).collect();
            prop_assert_eq!(
                again,
                running.iter().map(|k| k.as_str()).collect::<Vec<_>>()
            );
        }
        Ok(())
    }
}

/// The last outcome journaled for each key, with the generation it belongs to.
fn ended_in(rows: &[WorkflowEventRow]) -> HashMap<String, (u32, &'static str)> {
    let mut generation = 0;
    let mut ended = HashMap::new();
    for r in rows {
        match r.kind.as_str() {
            RETRY => generation += 1,
            DONE => {
                ended.insert(r.step.clone(), (generation, DONE));
            }
            FAILED => {
                ended.insert(r.step.clone(), (generation, FAILED));
            }
            _ => {}
        }
    }
    ended
}

fn nth<'a>(mut keys: impl ExactSizeIterator<Item = &'a String>, pick: usize) -> Option<String> {
    let len = keys.len();
    (len > 0).then(|| keys.nth(pick % len).expect("in range").clone())
}

fn action_key(a: &Action) -> &str {
    a.key()
}
