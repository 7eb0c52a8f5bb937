//! What the queue answers besides tasks: its refusals and its counters.

use std::time::Duration;

use serde::Serialize;

use crate::task::{TaskId, TaskPriority, TaskStatus};

/// What the queue refuses, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The queue holds `max_queue_size` waiting tasks; nothing of the batch was accepted.
    #[error("queue full: {waiting} of {capacity} tasks waiting, {refused} refused")]
    Full {
        /// `max_queue_size`.
        capacity: usize,
        /// Tasks waiting now.
        waiting: usize,
        /// Tasks in the refused submit.
        refused: usize,
    },
    /// The unfinished tasks' payloads hold `max_queue_bytes`; nothing of the batch was
    /// accepted.
    #[error("queue full: {held} of {capacity} payload bytes held, {refused} bytes refused")]
    FullBytes {
        /// `max_queue_bytes`.
        capacity: u64,
        /// Payload bytes of unfinished tasks now.
        held: u64,
        /// Payload bytes of the refused submit.
        refused: u64,
    },
    /// A task in the batch is invalid; nothing of the batch was accepted.
    #[error("task {index} of the batch is invalid: {reason}")]
    InvalidTask {
        /// Its position in the batch.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// No task has this id (it never existed, or it finished long enough ago to be pruned).
    #[error("task {0} not found")]
    NotFound(TaskId),
    /// The task already finished and cannot be cancelled.
    #[error("task {id} already finished ({status})")]
    AlreadyFinished {
        /// The task.
        id: TaskId,
        /// Its final status.
        status: TaskStatus,
    },
    /// Only dead-lettered tasks can be re-queued.
    #[error("task {id} is not dead-lettered (status {status})")]
    NotDeadLettered {
        /// The task.
        id: TaskId,
        /// Its status.
        status: TaskStatus,
    },
    /// The store could not commit the submit, so the tasks were not accepted.
    #[error("tasks not stored: {reason}")]
    NotStored {
        /// The database's error.
        reason: String,
    },
    /// Failover: this coordinator no longer leads (another took the lease), so its store
    /// refused the submit and nothing was accepted; the leader takes it.
    #[error("tasks not stored: this coordinator is not the leader ({reason})")]
    NotLeader {
        /// Why its leadership ended.
        reason: String,
    },
    /// Load shedding: the queue holds more queued tasks than the mark set for this
    /// priority (`shed_low_above`, `shed_normal_above`), so new tasks of it are refused
    /// until the backlog falls; higher priorities still enter.
    #[error(
        "queue overloaded: {queued} tasks queued, over the {mark} at which {} tasks are \
         shed ({setting}); {refused} refused, retry after {} s",
        priority.as_str(),
        retry_after.as_secs()
    )]
    Overloaded {
        /// The priority refused.
        priority: TaskPriority,
        /// Tasks queued when it was refused.
        queued: usize,
        /// The mark over which tasks of `priority` are shed.
        mark: usize,
        /// The setting that holds the mark.
        setting: &'static str,
        /// Tasks of the submit refused for it.
        refused: usize,
        /// How long to wait before trying again.
        retry_after: Duration,
    },
    /// The queue is shutting down and takes no new tasks.
    #[error("queue is shutting down and accepts no new tasks")]
    Closed,
    /// `wait_for` gave up before the task finished.
    #[error("task {id} did not finish within {waited:?}")]
    WaitTimeout {
        /// The task.
        id: TaskId,
        /// How long the caller waited.
        waited: Duration,
    },
}

/// Tasks counted by priority (waiting ones, or ones shed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PriorityCounts {
    /// `Low`.
    pub low: usize,
    /// `Normal`.
    pub normal: usize,
    /// `High`.
    pub high: usize,
    /// `Critical`.
    pub critical: usize,
}

impl PriorityCounts {
    pub(super) fn from_array<T: Copy + TryInto<usize>>(a: [T; 4]) -> Self {
        let a = a.map(|n| n.try_into().unwrap_or(usize::MAX));
        Self {
            low: a[0],
            normal: a[1],
            high: a[2],
            critical: a[3],
        }
    }
}

/// The queue's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct QueueStats {
    /// Tasks waiting: queued plus pending.
    pub queue_size: usize,
    /// Tasks runnable now.
    pub queued: usize,
    /// Tasks waiting for a delay or a retry backoff.
    pub pending: usize,
    /// Queued tasks by priority.
    pub queued_by_priority: PriorityCounts,
    /// Tasks leased to workers.
    pub running: usize,
    /// Tasks accepted since start.
    pub submitted: u64,
    /// Tasks completed.
    pub completed: u64,
    /// Tasks failed for good.
    pub failed: u64,
    /// Tasks cancelled.
    pub cancelled: u64,
    /// Tasks that timed out on their last attempt.
    pub timed_out: u64,
    /// Retries scheduled.
    pub retried: u64,
    /// Leases taken back from dead or silent workers.
    pub leases_lost: u64,
    /// Tasks reloaded from the store at start (unfinished ones and dead letters).
    pub recovered: u64,
    /// Reports and lease extensions refused because they did not carry the token of the
    /// task's current lease (late, from before a restart, or forged).
    pub stale_reports: u64,
    /// Progress reports from node workers dropped unpublished because they did not carry
    /// the token of the task's current lease (an attempt that lost its lease, or another
    /// node's).
    pub stale_progress: u64,
    /// Tasks in the dead-letter list now.
    pub dead_lettered: usize,
    /// Payload bytes of unfinished tasks (bounded by `max_queue_bytes`).
    pub live_bytes: u64,
    /// Bytes of finished tasks kept in memory (bounded by `max_finished_bytes`).
    pub finished_bytes: u64,
    /// Bytes of dead letters (bounded by `max_dead_letter_bytes`).
    pub dead_letter_bytes: u64,
    /// Queued tasks that no attached worker can take (unknown type or unmatched labels).
    pub unroutable: usize,
    /// Workers attached.
    pub workers: usize,
    /// Credits (free slots) workers have announced and not yet used.
    pub free_credits: u64,
    /// Affinity keys bound to a worker now (at most `max_affinity_keys`).
    pub affinity_keys: usize,
    /// Queued tasks waiting for the busy worker their affinity key is bound to.
    pub affinity_waiting: usize,
    /// Tasks that stopped waiting for their bound worker after `affinity_wait` and went to
    /// another one.
    pub affinity_fallbacks: u64,
    /// Affinity bindings dropped, least recently used first, to keep to
    /// `max_affinity_keys`.
    pub affinity_evicted: u64,
    /// Load shedding is on: new `Low` tasks are refused now (the queue holds more than
    /// `shed_low_above` queued tasks, or more than `shed_normal_above`).
    pub shedding: bool,
    /// The highest priority refused now (`low` or `normal`), while shedding.
    pub shedding_up_to: Option<TaskPriority>,
    /// Tasks refused by load shedding since start, by priority.
    pub shed: PriorityCounts,
}

/// Queued tasks of one routing class: a task type with the labels its tasks require.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ClassBacklog {
    /// The task type.
    pub task_type: std::sync::Arc<str>,
    /// The labels its tasks require, sorted.
    pub labels: Vec<String>,
    /// Tasks of the class waiting in the queue.
    pub queued: usize,
    /// Whether any attached worker can take them.
    pub routable: bool,
}
