//! The two databases behind one type. The SQL is shared: both backends take multi-row
//! `VALUES`, `ON CONFLICT` and `WITH ... UPDATE ... FROM`; the macros below expand the same
//! statements once per backend, so only connecting and migrating differ.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{PgPool, QueryBuilder, Row, SqlitePool};

use super::pending::Batch;
use super::rows::{AttemptRow, NewTask, StoredTask, TaskState};
use super::text;
use super::{StoreConfig, StoreError};
use crate::task::TaskId;

/// Reads `SELECT {TASK_COLUMNS}` rows. A row whose id does not decode cannot be marked
/// anywhere, so it is logged and skipped.
macro_rules! read_tasks {
    ($rows:expr) => {{
        let mut out = Vec::new();
        for row in $rows {
            let id: uuid::Uuid = match row.try_get(0) {
                Ok(id) => id,
                Err(e) => {
                    tracing::error!(error = %e, "stored task with an unreadable id skipped");
                    continue;
                }
            };
            let read = || -> Result<StoredTask, sqlx::Error> {
                Ok(StoredTask {
                    id: TaskId::from_uuid(id),
                    task_type: row.try_get(1)?,
                    payload: row.try_get(2)?,
                    options: row.try_get(3)?,
                    status: row.try_get(4)?,
                    retries_used: row.try_get(5)?,
                    lease_losses: row.try_get(6)?,
                    created_at_ms: row.try_get(7)?,
                    ready_at_ms: row.try_get(8)?,
                    finished_at_ms: row.try_get(9)?,
                    result: row.try_get(10)?,
                    error: row.try_get(11)?,
                    dead_seq: row.try_get(12)?,
                    attempts: Vec::new(),
                })
            };
            match read() {
                Ok(t) => out.push(t),
                // A column of the wrong type: keep the task, flagged by a status that will
                // not parse, so recovery marks it failed with this reason.
                Err(e) => out.push(StoredTask {
                    id: TaskId::from_uuid(id),
                    task_type: String::new(),
                    payload: Vec::new(),
                    options: String::new(),
                    status: format!("unreadable row: {e}"),
                    retries_used: 0,
                    lease_losses: 0,
                    created_at_ms: 0,
                    ready_at_ms: None,
                    finished_at_ms: None,
                    result: None,
                    error: None,
                    dead_seq: None,
                    attempts: Vec::new(),
                }),
            }
        }
        out
    }};
}

macro_rules! read_attempts {
    ($rows:expr) => {{
        let mut out = Vec::new();
        for row in $rows {
            let id: uuid::Uuid = row.try_get(0)?;
            let worker: String = row.try_get(2)?;
            let node: String = row.try_get(3)?;
            out.push(AttemptRow {
                task_id: TaskId::from_uuid(id),
                number: row.try_get(1)?,
                worker: worker.into(),
                node: node.into(),
                started_at_ms: row.try_get(4)?,
                finished_at_ms: row.try_get(5)?,
                outcome: row.try_get(6)?,
                error: row.try_get(7)?,
            });
        }
        out
    }};
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
}

impl BeginWrite for sqlx::SqlitePool {
    type Backend = sqlx::Sqlite;

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl BeginWrite for sqlx::PgPool {
    type Backend = sqlx::Postgres;

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.begin().await
    }
}

