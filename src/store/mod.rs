//! Durable state: tasks, attempts, results and the worker and node registry, in an embedded
//! SQLite file or in PostgreSQL.
//!
//! The queue stays the authority while it runs (every decision is made in memory); the store
//! is its journal. Changes reach the database through one writer actor that commits them in
//! groups ([`writer`]), and on start the queue reloads every unfinished task from it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), wrangle::Error> {
//! use wrangle::{Store, StoreConfig};
//!
//! // An embedded file, created on first use; or `StoreConfig::new("postgres://...")`.
//! let store = Store::open(StoreConfig::sqlite("wrangle.db")).await?;
//! println!("{} store, counts: {:?}", store.backend(), store.task_counts().await?);
//! # Ok(()) }
//! ```

mod claim;
mod db;
mod dropped;
mod migrate;
mod pending;
mod retention;
mod rows;
mod split;
mod text;
mod writer;

pub use migrate::MigrationReport;
pub use writer::WriterStats;

pub(crate) use claim::Claim;
pub(crate) use db::redact as redact_url;
pub(crate) use rows::{ms, AttemptRow, NewTask, NodeRow, Recovered, StoreOp, TaskState, WorkerRow};
pub(crate) use writer::{Ack, StoreMsg};

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::error::Error;
use crate::mailbox::{Mailbox, MailboxDepth};
use crate::queue::QueueMsg;
use crate::task::{TaskId, TaskOptions, TaskOutcome, TaskSnapshot, TaskStatus};

/// When `submit` returns, relative to the database.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// `submit` returns once the task is committed: a crash after it loses nothing. The
    /// default.
    #[default]
    Committed,
    /// `submit` returns at once and the task is committed with the next group, a few
    /// milliseconds later; a crash in between loses those tasks.
    Buffered,
}

/// Where and how tasks are stored.
#[derive(Clone)]
pub struct StoreConfig {
    /// `sqlite://PATH` (the file is created on first use) or
    /// `postgres://USER:PASSWORD@HOST:PORT/DB`.
    pub url: String,
    /// When `submit` returns. Default [`Durability::Committed`].
    pub durability: Durability,
    /// Finished tasks older than this are deleted in the background; `None` keeps them.
    /// Dead letters are kept until re-queued. Default 7 days.
    pub retention: Option<Duration>,
    /// At most this many finished tasks are kept: beyond it the oldest finished go at the
    /// next prune, whatever their age (dead letters and unfinished tasks are never counted
    /// out). `None` keeps any number. Default 1,000,000 (about 730 MB of small tasks).
    pub retention_max_tasks: Option<u64>,
    /// The database's size bound in bytes. SQLite: past it the oldest finished tasks go
    /// until the file is back under 90 % of it, and the file shrinks (incremental vacuum).
    /// PostgreSQL does not shrink its files (freed space is reused), so there it is only
    /// measured and warned about and `retention_max_tasks` holds the size. Either way a
    /// warning is logged once the database passes 80 % of it. `None` sets no bound.
    /// Default 8 GiB.
    pub retention_max_bytes: Option<u64>,
    /// How often retention runs. Default 60 s.
    pub prune_interval: Duration,
    /// Commit as soon as this many tasks have pending changes, even while more arrive.
    /// Default 10,000.
    pub max_batch: usize,
    /// Database connections (one writes; the others serve reads). Default 4.
    pub max_connections: u32,
    /// How long to wait for a connection before reporting the database unreachable.
    /// Default 5 s.
    pub connect_timeout: Duration,
    /// SQLite only: fsync the log on every commit (`synchronous=FULL`), so a committed task
    /// survives a power cut, not only a crash. Group commit keeps this affordable.
    /// Default true.
    pub sqlite_fsync_every_commit: bool,
    /// The name this process registers its node under. Default `coordinator`.
    pub node: String,
}

impl std::fmt::Debug for StoreConfig {
    /// Every field but secrets, which show as `<redacted>` (they must not reach a log).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &self.redacted_url())
            .field("durability", &self.durability)
            .field("retention", &self.retention)
            .field("retention_max_tasks", &self.retention_max_tasks)
            .field("retention_max_bytes", &self.retention_max_bytes)
            .field("prune_interval", &self.prune_interval)
            .field("max_batch", &self.max_batch)
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("sqlite_fsync_every_commit", &self.sqlite_fsync_every_commit)
            .field("node", &self.node)
            .finish()
    }
}

