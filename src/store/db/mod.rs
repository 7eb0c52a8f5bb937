//! The two databases behind one type. Most SQL is shared: both backends take `ON CONFLICT`
//! and `WITH ... UPDATE ... FROM`; [`on_pool!`] expands the same statements once per
//! backend. What differs is connecting, migrating, and how a batch's many task and
//! attempt rows are carried (see [`write`]).
//!
//! - [`sqlite`] and [`postgres`]: how each is connected to, and how a writing transaction
//!   begins on it.
//! - [`write`]: one batch of changes in one transaction; SQLite takes it as one script of
//!   multi-row `VALUES` statements ([`script`]), PostgreSQL takes the task and attempt rows
//!   as arrays through `UNNEST` ([`unnest`]).
//! - [`read`]: tasks with their attempts, counts and registry rows.
//! - [`keys`]: which tasks hold which idempotency keys.
//! - [`maintain`]: retention's deletes and the marks made at recovery.

use std::sync::Arc;
use std::time::Duration;

pub(crate) use super::leadership::Fence;
use super::{StoreConfig, StoreError};

/// Runs `$body` once per backend: `$pool` is the pool and `$db` its sqlx database type, so
/// one body serves SQLite and PostgreSQL.
macro_rules! on_pool {
    ($self:expr, |$pool:ident, $db:ident| $body:expr) => {
        match $self {
            Db::Sqlite($pool, _) => {
                #[allow(dead_code)]
                type $db = sqlx::Sqlite;
                $body
            }
            Db::Postgres($pool, _) => {
                #[allow(dead_code)]
                type $db = sqlx::Postgres;
                $body
            }
        }
    };
}

#[macro_use]
mod workflows;
#[macro_use]
mod write;
mod keys;
mod maintain;
mod postgres;
mod read;
mod scaling;
mod script;
mod sqlite;
mod unnest;

pub(crate) use write::KeyTaken;

/// A connected database. An SQLite one carries the connection its batches are written on
/// ([`script::Writer`]); a PostgreSQL one the [`Fence`] its write transactions pass first
/// (failover: only the leader's epoch may write).
#[derive(Clone, Debug)]
pub(crate) enum Db {
    Sqlite(sqlx::SqlitePool, Arc<script::Writer>),
    Postgres(sqlx::PgPool, Arc<Fence>),
}

/// A transaction that will write.
pub(crate) trait BeginWrite {
    /// The backend.
    type Backend: sqlx::Database;

    /// Begins it. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`): a
    /// deferred transaction that reads first fails with `SQLITE_BUSY_SNAPSHOT` (which no
    /// `busy_timeout` waits out) when another connection commits between its first read
    /// and its first write; an immediate one waits for the other writer instead.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Self::Backend>, sqlx::Error>;

    /// Begins it and passes `fence` first (PostgreSQL; SQLite has nothing to fence): a
    /// coordinator that is no longer the leader gets an error and writes nothing.
    async fn begin_fenced(
        &self,
        fence: Option<&Fence>,
    ) -> Result<sqlx::Transaction<'static, Self::Backend>, sqlx::Error>;
}

/// Rows per multi-row statement. Only these sizes are used, so that each statement's SQL
/// takes one of a few shapes and both drivers reuse its prepared form: preparing a fresh
/// 150-row statement costs about as much as running it. 15 columns × 256 rows stays far
/// below both backends' limits on bound parameters (32,766 and 65,535).
const CHUNK_SIZES: [usize; 5] = [256, 64, 16, 4, 1];

/// `items` in consecutive slices of the [`CHUNK_SIZES`], largest first.
fn chunks<T>(mut items: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        let size = CHUNK_SIZES.into_iter().find(|&s| s <= items.len())?;
        let (chunk, rest) = items.split_at(size);
        items = rest;
        Some(chunk)
    })
}

const TASK_COLUMNS: &str = "id, task_type, payload, options, status, retries_used, \
    lease_losses, created_at_ms, ready_at_ms, finished_at_ms, result, error, dead_seq";

/// Unfinished tasks: every one has no `finished_at_ms`, which the index finds.
const UNFINISHED: &str = "(finished_at_ms IS NULL AND status IN ('pending', 'queued', 'running'))";

/// Hides the password in a database URL, for messages.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_string(),
    }
}

/// Opens and closes one connection, so that a refusal reports the driver's reason (a
/// pool's acquire timeout would hide it).
async fn probe<C: sqlx::Connection>(
    options: &<C as sqlx::Connection>::Options,
    timeout: Duration,
) -> Result<(), sqlx::Error> {
    match tokio::time::timeout(timeout, C::connect_with(options)).await {
        Ok(conn) => conn?.close().await,
        Err(_) => Err(sqlx::Error::PoolTimedOut),
    }
}

impl Db {
    /// Connects to the database at `config.url`, probing one connection first so that a
    /// refusal names the driver's reason.
    pub(crate) async fn connect(config: &StoreConfig) -> Result<Self, StoreError> {
        let url = config.url.as_str();
        let unreachable = |e: sqlx::Error| StoreError::Unreachable {
            url: redact(url),
            reason: e.to_string(),
        };
        let bad_url = |e: sqlx::Error| StoreError::BadUrl {
            url: redact(url),
            reason: e.to_string(),
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = postgres::options(url).map_err(bad_url)?;
            probe::<sqlx::PgConnection>(&options, config.connect_timeout)
                .await
                .map_err(unreachable)?;
            let pool = postgres::pool(config, options).await.map_err(unreachable)?;
            Ok(Self::Postgres(pool, Arc::new(Fence::new())))
        } else if url.starts_with("sqlite:") {
            let options = sqlite::options(config).map_err(bad_url)?;
            probe::<sqlx::SqliteConnection>(&options, config.connect_timeout)
                .await
                .map_err(unreachable)?;
            let writer = Arc::new(script::Writer::new(options.clone()));
            let pool = sqlite::pool(config, options).await.map_err(unreachable)?;
            Ok(Self::Sqlite(pool, writer))
        } else {
            Err(StoreError::BadUrl {
                url: redact(url),
                reason: "expected sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DB".into(),
            })
        }
    }

    /// The fence of a PostgreSQL database's write transactions.
    pub(crate) fn fence(&self) -> Option<&Arc<Fence>> {
        match self {
            Self::Sqlite(..) => None,
            Self::Postgres(_, fence) => Some(fence),
        }
    }

    /// `sqlite` or `postgres`.
    pub(crate) fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(..) => "sqlite",
            Self::Postgres(..) => "postgres",
        }
    }

    pub(crate) async fn close(&self) {
        if let Self::Sqlite(_, writer) = self {
            writer.close().await;
        }
        on_pool!(self, |pool, _DB| pool.close().await)
    }
}

#[cfg(test)]
mod tests;
