//! A handle to a task submitted without waiting.

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::queue::QueueRef;
use crate::task::{TaskId, TaskOutcome};

/// A submitted task, to wait on later.
#[derive(Clone, Debug)]
pub struct TaskHandle {
    /// The task's id.
    pub id: TaskId,
    /// True when an idempotency key matched an existing task.
    pub existing: bool,
    pub(super) queue: QueueRef,
}

impl TaskHandle {
    /// Waits for the task's outcome, up to `timeout`.
    pub async fn wait(&self, timeout: Duration) -> Result<TaskOutcome, Error> {
        self.queue.wait_for(self.id, timeout).await
    }

    /// Waits for the task and decodes its result.
    pub async fn result<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T, Error> {
        let payload = self.wait(timeout).await?.into_result(self.id)?;
        payload.decode().map_err(|reason| Error::Decode {
            id: self.id,
            reason,
        })
    }
}
