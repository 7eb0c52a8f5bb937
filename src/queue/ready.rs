//! Routing classes: queued tasks grouped by (task type, required labels), each group one
//! first-in, first-out lane per priority. A worker's request scans only the classes it can
//! serve.
//!
//! A lane is enough for priority-then-age order because a task's place is a sequence number
//! taken when it becomes ready, and numbers only grow: within one priority, arrival order is
//! age order. Taking the best task is then reading the front of the highest non-empty lane,
//! with no heap to sift and no buffer copied when a lane grows (see [`Fifo`]).

use std::cmp::Ordering;
use std::sync::Arc;

use super::fifo::Fifo;
use crate::task::{TaskId, TaskPriority};

/// What a worker must offer to take a task: its type and its required labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ClassKey {
    pub(crate) task_type: Arc<str>,
    /// Sorted and deduplicated.
    pub(crate) labels: Arc<[String]>,
}

impl ClassKey {
    pub(crate) fn new(task_type: Arc<str>, labels: &[String]) -> Self {
        let mut labels = labels.to_vec();
        labels.sort();
        labels.dedup();
        Self {
            task_type,
            labels: labels.into(),
        }
    }
}

/// A queued task's place: highest priority first, then lowest sequence number (oldest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ready {
    pub(crate) priority: TaskPriority,
    pub(crate) seq: u64,
    pub(crate) id: TaskId,
}

impl Ord for Ready {
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for Ready {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

pub(crate) struct Class {
    pub(crate) key: ClassKey,
    /// Queued tasks by priority ([`TaskPriority::index`]), each lane oldest first, as
    /// (sequence number, id). May hold stale entries (cancelled or re-queued tasks); they
    /// are skipped when they reach the front.
    pub(crate) lanes: [Fifo<(u64, TaskId)>; TaskPriority::ALL.len()],
    /// With priority aging on: the same tasks in the order they became ready, with when.
    /// Entries of tasks served through the lanes go stale and are dropped from the front.
    pub(crate) arrivals: Fifo<(tokio::time::Instant, Ready)>,
    /// Live queued tasks in this class.
    pub(crate) live: usize,
    /// Whether any attached worker can take tasks of this class.
    pub(crate) routable: bool,
    /// Tasks in memory (in any status) that belong to this class. At zero the class is
    /// retired and its slot reused, so label churn does not grow the queue's memory or the
    /// classes each dispatch scans.
    pub(crate) tasks: usize,
}

impl Class {
    pub(crate) fn new(key: ClassKey) -> Self {
        Self {
            key,
            lanes: Default::default(),
            arrivals: Fifo::default(),
            live: 0,
            routable: false,
            tasks: 0,
        }
    }
}
