//! Between the engine and the store: the rows of a run and of its events, and the replay
//! that rebuilds a run from them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;

use super::def::Workflow;
use super::node::{Action, StepResult};
use super::run::{RunCore, RunEvent};
use super::{RunId, RunOptions, RunSnapshot, RunStatus};
use crate::store::{WorkflowEventRow, WorkflowRunRow};

/// Event kinds as stored.
pub(crate) const DONE: &str = "done";
pub(crate) const FAILED: &str = "failed";
pub(crate) const RETRY: &str = "retry";
pub(crate) const TIMER: &str = "timer";
pub(crate) const OPTIONS: &str = "options";

/// The row of `run` as it is now; the first one takes the run's input (later rows update
/// it in place and leave the input as written).
pub(crate) fn run_row(run: &mut RunCore) -> WorkflowRunRow {
    let finished = run.finished_at_ms.is_some();
    WorkflowRunRow {
        id: run.id.0,
        workflow: run.workflow.name().to_string(),
        version: run.version.to_string(),
        status: run.status.as_str().to_string(),
        input: run.input.take(),
        generation: i64::from(run.generation),
        error: run.error.clone(),
        state: finished.then(|| serde_json::to_string(&run.state).unwrap_or_default()),
        steps_done: i64::try_from(run.steps_completed).unwrap_or(i64::MAX),
        created_at_ms: run.created_at_ms,
        updated_at_ms: run.updated_at_ms,
        finished_at_ms: run.finished_at_ms,
    }
}

/// The journal row of an event (or a timer's deadline) at `seq`.
pub(crate) fn event_row(run: RunId, seq: i64, event: &Entry, at_ms: i64) -> WorkflowEventRow {
    let (step, kind, value) = match event {
        Entry::Event(RunEvent::Step(key, StepResult::Done(v))) => (
            key.clone(),
            DONE,
            serde_json::to_string(v).unwrap_or_default(),
        ),
        Entry::Event(RunEvent::Step(key, StepResult::Failed(e))) => {
            (key.clone(), FAILED, e.clone())
        }
        Entry::Event(RunEvent::Retry) => (String::new(), RETRY, String::new()),
        Entry::Timer(key, due) => (key.clone(), TIMER, due.to_string()),
        Entry::Options(options) => (String::new(), OPTIONS, options.to_json()),
    };
    WorkflowEventRow {
        run_id: run.0,
        seq,
        step,
        kind: kind.to_string(),
        value,
        at_ms,
    }
}

/// One journal entry.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Entry {
    /// An event the run applies.
    Event(RunEvent),
    /// A timer's deadline (Unix ms), kept so that it holds across restarts.
    Timer(String, i64),
    /// The options the run was started with (its first entry, when it has any).
    Options(RunOptions),
}

fn entry(row: &WorkflowEventRow) -> Result<Entry, String> {
    Ok(match row.kind.as_str() {
        DONE => {
            let v = serde_json::from_str(&row.value)
                .map_err(|e| format!("output of {} at {}: {e}", row.step, row.seq))?;
            Entry::Event(RunEvent::Step(row.step.clone(), StepResult::Done(v)))
        }
        FAILED => Entry::Event(RunEvent::Step(
            row.step.clone(),
            StepResult::Failed(row.value.clone()),
        )),
        RETRY => Entry::Event(RunEvent::Retry),
        TIMER => Entry::Timer(
            row.step.clone(),
            row.value
                .parse()
                .map_err(|e| format!("timer of {} at {}: {e}", row.step, row.seq))?,
        ),
        OPTIONS => Entry::Options(RunOptions::from_json(&row.value)?),
        other => {
            return Err(format!(
                "unknown journal entry kind {other:?} at {}",
                row.seq
            ))
        }
    })
}

/// A run rebuilt from its row and journal, and what must be started again for it (the
/// steps in flight at the end of the journal: their tasks, submitted again under the same
/// idempotency keys, are found again if the queue still has them).
pub(crate) fn replay(
    row: &WorkflowRunRow,
    events: &[WorkflowEventRow],
    workflow: Arc<Workflow>,
) -> Result<(RunCore, Vec<Action>), String> {
    let input: BTreeMap<String, Value> =
        serde_json::from_str(row.input.as_deref().unwrap_or_default())
            .map_err(|e| format!("stored input: {e}"))?;
    let mut run = RunCore::new(
        RunId(row.id),
        workflow,
        row.version.as_str().into(),
        input,
        row.created_at_ms,
    );
    // Options and deadlines first: a sleep that starts during replay finds its own.
    for e in events
        .iter()
        .filter(|e| e.kind == TIMER || e.kind == OPTIONS)
    {
        match entry(e)? {
            Entry::Timer(key, due) => {
                run.timers.insert(key, due);
            }
            Entry::Options(options) => run = run.with_options(options),
            Entry::Event(_) => {}
        }
    }
    let mut wanted: HashMap<String, Action> = HashMap::new();
    let mut keep = |actions: Vec<Action>| {
        for a in actions {
            wanted.insert(a.key().to_string(), a);
        }
    };
    keep(run.start(row.created_at_ms));
    for e in events {
        run.seq = run.seq.max(e.seq);
        if let Entry::Event(event) = entry(e)? {
            keep(run.apply(event, e.at_ms));
        }
    }
    // What the row says wins over what replay concluded: a pause, a cancel or a failure
    // recorded without an event (a start the queue refused, say).
    run.generation = u32::try_from(row.generation).unwrap_or(u32::MAX);
    run.updated_at_ms = row.updated_at_ms;
    let status: RunStatus = row.status.parse()?;
    if status != run.status {
        if status.is_active() && run.status.is_active() {
            run.status = status;
        } else if !status.is_active() {
            run.finish(
                status,
                row.error.clone(),
                row.finished_at_ms.unwrap_or(row.updated_at_ms),
            );
        }
    }
    let mut again: Vec<Action> = wanted
        .into_iter()
        .filter(|(key, _)| run.running.contains_key(key))
        .map(|(_, a)| a)
        .collect();
    again.sort_by(|a, b| a.key().cmp(b.key()));
    Ok((run, again))
}

/// A finished run's snapshot from its row alone.
pub(crate) fn snapshot_of_row(row: &WorkflowRunRow) -> Result<RunSnapshot, String> {
    let state_json = row
        .state
        .as_deref()
        .or(row.input.as_deref())
        .unwrap_or("{}");
    Ok(RunSnapshot {
        id: RunId(row.id),
        workflow: row.workflow.clone(),
        version: row.version.clone(),
        status: row.status.parse()?,
        steps_completed: u64::try_from(row.steps_done).unwrap_or(0),
        steps_total: u64::try_from(row.steps_done).unwrap_or(0),
        steps_running: BTreeMap::new(),
        state: serde_json::from_str(state_json).map_err(|e| format!("stored state: {e}"))?,
        error: row.error.clone(),
        retries: u32::try_from(row.generation).unwrap_or(u32::MAX),
        checkpoint: None,
        deadline_ms: None,
        created_at_ms: row.created_at_ms,
        updated_at_ms: row.updated_at_ms,
        finished_at_ms: row.finished_at_ms,
    })
}
