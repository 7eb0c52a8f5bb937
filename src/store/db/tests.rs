//! Batch shapes, URL redaction, and a batch written twice, on both backends.

use super::*;
use crate::store::pending::Batch;
use crate::store::rows::{NewTask, TaskState};
use crate::task::TaskId;

#[test]
fn chunks_cover_everything_in_few_shapes() {
    for n in [0, 1, 3, 150, 256, 1000, 10_001] {
        let items: Vec<usize> = (0..n).collect();
        let parts: Vec<&[usize]> = chunks(&items).collect();
        assert_eq!(parts.concat(), items);
        assert!(parts.iter().all(|p| CHUNK_SIZES.contains(&p.len())));
        assert!(parts.windows(2).all(|w| w[0].len() >= w[1].len()));
    }
}

/// The stores for a test: an SQLite file in `dir`, and a fresh database on the
/// PostgreSQL server of `DATABASE_URL` when one is named (`.ci/run` starts one).
async fn urls(dir: &std::path::Path) -> Vec<String> {
    use sqlx::Connection;
    let mut urls = vec![format!("sqlite://{}", dir.join("db.db").display())];
    if let Some(server) = std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres"))
    {
        // One database per call: the tests of this file run at once in one process.
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("wrangle_db_unit_{}_{n}", std::process::id());
        let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
        for sql in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            sqlx::query(&sql).execute(&mut admin).await.unwrap();
        }
        let (base, _) = server.rsplit_once('/').unwrap();
        urls.push(format!("{base}/{name}"));
    }
    urls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_written_again_keeps_its_latest_state() {
    use crate::task::{Payload, TaskOptions, TaskStatus};
    let dir = tempfile::tempdir().unwrap();
    for url in urls(dir.path()).await {
        let db = Db::connect(&StoreConfig::new(&url)).await.unwrap();
        super::super::migrate::run(&db).await.unwrap();
        let id = TaskId::new();
        let new = NewTask::new(
            id,
            "t".into(),
            Payload::from_json_bytes(&b"1"[..]).unwrap(),
            &TaskOptions::default(),
            std::time::SystemTime::now(),
        );
        let state = |status, result: Option<&'static [u8]>| TaskState {
            id,
            status,
            retries_used: 0,
            lease_losses: 0,
            ready_at_ms: None,
            finished_at_ms: result.map(|_| 7),
            result: result.map(|r| Payload::from_json_bytes(r).unwrap()),
            error: None,
            dead_seq: None,
        };
        // The first commit landed though it was reported failed; the retry carries the
        // task again, finished meanwhile.
        let first = Batch {
            inserts: vec![(new.clone(), state(TaskStatus::Queued, None))],
            ..Batch::default()
        };
        db.write(&first).await.unwrap();
        let retry = Batch {
            inserts: vec![(new, state(TaskStatus::Completed, Some(b"2")))],
            ..Batch::default()
        };
        db.write(&retry).await.unwrap();
        let row = db.get(id).await.unwrap().unwrap();
        assert_eq!(row.status, "completed", "{url}");
        assert_eq!(row.result.as_deref(), Some(&b"2"[..]), "{url}");
        assert_eq!(row.finished_at_ms, Some(7), "{url}");
        db.close().await;
        drop_database(&url).await;
    }
}

#[test]
fn passwords_are_hidden() {
    assert_eq!(
        redact("postgres://u:secret@h:5432/db"),
        "postgres://u:***@h:5432/db"
    );
    assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    assert_eq!(redact("sqlite://a@b.db"), "sqlite://a@b.db");
}

/// Drops the PostgreSQL database a test made with [`urls`] (nothing for SQLite).
async fn drop_database(url: &str) {
    use sqlx::Connection;
    let Some((server, name)) = url
        .starts_with("postgres")
        .then(|| url.rsplit_once('/'))
        .flatten()
    else {
        return;
    };
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
        .await
        .unwrap();
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
}

