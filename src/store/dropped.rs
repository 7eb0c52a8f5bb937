//! New tasks the writer could not store, remembered for a while, so a later submit that
//! the queue answered with one of them ("this idempotency key is task X") is not told X
//! exists once X is gone.
//!
//! The race: X's submit is in a commit; a second submit with X's key is answered "existing
//! X" by the queue; X's commit is then refused (the database failed, or refused the row for
//! good, or another task already held the key in the database). The queue drops X when it
//! hears so, but the second submit's answer was already on its way to the writer, to be
//! confirmed by a later commit. The writer checks each waiting submit against this list:
//! one naming a task that was simply not stored is refused when it arrives (nothing of it
//! is stored, and the caller may submit again); one naming a task left out because another
//! holds its key is answered with that holder.

use std::collections::VecDeque;

use crate::task::{IdMap, TaskId};

/// How many dropped tasks are remembered: far more than can be in flight between the
/// queue and the writer.
const REMEMBERED: usize = 65_536;

/// What became of a task the writer could not store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fate {
    /// Not stored; nothing took its place.
    Lost,
    /// Left out because this task holds its idempotency key in the database.
    HeldBy(TaskId),
}

/// The most recent tasks the writer could not store, oldest first.
#[derive(Debug, Default)]
pub(super) struct Dropped {
    order: VecDeque<TaskId>,
    fates: IdMap<Fate>,
}

impl Dropped {
    /// Remembers that `id` was not stored.
    pub(super) fn note(&mut self, id: TaskId, fate: Fate) {
        if self.fates.insert(id, fate).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.fates.remove(&old);
            }
        }
    }

    /// The first of `tasks` that was lost outright: a submit answered with it must be
    /// refused.
    pub(super) fn first_lost(&self, tasks: &[TaskId]) -> Option<TaskId> {
        tasks
            .iter()
            .copied()
            .find(|id| self.fates.get(id) == Some(&Fate::Lost))
    }

    /// The task holding the idempotency key `id` was left out for, if it was.
    pub(super) fn holder(&self, id: TaskId) -> Option<TaskId> {
        match self.fates.get(&id) {
            Some(Fate::HeldBy(holder)) => Some(*holder),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_naming_a_lost_task_is_refused_and_one_naming_a_left_out_task_gets_its_holder() {
        let (lost, left_out, holder, fine) =
            (TaskId::new(), TaskId::new(), TaskId::new(), TaskId::new());
        let mut dropped = Dropped::default();
        dropped.note(lost, Fate::Lost);
        dropped.note(left_out, Fate::HeldBy(holder));

        assert_eq!(dropped.first_lost(&[fine, left_out]), None);
        assert_eq!(dropped.holder(left_out), Some(holder));
        assert_eq!(dropped.holder(fine), None);
        assert_eq!(dropped.holder(lost), None);

        assert_eq!(dropped.first_lost(&[fine, lost]), Some(lost));
    }

    #[test]
    fn only_the_most_recent_are_remembered() {
        let mut dropped = Dropped::default();
        let first = TaskId::new();
        dropped.note(first, Fate::Lost);
        for _ in 0..REMEMBERED {
            dropped.note(TaskId::new(), Fate::Lost);
        }
        assert_eq!(dropped.order.len(), REMEMBERED);
        assert_eq!(dropped.first_lost(&[first]), None);
    }
}
