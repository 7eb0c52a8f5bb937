//! Changes made outside the writer's batches: retention's deletes, and the marks recovery
//! makes (a previous run's registry rows lost, a row that no longer decodes failed). Each
//! passes the leader's fence first, as the writer's batches do: a coordinator that no
//! longer leads changes nothing.

use super::{BeginWrite, Db};
use crate::store::text;
use crate::task::TaskId;

impl Db {
    /// Refreshes PostgreSQL's statistics of the tables the writer fills (SQLite plans
    /// without them). The store's statements are prepared once per connection, and their
    /// generic plans come from the statistics of that moment: made while a new database's
    /// tables were nearly empty, they scan whole tables once those have grown (measured:
    /// an idempotency-key lookup took 3 ms at 30,000 rows instead of 0.02 ms), until an
    /// `ANALYZE`, which autovacuum may run only a minute or more later. The writer calls
    /// this as its rows grow (after 1,000, 8,000, 64,000, ... rows); the `ANALYZE` drops
    /// the cached plans, and the next ones use indexes.
    pub(crate) async fn analyze(&self) -> Result<(), sqlx::Error> {
        match self {
            Db::Sqlite(..) => Ok(()),
            Db::Postgres(pool, _) => {
                sqlx::query("ANALYZE tasks, attempts, workflow_runs, workflow_events")
                    .execute(pool)
                    .await?;
                Ok(())
            }
        }
    }

    /// Deletes finished tasks (not dead letters) that finished before `before_ms`, with
    /// their attempts. Returns how many tasks went.
    pub(crate) async fn prune(&self, before_ms: i64) -> Result<u64, sqlx::Error> {
        let old = "finished_at_ms < $1 AND dead_seq IS NULL";
        let fence = self.fence().map(|f| &**f);
        match self {
            // The first statement takes the database's write lock, so no commit lands
            // between the two: the tasks deleted are those whose attempts were.
            Db::Sqlite(pool, _) => {
                let attempts = format!(
                    "DELETE FROM attempts WHERE task_id IN (SELECT id FROM tasks WHERE {old})"
                );
                let tasks = format!("DELETE FROM tasks WHERE {old}");
                let mut tx = pool.begin_fenced(fence).await?;
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
            Db::Postgres(pool, _) => {
                let sql = format!(
                    "WITH gone AS (DELETE FROM tasks WHERE {old} RETURNING id), \
                     a AS (DELETE FROM attempts WHERE task_id IN (SELECT id FROM gone)) \
                     SELECT count(*) FROM gone"
                );
                let mut tx = pool.begin_fenced(fence).await?;
                let n: i64 = sqlx::query_scalar(&sql)
                    .bind(before_ms)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
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
        let fence = self.fence().map(|f| &**f);
        on_pool!(self, |pool, DB| {
            let mut tx = pool.begin_fenced(fence).await?;
            let w = sqlx::query(workers).bind(at_ms).execute(&mut *tx).await?;
            let n = sqlx::query(nodes).bind(at_ms).execute(&mut *tx).await?;
            tx.commit().await?;
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
        let fence = self.fence().map(|f| &**f);
        on_pool!(self, |pool, _DB| {
            let mut tx = pool.begin_fenced(fence).await?;
            sqlx::query(sql)
                .bind(text::message(Some(error)))
                .bind(at_ms)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        })
    }
}
