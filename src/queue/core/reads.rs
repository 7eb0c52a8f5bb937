//! Reads: outcomes, snapshots, lists and counters.

use super::*;

impl QueueCore {
    pub(crate) fn outcome(&self, id: TaskId) -> Option<Option<TaskOutcome>> {
        let e = self.tasks.get(&id)?;
        Some(match e.status() {
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
            task_type: self.classes[e.class()].key.task_type.to_string(),
            status: e.status(),
            options: e.full_options(),
            payload: e.payload.clone(),
            result: e.run().result.clone(),
            error: e.run().error.clone(),
            attempts: e.run().attempts.clone(),
            created_at: e.created_at(id),
            finished_at: e.run().finished_at,
            unroutable: e.status() == TaskStatus::Queued && !self.classes[e.class()].routable,
        })
    }

    /// Tasks with `status` (all when `None`), oldest first, at most `limit`, starting after
    /// `after` (a cursor: the last id of the previous page).
    ///
    /// Each status keeps its ids in creation order, so a page walks from the cursor and
    /// stops at `limit`: O(log n + limit) for each status listed, whatever the queue holds
    /// (a `task_type` filter also walks past the tasks of other types).
    pub(crate) fn list(&self, q: &crate::task::TaskQuery) -> Vec<TaskSnapshot> {
        if q.limit == 0 {
            return Vec::new();
        }
        let statuses = match q.status {
            Some(s) => vec![s],
            None => TaskStatus::ALL.to_vec(),
        };
        let mut ids: Vec<TaskId> = Vec::new();
        for status in statuses {
            ids.extend(self.page_of(status, q));
        }
        // One status's page is in order already; several are merged.
        if q.newest_first {
            ids.sort_unstable_by(|a, b| b.cmp(a));
        } else {
            ids.sort_unstable();
        }
        ids.truncate(q.limit);
        ids.into_iter().filter_map(|id| self.snapshot(id)).collect()
    }

    /// The first `q.limit` ids with `status` past the cursor, in listing order.
    fn page_of(&self, status: TaskStatus, q: &crate::task::TaskQuery) -> Vec<TaskId> {
        let set = self.tasks.with_status(status);
        let of_type = |id: &TaskId| {
            q.task_type
                .as_deref()
                .is_none_or(|t| *self.classes[self.tasks[id].class()].key.task_type == *t)
        };
        if q.newest_first {
            set.before(q.after).filter(of_type).take(q.limit).collect()
        } else {
            set.after(q.after).filter(of_type).take(q.limit).collect()
        }
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
        self.stats_with(queued)
    }

    /// Queued tasks per routing class, classes with queued tasks only.
    pub(crate) fn class_backlog(&self) -> Vec<crate::queue::ClassBacklog> {
        self.classes
            .iter()
            .filter(|c| c.live > 0)
            .map(|c| crate::queue::ClassBacklog {
                task_type: c.key.task_type.clone(),
                labels: c.key.labels.to_vec(),
                queued: c.live,
                routable: c.routable,
            })
            .collect()
    }

    fn stats_with(&self, queued: usize) -> QueueStats {
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
            stale_progress: self.counters.stale_progress,
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
            affinity_keys: self.affinity.bindings.len(),
            affinity_waiting: self.affinity.waiting(),
            affinity_fallbacks: self.affinity.fallbacks,
            affinity_evicted: self.affinity.bindings.evicted(),
            shedding: self.shedding_up_to().is_some(),
            shedding_up_to: self.shedding_up_to(),
            shed: crate::queue::PriorityCounts::from_array(self.counters.shed),
        }
    }
}
