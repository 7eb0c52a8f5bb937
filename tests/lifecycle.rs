//! A task's and the runtime's life end to end: a graceful stop finishes every accepted task
//! exactly once and refuses new ones with `QueueError::Closed`; `wait_for` times out on a
//! running task and answers at once for a finished one; queued and running tasks are
//! cancelled (the running handler sees its cancellation); `WorkerRef::execute_task` runs a
//! task on one worker directly.

#[path = "support/common.rs"]
mod common;

use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;
use wrangle::{
    handler_fn, Error, Payload, QueueError, TaskContext, TaskError, TaskOutcome, TaskSpec,
    TaskStatus,
};

use common::{counted_sleep, eventually, fixed, fixed_with_slots, handlers, ms, secs, start, Runs};

fn sleep_spec(ms: u64) -> TaskSpec {
    TaskSpec::new("sleep", &json!({ "ms": ms })).unwrap()
}

fn count_spec(ms: u64) -> TaskSpec {
    TaskSpec::new("count", &json!({ "ms": ms })).unwrap()
}

#[tokio::test(start_paused = true)]
async fn graceful_stop_finishes_every_accepted_task_once_and_refuses_new_ones() {
    let runs = Runs::default();
    let handlers = handlers();
    handlers.register("count", counted_sleep(runs.clone()));
    let c = start(fixed_with_slots(2, 4), handlers).await;

    let mut accepted = c
        .submit_batch((0..500).map(|i| count_spec(10 + i % 7)).collect())
        .await
        .unwrap();
    eventually("a fifth of the tasks to complete", secs(30), || async {
        c.get_stats().await.unwrap().queue.completed >= 100
    })
    .await;
    let before = c.get_stats().await.unwrap().queue;
    assert!(
        before.completed < 450 && before.queue_size > 0,
        "the stop must begin mid-way: {before:?}"
    );

    let stopping = tokio::spawn({
        let c = c.clone();
        async move { c.stop(true).await }
    });
    // Submits race the stop: each is either accepted (and must then run) or refused.
    let refused = tokio::time::timeout(secs(5), async {
        loop {
            match c.submit_async(count_spec(10)).await {
                Ok(handle) => accepted.push(handle.id),
                Err(e) => break e,
            }
            tokio::time::sleep(ms(1)).await;
        }
    })
    .await
    .expect("submits are refused once the stop begins");
    assert!(
        matches!(refused, Error::Queue(QueueError::Closed)),
        "refused with Closed, got {refused:?}"
    );
    assert_eq!(
        refused.to_string(),
        "queue is shutting down and accepts no new tasks"
    );
    // Refused for good, batches included, and nothing of a refused batch is half-accepted.
    let batch = c.submit_batch(vec![count_spec(1), count_spec(1)]).await;
    assert!(
        matches!(batch, Err(Error::Queue(QueueError::Closed))),
        "{batch:?}"
    );

    let report = stopping.await.unwrap().unwrap();
    assert!(report.graceful);
    assert_eq!(report.unfinished, 0, "{report:?}");
    assert_eq!(report.completed, accepted.len() as u64);
    assert!(!c.is_running());

    let ran = runs.all();
    assert_eq!(
        ran.len(),
        accepted.len(),
        "every accepted task ran, no other"
    );
    for id in &accepted {
        assert_eq!(runs.of(*id), 1, "task {id} ran exactly once");
    }
    assert!(c.submit_async(count_spec(1)).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_graceful_stop_gives_up_on_stuck_tasks_after_the_shutdown_timeout() {
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let handlers = handlers();
    // Never finishes on its own; reports when it is told to stop.
    handlers.register(
        "stuck",
        handler_fn(move |ctx: TaskContext, _: ()| {
            let seen_tx = seen_tx.clone();
            async move {
                report_cancellation(&ctx, seen_tx);
                std::future::pending::<Result<(), TaskError>>().await
            }
        }),
    );
    let config = wrangle::CoordinatorConfig {
        shutdown_timeout: secs(2),
        ..fixed_with_slots(1, 1)
    };
    let c = start(config, handlers).await;
    let stuck = c
        .submit_async(TaskSpec::new("stuck", &()).unwrap())
        .await
        .unwrap();
    let behind = c.submit_async(sleep_spec(10)).await.unwrap();
    eventually("the stuck task to run", secs(5), || async {
        c.get_task(stuck.id).await.unwrap().status == TaskStatus::Running
    })
    .await;

    let t0 = Instant::now();
    let report = tokio::time::timeout(secs(60), c.stop(true))
        .await
        .expect("a graceful stop ends soon after shutdown_timeout")
        .unwrap();
    let took = t0.elapsed();
    assert!(took >= secs(2) && took < secs(5), "stopped after {took:?}");
    assert!(report.graceful);
    assert_eq!(report.unfinished, 2, "the stuck task and the one behind it");
    assert_eq!(report.completed, 0);
    let cancelled = tokio::time::timeout(secs(5), seen.recv())
        .await
        .expect("the stuck attempt is cancelled")
        .unwrap();
    assert_eq!(cancelled, stuck.id);
    assert!(!c.is_running());
    // Waiters learn the runtime is gone instead of waiting forever.
    assert!(behind.wait(secs(1)).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn an_immediate_stop_cancels_running_attempts_and_reports_what_is_left() {
    let c = start(fixed_with_slots(1, 2), handlers()).await;
    let ids = c
        .submit_batch((0..5).map(|_| sleep_spec(10_000)).collect())
        .await
        .unwrap();
    eventually("two tasks to run", secs(5), || async {
        c.get_stats().await.unwrap().queue.running == 2
    })
    .await;

    let t0 = Instant::now();
    let report = c.stop(false).await.unwrap();
    assert!(t0.elapsed() < secs(1), "no waiting: {:?}", t0.elapsed());
    assert!(!report.graceful);
    assert_eq!(report.unfinished, ids.len(), "{report:?}");
    assert_eq!(report.completed, 0);
    assert!(!c.is_running());
    match c.submit_async(sleep_spec(1)).await {
        Err(Error::Stopped { .. }) => {}
        other => panic!("a stopped runtime takes no task: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn wait_for_times_out_on_a_running_task_and_answers_at_once_when_finished() {
    let c = start(fixed(1), handlers()).await;
    let id = c.submit_async(sleep_spec(5_000)).await.unwrap().id;
    eventually("the task to run", secs(5), || async {
        c.get_task(id).await.unwrap().status == TaskStatus::Running
    })
    .await;

    let t0 = Instant::now();
    match c.wait_for(id, ms(200)).await {
        Err(Error::Queue(QueueError::WaitTimeout { id: got, waited })) => {
            assert_eq!(got, id);
            assert_eq!(waited, ms(200));
        }
        other => panic!("expected WaitTimeout, got {other:?}"),
    }
    let waited = t0.elapsed();
    assert!(waited >= ms(200) && waited < ms(1_000), "{waited:?}");
    let err = c.wait_for(id, ms(100)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("task {id} did not finish within 100ms")
    );
    assert_eq!(
        c.get_task(id).await.unwrap().status,
        TaskStatus::Running,
        "giving up waiting does not touch the task"
    );

    let outcome = c.wait_for(id, secs(60)).await.unwrap();
    assert_eq!(
        outcome,
        TaskOutcome::Completed {
            result: Payload::encode(&5_000u64).unwrap()
        }
    );

    // Finished: the answer needs no time at all, even with a zero timeout.
    let t1 = Instant::now();
    let again = c.wait_for(id, Duration::ZERO).await.unwrap();
    assert_eq!(again, outcome);
    assert_eq!(t1.elapsed(), Duration::ZERO);

    let unknown = wrangle::TaskId::new();
    match c.wait_for(unknown, secs(1)).await {
        Err(Error::Queue(QueueError::NotFound(got))) => assert_eq!(got, unknown),
        other => panic!("expected NotFound, got {other:?}"),
    }
    c.stop(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn cancel_stops_a_queued_and_a_running_task() {
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let handlers = handlers();
    // Waits to be cancelled; a watcher it spawned reports when the cancellation arrives.
    handlers.register(
        "watch",
        handler_fn(move |ctx: TaskContext, _: ()| {
            let seen_tx = seen_tx.clone();
            async move {
                report_cancellation(&ctx, seen_tx);
                tokio::time::sleep(secs(3_600)).await;
                Ok::<_, TaskError>(())
            }
        }),
    );
    // One worker, one slot: the second task has to wait in the queue.
    let c = start(fixed_with_slots(1, 1), handlers).await;
    let running = c
        .submit_async(TaskSpec::new("watch", &()).unwrap())
        .await
        .unwrap();
    eventually("the watch task to run", secs(5), || async {
        c.get_task(running.id).await.unwrap().status == TaskStatus::Running
    })
    .await;
    let queued = c.submit_async(sleep_spec(10)).await.unwrap();
    assert_eq!(
        c.get_task(queued.id).await.unwrap().status,
        TaskStatus::Queued
    );

    assert_eq!(c.cancel_task(queued.id).await.unwrap(), TaskStatus::Queued);
    assert_eq!(
        c.wait_for(queued.id, Duration::ZERO).await.unwrap(),
        TaskOutcome::Cancelled
    );
    let snap = c.get_task(queued.id).await.unwrap();
    assert_eq!(snap.status, TaskStatus::Cancelled);
    assert!(snap.attempts.is_empty(), "never ran");

    assert_eq!(
        c.cancel_task(running.id).await.unwrap(),
        TaskStatus::Running
    );
    let observed = tokio::time::timeout(secs(5), seen.recv())
        .await
        .expect("the handler sees its cancellation")
        .unwrap();
    assert_eq!(observed, running.id);
    match running.result::<()>(secs(1)).await {
        Err(Error::TaskFailed { id, status, .. }) => {
            assert_eq!(id, running.id);
            assert_eq!(status, TaskStatus::Cancelled);
        }
        other => panic!("expected a cancelled task, got {other:?}"),
    }
    let snap = c.get_task(running.id).await.unwrap();
    assert_eq!(snap.status, TaskStatus::Cancelled);
    assert_eq!(snap.attempts.len(), 1);
    assert_eq!(snap.attempts[0].outcome.as_deref(), Some("cancelled"));

    match c.cancel_task(running.id).await {
        Err(Error::Queue(QueueError::AlreadyFinished { id, status })) => {
            assert_eq!(id, running.id);
            assert_eq!(status, TaskStatus::Cancelled);
        }
        other => panic!("a finished task cannot be cancelled again: {other:?}"),
    }

    // The cancelled attempt gave its slot back: the single slot takes new work.
    let echoed = tokio::time::timeout(secs(5), c.submit("echo", &json!("after")))
        .await
        .expect("the slot is free again")
        .unwrap();
    assert_eq!(echoed.to_value(), json!("after"));
    let stats = c.get_stats().await.unwrap();
    assert_eq!(stats.queue.cancelled, 2);
    assert_eq!(stats.queue.running, 0);
    assert_eq!(stats.workers.restarts, 0);
    c.stop(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn execute_task_runs_directly_on_one_worker() {
    let handlers = handlers();
    handlers.register(
        "whoami",
        handler_fn(|ctx: TaskContext, _: ()| async move {
            Ok::<_, TaskError>(ctx.worker().to_string())
        }),
    );
    let c = start(fixed(2), handlers).await;
    let workers = c.pool().worker_refs().await.unwrap();
    assert_eq!(workers.len(), 2);

    for w in &workers {
        let out = w.execute_task("whoami", Payload::null()).await.unwrap();
        assert_eq!(out.decode::<String>().unwrap(), w.id());
    }
    let w = &workers[0];
    let echoed = w
        .execute_task("echo", json!({ "x": [1, 2] }).into())
        .await
        .unwrap();
    assert_eq!(echoed.to_value(), json!({ "x": [1, 2] }));
    let slept = w
        .execute_task("sleep", json!({ "ms": 50 }).into())
        .await
        .unwrap();
    assert_eq!(slept.decode::<u64>().unwrap(), 50);

    let missing = w.execute_task("nope", Payload::null()).await.unwrap_err();
    assert!(!missing.is_retryable());
    assert!(missing.message().contains("no handler"), "{missing}");
    let failed = w
        .execute_task(
            "fail",
            json!({ "mode": "permanent", "message": "nope" }).into(),
        )
        .await
        .unwrap_err();
    assert_eq!(failed.message(), "nope");
    let panicked = w
        .execute_task(
            "fail",
            json!({ "mode": "panic", "message": "direct boom" }).into(),
        )
        .await
        .unwrap_err();
    assert!(panicked.message().contains("direct boom"), "{panicked}");

    // Nothing went through the queue, and the worker counted its runs.
    let stats = c.get_stats().await.unwrap();
    assert_eq!(stats.queue.submitted, 0);
    assert_eq!(stats.workers.restarts, 0);
    let info = w.info();
    assert_eq!(info.total_completed, 3);
    assert_eq!(info.current_tasks, 0);
    c.stop(true).await.unwrap();
}

/// Sends the task's id on `seen` once its cancellation token fires (the handler's future
/// may be dropped before it could say so itself).
fn report_cancellation(ctx: &TaskContext, seen: mpsc::UnboundedSender<wrangle::TaskId>) {
    let watcher = ctx.clone();
    tokio::spawn(async move {
        watcher.cancelled().await;
        let _ = seen.send(watcher.task_id());
    });
}
