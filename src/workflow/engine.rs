//! The workflow engine actor: every active run's state machine, driven by its steps'
//! outcomes. One actor holds them all (a run is a small state machine, not a task of its
//! own), and each round of events is journaled in one commit before anything it caused
//! (a task, a timer, a run's end) happens: group commit, as the task store does.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::def::Workflow;
use super::journal::{self, Entry};
use super::msg::{Deferred, EngineMsg};
use super::node::Action;
use super::run::{RunCore, RunEntry, RunEvent};
use super::WorkflowMetrics;
use super::{RunId, RunSnapshot, RunStatus, WorkflowError};
use crate::mailbox::{Mailbox, MailboxDepth};
use crate::queue::QueueRef;
use crate::store::{Store, WorkflowBatch};
use crate::task::{TaskId, TaskOutcome};

/// Says whether something runs a task type (handlers here, online nodes).
pub(crate) type Serves = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// What the engine starts with.
pub(crate) struct EngineArgs {
    pub(crate) queue: QueueRef,
    pub(crate) store: Option<Store>,
    pub(crate) serves: Serves,
    pub(crate) depth: MailboxDepth,
    pub(crate) config: super::WorkflowConfig,
    /// Workflows registered before the engine starts, so that their runs recover.
    pub(crate) initial: Vec<Workflow>,
    pub(crate) events: crate::events::EventBus,
    pub(crate) metrics: Arc<super::WorkflowMetrics>,
}

/// The engine's state.
pub(crate) struct EngineState {
    pub(crate) me: Mailbox<EngineMsg>,
    pub(crate) queue: QueueRef,
    pub(crate) store: Option<Store>,
    pub(crate) serves: Serves,
    pub(crate) config: super::WorkflowConfig,
    /// Definitions by name and version.
    pub(crate) defs: HashMap<(String, String), Arc<Workflow>>,
    /// The newest version registered under each name.
    pub(crate) latest: HashMap<String, String>,
    pub(crate) runs: HashMap<RunId, RunEntry>,
    /// Finished runs still in memory, oldest first (at most `config.keep_finished`).
    pub(crate) finished: VecDeque<RunId>,
    /// Which run and step each step task is.
    pub(crate) by_task: HashMap<TaskId, (RunId, String)>,
    /// Steps whose task may already exist (in flight at a restart): their submits ask the
    /// store for their idempotency keys. Every other step's key is new, and is not looked
    /// up.
    pub(crate) unsure: HashSet<(RunId, String)>,
    /// Outcomes that came before the queue's answer to their submit, with when.
    pub(crate) early: HashMap<TaskId, (TaskOutcome, std::time::Instant)>,
    /// Where the queue sends step outcomes.
    pub(crate) outcomes: mpsc::UnboundedSender<(TaskId, TaskOutcome)>,
    /// The journal round being gathered.
    pub(crate) batch: WorkflowBatch,
    /// Runs whose row changed in this round.
    pub(crate) dirty: HashSet<RunId>,
    /// What waits on this round's commit.
    pub(crate) deferred: Vec<Deferred>,
    /// Steps of runs with overlapped checkpoints: queued as soon as this round is sent.
    pub(crate) ahead: Vec<Deferred>,
    /// Rounds sent and not yet reported committed.
    pub(crate) in_flight: usize,
    /// Fires once the newest round sent has been reported committed.
    pub(crate) last_round: Option<oneshot::Receiver<()>>,
    /// Messages handled since the last round was sent.
    pub(crate) since_flush: u32,
    pub(crate) events: crate::events::EventBus,
    pub(crate) metrics: Arc<super::WorkflowMetrics>,
}

/// A round goes at the latest after this many messages, even if more are waiting.
const ROUND_EVERY: u32 = 64;

/// The engine actor.
#[derive(Debug)]
pub(crate) struct WorkflowEngine;

pub(crate) fn now_ms() -> i64 {
    crate::store::ms(SystemTime::now())
}

