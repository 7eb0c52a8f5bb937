//! wrangle runs agent workloads (LLM calls, tools, scripts, any async job) on supervised
//! ractor actors: a priority task queue with leases, retries, timeouts and dead letters;
//! workers that pull tasks with credits; pools that restart dead workers; and a coordinator
//! that autoscales pools from queue backlog and mailbox depths.
//!
//! ```
//! use wrangle::prelude::*;
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), wrangle::Error> {
//! let coordinator = Coordinator::builder()
//!     .handler("greet", handler_fn(|_ctx, name: String| async move {
//!         Ok::<_, TaskError>(format!("hello, {name}"))
//!     }))
//!     .start()
//!     .await?;
//!
//! let handle = coordinator
//!     .submit_async(TaskSpec::new("greet", "ada")?.priority(TaskPriority::High))
//!     .await?;
//! let greeting: String = handle.result(std::time::Duration::from_secs(5)).await?;
//! assert_eq!(greeting, "hello, ada");
//! coordinator.stop(true).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! Calls point down: `api` → `coordinator` → `workflow`, `pool` → `queue` → `worker` → `handler` →
//! `task`; the queue journals to `store` below it; the cluster's `gate` (coordinator side)
//! talks to the queue and its `node` side to workers; `scaling`, `events`, `mailbox`,
//! `metrics` and `supervision` sit below them all. A lower module that must talk up is
//! handed a trait object (the worker's uplink, the store's `Unstored`), never the higher
//! module's types; only the crate-level `Error` names every module's error.
//!
//! - `api`: the HTTP face (REST, events, metrics, OpenAPI, dashboard) over a coordinator.
//! - `task`: ids, priorities, statuses, options, payloads and snapshots of tasks, list
//!   queries and submit answers.
//! - `handler`: the [`TaskHandler`] trait, closures as handlers, the handler context.
//! - `queue`: the task queue actor (priority, leases, retries, dead letters, waiters)
//!   around a pure core; [`QueueRef`] is its handle.
//! - `worker`: the worker actor that runs handlers ([`WorkerRef`] is its handle), the
//!   [`WorkerRegistry`] of heartbeats, and the worker side of the credit protocol: the
//!   uplink a worker pulls through ([`UplinkRef`]; the queue and a node's agent are uplinks),
//!   its [`Capabilities`] and its attempt reports.
//! - `pull`: workers outside the process that pull tasks through calls (the HTTP worker
//!   protocol): [`pull::PullWorkers`] keeps one session per worker, attached to the queue as
//!   one more worker of the credit protocol. It sits beside `pool`, above `queue`.
//! - `pool`: the worker pool actor, supervisor of its workers; [`PoolRef`] is its handle.
//! - `coordinator`: the root supervisor of the queue, the pools and the cluster gate, with
//!   the autoscaler and health checks; the [`Coordinator`] handle is the main entry point
//!   (its config, builder, actor, children, scaling steps and stats each in their file).
//! - `scaling`: what a scaling decision is made of ([`ScaleSignals`], [`ScalePressure`],
//!   [`ScaleDecision`]), below `events` and `coordinator` so both can name it.
//! - `cluster`: nodes across machines over ractor_cluster: `cluster/gate` is the
//!   coordinator's side (the gate: node registry, liveness, leases over the network),
//!   `cluster/node` the node program's (the [`Node`] handle and the agent that relays its
//!   workers' calls and reconnects); beside them the wire codec, the accept loop and TLS.
//! - `compute`: external compute nodes (HTTP services, containers, pods, SSH machines) that
//!   handlers send work to: the [`compute::ComputeCluster`], one supervised NodeProxy actor
//!   per node, and one backend per kind of endpoint. It sits beside `handler`: handlers
//!   call it, it calls nothing above it.
//! - `launch`: node groups the coordinator launches, drains and stops by itself through a
//!   [`launch::Launcher`] (local processes here; Docker, SSH, Kubernetes beside): a pure
//!   plan per group driven by the queue's backlog per routing class and the gate's view of
//!   the nodes, and the actor that carries it out. It sits beside `workflow`, above
//!   `cluster`, `queue` and `store`.
//! - `workflow`: durable workflows ([`workflow::Workflows`]): definitions (Rust builders or
//!   JSON), a pure state machine per run replayed from its journal, and one engine actor
//!   that starts each step as a task and journals its outcome before anything follows it.
//!   It sits beside `coordinator` (which starts it) and above `queue` and `store`.
//! - `store`: durable state in SQLite or PostgreSQL, a journal below the queue: the
//!   [`Store`], its migrations, and the writer actor that group-commits batches of changes
//!   and answers in its own types (it never names the queue).
//! - `settings`: settings of the runnable programs (TOML file, then `WRANGLE_*` env and
//!   flags, parsed by clap in `settings::cli`), checked
//!   and turned into the library's config structs.
//! - `supervision`: the one supervision behaviour every supervisor calls: reading a
//!   child's end, the restart budget, restart counters.
//! - `mailbox`: counted mailboxes (ractor exposes no mailbox length).
//! - `metrics`: task latency histograms for the metrics endpoint.
//! - `events`: the lifecycle [`EventBus`] (tasks, workers, nodes, scaling decisions).
//! - `telemetry` (feature `otel`): OpenTelemetry export of the `task` spans over OTLP/HTTP,
//!   each in its task's trace id; the worker calls it when it opens a `task` span.
//! - `error`: the crate-level [`Error`].

pub mod api;
mod cluster;
pub mod compute;
mod coordinator;
mod error;
mod events;
pub mod failover;
mod handler;
pub mod launch;
mod mailbox;
mod metrics;
mod pool;
pub mod pull;
mod queue;
mod scaling;
pub mod settings;
mod store;
mod supervision;
mod task;
#[cfg(feature = "otel")]
pub mod telemetry;
mod util;
mod worker;
pub mod workflow;

pub use cluster::{
    ClusterConfig, ClusterStats, LinkStatus, Node, NodeConfig, NodeStatus, RemoteNode, TlsFiles,
};
pub use coordinator::{
    Coordinator, CoordinatorBuilder, CoordinatorConfig, CoordinatorStats, MailboxStats, StopReport,
    TaskHandle,
};
pub use error::Error;
pub use events::{Event, EventBus, EventKind};
pub use handler::{handler_fn, FnHandler, HandlerRegistry, TaskContext, TaskError, TaskHandler};
pub use mailbox::MailboxDepth;
pub use metrics::{Histogram, RateWindow, TaskMetrics, RATE_WINDOW_SECS};
pub use pool::{PoolConfig, PoolRef, PoolStats};
pub use queue::{
    ClassBacklog, PriorityCounts, QueueConfig, QueueError, QueueRef, QueueStats,
    CLUSTER_FRAME_BYTES,
};
pub use scaling::{ScaleDecision, ScalePressure, ScaleSignals};
pub use store::{
    migrate, Durability, MigrationReport, Store, StoreConfig, StoreError, StoreStats, WriterStats,
};
pub use supervision::RestartBudget;
pub use task::{
    Attempt, Lease, LeaseToken, LeaseTokenError, Payload, Submitted, TaskId, TaskOptions,
    TaskOutcome, TaskPriority, TaskQuery, TaskSnapshot, TaskSpec, TaskStatus, TraceId,
    TraceIdError,
};
pub use util::shutdown_signal;
pub use worker::{
    Capabilities, RoutingStrategy, UplinkRef, WorkerConfig, WorkerInfo, WorkerRef, WorkerRegistry,
    WorkerStatus,
};

/// The names most programs need.
pub mod prelude {
    pub use crate::{
        handler_fn, Coordinator, CoordinatorConfig, Payload, TaskContext, TaskError, TaskHandler,
        TaskId, TaskOutcome, TaskPriority, TaskSpec, TaskStatus, WorkerConfig,
    };
}

/// The README's code blocks, compiled as doc tests so they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
