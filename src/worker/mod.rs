//! Workers: actors that run task handlers, a few at a time, with credits from the queue.

mod actor;
mod caps;
mod delivery;
mod registry;
mod report;
mod routing;
mod run;
#[cfg(test)]
mod tests;
mod uplink;

pub(crate) use actor::Worker;
pub(crate) use caps::labels_meet;
pub use caps::Capabilities;
pub use registry::WorkerRegistry;
pub use routing::RoutingStrategy;
pub use uplink::UplinkRef;

pub(crate) use actor::{WorkerArgs, WorkerMsg};
pub(crate) use report::{AttemptOutcome, AttemptReport};
pub(crate) use uplink::{LeaseSink, Uplink, WorkerCall};

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::Error;
use crate::handler::TaskError;
use crate::mailbox::{Mailbox, MailboxDepth};
use crate::task::Payload;

/// Settings of one worker.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerConfig {
    /// Tasks the worker runs at once (its credits). Default 4.
    pub max_concurrent_tasks: u32,
    /// How often it reports to the registry. Default 5 s.
    pub heartbeat_interval: Duration,
    /// Timeout for tasks that set none; `None` lets them run forever. Default 300 s.
    pub task_timeout: Option<Duration>,
    /// Labels that tasks can require (`gpu`, `region=eu`).
    pub labels: Vec<String>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            max_concurrent_tasks: 4,
            heartbeat_interval: Duration::from_secs(5),
            task_timeout: Some(Duration::from_secs(300)),
            labels: Vec::new(),
        }
    }
}

impl WorkerConfig {
    /// Checks for values a worker cannot run with.
    pub fn validate(&self) -> Result<(), Error> {
        if self.max_concurrent_tasks == 0 {
            return Err(Error::invalid("max_concurrent_tasks", "must be at least 1"));
        }
        if self.heartbeat_interval.is_zero() {
            return Err(Error::invalid(
                "heartbeat_interval",
                "must be greater than zero",
            ));
        }
        if self.task_timeout == Some(Duration::ZERO) {
            return Err(Error::invalid(
                "task_timeout",
                "must be greater than zero (or None for no limit)",
            ));
        }
        if let Some(l) = self.labels.iter().find(|l| l.trim().is_empty()) {
            return Err(Error::invalid(
                "labels",
                format!("label `{l}` is empty; expected `name` or `name=value`"),
            ));
        }
        Ok(())
    }
}

/// What a worker is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WorkerStatus {
    /// Ready for tasks.
    Idle,
    /// Running at least one task.
    Busy,
    /// Finishing its tasks and taking no new ones.
    Draining,
    /// Not running.
    Stopped,
    /// Failed; its pool restarts it.
    Error,
}

impl WorkerStatus {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Idle,
            1 => Self::Busy,
            2 => Self::Draining,
            3 => Self::Stopped,
            _ => Self::Error,
        }
    }
}

/// A worker's observable state: what `get_workers` returns.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerInfo {
    /// `pool/w-N`.
    pub id: String,
    /// The pool it belongs to.
    pub pool: String,
    /// What it is doing.
    pub status: WorkerStatus,
    /// Tasks running now.
    pub current_tasks: u32,
    /// Its slot count.
    pub max_concurrent_tasks: u32,
    /// Tasks completed (across restarts).
    pub total_completed: u64,
    /// Attempts failed (across restarts).
    pub total_failed: u64,
    /// Time since this incarnation started.
    #[serde(with = "crate::util::duration_secs", rename = "uptime_secs")]
    #[schema(value_type = f64)]
    pub uptime: Duration,
    /// True when it would take a task now.
    pub is_available: bool,
    /// Its labels.
    pub labels: Vec<String>,
    /// How many times its pool restarted it.
    pub restarts: u32,
    /// Messages waiting in its mailbox.
    pub mailbox_depth: u64,
}

/// Exit reasons of a worker that stopped on request (not a crash).
pub(crate) const DRAINED: &str = "drained";
pub(crate) const STOPPED: &str = "stopped";

static INCARNATIONS: AtomicU64 = AtomicU64::new(1);

/// Counters a worker shares with its pool and the registry, read without a message.
#[derive(Debug)]
pub(crate) struct WorkerShared {
    pub(crate) id: Arc<str>,
    pub(crate) pool: Arc<str>,
    pub(crate) config: WorkerConfig,
    /// Unique per actor incarnation, so the queue can tell a restarted worker from the one
    /// that died under the same id.
    pub(crate) incarnation: u64,
    /// How the queue spreads tasks over this worker's pool (its pool's setting).
    pub(crate) routing: RoutingStrategy,
    status: AtomicU8,
    current: AtomicU32,
    completed: AtomicU64,
    failed: AtomicU64,
    restarts: u32,
    started: Instant,
    pub(crate) depth: MailboxDepth,
}

impl WorkerShared {
    pub(crate) fn new(id: Arc<str>, pool: Arc<str>, config: WorkerConfig) -> Self {
        Self {
            id,
            pool,
            config,
            incarnation: INCARNATIONS.fetch_add(1, Ordering::Relaxed),
            routing: RoutingStrategy::default(),
            status: AtomicU8::new(WorkerStatus::Idle as u8),
            current: AtomicU32::new(0),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            restarts: 0,
            started: Instant::now(),
            depth: MailboxDepth::default(),
        }
    }

    /// The same, routed by `routing` (its pool's strategy).
    pub(crate) fn with_routing(self, routing: RoutingStrategy) -> Self {
        Self { routing, ..self }
    }