impl Actor for WorkflowEngine {
    type Msg = EngineMsg;
    type State = EngineState;
    type Arguments = EngineArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<EngineMsg>,
        args: EngineArgs,
    ) -> Result<EngineState, ActorProcessingErr> {
        let me = Mailbox::new(myself.clone(), args.depth);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let forward = me.clone();
        tokio::spawn(async move {
            while let Some((id, outcome)) = rx.recv().await {
                if forward.send(EngineMsg::Outcome(id, outcome)).is_err() {
                    break;
                }
            }
        });
        let mut state = EngineState {
            me,
            queue: args.queue,
            store: args.store,
            serves: args.serves,
            config: args.config,
            defs: HashMap::new(),
            latest: HashMap::new(),
            runs: HashMap::new(),
            finished: VecDeque::new(),
            by_task: HashMap::new(),
            early: HashMap::new(),
            unsure: HashSet::new(),
            outcomes: tx,
            batch: WorkflowBatch::default(),
            dirty: HashSet::new(),
            deferred: Vec::new(),
            ahead: Vec::new(),
            in_flight: 0,
            last_round: None,
            since_flush: 0,
            events: args.events,
            metrics: args.metrics,
        };
        super::recover::load_definitions(&mut state).await?;
        // Before recovery, so that runs of these definitions (input functions and all)
        // find them. Their task types are not checked: nodes that serve them may not have
        // joined yet.
        for workflow in args.initial {
            state.register(workflow, false).await?;
        }
        Ok(state)
    }

    async fn post_start(
        &self,
        _myself: ActorRef<EngineMsg>,
        state: &mut EngineState,
    ) -> Result<(), ActorProcessingErr> {
        super::recover::recover_runs(state).await?;
        state.flush();
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<EngineMsg>,
        msg: EngineMsg,
        state: &mut EngineState,
    ) -> Result<(), ActorProcessingErr> {
        state.me.depth().received();
        match msg {
            EngineMsg::Register { workflow, reply } => {
                let _ = reply.send(state.register(workflow, true).await);
            }
            // Answered once the run's row is committed: a started run survives a crash.
            EngineMsg::Start {
                name,
                input,
                options,
                reply,
            } => match state.start_run(&name, input, options, None) {
                Ok(id) => state.deferred.push(Deferred::Started(id, reply)),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            EngineMsg::Deadline { run, generation } => state.deadline(run, generation),
            EngineMsg::Outcome(id, outcome) => state.outcome(id, outcome),
            EngineMsg::Submitted { steps, result } => state.submitted(steps, result),
            EngineMsg::Fire {
                run,
                generation,
                key,
            } => {
                let current = state.runs.get(&run).is_some_and(|e| {
                    e.core.generation == generation && e.core.running.contains_key(&key)
                });
                if current {
                    state.record(
                        run,
                        RunEvent::Step(key, super::node::StepResult::Done(Value::Null)),
                    );
                }
            }
            EngineMsg::Committed(deferred) => {
                state.in_flight -= 1;
                state.run_deferred(deferred);
            }
            EngineMsg::Control { run, op, reply } => {
                let _ = reply.send(state.control(run, op).await);
            }
            EngineMsg::Get { run, reply } => {
                let _ = reply.send(state.runs.get(&run).map(RunEntry::snapshot));
            }
            EngineMsg::List {
                status,
                limit,
                reply,
            } => {
                // Choose by id and status first: only the page's runs are copied out.
                let mut ids: Vec<RunId> = state
                    .runs
                    .iter()
                    .filter(|(_, e)| status.is_none_or(|s| e.core.status == s))
                    .map(|(id, _)| *id)
                    .collect();
                ids.sort_unstable_by_key(|id| std::cmp::Reverse(*id));
                ids.truncate(limit);
                let list: Vec<RunSnapshot> = ids
                    .iter()
                    .filter_map(|id| state.runs.get(id).map(RunEntry::snapshot))
                    .collect();
                let _ = reply.send(list);
            }
            EngineMsg::Wait { run, reply } => match state.runs.get_mut(&run) {
                Some(e) if !e.core.status.is_active() => {
                    let _ = reply.send(e.snapshot());
                }
                Some(e) => e.waiters.push(reply),
                // Not in memory: dropping the sender tells the caller to read the store.
                None => {}
            },
            EngineMsg::Definitions(reply) => {
                let mut out: Vec<_> = state
                    .latest
                    .iter()
                    .filter_map(|(name, v)| {
                        let wf = state.defs.get(&(name.clone(), v.clone()))?;
                        Some((name.clone(), v.clone(), wf.def.clone()))
                    })
                    .collect();
                out.sort_by(|a, b| a.0.cmp(&b.0));
                let _ = reply.send(out);
            }
            EngineMsg::ChildFound { want, found } => state.child_found(want, found),
            EngineMsg::Bulk { op, filter, reply } => {
                let _ = reply.send(state.bulk(op, &filter).await);
            }
        }
        // A burst of messages (outcomes that came together) makes one round.
        state.since_flush += 1;
        if state.me.depth().get() == 0 || state.since_flush >= ROUND_EVERY {
            state.since_flush = 0;
            state.flush();
        }
        Ok(())
    }
}