/// Batches of 10,000 inserts, then 10,000 state changes with 10,000 new attempts, then
/// 10,000 more with those attempts finished: more rows than one statement carries on either
/// backend, and every row read back exactly as written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_of_many_statements_keep_every_row_in_its_place() {
    use crate::store::rows::AttemptRow;
    use crate::task::{Payload, TaskOptions, TaskStatus};
    const N: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    for url in urls(dir.path()).await {
        let db = Db::connect(&StoreConfig::new(&url)).await.unwrap();
        super::super::migrate::run(&db).await.unwrap();
        let ids: Vec<TaskId> = (0..N).map(|_| TaskId::new()).collect();
        let i64_of = |i: usize| i as i64;
        let state = |i: usize, status, finished: bool| TaskState {
            id: ids[i],
            status,
            retries_used: i64_of(i % 7),
            lease_losses: i64_of(i % 5),
            ready_at_ms: i.is_multiple_of(2).then(|| i64_of(1_000 + i)),
            finished_at_ms: finished.then(|| i64_of(2_000 + i)),
            result: finished.then(|| Payload::from_json_bytes(format!("[{i}]")).unwrap()),
            error: i.is_multiple_of(3).then(|| format!("error {i}")),
            dead_seq: None,
        };
        let attempt = |i: usize, finished: bool| AttemptRow {
            task_id: ids[i],
            number: 1,
            worker: format!("worker-{}", i % 11).into(),
            node: format!("node-{}", i % 13).into(),
            started_at_ms: i64_of(3_000 + i),
            finished_at_ms: finished.then(|| i64_of(4_000 + i)),
            outcome: finished.then(|| format!("outcome {i}")),
            error: None,
        };
        let inserts = (0..N)
            .map(|i| {
                let options = TaskOptions {
                    idempotency_key: Some(format!("key-{i}")),
                    ..TaskOptions::default()
                };
                let mut new = NewTask::new(
                    ids[i],
                    format!("type-{}", i % 17).into(),
                    Payload::from_json_bytes(format!("{{\"i\":{i}}}")).unwrap(),
                    &options,
                    std::time::SystemTime::now(),
                );
                new.priority = i64_of(i % 21);
                new.created_at_ms = i64_of(i);
                (new, state(i, TaskStatus::Queued, false))
            })
            .collect();
        let taken = db
            .write(&Batch {
                inserts,
                ..Batch::default()
            })
            .await
            .unwrap();
        assert!(taken.is_empty(), "{url}");
        for finished in [false, true] {
            let status = if finished {
                TaskStatus::Completed
            } else {
                TaskStatus::Running
            };
            let batch = Batch {
                updates: (0..N).map(|i| state(i, status, finished)).collect(),
                attempts: (0..N).map(|i| attempt(i, finished)).collect(),
                ..Batch::default()
            };
            db.write(&batch).await.unwrap();
            for (i, id) in ids.iter().enumerate() {
                let row = db.get(*id).await.unwrap().unwrap();
                let want = state(i, status, finished);
                assert_eq!(row.task_type, format!("type-{}", i % 17), "{url}");
                assert_eq!(row.payload, format!("{{\"i\":{i}}}").into_bytes(), "{url}");
                assert_eq!(row.created_at_ms, i64_of(i), "{url}");
                assert_eq!(row.status, status.as_str(), "task {i} on {url}");
                assert_eq!(row.retries_used, want.retries_used, "{url}");
                assert_eq!(row.lease_losses, want.lease_losses, "{url}");
                assert_eq!(row.ready_at_ms, want.ready_at_ms, "{url}");
                assert_eq!(row.finished_at_ms, want.finished_at_ms, "{url}");
                let result = want.result.as_ref().map(|r| r.as_bytes().to_vec());
                assert_eq!(row.result, result, "{url}");
                assert_eq!(row.error, want.error, "{url}");
                assert_eq!(row.dead_seq, None, "{url}");
                let a = attempt(i, finished);
                assert_eq!(row.attempts.len(), 1, "task {i} on {url}");
                let got = &row.attempts[0];
                assert_eq!(got.task_id, *id, "{url}");
                assert_eq!(&*got.worker, &*a.worker, "{url}");
                assert_eq!(&*got.node, &*a.node, "{url}");
                assert_eq!(got.started_at_ms, a.started_at_ms, "{url}");
                assert_eq!(got.finished_at_ms, a.finished_at_ms, "{url}");
                assert_eq!(got.outcome, a.outcome, "{url}");
            }
        }
        let keys: Vec<String> = (0..N).map(|i| format!("key-{i}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let holders = db.find_keys(&keys).await.unwrap();
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(holders.get(*key), Some(&ids[i]), "{url}");
        }
        db.close().await;
        drop_database(&url).await;
    }
}

/// A run's input is written by its first row only: later rows update the run in place
/// without it (a map's list is not written again each round), rounds merged while the
/// first had not landed keep it, and the stored input is the first row's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_input_is_written_once_and_kept() {
    use crate::store::{WorkflowBatch, WorkflowRunRow};
    let input = format!("{{\"items\":[{}]}}", vec!["1"; 10_000].join(","));
    let row = |status: &str, input: Option<String>, steps_done| WorkflowRunRow {
        id: uuid::Uuid::from_u128(7),
        workflow: "w".into(),
        version: "v1".into(),
        status: status.into(),
        input,
        generation: 0,
        error: None,
        state: None,
        steps_done,
        created_at_ms: 1,
        updated_at_ms: 1 + steps_done,
        finished_at_ms: None,
    };
    // Two rounds merged before a commit: the first's input stays.
    let mut merged = WorkflowBatch {
        runs: vec![row("running", Some(input.clone()), 0)],
        events: Vec::new(),
    };
    merged.merge(WorkflowBatch {
        runs: vec![row("running", None, 1)],
        events: Vec::new(),
    });
    assert_eq!(merged.runs.len(), 1);
    assert_eq!(merged.runs[0].input.as_deref(), Some(input.as_str()));
    assert_eq!(merged.runs[0].steps_done, 1);
    let dir = tempfile::tempdir().unwrap();
    for url in urls(dir.path()).await {
        let db = Db::connect(&StoreConfig::new(&url)).await.unwrap();
        super::super::migrate::run(&db).await.unwrap();
        for runs in [merged.runs.clone(), vec![row("running", None, 2)]] {
            let batch = Batch {
                workflows: WorkflowBatch {
                    runs,
                    events: Vec::new(),
                },
                ..Batch::default()
            };
            db.write(&batch).await.unwrap();
        }
        let stored = db.workflow_run(uuid::Uuid::from_u128(7)).await.unwrap();
        let stored = stored.expect("the run is stored");
        assert_eq!(stored.input.as_deref(), Some(input.as_str()), "{url}");
        assert_eq!(stored.steps_done, 2, "{url}");
        db.close().await;
        drop_database(&url).await;
    }
}

