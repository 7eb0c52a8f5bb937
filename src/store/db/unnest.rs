//! PostgreSQL's way of writing many task and attempt rows: one array per column, taken
//! apart by `UNNEST`, so that a statement carries up to [`ROWS`] rows with one bound
//! parameter per column (a multi-row `VALUES` binds one per cell, and PostgreSQL allows
//! 65,535 per statement), its SQL is the same whatever the row count (prepared once per
//! connection), and the server plans it once instead of once per 256-row chunk.

use std::borrow::Cow;
use std::collections::HashMap;

use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};

use super::write::{KeyTaken, INSERT_TASK, ON_TASK_CONFLICT, SET_TASK_STATE, UPSERT_ATTEMPTS};
use super::{chunks, BeginWrite, Fence};
use crate::store::pending::Batch;
use crate::store::rows::{AttemptRow, NewTask, TaskState};
use crate::store::text;
use crate::task::TaskId;

/// Rows per statement: large enough that a commit of 10,000 tasks is a few statements,
/// small enough that one statement's message stays a few megabytes with small payloads.
const ROWS: usize = 4096;

/// The tasks' state columns as `v`, from arrays `$1` to `$9`.
const STATES: &str = "UNNEST($1::uuid[], $2::text[], $3::int8[], $4::int8[], $5::int8[], \
    $6::int8[], $7::bytea[], $8::text[], $9::int8[]) AS v (id, status, retries_used, \
    lease_losses, ready_at_ms, finished_at_ms, result, error, dead_seq)";

/// One array per state column, in the order of [`STATES`].
struct States<'a> {
    id: Vec<uuid::Uuid>,
    status: Vec<&'static str>,
    retries_used: Vec<i64>,
    lease_losses: Vec<i64>,
    ready_at_ms: Vec<Option<i64>>,
    finished_at_ms: Vec<Option<i64>>,
    result: Vec<Option<&'a [u8]>>,
    error: Vec<Option<Cow<'a, str>>>,
    dead_seq: Vec<Option<i64>>,
}

impl<'a> States<'a> {
    fn of<'s: 'a>(rows: impl ExactSizeIterator<Item = &'s TaskState>) -> Self {
        let n = rows.len();
        let mut v = Self {
            id: Vec::with_capacity(n),
            status: Vec::with_capacity(n),
            retries_used: Vec::with_capacity(n),
            lease_losses: Vec::with_capacity(n),
            ready_at_ms: Vec::with_capacity(n),
            finished_at_ms: Vec::with_capacity(n),
            result: Vec::with_capacity(n),
            error: Vec::with_capacity(n),
            dead_seq: Vec::with_capacity(n),
        };
        for s in rows {
            v.id.push(s.id.as_uuid());
            v.status.push(s.status.as_str());
            v.retries_used.push(s.retries_used);
            v.lease_losses.push(s.lease_losses);
            v.ready_at_ms.push(s.ready_at_ms);
            v.finished_at_ms.push(s.finished_at_ms);
            v.result.push(s.result.as_ref().map(|r| r.as_bytes()));
            v.error.push(text::message(s.error.as_deref()));
            v.dead_seq.push(s.dead_seq);
        }
        v
    }
}

