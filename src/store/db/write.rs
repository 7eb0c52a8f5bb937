//! One batch of changes in one transaction: new tasks (those whose idempotency key another
//! task holds are left out and reported), task states, attempts, registry rows and
//! heartbeats.

use std::collections::HashMap;

use sqlx::{QueryBuilder, Row};

use super::{chunks, BeginWrite, Db, TASK_COLUMNS};
use crate::store::pending::Batch;
use crate::store::rows::{NewTask, TaskState};
use crate::store::text;
use crate::task::TaskId;

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

impl Db {
    /// Writes one batch in one transaction. Returns the new tasks left out because another
    /// task holds their idempotency key.
    pub(crate) async fn write(&self, batch: &Batch) -> Result<Vec<KeyTaken>, sqlx::Error> {
        on_pool!(self, |pool, DB| write_batch!(pool, DB, batch))
    }
}