impl EngineState {
    async fn register(
        &mut self,
        workflow: Workflow,
        check_types: bool,
    ) -> Result<String, WorkflowError> {
        if check_types {
            super::validate::validate(&workflow, &*self.serves)?;
            let mut children = Vec::new();
            super::validate::child_workflows(&workflow.def.steps, &mut children);
            if let Some((step, name)) = children
                .into_iter()
                .find(|(_, name)| !self.latest.contains_key(name))
            {
                return Err(WorkflowError::invalid(
                    &step,
                    format!("child workflow {name:?} is not registered (register it first)"),
                ));
            }
        } else {
            super::validate::validate(&workflow, &|_| true)?;
        }
        let version = super::validate::version_of(&workflow);
        let name = workflow.name().to_string();
        if let Some(store) = &self.store {
            let json = serde_json::to_string(&workflow.def)
                .map_err(|e| WorkflowError::invalid(&name, e.to_string()))?;
            store
                .save_workflow_definition(&name, &version, &json)
                .await
                .map_err(|e| WorkflowError::Store(e.to_string()))?;
        }
        self.defs
            .insert((name.clone(), version.clone()), Arc::new(workflow));
        self.latest.insert(name, version.clone());
        Ok(version)
    }

    /// Starts a run of the newest version of `name` with `options`: a top-level one, or
    /// the child run `(id, parent)`.
    pub(crate) fn start_run(
        &mut self,
        name: &str,
        input: BTreeMap<String, Value>,
        options: super::RunOptions,
        child: Option<(RunId, super::child::Parent)>,
    ) -> Result<RunId, WorkflowError> {
        options.validate()?;
        let version = self
            .latest
            .get(name)
            .ok_or_else(|| WorkflowError::UnknownWorkflow(name.to_string()))?
            .clone();
        let active = self.runs.len() - self.finished.len();
        if active >= self.config.max_active_runs {
            return Err(WorkflowError::TooManyRuns(active));
        }
        let workflow = self.defs[&(name.to_string(), version.clone())].clone();
        let id = child.as_ref().map_or_else(RunId::new, |(id, _)| *id);
        let now = now_ms();
        let mut core = RunCore::new(id, workflow, version.into(), input, now)
            .new_row()
            .with_options(options);
        if !options.is_empty() {
            core.seq += 1;
            let e = Entry::Options(options);
            self.batch
                .events
                .push(journal::event_row(id, core.seq, &e, now));
        }
        let actions = core.start(now);
        let mut entry = RunEntry::new(core);
        if let Some((_, parent)) = child {
            entry.depth = parent.depth;
            entry.parent = Some(parent.step);
        }
        self.runs.insert(id, entry);
        self.dirty.insert(id);
        WorkflowMetrics::add(&self.metrics.started);
        WorkflowMetrics::add(&self.metrics.active);
        self.announce(id, "started");
        self.arm_deadline(id);
        self.after(id, actions, now);
        Ok(id)
    }

    pub(super) fn outcome(&mut self, id: TaskId, outcome: TaskOutcome) {
        let Some((run, key)) = self.by_task.remove(&id) else {
            self.early.insert(id, (outcome, std::time::Instant::now()));
            return;
        };
        let Some(entry) = self.runs.get_mut(&run) else {
            return;
        };
        if entry.tasks.get(&key) != Some(&id) {
            return;
        }
        entry.tasks.remove(&key);
        let result = match outcome {
            TaskOutcome::Completed { result } => super::node::StepResult::Done(result.to_value()),
            TaskOutcome::Failed { error } => super::node::StepResult::Failed(error),
            TaskOutcome::Timeout => super::node::StepResult::Failed("timed out".into()),
            TaskOutcome::Cancelled => super::node::StepResult::Failed("cancelled".into()),
        };
        self.record(run, RunEvent::Step(key, result));
    }

