use std::fmt;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::events::{EventBus, EventKind};
use crate::task::TaskId;

/// What a handler knows about the attempt it runs.
#[derive(Clone)]
pub struct TaskContext {
    pub(crate) task_id: TaskId,
    pub(crate) attempt: u32,
    pub(crate) task_type: Arc<str>,
    pub(crate) worker: Arc<str>,
    pub(crate) cancel: CancellationToken,
    pub(crate) events: EventBus,
}

impl fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskContext")
            .field("task_id", &self.task_id)
            .field("attempt", &self.attempt)
            .field("task_type", &self.task_type)
            .field("worker", &self.worker)
            .finish()
    }
}

impl TaskContext {
    /// The task being run.
    pub fn task_id(&self) -> TaskId {
        self.task_id
    }

    /// 1 on the first run, 2 on the first retry, ...
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The task's type.
    pub fn task_type(&self) -> &str {
        &self.task_type
    }

    /// The worker running it.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// Fires when the task is cancelled, times out, or its worker stops.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Resolves when the task should stop (see [`TaskContext::cancellation`]).
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// True once the task should stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Reports progress (`fraction` from 0.0 to 1.0) on the event stream.
    pub fn progress(&self, fraction: f32, message: impl Into<String>) {
        self.events.publish_with(|| EventKind::TaskProgress {
            id: self.task_id,
            fraction: fraction.clamp(0.0, 1.0),
            message: message.into(),
        });
    }
}
