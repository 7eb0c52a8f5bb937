//! Label routing end to end: a task that requires a label runs only on a worker with that
//! tag. While no such worker exists it waits in the queue, visibly unroutable (and it does
//! not make the autoscaler grow pools that could not take it); once a second pool with a
//! tagged worker joins the same queue, the task runs there.

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
