//! [`Workflows`]: what the rest of the crate and users call to register workflows and
//! start, watch and steer their runs.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::engine::{EngineArgs, Serves, WorkflowEngine};
use super::msg::{Control, EngineMsg};
use super::{
    journal, BulkFilter, BulkOutcome, RunId, RunSnapshot, RunStatus, Workflow, WorkflowConfig,
    WorkflowDef, WorkflowError,
};
use super::{RunOptions, WorkflowMetrics};
use crate::error::Error;
use crate::mailbox::{Mailbox, MailboxDepth};
use crate::queue::QueueRef;
use crate::store::Store;

const ENGINE: &str = "workflow engine";

/// The workflow engine of a coordinator ([`Coordinator::workflows`](crate::Coordinator::workflows)).
///
/// ```
/// use wrangle::prelude::*;
/// use wrangle::workflow::{Step, Workflow};
///
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() -> Result<(), wrangle::Error> {
/// let coordinator = Coordinator::builder()
///     .handler("double", handler_fn(|_ctx, n: i64| async move { Ok::<_, TaskError>(n * 2) }))
///     .start()
///     .await?;
/// let flows = coordinator.workflows();
/// flows
///     .register(
///         Workflow::new("twice")
///             .step(Step::task("first", "double").input_key("n").output_key("n"))
///             .step(Step::task("second", "double").input_key("n").output_key("n")),
///     )
///     .await?;
/// let run = flows.start("twice", serde_json::json!({"n": 5})).await?;
/// let done = flows.wait(run, std::time::Duration::from_secs(10)).await?;
/// assert_eq!(done.state["n"], 20);
/// coordinator.stop(true).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Workflows {
    mailbox: Mailbox<EngineMsg>,
    store: Option<Store>,
    metrics: std::sync::Arc<WorkflowMetrics>,
}

impl Workflows {
    /// Starts the engine under `supervisor`, after recovering every unfinished run.
    pub(crate) async fn spawn(
        queue: QueueRef,
        store: Option<Store>,
        serves: Serves,
        config: WorkflowConfig,
        initial: Vec<Workflow>,
        events: crate::events::EventBus,
        supervisor: Option<ractor::ActorCell>,
    ) -> Result<Self, Error> {
        let depth = MailboxDepth::default();
        let metrics = std::sync::Arc::<WorkflowMetrics>::default();
        let args = EngineArgs {
            queue,
            store: store.clone(),
            serves,
            depth: depth.clone(),
            config,
            initial,
            events,
            metrics: metrics.clone(),
        };
        let (actor, _) = match supervisor {
            Some(s) => ractor::Actor::spawn_linked(None, WorkflowEngine, args, s).await,
            None => ractor::Actor::spawn(None, WorkflowEngine, args).await,
        }
        .map_err(|e| Error::spawn(ENGINE, e))?;
        Ok(Self {
            mailbox: Mailbox::new(actor, depth),
            store,
            metrics,
        })
    }

    /// Registers `workflow` (validated, versioned and stored) and returns its version. A
    /// new version of an existing name serves new runs; runs already started keep theirs.
    pub async fn register(&self, workflow: Workflow) -> Result<String, Error> {
        let r = self
            .mailbox
            .call(
                |reply| EngineMsg::Register { workflow, reply },
                None,
                ENGINE,
            )
            .await?;
        Ok(r?)
    }

    /// Registers a definition sent as JSON (see [`WorkflowDef`]).
    pub async fn register_json(&self, def: WorkflowDef) -> Result<String, Error> {
        self.register(Workflow::from_def(def)).await
    }

    /// Starts a run of the newest version of `name`; `input` (a JSON object) is its first
    /// state. Returns at once (spec 3's `ExecuteAsync`), once the run is stored.
    pub async fn start(&self, name: &str, input: Value) -> Result<RunId, Error> {
        self.start_with(name, input, RunOptions::default()).await
    }

    /// [`Workflows::start`] with options: the run's own checkpoint mode, and a timeout for
    /// the whole run (spec 3's `ExecutionOptions`). Both hold across restarts.
    ///
    /// ```no_run
    /// # async fn demo(flows: wrangle::workflow::Workflows) -> Result<(), wrangle::Error> {
    /// use std::time::Duration;
    /// use wrangle::workflow::{Checkpoint, RunOptions};
    ///
    /// let options = RunOptions::new()
    ///     .checkpoint(Checkpoint::Overlapped)
    ///     .timeout(Duration::from_secs(10 * 60));
    /// let run = flows.start_with("etl", serde_json::json!({"day": "2026-12-08"}), options).await?;
    /// # let _ = run; Ok(()) }
    /// ```
    pub async fn start_with(
        &self,
        name: &str,
        input: Value,
        options: RunOptions,
    ) -> Result<RunId, Error> {
        let input: BTreeMap<String, Value> = match input {
            Value::Object(map) => map.into_iter().collect(),
            Value::Null => BTreeMap::new(),
            other => {
                return Err(WorkflowError::BadInput(format!(
                    "a run's input is a JSON object, not {other}"
                ))
                .into())
            }
        };
        let name = name.to_string();
        let r = self
            .mailbox
            .call(
                |reply| EngineMsg::Start {
                    name,
                    input,
                    options,
                    reply,
                },
                None,
                ENGINE,
            )
            .await?;
        Ok(r?)
    }

