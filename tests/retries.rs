//! Retries through the whole runtime (queue, worker, handler): a flaky task succeeds on a
//! later attempt within its retry budget; one that runs out of retries is dead-lettered
//! and can be re-queued to succeed; a permanent error is never retried. Backoffs run on
//! tokio's paused clock.

#[path = "support/common.rs"]
mod common;

use serde_json::json;
use wrangle::{Error, QueueError, TaskOutcome, TaskSpec, TaskStatus};

use common::{fixed, handlers, secs, start};

fn flaky(succeed_on_attempt: u32, retries: u32) -> TaskSpec {
    TaskSpec::new("fail", &json!({ "succeed_on_attempt": succeed_on_attempt }))
        .unwrap()
        .retries(retries)
}

#[tokio::test(start_paused = true)]
async fn a_flaky_task_succeeds_on_its_third_attempt() {
    let c = start(fixed(2), handlers()).await;
    let task = c.submit_async(flaky(3, 3)).await.unwrap();
    let attempt: u32 = task.result(secs(30)).await.unwrap();
    assert_eq!(attempt, 3, "the handler saw attempt 3");

    let snap = c.get_task(task.id).await.unwrap();
    assert_eq!(snap.status, TaskStatus::Completed);
    let attempts: Vec<_> = snap
        .attempts
        .iter()
        .map(|a| (a.number, a.outcome.as_deref(), a.error.as_deref()))
        .collect();
    assert_eq!(
        attempts,
        [
            (1, Some("failed"), Some("failed on purpose")),
            (2, Some("failed"), Some("failed on purpose")),
            (3, Some("completed"), None),
        ]
    );
    let stats = c.get_stats().await.unwrap().queue;
    assert_eq!((stats.retried, stats.completed, stats.failed), (2, 1, 0));
    assert!(c.dead_letters(10).await.unwrap().is_empty());
    c.stop(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_task_out_of_retries_is_dead_lettered_and_requeue_lets_it_succeed() {
    let c = start(fixed(1), handlers()).await;
    // One retry: attempts 1 and 2 fail. Attempt numbers carry on after a re-queue, so the
    // re-queued task succeeds on attempt 3.
    let task = c.submit_async(flaky(3, 1)).await.unwrap();
    match task.result::<u32>(secs(30)).await {
        Err(Error::TaskFailed { id, status, error }) => {
            assert_eq!(id, task.id);
            assert_eq!(status, TaskStatus::Failed);
            assert_eq!(error, "failed on purpose");
        }
        other => panic!("expected a failed task, got {other:?}"),
    }
    let snap = c.get_task(task.id).await.unwrap();
    assert_eq!(snap.status, TaskStatus::Failed);
    assert_eq!(snap.attempts.len(), 2);
    let dead = c.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, task.id);
    assert_eq!(dead[0].error.as_deref(), Some("failed on purpose"));
    assert_eq!(c.get_stats().await.unwrap().queue.dead_lettered, 1);

    c.requeue(task.id).await.unwrap();
    assert!(c.dead_letters(10).await.unwrap().is_empty());
    let outcome = c.wait_for(task.id, secs(30)).await.unwrap();
    assert_eq!(
        outcome,
        TaskOutcome::Completed {
            result: wrangle::Payload::encode(&3u32).unwrap()
        }
    );
    let snap = c.get_task(task.id).await.unwrap();
    assert_eq!(snap.status, TaskStatus::Completed);
    assert_eq!(snap.attempts.len(), 3);
    let stats = c.get_stats().await.unwrap().queue;
    assert_eq!(
        (stats.completed, stats.failed, stats.dead_lettered),
        (1, 0, 0)
    );

    match c.requeue(task.id).await {
        Err(Error::Queue(QueueError::NotDeadLettered { id, status })) => {
            assert_eq!(id, task.id);
            assert_eq!(status, TaskStatus::Completed);
        }
        other => panic!("only dead letters can be re-queued: {other:?}"),
    }
    c.stop(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_is_not_retried() {
    let c = start(fixed(1), handlers()).await;
    let spec = TaskSpec::new(
        "fail",
        &json!({ "mode": "permanent", "message": "bad request" }),
    )
    .unwrap()
    .retries(5);
    let task = c.submit_async(spec).await.unwrap();
    assert_eq!(
        task.wait(secs(30)).await.unwrap(),
        TaskOutcome::Failed {
            error: "bad request".into()
        }
    );
    let snap = c.get_task(task.id).await.unwrap();
    assert_eq!(snap.attempts.len(), 1);
    assert_eq!(c.get_stats().await.unwrap().queue.retried, 0);
    assert_eq!(c.dead_letters(10).await.unwrap().len(), 1);
    c.stop(true).await.unwrap();
}
