//! Who waits for tasks to finish: single callers, streams of many tasks, and the workflow
//! engine's steps; answered when a task finishes, or at once when it already has.

use std::collections::hash_map::Entry;

use tokio::sync::{mpsc, oneshot};

use super::actor::QueueState;
use super::Submitted;
use crate::task::{IdMap, TaskId, TaskOutcome};

/// Someone waiting for tasks to finish.
#[derive(Debug)]
pub(crate) enum Waiter {
    /// One task, one answer.
    Once(oneshot::Sender<TaskOutcome>),
    /// Many tasks, answered as each finishes.
    Stream(mpsc::UnboundedSender<(TaskId, TaskOutcome)>),
    /// The workflow engine's steps, answered as each finishes. Each answer is followed, a
    /// moment later, by a journal round that must commit with or after the task's
    /// completion: the queue holds the completion back briefly so that both go in one
    /// transaction (see `hold.rs`). `followed`: the engine follows these steps
    /// without waiting for their rows' commit (new steps), so the rows may wait for its
    /// next round however long that takes; otherwise it waits on that commit.
    Steps {
        tx: mpsc::UnboundedSender<(TaskId, TaskOutcome)>,
        followed: bool,
    },
}

impl Waiter {
    pub(super) fn is_closed(&self) -> bool {
        match self {
            Self::Once(tx) => tx.is_closed(),
            Self::Stream(tx) | Self::Steps { tx, .. } => tx.is_closed(),
        }
    }

    pub(super) fn send(self, id: TaskId, outcome: TaskOutcome) {
        match self {
            Self::Once(tx) => {
                let _ = tx.send(outcome);
            }
            Self::Stream(tx) | Self::Steps { tx, .. } => {
                let _ = tx.send((id, outcome));
            }
        }
    }

    pub(super) fn share(&self) -> Option<Self> {
        match self {
            Self::Once(_) => None,
            Self::Stream(tx) => Some(Self::Stream(tx.clone())),
            Self::Steps { tx, followed } => Some(Self::Steps {
                tx: tx.clone(),
                followed: *followed,
            }),
        }
    }
}

pub(super) fn register(state: &mut QueueState, ids: &[Submitted], waiter: Waiter) {
    match waiter.share() {
        // A single waiter belongs to a single-task submit.
        None => wait_or_answer(state, ids[0], waiter),
        Some(_) => {
            for s in ids {
                let w = waiter.share().expect("stream waiters share");
                wait_or_answer(state, *s, w);
            }
        }
    }
}

/// Answers at once for a task that already finished, or registers the waiter. Only a task
/// that an idempotency key matched can have finished: one this submit made has not, so its
/// lookup is skipped (this runs once per submitted task, on the queue's hot path).
fn wait_or_answer(state: &mut QueueState, s: Submitted, waiter: Waiter) {
    if s.existing {
        match state.core.outcome(s.id) {
            Some(Some(outcome)) => {
                waiter.send(s.id, outcome);
                return;
            }
            // Known only to the store (it finished before a restart, or was pruned from
            // memory): dropping the waiter tells the caller to look there.
            None => return,
            Some(None) => {}
        }
    }
    add_waiter(&mut state.waiters, s.id, waiter);
}

/// The waiters of one task. Nearly every task has exactly one, held without a `Vec` so that
/// registering it allocates nothing.
#[derive(Debug)]
pub(super) enum Waiting {
    One(Waiter),
    Many(Vec<Waiter>),
}

impl Waiting {
    /// Only the workflow engine waits: a journal round follows the outcome.
    pub(super) fn is_steps(&self) -> bool {
        matches!(self, Self::One(Waiter::Steps { .. }))
    }

    pub(super) fn send(self, id: TaskId, outcome: TaskOutcome) {
        match self {
            Self::One(w) => w.send(id, outcome),
            Self::Many(list) => {
                for w in list {
                    w.send(id, outcome.clone());
                }
            }
        }
    }
}

/// Adds a waiter for `id`, dropping the ones whose receiver is gone.
pub(super) fn add_waiter(waiters: &mut IdMap<Waiting>, id: TaskId, waiter: Waiter) {
    match waiters.entry(id) {
        Entry::Vacant(slot) => {
            slot.insert(Waiting::One(waiter));
        }
        Entry::Occupied(mut slot) => {
            let mut list = match std::mem::replace(slot.get_mut(), Waiting::Many(Vec::new())) {
                Waiting::One(w) => vec![w],
                Waiting::Many(list) => list,
            };
            list.retain(|w| !w.is_closed());
            list.push(waiter);
            *slot.get_mut() = Waiting::Many(list);
        }
    }
}
