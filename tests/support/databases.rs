//! The databases the store tests run on: a fresh SQLite file, and a fresh database on the
//! PostgreSQL server named by `DATABASE_URL` (which `.ci/run` starts).

use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::Connection;

/// A fresh SQLite file in `dir`.
pub(crate) fn sqlite_url(dir: &std::path::Path, name: &str) -> String {
    format!("sqlite://{}", dir.join(format!("{name}.db")).display())
}

/// The PostgreSQL server's URL, or `None` (and a note) when none is configured. Under CI
/// (`CI=true`) a missing server is a failure, not a skip.
pub(crate) fn postgres_server() -> Option<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if url.starts_with("postgres") => Some(url),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but DATABASE_URL names no PostgreSQL server: the PostgreSQL tests cannot run")
        }
        _ => {
            eprintln!("DATABASE_URL is not a postgres:// URL: PostgreSQL test not run");
            None
        }
    }
}

/// A new, empty database on the PostgreSQL server, named after the test; its URL.
pub(crate) async fn fresh_postgres(test: &str) -> Option<String> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let server = postgres_server()?;
    let name = format!(
        "wrangle_{test}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    Some(with_database(&server, &name))
}

/// Drops a database made by [`fresh_postgres`], cutting off anyone still connected.
#[allow(dead_code)]
pub(crate) async fn drop_postgres(url: &str) {
    let name = url.rsplit('/').next().unwrap().split('?').next().unwrap();
    let server = postgres_server().unwrap();
    let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    format!("{base}/{name}{query}")
}

/// Runs one SQL script on the database at `url` (SQLite or PostgreSQL), on its own
/// connection.
#[allow(dead_code)]
pub(crate) async fn execute(url: &str, sql: &str) {
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
        c.close().await.unwrap();
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
        c.close().await.unwrap();
    }
}

/// Makes every insert into `tasks` fail (a trigger), while reads and every other write
/// still work: a database that refuses new tasks, deterministically.
#[allow(dead_code)]
pub(crate) async fn stop_task_inserts(url: &str) {
    let sql = if url.starts_with("sqlite:") {
        "CREATE TRIGGER stop_task_inserts BEFORE INSERT ON tasks \
         BEGIN SELECT RAISE(ABORT, 'task inserts stopped by the test'); END;"
    } else {
        "CREATE FUNCTION stop_task_inserts() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'task inserts stopped by the test'; END $$; \
         CREATE TRIGGER stop_task_inserts BEFORE INSERT ON tasks \
         FOR EACH ROW EXECUTE FUNCTION stop_task_inserts();"
    };
    execute(url, sql).await;
}

/// Undoes [`stop_task_inserts`].
#[allow(dead_code)]
pub(crate) async fn allow_task_inserts(url: &str) {
    let sql = if url.starts_with("sqlite:") {
        "DROP TRIGGER stop_task_inserts;"
    } else {
        "DROP TRIGGER stop_task_inserts ON tasks; DROP FUNCTION stop_task_inserts();"
    };
    execute(url, sql).await;
}

/// How many rows `sql` (a `SELECT COUNT(*) ...`) counts.
#[allow(dead_code)]
pub(crate) async fn count(url: &str, sql: &str) -> i64 {
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        let n = sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap();
        c.close().await.unwrap();
        n
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        let n = sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap();
        c.close().await.unwrap();
        n
    }
}

/// One test per backend for each scenario named: `scenario(url)` runs on a fresh SQLite file and
/// on a fresh database of the PostgreSQL server (see [`postgres_server`]). Needs the
/// including crate to declare this file as `mod databases` with `#[macro_use]`.
#[allow(unused_macros)]
macro_rules! on_both {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$scenario(crate::databases::sqlite_url(dir.path(), "store")).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let Some(url) = crate::databases::fresh_postgres(stringify!($scenario)).await
                    else {
                        return;
                    };
                    super::$scenario(url.clone()).await;
                    crate::databases::drop_postgres(&url).await;
                }
            )*
        }
    };
}
