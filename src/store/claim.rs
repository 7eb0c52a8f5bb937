//! One queue per database: the claim a queue takes on its database at start, and the
//! coordinator epoch it increments with it.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::sqlite::SqliteConnectOptions;

use super::db::{redact, Db};
use super::leader::{self, Leadership};
use super::leadership::{renew_until_lost, Candidacy, Fence};
use super::{StoreConfig, StoreError};

/// Proof that this process is the one journaling into a database: an exclusive lock on
/// `PATH.lock` beside an SQLite file, or the leader lease on PostgreSQL (renewed in the
/// background; see [`leader`]). Released by [`Claim::release`]; when the process dies, by
/// the OS (the file lock) or by the lease lapsing.
#[derive(Debug)]
pub(crate) enum Claim {
    File(std::fs::File),
    Leader {
        pool: sqlx::PgPool,
        leadership: Leadership,
        fence: Arc<Fence>,
        renewer: tokio::task::JoinHandle<()>,
    },
    /// An in-memory SQLite database: nothing to share.
    Nothing,
}

impl Claim {
    /// Gives the database up. On PostgreSQL the lease is released so a standby takes over
    /// at once; the fence keeps this leadership's epoch, so the writer's last commit still
    /// passes unless a standby has taken over meanwhile.
    pub(crate) async fn release(self) {
        match self {
            Self::File(file) => drop(file),
            Self::Leader {
                pool,
                leadership,
                fence,
                renewer,
            } => {
                renewer.abort();
                if fence.lost().is_none() {
                    match leader::release(&pool, &leadership).await {
                        Ok(true) => {
                            tracing::info!(epoch = leadership.epoch, "leader lease released")
                        }
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "leader lease not released; it lapses")
                        }
                    }
                }
                let _ = leader::leave(&pool, &leadership.holder).await;
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
        Db::Sqlite(pool, _) => sqlx::query_scalar(sql).fetch_optional(pool).await?,
        Db::Postgres(pool, _) => sqlx::query_scalar(sql).fetch_optional(pool).await?,
    };
    Ok(epoch.unwrap_or(0).max(0) as u64)
}

/// Takes the [`Claim`] on the database at `config.url`, or says who holds it, and
/// increments the coordinator epoch while holding it: on PostgreSQL taking the leader
/// lease increments it (or the lease was taken already, by [`Store::try_lead`]); on
/// SQLite the increment is committed under the file lock. Returns the claim and the new
/// epoch.
///
/// [`Store::try_lead`]: super::Store::try_lead
pub(crate) async fn claim(
    config: &StoreConfig,
    db: &Db,
    candidacy: &Candidacy,
) -> Result<(Claim, u64), StoreError> {
    let url = config.url.as_str();
    let no_epoch = |e: sqlx::Error| {
        StoreError::Unavailable(format!("cannot increment the coordinator epoch: {e}"))
    };
    if url.starts_with("sqlite:") {
        let claim = lock_file(config)?;
        let Db::Sqlite(pool, _) = db else {
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
        let Db::Postgres(pool, fence) = db else {
            return Err(StoreError::Unavailable(
                "a postgres url opened an sqlite pool".into(),
            ));
        };
        let taken = candidacy
            .taken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let leadership = match taken {
            // Taken by the standby loop before the coordinator was built: still ours only
            // if a renewal says so (a slow start may have let it lapse and go elsewhere).
            Some(leadership) => {
                if !leader::renew(pool, &leadership, config.leader_lease).await? {
                    return Err(StoreError::InUse { url: redact(url) });
                }
                leadership
            }
            None => {
                // A coordinator killed a moment ago holds the lease until it lapses.
                let patience = config.leader_lease + config.leader_renew;
                lead_within(config, pool, candidacy, patience)
                    .await?
                    .ok_or_else(|| StoreError::InUse { url: redact(url) })?
            }
        };
        fence.arm(leadership.epoch);
        let epoch = leadership.epoch;
        let renewer = renew_until_lost(
            pool.clone(),
            leadership.clone(),
            candidacy.http_url(),
            fence.clone(),
            config.leader_lease,
            config.leader_renew,
        );
        tracing::info!(epoch, holder = %leadership.holder, "leader lease held");
        Ok((
            Claim::Leader {
                pool: pool.clone(),
                leadership,
                fence: fence.clone(),
                renewer,
            },
            epoch,
        ))
    }
}

/// Tries for the leader lease every renewal interval for up to `patience`.
pub(crate) async fn lead_within(
    config: &StoreConfig,
    pool: &sqlx::PgPool,
    candidacy: &Candidacy,
    patience: Duration,
) -> Result<Option<Leadership>, StoreError> {
    let deadline = Instant::now() + patience;
    loop {
        let http_url = candidacy.http_url();
        let taken = leader::try_acquire(
            pool,
            &candidacy.holder,
            http_url.as_deref(),
            config.leader_lease,
        )
        .await?;
        if taken.is_some() || Instant::now() >= deadline {
            return Ok(taken);
        }
        tokio::time::sleep(config.leader_renew.min(deadline - Instant::now())).await;
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
