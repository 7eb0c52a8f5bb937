//! Fencing, end to end: every lease carries a token (coordinator epoch, attempt, random
//! nonce); a report counts only with the token of the task's current lease. A worker that
//! went quiet loses its lease, and its late success is refused rather than taken as the
//! task's result. Tasks without a timeout keep their lease only while their worker extends
//! it. (The rules themselves, with forged tokens and restarts, are property-tested in
//! `src/queue/core/tests/stale.rs`.)

use serde_json::json;
use wrangle::{
    CoordinatorConfig, HandlerRegistry, QueueConfig, TaskOutcome, TaskSpec, TaskStatus,
    WorkerConfig,
};

use crate::common::{counted_sleep, eventually, fixed, ms, secs, start, Runs};

fn config(workers: usize) -> CoordinatorConfig {
    CoordinatorConfig {
        queue: QueueConfig {
            lease_time: ms(300),
            ..QueueConfig::default()
        },
        worker: WorkerConfig {
            max_concurrent_tasks: 1,
            ..WorkerConfig::default()
        },
        ..fixed(workers)
    }
}

fn sleeper(runs: &Runs) -> HandlerRegistry {
    let handlers = HandlerRegistry::new();
    handlers.register("sleep", counted_sleep(runs.clone()));
    handlers
}

#[tokio::test(start_paused = true)]
async fn a_task_without_a_timeout_keeps_its_lease_while_its_worker_extends_it() {
    let runs = Runs::default();
    let c = start(config(1), sleeper(&runs)).await;
    // Runs for ten lease times; the worker extends its lease every third of one.
    let task = c
        .submit_async(TaskSpec::new("sleep", &json!({ "ms": 3_000 })).unwrap())
        .await
        .unwrap();
    let outcome = task.wait(secs(30)).await.unwrap();
    assert!(
        matches!(outcome, TaskOutcome::Completed { .. }),
        "{outcome:?}"
    );
    let snap = c.get_task(task.id).await.unwrap();
    assert_eq!(snap.attempts.len(), 1, "{:?}", snap.attempts);
    let stats = c.get_stats().await.unwrap().queue;
    assert_eq!((stats.leases_lost, stats.stale_reports), (0, 0));
    assert_eq!(runs.of(task.id), 1);
    c.stop(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_stops_extending_loses_its_task_and_its_late_success_is_refused() {
    let runs = Runs::default();
    let c = start(config(2), sleeper(&runs)).await;
    let task = c
        .submit_async(TaskSpec::new("sleep", &json!({ "ms": 1_000 })).unwrap())
        .await
        .unwrap();
    eventually("the first attempt to start", secs(5), || async {
        c.get_task(task.id).await.unwrap().status == TaskStatus::Running
    })
    .await;
    let first = c.get_task(task.id).await.unwrap().attempts[0]
        .worker
        .clone();
    let stalled = c
        .pool()
        .worker_refs()
        .await
        .unwrap()
        .into_iter()
        .find(|w| w.id() == &*first)
        .expect("the worker running the first attempt");
    // Its mailbox blocks: it cannot extend the lease, which runs out at 300 ms; the task
    // runs again on the other worker from then until about 1,300 ms. The first attempt's
    // handler ends at 1,000 ms and its success reaches the queue at 1,100 ms, when the
    // stall ends: while the second attempt still runs. It must not complete the task.
    stalled.stall(ms(1_100));

    let outcome = task.wait(secs(30)).await.unwrap();
    assert!(
        matches!(outcome, TaskOutcome::Completed { .. }),
        "{outcome:?}"
    );

    let snap = c.get_task(task.id).await.unwrap();
    assert_eq!(snap.status, TaskStatus::Completed);
    assert_eq!(snap.attempts.len(), 2, "{:?}", snap.attempts);
    assert_eq!(snap.attempts[0].outcome.as_deref(), Some("lost"));
    assert_eq!(snap.attempts[1].outcome.as_deref(), Some("completed"));
    assert_ne!(snap.attempts[1].worker, first, "ran again elsewhere");
    let stats = c.get_stats().await.unwrap().queue;
    assert_eq!((stats.completed, stats.leases_lost), (1, 1));
    // The late success, and the late extend if the stall caught it.
    assert!(stats.stale_reports >= 1, "{stats:?}");
    assert_eq!(
        runs.of(task.id),
        2,
        "both attempts ran; only the current one counted"
    );
    c.stop(false).await.unwrap();
}
