//! Child runs: a step that runs another registered workflow. The child's id follows from
//! its parent's id, retry generation and step key, so a parent rebuilt from its journal
//! asks for the same child again and finds it (in memory, or finished in the store)
//! instead of starting a second one. The child's end is the parent step's event.

use std::collections::BTreeMap;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::engine::EngineState;
use super::msg::EngineMsg;
use super::node::StepResult;
use super::run::RunEvent;
use super::{RunId, RunStatus, WorkflowError};
use crate::store::{WorkflowEventRow, WorkflowRunRow};

/// Deepest nesting of child runs under one top-level run.
pub const MAX_CHILD_DEPTH: u32 = 16;

/// Where a child run reports: its parent's run, generation and step, and its depth.
#[derive(Clone, Debug)]
pub(crate) struct Parent {
    pub(crate) step: (RunId, u32, String),
    pub(crate) depth: u32,
}

/// A child run a parent's step asked for.
#[derive(Clone, Debug)]
pub(crate) struct ChildWanted {
    pub(crate) id: RunId,
    pub(crate) parent: Parent,
    pub(crate) workflow: String,
    pub(crate) input: Value,
}

/// The child run of `parent`'s step `key` in `generation`.
pub(crate) fn child_id(parent: RunId, generation: u32, key: &str) -> RunId {
    let mut hash = Sha256::new();
    hash.update(parent.0.as_bytes());
    hash.update(generation.to_be_bytes());
    hash.update(key.as_bytes());
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    RunId(uuid::Builder::from_custom_bytes(bytes).into_uuid())
}

impl EngineState {
    /// A step of `run` asks for its child run.
    pub(crate) fn start_child(
        &mut self,
        run: RunId,
        generation: u32,
        key: String,
        workflow: String,
        input: Value,
    ) {
        let Some(entry) = self.runs.get_mut(&run) else {
            return;
        };
        let id = child_id(run, generation, &key);
        entry.children.insert(key.clone(), id);
        let want = ChildWanted {
            id,
            parent: Parent {
                step: (run, generation, key),
                depth: entry.depth + 1,
            },
            workflow,
            input,
        };
        if self.runs.contains_key(&id) {
            self.link_child(want);
            return;
        }
        let Some(store) = self.store.clone() else {
            self.child_found(want, Ok(None));
            return;
        };
        // Not in memory: it may have finished before a restart (finished runs are not
        // recovered), or never have started.
        let me = self.me.clone();
        tokio::spawn(async move {
            let found = store
                .workflow_run(want.id.0)
                .await
                .map_err(|e| e.to_string());
            let _ = me.send(EngineMsg::ChildFound { want, found });
        });
    }

    /// The store's answer about a wanted child: load it, or start it.
    pub(crate) fn child_found(
        &mut self,
        want: ChildWanted,
        found: Result<Option<(WorkflowRunRow, Vec<WorkflowEventRow>)>, String>,
    ) {
        let (run, generation, key) = want.parent.step.clone();
        if !self.wants(run, generation, &key) {
            return;
        }
        let fail = |e: String| RunEvent::Step(key.clone(), StepResult::Failed(e));
        match found {
            Err(e) => self.record(run, fail(format!("child run {}: store: {e}", want.id))),
            Ok(Some((row, events))) => {
                if !self.runs.contains_key(&want.id) {
                    super::recover::restore(self, &row, &events);
                }
                self.link_child(want);
            }
            Ok(None) if self.runs.contains_key(&want.id) => self.link_child(want),
            Ok(None) => {
                if want.parent.depth > MAX_CHILD_DEPTH {
                    let e = format!("child runs nest deeper than {MAX_CHILD_DEPTH}");
                    self.record(run, fail(e));
                    return;
                }
                let input: BTreeMap<String, Value> = match want.input {
                    Value::Object(map) => map.into_iter().collect(),
                    other => BTreeMap::from([("input".to_string(), other)]),
                };
                let started = self.start_run(
                    &want.workflow,
                    input,
                    super::RunOptions::default(),
                    Some((want.id, want.parent.clone())),
                );
                if let Err(e) = started {
                    let e = match e {
                        WorkflowError::UnknownWorkflow(w) => {
                            format!("child workflow {w:?} is not registered")
                        }
                        other => format!("child run not started: {other}"),
                    };
                    self.record(run, fail(e));
                }
            }
        }
    }

    /// Ties a child run in memory to its parent's step; if it already ended, the step
    /// ends with it.
    fn link_child(&mut self, want: ChildWanted) {
        let Some(child) = self.runs.get_mut(&want.id) else {
            return;
        };
        child.parent = Some(want.parent.step);
        child.depth = want.parent.depth;
        if !child.core.status.is_active() {
            self.ended_child(want.id);
        }
    }

    fn wants(&self, run: RunId, generation: u32, key: &str) -> bool {
        self.runs.get(&run).is_some_and(|e| {
            e.core.generation == generation
                && e.core.status.is_active()
                && e.core.running.contains_key(key)
        })
    }

    /// A run ended: if it is a child, its parent's step ends with it.
    pub(crate) fn ended_child(&mut self, child: RunId) {
        let Some(entry) = self.runs.get(&child) else {
            return;
        };
        let Some((run, generation, key)) = entry.parent.clone() else {
            return;
        };
        if !self.wants(run, generation, &key) {
            return;
        }
        let core = &entry.core;
        let result = match core.status {
            RunStatus::Completed => {
                StepResult::Done(Value::Object(core.state.clone().into_iter().collect()))
            }
            status => StepResult::Failed(match &core.error {
                Some(e) => format!("child run {child} {}: {e}", status.as_str()),
                None => format!("child run {child} {}", status.as_str()),
            }),
        };
        self.record(run, RunEvent::Step(key, result));
    }

    /// A run ended: its active children are cancelled.
    pub(crate) fn cancel_children(&mut self, run: RunId) {
        let Some(entry) = self.runs.get_mut(&run) else {
            return;
        };
        let children: Vec<RunId> = entry.children.drain().map(|(_, id)| id).collect();
        let now = super::engine::now_ms();
        for id in children {
            let Some(child) = self.runs.get_mut(&id) else {
                continue;
            };
            if child.core.status.is_active() {
                child.core.finish(RunStatus::Cancelled, None, now);
                self.end(id);
            }
        }
    }
}