    /// Starts a run and waits for it to end (or for `timeout`).
    pub async fn run(
        &self,
        name: &str,
        input: Value,
        timeout: Duration,
    ) -> Result<RunSnapshot, Error> {
        let id = self.start(name, input).await?;
        self.wait(id, timeout).await
    }

    /// A run's snapshot: from memory, else from the store.
    pub async fn status(&self, run: RunId) -> Result<RunSnapshot, Error> {
        let found = self
            .mailbox
            .call(|reply| EngineMsg::Get { run, reply }, None, ENGINE)
            .await?;
        if let Some(s) = found {
            return Ok(s);
        }
        self.stored(run).await
    }

    async fn stored(&self, run: RunId) -> Result<RunSnapshot, Error> {
        let store = self.store.as_ref().ok_or(WorkflowError::RunNotFound(run))?;
        let (row, _) = store
            .workflow_run(run.0)
            .await?
            .ok_or(WorkflowError::RunNotFound(run))?;
        Ok(journal::snapshot_of_row(&row).map_err(WorkflowError::Store)?)
    }

    /// Runs, newest first: those in memory (active and recently finished), then, with a
    /// store, older finished ones, up to `limit`; only those with `status` if given.
    pub async fn list(
        &self,
        status: Option<RunStatus>,
        limit: usize,
    ) -> Result<Vec<RunSnapshot>, Error> {
        let mut runs = self
            .mailbox
            .call(
                |reply| EngineMsg::List {
                    status,
                    limit,
                    reply,
                },
                None,
                ENGINE,
            )
            .await?;
        // Finished runs are in the store too (those no longer in memory only there); an
        // active status is in memory alone.
        let finished = status.is_none_or(|s| !s.is_active());
        if let Some(store) = self.store.as_ref().filter(|_| finished) {
            if runs.len() < limit {
                let known: std::collections::HashSet<RunId> = runs.iter().map(|r| r.id).collect();
                let wanted = status.map(|s| s.as_str());
                for row in store.finished_workflow_runs(limit, wanted).await? {
                    if let Ok(s) = journal::snapshot_of_row(&row) {
                        if !known.contains(&s.id) {
                            runs.push(s);
                        }
                    }
                }
            }
        }
        runs.retain(|r| status.is_none_or(|s| r.status == s));
        runs.sort_by_key(|r| std::cmp::Reverse(r.id));
        runs.truncate(limit);
        Ok(runs)
    }

    /// Waits until the run is no longer running or paused, up to `timeout`.
    pub async fn wait(&self, run: RunId, timeout: Duration) -> Result<RunSnapshot, Error> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.mailbox
            .send(EngineMsg::Wait { run, reply: tx })
            .map_err(|_| Error::Stopped { actor: ENGINE })?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(s)) => Ok(s),
            // Not in memory: it finished long ago (or never was).
            Ok(Err(_)) => self.stored(run).await,
            Err(_) => Err(WorkflowError::WaitTimeout(run).into()),
        }
    }

    /// Lets running steps finish and starts nothing new until [`Workflows::resume`].
    pub async fn pause(&self, run: RunId) -> Result<RunSnapshot, Error> {
        self.control(run, Control::Pause).await
    }

    /// Starts what a pause held back.
    pub async fn resume(&self, run: RunId) -> Result<RunSnapshot, Error> {
        self.control(run, Control::Resume).await
    }

    /// Cancels the run's running steps and ends it.
    pub async fn cancel(&self, run: RunId) -> Result<RunSnapshot, Error> {
        self.control(run, Control::Cancel).await
    }

    /// Goes on with a failed (or stopped) run from its failed steps; completed steps are
    /// not run again.
    pub async fn retry(&self, run: RunId) -> Result<RunSnapshot, Error> {
        self.control(run, Control::Retry).await
    }

    /// Pauses, resumes or cancels every active run that `filter` matches, or retries every
    /// matching failed or stopped run still in memory; says how many matched and changed,
    /// and why any could not be.
    pub async fn bulk(&self, op: Control, filter: BulkFilter) -> Result<BulkOutcome, Error> {
        self.mailbox
            .call(|reply| EngineMsg::Bulk { op, filter, reply }, None, ENGINE)
            .await
    }

    async fn control(&self, run: RunId, op: Control) -> Result<RunSnapshot, Error> {
        let r = self
            .mailbox
            .call(|reply| EngineMsg::Control { run, op, reply }, None, ENGINE)
            .await?;
        Ok(r?)
    }

    /// Registered workflows: name, newest version and definition, by name.
    pub async fn definitions(&self) -> Result<Vec<(String, String, WorkflowDef)>, Error> {
        self.mailbox
            .call(EngineMsg::Definitions, None, ENGINE)
            .await
    }

    /// The engine's counters and latencies.
    pub fn metrics(&self) -> &WorkflowMetrics {
        &self.metrics
    }

    /// Messages waiting in the engine's mailbox.
    pub fn mailbox_depth(&self) -> u64 {
        self.mailbox.depth().get()
    }

    /// Stops the engine (runs stay in the journal and resume at the next start).
    pub(crate) async fn stop(&self) {
        let _ = self
            .mailbox
            .actor()
            .stop_and_wait(None, Some(Duration::from_secs(5)))
            .await;
    }
}
