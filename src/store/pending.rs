//! The writer's pending changes: merged by key until the next commit, and cut into the
//! rows of one transaction ([`Batch`]), whole or by units when the database refuses some.

use std::collections::HashMap;
use std::sync::Arc;

use super::batch::SubmitBatch;
use super::rows::{AttemptRow, NewTask, NodeRow, StoreOp, TaskState, WorkerRow};
use super::split::{Key, Unit};
use super::workflows::WorkflowBatch;
use super::StoreError;
use crate::task::{IdMap, IdSet, TaskId};
use ractor::RpcReplyPort;

/// One transaction's worth of rows.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// New tasks, with their latest state.
    pub(crate) inserts: Vec<(NewTask, TaskState)>,
    /// Tasks already stored, with their latest state.
    pub(crate) updates: Vec<TaskState>,
    pub(crate) attempts: Vec<AttemptRow>,
    pub(crate) workers: Vec<WorkerRow>,
    pub(crate) nodes: Vec<NodeRow>,
    pub(crate) heartbeats: Vec<(Vec<Arc<str>>, i64)>,
    /// Workflow run rows and journal events, committed with the task rows.
    pub(crate) workflows: WorkflowBatch,
}

#[derive(Default)]
pub(super) struct TaskWrite {
    pub(super) new: Option<NewTask>,
    pub(super) state: Option<TaskState>,
}

/// Changes not written yet, merged by key.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) tasks: IdMap<TaskWrite>,
    pub(super) attempts: HashMap<(TaskId, i64), AttemptRow>,
    pub(super) workers: HashMap<Arc<str>, WorkerRow>,
    pub(super) nodes: HashMap<Arc<str>, NodeRow>,
    pub(super) heartbeats: Vec<(Vec<Arc<str>>, i64)>,
    /// Submits waiting for the next commit.
    pub(super) acks: Vec<SubmitBatch>,
    pub(super) flushes: Vec<RpcReplyPort<Result<(), StoreError>>>,
    /// Workflow journal rounds, merged; kept across failed commits until they land.
    pub(super) journal: WorkflowBatch,
    /// The engine's rounds waiting for `journal` to land.
    pub(super) journal_acks: Vec<RpcReplyPort<Result<(), StoreError>>>,
}

impl Pending {
    pub(super) fn add(&mut self, op: StoreOp) {
        match op {
            StoreOp::Insert(t) => {
                let id = t.id;
                self.tasks.entry(id).or_default().new = Some(t);
            }
            StoreOp::State(s) => {
                let id = s.id;
                self.tasks.entry(id).or_default().state = Some(s);
            }
            StoreOp::Attempt(a) => {
                self.attempts.insert((a.task_id, a.number), a);
            }
            StoreOp::Worker(w) => {
                self.workers.insert(w.id.clone(), w);
            }
            StoreOp::Node(n) => {
                self.nodes.insert(n.id.clone(), n);
            }
            StoreOp::Heartbeat(ids, at) => self.heartbeats.push((ids, at)),
        }
    }

    /// True when no row waits (only answers may).
    pub(super) fn no_rows(&self) -> bool {
        self.tasks.is_empty()
            && self.attempts.is_empty()
            && self.workers.is_empty()
            && self.nodes.is_empty()
            && self.heartbeats.is_empty()
            && self.journal.is_empty()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.tasks.is_empty()
            && self.attempts.is_empty()
            && self.workers.is_empty()
            && self.nodes.is_empty()
            && self.heartbeats.is_empty()
            && self.acks.is_empty()
            && self.flushes.is_empty()
            && self.journal.is_empty()
            && self.journal_acks.is_empty()
    }

