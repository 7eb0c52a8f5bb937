//! One batch of changes in one transaction: new tasks (those whose idempotency key another
//! task holds are left out and reported), task states, attempts, registry rows and
//! heartbeats.

use std::borrow::Cow;
use std::collections::HashMap;

use sqlx::QueryBuilder;

use super::{chunks, BeginWrite, Db};
use crate::store::pending::Batch;
use crate::store::rows::{AttemptRow, NewTask, TaskState};
use crate::store::text;
use crate::task::TaskId;

/// How one backend writes many task and attempt rows inside a transaction: SQLite with
/// multi-row `VALUES` ([`super::values`]), PostgreSQL with arrays taken apart by `UNNEST`
/// ([`super::unnest`]). Everything else in a batch is written the same way on both.
pub(super) trait WriteRows: sqlx::Database {
    /// The stored tasks holding these idempotency keys (as stored): (key, task id).
    async fn key_holders(
        conn: &mut Self::Connection,
        keys: &[Cow<'_, str>],
    ) -> Result<Vec<(String, uuid::Uuid)>, sqlx::Error>;

    /// Inserts new tasks with their latest state; a task already stored (a retried commit
    /// that had landed) takes the latest state instead.
    async fn insert_tasks(
        conn: &mut Self::Connection,
        rows: &[&(NewTask, TaskState)],
    ) -> Result<(), sqlx::Error>;

    /// Writes the latest state of stored tasks.
    async fn update_tasks(
        conn: &mut Self::Connection,
        rows: &[TaskState],
    ) -> Result<(), sqlx::Error>;

    /// Inserts or rewrites attempts, leaving out those whose task is not stored.
    async fn upsert_attempts(
        conn: &mut Self::Connection,
        rows: &[AttemptRow],
    ) -> Result<(), sqlx::Error>;
}

/// Columns of a new task, in the order both backends bind them.
pub(super) const INSERT_TASK: &str = "INSERT INTO tasks (id, task_type, payload, options, \
    status, retries_used, lease_losses, created_at_ms, ready_at_ms, finished_at_ms, result, \
    error, dead_seq, priority, idempotency_key) ";

/// A retried batch meets the rows of a commit that landed though the client saw it fail
/// (the connection dropped after the server committed): the latest state wins, so a task
/// finished since is not left stored as `queued`. Keys held by other tasks were left out
/// before the insert.
pub(super) const ON_TASK_CONFLICT: &str = " ON CONFLICT (id) DO UPDATE SET \
    status = excluded.status, retries_used = excluded.retries_used, \
    lease_losses = excluded.lease_losses, ready_at_ms = excluded.ready_at_ms, \
    finished_at_ms = excluded.finished_at_ms, result = excluded.result, \
    error = excluded.error, dead_seq = excluded.dead_seq";

/// A task's state from the rows of `v`.
pub(super) const SET_TASK_STATE: &str = "UPDATE tasks SET status = v.status, \
    retries_used = v.retries_used, lease_losses = v.lease_losses, \
    ready_at_ms = v.ready_at_ms, finished_at_ms = v.finished_at_ms, result = v.result, \
    error = v.error, dead_seq = v.dead_seq FROM v WHERE tasks.id = v.id";

/// Attempts from the rows of `v`, those of stored tasks only.
pub(super) const UPSERT_ATTEMPTS: &str = "INSERT INTO attempts (task_id, number, worker, \
    node, started_at_ms, finished_at_ms, outcome, error) SELECT task_id, number, worker, \
    node, started_at_ms, finished_at_ms, outcome, error FROM v \
    WHERE EXISTS (SELECT 1 FROM tasks t WHERE t.id = v.task_id) \
    ON CONFLICT (task_id, number) DO UPDATE SET worker = excluded.worker, \
    node = excluded.node, started_at_ms = excluded.started_at_ms, \
    finished_at_ms = excluded.finished_at_ms, outcome = excluded.outcome, \
    error = excluded.error";

/// Writes a [`Batch`] in one transaction on `$pool` (a pool of backend `$db`).
macro_rules! write_batch {
    ($pool:expr, $db:ty, $batch:expr, $fence:expr) => {{
        let batch: &Batch = $batch;
        let mut tx = BeginWrite::begin_fenced($pool, $fence).await?;
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
        for (key, id) in <$db as WriteRows>::key_holders(&mut *tx, &stored_keys).await? {
            if let Some(i) = stored_keys.iter().position(|k| *k == key) {
                holders.insert(keys[i], TaskId::from_uuid(id));
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
        <$db as WriteRows>::insert_tasks(&mut *tx, &inserts).await?;
        <$db as WriteRows>::update_tasks(&mut *tx, &batch.updates).await?;
        // Only attempts of stored tasks: a task whose submit was refused (or whose key
        // was taken) may still report an attempt, and its row would belong to nothing.
        <$db as WriteRows>::upsert_attempts(&mut *tx, &batch.attempts).await?;
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
        write_workflow_rows!(tx, $db, &batch.workflows);
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

impl Db {
    /// Writes one batch in one transaction. Returns the new tasks left out because another
    /// task holds their idempotency key.
    pub(crate) async fn write(&self, batch: &Batch) -> Result<Vec<KeyTaken>, sqlx::Error> {
        let fence = self.fence().map(|f| &**f);
        on_pool!(self, |pool, DB| write_batch!(pool, DB, batch, fence))
    }
}
