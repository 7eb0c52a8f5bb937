use std::fmt;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::events::{EventBus, EventKind};
use crate::task::{LeaseToken, TaskId, TraceId};

/// What a handler knows about the attempt it runs.
#[derive(Clone)]
pub struct TaskContext {
    pub(crate) task_id: TaskId,
    pub(crate) attempt: u32,
    pub(crate) task_type: Arc<str>,
    pub(crate) trace_id: TraceId,
    pub(crate) worker: Arc<str>,
    pub(crate) cancel: CancellationToken,
    pub(crate) events: EventBus,
    /// Where progress goes instead of `events`: set for a leased attempt on a node's worker,
    /// whose own bus no one on the coordinator sees.
    pub(crate) progress: Option<ProgressRoute>,
}

/// Where an attempt's progress goes when not on its worker's event bus: the worker's uplink
/// to a coordinator in another process, which publishes it if the lease still holds.
pub(crate) trait ProgressSink: Send + Sync + 'static {
    /// Carries one progress report of `worker`'s attempt at `task_id` under lease `token`.
    fn progress(
        &self,
        worker: &Arc<str>,
        task_id: TaskId,
        token: LeaseToken,
        fraction: f32,
        message: String,
    );
}

/// A leased attempt's way to report progress to a coordinator elsewhere.
#[derive(Clone)]
pub(crate) struct ProgressRoute {
    /// The worker's uplink.
    pub(crate) sink: Arc<dyn ProgressSink>,
    /// The lease the attempt runs under: the coordinator checks it is still current.
    pub(crate) token: LeaseToken,
}

impl fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskContext")
            .field("task_id", &self.task_id)
            .field("attempt", &self.attempt)
            .field("task_type", &self.task_type)
            .field("trace_id", &self.trace_id)
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

    /// The trace this attempt belongs to: the one the task was submitted with, else the
    /// task's own id. The attempt's span (`task`) carries it, so logs inside the handler do.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// The task's type.
    pub fn task_type(&self) -> &str {
        &self.task_type
    }

    /// The worker running it.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// Fires when the task is cancelled, times out, or its worker stops. The worker then
    /// drops the handler's future at once (so a handler needs no cancellation code of its
    /// own); the token is for what the handler started beside it, such as spawned tasks
    /// or child processes, which the drop does not stop. Cleanup that must run on a cancel
    /// belongs in a drop guard.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Resolves when the task should stop (see [`TaskContext::cancellation`]). Awaited in
    /// the handler itself it never returns on a cancel or timeout, because the handler's
    /// future is dropped first; await it in a task the handler spawns.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// True once the task should stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Reports progress (`fraction` from 0.0 to 1.0) on the coordinator's event stream
    /// (`TaskProgress`). On a node, it travels to the coordinator with the attempt's lease
    /// and is published there while that lease is the task's current one; a handler that
    /// reports often is thinned out on the way (at most 20 reports a second per task, the
    /// last one always kept), and messages past 1 KiB are cut.
    pub fn progress(&self, fraction: f32, message: impl Into<String>) {
        // NaN is not a fraction of anything: it reads as nothing done.
        let fraction = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        match &self.progress {
            Some(route) => route.sink.progress(
                &self.worker,
                self.task_id,
                route.token,
                fraction,
                message.into(),
            ),
            None => self.events.publish_with(|| EventKind::TaskProgress {
                id: self.task_id,
                fraction,
                message: message.into(),
            }),
        }
    }
}