/// Writes a [`Batch`] in one transaction on `$pool` (a pool of backend `$db`).
macro_rules! write_batch {
    ($pool:expr, $db:ty, $batch:expr) => {{
        let batch: &Batch = $batch;
        let mut tx = BeginWrite::begin_write($pool).await?;
        // A new task whose idempotency key another task holds (stored, or older in this
        // batch) cannot be stored: `ON CONFLICT DO NOTHING` would drop it without a word
        // while its submit is answered as committed. Such tasks are left out here and
        // reported, so the writer can answer with the task that holds the key.
        let mut holders: HashMap<&str, TaskId> = HashMap::new();
        let keys: Vec<&str> = batch
            .inserts
            .iter()
            .filter_map(|(t, _)| t.idempotency_key.as_deref())
            .collect();
        // Keys as stored (NUL replaced), so that lookups match what inserts wrote.
        let stored_keys: Vec<std::borrow::Cow<'_, str>> =
            keys.iter().map(|k| text::without_nul(k)).collect();
        for chunk in chunks(&keys) {
            let mut qb = QueryBuilder::<$db>::new(
                "SELECT idempotency_key, id FROM tasks WHERE idempotency_key IN (",
            );
            let mut list = qb.separated(", ");
            for k in chunk {
                list.push_bind(text::without_nul(k));
            }
            qb.push(")");
            for row in qb.build().fetch_all(&mut *tx).await? {
                let key: String = row.try_get(0)?;
                let id: uuid::Uuid = row.try_get(1)?;
                if let Some(i) = stored_keys.iter().position(|k| *k == key) {
                    holders.insert(keys[i], TaskId::from_uuid(id));
                }
            }
        }
        let mut taken = Vec::new();
        // Oldest first (the batch is sorted by id), so within a batch the first task made
        // with a key keeps it.
        let inserts: Vec<&(NewTask, TaskState)> = batch
            .inserts
            .iter()
            .filter(|(t, _)| {
                let Some(key) = t.idempotency_key.as_deref() else {
                    return true;
                };
                match holders.get(key) {
                    Some(&holder) if holder != t.id => {
                        taken.push(KeyTaken { task: t.id, holder });
                        false
                    }
                    Some(_) => true,
                    None => {
                        holders.insert(key, t.id);
                        true
                    }
                }
            })
            .collect();
        for chunk in chunks(&inserts) {
            let mut qb = QueryBuilder::<$db>::new(format!(
                "INSERT INTO tasks ({TASK_COLUMNS}, priority, idempotency_key) "
            ));
            qb.push_values(chunk, |mut b, (t, s)| {
                b.push_bind(t.id.as_uuid())
                    .push_bind(text::without_nul(&t.task_type))
                    .push_bind(t.payload.as_bytes())
                    .push_bind(text::without_nul(&t.options))
                    .push_bind(s.status.as_str())
                    .push_bind(s.retries_used)
                    .push_bind(s.lease_losses)
                    .push_bind(t.created_at_ms)
                    .push_bind(s.ready_at_ms)
                    .push_bind(s.finished_at_ms)
                    .push_bind(s.result.as_ref().map(|r| r.as_bytes()))
                    .push_bind(text::message(s.error.as_deref()))
                    .push_bind(s.dead_seq)
                    .push_bind(t.priority)
                    .push_bind(t.idempotency_key.as_deref().map(text::without_nul));
            });
            // A retried batch meets the rows of a commit that landed though the client saw
            // it fail (the connection dropped after the server committed): the latest
            // state wins, so a task finished since is not left stored as `queued`. Keys
            // held by other tasks were left out above.
            qb.push(
                " ON CONFLICT (id) DO UPDATE SET status = excluded.status, \
                 retries_used = excluded.retries_used, lease_losses = excluded.lease_losses, \
                 ready_at_ms = excluded.ready_at_ms, finished_at_ms = excluded.finished_at_ms, \
                 result = excluded.result, error = excluded.error, dead_seq = excluded.dead_seq",
            );
            qb.build().execute(&mut *tx).await?;
        }
        for chunk in chunks(&batch.updates) {
            let mut qb = QueryBuilder::<$db>::new(
                "WITH v (id, status, retries_used, lease_losses, ready_at_ms, finished_at_ms, \
                 result, error, dead_seq) AS (",
            );
            qb.push_values(chunk, |mut b, s| {
                b.push_bind(s.id.as_uuid())
                    .push_bind(s.status.as_str())
                    .push_bind(s.retries_used)
                    .push_bind(s.lease_losses)
                    .push_bind(s.ready_at_ms)
                    .push_bind(s.finished_at_ms)
                    .push_bind(s.result.as_ref().map(|r| r.as_bytes()))
                    .push_bind(text::message(s.error.as_deref()))
                    .push_bind(s.dead_seq);
            });
            // The `IN` makes SQLite drive the update from the id index; with the join
            // alone its planner scans the whole table once per statement.
            qb.push(
                ") UPDATE tasks SET status = v.status, retries_used = v.retries_used, \
                 lease_losses = v.lease_losses, ready_at_ms = v.ready_at_ms, \
                 finished_at_ms = v.finished_at_ms, result = v.result, error = v.error, \
                 dead_seq = v.dead_seq FROM v WHERE tasks.id = v.id \
                 AND tasks.id IN (SELECT id FROM v)",
            );
            qb.build().execute(&mut *tx).await?;
        }
        // Only attempts of stored tasks: a task whose submit was refused (or whose key
        // was taken) may still report an attempt, and its row would belong to nothing.
        for chunk in chunks(&batch.attempts) {
            let mut qb = QueryBuilder::<$db>::new(
                "WITH v (task_id, number, worker, node, started_at_ms, finished_at_ms, \
                 outcome, error) AS (",
            );
            qb.push_values(chunk, |mut b, a| {
                b.push_bind(a.task_id.as_uuid())
                    .push_bind(a.number)
                    .push_bind(text::name(&a.worker))
                    .push_bind(text::name(&a.node))
                    .push_bind(a.started_at_ms)
                    .push_bind(a.finished_at_ms)
                    .push_bind(text::message(a.outcome.as_deref()))
                    .push_bind(text::message(a.error.as_deref()));
            });
            qb.push(
                ") INSERT INTO attempts (task_id, number, worker, node, started_at_ms, \
                 finished_at_ms, outcome, error) SELECT task_id, number, worker, node, \
                 started_at_ms, finished_at_ms, outcome, error FROM v \
                 WHERE EXISTS (SELECT 1 FROM tasks t WHERE t.id = v.task_id) \
                 ON CONFLICT (task_id, number) DO UPDATE SET worker = excluded.worker, \
                 node = excluded.node, started_at_ms = excluded.started_at_ms, \
                 finished_at_ms = excluded.finished_at_ms, outcome = excluded.outcome, \
                 error = excluded.error",
            );
            qb.build().execute(&mut *tx).await?;
        }
        for w in &batch.workers {
            let sql = if w.status == "active" {
                "INSERT INTO workers (id, node, labels, task_types, status, registered_at_ms, \
                 heartbeat_at_ms) VALUES ($1, $2, $3, $4, 'active', $5, $5) \
                 ON CONFLICT (id) DO UPDATE SET node = excluded.node, labels = excluded.labels, \
                 task_types = excluded.task_types, status = 'active', \
                 registered_at_ms = excluded.registered_at_ms, \
                 heartbeat_at_ms = excluded.heartbeat_at_ms, deregistered_at_ms = NULL"
            } else {
                "INSERT INTO workers (id, node, labels, task_types, status, registered_at_ms, \
                 heartbeat_at_ms, deregistered_at_ms) VALUES ($1, $2, $3, $4, 'deregistered', \
                 $5, $5, $5) ON CONFLICT (id) DO UPDATE SET status = 'deregistered', \
                 deregistered_at_ms = excluded.deregistered_at_ms"
            };
            sqlx::query(sql)
                .bind(text::name(&w.id))
                .bind(text::name(&w.node))
                .bind(text::name(&w.labels))
                .bind(text::name(&w.task_types))
                .bind(w.at_ms)
                .execute(&mut *tx)
                .await?;
        }
        for n in &batch.nodes {
            let sql = if n.status == "active" {
                "INSERT INTO nodes (id, address, labels, status, registered_at_ms, \
                 heartbeat_at_ms) VALUES ($1, $2, $3, 'active', $4, $4) \
                 ON CONFLICT (id) DO UPDATE SET address = excluded.address, \
                 labels = excluded.labels, status = 'active', \
                 registered_at_ms = excluded.registered_at_ms, \
                 heartbeat_at_ms = excluded.heartbeat_at_ms, deregistered_at_ms = NULL"
            } else {
                "INSERT INTO nodes (id, address, labels, status, registered_at_ms, \
                 heartbeat_at_ms, deregistered_at_ms) VALUES ($1, $2, $3, 'deregistered', \
                 $4, $4, $4) ON CONFLICT (id) DO UPDATE SET status = 'deregistered', \
                 deregistered_at_ms = excluded.deregistered_at_ms"
            };
            sqlx::query(sql)
                .bind(text::name(&n.id))
                .bind(n.address.as_deref().map(text::name))
                .bind(text::name(&n.labels))
                .bind(n.at_ms)
                .execute(&mut *tx)
                .await?;
        }
        for (ids, at_ms) in &batch.heartbeats {
            for chunk in chunks(&ids) {
                let mut qb = QueryBuilder::<$db>::new("UPDATE workers SET heartbeat_at_ms = ");
                qb.push_bind(*at_ms);
                qb.push(" WHERE status = 'active' AND id IN (");
                let mut list = qb.separated(", ");
                for id in chunk {
                    list.push_bind(text::name(id));
                }
                qb.push(")");
                qb.build().execute(&mut *tx).await?;
            }
        }
        tx.commit().await.map(|()| taken)
    }};
}