    /// The counters for the next incarnation of the same worker: totals carry over.
    pub(crate) fn restarted(&self) -> Self {
        let next = Self::new(self.id.clone(), self.pool.clone(), self.config.clone());
        next.completed.store(self.completed(), Ordering::Relaxed);
        next.failed.store(self.failed(), Ordering::Relaxed);
        Self {
            restarts: self.restarts + 1,
            routing: self.routing,
            ..next
        }
    }

    pub(crate) fn status(&self) -> WorkerStatus {
        WorkerStatus::from_u8(self.status.load(Ordering::Relaxed))
    }

    pub(crate) fn set_status(&self, s: WorkerStatus) {
        self.status.store(s as u8, Ordering::Relaxed);
    }

    pub(crate) fn current(&self) -> u32 {
        self.current.load(Ordering::Relaxed)
    }

    pub(crate) fn set_current(&self, n: u32) {
        self.current.store(n, Ordering::Relaxed);
    }

    pub(crate) fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }

    pub(crate) fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    pub(crate) fn count(&self, ok: bool) {
        let c = if ok { &self.completed } else { &self.failed };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn restarts(&self) -> u32 {
        self.restarts
    }

    pub(crate) fn info(&self) -> WorkerInfo {
        let status = self.status();
        let current = self.current();
        WorkerInfo {
            id: self.id.to_string(),
            pool: self.pool.to_string(),
            status,
            current_tasks: current,
            max_concurrent_tasks: self.config.max_concurrent_tasks,
            total_completed: self.completed(),
            total_failed: self.failed(),
            uptime: self.started.elapsed(),
            is_available: matches!(status, WorkerStatus::Idle | WorkerStatus::Busy)
                && current < self.config.max_concurrent_tasks,
            labels: self.config.labels.clone(),
            restarts: self.restarts,
            mailbox_depth: self.depth.get(),
        }
    }
}

/// A handle to one worker actor.
#[derive(Clone, Debug)]
pub struct WorkerRef {
    pub(crate) mailbox: Mailbox<WorkerMsg>,
    pub(crate) shared: Arc<WorkerShared>,
}

impl WorkerRef {
    /// Starts a standalone worker (outside any pool, so nobody restarts it) that pulls
    /// tasks from `queue` (a [`QueueRef`](crate::QueueRef)) with `handlers`, and can also run tasks directly with
    /// [`execute_task`](Self::execute_task).
    ///
    /// ```
    /// use wrangle::{handler_fn, HandlerRegistry, Payload, QueueConfig, QueueRef, TaskError, WorkerConfig, WorkerRef};
    ///
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> Result<(), wrangle::Error> {
    /// let (queue, _) = QueueRef::spawn(QueueConfig::default()).await?;
    /// let handlers = HandlerRegistry::new();
    /// handlers.register("compute", handler_fn(|_ctx, x: i64| async move { Ok::<_, TaskError>(x * 2) }));
    /// let worker = WorkerRef::start("worker-1", WorkerConfig::default(), &handlers, queue).await?;
    /// let out = worker.execute_task("compute", Payload::encode(&21).unwrap()).await.unwrap();
    /// assert_eq!(out.decode::<i64>().unwrap(), 42);
    /// worker.stop(true);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start(
        id: &str,
        config: WorkerConfig,
        handlers: &crate::handler::HandlerRegistry,
        queue: impl Into<UplinkRef>,
    ) -> Result<Self, Error> {
        config.validate()?;
        if id.is_empty() {
            return Err(Error::invalid("id", "must not be empty"));
        }
        let shared = Arc::new(WorkerShared::new(id.into(), "standalone".into(), config));
        let args = WorkerArgs {
            shared: shared.clone(),
            handlers: handlers.snapshot(),
            queue: queue.into(),
            registry: WorkerRegistry::default(),
            events: crate::events::EventBus::default(),
        };
        let (actor, _) = ractor::Actor::spawn(None, Worker, args)
            .await
            .map_err(|e| Error::Spawn {
                actor: "worker",
                reason: e.to_string(),
            })?;
        Ok(Self {
            mailbox: Mailbox::new(actor, shared.depth.clone()),
            shared,
        })
    }

    /// The worker's id.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The worker's state now.
    pub fn info(&self) -> WorkerInfo {
        self.shared.info()
    }

    /// The worker's actor cell (to monitor it, or to kill it in a fault drill).
    pub fn actor(&self) -> ractor::ActorCell {
        self.mailbox.actor().get_cell()
    }

    /// Runs one task on this worker directly, bypassing the queue (no retries, no lease).
    pub async fn execute_task(
        &self,
        task_type: &str,
        input: Payload,
    ) -> Result<Payload, TaskError> {
        let (tx, rx) = oneshot::channel();
        self.mailbox
            .send(WorkerMsg::Execute {
                task_type: task_type.into(),
                input,
                reply: tx,
            })
            .map_err(|_| TaskError::permanent(format!("worker {} is not running", self.id())))?;
        rx.await
            .map_err(|_| TaskError::retryable(format!("worker {} stopped", self.id())))?
    }

    /// Stops the worker. Graceful: it takes no new tasks, finishes the running ones, then
    /// stops. Otherwise running attempts are cancelled and their tasks go back to the queue.
    /// Its pool counts this as a stop, not a crash, and does not restart it.
    pub fn stop(&self, graceful: bool) {
        if graceful {
            let _ = self.mailbox.send(WorkerMsg::Drain);
        } else {
            self.actor().stop(Some(STOPPED.into()));
        }
    }

    /// Blocks the worker's mailbox for `duration`, as a hung actor would be: it stops
    /// heartbeating and handling messages. For fault drills and tests.
    #[doc(hidden)]
    pub fn stall(&self, duration: Duration) {
        let _ = self.mailbox.send(WorkerMsg::Stall(duration));
    }
}
