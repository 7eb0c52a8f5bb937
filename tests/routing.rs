//! Label routing end to end: a task that requires a label runs only on a worker with that
//! tag. While no such worker exists it waits in the queue, visibly unroutable (and it does
//! not make the autoscaler grow pools that could not take it); once a second pool with a
//! tagged worker joins the same queue, the task runs there.
//!
//! Routing among workers: a round-robin pool deals a burst out one task per worker in
//! turn, a least-loaded one (the default) fills its freest worker first, and tasks sharing
//! an affinity key stay on one worker, moving together to another when it stops.

#[path = "support/common.rs"]
mod common;

use wrangle::{
    handler_fn, CoordinatorConfig, PoolConfig, PoolRef, TaskContext, TaskError, TaskSpec,
    TaskStatus, WorkerConfig,
};

use common::{eventually, ms, secs, start};

/// Handlers whose result is the id of the worker that ran them.
fn whoami_handlers() -> wrangle::HandlerRegistry {
    let handlers = common::handlers();
    handlers.register(
        "whoami",
        handler_fn(|ctx: TaskContext, _: ()| async move {
            Ok::<_, TaskError>(ctx.worker().to_string())
        }),
    );
    handlers
}

#[tokio::test(start_paused = true)]
async fn a_labelled_task_waits_visibly_until_a_matching_worker_joins() {
    // The autoscaler is on with a hair trigger: unroutable tasks must not count as backlog.
    let config = CoordinatorConfig {
        min_workers: 1,
        max_workers: 4,
        scale_up_threshold: 0.5,
        scale_down_threshold: 0.0,
        scale_cooldown: ms(100),
        autoscale_interval: ms(100),
        ..CoordinatorConfig::default()
    };
    let handlers = whoami_handlers();
    let c = start(config, handlers.clone()).await;

    let gpu = c
        .submit_async(TaskSpec::new("whoami", &()).unwrap().label("gpu"))
        .await
        .unwrap();
    eventually("the task to show as unroutable", secs(5), || async {
        c.get_stats().await.unwrap().queue.unroutable == 1
    })
    .await;

    // Plain tasks still run on the untagged local worker meanwhile.
    let plain: String = c
        .submit_async(TaskSpec::new("whoami", &()).unwrap())
        .await
        .unwrap()
        .result(secs(5))
        .await
        .unwrap();
    assert_eq!(plain, "local/w-1");

    // Time passes: the task is neither dropped nor run on the wrong worker.
    tokio::time::sleep(secs(10)).await;
    let snap = c.get_task(gpu.id).await.unwrap();
    assert_eq!(snap.status, TaskStatus::Queued);
    assert!(snap.unroutable, "snapshot says why it waits");
    assert!(
        snap.attempts.is_empty(),
        "never leased: {:?}",
        snap.attempts
    );
    let stats = c.get_stats().await.unwrap();
    assert_eq!(stats.queue.unroutable, 1);
    assert_eq!(stats.queue.queued, 1);
    assert_eq!(
        stats.workers.worker_count, 1,
        "no scale-up for an unroutable task"
    );
    assert!(c.scale_history().is_empty(), "{:?}", c.scale_history());

    let (gpu_pool, _) = PoolRef::start(
        PoolConfig {
            name: "gpu".into(),
            min_workers: 1,
            max_workers: 1,
            worker: WorkerConfig {
                labels: vec!["gpu".into()],
                ..WorkerConfig::default()
            },
            ..PoolConfig::default()
        },
        c.queue().clone(),
        handlers,
    )
    .await
    .unwrap();

    let ran_on: String = gpu.result(secs(5)).await.unwrap();
    assert_eq!(ran_on, "gpu/w-1");
    let snap = c.get_task(gpu.id).await.unwrap();
    assert_eq!(snap.status, TaskStatus::Completed);
    assert!(!snap.unroutable);
    assert_eq!(snap.attempts.len(), 1);
    assert_eq!(&*snap.attempts[0].worker, "gpu/w-1");
    assert_eq!(c.get_stats().await.unwrap().queue.unroutable, 0);

    // With both pools attached, labelled tasks keep going to the tagged worker only.
    let specs = (0..20)
        .map(|_| TaskSpec::new("whoami", &()).unwrap().label("gpu"))
        .collect();
    let (ids, mut outcomes) = c.queue().submit_batch_streaming(specs).await.unwrap();
    for _ in &ids {
        let (id, outcome) = tokio::time::timeout(secs(5), outcomes.recv())
            .await
            .expect("outcome in time")
            .expect("stream open");
        let wrangle::TaskOutcome::Completed { result } = outcome else {
            panic!("task {id}: {outcome:?}");
        };
        assert_eq!(result.decode::<String>().unwrap(), "gpu/w-1");
    }

    gpu_pool.stop(true).await.unwrap();
    c.stop(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_handler_registered_at_runtime_takes_its_waiting_tasks() {
    let c = start(common::fixed(2), common::handlers()).await;
    let late = c
        .submit_async(TaskSpec::new("late", &21).unwrap())
        .await
        .unwrap();
    eventually("the task to show as unroutable", secs(5), || async {
        c.get_task(late.id).await.unwrap().unroutable
    })
    .await;

    c.register_handler(
        "late",
        handler_fn(|_ctx: TaskContext, x: i64| async move { Ok::<_, TaskError>(x * 2) }),
    );
    let doubled: i64 = late.result(secs(5)).await.unwrap();
    assert_eq!(doubled, 42);
    assert_eq!(c.get_stats().await.unwrap().queue.unroutable, 0);
    c.stop(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_handler_change_during_a_direct_execution_keeps_every_slot() {
    // One worker, one slot. A direct execution runs beside a queued task's attempt (direct
    // runs bypass the slots), then the handlers change: the worker must neither crash nor
    // hand the queue a wrong count of free slots.
    let c = start(common::fixed_with_slots(1, 1), common::handlers()).await;
    let worker = c.pool().worker_refs().await.unwrap().remove(0);
    let leased = c
        .submit_async(TaskSpec::new("sleep", &serde_json::json!({ "ms": 1_000 })).unwrap())
        .await
        .unwrap();
    eventually("the queued task to run", secs(5), || async {
        c.get_task(leased.id).await.unwrap().status == TaskStatus::Running
    })
    .await;
    let direct = sleep_directly(&worker, 500);
    eventually("both to run", secs(5), || async {
        worker.info().current_tasks == 2
    })
    .await;

    register_noop(&c);
    assert_eq!(direct.await.unwrap().unwrap().decode::<u64>().unwrap(), 500);
    assert!(matches!(
        leased.wait(secs(5)).await.unwrap(),
        wrangle::TaskOutcome::Completed { .. }
    ));
    assert_eq!(c.get_task(leased.id).await.unwrap().attempts.len(), 1);
    assert_eq!(c.get_stats().await.unwrap().workers.restarts, 0, "no crash");

    // The slot is still there: tasks keep running, one at a time.
    let ids = c
        .submit_batch(
            (0..3)
                .map(|_| TaskSpec::new("noop", &()).unwrap())
                .collect(),
        )
        .await
        .unwrap();
    for id in ids {
        assert!(matches!(
            c.wait_for(id, secs(5)).await.unwrap(),
            wrangle::TaskOutcome::Completed { .. }
        ));
    }
    let stats = c.get_stats().await.unwrap().queue;
    assert_eq!(stats.free_credits, 1, "one slot, free again: {stats:?}");
    c.stop(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_handler_change_while_only_a_direct_execution_runs_does_not_starve_the_worker() {
    let c = start(common::fixed_with_slots(1, 1), common::handlers()).await;
    let worker = c.pool().worker_refs().await.unwrap().remove(0);
    let direct = sleep_directly(&worker, 500);
    eventually("the direct run", secs(5), || async {
        worker.info().current_tasks == 1
    })
    .await;
    register_noop(&c);
    direct.await.unwrap().unwrap();

    let done = tokio::time::timeout(secs(10), c.submit("noop", &())).await;
    assert!(done.is_ok(), "the worker's one slot was lost");
    assert_eq!(c.get_stats().await.unwrap().queue.free_credits, 1);
    c.stop(true).await.unwrap();
}

/// Runs a `sleep` of `ms` directly on `worker` (no queue, no slot), in the background.
fn sleep_directly(
    worker: &wrangle::WorkerRef,
    ms: u64,
) -> tokio::task::JoinHandle<Result<wrangle::Payload, TaskError>> {
    let worker = worker.clone();
    tokio::spawn(async move {
        worker
            .execute_task("sleep", serde_json::json!({ "ms": ms }).into())
            .await
    })
}

/// Registers a `noop` handler at runtime: every worker re-announces its task types.
fn register_noop(c: &wrangle::Coordinator) {
    c.register_handler(
        "noop",
        handler_fn(|_ctx: TaskContext, _: ()| async { Ok::<_, TaskError>(()) }),
    );
}

/// Waits until `n` workers are attached to the queue with all their slots free.
async fn attached(c: &wrangle::Coordinator, n: usize, slots: u64) {
    eventually("the workers to attach", secs(5), || async {
        let q = c.get_stats().await.unwrap().queue;
        q.workers == n && q.free_credits == slots
    })
    .await;
}

/// Submits `specs` in one batch and returns each task's result (its worker's id), in order.
async fn run_all(c: &wrangle::Coordinator, specs: Vec<TaskSpec>) -> Vec<String> {
    let ids = c.submit_batch(specs).await.unwrap();
    let mut out = Vec::new();
    for id in ids {
        match c.wait_for(id, secs(10)).await.unwrap() {
            wrangle::TaskOutcome::Completed { result } => out.push(result.decode().unwrap()),
            other => panic!("task {id}: {other:?}"),
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn a_round_robin_pool_deals_a_burst_out_in_turn_and_least_loaded_stays_the_default() {
    let c = start(common::fixed(1), whoami_handlers()).await;
    for (name, routing) in [
        ("rr", wrangle::RoutingStrategy::RoundRobin),
        ("ll", wrangle::RoutingStrategy::default()),
    ] {
        c.add_pool(
            PoolConfig {
                name: name.into(),
                min_workers: 3,
                max_workers: 3,
                worker: WorkerConfig {
                    labels: vec![name.into()],
                    ..WorkerConfig::default()
                },
                routing,
                ..PoolConfig::default()
            },
            whoami_handlers(),
        )
        .await
        .unwrap();
    }
    // The local worker and three in each pool, four slots each.
    attached(&c, 7, 28).await;

    let burst = |label: &str| {
        (0..9)
            .map(|_| TaskSpec::new("whoami", &()).unwrap().label(label))
            .collect::<Vec<_>>()
    };
    let dealt = run_all(&c, burst("rr")).await;
    let expected: Vec<String> = (0..9).map(|i| format!("rr/w-{}", i % 3 + 1)).collect();
    assert_eq!(dealt, expected, "one each, in turn");

    // Least-loaded fills the freest worker first: four, four, one.
    let filled = run_all(&c, burst("ll")).await;
    let count = |w: &str| filled.iter().filter(|r| *r == w).count();
    let mut counts = [count("ll/w-1"), count("ll/w-2"), count("ll/w-3")];
    counts.sort_unstable();
    assert_eq!(counts, [1, 4, 4], "{filled:?}");
    c.stop(true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_affinity_key_keeps_its_tasks_on_one_worker_and_they_move_together_when_it_stops() {
    let (open, gate) = tokio::sync::watch::channel(false);
    let handlers = whoami_handlers();
    // Returns its worker's id once the gate is open (at once when `wait` is false).
    handlers.register(
        "turn",
        handler_fn(move |ctx: TaskContext, wait: bool| {
            let mut gate = gate.clone();
            async move {
                if wait {
                    gate.wait_for(|open| *open).await.expect("gate kept");
                }
                Ok::<_, TaskError>(ctx.worker().to_string())
            }
        }),
    );
    let mut config = common::fixed(3);
    // Long enough that no task stops waiting for its worker during the test.
    config.queue.affinity_wait = secs(600);
    let c = start(config, handlers).await;
    attached(&c, 3, 12).await;

    let turns = |key: &str, wait: bool, n: usize| {
        (0..n)
            .map(|_| TaskSpec::new("turn", &wait).unwrap().affinity_key(key))
            .collect::<Vec<_>>()
    };
    // Ten turns of one conversation: more than one worker's four slots, all on one worker.
    let ran = run_all(&c, turns("conv-1", false, 10)).await;
    assert!(ran.iter().all(|w| *w == ran[0]), "{ran:?}");
    // Another conversation binds on its own.
    let other = run_all(&c, turns("conv-2", false, 3)).await;
    assert!(other.iter().all(|w| *w == other[0]), "{other:?}");
    assert_eq!(c.get_stats().await.unwrap().queue.affinity_keys, 2);

    // Six turns that hold their slots: four run on the bound worker, two wait for it.
    let bound = ran[0].clone();
    let ids = c.submit_batch(turns("conv-1", true, 6)).await.unwrap();
    eventually("four to run and two to wait", secs(5), || async {
        let q = c.get_stats().await.unwrap().queue;
        q.running == 4 && q.affinity_waiting == 2
    })
    .await;
    for id in &ids {
        let snap = c.get_task(*id).await.unwrap();
        if let Some(a) = snap.attempts.last() {
            assert_eq!(&*a.worker, bound);
        }
    }

    // The bound worker stops for good: its tasks go back, the key is bound to another
    // worker, and all six run there.
    let worker = c
        .pool()
        .worker_refs()
        .await
        .unwrap()
        .into_iter()
        .find(|w| w.id() == bound)
        .unwrap();
    worker.stop(false);
    eventually("the worker to leave", secs(5), || async {
        c.get_stats().await.unwrap().queue.workers == 2
    })
    .await;
    open.send(true).unwrap();
    let mut moved = Vec::new();
    for id in &ids {
        match c.wait_for(*id, secs(10)).await.unwrap() {
            wrangle::TaskOutcome::Completed { result } => {
                moved.push(result.decode::<String>().unwrap())
            }
            other => panic!("task {id}: {other:?}"),
        }
    }
    assert_ne!(moved[0], bound);
    assert!(moved.iter().all(|w| *w == moved[0]), "{moved:?}");
    let q = c.get_stats().await.unwrap().queue;
    assert_eq!((q.affinity_keys, q.affinity_fallbacks), (1, 0), "{q:?}");
    c.stop(true).await.unwrap();
}