/// A new task not stored because another task holds its idempotency key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyTaken {
    /// The task left out.
    pub(crate) task: TaskId,
    /// The task holding the key.
    pub(crate) holder: TaskId,
}

/// Runs `$body` once per backend: `$pool` is the pool and `$db` its sqlx database type, so
/// one body serves SQLite and PostgreSQL.
macro_rules! on_pool {
    ($self:expr, |$pool:ident, $db:ident| $body:expr) => {
        match $self {
            Db::Sqlite($pool) => {
                #[allow(dead_code)]
                type $db = sqlx::Sqlite;
                $body
            }
            Db::Postgres($pool) => {
                #[allow(dead_code)]
                type $db = sqlx::Postgres;
                $body
            }
        }
    };
}

/// A connected database.
#[derive(Clone, Debug)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
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
    pub(crate) async fn connect(config: &StoreConfig) -> Result<Self, StoreError> {
        let url = config.url.as_str();
        let unreachable = |e: sqlx::Error| StoreError::Unreachable {
            url: redact(url),
            reason: e.to_string(),
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url).map_err(|e| StoreError::BadUrl {
                url: redact(url),
                reason: e.to_string(),
            })?;
            probe::<sqlx::PgConnection>(&options, config.connect_timeout)
                .await
                .map_err(unreachable)?;
            let pool = PgPoolOptions::new()
                .max_connections(config.max_connections)
                .acquire_timeout(config.connect_timeout)
                .connect_with(options)
                .await
                .map_err(unreachable)?;
            Ok(Self::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| StoreError::BadUrl {
                    url: redact(url),
                    reason: e.to_string(),
                })?
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
                .pragma("cache_size", "-65536");
            probe::<sqlx::SqliteConnection>(&options, config.connect_timeout)
                .await
                .map_err(unreachable)?;
            let pool = SqlitePoolOptions::new()
                .max_connections(config.max_connections)
                .acquire_timeout(config.connect_timeout)
                .connect_with(options)
                .await
                .map_err(unreachable)?;
            Ok(Self::Sqlite(pool))
        } else {
            Err(StoreError::BadUrl {
                url: redact(url),
                reason: "expected sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DB".into(),
            })
        }
    }

    /// `sqlite` or `postgres`.
    pub(crate) fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    pub(crate) async fn close(&self) {
        on_pool!(self, |pool, _DB| pool.close().await)
    }

    /// Writes one batch in one transaction. Returns the new tasks left out because another
    /// task holds their idempotency key.
    pub(crate) async fn write(&self, batch: &Batch) -> Result<Vec<KeyTaken>, sqlx::Error> {
        on_pool!(self, |pool, DB| write_batch!(pool, DB, batch))
    }

    /// Every task not finished, and every dead letter, with their attempts.
    pub(crate) async fn load_live(&self) -> Result<Vec<StoredTask>, sqlx::Error> {
        let tasks = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE {UNFINISHED} OR dead_seq IS NOT NULL \
             ORDER BY id"
        );
        let attempts =
            "SELECT a.task_id, a.number, a.worker, a.node, a.started_at_ms, a.finished_at_ms, \
             a.outcome, a.error FROM attempts a JOIN tasks t ON t.id = a.task_id \
             WHERE t.finished_at_ms IS NULL OR t.dead_seq IS NOT NULL ORDER BY a.task_id, a.number";
        let (tasks, attempts) = on_pool!(self, |pool, _DB| (
            read_tasks!(sqlx::query(&tasks).fetch_all(pool).await?),
            read_attempts!(sqlx::query(attempts).fetch_all(pool).await?),
        ));
        Ok(join(tasks, attempts))
    }

    /// One task with its attempts.
    pub(crate) async fn get(&self, id: TaskId) -> Result<Option<StoredTask>, sqlx::Error> {
        let tasks = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1");
        let attempts = "SELECT task_id, number, worker, node, started_at_ms, finished_at_ms, \
                        outcome, error FROM attempts WHERE task_id = $1 ORDER BY number";
        let id = id.as_uuid();
        let (tasks, attempts) = on_pool!(self, |pool, _DB| (
            read_tasks!(sqlx::query(&tasks).bind(id).fetch_all(pool).await?),
            read_attempts!(sqlx::query(attempts).bind(id).fetch_all(pool).await?),
        ));
        Ok(join(tasks, attempts).pop())
    }

    /// A page of tasks with their attempts: those with `status` and `task_type` (any when
    /// `None`), past the cursor `after` in id order (newest first when `newest_first`).
    pub(crate) async fn list(
        &self,
        status: Option<&str>,
        task_type: Option<&str>,
        after: Option<TaskId>,
        limit: usize,
        newest_first: bool,
    ) -> Result<Vec<StoredTask>, sqlx::Error> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        on_pool!(self, |pool, DB| {
            let mut qb =
                QueryBuilder::<DB>::new(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE TRUE"));
            if let Some(status) = status {
                qb.push(" AND status = ").push_bind(status);
            }
            if let Some(task_type) = task_type {
                qb.push(" AND task_type = ").push_bind(task_type);
            }
            if let Some(after) = after {
                qb.push(if newest_first {
                    " AND id < "
                } else {
                    " AND id > "
                })
                .push_bind(after.as_uuid());
            }
            qb.push(if newest_first {
                " ORDER BY id DESC LIMIT "
            } else {
                " ORDER BY id LIMIT "
            })
            .push_bind(limit);
            let tasks = read_tasks!(qb.build().fetch_all(pool).await?);
            let mut attempts = Vec::new();
            let ids: Vec<uuid::Uuid> = tasks.iter().map(|t| t.id.as_uuid()).collect();
            for chunk in chunks(&ids) {
                let mut qb = QueryBuilder::<DB>::new(
                    "SELECT task_id, number, worker, node, started_at_ms, finished_at_ms, \
                         outcome, error FROM attempts WHERE task_id IN (",
                );
                let mut list = qb.separated(", ");
                for id in chunk {
                    list.push_bind(*id);
                }
                qb.push(") ORDER BY task_id, number");
                attempts.extend(read_attempts!(qb.build().fetch_all(pool).await?));
            }
            Ok(join(tasks, attempts))
        })
    }

    /// The tasks already holding these idempotency keys.
    pub(crate) async fn find_keys(
        &self,
        keys: &[&str],
    ) -> Result<HashMap<String, TaskId>, sqlx::Error> {
        let mut found = HashMap::new();
        for chunk in chunks(keys) {
            on_pool!(self, |pool, DB| {
                let mut qb = QueryBuilder::<DB>::new(
                    "SELECT idempotency_key, id FROM tasks WHERE idempotency_key IN (",
                );
                let mut list = qb.separated(", ");
                for k in chunk {
                    list.push_bind(text::without_nul(k));
                }
                qb.push(")");
                for row in qb.build().fetch_all(pool).await? {
                    let key: String = row.try_get(0)?;
                    let id: uuid::Uuid = row.try_get(1)?;
                    // Answer under the key asked for, which may hold a NUL stored as U+FFFD.
                    let asked = chunk.iter().find(|k| text::without_nul(k) == key);
                    found.insert(asked.map_or(key, |k| k.to_string()), TaskId::from_uuid(id));
                }
            })
        }
        Ok(found)
    }

    /// Deletes finished tasks (not dead letters) that finished before `before_ms`, with
    /// their attempts. Returns how many tasks went.
    pub(crate) async fn prune(&self, before_ms: i64) -> Result<u64, sqlx::Error> {
        let old = "finished_at_ms < $1 AND dead_seq IS NULL";
        match self {
            // The first statement takes the database's write lock, so no commit lands
            // between the two: the tasks deleted are those whose attempts were.
            Db::Sqlite(pool) => {
                let attempts = format!(
                    "DELETE FROM attempts WHERE task_id IN (SELECT id FROM tasks WHERE {old})"
                );
                let tasks = format!("DELETE FROM tasks WHERE {old}");
                let mut tx = pool.begin_write().await?;
                sqlx::query(&attempts)
                    .bind(before_ms)
                    .execute(&mut *tx)
                    .await?;
                let n = sqlx::query(&tasks)
                    .bind(before_ms)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok(n)
            }
            // Under READ COMMITTED a commit between two statements could make a task
            // prunable after its attempts were looked for; one statement deletes exactly
            // the attempts of the tasks it deletes.
            Db::Postgres(pool) => {
                let sql = format!(
                    "WITH gone AS (DELETE FROM tasks WHERE {old} RETURNING id), \
                     a AS (DELETE FROM attempts WHERE task_id IN (SELECT id FROM gone)) \
                     SELECT count(*) FROM gone"
                );
                let n: i64 = sqlx::query_scalar(&sql)
                    .bind(before_ms)
                    .fetch_one(pool)
                    .await?;
                Ok(n.max(0) as u64)
            }
        }
    }

    /// Marks every worker and node still `active` as `lost`: they belonged to a coordinator
    /// that is no longer running. Returns how many workers and nodes that was.
    pub(crate) async fn mark_gone(&self, at_ms: i64) -> Result<(u64, u64), sqlx::Error> {
        let workers = "UPDATE workers SET status = 'lost', deregistered_at_ms = $1 \
                       WHERE status = 'active'";
        let nodes = "UPDATE nodes SET status = 'lost', deregistered_at_ms = $1 \
                     WHERE status = 'active'";
        on_pool!(self, |pool, DB| {
            let w = sqlx::query(workers).bind(at_ms).execute(pool).await?;
            let n = sqlx::query(nodes).bind(at_ms).execute(pool).await?;
            Ok((w.rows_affected(), n.rows_affected()))
        })
    }

    /// Marks a task failed in place (a row that no longer decodes). It leaves the
    /// dead-letter list too: it cannot be re-run, and a dead letter would be loaded (and
    /// marked again) at every start and never pruned; as a plain failed task it falls
    /// under retention.
    pub(crate) async fn fail_task(
        &self,
        id: TaskId,
        error: &str,
        at_ms: i64,
    ) -> Result<(), sqlx::Error> {
        let sql = "UPDATE tasks SET status = 'failed', error = $1, finished_at_ms = $2, \
                   dead_seq = NULL WHERE id = $3";
        let id = id.as_uuid();
        on_pool!(self, |pool, _DB| {
            sqlx::query(sql)
                .bind(text::message(Some(error)))
                .bind(at_ms)
                .bind(id)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(())
    }

    /// Stored tasks by status.
    pub(crate) async fn count_by_status(&self) -> Result<Vec<(String, i64)>, sqlx::Error> {
        self.pairs("SELECT status, COUNT(*) FROM tasks GROUP BY status ORDER BY status")
            .await
    }

    /// Workers (or nodes) by status (`active`, `deregistered`, `lost`).
    pub(crate) async fn registry_rows(
        &self,
        nodes: bool,
    ) -> Result<Vec<(String, String)>, sqlx::Error> {
        self.pairs(if nodes {
            "SELECT id, status FROM nodes ORDER BY id"
        } else {
            "SELECT id, status FROM workers ORDER BY id"
        })
        .await
    }

    /// The rows of a two-column query: a text and a `T`.
    async fn pairs<T>(&self, sql: &'static str) -> Result<Vec<(String, T)>, sqlx::Error>
    where
        T: Send
            + Unpin
            + sqlx::Type<sqlx::Sqlite>
            + sqlx::Type<sqlx::Postgres>
            + for<'r> sqlx::Decode<'r, sqlx::Sqlite>
            + for<'r> sqlx::Decode<'r, sqlx::Postgres>,
    {
        on_pool!(self, |pool, _DB| {
            let mut out = Vec::new();
            for row in sqlx::query(sql).fetch_all(pool).await? {
                out.push((row.try_get(0)?, row.try_get(1)?));
            }
            Ok(out)
        })
    }
}

/// Puts each task's attempts (both lists sorted by task id) into it.
fn join(tasks: Vec<StoredTask>, attempts: Vec<AttemptRow>) -> Vec<StoredTask> {
    let mut by_task: HashMap<TaskId, Vec<AttemptRow>> = HashMap::new();
    for a in attempts {
        by_task.entry(a.task_id).or_default().push(a);
    }
    tasks
        .into_iter()
        .map(|mut t| {
            t.attempts = by_task.remove(&t.id).unwrap_or_default();
            t
        })
        .collect()
}

#[cfg(test)]
mod tests;
