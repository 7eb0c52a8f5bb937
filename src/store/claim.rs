//! One queue per database: the claim a queue takes on its database at start, and the
//! coordinator epoch it increments in the same transaction.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

use super::db::{redact, Db};
use super::{StoreConfig, StoreError};

/// Proof that this process is the one journaling into a database: an exclusive lock on
/// `PATH.lock` beside an SQLite file, or a session advisory lock on PostgreSQL, held on
/// its own connection. Released by [`Claim::release`], or by the OS or server when the
/// process dies.
#[derive(Debug)]
pub(crate) enum Claim {
    File(std::fs::File),
    Postgres(sqlx::PgConnection),
    /// An in-memory SQLite database: nothing to share.
    Nothing,
}

/// The advisory lock key a queue holds on PostgreSQL ("wrangleq" in ASCII).
const QUEUE_LOCK: i64 = 0x7772_616e_676c_6571;

impl Claim {
    pub(crate) async fn release(self) {
        match self {
            Self::File(file) => drop(file),
            Self::Postgres(mut conn) => {
                let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(QUEUE_LOCK)
                    .execute(&mut conn)
                    .await;
                let _ = sqlx::Connection::close(conn).await;
            }
            Self::Nothing => {}
        }
    }
}

/// Increments the coordinator epoch and returns the new value.
const BUMP_EPOCH: &str =
    "UPDATE coordinator_epoch SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch";

/// Reads the coordinator epoch the last claim left (0 before any).
pub(crate) async fn current_epoch(db: &Db) -> Result<u64, sqlx::Error> {
    let sql = "SELECT epoch FROM coordinator_epoch WHERE id = 1";
    let epoch: Option<i64> = match db {
        Db::Sqlite(pool) => sqlx::query_scalar(sql).fetch_optional(pool).await?,
        Db::Postgres(pool) => sqlx::query_scalar(sql).fetch_optional(pool).await?,
    };
    Ok(epoch.unwrap_or(0).max(0) as u64)
}

/// Takes the [`Claim`] on the database at `config.url`, or says who holds it, and
/// increments the coordinator epoch while holding it: on PostgreSQL the advisory lock and
/// the increment are one transaction (a session lock taken in a transaction outlives its
/// commit); on SQLite the increment is committed under the file lock. Returns the claim and
/// the new epoch.
pub(crate) async fn claim(config: &StoreConfig, db: &Db) -> Result<(Claim, u64), StoreError> {
    let url = config.url.as_str();
    let in_use = || StoreError::InUse { url: redact(url) };
    let unreachable = |e: sqlx::Error| StoreError::Unreachable {
        url: redact(url),
        reason: e.to_string(),
    };
    let no_epoch = |e: sqlx::Error| {
        StoreError::Unavailable(format!("cannot increment the coordinator epoch: {e}"))
    };
    if url.starts_with("sqlite:") {
        let claim = lock_file(config)?;
        let Db::Sqlite(pool) = db else {
            return Err(StoreError::Unavailable(
                "an sqlite url opened a postgres pool".into(),
            ));
        };
        let mut tx = super::db::BeginWrite::begin_write(pool)
            .await
            .map_err(no_epoch)?;
        let epoch: i64 = sqlx::query_scalar(BUMP_EPOCH)
            .fetch_one(&mut *tx)
            .await
            .map_err(no_epoch)?;
        tx.commit().await.map_err(no_epoch)?;
        Ok((claim, epoch.max(0) as u64))
    } else {
        let options = PgConnectOptions::from_str(url).map_err(unreachable)?;
        let mut conn = tokio::time::timeout(
            config.connect_timeout,
            <sqlx::PgConnection as sqlx::Connection>::connect_with(&options),
        )
        .await
        .map_err(|_| unreachable(sqlx::Error::PoolTimedOut))?
        .map_err(unreachable)?;
        let mut tx = sqlx::Connection::begin(&mut conn)
            .await
            .map_err(unreachable)?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(QUEUE_LOCK)
            .fetch_one(&mut *tx)
            .await
            .map_err(unreachable)?;
        if !got {
            drop(tx);
            let _ = sqlx::Connection::close(conn).await;
            return Err(in_use());
        }
        let epoch: i64 = sqlx::query_scalar(BUMP_EPOCH)
            .fetch_one(&mut *tx)
            .await
            .map_err(no_epoch)?;
        tx.commit().await.map_err(no_epoch)?;
        Ok((Claim::Postgres(conn), epoch.max(0) as u64))
    }
}

/// The file of an SQLite database at `url`; `None` for PostgreSQL or an in-memory one.
pub(crate) fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    if !url.starts_with("sqlite:") {
        return None;
    }
    let options = SqliteConnectOptions::from_str(url).ok()?;
    let file = options.get_filename();
    if file.as_os_str().is_empty() || file.to_string_lossy().contains(":memory:") {
        return None;
    }
    Some(file.to_path_buf())
}

/// The lock file beside an SQLite database (none for an in-memory one).
fn lock_file(config: &StoreConfig) -> Result<Claim, StoreError> {
    let url = config.url.as_str();
    let options = SqliteConnectOptions::from_str(url).map_err(|e| StoreError::Unreachable {
        url: redact(url),
        reason: e.to_string(),
    })?;
    let file = options.get_filename();
    if file.as_os_str().is_empty() || file.to_string_lossy().contains(":memory:") {
        return Ok(Claim::Nothing);
    }
    let path = format!("{}.lock", file.display());
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Unreachable {
            url: redact(url),
            reason: format!("cannot open {path}: {e}"),
        })?;
    match lock.try_lock() {
        Ok(()) => Ok(Claim::File(lock)),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InUse { url: redact(url) }),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Unreachable {
            url: redact(url),
            reason: format!("cannot lock {path}: {e}"),
        }),
    }
}
