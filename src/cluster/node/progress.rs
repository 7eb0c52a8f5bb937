//! Progress from this node's attempts, thinned out per task before it goes to the gate: at
//! most one report every [`EVERY`] per task, and the last one always. A handler that
//! reports on every line of output cannot flood the link; what it reported last still
//! arrives (late by at most one period, or just before the attempt's own report).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::wire::{self, Up};
use crate::task::{LeaseToken, TaskId};

/// The shortest time between two progress reports of one task (20 a second).
pub(super) const EVERY: Duration = Duration::from_millis(50);

/// One progress report, as it goes on the wire.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Note {
    pub(super) worker: Arc<str>,
    pub(super) task_id: TaskId,
    pub(super) token: LeaseToken,
    pub(super) fraction: f32,
    pub(super) message: String,
}

impl Note {
    /// The report as a wire change, its message cut to the wire's limit.
    pub(super) fn into_up(mut self) -> Up {
        wire::cap_progress(&mut self.message);
        Up::Progress {
            worker: self.worker,
            task_id: self.task_id,
            token: self.token,
            fraction: self.fraction,
            message: self.message,
        }
    }
}

/// A task that reported progress within the last period.
#[derive(Debug)]
struct Slot {
    /// When its last report went out.
    sent_at: Instant,
    /// Its newest report since then, held until the period is over.
    held: Option<Note>,
}

/// The per-task thinning.
#[derive(Debug)]
pub(super) struct Coalescer {
    every: Duration,
    /// Tasks that reported within the last period (or have a report held): a task quiet
    /// for a whole period is forgotten, so this holds only the tasks reporting now.
    tasks: HashMap<TaskId, Slot>,
}

impl Coalescer {
    /// At most one report per task every `every`.
    pub(super) fn new(every: Duration) -> Self {
        Self {
            every,
            tasks: HashMap::new(),
        }
    }

    /// A new report: returned to go out now, or held (replacing the one held before).
    pub(super) fn offer(&mut self, note: Note, now: Instant) -> Option<Note> {
        match self.tasks.get_mut(&note.task_id) {
            Some(slot) if now < slot.sent_at + self.every => {
                slot.held = Some(note);
                None
            }
            Some(slot) => {
                slot.sent_at = now;
                slot.held = None;
                Some(note)
            }
            None => {
                let slot = Slot {
                    sent_at: now,
                    held: None,
                };
                self.tasks.insert(note.task_id, slot);
                Some(note)
            }
        }
    }

    /// The held reports whose period is over, to go out now; forgets the tasks that
    /// stayed quiet for a whole period.
    pub(super) fn due(&mut self, now: Instant) -> Vec<Note> {
        let every = self.every;
        let mut out = Vec::new();
        self.tasks.retain(|_, slot| {
            if now < slot.sent_at + every {
                return true;
            }
            match slot.held.take() {
                Some(note) => {
                    slot.sent_at = now;
                    out.push(note);
                    true
                }
                None => false,
            }
        });
        out
    }

    /// A task's attempt ended: its held report, which goes out before the attempt's
    /// report (after it, the coordinator would find the lease gone and drop it).
    pub(super) fn finish(&mut self, task_id: TaskId) -> Option<Note> {
        self.tasks.remove(&task_id).and_then(|slot| slot.held)
    }

    /// How long until [`Coalescer::due`] has something to do; `None` when no task is
    /// tracked.
    pub(super) fn next_due(&self, now: Instant) -> Option<Duration> {
        self.tasks
            .values()
            .map(|slot| (slot.sent_at + self.every).saturating_duration_since(now))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(task_id: TaskId, fraction: f32) -> Note {
        Note {
            worker: "n1/w-1".into(),
            task_id,
            token: LeaseToken {
                epoch: 1,
                attempt: 1,
                nonce: 7,
            },
            fraction,
            message: format!("{fraction}"),
        }
    }

    #[test]
    fn a_chatty_task_sends_one_report_per_period_and_always_its_last() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut c = Coalescer::new(EVERY);
        let (a, b) = (TaskId::new(), TaskId::new());
        // The first report of each task goes at once.
        assert_eq!(c.offer(note(a, 0.0), ms(0)), Some(note(a, 0.0)));
        assert_eq!(c.offer(note(b, 0.5), ms(0)), Some(note(b, 0.5)));
        // 100 more from `a` within the period: all held, only the newest kept.
        for i in 1..=100 {
            assert_eq!(c.offer(note(a, i as f32 / 100.0), ms(i / 4)), None);
        }
        assert_eq!(c.next_due(ms(10)), Some(Duration::from_millis(40)));
        assert!(c.due(ms(49)).is_empty());
        // At the period's end: `a`'s last report goes; `b`, quiet, is forgotten.
        assert_eq!(c.due(ms(50)), vec![note(a, 1.0)]);
        assert_eq!(c.tasks.len(), 1);
        // `a` reports again within its new period: held, and sent before its attempt's
        // own report when the attempt ends first.
        assert_eq!(c.offer(note(a, 0.9), ms(60)), None);
        assert_eq!(c.finish(a), Some(note(a, 0.9)));
        assert!(c.tasks.is_empty() && c.next_due(ms(60)).is_none());
        // A report a whole period after the last one goes at once.
        assert_eq!(c.offer(note(b, 0.1), ms(200)), Some(note(b, 0.1)));
        assert_eq!(c.offer(note(b, 0.2), ms(250)), Some(note(b, 0.2)));
    }

    #[test]
    fn notes_go_on_the_wire_with_their_message_cut() {
        let mut n = note(TaskId::new(), 0.5);
        n.message = "x".repeat(5_000);
        let Up::Progress { message, .. } = n.into_up() else {
            panic!("not progress");
        };
        assert_eq!(message.len(), wire::MAX_PROGRESS_BYTES);
    }
}
