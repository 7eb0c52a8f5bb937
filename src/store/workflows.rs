//! The workflow engine's journal: plain rows the engine builds, and the [`Store`] methods
//! that write and read them. Definitions are kept by name and version, runs by id, and each
//! run's events in order; replaying a run's events rebuilds it.

use super::{Store, StoreError};

/// A run as stored: what is known of it besides its events.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct WorkflowRunRow {
    pub(crate) id: uuid::Uuid,
    pub(crate) workflow: String,
    pub(crate) version: String,
    /// `running`, `paused`, `completed`, `failed`, `cancelled` or `stopped`.
    pub(crate) status: String,
    /// The input object, as JSON. `None` in a row that updates one already written: the
    /// input never changes, and a big one (a map's list) is not written again each round.
    pub(crate) input: Option<String>,
    /// How many times the run was retried from its failed steps.
    pub(crate) generation: i64,
    pub(crate) error: Option<String>,
    /// The final state (JSON), once the run finished.
    pub(crate) state: Option<String>,
    /// Steps completed.
    pub(crate) steps_done: i64,
    pub(crate) created_at_ms: i64,
    pub(crate) updated_at_ms: i64,
    /// Set once the run can no longer change.
    pub(crate) finished_at_ms: Option<i64>,
}

/// One entry of a run's journal.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct WorkflowEventRow {
    pub(crate) run_id: uuid::Uuid,
    /// Its place in the run's journal, from 1.
    pub(crate) seq: i64,
    /// The step's key (its name, with the loop iteration and map item it belongs to).
    pub(crate) step: String,
    /// `done`, `failed`, `retry` or `timer`.
    pub(crate) kind: String,
    /// The output (JSON), the error, or the timer's deadline in Unix ms.
    pub(crate) value: String,
    pub(crate) at_ms: i64,
}

/// What one journal commit writes.
#[derive(Clone, Debug, Default)]
pub(crate) struct WorkflowBatch {
    /// Runs inserted, or updated in place (status, generation, error, times).
    pub(crate) runs: Vec<WorkflowRunRow>,
    /// Events appended.
    pub(crate) events: Vec<WorkflowEventRow>,
}

impl WorkflowBatch {
    pub(crate) fn is_empty(&self) -> bool {
        self.runs.is_empty() && self.events.is_empty()
    }

    /// Takes a later batch in: its run rows replace this one's rows of the same runs (one
    /// row per run per statement, as PostgreSQL's upsert requires), its events follow.
    pub(crate) fn merge(&mut self, later: WorkflowBatch) {
        if self.is_empty() {
            *self = later;
            return;
        }
        let mut at: std::collections::HashMap<uuid::Uuid, usize> = self
            .runs
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id, i))
            .collect();
        for row in later.runs {
            match at.get(&row.id) {
                Some(&i) => {
                    let earlier = std::mem::replace(&mut self.runs[i], row);
                    self.runs[i].input = self.runs[i].input.take().or(earlier.input);
                }
                None => {
                    at.insert(row.id, self.runs.len());
                    self.runs.push(row);
                }
            }
        }
        self.events.extend(later.events);
    }
}

/// A round of the workflow journal handed to the store writer through the queue, so that
/// it commits in the same transaction as (or after) every task change the queue made
/// before it: answered once it is durable, or with why the database refused it for good.
pub(crate) struct JournalWrite {
    pub(crate) batch: WorkflowBatch,
    pub(crate) reply: ractor::RpcReplyPort<Result<(), StoreError>>,
}

impl Store {
    /// Keeps a definition's JSON under its name and version.
    pub(crate) async fn save_workflow_definition(
        &self,
        name: &str,
        version: &str,
        json: &str,
    ) -> Result<(), StoreError> {
        let now = super::ms(std::time::SystemTime::now());
        Ok(self
            .db
            .save_workflow_definition(name, version, json, now)
            .await?)
    }

    /// Every stored definition: (name, version, JSON).
    pub(crate) async fn workflow_definitions(
        &self,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        Ok(self.db.workflow_definitions().await?)
    }

    /// Runs still running or paused, with their events in order.
    pub(crate) async fn unfinished_workflow_runs(
        &self,
    ) -> Result<Vec<(WorkflowRunRow, Vec<WorkflowEventRow>)>, StoreError> {
        let runs = self.db.unfinished_workflow_runs().await?;
        let ids: Vec<uuid::Uuid> = runs.iter().map(|r| r.id).collect();
        let events = self.db.workflow_events(&ids).await?;
        let mut by_run: std::collections::HashMap<uuid::Uuid, Vec<WorkflowEventRow>> =
            std::collections::HashMap::new();
        for e in events {
            by_run.entry(e.run_id).or_default().push(e);
        }
        Ok(runs
            .into_iter()
            .map(|r| {
                let events = by_run.remove(&r.id).unwrap_or_default();
                (r, events)
            })
            .collect())
    }

    /// One run by id, with its events.
    pub(crate) async fn workflow_run(
        &self,
        id: uuid::Uuid,
    ) -> Result<Option<(WorkflowRunRow, Vec<WorkflowEventRow>)>, StoreError> {
        let Some(run) = self.db.workflow_run(id).await? else {
            return Ok(None);
        };
        let events = self.db.workflow_events(&[id]).await?;
        Ok(Some((run, events)))
    }

    /// The newest finished runs.
    pub(crate) async fn finished_workflow_runs(
        &self,
        limit: usize,
        status: Option<&str>,
    ) -> Result<Vec<WorkflowRunRow>, StoreError> {
        Ok(self
            .db
            .finished_workflow_runs(i64::try_from(limit).unwrap_or(i64::MAX), status)
            .await?)
    }
}