impl StoreConfig {
    /// A store at `url`, with the defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            durability: Durability::Committed,
            retention: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_max_tasks: Some(1_000_000),
            retention_max_bytes: Some(8 << 30),
            prune_interval: Duration::from_secs(60),
            max_batch: 10_000,
            max_connections: 4,
            connect_timeout: Duration::from_secs(5),
            sqlite_fsync_every_commit: true,
            node: "coordinator".into(),
        }
    }

    /// An embedded SQLite file at `path`.
    pub fn sqlite(path: impl AsRef<std::path::Path>) -> Self {
        Self::new(format!("sqlite://{}", path.as_ref().display()))
    }

    /// Checks every setting; the error names the first bad one.
    pub fn validate(&self) -> Result<(), Error> {
        if self.prune_interval.is_zero() {
            return Err(Error::invalid(
                "store.prune_interval",
                "must be greater than zero",
            ));
        }
        if self.retention_max_tasks == Some(0) {
            return Err(Error::invalid(
                "store.retention_max_tasks",
                "must be at least 1 (or unset, to keep any number)",
            ));
        }
        if self.retention_max_bytes.is_some_and(|b| b < 1 << 20) {
            return Err(Error::invalid(
                "store.retention_max_bytes",
                "must be at least 1 MiB (1048576) (or unset, for no bound)",
            ));
        }
        if self.max_batch == 0 {
            return Err(Error::invalid("store.max_batch", "must be at least 1"));
        }
        if self.max_connections < 2 {
            return Err(Error::invalid(
                "store.max_connections",
                "must be at least 2 (one writes, one reads)",
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(Error::invalid(
                "store.connect_timeout",
                "must be greater than zero",
            ));
        }
        Ok(())
    }

    /// The URL with its password hidden, for messages.
    pub fn redacted_url(&self) -> String {
        db::redact(&self.url)
    }
}

/// What the store refuses, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The URL is not one the store understands.
    #[error("bad database url {url}: {reason}")]
    BadUrl {
        /// The URL, password hidden.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// No connection could be made.
    #[error("cannot reach the database at {url}: {reason}")]
    Unreachable {
        /// The URL, password hidden.
        url: String,
        /// The driver's error.
        reason: String,
    },
    /// A schema migration failed; the database is left at the version before it.
    #[error("migration {version} failed: {reason}")]
    Migration {
        /// The migration.
        version: i64,
        /// The database's error.
        reason: String,
    },
    /// The database was migrated by a newer wrangle.
    #[error("database schema is at version {found}, newer than this build knows ({known})")]
    SchemaTooNew {
        /// The database's version.
        found: i64,
        /// The newest this build has.
        known: i64,
    },
    /// Another queue journals into this database already (one per database).
    #[error(
        "the database at {url} is in use by another wrangle coordinator (one queue per \
         database; stop the other, or give this one its own database)"
    )]
    InUse {
        /// The URL, password hidden.
        url: String,
    },
    /// A read or write failed while running.
    #[error("{0}")]
    Unavailable(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Unavailable(format!("database unavailable: {e}"))
    }
}

/// The store as `GET /stats` shows it.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct StoreStats {
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// Its URL, password hidden.
    pub url: String,
    /// `committed` or `buffered`.
    pub durability: String,
    /// False from a failed commit until the next one succeeds (submits are refused meanwhile).
    pub healthy: bool,
    /// Transactions committed.
    pub commits: u64,
    /// Commits that failed.
    pub failures: u64,
    /// Finished tasks deleted by retention.
    pub pruned: u64,
    /// Rows the database refused for good and the writer left out (see
    /// [`WriterStats::rejected_rows`]).
    pub rejected_rows: u64,
    /// The database's size in bytes (SQLite: pages × page size; PostgreSQL:
    /// `pg_database_size`), measured at each prune interval; 0 until first measured.
    pub database_bytes: u64,
    /// Free bytes on the disk holding an SQLite file, measured with `database_bytes`;
    /// `None` for PostgreSQL, or before the first measure.
    pub disk_free_bytes: Option<u64>,
}

/// A connected, migrated store. Cloning shares the connections.
#[derive(Clone, Debug)]
pub struct Store {
    db: db::Db,
    config: Arc<StoreConfig>,
    stats: Arc<WriterStats>,
    /// The coordinator epoch: read at open, set by the claim that increments it.
    epoch: Arc<AtomicU64>,
}

/// Connects to the database at `url` and brings its schema up to date: what the
/// `migrate` example runs. A store opened by [`Store::open`] does this by itself.
pub async fn migrate(url: &str) -> Result<MigrationReport, Error> {
    let config = StoreConfig::new(url);
    let db = db::Db::connect(&config).await?;
    let report = migrate::run(&db).await;
    db.close().await;
    Ok(report?)
}

