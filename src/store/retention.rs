//! Retention by age, count and size: what the writer deletes, and how it measures the
//! database and the disk under it.
//!
//! Age alone does not bound a store: at 2,000 tasks/s a week of finished tasks is a
//! billion rows. So finished tasks (never unfinished ones, never dead letters) are also
//! deleted oldest first beyond a count and, on SQLite, beyond a size; SQLite files use
//! `auto_vacuum = INCREMENTAL` and give the freed pages back to the file system after each
//! prune (`PRAGMA incremental_vacuum`). PostgreSQL keeps freed space for reuse (autovacuum)
//! rather than shrinking files, so there the count bound is what holds the size, and the
//! size is measured and warned about.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::db::Db;
use super::rows::ms;
use super::WriterStats;

/// Retention settings, as the writer applies them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Retention {
    /// Finished tasks older than this go.
    pub(crate) age: Option<Duration>,
    /// At most this many finished tasks stay.
    pub(crate) max_tasks: Option<u64>,
    /// The database is kept below this many bytes (SQLite).
    pub(crate) max_bytes: Option<u64>,
    /// The SQLite file, to measure the free space of its disk.
    pub(crate) path: Option<PathBuf>,
}

/// Past this share of `retention_max_bytes` the writer warns (80 %).
pub(crate) const SIZE_WARN_PERCENT: u64 = 80;

/// Below this share of its disk free the writer warns (10 %).
pub(crate) const LOW_DISK_PERCENT: u64 = 10;

/// A size bound prunes down to this share of the bound (90 %), so that it does not run
/// again at the next interval for a few bytes.
const SIZE_TARGET_PERCENT: u64 = 90;

/// Turns on incremental vacuum for an SQLite file made without it: the setting only takes
/// on an empty file or through one `VACUUM` (which rewrites the file once, and needs as much
/// free disk as the file). New files get it when they are created. Returns whether the file
/// was rewritten.
pub(crate) async fn enable_incremental_vacuum(db: &Db) -> Result<bool, sqlx::Error> {
    let Db::Sqlite(pool, _) = db else {
        return Ok(false);
    };
    let mut conn = pool.acquire().await?;
    let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum")
        .fetch_one(&mut *conn)
        .await?;
    // 0 none, 1 full, 2 incremental.
    if mode == 2 {
        return Ok(false);
    }
    tracing::info!(
        auto_vacuum = mode,
        "sqlite file made without incremental vacuum: rewriting it once (VACUUM)"
    );
    sqlx::query("PRAGMA auto_vacuum = INCREMENTAL")
        .execute(&mut *conn)
        .await?;
    sqlx::query("VACUUM").execute(&mut *conn).await?;
    Ok(true)
}

/// The database's size in bytes: SQLite's pages (`page_count × page_size`), or PostgreSQL's
/// `pg_database_size`.
pub(crate) async fn database_bytes(db: &Db) -> Result<u64, sqlx::Error> {
    let bytes: i64 = match db {
        Db::Sqlite(pool, _) => {
            sqlx::query_scalar(
                "SELECT p.page_count * s.page_size FROM pragma_page_count() p, \
                 pragma_page_size() s",
            )
            .fetch_one(pool)
            .await?
        }
        Db::Postgres(pool, _) => {
            sqlx::query_scalar("SELECT pg_database_size(current_database())")
                .fetch_one(pool)
                .await?
        }
    };
    Ok(bytes.max(0) as u64)
}

/// SQLite's bytes in use: its pages less those on the free list.
async fn sqlite_used_bytes(pool: &sqlx::SqlitePool) -> Result<u64, sqlx::Error> {
    let bytes: i64 = sqlx::query_scalar(
        "SELECT (p.page_count - f.freelist_count) * s.page_size FROM pragma_page_count() p, \
         pragma_freelist_count() f, pragma_page_size() s",
    )
    .fetch_one(pool)
    .await?;
    Ok(bytes.max(0) as u64)
}

/// The `before_ms` that prunes all but the newest `keep` finished tasks (a few fewer when
/// several finished in the same millisecond), or `None` when no more than `keep` are.
pub(crate) async fn cutoff_keeping(db: &Db, keep: u64) -> Result<Option<i64>, sqlx::Error> {
    let sql = "SELECT finished_at_ms FROM tasks WHERE finished_at_ms IS NOT NULL \
               ORDER BY finished_at_ms DESC LIMIT 1 OFFSET $1";
    let keep = i64::try_from(keep).unwrap_or(i64::MAX);
    let at: Option<i64> = match db {
        Db::Sqlite(pool, _) => {
            sqlx::query_scalar(sql)
                .bind(keep)
                .fetch_optional(pool)
                .await?
        }
        Db::Postgres(pool, _) => {
            sqlx::query_scalar(sql)
                .bind(keep)
                .fetch_optional(pool)
                .await?
        }
    };
    Ok(at.map(|t| t.saturating_add(1)))
}