    /// The rows to write. The pending changes stay until the commit succeeds.
    pub(super) fn batch(&self) -> Batch {
        let mut batch = Batch::default();
        for w in self.tasks.values() {
            match (&w.new, &w.state) {
                (Some(new), Some(state)) => batch.inserts.push((new.clone(), state.clone())),
                (None, Some(state)) => batch.updates.push(state.clone()),
                // The queue always sends a task's state with its insert.
                (Some(new), None) => {
                    tracing::error!(task_id = %new.id, "task insert without a state; not written")
                }
                (None, None) => {}
            }
        }
        // Oldest first, so that rows go in in the order tasks were made.
        batch.inserts.sort_unstable_by_key(|(t, _)| t.id);
        batch.attempts = self.attempts.values().cloned().collect();
        batch.workers = self.workers.values().cloned().collect();
        batch.nodes = self.nodes.values().cloned().collect();
        batch.heartbeats = self.heartbeats.clone();
        batch.workflows = self.journal.clone();
        batch
    }

    /// The pending rows cut into units for [`split::write_split`]: the new tasks of one
    /// submit together (a submit is stored whole or refused whole), every other task with
    /// its attempts alone, every registry row and heartbeat alone; oldest tasks first.
    pub(super) fn units(&self) -> Vec<Unit> {
        let mut seen = IdSet::default();
        let mut tasks: Vec<(TaskId, Unit)> = Vec::new();
        for batch in &self.acks {
            let unit: Unit = batch
                .fresh
                .iter()
                .filter(|&&id| self.tasks.contains_key(&id) && seen.insert(id))
                .map(|&id| Key::Task(id))
                .collect();
            if let Some(Key::Task(first)) = unit.first() {
                tasks.push((*first, unit));
            }
        }
        let alone = self
            .tasks
            .keys()
            .chain(self.attempts.keys().map(|(id, _)| id));
        for &id in alone {
            if seen.insert(id) {
                tasks.push((id, vec![Key::Task(id)]));
            }
        }
        tasks.sort_unstable_by_key(|(id, _)| *id);
        let mut units: Vec<Unit> = tasks.into_iter().map(|(_, unit)| unit).collect();
        units.extend(self.workers.keys().map(|w| vec![Key::Worker(w.clone())]));
        units.extend(self.nodes.keys().map(|n| vec![Key::Node(n.clone())]));
        units.extend((0..self.heartbeats.len()).map(|i| vec![Key::Heartbeat(i)]));
        if !self.journal.is_empty() {
            units.push(vec![Key::Journal]);
        }
        units
    }

    /// The rows of some units, as [`Pending::batch`] builds them for all.
    pub(super) fn batch_of(&self, units: &[Unit]) -> Batch {
        let mut batch = Batch::default();
        let mut ids = IdSet::default();
        for key in units.iter().flatten() {
            match key {
                Key::Task(id) => {
                    ids.insert(*id);
                    match self.tasks.get(id).map(|w| (&w.new, &w.state)) {
                        Some((Some(new), Some(state))) => {
                            batch.inserts.push((new.clone(), state.clone()))
                        }
                        Some((None, Some(state))) => batch.updates.push(state.clone()),
                        _ => {}
                    }
                }
                Key::Worker(w) => batch.workers.extend(self.workers.get(w).cloned()),
                Key::Node(n) => batch.nodes.extend(self.nodes.get(n).cloned()),
                Key::Heartbeat(i) => batch.heartbeats.extend(self.heartbeats.get(*i).cloned()),
                Key::Journal => batch.workflows = self.journal.clone(),
            }
        }
        batch.inserts.sort_unstable_by_key(|(t, _)| t.id);
        batch.attempts = self
            .attempts
            .values()
            .filter(|a| ids.contains(&a.task_id))
            .cloned()
            .collect();
        batch
    }

    /// Drops everything about tasks that will not be stored.
    pub(super) fn forget(&mut self, ids: &[TaskId]) {
        for id in ids {
            self.tasks.remove(id);
        }
        if !ids.is_empty() {
            let gone: crate::task::IdSet = ids.iter().copied().collect();
            self.attempts.retain(|(id, _), _| !gone.contains(id));
        }
    }

    pub(super) fn clear_rows(&mut self) {
        self.tasks.clear();
        self.attempts.clear();
        self.workers.clear();
        self.nodes.clear();
        self.heartbeats.clear();
        self.journal = WorkflowBatch::default();
    }
}
