//! One batch of changes in one transaction: new tasks (those whose idempotency key another
//! task holds are left out and reported), task states, attempts, registry rows,
//! heartbeats and workflow journal rows. The statements are the same on both backends;
//! how they reach the database differs: SQLite takes a batch as one script
//! ([`super::script`]), PostgreSQL takes the task and attempt rows as arrays
//! ([`super::unnest`]).

use super::Db;
use crate::store::pending::Batch;
use crate::task::TaskId;

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

/// A registry row (worker or node) already stored takes the leaving row's status and time.
pub(super) const DEREGISTERED: &str = " ON CONFLICT (id) DO UPDATE SET \
    status = 'deregistered', deregistered_at_ms = excluded.deregistered_at_ms";

/// Pushes the statement that writes registry row `$w` (a worker: registered or gone) onto
/// `$qb`, a `QueryBuilder` of either backend.
macro_rules! push_worker {
    ($qb:expr, $w:expr) => {{
        let w: &$crate::store::rows::WorkerRow = $w;
        let active = w.status == "active";
        $qb.push(
            "INSERT INTO workers (id, node, labels, task_types, status, registered_at_ms, \
             heartbeat_at_ms, deregistered_at_ms) ",
        );
        $qb.push_values(std::iter::once(w), |mut b, w| {
            b.push_bind($crate::store::text::name(&w.id))
                .push_bind($crate::store::text::name(&w.node))
                .push_bind($crate::store::text::name(&w.labels))
                .push_bind($crate::store::text::name(&w.task_types))
                .push_bind(if active { "active" } else { "deregistered" })
                .push_bind(w.at_ms)
                .push_bind(w.at_ms)
                .push_bind((!active).then_some(w.at_ms));
        });
        $qb.push(if active {
            " ON CONFLICT (id) DO UPDATE SET node = excluded.node, labels = excluded.labels, \
             task_types = excluded.task_types, status = 'active', \
             registered_at_ms = excluded.registered_at_ms, \
             heartbeat_at_ms = excluded.heartbeat_at_ms, deregistered_at_ms = NULL"
        } else {
            $crate::store::db::write::DEREGISTERED
        });
    }};
}

/// Pushes the statement that writes registry row `$n` (a node: registered or gone) onto
/// `$qb`, a `QueryBuilder` of either backend.
macro_rules! push_node {
    ($qb:expr, $n:expr) => {{
        let n: &$crate::store::rows::NodeRow = $n;
        let active = n.status == "active";
        $qb.push(
            "INSERT INTO nodes (id, address, labels, status, registered_at_ms, \
             heartbeat_at_ms, deregistered_at_ms) ",
        );
        $qb.push_values(std::iter::once(n), |mut b, n| {
            b.push_bind($crate::store::text::name(&n.id))
                .push_bind(n.address.as_deref().map($crate::store::text::name))
                .push_bind($crate::store::text::name(&n.labels))
                .push_bind(if active { "active" } else { "deregistered" })
                .push_bind(n.at_ms)
                .push_bind(n.at_ms)
                .push_bind((!active).then_some(n.at_ms));
        });
        $qb.push(if active {
            " ON CONFLICT (id) DO UPDATE SET address = excluded.address, \
             labels = excluded.labels, status = 'active', \
             registered_at_ms = excluded.registered_at_ms, \
             heartbeat_at_ms = excluded.heartbeat_at_ms, deregistered_at_ms = NULL"
        } else {
            $crate::store::db::write::DEREGISTERED
        });
    }};
}

/// Pushes the statement that marks the active workers `$ids` alive at `$at_ms` onto `$qb`,
/// a `QueryBuilder` of either backend.
macro_rules! push_heartbeat {
    ($qb:expr, $ids:expr, $at_ms:expr) => {{
        $qb.push("UPDATE workers SET heartbeat_at_ms = ");
        $qb.push_bind($at_ms);
        $qb.push(" WHERE status = 'active' AND id IN (");
        let mut list = $qb.separated(", ");
        for id in $ids {
            list.push_bind($crate::store::text::name(id));
        }
        $qb.push(")");
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
        match self {
            Self::Sqlite(_, writer) => writer.write(batch).await,
            Self::Postgres(pool, fence) => super::unnest::write(pool, fence, batch).await,
        }
    }
}
