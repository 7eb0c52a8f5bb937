//! Schema migrations: numbered SQL files per backend, embedded in the binary, applied in
//! order and recorded in `wrangle_migrations`. Each runs in its own transaction; on
//! PostgreSQL an advisory lock keeps two coordinators starting at once from racing.

use sqlx::Row;

use super::db::Db;
use super::StoreError;

/// One schema change.
struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "tasks",
        sqlite: include_str!("../../migrations/sqlite/0001_tasks.sql"),
        postgres: include_str!("../../migrations/postgres/0001_tasks.sql"),
    },
    Migration {
        version: 2,
        name: "coordinator_epoch",
        sqlite: include_str!("../../migrations/sqlite/0002_coordinator_epoch.sql"),
        postgres: include_str!("../../migrations/postgres/0002_coordinator_epoch.sql"),
    },
    Migration {
        version: 3,
        name: "workflows",
        sqlite: include_str!("../../migrations/sqlite/0003_workflows.sql"),
        postgres: include_str!("../../migrations/postgres/0003_workflows.sql"),
    },
    Migration {
        version: 4,
        name: "scaling_events",
        sqlite: include_str!("../../migrations/sqlite/0004_scaling_events.sql"),
        postgres: include_str!("../../migrations/postgres/0004_scaling_events.sql"),
    },
    Migration {
        version: 5,
        name: "coordinator_leader",
        sqlite: include_str!("../../migrations/sqlite/0005_coordinator_leader.sql"),
        postgres: include_str!("../../migrations/postgres/0005_coordinator_leader.sql"),
    },
    Migration {
        version: 6,
        name: "coordinator_members",
        sqlite: include_str!("../../migrations/sqlite/0006_coordinator_members.sql"),
        postgres: include_str!("../../migrations/postgres/0006_coordinator_members.sql"),
    },
    Migration {
        version: 7,
        name: "workflow_runs_by_status",
        sqlite: include_str!("../../migrations/sqlite/0007_workflow_runs_by_status.sql"),
        postgres: include_str!("../../migrations/postgres/0007_workflow_runs_by_status.sql"),
    },
];

/// What [`migrate`](super::migrate) did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationReport {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// Versions applied by this run, oldest first (empty when the schema was current).
    pub applied: Vec<i64>,
    /// The schema version now.
    pub version: i64,
}

const TRACKING: &str = "CREATE TABLE IF NOT EXISTS wrangle_migrations (\
    version BIGINT NOT NULL PRIMARY KEY, name TEXT NOT NULL, applied_at_ms BIGINT NOT NULL)";

/// A lock id for `pg_advisory_xact_lock` ("wrangle" in ASCII).
const PG_LOCK: i64 = 0x0077_7261_6e67_6c65;

/// The error of migration `version`.
fn failed(version: i64) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| StoreError::Migration {
        version,
        reason: e.to_string(),
    }
}

const PG_LOCK_SQL: &str = "SELECT pg_advisory_xact_lock($1)";

pub(crate) async fn run(db: &Db) -> Result<MigrationReport, StoreError> {
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    let mut applied = Vec::new();
    macro_rules! apply {
        ($pool:expr, $lock:expr, $sql:ident) => {{
            // Under the lock too: two programs starting at once on a new PostgreSQL
            // database would race `CREATE TABLE IF NOT EXISTS` (one fails on the table's
            // type name).
            let mut tx = $pool.begin().await.map_err(failed(0))?;
            if $lock {
                sqlx::query(PG_LOCK_SQL)
                    .bind(PG_LOCK)
                    .execute(&mut *tx)
                    .await
                    .map_err(failed(0))?;
            }
            sqlx::query(TRACKING)
                .execute(&mut *tx)
                .await
                .map_err(failed(0))?;
            tx.commit().await.map_err(failed(0))?;
            for m in MIGRATIONS {
                let mut tx = $pool.begin().await.map_err(failed(m.version))?;
                if $lock {
                    sqlx::query(PG_LOCK_SQL)
                        .bind(PG_LOCK)
                        .execute(&mut *tx)
                        .await
                        .map_err(failed(m.version))?;
                }
                let current: Option<i64> =
                    sqlx::query("SELECT MAX(version) FROM wrangle_migrations")
                        .fetch_one(&mut *tx)
                        .await
                        .and_then(|row| row.try_get(0))
                        .map_err(failed(m.version))?;
                let current = current.unwrap_or(0);
                if current > known {
                    return Err(StoreError::SchemaTooNew {
                        found: current,
                        known,
                    });
                }
                if current >= m.version {
                    continue;
                }
                // A plain string has no bound arguments, so it may hold several statements.
                sqlx::Executor::execute(&mut *tx, m.$sql)
                    .await
                    .map_err(failed(m.version))?;
                sqlx::query(
                    "INSERT INTO wrangle_migrations (version, name, applied_at_ms) \
                     VALUES ($1, $2, $3)",
                )
                .bind(m.version)
                .bind(m.name)
                .bind(super::rows::ms(std::time::SystemTime::now()))
                .execute(&mut *tx)
                .await
                .map_err(failed(m.version))?;
                tx.commit().await.map_err(failed(m.version))?;
                tracing::info!(version = m.version, name = m.name, "migration applied");
                applied.push(m.version);
            }
        }};
    }
    match db {
        Db::Sqlite(pool, _) => apply!(pool, false, sqlite),
        Db::Postgres(pool, _) => apply!(pool, true, postgres),
    }
    Ok(MigrationReport {
        backend: db.backend(),
        applied,
        version: known,
    })
}
