//! Batches larger than one statement's worth of rows, on both backends: each backend cuts a
//! commit's task and attempt rows into statements of a few thousand rows, and every row
//! must land whole, in its own place, whatever statement carried it.

#[path = "support/common.rs"]
mod common;
#[macro_use]
#[path = "support/databases.rs"]
mod databases;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use serde_json::json;
use wrangle::{
    Coordinator, CoordinatorConfig, QueueConfig, QueueRef, Store, StoreConfig, TaskId,
    TaskPriority, TaskQuery, TaskSnapshot, TaskSpec, TaskStatus,
};

use common::{fixed, handlers};

/// More than one statement's rows on either backend (SQLite: 256; PostgreSQL: 4,096).
const TASKS: usize = 10_000;

const WAIT: Duration = Duration::from_secs(60);

on_both!(many_rows_land_each_in_its_place);

const PRIORITIES: [TaskPriority; 4] = [
    TaskPriority::Low,
    TaskPriority::Normal,
    TaskPriority::High,
    TaskPriority::Critical,
];

/// Task `i` of a batch: its payload, priority, key and metadata all differ from every
/// other task's; `label` gives it a label no worker has, so it stays queued.
fn spec(batch: &str, i: usize, label: bool) -> TaskSpec {
    let payload =
        json!({"batch": batch, "i": i, "text": format!("row {i} of {batch}: é\u{1F600}")});
    let mut spec = TaskSpec::new("echo", &payload)
        .unwrap()
        .priority(PRIORITIES[i % PRIORITIES.len()])
        .idempotency_key(format!("{batch}-key-{i}"))
        .metadata("i", i.to_string());
    if label {
        spec = spec.label(format!("{batch}-label-{i}"));
    }
    spec
}

