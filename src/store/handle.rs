//! [`Store`]: the public face of a connected, migrated database: open it, read tasks,
//! counts and the registry from it, prune it. What the queue does with it is in
//! [`journal`](super::journal).

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::snapshot::shown;
use super::{claim, db, retention, rows};
use super::{Durability, MigrationReport, StoreConfig, StoreError, StoreStats, WriterStats};
use crate::error::Error;
use crate::task::{TaskId, TaskQuery, TaskSnapshot, TaskStatus};

/// A connected, migrated store. Cloning shares the connections.
#[derive(Clone, Debug)]
pub struct Store {
    pub(super) db: db::Db,
    pub(super) config: Arc<StoreConfig>,
    pub(super) stats: Arc<WriterStats>,
    /// The coordinator epoch: read at open, set by the claim that increments it.
    pub(super) epoch: Arc<AtomicU64>,
    /// Its part in failover (PostgreSQL): its name, and a leadership taken.
    pub(super) candidacy: Arc<super::leadership::Candidacy>,
}

/// Connects to the database at `url` and brings its schema up to date: what the
/// `migrate` example runs. A store opened by [`Store::open`] does this by itself.
pub async fn migrate(url: &str) -> Result<MigrationReport, Error> {
    let config = StoreConfig::new(url);
    let db = db::Db::connect(&config).await?;
    let report = super::migrate::run(&db).await;
    db.close().await;
    Ok(report?)
}

impl Store {
    /// Connects (creating an SQLite file if missing) and runs pending migrations. An
    /// unreachable database fails here, naming the URL without its password.
    pub async fn open(config: StoreConfig) -> Result<Self, Error> {
        config.validate()?;
        let db = db::Db::connect(&config).await?;
        super::migrate::run(&db).await?;
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
            stats: Arc::default(),
            epoch: Arc::new(AtomicU64::new(epoch)),
            candidacy: Arc::new(super::leadership::Candidacy::new(&config.node)),
            config: Arc::new(config),
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
            role: self.role().to_string(),
            epoch: self.epoch(),
            lost: self.db.fence().and_then(|f| f.lost()),
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
    pub async fn list(&self, query: &TaskQuery) -> Result<Vec<TaskSnapshot>, Error> {
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

    /// The ids of stored tasks holding these idempotency keys (keys not stored are left out).
    pub async fn find_keys(&self, keys: &[&str]) -> Result<HashMap<String, TaskId>, Error> {
        Ok(self.db.find_keys(keys).await.map_err(StoreError::from)?)
    }
}
