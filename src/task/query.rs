//! What a listing asks for, and what a submit answers: task-level types that the queue
//! answers with and the store reads by.

use super::{TaskId, TaskStatus};

/// Which tasks to list.
#[derive(Clone, Debug, Default)]
pub struct TaskQuery {
    /// Only tasks with this status.
    pub status: Option<TaskStatus>,
    /// Only tasks of this type.
    pub task_type: Option<String>,
    /// The cursor: only tasks past this id in the listing order (the last id of the
    /// previous page).
    pub after: Option<TaskId>,
    /// At most this many.
    pub limit: usize,
    /// Newest first instead of oldest first.
    pub newest_first: bool,
}

/// A submitted task's id, and whether an idempotency key matched an existing task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Submitted {
    /// The task's id (the existing one when `existing`).
    pub id: TaskId,
    /// True when the idempotency key was already known and no new task was made.
    pub existing: bool,
}