    /// Journals `event` for `run` and applies it.
    pub(crate) fn record(&mut self, run: RunId, event: RunEvent) {
        let now = now_ms();
        let Some(entry) = self.runs.get_mut(&run) else {
            return;
        };
        if let RunEvent::Step(key, result) = &event {
            let Some(started) = entry.core.running.get(key) else {
                return;
            };
            if !entry.core.status.is_active() {
                return;
            }
            let took = std::time::Duration::from_millis(u64::try_from(now - started).unwrap_or(0));
            self.metrics.step_latency.observe(took);
            let done = matches!(result, super::node::StepResult::Done(_));
            WorkflowMetrics::add(if done {
                &self.metrics.steps_completed
            } else {
                &self.metrics.steps_failed
            });
            self.events
                .publish_with(|| crate::events::EventKind::WorkflowStep {
                    run: run.0,
                    step: key.clone(),
                    status: if done { "completed" } else { "failed" },
                });
        }
        entry.core.seq += 1;
        let row = journal::event_row(run, entry.core.seq, &Entry::Event(event.clone()), now);
        self.batch.events.push(row);
        let actions = entry.core.apply(event, now);
        self.dirty.insert(run);
        self.after(run, actions, now);
    }

    /// What follows a drive of `run`: journal new timers, start (or hold) steps, and end
    /// the run if it ended.
    pub(crate) fn after(&mut self, run: RunId, actions: Vec<Action>, now: i64) {
        let Some(entry) = self.runs.get_mut(&run) else {
            return;
        };
        let generation = entry.core.generation;
        let overlapped = entry.core.checkpoint() == super::Checkpoint::Overlapped;
        for action in actions {
            if let Action::Timer { key, due_ms, new } = &action {
                if *new {
                    entry.core.seq += 1;
                    entry.core.timers.insert(key.clone(), *due_ms);
                    let e = Entry::Timer(key.clone(), *due_ms);
                    self.batch
                        .events
                        .push(journal::event_row(run, entry.core.seq, &e, now));
                }
            }
            match entry.core.status {
                // A task step of an overlapped run does not wait for its start's commit.
                RunStatus::Running if overlapped && matches!(action, Action::Start { .. }) => {
                    self.ahead.push(Deferred::Start(run, generation, action))
                }
                RunStatus::Running => self.deferred.push(Deferred::Start(run, generation, action)),
                RunStatus::Paused => entry.held.push(action),
                _ => {}
            }
        }
        if !entry.core.status.is_active() {
            self.end(run);
        }
    }

    /// A run stopped being active: cancel its tasks, answer its waiters after the commit.
    pub(super) fn end(&mut self, run: RunId) {
        let Some(entry) = self.runs.get_mut(&run) else {
            return;
        };
        entry.held.clear();
        let tasks: Vec<TaskId> = entry.tasks.drain().map(|(_, id)| id).collect();
        for id in &tasks {
            self.by_task.remove(id);
        }
        entry.core.running.clear();
        if !self.unsure.is_empty() {
            self.unsure.retain(|(r, _)| *r != run);
        }
        if !tasks.is_empty() {
            self.deferred.push(Deferred::Cancel(tasks));
        }
        self.deferred.push(Deferred::Ended(run));
        self.dirty.insert(run);
        let status = entry.core.status;
        let m = &self.metrics;
        WorkflowMetrics::add(match status {
            RunStatus::Completed => &m.completed,
            RunStatus::Cancelled => &m.cancelled,
            RunStatus::Stopped => &m.stopped,
            _ => &m.failed,
        });
        m.active.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.announce(run, status.as_str());
        self.ended_child(run);
        self.cancel_children(run);
    }

    /// Publishes a run's change of status.
    pub(crate) fn announce(&self, run: RunId, status: &'static str) {
        let Some(entry) = self.runs.get(&run) else {
            return;
        };
        self.events
            .publish_with(|| crate::events::EventKind::WorkflowRun {
                run: run.0,
                workflow: entry.core.workflow.name().to_string(),
                status,
                error: entry.core.error.clone(),
            });
    }
}
