//! The workflow journal's SQL: definitions by name and version, run rows, and each run's
//! ordered events, written in one transaction per batch.

use sqlx::{QueryBuilder, Row};

use super::{chunks, Db};
use crate::store::workflows::{WorkflowEventRow, WorkflowRunRow};

/// A run row's columns, in the order `push_runs!` binds them and `read_run!` reads them.
pub(super) const RUN_COLUMNS: &str = "id, workflow, version, status, input, generation, error, \
    state, steps_done, created_at_ms, updated_at_ms, finished_at_ms";

/// Pushes the statement that writes run rows `$chunk` (inserted, or updated in place) onto
/// `$qb`, a `QueryBuilder` of either backend. Messages lose any NUL character, which
/// PostgreSQL's text refuses.
macro_rules! push_runs {
    ($qb:expr, $chunk:expr) => {{
        let chunk: &[$crate::store::workflows::WorkflowRunRow] = $chunk;
        $qb.push("INSERT INTO workflow_runs (");
        $qb.push($crate::store::db::workflows::RUN_COLUMNS);
        $qb.push(") ");
        $qb.push_values(chunk, |mut b, r| {
            b.push_bind(r.id)
                .push_bind($crate::store::text::name(&r.workflow))
                .push_bind($crate::store::text::name(&r.version))
                .push_bind(&r.status)
                // Only a run's first row inserts it, and that row has the input; an
                // empty one would fail the run's replay loudly, never run it on `{}`.
                .push_bind($crate::store::text::without_nul(
                    r.input.as_deref().unwrap_or_default(),
                ))
                .push_bind(r.generation)
                .push_bind($crate::store::text::message(r.error.as_deref()))
                .push_bind(r.state.as_deref().map($crate::store::text::without_nul))
                .push_bind(r.steps_done)
                .push_bind(r.created_at_ms)
                .push_bind(r.updated_at_ms)
                .push_bind(r.finished_at_ms);
        });
        $qb.push(
            " ON CONFLICT (id) DO UPDATE SET status = excluded.status, \
             generation = excluded.generation, error = excluded.error, \
             state = excluded.state, steps_done = excluded.steps_done, \
             updated_at_ms = excluded.updated_at_ms, \
             finished_at_ms = excluded.finished_at_ms",
        );
    }};
}

/// Pushes the statement that writes journal events `$chunk` onto `$qb`, a `QueryBuilder`
/// of either backend. Steps and values lose any NUL character.
macro_rules! push_events {
    ($qb:expr, $chunk:expr) => {{
        let chunk: &[$crate::store::workflows::WorkflowEventRow] = $chunk;
        $qb.push("INSERT INTO workflow_events (run_id, seq, step, kind, value, at_ms) ");
        $qb.push_values(chunk, |mut b, e| {
            b.push_bind(e.run_id)
                .push_bind(e.seq)
                .push_bind($crate::store::text::without_nul(&e.step))
                .push_bind(&e.kind)
                .push_bind($crate::store::text::without_nul(&e.value))
                .push_bind(e.at_ms);
        });
        // A batch retried after a commit that landed writes the same events again.
        $qb.push(" ON CONFLICT (run_id, seq) DO NOTHING");
    }};
}

/// Reads a `SELECT {RUN_COLUMNS}` row (`?` returns its `sqlx::Error`).
macro_rules! read_run {
    ($row:expr) => {{
        let row = $row;
        WorkflowRunRow {
            id: row.try_get(0)?,
            workflow: row.try_get(1)?,
            version: row.try_get(2)?,
            status: row.try_get(3)?,
            input: Some(row.try_get(4)?),
            generation: row.try_get(5)?,
            error: row.try_get(6)?,
            state: row.try_get(7)?,
            steps_done: row.try_get(8)?,
            created_at_ms: row.try_get(9)?,
            updated_at_ms: row.try_get(10)?,
            finished_at_ms: row.try_get(11)?,
        }
    }};
}

