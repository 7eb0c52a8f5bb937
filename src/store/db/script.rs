//! SQLite's way of writing a batch: its statements, from `BEGIN IMMEDIATE` to `COMMIT`, go
//! to the connection's thread as one script (SQLite prepares a string of several statements
//! and runs them in order), so a batch the size of a workflow step's round (a task's new
//! state and attempt, the next step's task, the run's row and events) costs one hand-off
//! between threads instead of one per statement (on the development machine a hand-off
//! costs about 12 µs in a tight loop and 50–300 µs while other threads compete for its two
//! cores: more than a step's small statements take to run). The batches are written on a
//! connection of their own ([`Writer`]).
//!
//! Large batches go statement by statement, each [`chunks`]-sized multi-row `VALUES`
//! prepared once per connection and reused, the next one built while SQLite runs the one
//! before. A new task whose idempotency key another task holds is left out by the insert
//! itself (`ON CONFLICT DO NOTHING`) and found by the statement after it, which reads the
//! keys' holders: no read has to come back before the writing starts.
//!
//! sqlx 0.8 runs a string of several statements in order on SQLite, binding each its own
//! values; its maintainers discuss dropping that (launchbadge/sqlx#3108). Should an upgrade
//! run only the first, the test
//! `db::tests::keys_held_by_other_tasks_are_reported_in_small_and_large_batches` fails: its
//! small batch's later statements would not have run.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use sqlx::sqlite::{SqliteConnectOptions, SqliteRow};
use sqlx::{Connection, QueryBuilder, Row, Sqlite, SqliteConnection};

use super::chunks;
use super::write::{KeyTaken, INSERT_TASK, ON_TASK_CONFLICT, SET_TASK_STATE, UPSERT_ATTEMPTS};
use crate::store::pending::Batch;
use crate::store::rows::{AttemptRow, NewTask, NodeRow, TaskState, WorkerRow};
use crate::store::text;
use crate::store::workflows::{WorkflowEventRow, WorkflowRunRow};
use crate::task::TaskId;

/// Bound values up to which a batch goes as one script. A step's round binds a few dozen;
/// a 256-row insert binds 3,840, and goes alone, in the shape its connection has prepared.
const ONE_SCRIPT: usize = 2048;

