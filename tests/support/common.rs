//! Helpers shared by the end-to-end tests: a polling helper instead of fixed sleeps, a
//! waiter on the event stream, small configs, and a handler that counts how many times each
//! task ran (to check exactly-once and at-least-once).

// Each test binary compiles this module and uses its own subset of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::broadcast;
use tokio::time::Instant;
use wrangle::{
    handler_fn, Coordinator, CoordinatorConfig, Event, EventKind, HandlerRegistry, TaskContext,
    TaskError, TaskHandler, TaskId, WorkerConfig,
};

/// Polls `cond` every 10 ms (tokio time, so paused clocks advance) until it holds; panics
/// naming `what` once `timeout` has passed without it.
pub(crate) async fn eventually<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads the event stream until an event matches `pred` and returns it; panics naming
/// `what` after `timeout`. A receiver that lagged keeps reading.
pub(crate) async fn next_event(
    rx: &mut broadcast::Receiver<Arc<Event>>,
    what: &str,
    timeout: Duration,
    mut pred: impl FnMut(&EventKind) -> bool,
) -> EventKind {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(event) if pred(&event.kind) => return event.kind.clone(),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("event bus closed"),
            }
        }
    };
    tokio::time::timeout(timeout, wait)
        .await
        .unwrap_or_else(|_| panic!("timed out after {timeout:?} waiting for event {what}"))
}

/// The ready-made `echo`, `sleep` and `fail` handlers.
pub(crate) fn handlers() -> HandlerRegistry {
    let handlers = HandlerRegistry::new();
    wrangle_actors::register_all(&handlers);
    handlers
}

/// A fixed-size local pool of `workers` workers, autoscaler off.
pub(crate) fn fixed(workers: usize) -> CoordinatorConfig {
    CoordinatorConfig {
        min_workers: workers,
        max_workers: workers,
        auto_scale: false,
        ..CoordinatorConfig::default()
    }
}

/// Like [`fixed`], with `slots` concurrent tasks per worker.
pub(crate) fn fixed_with_slots(workers: usize, slots: u32) -> CoordinatorConfig {
    CoordinatorConfig {
        worker: WorkerConfig {
            max_concurrent_tasks: slots,
            ..WorkerConfig::default()
        },
        ..fixed(workers)
    }
}

/// Starts a coordinator with `config` and `handlers`.
pub(crate) async fn start(config: CoordinatorConfig, handlers: HandlerRegistry) -> Coordinator {
    Coordinator::start(config, handlers)
        .await
        .expect("coordinator starts")
}

/// How many times each task's handler was entered.
#[derive(Clone, Debug, Default)]
pub(crate) struct Runs(Arc<Mutex<HashMap<TaskId, u32>>>);

impl Runs {
    /// Counts one run of `id`.
    pub(crate) fn record(&self, id: TaskId) {
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_default() += 1;
    }

    /// Runs of `id` so far.
    pub(crate) fn of(&self, id: TaskId) -> u32 {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .copied()
            .unwrap_or(0)
    }

    /// Every task that ran, with its count.
    pub(crate) fn all(&self) -> HashMap<TaskId, u32> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Input of [`counted_sleep`].
#[derive(Debug, Deserialize)]
pub(crate) struct Ms {
    /// How long to sleep.
    pub(crate) ms: u64,
}

/// A handler that counts its run in `runs`, then sleeps `ms` (returns at once for 0).
pub(crate) fn counted_sleep(runs: Runs) -> impl TaskHandler {
    handler_fn(move |ctx: TaskContext, input: Ms| {
        runs.record(ctx.task_id());
        async move {
            if input.ms > 0 {
                tokio::time::sleep(Duration::from_millis(input.ms)).await;
            }
            Ok::<_, TaskError>(input.ms)
        }
    })
}

/// Shorthand for `Duration::from_secs`.
pub(crate) fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Shorthand for `Duration::from_millis`.
pub(crate) fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}