impl Db {
    /// Stores a definition's JSON under its name and version (kept if already there).
    pub(crate) async fn save_workflow_definition(
        &self,
        name: &str,
        version: &str,
        definition: &str,
        at_ms: i64,
    ) -> Result<(), sqlx::Error> {
        on_pool!(self, |pool, _DB| {
            sqlx::query(
                "INSERT INTO workflow_definitions (name, version, definition, created_at_ms) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (name, version) DO NOTHING",
            )
            .bind(name)
            .bind(version)
            .bind(definition)
            .bind(at_ms)
            .execute(pool)
            .await
            .map(drop)
        })
    }

    /// Every stored definition: (name, version, JSON).
    pub(crate) async fn workflow_definitions(
        &self,
    ) -> Result<Vec<(String, String, String)>, sqlx::Error> {
        on_pool!(self, |pool, _DB| {
            let rows = sqlx::query("SELECT name, version, definition FROM workflow_definitions")
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                .collect()
        })
    }

    /// Runs that have not finished (running or paused), oldest first.
    pub(crate) async fn unfinished_workflow_runs(
        &self,
    ) -> Result<Vec<WorkflowRunRow>, sqlx::Error> {
        on_pool!(self, |pool, _DB| {
            let rows = sqlx::query(&format!(
                "SELECT {RUN_COLUMNS} FROM workflow_runs WHERE finished_at_ms IS NULL \
                 ORDER BY created_at_ms, id"
            ))
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| -> Result<_, sqlx::Error> { Ok(read_run!(row)) })
                .collect()
        })
    }

    /// One run by id.
    pub(crate) async fn workflow_run(
        &self,
        id: uuid::Uuid,
    ) -> Result<Option<WorkflowRunRow>, sqlx::Error> {
        on_pool!(self, |pool, _DB| {
            let row = sqlx::query(&format!(
                "SELECT {RUN_COLUMNS} FROM workflow_runs WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await?;
            row.map(|row| -> Result<_, sqlx::Error> { Ok(read_run!(&row)) })
                .transpose()
        })
    }

    /// The newest finished runs, up to `limit`.
    pub(crate) async fn finished_workflow_runs(
        &self,
        limit: i64,
        status: Option<&str>,
    ) -> Result<Vec<WorkflowRunRow>, sqlx::Error> {
        on_pool!(self, |pool, _DB| {
            let rows = match status {
                None => {
                    sqlx::query(&format!(
                        "SELECT {RUN_COLUMNS} FROM workflow_runs WHERE finished_at_ms IS NOT NULL \
                         ORDER BY finished_at_ms DESC LIMIT $1"
                    ))
                    .bind(limit)
                    .fetch_all(pool)
                    .await?
                }
                Some(status) => {
                    sqlx::query(&format!(
                        "SELECT {RUN_COLUMNS} FROM workflow_runs WHERE status = $1 \
                         AND finished_at_ms IS NOT NULL ORDER BY finished_at_ms DESC LIMIT $2"
                    ))
                    .bind(status)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?
                }
            };
            rows.iter()
                .map(|row| -> Result<_, sqlx::Error> { Ok(read_run!(row)) })
                .collect()
        })
    }

    /// The events of these runs, by run then sequence.
    pub(crate) async fn workflow_events(
        &self,
        runs: &[uuid::Uuid],
    ) -> Result<Vec<WorkflowEventRow>, sqlx::Error> {
        let mut out = Vec::new();
        for chunk in chunks(runs) {
            on_pool!(self, |pool, DB| {
                let mut qb = QueryBuilder::<DB>::new(
                    "SELECT run_id, seq, step, kind, value, at_ms FROM workflow_events WHERE run_id IN (",
                );
                let mut list = qb.separated(", ");
                for id in chunk {
                    list.push_bind(*id);
                }
                qb.push(") ORDER BY run_id, seq");
                for r in qb.build().fetch_all(pool).await? {
                    out.push(WorkflowEventRow {
                        run_id: r.try_get(0)?,
                        seq: r.try_get(1)?,
                        step: r.try_get(2)?,
                        kind: r.try_get(3)?,
                        value: r.try_get(4)?,
                        at_ms: r.try_get(5)?,
                    });
                }
            })
        }
        Ok(out)
    }
}
