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

/// The stores for these tests: an SQLite file in `dir`, and a fresh database on the
/// PostgreSQL server of `DATABASE_URL` when one is named (`.ci/run` starts one).
async fn urls(dir: &std::path::Path) -> Vec<String> {
    use sqlx::Connection;
    let mut urls = vec![format!("sqlite://{}", dir.join("db.db").display())];
    if let Some(server) = std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres"))
    {
        let name = format!("wrangle_db_unit_{}", std::process::id());
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
        if let Some((server, name)) = url
            .starts_with("postgres")
            .then(|| url.rsplit_once('/'))
            .flatten()
        {
            use sqlx::Connection;
            let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
                .await
                .unwrap();
            sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
                .execute(&mut admin)
                .await
                .unwrap();
        }
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
