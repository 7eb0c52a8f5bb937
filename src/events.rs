//! One in-process stream of lifecycle events: tasks, workers and scaling decisions.

use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::task::{TaskId, TaskPriority};

/// A lifecycle event with the time it happened.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// When it happened (Unix ms in JSON).
    #[serde(with = "crate::util::system_time_ms", rename = "at_ms")]
    pub at: SystemTime,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// A task was accepted.
    TaskSubmitted {
        /// The task.
        id: TaskId,
        /// Its type.
        task_type: Arc<str>,
        /// Its priority.
        priority: TaskPriority,
    },
    /// A worker started an attempt.
    TaskStarted {
        /// The task.
        id: TaskId,
        /// The worker.
        worker: Arc<str>,
        /// The attempt number.
        attempt: u32,
    },
    /// A handler reported progress.
    TaskProgress {
        /// The task.
        id: TaskId,
        /// Fraction done, 0.0 to 1.0.
        fraction: f32,
        /// What it is doing.
        message: String,
    },
    /// A task completed.
    TaskCompleted {
        /// The task.
        id: TaskId,
        /// The attempt that succeeded.
        attempt: u32,
    },
    /// An attempt failed and the task will run again after `delay_ms`.
    TaskRetried {
        /// The task.
        id: TaskId,
        /// The attempt that failed.
        attempt: u32,
        /// Why.
        error: String,
        /// The backoff before the next attempt.
        delay_ms: u64,
    },
    /// A task failed for good (or timed out on its last attempt) and was dead-lettered.
    TaskDeadLettered {
        /// The task.
        id: TaskId,
        /// The last error.
        error: String,
    },
    /// A task was cancelled.
    TaskCancelled {
        /// The task.
        id: TaskId,
    },
    /// A dead-lettered task was put back in the queue.
    TaskRequeued {
        /// The task.
        id: TaskId,
    },
    /// A running task's lease was lost (its worker died or went silent); it is queued again.
    LeaseLost {
        /// The task.
        id: TaskId,
        /// The worker that held it.
        worker: Arc<str>,
    },
    /// A workflow run changed status: `started`, `paused`, `resumed`, `retried`,
    /// `completed`, `failed`, `cancelled` or `stopped`.
    WorkflowRun {
        /// The run.
        run: uuid::Uuid,
        /// Its workflow.
        workflow: String,
        /// What happened.
        status: &'static str,
        /// Why it failed or stopped.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A step of a workflow run ended (`completed` or `failed`).
    WorkflowStep {
        /// The run.
        run: uuid::Uuid,
        /// The step's key (its name, with its loop iteration and map item).
        step: String,
        /// How it ended.
        status: &'static str,
    },
    /// A worker started.
    WorkerStarted {
        /// The worker.
        worker: Arc<str>,
        /// Its pool.
        pool: Arc<str>,
    },
    /// A worker stopped on purpose (scale-down or shutdown).
    WorkerStopped {
        /// The worker.
        worker: Arc<str>,
        /// Its pool.
        pool: Arc<str>,
    },
    /// A worker died and its pool started it again.
    WorkerRestarted {
        /// The worker.
        worker: Arc<str>,
        /// Its pool.
        pool: Arc<str>,
        /// Why it died.
        reason: String,
        /// How many times this worker has been restarted.
        restarts: u32,
    },
    /// A worker missed heartbeats for longer than the coordinator's `worker_timeout`.
    WorkerUnresponsive {
        /// The worker.
        worker: Arc<str>,
        /// Milliseconds since its last heartbeat.
        silent_ms: u64,
    },
    /// A pool spent its restart budget and failed.
    PoolFailed {
        /// The pool.
        pool: Arc<str>,
        /// Why.
        reason: String,
    },
    /// The autoscaler (or a person) changed a pool's size.
    Scaled(crate::scaling::ScaleDecision),
    /// A node group launched, drained, terminated or lost a node (see `wrangle::launch`).
    NodeScaling(crate::scaling::ScalingEvent),
    /// A node joined the coordinator (or joined again).
    NodeJoined {
        /// The node.
        node: Arc<str>,
        /// Its labels.
        labels: Vec<String>,
    },
    /// A node was given up: its connection closed or it went silent. Its leases went back
    /// to the queue.
    NodeLost {
        /// The node.
        node: Arc<str>,
        /// Why.
        reason: String,
    },
    /// A node left on purpose (graceful shutdown).
    NodeLeft {
        /// The node.
        node: Arc<str>,
    },
}

/// The event stream. Cloning shares it.
#[derive(Clone, Debug)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<Event>>,
}

impl EventBus {
    /// A bus that keeps the last `capacity` events for slow subscribers.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self { tx }
    }

    /// Receives every event published from now on. A subscriber that falls more than the
    /// bus capacity behind is told how many it missed (`RecvError::Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// True when someone listens; publishers of high-rate events skip building them otherwise.
    pub fn has_subscribers(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Publishes an event to every current subscriber.
    pub fn publish(&self, kind: EventKind) {
        self.publish_with(|| kind);
    }

    /// Publishes the event `make` builds, building it only when someone subscribes: the
    /// form for events published once per task, whose fields cost clones to gather.
    pub fn publish_with(&self, make: impl FnOnce() -> EventKind) {
        if self.has_subscribers() {
            let _ = self.tx.send(Arc::new(Event {
                at: SystemTime::now(),
                kind: make(),
            }));
        }
    }
}

impl Default for EventBus {
    /// Keeps 4096 events.
    fn default() -> Self {
        Self::new(4096)
    }
}