/// Every stored task, oldest first, read page by page.
async fn every_task(store: &Store) -> Vec<TaskSnapshot> {
    let mut all = Vec::new();
    loop {
        let page = store
            .list(&TaskQuery {
                after: all.last().map(|t: &TaskSnapshot| t.id),
                limit: 1000,
                ..TaskQuery::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

/// The task made from `spec(batch, i, label)` is stored exactly as submitted.
fn check(task: &TaskSnapshot, batch: &str, i: usize, label: bool, url: &str) {
    let want = spec(batch, i, label);
    assert_eq!(task.task_type, "echo", "{url}");
    assert_eq!(
        task.payload,
        *want.payload(),
        "task {i} of {batch} on {url}"
    );
    assert_eq!(
        task.options.priority,
        want.options().priority,
        "task {i} of {batch} on {url}"
    );
    assert_eq!(
        task.options.idempotency_key,
        want.options().idempotency_key,
        "task {i} of {batch} on {url}"
    );
    assert_eq!(task.options.labels, want.options().labels, "{url}");
    assert_eq!(task.options.metadata, want.options().metadata, "{url}");
}

async fn many_rows_land_each_in_its_place(url: String) {
    // A queue with no workers: one submit of 10,000 labelled tasks is one commit of 10,000
    // new rows, and every task stays queued.
    let started = SystemTime::now();
    let store = Store::open(StoreConfig::new(&url)).await.unwrap();
    let (queue, handle) = QueueRef::spawn_with_store(QueueConfig::default(), store.clone())
        .await
        .unwrap();
    let specs = (0..TASKS).map(|i| spec("queued", i, true)).collect();
    let queued: Vec<TaskId> = queue
        .submit_batch(specs)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    queue.flush().await.unwrap();
    queue.actor().stop(None);
    handle.await.unwrap();

    let stored = every_task(&store).await;
    assert_eq!(stored.len(), TASKS, "{url}");
    let at: HashMap<TaskId, usize> = queued.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    for task in &stored {
        let i = at[&task.id];
        assert_eq!(task.status, TaskStatus::Queued, "{url}");
        check(task, "queued", i, true, &url);
        assert!(task.attempts.is_empty(), "{url}");
        assert!(task.created_at >= started - Duration::from_secs(1), "{url}");
        assert!(task.created_at <= SystemTime::now(), "{url}");
    }
    // The key column, not only the options, holds each task's own key.
    let keys: Vec<String> = (0..TASKS).map(|i| format!("queued-key-{i}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let holders = store.find_keys(&keys).await.unwrap();
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(holders.get(*key), Some(&queued[i]), "{key} on {url}");
    }
    // The priority column, which orders recovery, holds each task's own level.
    for level in PRIORITIES {
        let n = databases::count(
            &url,
            &format!(
                "SELECT COUNT(*) FROM tasks WHERE priority = {}",
                level.level()
            ),
        )
        .await;
        assert_eq!(n as usize, TASKS / PRIORITIES.len(), "{level:?} on {url}");
    }
    store.close().await;

    // Then 10,000 more run to completion beside them: their states and attempts go in as
    // the workers finish them, in commits of whatever size the load makes.
    let mut store_config = StoreConfig::new(&url);
    store_config.prune_interval = Duration::from_secs(3600);
    let coordinator = Coordinator::start(
        CoordinatorConfig {
            store: Some(store_config),
            ..fixed(2)
        },
        handlers(),
    )
    .await
    .unwrap();
    let specs = (0..TASKS).map(|i| spec("done", i, false)).collect();
    let done = coordinator.submit_batch(specs).await.unwrap();
    for id in &done {
        coordinator.wait_for(*id, WAIT).await.unwrap();
    }
    coordinator.queue().flush().await.unwrap();
    coordinator.stop(false).await.unwrap();

    let store = Store::open(StoreConfig::new(&url)).await.unwrap();
    let stored = every_task(&store).await;
    assert_eq!(stored.len(), 2 * TASKS, "{url}");
    let done_at: HashMap<TaskId, usize> = done.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    for task in &stored {
        if let Some(&i) = at.get(&task.id) {
            assert_eq!(task.status, TaskStatus::Queued, "{url}");
            check(task, "queued", i, true, &url);
            continue;
        }
        let i = done_at[&task.id];
        assert_eq!(task.status, TaskStatus::Completed, "task {i} on {url}");
        check(task, "done", i, false, &url);
        // `echo` answers with its input.
        assert_eq!(
            task.result.as_ref(),
            Some(&task.payload),
            "task {i} on {url}"
        );
        assert_eq!(task.attempts.len(), 1, "task {i} on {url}");
        let attempt = &task.attempts[0];
        assert_eq!(attempt.number, 1, "{url}");
        assert!(attempt.finished_at.is_some(), "task {i} on {url}");
        assert!(task.finished_at.is_some(), "task {i} on {url}");
    }
    store.close().await;
}

/// On PostgreSQL the writer refreshes the statistics of a new database as its tables grow
/// (after 1,000 rows), so the plans of its prepared statements do not stay those of empty
/// tables (whole-table scans) until autovacuum comes by. `last_analyze` is set only by an
/// explicit `ANALYZE`, never by autovacuum's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_statistics_are_refreshed_as_the_tables_grow() {
    use sqlx::Connection;
    let Some(url) = databases::fresh_postgres("analyze").await else {
        return;
    };
    let analyzed = || async {
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        let (done,): (bool,) = sqlx::query_as(
            "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'tasks'",
        )
        .fetch_one(&mut c)
        .await
        .unwrap();
        c.close().await.unwrap();
        done
    };
    let store = Store::open(StoreConfig::new(&url)).await.unwrap();
    let (queue, handle) = QueueRef::spawn_with_store(QueueConfig::default(), store.clone())
        .await
        .unwrap();
    let specs = (0..500).map(|i| spec("small", i, true)).collect();
    queue.submit_batch(specs).await.unwrap();
    queue.flush().await.unwrap();
    assert!(!analyzed().await, "500 rows: not yet");
    let specs = (0..1_000).map(|i| spec("grown", i, true)).collect();
    queue.submit_batch(specs).await.unwrap();
    queue.flush().await.unwrap();
    common::eventually("the tasks table to be analyzed", WAIT, analyzed).await;
    queue.actor().stop(None);
    handle.await.unwrap();
    store.close().await;
    databases::drop_postgres(&url).await;
}
