//! One queue per database: the claim a queue takes on its database at start.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

use super::db::redact;
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

/// Takes the [`Claim`] on the database at `config.url`, or says who holds it.
pub(crate) async fn claim(config: &StoreConfig) -> Result<Claim, StoreError> {
    let url = config.url.as_str();
    let in_use = || StoreError::InUse { url: redact(url) };
    let unreachable = |e: sqlx::Error| StoreError::Unreachable {
        url: redact(url),
        reason: e.to_string(),
    };
    if url.starts_with("sqlite:") {
        let options = SqliteConnectOptions::from_str(url).map_err(unreachable)?;
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
            Err(std::fs::TryLockError::WouldBlock) => Err(in_use()),
            Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Unreachable {
                url: redact(url),
                reason: format!("cannot lock {path}: {e}"),
            }),
        }
    } else {
        let options = PgConnectOptions::from_str(url).map_err(unreachable)?;
        let mut conn = tokio::time::timeout(
            config.connect_timeout,
            <sqlx::PgConnection as sqlx::Connection>::connect_with(&options),
        )
        .await
        .map_err(|_| unreachable(sqlx::Error::PoolTimedOut))?
        .map_err(unreachable)?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(QUEUE_LOCK)
            .fetch_one(&mut conn)
            .await
            .map_err(unreachable)?;
        if got {
            Ok(Claim::Postgres(conn))
        } else {
            let _ = sqlx::Connection::close(conn).await;
            Err(in_use())
        }
    }
}
