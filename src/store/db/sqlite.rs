//! SQLite: the embedded default. One file next to the program, in WAL mode, fsynced on
//! every commit unless told otherwise.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};

use super::BeginWrite;
use crate::store::StoreConfig;

/// The connection options for `config.url` (an `sqlite:` URL).
pub(super) fn options(config: &StoreConfig) -> Result<SqliteConnectOptions, sqlx::Error> {
    Ok(SqliteConnectOptions::from_str(&config.url)?
        .create_if_missing(true)
        // Takes on a new file (before its first table); an existing file made
        // without it is rewritten once at open (see `retention`).
        .auto_vacuum(SqliteAutoVacuum::Incremental)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(if config.sqlite_fsync_every_commit {
            SqliteSynchronous::Full
        } else {
            SqliteSynchronous::Normal
        })
        .busy_timeout(Duration::from_secs(5))
        // 64 MiB of page cache per connection (SQLite's default is 2 MiB): the
        // task table's indexes stay in memory instead of being re-read per commit.
        .pragma("cache_size", "-65536")
        // Statement journals (an upsert or multi-row statement inside a transaction keeps
        // one, to undo that statement alone if it fails) in memory instead of in temporary
        // files: they are written on every batch and never need to outlive the statement.
        .pragma("temp_store", "memory")
        // Checkpoint the WAL into the database file every 16,384 pages (64 MiB) instead of
        // SQLite's 1,000: a busy writer commits ~10,000 rows at a time, so the default
        // checkpoints (copying pages back and fsyncing the file) every few commits, and a
        // page rewritten by many commits is copied once per checkpoint, not once per commit.
        // Commits stay durable when their WAL frames are fsynced; checkpoints only move them.
        .pragma("wal_autocheckpoint", "16384"))
}

/// The pool of the other `config.max_connections - 1` connections: the writer keeps one
/// of its own ([`super::script::Writer`]).
pub(super) async fn pool(
    config: &StoreConfig,
    options: SqliteConnectOptions,
) -> Result<sqlx::SqlitePool, sqlx::Error> {
    SqlitePoolOptions::new()
        .max_connections(config.max_connections.saturating_sub(1).max(1))
        .acquire_timeout(config.connect_timeout)
        .connect_with(options)
        .await
}

impl BeginWrite for sqlx::SqlitePool {
    type Backend = sqlx::Sqlite;

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }

    /// An SQLite file has one coordinator (its lock file): nothing to fence.
    async fn begin_fenced(
        &self,
        _fence: Option<&super::Fence>,
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.begin_write().await
    }
}