impl Store {
    /// Connects (creating an SQLite file if missing) and runs pending migrations. An
    /// unreachable database fails here, naming the URL without its password.
    pub async fn open(config: StoreConfig) -> Result<Self, Error> {
        config.validate()?;
        let db = db::Db::connect(&config).await?;
        migrate::run(&db).await?;
        if retention::enable_incremental_vacuum(&db)
            .await
            .map_err(StoreError::from)?
        {
            tracing::info!("sqlite file rewritten with incremental vacuum");
        }
        let epoch = claim::current_epoch(&db).await.map_err(StoreError::from)?;
        tracing::info!(backend = db.backend(), url = %config.redacted_url(), epoch, "store open");
        Ok(Self {
            db,
            config: Arc::new(config),
            stats: Arc::default(),
            epoch: Arc::new(AtomicU64::new(epoch)),
        })
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        self.db.backend()
    }

    /// The coordinator epoch: a number kept in the database and incremented each time a
    /// coordinator claims it at start (in the claim's transaction), so a coordinator's epoch
    /// is larger than that of every coordinator that ran on this database before it. Leases
    /// carry it for fencing. Before this store's queue claims the database it is the epoch
    /// of the last claim (0 for a new database); an in-memory database counts too, from 1
    /// at its first claim.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The settings it was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// What `GET /stats` shows of it.
    pub fn stats(&self) -> StoreStats {
        use std::sync::atomic::Ordering::Relaxed;
        StoreStats {
            backend: self.backend().to_string(),
            url: self.config.redacted_url(),
            durability: match self.config.durability {
                Durability::Committed => "committed",
                Durability::Buffered => "buffered",
            }
            .to_string(),
            healthy: self.stats.healthy.load(Relaxed),
            commits: self.stats.commits.load(Relaxed),
            failures: self.stats.failures.load(Relaxed),
            pruned: self.stats.pruned.load(Relaxed),
            rejected_rows: self.stats.rejected_rows.load(Relaxed),
            database_bytes: self.stats.database_bytes.load(Relaxed),
            disk_free_bytes: match self.stats.disk_free_bytes.load(Relaxed) {
                u64::MAX => None,
                free => Some(free),
            },
        }
    }

    /// The writer's counters (commits, rows, failures).
    pub fn writer_stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Stored tasks by status.
    pub async fn task_counts(&self) -> Result<HashMap<TaskStatus, u64>, Error> {
        let mut out = HashMap::new();
        for (status, n) in self.db.count_by_status().await.map_err(StoreError::from)? {
            if let Ok(status) = status.parse() {
                out.insert(status, n.max(0) as u64);
            }
        }
        Ok(out)
    }

    /// Stored workers and their registry status (`active`, `deregistered`, `lost`).
    pub async fn workers(&self) -> Result<Vec<(String, String)>, Error> {
        Ok(self
            .db
            .registry_rows(false)
            .await
            .map_err(StoreError::from)?)
    }

    /// Stored nodes and their registry status (`active`, `deregistered`, `lost`).
    pub async fn nodes(&self) -> Result<Vec<(String, String)>, Error> {
        Ok(self
            .db
            .registry_rows(true)
            .await
            .map_err(StoreError::from)?)
    }

    /// One stored task, as `get_task` shows it.
    pub async fn get_task(&self, id: TaskId) -> Result<Option<TaskSnapshot>, Error> {
        let row = self.db.get(id).await.map_err(StoreError::from)?;
        Ok(row.map(shown))
    }

    /// A page of stored tasks, as `GET /tasks` shows it: those matching `query`, in id
    /// (creation) order after its cursor.
    pub async fn list(&self, query: &crate::queue::TaskQuery) -> Result<Vec<TaskSnapshot>, Error> {
        let rows = self
            .db
            .list(
                query.status.map(|s| s.as_str()),
                query.task_type.as_deref(),
                query.after,
                query.limit,
                query.newest_first,
            )
            .await
            .map_err(StoreError::from)?;
        Ok(rows.into_iter().map(shown).collect())
    }

    /// Deletes finished tasks (not dead letters) that finished more than `age` ago; returns
    /// how many. Runs by itself every `prune_interval` when `retention` is set.
    pub async fn prune(&self, age: Duration) -> Result<u64, Error> {
        let cutoff = SystemTime::now()
            .checked_sub(age)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        Ok(self
            .db
            .prune(rows::ms(cutoff))
            .await
            .map_err(StoreError::from)?)
    }

    /// The database's size in bytes now (SQLite: pages × page size, which shrinks after a
    /// prune; PostgreSQL: `pg_database_size`).
    pub async fn database_bytes(&self) -> Result<u64, Error> {
        Ok(retention::database_bytes(&self.db)
            .await
            .map_err(StoreError::from)?)
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.db.close().await;
    }

    // ----- for the queue ------------------------------------------------------------------