/// New tasks whose idempotency key another task holds (stored before, or older in the same
/// batch) are left out and reported with their key's holder; a retried insert of the holder
/// itself is not; attempts of tasks left out are not stored; registry rows and heartbeats
/// in the same batch land. Once as one script and once statement by statement (a batch
/// past the script's size), on both backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_held_by_other_tasks_are_reported_in_small_and_large_batches() {
    use crate::store::rows::{AttemptRow, NodeRow, WorkerRow};
    use crate::task::{Payload, TaskOptions, TaskStatus};
    let dir = tempfile::tempdir().unwrap();
    for url in urls(dir.path()).await {
        let db = Db::connect(&StoreConfig::new(&url)).await.unwrap();
        super::super::migrate::run(&db).await.unwrap();
        for padding in [0, 300] {
            let task = |id: TaskId, key: Option<String>, status| {
                let options = TaskOptions {
                    idempotency_key: key,
                    ..TaskOptions::default()
                };
                let new = NewTask::new(
                    id,
                    "t".into(),
                    Payload::from_json_bytes(&b"1"[..]).unwrap(),
                    &options,
                    std::time::SystemTime::now(),
                );
                let state = TaskState {
                    id,
                    status,
                    retries_used: 0,
                    lease_losses: 0,
                    ready_at_ms: None,
                    finished_at_ms: None,
                    result: None,
                    error: None,
                    dead_seq: None,
                };
                (new, state)
            };
            let key = |k: &str| Some(format!("{padding}-{k}"));
            let attempt = |id: TaskId| AttemptRow {
                task_id: id,
                number: 1,
                worker: "w".into(),
                node: "n".into(),
                started_at_ms: 5,
                finished_at_ms: None,
                outcome: None,
                error: None,
            };
            let holder = TaskId::new();
            let first = Batch {
                inserts: vec![task(holder, key("one"), TaskStatus::Queued)],
                ..Batch::default()
            };
            assert!(db.write(&first).await.unwrap().is_empty(), "{url}");

            // Made in this order, so sorted by id: the batch's order.
            let [late, keeps, loses, plain] = [(); 4].map(|()| TaskId::new());
            let mut inserts = vec![
                // The holder again (a retried commit that had landed), finished since.
                task(holder, key("one"), TaskStatus::Completed),
                task(late, key("one"), TaskStatus::Queued),
                task(keeps, key("two"), TaskStatus::Queued),
                task(loses, key("two"), TaskStatus::Queued),
                task(plain, None, TaskStatus::Queued),
            ];
            inserts.extend((0..padding).map(|_| task(TaskId::new(), None, TaskStatus::Queued)));
            let worker = format!("worker-{padding}");
            let node = format!("node-{padding}");
            let batch = Batch {
                inserts,
                attempts: vec![attempt(late), attempt(keeps), attempt(loses)],
                workers: vec![WorkerRow {
                    id: worker.as_str().into(),
                    node: node.as_str().into(),
                    labels: "[]".into(),
                    task_types: "[\"t\"]".into(),
                    status: "active",
                    at_ms: 7,
                }],
                nodes: vec![NodeRow {
                    id: node.as_str().into(),
                    address: Some("127.0.0.1:1".into()),
                    labels: "[]".into(),
                    status: "deregistered",
                    at_ms: 7,
                }],
                heartbeats: vec![(vec![worker.as_str().into()], 9)],
                ..Batch::default()
            };
            let mut taken = db.write(&batch).await.unwrap();
            taken.sort_by_key(|t| t.task);
            let want = [
                KeyTaken { task: late, holder },
                KeyTaken {
                    task: loses,
                    holder: keeps,
                },
            ];
            assert_eq!(taken, want, "padding {padding} on {url}");
            for left_out in [late, loses] {
                assert!(db.get(left_out).await.unwrap().is_none(), "{url}");
            }
            let kept = db.get(keeps).await.unwrap().unwrap();
            assert_eq!(kept.attempts.len(), 1, "{url}");
            let again = db.get(holder).await.unwrap().unwrap();
            assert_eq!(again.status, "completed", "{url}");
            assert!(db.get(plain).await.unwrap().is_some(), "{url}");
            let workers = db.registry_rows(false).await.unwrap();
            assert!(workers.contains(&(worker, "active".into())), "{url}");
            let nodes = db.registry_rows(true).await.unwrap();
            assert!(nodes.contains(&(node, "deregistered".into())), "{url}");
        }
        db.close().await;
        drop_database(&url).await;
    }
}
