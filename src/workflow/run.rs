//! One run as a pure state machine: its state, its tree of steps and its journal position.
//! Events go in (a step done or failed, a retry), actions come out (tasks and timers to
//! start); the engine journals each event before it applies it, and replays the journal
//! through the same machine after a restart. `RunEntry` is what the engine keeps around one
//! run in memory (its step tasks, held starts, waiters and children).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::oneshot;

use super::def::Workflow;
use super::node::{Action, Ctx, Node, Progress, StepResult};
use super::{Checkpoint, RunId, RunOptions, RunSnapshot, RunStatus};
use crate::task::TaskId;

/// An entry of a run's journal that changes it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum RunEvent {
    /// The step `key` ended.
    Step(String, StepResult),
    /// The run goes on from its failed steps, in a new generation.
    Retry,
}

/// One run.
pub(crate) struct RunCore {
    pub(crate) id: RunId,
    pub(crate) workflow: Arc<Workflow>,
    pub(crate) version: Arc<str>,
    pub(crate) status: RunStatus,
    /// The input plus every output written under a key.
    pub(crate) state: BTreeMap<String, Value>,
    /// The input, as the run row keeps it, until the run's first row takes it.
    pub(crate) input: Option<String>,
    root: Node,
    /// The journal's last sequence number.
    pub(crate) seq: i64,
    /// Retries of the run; part of every step's idempotency key.
    pub(crate) generation: u32,
    pub(crate) steps_completed: u64,
    /// Steps in flight, by key, with when they started (Unix ms).
    pub(crate) running: BTreeMap<String, i64>,
    /// Timer deadlines journaled, by step key.
    pub(crate) timers: HashMap<String, i64>,
    pub(crate) error: Option<String>,
    /// The options it was started with.
    pub(crate) options: RunOptions,
    /// When it started, or was last retried (Unix ms): its timeout counts from then.
    pub(crate) since_ms: i64,
    pub(crate) created_at_ms: i64,
    pub(crate) updated_at_ms: i64,
    pub(crate) finished_at_ms: Option<i64>,
}

impl std::fmt::Debug for RunCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunCore")
            .field("id", &self.id)
            .field("workflow", &self.workflow.name())
            .field("status", &self.status)
            .field("seq", &self.seq)
            .finish()
    }
}

impl RunCore {
    /// A run of `workflow` (at `version`) on `input`, not yet driven; its input is not
    /// written with its rows (the store holds it already) unless [`Self::new_row`] says so.
    pub(crate) fn new(
        id: RunId,
        workflow: Arc<Workflow>,
        version: Arc<str>,
        input: BTreeMap<String, Value>,
        now_ms: i64,
    ) -> Self {
        let root = Node::sequence(&workflow.def.steps, "");
        Self {
            id,
            workflow,
            version,
            status: RunStatus::Running,
            state: input,
            input: None,
            root,
            seq: 0,
            generation: 0,
            steps_completed: 0,
            running: BTreeMap::new(),
            timers: HashMap::new(),
            error: None,
            options: RunOptions::default(),
            since_ms: now_ms,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            finished_at_ms: None,
        }
    }

    /// A run not stored yet: its first row carries the input.
    pub(crate) fn new_row(mut self) -> Self {
        self.input = Some(serde_json::to_string(&self.state).unwrap_or_else(|_| "{}".into()));
        self
    }

    /// A run with `options` (what they set replaces its definition's).
    pub(crate) fn with_options(mut self, options: RunOptions) -> Self {
        self.options = options;
        self
    }

    /// Its checkpoint mode: its own, or its definition's.
    pub(crate) fn checkpoint(&self) -> Checkpoint {
        (self.options.checkpoint).unwrap_or(self.workflow.def.checkpoint)
    }

    /// Its timeout: its own, or its definition's.
    pub(crate) fn timeout(&self) -> Option<std::time::Duration> {
        let defined = self.workflow.def.timeout_ms;
        (self.options.timeout).or(defined.map(std::time::Duration::from_millis))
    }

