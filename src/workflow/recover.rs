//! Bringing runs back from the journal: at start every unfinished run, and on demand a
//! finished one being retried. A run is pinned to the definition version it started with:
//! the registered one, or the stored JSON of that version when it names no input
//! function; without either it stops, saying why, instead of hanging.

use std::sync::Arc;

use super::def::{Input, Step, Workflow, WorkflowDef};
use super::engine::{now_ms, EngineState};
use super::journal;
use super::msg::Deferred;
use super::node::Action;
use super::run::RunEntry;
use super::WorkflowMetrics;
use super::{RunId, RunStatus, WorkflowError};
use crate::store::{WorkflowEventRow, WorkflowRunRow};

/// Reads every stored definition, so that runs of JSON definitions (and of Rust ones
/// without input functions) recover even before their code registers them again.
pub(crate) async fn load_definitions(state: &mut EngineState) -> Result<(), WorkflowError> {
    let Some(store) = &state.store else {
        return Ok(());
    };
    let stored = store
        .workflow_definitions()
        .await
        .map_err(|e| WorkflowError::Store(e.to_string()))?;
    for (name, version, json) in stored {
        match serde_json::from_str::<WorkflowDef>(&json) {
            Ok(def) if !names_functions(&def.steps) => {
                state
                    .defs
                    .insert((name, version), Arc::new(Workflow::from_def(def)));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(workflow = %name, %version, error = %e, "stored workflow definition unreadable")
            }
        }
    }
    Ok(())
}

fn names_functions<'a>(steps: impl IntoIterator<Item = &'a Step>) -> bool {
    steps.into_iter().any(|s| {
        let input = match s {
            Step::Task(t) => Some(&t.input),
            Step::Dynamic(d) => Some(&d.input),
            Step::Child(c) => Some(&c.input),
            _ => None,
        };
        matches!(input, Some(Input::Fn(_))) || names_functions(s.children())
    })
}

/// Rebuilds every unfinished run and starts again what was in flight.
pub(crate) async fn recover_runs(state: &mut EngineState) -> Result<(), WorkflowError> {
    let Some(store) = state.store.clone() else {
        return Ok(());
    };
    let started = std::time::Instant::now();
    let runs = store
        .unfinished_workflow_runs()
        .await
        .map_err(|e| WorkflowError::Store(e.to_string()))?;
    let count = runs.len();
    for (row, events) in runs {
        restore(state, &row, &events);
    }
    if count > 0 {
        tracing::info!(
            runs = count,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "workflow runs recovered"
        );
    }
    Ok(())
}

/// Loads one run from the store into memory (to retry it).
pub(crate) async fn load_run(state: &mut EngineState, run: RunId) -> Result<(), WorkflowError> {
    let store = state.store.clone().ok_or(WorkflowError::RunNotFound(run))?;
    let (row, events) = store
        .workflow_run(run.0)
        .await
        .map_err(|e| WorkflowError::Store(e.to_string()))?
        .ok_or(WorkflowError::RunNotFound(run))?;
    restore(state, &row, &events);
    if state.runs.contains_key(&run) {
        Ok(())
    } else {
        Err(WorkflowError::Store(format!(
            "run {run} could not be rebuilt from its journal"
        )))
    }
}

pub(crate) fn restore(state: &mut EngineState, row: &WorkflowRunRow, events: &[WorkflowEventRow]) {
    let id = RunId(row.id);
    let key = (row.workflow.clone(), row.version.clone());
    let Some(workflow) = state.defs.get(&key).cloned() else {
        stop(state, row, format!(
            "definition {} version {} is not registered (it names input functions, or was never stored)",
            row.workflow, row.version
        ));
        return;
    };
    let (core, again) = match journal::replay(row, events, workflow) {
        Ok(rebuilt) => rebuilt,
        Err(e) => {
            stop(state, row, format!("journal unreadable: {e}"));
            return;
        }
    };
    let generation = core.generation;
    let status = core.status;
    let mut entry = RunEntry::new(core);
    if status.is_active() {
        WorkflowMetrics::add(&state.metrics.recovered);
        WorkflowMetrics::add(&state.metrics.active);
    }
    for action in &again {
        if matches!(action, Action::Start { .. }) {
            state.unsure.insert((id, action.key().to_string()));
        }
    }
    match status {
        RunStatus::Running => {
            for action in again {
                state.deferred.push(Deferred::Start(id, generation, action));
            }
        }
        RunStatus::Paused => entry.held = again,
        _ => state.finished.push_back(id),
    }
    state.runs.insert(id, entry);
    state.arm_deadline(id);
    if !status.is_active() || status != row.status.parse().unwrap_or(status) {
        state.dirty.insert(id);
    }
}

/// Marks a run that cannot go on as stopped, with why.
fn stop(state: &mut EngineState, row: &WorkflowRunRow, why: String) {
    tracing::error!(run = %row.id, workflow = %row.workflow, version = %row.version, reason = %why, "workflow run stopped");
    let now = now_ms();
    let mut row = row.clone();
    row.status = RunStatus::Stopped.as_str().to_string();
    row.error = Some(why);
    row.updated_at_ms = now;
    row.finished_at_ms = Some(now);
    state.batch.runs.push(row);
    WorkflowMetrics::add(&state.metrics.stopped);
}
