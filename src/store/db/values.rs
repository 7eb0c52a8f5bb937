//! SQLite's way of writing many task and attempt rows: multi-row `VALUES` statements in
//! the few [`CHUNK_SIZES`](super::CHUNK_SIZES), so that each shape is prepared once per
//! connection and reused.

use std::borrow::Cow;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;

use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::chunks;
use super::write::{WriteRows, INSERT_TASK, ON_TASK_CONFLICT, SET_TASK_STATE, UPSERT_ATTEMPTS};
use crate::store::rows::{AttemptRow, NewTask, TaskState};
use crate::store::text;

/// Runs the statement `build` makes of each of `rows`' chunks, in order, building each next
/// one while SQLite runs the one before on its connection's thread: the binding of a
/// chunk's few thousand values (here) and the execution of the previous chunk's (there)
/// overlap instead of taking turns.
async fn run_chunks<'r, T>(
    conn: &mut SqliteConnection,
    rows: &'r [T],
    build: impl Fn(&'r [T]) -> QueryBuilder<'r, Sqlite>,
) -> Result<(), sqlx::Error> {
    let mut chunks = chunks(rows);
    let Some(first) = chunks.next() else {
        return Ok(());
    };
    let mut qb = build(first);
    loop {
        let (done, next) = {
            let mut running = pin!(qb.build().execute(&mut *conn));
            // The first poll hands the statement and its values to the connection's
            // thread; the next chunk is built while it runs.
            let started = poll_fn(|cx| Poll::Ready(running.as_mut().poll(cx))).await;
            let next = chunks.next().map(&build);
            let done = match started {
                Poll::Ready(done) => done,
                Poll::Pending => running.await,
            };
            (done, next)
        };
        done?;
        match next {
            Some(n) => qb = n,
            None => return Ok(()),
        }
    }
}

impl WriteRows for Sqlite {
    async fn key_holders(
        conn: &mut SqliteConnection,
        keys: &[Cow<'_, str>],
    ) -> Result<Vec<(String, uuid::Uuid)>, sqlx::Error> {
        let mut found = Vec::new();
        for chunk in chunks(keys) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "SELECT idempotency_key, id FROM tasks WHERE idempotency_key IN (",
            );
            let mut list = qb.separated(", ");
            for k in chunk {
                list.push_bind(k.as_ref());
            }
            qb.push(")");
            for row in qb.build().fetch_all(&mut *conn).await? {
                found.push((row.try_get(0)?, row.try_get(1)?));
            }
        }
        Ok(found)
    }

    async fn insert_tasks(
        conn: &mut SqliteConnection,
        rows: &[&(NewTask, TaskState)],
    ) -> Result<(), sqlx::Error> {
        run_chunks(conn, rows, |chunk| {
            let mut qb = QueryBuilder::<Sqlite>::new(INSERT_TASK);
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
            qb.push(ON_TASK_CONFLICT);
            qb
        })
        .await
    }

    async fn update_tasks(
        conn: &mut SqliteConnection,
        rows: &[TaskState],
    ) -> Result<(), sqlx::Error> {
        run_chunks(conn, rows, |chunk| {
            let mut qb = QueryBuilder::<Sqlite>::new(
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
            qb.push(") ");
            qb.push(SET_TASK_STATE);
            // The `IN` makes SQLite drive the update from the id index; with the join
            // alone its planner scans the whole table once per statement.
            qb.push(" AND tasks.id IN (SELECT id FROM v)");
            qb
        })
        .await
    }

    async fn upsert_attempts(
        conn: &mut SqliteConnection,
        rows: &[AttemptRow],
    ) -> Result<(), sqlx::Error> {
        run_chunks(conn, rows, |chunk| {
            let mut qb = QueryBuilder::<Sqlite>::new(
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
            qb.push(") ");
            qb.push(UPSERT_ATTEMPTS);
            qb
        })
        .await
    }
}