/// One statement of a batch, over one chunk of its rows.
enum Statement<'a> {
    /// New tasks; those whose key another task holds are left out.
    Insert(&'a [(NewTask, TaskState)]),
    /// Which of these new tasks (those with a key) were left out, and the task holding
    /// their key: rows of (task, holder).
    Taken(&'a [&'a (NewTask, TaskState)]),
    Update(&'a [TaskState]),
    Attempts(&'a [AttemptRow]),
    Worker(&'a WorkerRow),
    Node(&'a NodeRow),
    Heartbeat(&'a [Arc<str>], i64),
    Runs(&'a [WorkflowRunRow]),
    Events(&'a [WorkflowEventRow]),
}

impl<'a> Statement<'a> {
    /// Every statement of `batch`, in the order they must run (the holders of keys are read
    /// once every new task is in). `keyed` are the batch's new tasks that have a key.
    fn all(batch: &'a Batch, keyed: &'a [&'a (NewTask, TaskState)]) -> Vec<Self> {
        let mut all: Vec<Self> = chunks(&batch.inserts).map(Self::Insert).collect();
        all.extend(chunks(keyed).map(Self::Taken));
        all.extend(chunks(&batch.updates).map(Self::Update));
        all.extend(chunks(&batch.attempts).map(Self::Attempts));
        all.extend(batch.workers.iter().map(Self::Worker));
        all.extend(batch.nodes.iter().map(Self::Node));
        for (ids, at_ms) in &batch.heartbeats {
            all.extend(chunks(ids).map(|c| Self::Heartbeat(c, *at_ms)));
        }
        all.extend(chunks(&batch.workflows.runs).map(Self::Runs));
        all.extend(chunks(&batch.workflows.events).map(Self::Events));
        all
    }

    /// How many values it binds.
    fn binds(&self) -> usize {
        match self {
            Self::Insert(rows) => 15 * rows.len(),
            Self::Taken(rows) => 2 * rows.len(),
            Self::Update(rows) => 9 * rows.len(),
            Self::Attempts(rows) => 8 * rows.len(),
            Self::Worker(_) | Self::Node(_) => 8,
            Self::Heartbeat(ids, _) => 1 + ids.len(),
            Self::Runs(rows) => 12 * rows.len(),
            Self::Events(rows) => 6 * rows.len(),
        }
    }

    /// Appends it to `qb`.
    fn push(self, qb: &mut QueryBuilder<'a, Sqlite>) {
        match self {
            Self::Insert(rows) => {
                qb.push(INSERT_TASK);
                qb.push_values(rows, |mut b, (t, s)| {
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
                // A key held by another task (stored, or older in this batch: rows go in
                // in order, and the batch is sorted by id, so the first task made with a
                // key keeps it): the task is left out, and `Taken` reports it.
                qb.push(" ON CONFLICT DO NOTHING");
            }
            Self::Taken(rows) => {
                qb.push("WITH v (id, idempotency_key) AS (");
                qb.push_values(rows, |mut b, (t, _)| {
                    b.push_bind(t.id.as_uuid())
                        .push_bind(t.idempotency_key.as_deref().map(text::without_nul));
                });
                qb.push(
                    ") SELECT v.id, t.id FROM v JOIN tasks t \
                     ON t.idempotency_key = v.idempotency_key \
                     WHERE t.idempotency_key IS NOT NULL AND t.id <> v.id",
                );
            }
            Self::Update(rows) => {
                qb.push(
                    "WITH v (id, status, retries_used, lease_losses, ready_at_ms, \
                     finished_at_ms, result, error, dead_seq) AS (",
                );
                qb.push_values(rows, |mut b, s| {
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
            }
            Self::Attempts(rows) => {
                qb.push(
                    "WITH v (task_id, number, worker, node, started_at_ms, finished_at_ms, \
                     outcome, error) AS (",
                );
                qb.push_values(rows, |mut b, a| {
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
            }
            Self::Worker(w) => push_worker!(qb, w),
            Self::Node(n) => push_node!(qb, n),
            Self::Heartbeat(ids, at_ms) => push_heartbeat!(qb, ids, at_ms),
            Self::Runs(rows) => push_runs!(qb, rows),
            Self::Events(rows) => push_events!(qb, rows),
        }
    }
}

/// The connection SQLite batches are written on: one of its own, outside the pool, so that
/// a small batch's transaction is one script from `BEGIN IMMEDIATE` to `COMMIT` (one
/// hand-off in all; sqlx's transactions send BEGIN and COMMIT as hand-offs of their own),
/// and so that the shapes it prepares stay with it. A connection that failed, or whose
/// write was abandoned part way, is dropped (closing it rolls back whatever it had begun)
/// and the next write opens a new one.
pub(crate) struct Writer {
    options: SqliteConnectOptions,
    /// The open connection, taken out while a write runs on it.
    idle: Mutex<Option<SqliteConnection>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

impl Writer {
    pub(super) fn new(options: SqliteConnectOptions) -> Self {
        Self {
            options,
            idle: Mutex::new(None),
        }
    }

    /// Writes `batch` in one transaction. Returns the new tasks left out because another
    /// task holds their idempotency key.
    pub(super) async fn write(&self, batch: &Batch) -> Result<Vec<KeyTaken>, sqlx::Error> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).take();
        let mut conn = match idle {
            Some(conn) => conn,
            None => SqliteConnection::connect_with(&self.options).await?,
        };
        // Dropped, not put back, if this fails or is abandoned: it may be inside the
        // transaction.
        let taken = write(&mut conn, batch).await?;
        *self.idle.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn);
        Ok(taken)
    }

    /// Closes the connection (the next write would open another).
    pub(super) async fn close(&self) {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(conn) = idle {
            // Closing cleanly only spares SQLite its recovery of the WAL; nothing to report.
            let _ = conn.close().await;
        }
    }
}

/// Writes `batch` in one transaction on `conn`.
async fn write(conn: &mut SqliteConnection, batch: &Batch) -> Result<Vec<KeyTaken>, sqlx::Error> {
    let keyed: Vec<&(NewTask, TaskState)> = batch
        .inserts
        .iter()
        .filter(|(t, _)| t.idempotency_key.is_some())
        .collect();
    let statements = Statement::all(batch, &keyed);
    // `BEGIN IMMEDIATE` takes the write lock at once (see `BeginWrite::begin_write`).
    let rows = if statements.iter().map(Statement::binds).sum::<usize>() <= ONE_SCRIPT {
        let mut script = QueryBuilder::new("BEGIN IMMEDIATE");
        for statement in statements {
            script.push(";\n");
            statement.push(&mut script);
        }
        script.push(";\nCOMMIT");
        script.build().fetch_all(&mut *conn).await?
    } else {
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        let rows = one_by_one(conn, statements).await?;
        sqlx::query("COMMIT").execute(&mut *conn).await?;
        rows
    };
    rows.iter()
        .map(|row| {
            Ok(KeyTaken {
                task: TaskId::from_uuid(row.try_get(0)?),
                holder: TaskId::from_uuid(row.try_get(1)?),
            })
        })
        .collect()
}

/// Runs `statements` in order, one at a time, building each next one while SQLite runs the
/// one before on its connection's thread: the binding of a chunk's few thousand values
/// (here) and the execution of the previous chunk's (there) overlap instead of taking
/// turns. Returns the rows they read.
async fn one_by_one<'a>(
    conn: &mut SqliteConnection,
    statements: Vec<Statement<'a>>,
) -> Result<Vec<SqliteRow>, sqlx::Error> {
    let build = |statement: Statement<'a>| {
        let mut qb = QueryBuilder::new("");
        statement.push(&mut qb);
        qb
    };
    let mut rows = Vec::new();
    let mut statements = statements.into_iter();
    let Some(first) = statements.next() else {
        return Ok(rows);
    };
    let mut qb = build(first);
    loop {
        let (done, next) = {
            let mut running = pin!(qb.build().fetch_all(&mut *conn));
            // The first poll hands the statement and its values to the connection's
            // thread; the next one is built while it runs.
            let started = poll_fn(|cx| Poll::Ready(running.as_mut().poll(cx))).await;
            let next = statements.next().map(build);
            let done = match started {
                Poll::Ready(done) => done,
                Poll::Pending => running.await,
            };
            (done, next)
        };
        rows.extend(done?);
        match next {
            Some(n) => qb = n,
            None => return Ok(rows),
        }
    }
}
