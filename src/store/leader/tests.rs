//! The leader lease and fencing on a real PostgreSQL server: a fresh database per test on
//! the server named by `DATABASE_URL` (`.ci/run` starts one). Without one the tests do not
//! run, and under `CI=true` that is a failure.
//!
//! Leases here last 300 ms: waiting past a lapse is the behaviour under test, and each wait
//! polls for the outcome rather than sleeping a fixed time.

use std::time::{Duration, Instant};

use sqlx::{Connection, PgPool};

use super::*;
use crate::store::db::Db;
use crate::store::StoreConfig;

const SHORT: Duration = Duration::from_millis(300);
const LONG: Duration = Duration::from_secs(30);
const PATIENCE: Duration = Duration::from_secs(10);

/// A fresh, migrated database; its URL, or `None` (a note) with no server named.
async fn fresh(test: &str) -> Option<String> {
    let server = match std::env::var("DATABASE_URL") {
        Ok(url) if url.starts_with("postgres") => url,
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!(
                "CI=true but DATABASE_URL names no PostgreSQL server: the leader tests cannot run"
            )
        }
        _ => {
            eprintln!("DATABASE_URL is not a postgres:// URL: leader test {test} not run");
            return None;
        }
    };
    let name = format!("wrangle_leader_{test}_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::query(&sql).execute(&mut admin).await.unwrap();
    }
    admin.close().await.unwrap();
    let (base, _) = server.split('?').next().unwrap().rsplit_once('/').unwrap();
    let url = format!("{base}/{name}");
    let db = Db::connect(&StoreConfig::new(&url)).await.unwrap();
    crate::store::migrate::run(&db).await.unwrap();
    Some(url)
}

/// One coordinator's pool on the database at `url`.
async fn pool(url: &str) -> PgPool {
    match Db::connect(&StoreConfig::new(url)).await.unwrap() {
        Db::Postgres(pool, _) => pool,
        Db::Sqlite(..) => unreachable!("a postgres url"),
    }
}

/// Drops the database at `url`, cutting off its connections.
async fn drop_database(url: &str) {
    let server = std::env::var("DATABASE_URL").unwrap();
    let name = url.rsplit('/').next().unwrap();
    let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
}

async fn stored_epoch(pool: &PgPool) -> u64 {
    let epoch: i64 = sqlx::query_scalar("SELECT epoch FROM coordinator_epoch WHERE id = 1")
        .fetch_one(pool)
        .await
        .unwrap();
    epoch as u64
}