/// Writes `batch` in one transaction that passes `fence` first. Returns the new tasks left
/// out because another task holds their idempotency key.
pub(super) async fn write(
    pool: &PgPool,
    fence: &Fence,
    batch: &Batch,
) -> Result<Vec<KeyTaken>, sqlx::Error> {
    let mut tx = pool.begin_fenced(Some(fence)).await?;
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
    let stored_keys: Vec<Cow<'_, str>> = keys.iter().map(|k| text::without_nul(k)).collect();
    for (key, id) in key_holders(&mut tx, &stored_keys).await? {
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
    insert_tasks(&mut tx, &inserts).await?;
    update_tasks(&mut tx, &batch.updates).await?;
    // Only attempts of stored tasks: a task whose submit was refused (or whose key was
    // taken) may still report an attempt, and its row would belong to nothing.
    upsert_attempts(&mut tx, &batch.attempts).await?;
    for w in &batch.workers {
        let mut qb = QueryBuilder::<Postgres>::new("");
        push_worker!(qb, w);
        qb.build().execute(&mut *tx).await?;
    }
    for n in &batch.nodes {
        let mut qb = QueryBuilder::<Postgres>::new("");
        push_node!(qb, n);
        qb.build().execute(&mut *tx).await?;
    }
    for (ids, at_ms) in &batch.heartbeats {
        for chunk in chunks(ids) {
            let mut qb = QueryBuilder::<Postgres>::new("");
            push_heartbeat!(qb, chunk, *at_ms);
            qb.build().execute(&mut *tx).await?;
        }
    }
    for chunk in chunks(&batch.workflows.runs) {
        let mut qb = QueryBuilder::<Postgres>::new("");
        push_runs!(qb, chunk);
        qb.build().execute(&mut *tx).await?;
    }
    for chunk in chunks(&batch.workflows.events) {
        let mut qb = QueryBuilder::<Postgres>::new("");
        push_events!(qb, chunk);
        qb.build().execute(&mut *tx).await?;
    }
    tx.commit().await.map(|()| taken)
}

/// The stored tasks holding these idempotency keys (as stored): (key, task id).
async fn key_holders(
    conn: &mut PgConnection,
    keys: &[Cow<'_, str>],
) -> Result<Vec<(String, uuid::Uuid)>, sqlx::Error> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as("SELECT idempotency_key, id FROM tasks WHERE idempotency_key = ANY($1)")
        .bind(keys)
        .fetch_all(&mut *conn)
        .await
}

/// Inserts new tasks with their latest state; a task already stored (a retried commit that
/// had landed) takes the latest state instead.
async fn insert_tasks(
    conn: &mut PgConnection,
    rows: &[&(NewTask, TaskState)],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "{INSERT_TASK}SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::bytea[], \
         $4::text[], $5::text[], $6::int8[], $7::int8[], $8::int8[], $9::int8[], \
         $10::int8[], $11::bytea[], $12::text[], $13::int8[], $14::int8[], $15::text[])\
         {ON_TASK_CONFLICT}"
    );
    for chunk in rows.chunks(ROWS) {
        let s = States::of(chunk.iter().map(|(_, s)| s));
        let mut task_type = Vec::with_capacity(chunk.len());
        let mut payload = Vec::with_capacity(chunk.len());
        let mut options = Vec::with_capacity(chunk.len());
        let mut created_at_ms = Vec::with_capacity(chunk.len());
        let mut priority = Vec::with_capacity(chunk.len());
        let mut key = Vec::with_capacity(chunk.len());
        for (t, _) in chunk.iter().copied() {
            task_type.push(text::without_nul(&t.task_type));
            payload.push(t.payload.as_bytes());
            options.push(text::without_nul(&t.options));
            created_at_ms.push(t.created_at_ms);
            priority.push(t.priority);
            key.push(t.idempotency_key.as_deref().map(text::without_nul));
        }
        sqlx::query(&sql)
            .bind(s.id)
            .bind(task_type)
            .bind(payload)
            .bind(options)
            .bind(s.status)
            .bind(s.retries_used)
            .bind(s.lease_losses)
            .bind(created_at_ms)
            .bind(s.ready_at_ms)
            .bind(s.finished_at_ms)
            .bind(s.result)
            .bind(s.error)
            .bind(s.dead_seq)
            .bind(priority)
            .bind(key)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Writes the latest state of stored tasks.
async fn update_tasks(conn: &mut PgConnection, rows: &[TaskState]) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let sql = format!("WITH v AS (SELECT * FROM {STATES}) {SET_TASK_STATE}");
    for chunk in rows.chunks(ROWS) {
        let s = States::of(chunk.iter());
        sqlx::query(&sql)
            .bind(s.id)
            .bind(s.status)
            .bind(s.retries_used)
            .bind(s.lease_losses)
            .bind(s.ready_at_ms)
            .bind(s.finished_at_ms)
            .bind(s.result)
            .bind(s.error)
            .bind(s.dead_seq)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Inserts or rewrites attempts, leaving out those whose task is not stored.
async fn upsert_attempts(conn: &mut PgConnection, rows: &[AttemptRow]) -> Result<(), sqlx::Error> {
    let sql = format!(
        "WITH v AS (SELECT * FROM UNNEST($1::uuid[], $2::int8[], $3::text[], $4::text[], \
         $5::int8[], $6::int8[], $7::text[], $8::text[]) AS v (task_id, number, worker, \
         node, started_at_ms, finished_at_ms, outcome, error)) {UPSERT_ATTEMPTS}"
    );
    for chunk in rows.chunks(ROWS) {
        let mut task_id = Vec::with_capacity(chunk.len());
        let mut number = Vec::with_capacity(chunk.len());
        let mut worker = Vec::with_capacity(chunk.len());
        let mut node = Vec::with_capacity(chunk.len());
        let mut started_at_ms = Vec::with_capacity(chunk.len());
        let mut finished_at_ms = Vec::with_capacity(chunk.len());
        let mut outcome = Vec::with_capacity(chunk.len());
        let mut error = Vec::with_capacity(chunk.len());
        for a in chunk {
            task_id.push(a.task_id.as_uuid());
            number.push(a.number);
            worker.push(text::name(&a.worker));
            node.push(text::name(&a.node));
            started_at_ms.push(a.started_at_ms);
            finished_at_ms.push(a.finished_at_ms);
            outcome.push(text::message(a.outcome.as_deref()));
            error.push(text::message(a.error.as_deref()));
        }
        sqlx::query(&sql)
            .bind(task_id)
            .bind(number)
            .bind(worker)
            .bind(node)
            .bind(started_at_ms)
            .bind(finished_at_ms)
            .bind(outcome)
            .bind(error)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
