//! Reads: outcomes, snapshots, lists and counters.

use super::*;

impl QueueCore {
    pub(crate) fn outcome(&self, id: TaskId) -> Option<Option<TaskOutcome>> {
        let e = self.tasks.get(&id)?;
        Some(match e.status {
            TaskStatus::Completed => Some(TaskOutcome::Completed {
                result: e.run().result.clone().unwrap_or_else(Payload::null),
            }),
            TaskStatus::Failed => Some(TaskOutcome::Failed {
                error: e.run().error.clone().unwrap_or_default(),
            }),
            TaskStatus::Cancelled => Some(TaskOutcome::Cancelled),
            TaskStatus::Timeout => Some(TaskOutcome::Timeout),
            _ => None,
        })
    }

    pub(crate) fn snapshot(&self, id: TaskId) -> Option<TaskSnapshot> {
        let e = self.tasks.get(&id)?;
        Some(TaskSnapshot {
            id,
            task_type: e.task_type.to_string(),
            status: e.status,
            options: (*e.options).clone(),
            payload: e.payload.clone(),
            result: e.run().result.clone(),
            error: e.run().error.clone(),
            attempts: e.run().attempts.clone(),
            created_at: e.created_at,
            finished_at: e.run().finished_at,
            unroutable: e.status == TaskStatus::Queued && !self.classes[e.class].routable,
        })
    }

    /// Tasks with `status` (all when `None`), oldest first, at most `limit`, starting after
    /// `after` (a cursor: the last id of the previous page).
    pub(crate) fn list(&self, q: &crate::task::TaskQuery) -> Vec<TaskSnapshot> {
        let (status, after, limit) = (q.status, q.after, q.limit);
        let past_cursor = |id: &TaskId| match (after, q.newest_first) {
            (None, _) => true,
            (Some(a), false) => *id > a,
            (Some(a), true) => *id < a,
        };
        let mut ids: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(id, e)| {
                status.is_none_or(|s| e.status == s)
                    && past_cursor(id)
                    && q.task_type.as_deref().is_none_or(|t| *e.task_type == *t)
            })
            .map(|(id, _)| *id)
            .collect();
        // Ids sort by creation time. This runs inside the queue actor: select the page in
        // linear time, and sort only the page, not every retained task.
        let order = |a: &TaskId, b: &TaskId| {
            if q.newest_first {
                b.cmp(a)
            } else {
                a.cmp(b)
            }
        };
        if limit == 0 {
            return Vec::new();
        }
        if ids.len() > limit {
            ids.select_nth_unstable_by(limit - 1, order);
            ids.truncate(limit);
        }
        ids.sort_unstable_by(order);
        ids.into_iter().filter_map(|id| self.snapshot(id)).collect()
    }

    pub(crate) fn dead_letters(&self, limit: usize) -> Vec<TaskSnapshot> {
        self.dead
            .values()
            .take(limit)
            .filter_map(|id| self.snapshot(*id))
            .collect()
    }

    pub(crate) fn stats(&self) -> QueueStats {
        let queued: usize = self.queued_by_priority.iter().sum();
        QueueStats {
            queue_size: self.waiting(),
            queued,
            pending: self.delayed.len(),
            queued_by_priority: crate::queue::PriorityCounts::from_array(self.queued_by_priority),
            running: self.running,
            submitted: self.counters.submitted,
            completed: self.counters.completed,
            failed: self.counters.failed,
            cancelled: self.counters.cancelled,
            timed_out: self.counters.timed_out,
            retried: self.counters.retried,
            leases_lost: self.counters.lease_lost,
            recovered: self.counters.recovered,
            stale_reports: self.counters.stale_reports,
            dead_lettered: self.dead.len(),
            live_bytes: self.live_bytes,
            finished_bytes: self.finished_bytes,
            dead_letter_bytes: self.dead_bytes,
            unroutable: self
                .classes
                .iter()
                .filter(|c| !c.routable)
                .map(|c| c.live)
                .sum(),
            workers: self.workers.len(),
            free_credits: self.workers.values().map(|w| w.credits as u64).sum(),
        }
    }
}