/// How many finished tasks to delete so that an SQLite file over `max_bytes` comes back
/// under it: the excess over 90 % of the bound, in tasks of the file's average size.
/// Returns the `before_ms` to prune with, or `None` when the file is within its bound.
pub(crate) async fn cutoff_for_size(db: &Db, max_bytes: u64) -> Result<Option<i64>, sqlx::Error> {
    let Db::Sqlite(pool, _) = db else {
        return Ok(None);
    };
    let used = sqlite_used_bytes(pool).await?;
    if used <= max_bytes {
        return Ok(None);
    }
    let (tasks, finished): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(finished_at_ms) FROM tasks")
            .fetch_one(pool)
            .await?;
    let per_task = (used / (tasks.max(1) as u64)).max(1);
    let target = max_bytes / 100 * SIZE_TARGET_PERCENT;
    let excess = (used - target).div_ceil(per_task);
    let keep = (finished.max(0) as u64).saturating_sub(excess);
    tracing::info!(used, max_bytes, tasks, excess, "store over its size bound");
    cutoff_keeping(db, keep).await
}

/// Gives SQLite's free pages back to the file system.
pub(crate) async fn give_back(db: &Db) -> Result<(), sqlx::Error> {
    if let Db::Sqlite(pool, _) = db {
        sqlx::query("PRAGMA incremental_vacuum")
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// Free and total bytes of the file system holding `path`, where the platform tells.
pub(crate) fn disk_space(path: &Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let s = rustix::fs::statvfs(dir).ok()?;
        Some((
            s.f_bavail.saturating_mul(s.f_frsize),
            s.f_blocks.saturating_mul(s.f_frsize),
        ))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Applies retention (age, count, size), gives freed space back, and measures the
/// database and its disk, warning when either runs short.
pub(crate) async fn apply(db: &Db, r: &Retention, stats: &WriterStats) {
    let mut cutoffs = Vec::new();
    if let Some(age) = r.age {
        let cutoff = SystemTime::now()
            .checked_sub(age)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        cutoffs.push(("age", Ok(Some(ms(cutoff)))));
    }
    if let Some(max) = r.max_tasks {
        cutoffs.push(("count", cutoff_keeping(db, max).await));
    }
    if let Some(max) = r.max_bytes {
        cutoffs.push(("size", cutoff_for_size(db, max).await));
    }
    let mut pruned = 0;
    for (bound, cutoff) in cutoffs {
        let result = match cutoff {
            Ok(Some(before_ms)) => db.prune(before_ms).await,
            Ok(None) => Ok(0),
            Err(e) => Err(e),
        };
        match result {
            Ok(0) => {}
            Ok(n) => {
                pruned += n;
                stats.pruned.fetch_add(n, Ordering::Relaxed);
                tracing::info!(tasks = n, bound, "pruned finished tasks past retention");
            }
            Err(e) => tracing::warn!(error = %e, bound, "pruning finished tasks failed"),
        }
    }
    if pruned > 0 {
        if let Err(e) = give_back(db).await {
            tracing::warn!(error = %e, "giving freed pages back failed");
        }
    }
    measure(db, r, stats).await;
}

/// Measures the database and its disk into the stats, warning when the database nears its
/// byte bound or the disk runs low.
async fn measure(db: &Db, r: &Retention, stats: &WriterStats) {
    match database_bytes(db).await {
        Ok(bytes) => {
            stats.database_bytes.store(bytes, Ordering::Relaxed);
            if let Some(max) = r.max_bytes {
                if bytes >= max / 100 * SIZE_WARN_PERCENT {
                    tracing::warn!(
                        database_bytes = bytes,
                        max_bytes = max,
                        "store database past {}% of retention_max_bytes",
                        SIZE_WARN_PERCENT
                    );
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "measuring the database size failed"),
    }
    if let Some((free, total)) = r.path.as_deref().and_then(disk_space) {
        stats.disk_free_bytes.store(free, Ordering::Relaxed);
        if total > 0 && free < total / 100 * LOW_DISK_PERCENT {
            tracing::warn!(
                disk_free_bytes = free,
                disk_bytes = total,
                "disk under the store is below {}% free",
                LOW_DISK_PERCENT
            );
        }
    }
}
