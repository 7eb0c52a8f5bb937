//! Scaling end to end, on tokio's paused clock: the autoscaler grows the local pool under a
//! backlog, or when a worker's mailbox backs up while the queue is empty, and shrinks it one
//! worker at a time when idle (never while a mailbox is still deep), recording why
//! (`backlog`, `worker_mailbox`, `idle`) with the numbers it read; manual scaling works
//! within the bounds, is refused outside them, and starts the autoscaler's cool-down.

#[path = "support/common.rs"]
mod common;

use serde_json::json;
use wrangle::{
    CoordinatorConfig, Error, EventKind, Payload, TaskError, TaskOutcome, TaskSpec, TaskStatus,
    WorkerConfig, WorkerRef,
};

use common::{eventually, handlers, ms, next_event, secs, start};

fn sleep_spec(ms: u64) -> TaskSpec {
    TaskSpec::new("sleep", &json!({ "ms": ms })).unwrap()
}

/// One slot per worker, 1..=4 workers, a short cool-down and a fast autoscaler.
fn elastic() -> CoordinatorConfig {
    CoordinatorConfig {
        min_workers: 1,
        max_workers: 4,
        scale_up_threshold: 2.0,
        scale_down_threshold: 1.0,
        scale_cooldown: ms(500),
        autoscale_interval: ms(100),
        auto_scale: true,
        worker: WorkerConfig {
            max_concurrent_tasks: 1,
            ..WorkerConfig::default()
        },
        ..CoordinatorConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn scales_up_under_backlog_and_back_down_when_idle() {
    let c = start(elastic(), handlers()).await;
    let mut events = c.events().subscribe();
    assert_eq!(c.get_workers().await.unwrap().len(), 1);

    let ids = c
        .submit_batch((0..20).map(|_| sleep_spec(2_000)).collect())
        .await
        .unwrap();

    let event = next_event(&mut events, "Scaled", secs(5), |e| {
        matches!(e, EventKind::Scaled(_))
    })
    .await;
    let EventKind::Scaled(up) = event else {
        unreachable!()
    };
    assert_eq!(up.reason, "backlog");
    assert_eq!(
        (up.from, up.to),
        (1, 4),
        "straight to max: 19 waiting / 2 per worker"
    );
    assert_eq!(up.pool, "local");
    assert_eq!(up.signals.workers, 1);
    assert!(up.signals.backlog >= 18, "backlog read: {:?}", up.signals);
    assert!(up.pressure_per_worker > 2.0, "{}", up.pressure_per_worker);
    assert_eq!(c.scale_history(), vec![up.clone()]);
    assert_eq!(c.get_stats().await.unwrap().last_scale, Some(up));

    eventually("4 workers", secs(5), || async {
        c.get_workers().await.unwrap().len() == 4
    })
    .await;
    eventually("4 tasks running at once", secs(5), || async {
        c.get_stats().await.unwrap().queue.running == 4
    })
    .await;

    for id in &ids {
        let outcome = c.wait_for(*id, secs(60)).await.unwrap();
        assert!(
            matches!(outcome, TaskOutcome::Completed { .. }),
            "{outcome:?}"
        );
    }
    eventually("back to min_workers", secs(30), || async {
        c.get_workers().await.unwrap().len() == 1
    })
    .await;

    let history = c.scale_history();
    let steps: Vec<_> = history.iter().map(|d| (d.reason, d.from, d.to)).collect();
    assert_eq!(
        steps,
        [
            ("backlog", 1, 4),
            ("idle", 4, 3),
            ("idle", 3, 2),
            ("idle", 2, 1)
        ],
        "up at once, down one worker at a time"
    );
    for d in &history[1..] {
        assert_eq!(d.signals.backlog, 0, "idle means nothing waits: {d:?}");
        assert!(d.pressure_per_worker < 1.0);
        assert!(d.signals.total_slots - d.signals.busy_slots >= 1);
    }
    // Scaling down drained idle workers: no task was interrupted, nothing restarted.
    for id in &ids {
        let snap = c.get_task(*id).await.unwrap();
        assert_eq!(snap.status, TaskStatus::Completed);
        assert_eq!(snap.attempts.len(), 1, "task {id} ran once");
    }
    let stats = c.get_stats().await.unwrap();
    assert_eq!(stats.workers.restarts, 0);
    assert_eq!(stats.workers.worker_count, 1);
    assert_eq!(stats.queue.leases_lost, 0);

    // And it stays there while idle.
    tokio::time::sleep(secs(5)).await;
    assert_eq!(c.scale_history().len(), 4);
    c.stop(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn manual_scale_within_bounds_and_refused_outside() {
    let config = CoordinatorConfig {
        auto_scale: false,
        ..elastic()
    };
    let c = start(config, handlers()).await;
    let mut events = c.events().subscribe();

    let d = c.scale(3).await.unwrap();
    assert_eq!((d.reason, d.from, d.to), ("manual", 1, 3));
    assert_eq!(c.get_workers().await.unwrap().len(), 3);
    assert_eq!(c.pool().stats().await.unwrap().worker_count, 3);
    let EventKind::Scaled(published) = next_event(&mut events, "Scaled", secs(1), |e| {
        matches!(e, EventKind::Scaled(_))
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(published, d);
    assert_eq!(c.scale_history(), [d]);

    for bad in [0, 5, 100] {
        match c.scale(bad).await {
            Err(Error::Invalid { field, reason }) => {
                assert_eq!(field, "target");
                assert!(
                    reason.contains("1..=4"),
                    "reason names the bounds: {reason}"
                );
            }
            other => panic!("scale({bad}) should be refused, got {other:?}"),
        }
    }
    assert_eq!(
        c.get_workers().await.unwrap().len(),
        3,
        "refusals change nothing"
    );
    assert_eq!(c.scale_history().len(), 1);

    let d = c.scale(1).await.unwrap();
    assert_eq!((d.from, d.to), (3, 1));
    eventually("idle workers drained", secs(5), || async {
        c.get_workers().await.unwrap().len() == 1
    })
    .await;
    assert_eq!(c.get_stats().await.unwrap().workers.restarts, 0);
    c.stop(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_manual_scale_starts_the_autoscaler_cooldown() {
    let config = CoordinatorConfig {
        scale_cooldown: secs(2),
        ..elastic()
    };
    let c = start(config, handlers()).await;
    let t0 = tokio::time::Instant::now();
    c.scale(4).await.unwrap();

    // Idle with 4 workers: the autoscaler wants fewer, but not within the cool-down.
    tokio::time::sleep(ms(1_500)).await;
    assert_eq!(c.get_workers().await.unwrap().len(), 4);
    assert_eq!(c.scale_history().len(), 1);

    eventually("the first idle scale-down", secs(5), || async {
        c.scale_history().len() == 2
    })
    .await;
    assert!(
        t0.elapsed() >= secs(2),
        "not before the cool-down: {:?}",
        t0.elapsed()
    );
    let d = c.scale_history().pop().unwrap();
    assert_eq!((d.reason, d.from, d.to), ("idle", 4, 3));
    c.stop(true).await.unwrap();
}

/// Blocks `worker` for `stall` and queues `messages` direct runs behind the block: its
/// mailbox backs up while the task queue stays empty. The handles answer once it unblocks.
fn back_up(
    worker: &WorkerRef,
    stall: std::time::Duration,
    messages: usize,
) -> Vec<tokio::task::JoinHandle<Result<Payload, TaskError>>> {
    worker.stall(stall);
    (0..messages)
        .map(|i| {
            let worker = worker.clone();
            tokio::spawn(async move {
                let input = Payload::encode(&i).unwrap();
                worker.execute_task("echo", input).await
            })
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_backed_up_worker_mailbox_scales_up_with_an_empty_queue() {
    let c = start(elastic(), handlers()).await;
    let mut events = c.events().subscribe();
    let t0 = tokio::time::Instant::now();
    let worker = c.pool().worker_refs().await.unwrap().remove(0);
    let runs = back_up(&worker, secs(5), 20);

    let EventKind::Scaled(up) = next_event(&mut events, "Scaled", secs(2), |e| {
        matches!(e, EventKind::Scaled(_))
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(up.reason, "worker_mailbox", "{up:?}");
    assert_eq!(up.from, 1);
    assert!(up.to > 1, "{up:?}");
    assert_eq!(up.signals.backlog, 0, "the queue is empty: {up:?}");
    assert_eq!(up.signals.queue_mailbox, 0, "{up:?}");
    assert!(up.signals.worker_mailbox > 2, "{up:?}");
    assert_eq!(up.pressure.backlog, 0.0);
    assert!(up.pressure.worker_mailbox > 2.0, "{up:?}");
    assert_eq!(up.pressure_per_worker, up.pressure.worker_mailbox);

    // While the worker stays blocked its mailbox keeps asking, up to max_workers.
    eventually("max_workers", secs(4), || async {
        c.get_workers().await.unwrap().len() == 4
    })
    .await;
    assert!(t0.elapsed() < secs(5), "while blocked: {:?}", t0.elapsed());
    for d in c.scale_history() {
        assert_eq!(d.reason, "worker_mailbox", "{d:?}");
    }

    // Once it unblocks, every run answers and the pool shrinks back, idle.
    for run in runs {
        run.await.unwrap().unwrap();
    }
    eventually("back to min_workers", secs(30), || async {
        c.get_workers().await.unwrap().len() == 1
    })
    .await;
    let history = c.scale_history();
    let downs: Vec<_> = history.iter().filter(|d| d.reason == "idle").collect();
    assert_eq!(downs.len(), 3, "one worker at a time: {history:?}");
    for d in downs {
        assert!(d.pressure.worker_mailbox < 1.0, "{d:?}");
    }
    c.stop(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_backed_up_worker_mailbox_holds_scale_down() {
    let c = start(elastic(), handlers()).await;
    c.scale(4).await.unwrap();
    let t0 = tokio::time::Instant::now();
    // One of four workers blocked for 3 s with 10 messages behind it: 2.5 per worker,
    // above scale_down_threshold (and at max_workers, so no scale-up either).
    let worker = c.pool().worker_refs().await.unwrap().remove(0);
    let runs = back_up(&worker, secs(3), 10);

    eventually("the first idle scale-down", secs(10), || async {
        c.scale_history().len() == 2
    })
    .await;
    let d = c.scale_history().pop().unwrap();
    assert_eq!((d.reason, d.from, d.to), ("idle", 4, 3));
    assert!(
        t0.elapsed() >= secs(3),
        "not while the mailbox was deep: {:?} (cool-down 500 ms)",
        t0.elapsed()
    );
    for run in runs {
        run.await.unwrap().unwrap();
    }
    c.stop(true).await.unwrap();
}