/// `holder` tries for the lease until it gets it (after the current one lapses).
async fn take_when_lapsed(pool: &PgPool, holder: &str) -> Leadership {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(taken) = try_acquire(pool, holder, None, SHORT).await.unwrap() {
            return taken;
        }
        assert!(Instant::now() < deadline, "{holder} never took the lease");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A row of `scaling_events` (any table a coordinator writes), inside `conn`'s transaction.
async fn write_event(conn: &mut PgConnection, group: &str) {
    sqlx::query(
        "INSERT INTO scaling_events (at_ms, group_name, action, reason, waiting, nodes, \
         in_flight) VALUES (0, $1, 'launch', 'test', 0, 0, 0)",
    )
    .bind(group)
    .execute(conn)
    .await
    .unwrap();
}

async fn events(pool: &PgPool, group: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM scaling_events WHERE group_name = $1")
        .bind(group)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_holders_exactly_one_wins() {
    let Some(url) = fresh("race").await else {
        return;
    };
    let (a, b) = (pool(&url).await, pool(&url).await);
    let before = stored_epoch(&a).await;
    let tries = (0..8).map(|i| {
        let pool = if i % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move { try_acquire(&pool, &format!("c{i}"), None, LONG).await })
    });
    let mut winners = Vec::new();
    for t in tries {
        if let Some(won) = t.await.unwrap().unwrap() {
            winners.push(won);
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let won = &winners[0];
    assert_eq!(won.epoch, before + 1);
    assert_eq!(stored_epoch(&a).await, won.epoch);
    let now = current(&b).await.unwrap();
    assert_eq!(now.holder.as_deref(), Some(won.holder.as_str()));
    assert_eq!(now.epoch, won.epoch);
    assert!(now.expires_in > Duration::from_secs(20), "{now:?}");
    drop_database(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_keep_the_lease_past_its_length() {
    let Some(url) = fresh("renew").await else {
        return;
    };
    let (a, b) = (pool(&url).await, pool(&url).await);
    let leader = try_acquire(&a, "a", None, SHORT).await.unwrap().unwrap();
    let started = Instant::now();
    // Renewed every 100 ms for three lease lengths: the standby never gets in.
    while started.elapsed() < 3 * SHORT {
        assert!(renew(&a, &leader, SHORT).await.unwrap());
        assert_eq!(try_acquire(&b, "b", None, SHORT).await.unwrap(), None);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let now = current(&b).await.unwrap();
    assert_eq!(
        (now.holder.as_deref(), now.epoch),
        (Some("a"), leader.epoch)
    );
    assert!(now.expires_in > Duration::ZERO);
    drop_database(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_lease_goes_to_the_standby_with_the_next_epoch() {
    let Some(url) = fresh("lapse").await else {
        return;
    };
    let (a, b) = (pool(&url).await, pool(&url).await);
    let old = try_acquire(&a, "a", None, SHORT).await.unwrap().unwrap();
    assert_eq!(try_acquire(&b, "b", None, SHORT).await.unwrap(), None);
    // `a` stops renewing (frozen); `b` takes over once the lease lapses.
    let new = take_when_lapsed(&b, "b").await;
    assert_eq!(new.epoch, old.epoch + 1);
    assert_eq!(stored_epoch(&a).await, new.epoch);
    // The old leader wakes up: it can neither renew nor free the new leader's lease.
    assert!(!renew(&a, &old, SHORT).await.unwrap());
    assert!(!release(&a, &old).await.unwrap());
    let now = current(&a).await.unwrap();
    assert_eq!((now.holder.as_deref(), now.epoch), (Some("b"), new.epoch));
    // A clean release hands the lease over at once, with the next epoch again.
    assert!(release(&b, &new).await.unwrap());
    let now = current(&a).await.unwrap();
    assert_eq!((now.holder, now.expires_in), (None, Duration::ZERO));
    let next = try_acquire(&a, "a", None, SHORT).await.unwrap().unwrap();
    assert_eq!(next.epoch, new.epoch + 1);
    drop_database(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_write_does_not_commit() {
    let Some(url) = fresh("fence").await else {
        return;
    };
    let (a, b) = (pool(&url).await, pool(&url).await);
    let old = try_acquire(&a, "a", None, SHORT).await.unwrap().unwrap();
    let new = take_when_lapsed(&b, "b").await;

    // The old leader's transaction: a write, then the fence, which refuses.
    let mut tx = a.begin().await.unwrap();
    write_event(&mut tx, "old").await;
    let refused = fence(&mut tx, old.epoch).await.unwrap_err();
    assert_eq!(
        refused,
        StoreError::Fenced {
            epoch: old.epoch,
            current: new.epoch
        }
    );
    assert!(refused
        .to_string()
        .starts_with("fenced: a newer coordinator leader"));
    drop(tx);
    assert_eq!(events(&b, "old").await, 0);

    // The new leader's transaction passes the same fence and commits.
    let mut tx = b.begin().await.unwrap();
    fence(&mut tx, new.epoch).await.unwrap();
    write_event(&mut tx, "new").await;
    tx.commit().await.unwrap();
    assert_eq!(events(&a, "new").await, 1);
    drop_database(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_waits_for_a_fenced_write_in_flight() {
    let Some(url) = fresh("inflight").await else {
        return;
    };
    let (a, b) = (pool(&url).await, pool(&url).await);
    let old = try_acquire(&a, "a", None, SHORT).await.unwrap().unwrap();
    let mut tx = a.begin().await.unwrap();
    fence(&mut tx, old.epoch).await.unwrap();
    // The lease lapses while the write is in flight; a renewal is not blocked by it.
    assert!(renew(&a, &old, SHORT).await.unwrap());
    let deadline = Instant::now() + PATIENCE;
    while current(&b).await.unwrap().expires_in > Duration::ZERO {
        assert!(Instant::now() < deadline, "the lease never lapsed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let standby = b.clone();
    let takeover = tokio::spawn(async move { try_acquire(&standby, "b", None, LONG).await });
    // The takeover waits on the fenced transaction's row lock...
    let deadline = Instant::now() + PATIENCE;
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity \
              WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&b)
        .await
        .unwrap();
        if waiting == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the takeover never waited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!takeover.is_finished());
    // ...so the write that passed the fence commits before the new epoch exists.
    write_event(&mut tx, "in flight").await;
    tx.commit().await.unwrap();
    let new = takeover.await.unwrap().unwrap().unwrap();
    assert_eq!(new.epoch, old.epoch + 1);
    assert_eq!(events(&b, "in flight").await, 1);
    drop_database(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_blocked_past_its_lease_answers_none() {
    let Some(url) = fresh("blocked").await else {
        return;
    };
    let (a, b) = (pool(&url).await, pool(&url).await);
    let old = try_acquire(&a, "a", None, SHORT).await.unwrap().unwrap();
    let mut tx = a.begin().await.unwrap();
    fence(&mut tx, old.epoch).await.unwrap();
    // A frozen leader's transaction: the standby waits at most its lease, then says no.
    let deadline = Instant::now() + PATIENCE;
    while current(&b).await.unwrap().expires_in > Duration::ZERO {
        assert!(Instant::now() < deadline, "the lease never lapsed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(try_acquire(&b, "b", None, SHORT).await.unwrap(), None);
    drop(tx);
    let new = take_when_lapsed(&b, "b").await;
    assert_eq!(new.epoch, old.epoch + 1);
    drop_database(&url).await;
}

/// Retention's prune and recovery's marks pass the fence as the writer's batches do: once
/// another coordinator leads, each is refused and the leadership ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_writes_are_fenced_too() {
    let Some(url) = fresh("maintain").await else {
        return;
    };
    let db = Db::connect(&StoreConfig::new(&url)).await.unwrap();
    let Db::Postgres(a, fence) = &db else {
        unreachable!("a postgres url")
    };
    let old = try_acquire(a, "a", None, SHORT).await.unwrap().unwrap();
    fence.arm(old.epoch);
    // While it leads, each goes through.
    db.prune(0).await.unwrap();
    db.mark_gone(1).await.unwrap();
    db.fail_task(crate::task::TaskId::new(), "unreadable", 1)
        .await
        .unwrap();

    let b = pool(&url).await;
    let new = take_when_lapsed(&b, "b").await;
    let refused = db.prune(i64::MAX).await.unwrap_err().to_string();
    assert!(refused.contains("not the leader"), "{refused}");
    assert!(
        refused.contains(&format!("epoch {} leads now", new.epoch)),
        "{refused}"
    );
    assert!(fence.lost().is_some(), "the leadership ended");
    for refused in [
        db.mark_gone(2).await.unwrap_err().to_string(),
        db.fail_task(crate::task::TaskId::new(), "unreadable", 2)
            .await
            .unwrap_err()
            .to_string(),
    ] {
        assert!(refused.contains("not the leader"), "{refused}");
    }
    drop_database(&url).await;
}
