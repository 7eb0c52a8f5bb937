//! Reading tasks back: every unfinished one at recovery, one by id, a page of a listing
//! (each with its attempts), and the counts and registry rows the API shows.

use std::collections::HashMap;

use sqlx::{QueryBuilder, Row};

use super::{chunks, Db, TASK_COLUMNS, UNFINISHED};
use crate::store::rows::{AttemptRow, StoredTask};
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

impl Db {
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
