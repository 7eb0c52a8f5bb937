//! The store on real databases: an SQLite file in a temporary directory, and a fresh
//! database on the PostgreSQL server named by `DATABASE_URL` (`.ci/run` starts one; under
//! `CI=true` its absence fails the PostgreSQL tests). Each scenario runs on both.

#[path = "support/common.rs"]
mod common;
#[macro_use]
#[path = "support/databases.rs"]
mod databases;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use sqlx::Connection;
use wrangle::{
    Coordinator, CoordinatorConfig, Error, QueueError, Store, StoreConfig, TaskId, TaskOutcome,
    TaskQuery, TaskSpec, TaskStatus,
};

use common::{eventually, fixed, handlers};

const WAIT: Duration = Duration::from_secs(10);

on_both!(
    a_restart_keeps_results_keys_dead_letters_and_registry,
    unfinished_tasks_run_after_a_restart_with_their_attempts_kept,
    a_row_that_no_longer_decodes_fails_alone_and_the_rest_load,
    retention_prunes_old_finished_tasks_only,
    migrations_run_once,
    buffered_submits_are_stored_with_the_next_group,
    a_second_coordinator_on_the_same_database_is_refused,
    a_key_another_task_stored_first_does_not_leave_a_task_unstored,
    a_refused_task_leaves_no_attempt_rows,
    each_start_claims_a_higher_epoch,
    a_dead_letter_that_no_longer_decodes_is_marked_once_and_pruned,
    a_count_bound_prunes_the_oldest_finished_tasks_whatever_their_age,
);

fn on(url: &str, workers: usize) -> CoordinatorConfig {
    let mut store = StoreConfig::new(url);
    store.prune_interval = Duration::from_millis(50);
    CoordinatorConfig {
        store: Some(store),
        ..fixed(workers)
    }
}

async fn started(config: CoordinatorConfig) -> Coordinator {
    Coordinator::start(config, handlers())
        .await
        .expect("coordinator starts on its store")
}

