//! Load shedding: under overload, new low-priority work is refused first.
//!
//! The signal is the queue's own backlog: tasks queued (runnable now). Past
//! `shed_low_above`, new `Low` tasks are refused; past `shed_normal_above`, new `Normal`
//! ones too; `High` and `Critical` tasks always enter (up to `max_queue_size`). A batch is
//! weighed in order, each task admitted adding to the backlog the next one meets, so a
//! single large batch cannot carry the queue far past a mark. Nothing already accepted is
//! ever dropped: a refusal happens at submit, before the task exists. Retries, re-queues and
//! lost leases are not submits; workflow steps of a run already started are submitted
//! exempt, so a run is never cut in half by shedding.
//!
//! Graceful degradation: while every compute node's circuit breaker is open (the
//! coordinator tells the queue, [`QueueCore::set_degraded`]), new `Low` tasks are shed
//! whatever the backlog, so the work that still matters is not queued behind work the
//! broken backends cannot serve anyway.

use super::*;

/// How a submit meets load shedding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// A task shed refuses the whole batch (`QueueError::Overloaded`): all or none.
    Whole,
    /// Tasks shed are left out and named; the others are accepted.
    Each,
    /// Never shed: the steps of workflow runs already accepted.
    Exempt,
}

/// The "setting" a degraded refusal names.
const DEGRADED: &str = "every compute node's circuit breaker is open";

impl QueueCore {
    /// Sheds new `Low` work whatever the backlog while `on` (every compute node is
    /// open-circuited), or stops doing so.
    pub(crate) fn set_degraded(&mut self, on: bool) {
        if self.degraded != on {
            tracing::warn!(
                degraded = on,
                "low-priority work {} while compute nodes are all open-circuited",
                if on { "is shed" } else { "is accepted again" }
            );
        }
        self.degraded = on;
    }

    /// True when a new task of `priority` is shed with `queued` tasks queued.
    fn sheds(&self, priority: TaskPriority, queued: usize) -> bool {
        self.shed_mark(priority)
            .is_some_and(|(mark, setting)| queued > mark || setting == DEGRADED)
    }

    /// Tasks queued now: the backlog shedding weighs.
    fn backlog(&self) -> usize {
        self.queued_by_priority.iter().sum()
    }

    /// The mark over which new tasks of `priority` are shed, with the setting holding it.
    fn shed_mark(&self, priority: TaskPriority) -> Option<(usize, &'static str)> {
        if self.degraded && priority == TaskPriority::Low {
            return Some((0, DEGRADED));
        }
        let low = self.config.shed_low_above.map(|m| (m, "shed_low_above"));
        let normal = self
            .config
            .shed_normal_above
            .map(|m| (m, "shed_normal_above"));
        match priority {
            // Low work goes first: the lower of the two marks.
            TaskPriority::Low => match (low, normal) {
                (Some(l), Some(n)) => Some(if n.0 < l.0 { n } else { l }),
                (l, n) => l.or(n),
            },
            TaskPriority::Normal => normal,
            TaskPriority::High | TaskPriority::Critical => None,
        }
    }

    /// The highest priority shed now, if any is.
    pub(super) fn shedding_up_to(&self) -> Option<TaskPriority> {
        let queued = self.backlog();
        [TaskPriority::Normal, TaskPriority::Low]
            .into_iter()
            .find(|&p| self.sheds(p, queued))
    }

    /// The positions of the specs that shedding refuses, weighing the batch in order (each
    /// new runnable task admitted adds to the backlog). A spec whose idempotency key is
    /// known (`known`, or memory) makes no new task and is never shed. Counts the refusals.
    pub(super) fn shed(
        &mut self,
        specs: &[TaskSpec],
        known: &HashMap<String, TaskId>,
        admission: Admission,
    ) -> Vec<usize> {
        let mut shed = Vec::new();
        if admission == Admission::Exempt
            || (self.config.shed_low_above.is_none()
                && self.config.shed_normal_above.is_none()
                && !self.degraded)
        {
            return shed;
        }
        let mut queued = self.backlog();
        let mut keys = HashSet::new();
        for (i, spec) in specs.iter().enumerate() {
            let fresh = match &spec.options.idempotency_key {
                Some(k) => {
                    !self.idempotency.contains_key(k)
                        && !known.contains_key(k)
                        && keys.insert(k.as_str())
                }
                None => true,
            };
            if !fresh {
                continue;
            }
            let priority = spec.options.priority;
            if self.sheds(priority, queued) {
                shed.push(i);
                continue;
            }
            if spec.options.delay.is_none_or(|d| d.is_zero()) {
                queued += 1;
            }
        }
        for &i in &shed {
            self.counters.shed[specs[i].options.priority.index()] += 1;
        }
        shed
    }

    /// The refusal of `refused` tasks of `priority` by shedding.
    pub(super) fn overloaded(&self, priority: TaskPriority, refused: usize) -> QueueError {
        let (mark, setting) = self
            .shed_mark(priority)
            .expect("only priorities with a mark are shed");
        QueueError::Overloaded {
            priority,
            queued: self.backlog(),
            mark,
            setting,
            refused,
            retry_after: self.config.shed_retry_after,
        }
    }
}