    /// The outcome of a stored task that finished.
    pub(crate) async fn outcome(&self, id: TaskId) -> Result<Option<TaskOutcome>, Error> {
        Ok(self.get_task(id).await?.and_then(|t| outcome_of(&t)))
    }

    /// Claims the database for one queue (see [`Claim`]) and increments the coordinator
    /// epoch in the same transaction; [`Store::epoch`] answers the new value from then on.
    pub(crate) async fn claim(&self) -> Result<Claim, Error> {
        let (claim, epoch) = claim::claim(&self.config, &self.db).await?;
        self.epoch.store(epoch, std::sync::atomic::Ordering::SeqCst);
        tracing::info!(epoch, "database claimed");
        Ok(claim)
    }

    /// The ids of stored tasks holding these idempotency keys (keys not stored are left out).
    pub async fn find_keys(&self, keys: &[&str]) -> Result<HashMap<String, TaskId>, Error> {
        Ok(self.db.find_keys(keys).await.map_err(StoreError::from)?)
    }

    /// Loads every unfinished task and dead letter. Rows that no longer decode are marked
    /// failed in the database, with the reason, and left out.
    pub(crate) async fn load(&self) -> Result<Vec<Recovered>, Error> {
        let now = rows::ms(SystemTime::now());
        let (workers, nodes) = self.db.mark_gone(now).await.map_err(StoreError::from)?;
        if workers + nodes > 0 {
            tracing::info!(
                workers,
                nodes,
                "registry rows of the previous run marked lost"
            );
        }
        let rows = self.db.load_live().await.map_err(StoreError::from)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id = row.id;
            match row.decode() {
                Ok(r) => out.push(r),
                Err(reason) => {
                    let error = format!("stored task no longer decodes: {reason}");
                    tracing::error!(task_id = %id, %error, "task marked failed at recovery");
                    self.db
                        .fail_task(id, &error, now)
                        .await
                        .map_err(StoreError::from)?;
                }
            }
        }
        Ok(out)
    }

    /// Starts the writer actor, linked to the queue.
    pub(crate) async fn start_writer(
        &self,
        queue: Mailbox<QueueMsg>,
    ) -> Result<Mailbox<StoreMsg>, Error> {
        let depth = MailboxDepth::default();
        let args = writer::WriterArgs {
            db: self.db.clone(),
            depth: depth.clone(),
            queue: queue.clone(),
            retention: retention::Retention {
                age: self.config.retention,
                max_tasks: self.config.retention_max_tasks,
                max_bytes: self.config.retention_max_bytes,
                path: claim::sqlite_file(&self.config.url),
            },
            prune_interval: self.config.prune_interval,
            max_batch: self.config.max_batch,
            stats: self.stats.clone(),
        };
        let (actor, _) =
            ractor::Actor::spawn_linked(None, writer::StoreWriter, args, queue.actor().get_cell())
                .await
                .map_err(|e| Error::Spawn {
                    actor: "store writer",
                    reason: e.to_string(),
                })?;
        Ok(Mailbox::new(actor, depth))
    }
}

/// A recovered (or read) task as a snapshot.
pub(crate) fn snapshot(r: Recovered) -> TaskSnapshot {
    TaskSnapshot {
        id: r.id,
        task_type: r.task_type.to_string(),
        status: r.status,
        options: r.options,
        payload: r.payload,
        result: r.result,
        error: r.error,
        attempts: r.attempts,
        created_at: r.created_at,
        finished_at: r.finished_at,
        unroutable: false,
    }
}

/// The outcome of a finished snapshot; `None` while it is not finished.
pub(crate) fn outcome_of(t: &TaskSnapshot) -> Option<TaskOutcome> {
    Some(match t.status {
        TaskStatus::Completed => TaskOutcome::Completed {
            result: t.result.clone().unwrap_or_else(crate::task::Payload::null),
        },
        TaskStatus::Failed => TaskOutcome::Failed {
            error: t.error.clone().unwrap_or_default(),
        },
        TaskStatus::Cancelled => TaskOutcome::Cancelled,
        TaskStatus::Timeout => TaskOutcome::Timeout,
        _ => return None,
    })
}

/// A stored row as a snapshot; one that no longer decodes shows as failed, with the reason.
fn shown(row: rows::StoredTask) -> TaskSnapshot {
    let id = row.id;
    match row.decode() {
        Ok(r) => snapshot(r),
        Err(error) => TaskSnapshot {
            id,
            task_type: String::new(),
            status: TaskStatus::Failed,
            options: TaskOptions::default(),
            payload: crate::task::Payload::null(),
            result: None,
            error: Some(format!("stored task no longer decodes: {error}")),
            attempts: Vec::new(),
            created_at: SystemTime::UNIX_EPOCH,
            finished_at: None,
            unroutable: false,
        },
    }
}