async fn a_restart_keeps_results_keys_dead_letters_and_registry(url: String) {
    let first = started(on(&url, 2)).await;
    let keyed = first
        .submit_async(
            TaskSpec::new("echo", &json!({"n": 1}))
                .unwrap()
                .idempotency_key("order-1"),
        )
        .await
        .unwrap();
    let plain = first
        .submit_async(TaskSpec::new("echo", &json!({"n": 2})).unwrap())
        .await
        .unwrap();
    let doomed = first
        .submit_async(
            TaskSpec::new(
                "fail",
                &json!({"mode": "permanent", "message": "bad input"}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    for h in [&keyed, &plain, &doomed] {
        h.wait(WAIT).await.unwrap();
    }
    let old_workers: Vec<String> = first
        .get_workers()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.id)
        .collect();
    first.stop(true).await.unwrap();
    let store = Store::open(StoreConfig::new(&url)).await.unwrap();
    assert_eq!(
        store.nodes().await.unwrap(),
        vec![("coordinator".to_string(), "deregistered".to_string())],
        "a graceful stop deregisters the node"
    );
    store.close().await;

    let second = started(on(&url, 1)).await;
    second.queue().flush().await.unwrap();
    assert_eq!(
        second.store().unwrap().nodes().await.unwrap(),
        vec![("coordinator".to_string(), "active".to_string())]
    );
    // Results readable, and waits on finished tasks answer at once.
    let t = second.get_task(keyed.id).await.unwrap();
    assert_eq!(t.status, TaskStatus::Completed);
    assert_eq!(
        t.result.unwrap().decode::<serde_json::Value>().unwrap(),
        json!({"n": 1})
    );
    assert_eq!(t.attempts.len(), 1);
    assert_eq!(t.attempts[0].outcome.as_deref(), Some("completed"));
    let answered = tokio::time::timeout(
        Duration::from_millis(500),
        second.wait_for(plain.id, Duration::from_secs(60)),
    )
    .await
    .expect("a finished task's wait answers at once");
    assert!(matches!(answered.unwrap(), TaskOutcome::Completed { .. }));
    // Listings include the tasks finished before the restart, in id order, with cursors.
    let completed: Vec<TaskId> = second
        .list_tasks(Some(TaskStatus::Completed), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(completed, vec![keyed.id, plain.id]);
    let newest = second
        .queue()
        .query(TaskQuery {
            limit: 1,
            newest_first: true,
            ..TaskQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        newest.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![doomed.id]
    );
    assert_eq!(newest[0].attempts.len(), 1);
    let next = second
        .queue()
        .query(TaskQuery {
            limit: 10,
            newest_first: true,
            after: Some(doomed.id),
            task_type: Some("echo".into()),
            ..TaskQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        next.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![plain.id, keyed.id]
    );
    // The idempotency key is honoured: the existing task, not a new one.
    let again = second
        .submit_async(
            TaskSpec::new("echo", &json!({"n": 99}))
                .unwrap()
                .idempotency_key("order-1"),
        )
        .await
        .unwrap();
    assert!(again.existing);
    assert_eq!(again.id, keyed.id);
    // The dead-letter set, intact.
    let dead: Vec<TaskId> = second
        .dead_letters(10)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(dead, vec![doomed.id]);
    let t = second.get_task(doomed.id).await.unwrap();
    assert_eq!(
        (t.status, t.error.as_deref()),
        (TaskStatus::Failed, Some("bad input"))
    );
    // Re-queued from the dead letters, it runs again (and fails again, for good).
    second.requeue(doomed.id).await.unwrap();
    assert!(matches!(
        second.wait_for(doomed.id, WAIT).await.unwrap(),
        TaskOutcome::Failed { .. }
    ));
    // The registry: the first run's workers deregistered, this run's active.
    let rows: HashMap<String, String> = second
        .store()
        .unwrap()
        .workers()
        .await
        .unwrap()
        .into_iter()
        .collect();
    let new_workers: Vec<String> = second
        .get_workers()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.id)
        .collect();
    for w in &old_workers {
        if !new_workers.contains(w) {
            assert_eq!(
                rows.get(w).map(String::as_str),
                Some("deregistered"),
                "{w}: {rows:?}"
            );
        }
    }
    for w in &new_workers {
        assert_eq!(
            rows.get(w).map(String::as_str),
            Some("active"),
            "{w}: {rows:?}"
        );
    }
    second.stop(true).await.unwrap();
}

async fn unfinished_tasks_run_after_a_restart_with_their_attempts_kept(url: String) {
    let first = started(on(&url, 1)).await;
    // One task running (for a minute), one waiting behind a delay.
    let running = first
        .submit_async(
            TaskSpec::new("sleep", &json!({"ms": 60_000}))
                .unwrap()
                .retries(2),
        )
        .await
        .unwrap();
    let delayed = first
        .submit_async(
            TaskSpec::new("echo", &json!("later"))
                .unwrap()
                .delay(Duration::from_millis(300))
                .affinity_key("conversation-1"),
        )
        .await
        .unwrap();
    eventually("the sleep task to run", WAIT, || async {
        first.get_task(running.id).await.unwrap().status == TaskStatus::Running
    })
    .await;
    first.queue().flush().await.unwrap();
    // An immediate stop: the running attempt is cut off, nothing finishes.
    let report = first.stop(false).await.unwrap();
    assert_eq!(report.unfinished, 2);

    let second = started(on(&url, 1)).await;
    assert_eq!(second.queue().stats().await.unwrap().recovered, 2);
    second.cancel_task(running.id).await.unwrap();
    let t = second.get_task(running.id).await.unwrap();
    assert_eq!(t.status, TaskStatus::Cancelled);
    assert!(
        !t.attempts.is_empty() && t.attempts[0].finished_at.is_some(),
        "the cut-off attempt is kept, closed: {:?}",
        t.attempts
    );
    assert!(matches!(
        second.wait_for(delayed.id, WAIT).await.unwrap(),
        TaskOutcome::Completed { .. }
    ));
    // Its options came back with it, the affinity key among them (stored in the options
    // column's JSON, so no migration was needed for it).
    let d = second.get_task(delayed.id).await.unwrap();
    assert_eq!(d.options.affinity_key.as_deref(), Some("conversation-1"));
    second.stop(true).await.unwrap();
}

async fn a_row_that_no_longer_decodes_fails_alone_and_the_rest_load(url: String) {
    let first = started(on(&url, 1)).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let spec = TaskSpec::new("echo", &json!(n))
            .unwrap()
            .delay(Duration::from_secs(3600));
        ids.push(first.submit_async(spec).await.unwrap().id);
    }
    first.stop(false).await.unwrap();
    // A newer or older program wrote options this one cannot read.
    corrupt_options(&url, ids[1]).await;

    let second = started(on(&url, 1)).await;
    assert_eq!(second.queue().stats().await.unwrap().recovered, 2);
    let bad = second.get_task(ids[1]).await.unwrap();
    assert_eq!(bad.status, TaskStatus::Failed);
    let error = bad.error.unwrap();
    assert!(error.contains("no longer decodes"), "{error}");
    for id in [ids[0], ids[2]] {
        assert_eq!(
            second.get_task(id).await.unwrap().status,
            TaskStatus::Pending
        );
    }
    // Marked failed in the database too, so the next start does not trip on it again.
    let counts = second.store().unwrap().task_counts().await.unwrap();
    assert_eq!(counts.get(&TaskStatus::Failed), Some(&1), "{counts:?}");
    second.stop(false).await.unwrap();
}

async fn a_dead_letter_that_no_longer_decodes_is_marked_once_and_pruned(url: String) {
    let first = started(on(&url, 1)).await;
    let dead = first
        .submit_async(
            TaskSpec::new("fail", &json!({"mode": "permanent"}))
                .unwrap()
                .retries(0),
        )
        .await
        .unwrap();
    dead.wait(WAIT).await.unwrap();
    first.stop(true).await.unwrap();
    const DEAD: &str = "SELECT COUNT(*) FROM tasks WHERE dead_seq IS NOT NULL";
    assert_eq!(databases::count(&url, DEAD).await, 1, "a dead letter");
    corrupt_options(&url, dead.id).await;

    let second = started(on(&url, 1)).await;
    let marked = second.get_task(dead.id).await.unwrap();
    assert_eq!(marked.status, TaskStatus::Failed);
    assert!(marked.error.unwrap().contains("no longer decodes"));
    second.stop(true).await.unwrap();
    assert_eq!(
        databases::count(&url, DEAD).await,
        0,
        "marked once, it is no longer a dead letter to load again"
    );
    let finished_at = "SELECT COALESCE(MAX(finished_at_ms), 0) FROM tasks";
    let marked_at = databases::count(&url, finished_at).await;

    let third = started(on(&url, 1)).await;
    assert_eq!(third.queue().stats().await.unwrap().recovered, 0);
    third.stop(true).await.unwrap();
    assert_eq!(
        databases::count(&url, finished_at).await,
        marked_at,
        "not marked again"
    );
    // And retention takes it like any finished task.
    let store = Store::open(StoreConfig::new(&url)).await.unwrap();
    assert_eq!(store.prune(Duration::ZERO).await.unwrap(), 1);
    assert!(store.get_task(dead.id).await.unwrap().is_none());
    store.close().await;
}

async fn a_count_bound_prunes_the_oldest_finished_tasks_whatever_their_age(url: String) {
    let mut config = on(&url, 1);
    let store_config = config.store.as_mut().unwrap();
    store_config.retention = None;
    store_config.retention_max_tasks = Some(10);
    let c = started(config).await;
    let dead = c
        .submit_async(
            TaskSpec::new("fail", &json!({"mode": "permanent"}))
                .unwrap()
                .retries(0),
        )
        .await
        .unwrap();
    let waiting = c
        .submit_async(
            TaskSpec::new("echo", &json!("later"))
                .unwrap()
                .delay(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let mut done = Vec::new();
    for n in 0..60 {
        let h = c
            .submit_async(TaskSpec::new("echo", &json!(n)).unwrap())
            .await
            .unwrap();
        done.push(h);
    }
    for h in &done {
        h.wait(WAIT).await.unwrap();
    }
    dead.wait(WAIT).await.unwrap();
    c.queue().flush().await.unwrap();
    let store = c.store().unwrap().clone();
    // The pruned counter is raised once the prune's transaction has committed: wait for
    // both.
    eventually("the finished tasks beyond 10 to be pruned", WAIT, || {
        let store = store.clone();
        async move {
            let counts = store.task_counts().await.unwrap();
            counts.get(&TaskStatus::Completed).copied().unwrap_or(0) <= 10
                && store.stats().pruned >= 50
        }
    })
    .await;
    eventually("the size to be measured", WAIT, || async {
        store.stats().database_bytes > 0
    })
    .await;
    assert_eq!(
        store.get_task(dead.id).await.unwrap().map(|t| t.status),
        Some(TaskStatus::Failed),
        "dead letters are not counted out"
    );
    assert_eq!(
        store.get_task(waiting.id).await.unwrap().map(|t| t.status),
        Some(TaskStatus::Pending),
        "unfinished tasks are never pruned"
    );
    c.stop(false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_gives_pruned_space_back_even_in_a_file_made_without_incremental_vacuum() {
    let dir = tempfile::tempdir().unwrap();
    let url = databases::sqlite_url(dir.path(), "store");
    let file = dir.path().join("store.db");
    // A file made the way older wrangle made them: no auto_vacuum.
    let mut conn = sqlx::SqliteConnection::connect(&format!("{url}?mode=rwc"))
        .await
        .unwrap();
    sqlx::raw_sql("CREATE TABLE made_before (x INTEGER)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    const AUTO_VACUUM: &str = "SELECT auto_vacuum FROM pragma_auto_vacuum()";
    assert_eq!(databases::count(&url, AUTO_VACUUM).await, 0);

    let mut config = on(&url, 1);
    let keep_all = config.store.as_mut().unwrap();
    keep_all.retention = None;
    keep_all.retention_max_tasks = None;
    keep_all.retention_max_bytes = None;
    let first = started(config).await;
    let big = "x".repeat(8 * 1024);
    let mut handles = Vec::new();
    for n in 0..300 {
        let spec = TaskSpec::new("echo", &json!({"n": n, "big": big})).unwrap();
        handles.push(first.submit_async(spec).await.unwrap());
    }
    for h in &handles {
        h.wait(WAIT).await.unwrap();
    }
    first.stop(true).await.unwrap();
    assert_eq!(
        databases::count(&url, AUTO_VACUUM).await,
        2,
        "the file was switched to incremental vacuum at open"
    );
    let store = Store::open(StoreConfig::new(&url)).await.unwrap();
    let before = store.database_bytes().await.unwrap();
    store.close().await;
    let file_before = std::fs::metadata(&file).unwrap().len();
    assert!(before > 4 << 20, "{before} bytes");

    let mut config = on(&url, 1);
    config.store.as_mut().unwrap().retention_max_tasks = Some(10);
    let second = started(config).await;
    let store = second.store().unwrap().clone();
    eventually("the space of pruned tasks to be given back", WAIT, || {
        let store = store.clone();
        async move {
            store.database_bytes().await.unwrap() < before / 4 && store.stats().pruned >= 290
        }
    })
    .await;
    eventually("the disk to be measured", WAIT, || async {
        store.stats().disk_free_bytes.is_some()
    })
    .await;
    second.stop(true).await.unwrap();
    store.close().await;
    // The log's pages reach the file at a checkpoint (at the latest when the last
    // connection closes).
    databases::execute(&url, "PRAGMA wal_checkpoint(TRUNCATE)").await;
    let file_after = std::fs::metadata(&file).unwrap().len();
    assert!(
        file_after < file_before / 4,
        "the file shrank: {file_before} -> {file_after} bytes"
    );
}

/// Overwrites a stored task's options with text that is not JSON.
async fn corrupt_options(url: &str, id: TaskId) {
    let sql = "UPDATE tasks SET options = 'not json {' WHERE id = $1";
    let uuid: uuid::Uuid = id.to_string().parse().unwrap();
    let changed = if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(sql)
            .bind(uuid)
            .execute(&mut c)
            .await
            .unwrap()
            .rows_affected()
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(sql)
            .bind(uuid)
            .execute(&mut c)
            .await
            .unwrap()
            .rows_affected()
    };
    assert_eq!(changed, 1);
}

async fn retention_prunes_old_finished_tasks_only(url: String) {
    let mut config = on(&url, 1);
    config.store.as_mut().unwrap().retention = Some(Duration::from_millis(1));
    let c = started(config).await;
    let done = c
        .submit_async(TaskSpec::new("echo", &json!(1)).unwrap())
        .await
        .unwrap();
    let dead = c
        .submit_async(TaskSpec::new("fail", &json!({"mode": "permanent"})).unwrap())
        .await
        .unwrap();
    let waiting = c
        .submit_async(
            TaskSpec::new("echo", &json!(2))
                .unwrap()
                .delay(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    done.wait(WAIT).await.unwrap();
    dead.wait(WAIT).await.unwrap();
    let store = c.store().unwrap().clone();
    // The pruned counter is raised once the prune's transaction has committed: wait for
    // both.
    eventually("the finished task to be pruned", WAIT, || async {
        store.get_task(done.id).await.unwrap().is_none()
            && store
                .writer_stats()
                .pruned
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 1
    })
    .await;
    assert_eq!(
        store.get_task(dead.id).await.unwrap().map(|t| t.status),
        Some(TaskStatus::Failed),
        "dead letters are kept until re-queued"
    );
    assert_eq!(
        store.get_task(waiting.id).await.unwrap().map(|t| t.status),
        Some(TaskStatus::Pending)
    );
    c.stop(false).await.unwrap();
}

async fn buffered_submits_are_stored_with_the_next_group(url: String) {
    let mut config = on(&url, 1);
    config.store.as_mut().unwrap().durability = wrangle::Durability::Buffered;
    let first = started(config.clone()).await;
    let specs = (0..100)
        .map(|n| {
            TaskSpec::new("echo", &json!(n))
                .unwrap()
                .delay(Duration::from_secs(3600))
        })
        .collect();
    let ids = first.submit_batch(specs).await.unwrap();
    first.queue().flush().await.unwrap();
    let counts = first.store().unwrap().task_counts().await.unwrap();
    assert_eq!(counts.get(&TaskStatus::Pending), Some(&100), "{counts:?}");
    first.stop(false).await.unwrap();

    let second = started(config).await;
    assert_eq!(second.queue().stats().await.unwrap().recovered, 100);
    for id in ids {
        assert_eq!(
            second.get_task(id).await.unwrap().status,
            TaskStatus::Pending
        );
    }
    second.stop(false).await.unwrap();
}

async fn a_second_coordinator_on_the_same_database_is_refused(url: String) {
    let first = started(on(&url, 1)).await;
    let err = Coordinator::start(on(&url, 1), handlers())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("in use by another wrangle coordinator"),
        "{err}"
    );
    // The first one is unharmed, and once it stops the database is free.
    let h = first
        .submit_async(TaskSpec::new("echo", &json!("still here")).unwrap())
        .await
        .unwrap();
    h.wait(WAIT).await.unwrap();
    first.stop(true).await.unwrap();
    let second = started(on(&url, 1)).await;
    assert_eq!(
        second.get_task(h.id).await.unwrap().status,
        TaskStatus::Completed
    );
    second.stop(true).await.unwrap();
}

async fn each_start_claims_a_higher_epoch(url: String) {
    let reader = Store::open(StoreConfig::new(&url)).await.unwrap();
    assert_eq!(reader.epoch(), 0, "a new database has no claim yet");
    reader.close().await;
    let first = started(on(&url, 1)).await;
    let one = first.store().unwrap().epoch();
    assert_eq!(one, 1);
    first.stop(true).await.unwrap();
    // Opening without claiming (a report, a migration) reads the epoch and leaves it.
    let reader = Store::open(StoreConfig::new(&url)).await.unwrap();
    assert_eq!(reader.epoch(), one);
    reader.close().await;
    let second = started(on(&url, 1)).await;
    let two = second.store().unwrap().epoch();
    assert!(two > one, "epoch {two} after {one}");
    // A coordinator refused the claim does not move the epoch.
    let refused = Coordinator::start(on(&url, 1), handlers()).await;
    assert!(refused.is_err());
    second.stop(true).await.unwrap();
    let third = started(on(&url, 1)).await;
    assert_eq!(third.store().unwrap().epoch(), two + 1);
    third.stop(true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_store_counts_epochs_from_one() {
    let c = started(on("sqlite::memory:", 1)).await;
    assert_eq!(c.store().unwrap().epoch(), 1);
    c.stop(true).await.unwrap();
}

async fn migrations_run_once(url: String) {
    let first = wrangle::migrate(&url).await.unwrap();
    assert_eq!(first.applied, vec![1, 2, 3, 4, 5, 6, 7]);
    let again = wrangle::migrate(&url).await.unwrap();
    assert!(again.applied.is_empty());
    assert_eq!(again.version, first.version);
}

#[tokio::test]
async fn an_unreachable_database_is_named_without_its_password() {
    let mut config = StoreConfig::new("postgres://wrangle:s3cret@127.0.0.1:1/tasks");
    config.connect_timeout = Duration::from_secs(2);
    let err = Store::open(config).await.unwrap_err().to_string();
    assert!(
        err.contains("postgres://wrangle:***@127.0.0.1:1/tasks"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");

    let err = Store::open(StoreConfig::new("mysql://localhost/x"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("expected sqlite://PATH or postgres://"),
        "{err}"
    );

    let err = Coordinator::start(on("sqlite:///no/such/dir/w.db", 1), handlers())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("sqlite:///no/such/dir/w.db"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_that_disappears_refuses_submits_and_never_claims_them() {
    let Some(url) = databases::fresh_postgres("disappears").await else {
        return;
    };
    let c = started(on(&url, 1)).await;
    let before = c
        .submit_async(TaskSpec::new("echo", &json!("kept")).unwrap())
        .await
        .unwrap();
    before.wait(WAIT).await.unwrap();

    databases::drop_postgres(&url).await;
    let mut refused = 0;
    for n in 0..20 {
        match c
            .submit_async(TaskSpec::new("echo", &json!(n)).unwrap())
            .await
        {
            Err(Error::Queue(QueueError::NotStored { reason })) => {
                assert!(!reason.is_empty());
                refused += 1;
            }
            Ok(h) => panic!("task {} reported accepted with its database gone", h.id),
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!(refused, 20);
    let stats = c.store().unwrap().writer_stats();
    assert!(!stats.healthy.load(std::sync::atomic::Ordering::Relaxed));
    assert!(stats.failures.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    // What was accepted before stays readable in memory, and a stop does not hang.
    assert_eq!(
        c.get_task(before.id).await.unwrap().status,
        TaskStatus::Completed
    );
    tokio::time::timeout(Duration::from_secs(30), c.stop(true))
        .await
        .expect("stop returns with the database gone")
        .unwrap();
}

/// Attempt rows whose task is not stored.
const ORPHAN_ATTEMPTS: &str =
    "SELECT COUNT(*) FROM attempts WHERE task_id NOT IN (SELECT id FROM tasks)";

async fn a_key_another_task_stored_first_does_not_leave_a_task_unstored(url: String) {
    let mut config = on(&url, 1);
    config.store.as_mut().unwrap().durability = wrangle::Durability::Buffered;
    // Finished tasks leave memory at once (with their idempotency keys).
    config.queue.max_finished_tasks = 1;
    let c = started(config).await;
    let store = c.store().unwrap().clone();
    let warm = c
        .submit_async(TaskSpec::new("echo", &json!("warm")).unwrap())
        .await
        .unwrap();
    warm.wait(WAIT).await.unwrap();

    // The database takes no new task for a while: the first task with the key runs and
    // leaves memory before its row is stored.
    databases::stop_task_inserts(&url).await;
    let keyed = || {
        TaskSpec::new("echo", &json!("once"))
            .unwrap()
            .idempotency_key("pay-7")
    };
    let first = c.submit_async(keyed()).await.unwrap();
    first.wait(WAIT).await.unwrap();
    let other = c
        .submit_async(TaskSpec::new("echo", &json!("other")).unwrap())
        .await
        .unwrap();
    other.wait(WAIT).await.unwrap();
    // Neither memory nor the store knows the key now, so a second task is made for it.
    let second = c.submit_async(keyed()).await.unwrap();
    assert!(!second.existing);
    second.wait(WAIT).await.unwrap();
    databases::allow_task_inserts(&url).await;
    c.queue().flush().await.unwrap();

    // The store holds the key for the first task; the second cannot be stored under it.
    let stored = store.get_task(first.id).await.unwrap().map(|t| t.status);
    assert_eq!(stored, Some(TaskStatus::Completed));
    // Whatever the queue still shows as a task, after a flush, is in the store.
    let in_store = store.get_task(second.id).await.unwrap().is_some();
    let in_queue = c.get_task(second.id).await.is_ok();
    assert_eq!(
        in_queue, in_store,
        "the queue shows the second task: {in_queue}; the store has it: {in_store}"
    );
    // The key answers with the task the store holds for it.
    let again = c.submit_async(keyed()).await.unwrap();
    assert!(again.existing);
    assert_eq!(again.id, first.id);
    assert_eq!(databases::count(&url, ORPHAN_ATTEMPTS).await, 0);
    c.stop(false).await.unwrap();
}

async fn a_refused_task_leaves_no_attempt_rows(url: String) {
    let runs = common::Runs::default();
    let handlers = handlers();
    handlers.register("counted", common::counted_sleep(runs.clone()));
    let c = Coordinator::start(on(&url, 1), handlers).await.unwrap();
    let warm = c
        .submit_async(TaskSpec::new("echo", &json!("warm")).unwrap())
        .await
        .unwrap();
    warm.wait(WAIT).await.unwrap();

    databases::stop_task_inserts(&url).await;
    // The idle worker takes the task at once; then its commit fails, so the submit is
    // refused and the task taken back from the worker.
    let refused = c
        .submit_async(TaskSpec::new("counted", &json!({"ms": 60_000})).unwrap())
        .await;
    assert!(
        matches!(refused, Err(Error::Queue(QueueError::NotStored { .. }))),
        "{refused:?}"
    );
    eventually("the refused task to have started", WAIT, || async {
        runs.all().len() == 1
    })
    .await;
    eventually("the refused task to be taken back", WAIT, || async {
        c.queue().stats().await.unwrap().running == 0
    })
    .await;
    databases::allow_task_inserts(&url).await;
    c.queue().flush().await.unwrap();
    assert_eq!(
        databases::count(&url, ORPHAN_ATTEMPTS).await,
        0,
        "an attempt was stored for a task that never was"
    );
    c.stop(false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_key_taken_while_its_commit_waits_answers_with_the_stored_task() {
    let Some(url) = databases::fresh_postgres("key_taken").await else {
        return;
    };
    let mut config = on(&url, 1);
    config.queue.max_finished_tasks = 1;
    let c = started(config).await;
    let warm = c
        .submit_async(TaskSpec::new("echo", &json!("warm")).unwrap())
        .await
        .unwrap();
    warm.wait(WAIT).await.unwrap();

    // Reads go on, but every write to `tasks` waits until this transaction ends.
    let mut lock = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE tasks IN SHARE MODE")
        .execute(&mut lock)
        .await
        .unwrap();
    let keyed = || {
        TaskSpec::new("echo", &json!("once"))
            .unwrap()
            .idempotency_key("pay-8")
    };
    let completed = |n: u64| {
        let c = c.clone();
        async move { c.queue().stats().await.unwrap().completed >= n }
    };
    let submit = |spec: TaskSpec| {
        let q = c.queue().clone();
        tokio::spawn(async move { q.submit(spec).await })
    };
    // The first task with the key runs (its commit waits), then leaves memory.
    let first = submit(keyed());
    eventually("the first keyed task to finish", WAIT, || completed(2)).await;
    let other = submit(TaskSpec::new("echo", &json!("other")).unwrap());
    eventually("another task to finish", WAIT, || completed(3)).await;
    let second = submit(keyed());
    eventually("the second keyed task to finish", WAIT, || completed(4)).await;
    sqlx::raw_sql("COMMIT").execute(&mut lock).await.unwrap();

    let first = first.await.unwrap().unwrap();
    assert!(!first.existing);
    other.await.unwrap().unwrap();
    let second = second.await.unwrap().unwrap();
    assert_eq!(
        (second.id, second.existing),
        (first.id, true),
        "a submit answered as committed names the task stored for its key"
    );
    let store = c.store().unwrap();
    assert!(store.get_task(second.id).await.unwrap().is_some());
    c.stop(false).await.unwrap();
    databases::drop_postgres(&url).await;
}

/// Failover's refusal reaches callers typed: once another coordinator's epoch holds the
/// lease, a submit is refused before the database (`QueueError::NotLeader`; over HTTP 503
/// `not_leader` with `Retry-After`), and nothing of it is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_coordinator_refuses_submits_as_not_the_leader() {
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let Some(url) = databases::fresh_postgres("deposed_submit").await else {
        return;
    };
    let c = started(on(&url, 1)).await;
    c.submit("echo", &json!({"n": 1})).await.unwrap();

    // Another coordinator takes the lease: its epoch is newer.
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("UPDATE coordinator_leader SET epoch = epoch + 1, holder = 'thief'")
        .execute(&mut db)
        .await
        .unwrap();

    let refused = c.submit("echo", &json!({"n": 2})).await.unwrap_err();
    assert!(
        matches!(refused, Error::Queue(QueueError::NotLeader { .. })),
        "{refused:?}"
    );
    let app = wrangle::api::router(c.clone(), wrangle::api::ApiConfig::default());
    let request = axum::http::Request::post("/tasks")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"task_type": "echo", "payload": 3}"#))
        .unwrap();
    let answer = app.oneshot(request).await.unwrap();
    assert_eq!(answer.status(), 503);
    assert_eq!(answer.headers()["retry-after"], "1");
    let body: serde_json::Value =
        serde_json::from_slice(&answer.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"]["code"], "not_leader", "{body}");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(stored, 1, "only the task submitted while it led");
    db.close().await.unwrap();
    let _ = c.stop(false).await;
    databases::drop_postgres(&url).await;
}