    /// When its timeout ends it (Unix ms), if it has one.
    pub(crate) fn deadline_ms(&self) -> Option<i64> {
        let t = self.timeout()?;
        Some(
            self.since_ms
                .saturating_add(i64::try_from(t.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// Drives the tree with no event: the first steps start.
    pub(crate) fn start(&mut self, now_ms: i64) -> Vec<Action> {
        self.drive(None, now_ms)
    }

    /// Applies one journaled event and drives the tree.
    pub(crate) fn apply(&mut self, event: RunEvent, now_ms: i64) -> Vec<Action> {
        self.updated_at_ms = now_ms;
        match event {
            RunEvent::Retry => {
                self.generation += 1;
                self.since_ms = now_ms;
                self.error = None;
                self.finished_at_ms = None;
                self.status = RunStatus::Running;
                self.running.clear();
                self.root.reset_unfinished();
                self.drive(None, now_ms)
            }
            RunEvent::Step(key, result) => {
                if self.running.remove(&key).is_none() {
                    // Not in flight: a duplicate delivery, or a step of a failed run.
                    return Vec::new();
                }
                if matches!(result, StepResult::Done(_)) {
                    self.steps_completed += 1;
                }
                self.drive(Some((key, result)), now_ms)
            }
        }
    }

    fn drive(&mut self, event: Option<(String, StepResult)>, now_ms: i64) -> Vec<Action> {
        if !self.status.is_active() {
            return Vec::new();
        }
        let mut ctx = Ctx {
            state: &mut self.state,
            fns: &self.workflow.fns,
            event,
            timers: &self.timers,
            now_ms,
            actions: Vec::new(),
        };
        let progress = self.root.drive(&mut ctx);
        let actions = ctx.actions;
        for action in &actions {
            self.running.insert(action.key().to_string(), now_ms);
        }
        match progress {
            Progress::Running => {}
            Progress::Done => self.finish(RunStatus::Completed, None, now_ms),
            Progress::Failed(key, error) => self.finish(
                RunStatus::Failed,
                Some(format!("step {key}: {error}")),
                now_ms,
            ),
        }
        actions
    }

    /// Ends the run (or stops it, for `Failed` and `Stopped`: a retry may go on).
    pub(crate) fn finish(&mut self, status: RunStatus, error: Option<String>, now_ms: i64) {
        self.status = status;
        self.error = error;
        self.updated_at_ms = now_ms;
        self.finished_at_ms = Some(now_ms);
    }

    /// Its idempotency key for the step `key` in this generation.
    pub(crate) fn task_key(&self, key: &str) -> String {
        format!("wf:{}:{}:{key}", self.id, self.generation)
    }

    /// What callers see.
    pub(crate) fn snapshot(&self) -> RunSnapshot {
        RunSnapshot {
            id: self.id,
            workflow: self.workflow.name().to_string(),
            version: self.version.to_string(),
            status: self.status,
            steps_completed: self.steps_completed,
            steps_total: self.steps_completed + self.root.remaining(),
            steps_running: self.running.clone(),
            state: self.state.clone(),
            error: self.error.clone(),
            retries: self.generation,
            checkpoint: Some(self.checkpoint()),
            deadline_ms: self.deadline_ms(),
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
            finished_at_ms: self.finished_at_ms,
        }
    }
}

/// One run in memory.
pub(crate) struct RunEntry {
    pub(crate) core: RunCore,
    /// Step tasks by key, once the queue took them.
    pub(crate) tasks: HashMap<String, TaskId>,
    /// Starts waiting for a resume.
    pub(crate) held: Vec<Action>,
    pub(crate) waiters: Vec<oneshot::Sender<RunSnapshot>>,
    /// The parent's run, generation and step, for a child run (in memory: a recovered
    /// parent links its children again when it asks for them).
    pub(crate) parent: Option<(RunId, u32, String)>,
    /// How deep it is under its top parent.
    pub(crate) depth: u32,
    /// Child runs started by its steps, by step key.
    pub(crate) children: HashMap<String, RunId>,
}

impl RunEntry {
    pub(crate) fn new(core: RunCore) -> Self {
        Self {
            core,
            tasks: HashMap::new(),
            held: Vec::new(),
            waiters: Vec::new(),
            parent: None,
            depth: 0,
            children: HashMap::new(),
        }
    }

    /// The run's snapshot. A step whose start a pause holds back is not running yet (the
    /// run's core counts it as running from the moment it was ready).
    pub(crate) fn snapshot(&self) -> RunSnapshot {
        let mut s = self.core.snapshot();
        for action in &self.held {
            if let Action::Start { key, .. } = action {
                s.steps_running.remove(key);
            }
        }
        s
    }
}
