//! Supervision end to end: a panicking handler fails only its own task, a killed worker is
//! restarted by its pool and its task still completes (at-least-once), and a worker that
//! stops heartbeating is replaced by the coordinator's health check with its task queued
//! again. Time is paused, so heartbeats, timeouts and sleeps run on tokio's virtual clock.

#[path = "support/common.rs"]
mod common;

use serde_json::json;
use wrangle::{
    CoordinatorConfig, EventKind, RestartBudget, TaskOutcome, TaskSpec, TaskStatus, WorkerConfig,
};

use common::{eventually, fixed, fixed_with_slots, handlers, ms, next_event, secs, start};

fn sleep_spec(ms: u64) -> TaskSpec {
    TaskSpec::new("sleep", &json!({ "ms": ms })).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_handler_panic_fails_only_its_task() {
    let handlers = handlers();
    // A closure handler that panics before it even builds its future.
    handlers.register(
        "explode",
        wrangle::handler_fn(
            |_ctx, code: u32| -> std::future::Ready<Result<u32, wrangle::TaskError>> {
                panic!("explode code {code}")
            },
        ),
    );
    let c = start(fixed_with_slots(1, 4), handlers).await;
    let worker = c.get_workers().await.unwrap()[0].id.clone();

    let sleeps = c
        .submit_batch((0..2).map(|_| sleep_spec(1_000)).collect())
        .await
        .unwrap();
    eventually("both sleeps to run", secs(5), || async {
        let mut running = 0;
        for id in &sleeps {
            running += (c.get_task(*id).await.unwrap().status == TaskStatus::Running) as usize;
        }
        running == 2
    })
    .await;

    let panics = [
        TaskSpec::new(
            "fail",
            &json!({ "mode": "panic", "message": "boom in handler" }),
        )
        .unwrap()
        .retries(3),
        TaskSpec::new("explode", &7).unwrap().retries(3),
    ];
    for (spec, expected) in panics
        .into_iter()
        .zip(["boom in handler", "explode code 7"])
    {
        let id = c.submit_async(spec).await.unwrap().id;
        match c.wait_for(id, secs(5)).await.unwrap() {
            TaskOutcome::Failed { error } => {
                assert!(error.contains("panicked"), "error names the panic: {error}");
                assert!(
                    error.contains(expected),
                    "error carries the message: {error}"
                );
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        let snap = c.get_task(id).await.unwrap();
        assert_eq!(snap.status, TaskStatus::Failed);
        assert_eq!(snap.attempts.len(), 1, "a panic is permanent: no retry");
        assert_eq!(&*snap.attempts[0].worker, worker.as_str());
    }

    // The sleeps were not disturbed: still on their first attempt, and they complete there.
    for id in &sleeps {
        let snap = c.get_task(*id).await.unwrap();
        assert_eq!(snap.status, TaskStatus::Running, "sleep still running");
        assert_eq!(snap.attempts.len(), 1);
    }
    for id in &sleeps {
        let outcome = c.wait_for(*id, secs(5)).await.unwrap();
        assert!(
            matches!(outcome, TaskOutcome::Completed { .. }),
            "{outcome:?}"
        );
        let snap = c.get_task(*id).await.unwrap();
        assert_eq!(snap.attempts.len(), 1, "never re-run");
        assert_eq!(&*snap.attempts[0].worker, worker.as_str());
    }

    let stats = c.get_stats().await.unwrap();
    assert_eq!(stats.workers.restarts, 0, "the worker was not restarted");
    assert_eq!(stats.queue.leases_lost, 0);
    let workers = c.get_workers().await.unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].id, worker);
    assert_eq!(workers[0].restarts, 0);
    assert_eq!(workers[0].total_completed, 2);
    assert_eq!(workers[0].total_failed, 2);
    c.stop(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_killed_worker_is_restarted_and_its_task_still_completes() {
    let c = start(fixed(1), handlers()).await;
    let mut events = c.events().subscribe();
    let task = c.submit_async(sleep_spec(1_000)).await.unwrap();
    eventually("the task to run", secs(5), || async {
        c.get_task(task.id).await.unwrap().status == TaskStatus::Running
    })
    .await;

    let workers = c.pool().worker_refs().await.unwrap();
    assert_eq!(workers.len(), 1);
    let id = workers[0].id().to_string();
    workers[0].actor().kill();

    let event = next_event(&mut events, "WorkerRestarted", secs(5), |e| {
        matches!(e, EventKind::WorkerRestarted { .. })
    })
    .await;
    let EventKind::WorkerRestarted {
        worker, restarts, ..
    } = event
    else {
        unreachable!()
    };
    assert_eq!(&*worker, id);
    assert_eq!(restarts, 1);

    let outcome = task.wait(secs(10)).await.unwrap();
    assert_eq!(
        outcome,
        TaskOutcome::Completed {
            result: wrangle::Payload::encode(&1_000u64).unwrap()
        }
    );
    let snap = c.get_task(task.id).await.unwrap();
    let outcomes: Vec<_> = snap
        .attempts
        .iter()
        .map(|a| a.outcome.as_deref().map(str::to_string))
        .collect();
    assert_eq!(
        outcomes,
        [Some("lost".to_string()), Some("completed".to_string())],
        "the killed attempt is lost, the next one completes"
    );
    assert_eq!(
        &*snap.attempts[1].worker,
        id.as_str(),
        "the restarted worker ran it"
    );

    let stats = c.get_stats().await.unwrap();
    assert_eq!(stats.workers.restarts, 1);
    assert_eq!(stats.queue.leases_lost, 1);
    let workers = c.get_workers().await.unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].id, id, "same worker id back");
    assert_eq!(workers[0].restarts, 1);
    c.stop(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_silent_worker_is_replaced_and_its_task_runs_again() {
    let config = CoordinatorConfig {
        worker: WorkerConfig {
            heartbeat_interval: ms(100),
            ..WorkerConfig::default()
        },
        worker_timeout: ms(500),
        health_check_interval: ms(100),
        ..fixed(1)
    };
    let c = start(config, handlers()).await;
    let mut events = c.events().subscribe();
    let task = c.submit_async(sleep_spec(2_000)).await.unwrap();
    eventually("the task to run", secs(5), || async {
        c.get_task(task.id).await.unwrap().status == TaskStatus::Running
    })
    .await;

    let worker = c.pool().worker_refs().await.unwrap().remove(0);
    let id = worker.id().to_string();
    let stalled_at = tokio::time::Instant::now();
    worker.stall(secs(3_600));

    let event = next_event(&mut events, "WorkerUnresponsive", secs(5), |e| {
        matches!(e, EventKind::WorkerUnresponsive { .. })
    })
    .await;
    let EventKind::WorkerUnresponsive { worker, silent_ms } = event else {
        unreachable!()
    };
    assert_eq!(&*worker, id);
    assert!(silent_ms > 500, "silent for {silent_ms} ms");
    assert!(
        stalled_at.elapsed() < secs(2),
        "noticed within a few health checks, not after {:?}",
        stalled_at.elapsed()
    );

    let event = next_event(&mut events, "WorkerRestarted", secs(5), |e| {
        matches!(e, EventKind::WorkerRestarted { .. })
    })
    .await;
    let EventKind::WorkerRestarted {
        worker,
        reason,
        restarts,
        ..
    } = event
    else {
        unreachable!()
    };
    assert_eq!(&*worker, id);
    assert!(reason.contains("no heartbeat"), "reason: {reason}");
    assert_eq!(restarts, 1);

    let outcome = task.wait(secs(10)).await.unwrap();
    assert!(
        matches!(outcome, TaskOutcome::Completed { .. }),
        "{outcome:?}"
    );
    let snap = c.get_task(task.id).await.unwrap();
    assert_eq!(snap.attempts.len(), 2);
    assert_eq!(snap.attempts[0].outcome.as_deref(), Some("lost"));
    assert_eq!(snap.attempts[1].outcome.as_deref(), Some("completed"));

    let stats = c.get_stats().await.unwrap();
    assert_eq!(stats.workers.restarts, 1);
    assert_eq!(stats.queue.leases_lost, 1);
    let workers = c.get_workers().await.unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].id, id);
    assert_eq!(workers[0].restarts, 1);

    // The replacement heartbeats: it is not replaced again.
    tokio::time::sleep(secs(3)).await;
    assert_eq!(c.get_stats().await.unwrap().workers.restarts, 1);
    c.stop(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_pool_past_its_restart_budget_is_replaced_and_no_task_is_lost() {
    let config = CoordinatorConfig {
        min_workers: 1,
        max_workers: 3,
        restart_budget: RestartBudget {
            max_restarts: 2,
            within: secs(60),
        },
        ..fixed_with_slots(1, 1)
    };
    let c = start(config, handlers()).await;
    let mut events = c.events().subscribe();
    c.scale(3).await.unwrap();
    let ids = c
        .submit_batch((0..3).map(|_| sleep_spec(1_000)).collect())
        .await
        .unwrap();
    eventually("a task on each worker", secs(5), || async {
        c.get_stats().await.unwrap().queue.running == 3
    })
    .await;

    // Kill the same worker until the pool's budget (2 restarts) is spent.
    let first_pool = c.pool();
    for kill in 1..=3 {
        let w1 = first_pool
            .worker_refs()
            .await
            .unwrap()
            .into_iter()
            .find(|w| w.id() == "local/w-1")
            .expect("w-1 is back");
        eventually("w-1 to hold a task", secs(5), || async {
            w1.info().current_tasks == 1
        })
        .await;
        w1.actor().kill();
        if kill < 3 {
            next_event(&mut events, "WorkerRestarted", secs(5), |e| {
                matches!(e, EventKind::WorkerRestarted { .. })
            })
            .await;
        }
    }
    let EventKind::PoolFailed { pool, reason } =
        next_event(&mut events, "PoolFailed", secs(5), |e| {
            matches!(e, EventKind::PoolFailed { .. })
        })
        .await
    else {
        unreachable!()
    };
    assert_eq!(&*pool, "local");
    assert!(reason.contains("restart budget"), "{reason}");

    // The coordinator starts a new pool; every task still completes, the ones held by the
    // failed pool's other workers included.
    eventually("a new pool", secs(5), || async {
        c.pool().actor().get_id() != first_pool.actor().get_id()
    })
    .await;
    for id in &ids {
        let outcome = c.wait_for(*id, secs(30)).await.unwrap();
        assert!(
            matches!(outcome, TaskOutcome::Completed { .. }),
            "{outcome:?}"
        );
    }

    // Nothing of the failed pool lingers: not in the registry, not attached to the queue, and
    // the health check does not chase ghosts.
    let workers: Vec<_> = c
        .get_workers()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(workers, ["local/w-1"]);
    let stats = c.get_stats().await.unwrap();
    assert_eq!(stats.queue.workers, 1);
    assert_eq!(
        (stats.pool_restarts, stats.gate_restarts),
        (1, 0),
        "one pool restart, counted as the pool's"
    );
    let quiet = tokio::time::timeout(
        secs(120),
        next_event(&mut events, "WorkerUnresponsive", secs(3_600), |e| {
            matches!(e, EventKind::WorkerUnresponsive { .. })
        }),
    )
    .await;
    assert!(quiet.is_err(), "no worker is unresponsive: {quiet:?}");
    c.stop(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_pool_added_to_the_coordinator_is_listed_health_checked_and_stopped_with_it() {
    let config = CoordinatorConfig {
        worker: WorkerConfig {
            heartbeat_interval: ms(100),
            ..WorkerConfig::default()
        },
        worker_timeout: ms(500),
        health_check_interval: ms(100),
        ..fixed(1)
    };
    let c = start(config, handlers()).await;
    let gpu_handlers = wrangle::HandlerRegistry::new();
    gpu_handlers.register(
        "infer",
        wrangle::handler_fn(|ctx: wrangle::TaskContext, ms_: u64| async move {
            tokio::time::sleep(ms(ms_)).await;
            Ok::<_, wrangle::TaskError>(ctx.worker().to_string())
        }),
    );
    let pool_config = wrangle::PoolConfig {
        name: "gpu".into(),
        min_workers: 1,
        max_workers: 1,
        worker: WorkerConfig {
            heartbeat_interval: ms(100),
            ..WorkerConfig::default()
        },
        ..wrangle::PoolConfig::default()
    };
    let gpu = c
        .add_pool(pool_config.clone(), gpu_handlers.clone())
        .await
        .unwrap();
    // One name, one pool.
    let again = c.add_pool(pool_config, gpu_handlers).await;
    assert!(
        matches!(&again, Err(wrangle::Error::Invalid { field, .. }) if *field == "name"),
        "{again:?}"
    );
    assert!(c.serves("infer"), "its task types are served here");
    let ids: Vec<String> = c
        .get_workers()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert!(ids.contains(&"gpu/w-1".to_string()), "{ids:?}");

    // Its worker goes silent mid-task: the health check replaces it through its own pool.
    let task = c
        .submit_async(TaskSpec::new("infer", &2_000u64).unwrap())
        .await
        .unwrap();
    eventually("the task to run", secs(5), || async {
        c.get_task(task.id).await.unwrap().status == TaskStatus::Running
    })
    .await;
    let worker = gpu.worker_refs().await.unwrap().remove(0);
    worker.stall(secs(3_600));
    let ran_on: String = task.result(secs(30)).await.unwrap();
    assert_eq!(ran_on, "gpu/w-1");
    let snap = c.get_task(task.id).await.unwrap();
    assert_eq!(snap.attempts.len(), 2, "{:?}", snap.attempts);
    assert_eq!(snap.attempts[0].outcome.as_deref(), Some("lost"));
    assert_eq!(gpu.stats().await.unwrap().restarts, 1);

    c.stop(true).await.unwrap();
    assert!(!gpu.actor().get_status().eq(&ractor::ActorStatus::Running));
}
