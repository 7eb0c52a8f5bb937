//! Routing classes: queued tasks grouped by (task type, required labels), each group a
//! priority heap. A worker's request scans only the classes it can serve.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

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

/// A heap entry: highest priority first, then lowest sequence number (oldest).
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
    /// May hold stale entries (cancelled or re-queued tasks); they are skipped on pop.
    pub(crate) heap: BinaryHeap<Ready>,
    /// With priority aging on: the same tasks in the order they became ready, with when.
    /// Entries of tasks served through the heap go stale and are dropped from the front.
    pub(crate) arrivals: VecDeque<(tokio::time::Instant, Ready)>,
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
            heap: BinaryHeap::new(),
            arrivals: VecDeque::new(),
            live: 0,
            routable: false,
            tasks: 0,
        }
    }
}
