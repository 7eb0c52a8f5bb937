//! Bad input end to end: a payload that does not decode fails its task permanently, naming
//! the field, without a retry and without disturbing the worker; invalid settings and task
//! options are refused with an error naming the field; nothing panics and nothing already
//! accepted is lost.

#[path = "support/common.rs"]
mod common;

use std::time::Duration;

use serde_json::json;
use wrangle::{
    Coordinator, CoordinatorConfig, Error, PoolConfig, PoolRef, QueueConfig, QueueError, QueueRef,
    TaskOutcome, TaskSpec, TaskStatus, WorkerConfig,
};

use common::{fixed, handlers, ms, secs, start};

#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(result: Result<T, Error>, expected_field: &str) {
    match result {
        Err(Error::Invalid { field, reason }) => {
            assert_eq!(field, expected_field, "reason: {reason}");
            assert!(!reason.is_empty());
        }
        other => panic!("expected Error::Invalid for `{expected_field}`, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_payload_that_does_not_decode_fails_permanently_naming_the_field() {
    let c = start(fixed(1), handlers()).await;
    let bad = c
        .submit_async(
            TaskSpec::new("sleep", &json!({ "ms": "ten" }))
                .unwrap()
                .retries(3),
        )
        .await
        .unwrap();
    let missing = c
        .submit_async(TaskSpec::new("sleep", &json!({})).unwrap().retries(3))
        .await
        .unwrap();

    match bad.wait(secs(10)).await.unwrap() {
        TaskOutcome::Failed { error } => {
            assert!(error.contains("ms"), "names the field: {error}");
            assert!(
                error.contains("invalid type"),
                "says what is wrong: {error}"
            );
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    match missing.wait(secs(10)).await.unwrap() {
        TaskOutcome::Failed { error } => assert!(error.contains("`ms`"), "{error}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    for id in [bad.id, missing.id] {
        let snap = c.get_task(id).await.unwrap();
        assert_eq!(snap.status, TaskStatus::Failed);
        assert_eq!(snap.attempts.len(), 1, "bad input is not retried");
    }
    let stats = c.get_stats().await.unwrap();
    assert_eq!(stats.queue.retried, 0);
    assert_eq!(stats.queue.dead_lettered, 2);
    assert_eq!(stats.workers.restarts, 0);

    // The worker is fine: a good task of the same type runs.
    let ok = c.submit("sleep", &json!({ "ms": 10 })).await.unwrap();
    assert_eq!(ok.decode::<u64>().unwrap(), 10);
    c.stop(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn invalid_settings_are_refused_naming_the_field() {
    let cases: Vec<(CoordinatorConfig, &str)> = vec![
        (
            CoordinatorConfig {
                min_workers: 5,
                max_workers: 2,
                ..CoordinatorConfig::default()
            },
            "min_workers",
        ),
        (
            CoordinatorConfig {
                max_workers: 0,
                min_workers: 0,
                ..CoordinatorConfig::default()
            },
            "max_workers",
        ),
        (
            CoordinatorConfig {
                worker: WorkerConfig {
                    max_concurrent_tasks: 0,
                    ..WorkerConfig::default()
                },
                ..CoordinatorConfig::default()
            },
            "max_concurrent_tasks",
        ),
        (
            CoordinatorConfig {
                worker: WorkerConfig {
                    task_timeout: Some(Duration::ZERO),
                    ..WorkerConfig::default()
                },
                ..CoordinatorConfig::default()
            },
            "task_timeout",
        ),
        (
            CoordinatorConfig {
                worker_timeout: ms(100),
                worker: WorkerConfig {
                    heartbeat_interval: ms(100),
                    ..WorkerConfig::default()
                },
                ..CoordinatorConfig::default()
            },
            "worker_timeout",
        ),
        (
            CoordinatorConfig {
                scale_up_threshold: f64::NAN,
                ..CoordinatorConfig::default()
            },
            "scale_up_threshold",
        ),
        (
            CoordinatorConfig {
                autoscale_interval: Duration::ZERO,
                ..CoordinatorConfig::default()
            },
            "autoscale_interval",
        ),
        (
            CoordinatorConfig {
                queue: QueueConfig {
                    max_queue_size: 0,
                    ..QueueConfig::default()
                },
                ..CoordinatorConfig::default()
            },
            "max_queue_size",
        ),
    ];
    for (config, field) in cases {
        assert_invalid(config.validate(), field);
        assert_invalid(Coordinator::start(config, handlers()).await, field);
    }

    assert_invalid(
        WorkerConfig {
            max_concurrent_tasks: 0,
            ..WorkerConfig::default()
        }
        .validate(),
        "max_concurrent_tasks",
    );
    assert_invalid(
        WorkerConfig {
            labels: vec![" ".into()],
            ..WorkerConfig::default()
        }
        .validate(),
        "labels",
    );

    let (queue, _) = QueueRef::spawn(QueueConfig::default()).await.unwrap();
    let bad_pools = [
        (
            PoolConfig {
                min_workers: 3,
                max_workers: 1,
                ..PoolConfig::default()
            },
            "min_workers",
        ),
        (
            PoolConfig {
                name: "a/b".into(),
                ..PoolConfig::default()
            },
            "name",
        ),
        (
            PoolConfig {
                worker: WorkerConfig {
                    max_concurrent_tasks: 0,
                    ..WorkerConfig::default()
                },
                ..PoolConfig::default()
            },
            "max_concurrent_tasks",
        ),
    ];
    for (config, field) in bad_pools {
        assert_invalid(
            PoolRef::start(config, queue.clone(), handlers()).await,
            field,
        );
    }
    assert_invalid(
        QueueRef::spawn(QueueConfig {
            retry_base_delay: secs(10),
            retry_max_delay: secs(1),
            ..QueueConfig::default()
        })
        .await,
        "retry_base_delay",
    );
    queue.actor().stop(None);
}

#[tokio::test(start_paused = true)]
async fn invalid_task_options_are_refused_and_the_batch_with_them() {
    let c = start(fixed(1), handlers()).await;

    let zero = TaskSpec::new("echo", &1).unwrap().timeout(Duration::ZERO);
    assert_invalid(zero.options().validate(), "timeout");
    let empty_label = TaskSpec::new("echo", &1).unwrap().label("");
    assert_invalid(empty_label.options().validate(), "labels");

    // Submitted, the refusal names the field too, and the task's place in the batch.
    match c.submit_async(zero.clone()).await {
        Err(Error::Queue(QueueError::InvalidTask { index, reason })) => {
            assert_eq!(index, 0);
            assert!(reason.contains("timeout"), "names the field: {reason}");
        }
        other => panic!("a zero timeout must be refused, got {other:?}"),
    }
    let batch = vec![
        TaskSpec::new("echo", &1).unwrap(),
        TaskSpec::new("echo", &2).unwrap(),
        zero,
    ];
    match c.submit_batch(batch).await {
        Err(Error::Queue(QueueError::InvalidTask { index, reason })) => {
            assert_eq!(index, 2);
            assert!(reason.contains("timeout"), "{reason}");
        }
        other => panic!("the batch must be refused, got {other:?}"),
    }
    match c.submit_async(TaskSpec::new(" ", &1).unwrap()).await {
        Err(Error::Queue(QueueError::InvalidTask { reason, .. })) => {
            assert!(reason.contains("task_type"), "{reason}")
        }
        other => panic!("an empty task type must be refused, got {other:?}"),
    }
    let stats = c.get_stats().await.unwrap();
    assert_eq!(
        stats.queue.submitted, 0,
        "nothing of a refused batch was accepted"
    );

    // A payload that cannot become JSON is refused before it is sent.
    let mut not_json = std::collections::HashMap::new();
    not_json.insert((1, 2), "tuple keys are not JSON object keys");
    assert_invalid(TaskSpec::new("echo", &not_json), "payload");

    // The runtime still works.
    assert_eq!(c.submit("echo", &7).await.unwrap().to_value(), json!(7));
    c.stop(true).await.unwrap();
}
