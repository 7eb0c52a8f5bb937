//! The task queue: a priority queue with leases, retries, timeouts, cancellation, labels,
//! dead letters and waiters, run as one ractor actor.

mod actor;
mod bindings;
mod config;
mod core;
mod fifo;
mod hold;
mod journal;
mod ready;
mod sorted;
mod types;
mod uplink;
mod waiters;

pub(crate) use self::actor::QueueMsg;
pub(crate) use self::actor::TaskQueue;
pub use self::config::{QueueConfig, CLUSTER_FRAME_BYTES};
use self::core::Admission;
pub(crate) use self::journal::Accepted;
pub use self::types::{ClassBacklog, PriorityCounts, QueueError, QueueStats};
pub(crate) use self::waiters::Waiter;
// The worker side of the credit protocol (`uplink` makes `QueueRef` one end of it).
pub(crate) use crate::worker::{AttemptOutcome, WorkerCall};
// Task-level types, kept nameable here for the queue's callers.
pub(crate) use crate::task::{Submitted, TaskQuery};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::error::Error;
use crate::mailbox::{Mailbox, MailboxDepth};
use crate::metrics::TaskMetrics;
use crate::store::Store;
use crate::task::{TaskId, TaskOutcome, TaskSnapshot, TaskSpec, TaskStatus};

/// A handle to the task queue actor. Cloning shares it.
#[derive(Clone, Debug)]
pub struct QueueRef {
    mailbox: Mailbox<QueueMsg>,
    metrics: Arc<TaskMetrics>,
    /// Where finished tasks no longer in memory are looked up.
    store: Option<Store>,
}

const QUEUE: &str = "task queue";

impl QueueRef {
    /// Starts a queue actor (unsupervised; the coordinator starts its own linked one).
    pub async fn spawn(
        config: QueueConfig,
    ) -> Result<(Self, ractor::concurrency::JoinHandle<()>), Error> {
        Self::spawn_inner(config, crate::events::EventBus::default(), None, None).await
    }

    /// Starts a queue actor journaled to `store`: it first reloads every unfinished task
    /// and dead letter stored there, then writes each change through the store's writer.
    pub async fn spawn_with_store(
        config: QueueConfig,
        store: Store,
    ) -> Result<(Self, ractor::concurrency::JoinHandle<()>), Error> {
        Self::spawn_inner(
            config,
            crate::events::EventBus::default(),
            None,
            Some(store),
        )
        .await
    }

    pub(crate) async fn spawn_inner(
        config: QueueConfig,
        events: crate::events::EventBus,
        supervisor: Option<ractor::ActorCell>,
        store: Option<Store>,
    ) -> Result<(Self, ractor::concurrency::JoinHandle<()>), Error> {
        config.validate()?;
        let depth = MailboxDepth::default();
        let metrics = Arc::<TaskMetrics>::default();
        let args = actor::QueueArgs {
            config,
            events,
            depth: depth.clone(),
            metrics: metrics.clone(),
            store: store.clone(),
        };
        let spawned = match supervisor {
            Some(s) => ractor::Actor::spawn_linked(None, TaskQueue, args, s).await,
            None => ractor::Actor::spawn(None, TaskQueue, args).await,
        };
        let (actor, handle) = spawned.map_err(|e| Error::spawn(QUEUE, e))?;
        Ok((
            Self {
                mailbox: Mailbox::new(actor, depth),
                metrics,
                store,
            },
            handle,
        ))
    }

    /// Task latency and run-time histograms.
    pub fn metrics(&self) -> &TaskMetrics {
        &self.metrics
    }

    /// The queue actor's mailbox depth.
    pub fn mailbox_depth(&self) -> u64 {
        self.mailbox.depth().get()
    }

    /// The queue's actor cell (to link, monitor or stop it).
    pub fn actor(&self) -> ractor::ActorCell {
        self.mailbox.actor().get_cell()
    }

    /// Submits one task.
    pub async fn submit(&self, spec: TaskSpec) -> Result<Submitted, Error> {
        let mut ids = self.submit_batch(vec![spec]).await?;
        Ok(ids.pop().expect("one id per task"))
    }

    /// Submits many tasks in one message: all are accepted, or none. While load shedding
    /// is on, a batch holding a task it refuses is refused whole
    /// ([`QueueError::Overloaded`]); [`Self::submit_each`] accepts the rest.
    pub async fn submit_batch(&self, specs: Vec<TaskSpec>) -> Result<Vec<Submitted>, Error> {
        self.submit_inner(specs, None).await
    }

    /// Submits many tasks in one message, leaving out only those load shedding refuses
    /// (see [`QueueConfig::shed_low_above`]): one answer per spec, in order, either the
    /// task or [`QueueError::Overloaded`]. Anything else (an invalid task, a full queue, a
    /// store that cannot commit) still refuses the whole batch, as the outer error.
    ///
    /// ```
    /// use wrangle::{QueueConfig, QueueError, QueueRef, TaskPriority, TaskSpec};
    ///
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> Result<(), wrangle::Error> {
    /// let config = QueueConfig { shed_low_above: Some(1), ..QueueConfig::default() };
    /// let (queue, _) = QueueRef::spawn(config).await?;
    /// let task = |p| TaskSpec::new("report", &()).unwrap().priority(p);
    /// queue.submit_batch(vec![task(TaskPriority::Normal), task(TaskPriority::Normal)]).await?;
    /// // Two queued, over the mark of one: the low task is shed, the high one enters.
    /// let answers = queue.submit_each(vec![task(TaskPriority::Low), task(TaskPriority::High)]).await?;
    /// assert!(matches!(answers[0], Err(QueueError::Overloaded { .. })));
    /// assert!(answers[1].is_ok());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn submit_each(
        &self,
        specs: Vec<TaskSpec>,
    ) -> Result<Vec<Result<Submitted, QueueError>>, Error> {
        let accepted = self.accept_as(specs, None, None, Admission::Each).await?;
        Ok(accepted.settle_each().await?)
    }

    /// Submits many tasks and streams each one's outcome as it finishes.
    pub async fn submit_batch_streaming(
        &self,
        specs: Vec<TaskSpec>,
    ) -> Result<
        (
            Vec<Submitted>,
            mpsc::UnboundedReceiver<(TaskId, TaskOutcome)>,
        ),
        Error,
    > {
        let (tx, rx) = mpsc::unbounded_channel();
        let ids = self.submit_batch_to(specs, tx).await?;
        Ok((ids, rx))
    }

    /// [`Self::submit_batch_streaming`] into a channel of the caller's: each outcome goes
    /// to `outcomes` as its task finishes. A task whose idempotency key matched one known
    /// only to the store (`Submitted::existing`) is not followed.
    pub(crate) async fn submit_batch_to(
        &self,
        specs: Vec<TaskSpec>,
        outcomes: mpsc::UnboundedSender<(TaskId, TaskOutcome)>,
    ) -> Result<Vec<Submitted>, Error> {
        self.submit_inner(specs, Some(Waiter::Stream(outcomes)))
            .await
    }

    /// Submits many tasks (all or none) and sends each one's outcome to `outcomes` as it
    /// finishes: the workflow engine's one stream for all its steps. A task whose
    /// idempotency key matched one known only to the store is not followed here
    /// (`Submitted::existing`): the caller waits for it with [`QueueRef::wait_for`].
    ///
    /// `fresh`: the caller knows that no task ever held these specs' idempotency keys (the
    /// workflow engine's new steps), so the store is not asked about them; only memory is.
    ///
    /// The answer comes before the store's: [`Accepted::settle`] waits for it. The tasks'
    /// rows wait for the engine's next journal round, to be committed in its transaction:
    /// fresh steps' rows until that round comes (the engine follows them without waiting
    /// for their commit), the others briefly (the engine waits on their commit).
    pub(crate) async fn submit_batch_into(
        &self,
        specs: Vec<TaskSpec>,
        outcomes: mpsc::UnboundedSender<(TaskId, TaskOutcome)>,
        fresh: bool,
    ) -> Result<Accepted, Error> {
        let known = fresh.then(HashMap::new);
        // Steps of runs already accepted: load shedding does not cut a run in half.
        self.accept_as(
            specs,
            Some(Waiter::Steps {
                tx: outcomes,
                followed: fresh,
            }),
            known,
            Admission::Exempt,
        )
        .await
    }

    /// Submits one task and waits for its outcome.
    pub async fn submit_and_wait(&self, spec: TaskSpec) -> Result<(TaskId, TaskOutcome), Error> {
        let (tx, rx) = oneshot::channel();
        let accepted = self.accept(vec![spec], Some(Waiter::Once(tx))).await?;
        let waited_on = accepted.submitted[0].id;
        let submitted = accepted.settle().await?[0];
        let id = submitted.id;
        if id != waited_on {
            // The database held the key for another task: that task's outcome is the answer.
            let outcome = self.wait_for(id, Duration::MAX).await?;
            return Ok((id, outcome));
        }
        match rx.await {
            Ok(outcome) => Ok((id, outcome)),
            // An idempotency key matched a task only the store still holds.
            Err(_) if submitted.existing && self.store.is_some() => {
                let outcome = self.wait_for(id, Duration::MAX).await?;
                Ok((id, outcome))
            }
            Err(_) => Err(Error::Stopped { actor: QUEUE }),
        }
    }

    async fn submit_inner(
        &self,
        specs: Vec<TaskSpec>,
        waiter: Option<Waiter>,
    ) -> Result<Vec<Submitted>, Error> {
        Ok(self.accept(specs, waiter).await?.settle().await?)
    }

    /// The queue's answer to a submit, before the store's (see [`Accepted::settle`]).
    async fn accept(
        &self,
        specs: Vec<TaskSpec>,
        waiter: Option<Waiter>,
    ) -> Result<Accepted, Error> {
        self.accept_as(specs, waiter, None, Admission::Whole).await
    }

    /// [`Self::accept`], with the idempotency keys the store holds already looked up
    /// (`None`: the queue looks up those memory does not hold), shed as `admission` says.
    async fn accept_as(
        &self,
        specs: Vec<TaskSpec>,
        waiter: Option<Waiter>,
        known: Option<HashMap<String, TaskId>>,
        admission: Admission,
    ) -> Result<Accepted, Error> {
        let accepted = self
            .mailbox
            .call(
                |reply| QueueMsg::Submit {
                    specs,
                    known,
                    admission,
                    waiter,
                    reply,
                },
                None,
                QUEUE,
            )
            .await?;
        Ok(accepted?)
    }

    /// Waits until the task finishes, or `timeout` passes (`QueueError::WaitTimeout`).
    /// A task that already finished answers at once.
    pub async fn wait_for(&self, id: TaskId, timeout: Duration) -> Result<TaskOutcome, Error> {
        let (tx, rx) = oneshot::channel();
        let registered = self
            .mailbox
            .call(
                |reply| QueueMsg::Wait {
                    id,
                    waiter: Waiter::Once(tx),
                    reply,
                },
                None,
                QUEUE,
            )
            .await?;
        if let Err(QueueError::NotFound(_)) = registered {
            // Not in memory: a task that finished before a restart is in the store.
            if let Some(store) = &self.store {
                if let Some(outcome) = store.outcome(id).await? {
                    return Ok(outcome);
                }
            }
        }
        registered?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(_)) => Err(Error::Stopped { actor: QUEUE }),
            Err(_) => Err(QueueError::WaitTimeout {
                id,
                waited: timeout,
            }
            .into()),
        }
    }

    /// Sends each task's outcome to `outcomes` as it finishes (at once for those finished
    /// already, from memory or the store). Returns the ids no task has: they never existed,
    /// or finished long enough ago to be pruned. The stream ends when `outcomes`' receiver
    /// is dropped; nothing else is held for it.
    pub async fn wait_many(
        &self,
        ids: Vec<TaskId>,
        outcomes: mpsc::UnboundedSender<(TaskId, TaskOutcome)>,
    ) -> Result<Vec<TaskId>, Error> {
        let tx = outcomes.clone();
        let unknown = self
            .mailbox
            .call(|reply| QueueMsg::WaitMany { ids, tx, reply }, None, QUEUE)
            .await?;
        let Some(store) = &self.store else {
            return Ok(unknown);
        };
        let mut missing = Vec::new();
        for id in unknown {
            match store.outcome(id).await? {
                Some(outcome) => {
                    let _ = outcomes.send((id, outcome));
                }
                None => missing.push(id),
            }
        }
        Ok(missing)
    }

    /// Everything known about a task.
    pub async fn get_task(&self, id: TaskId) -> Result<TaskSnapshot, Error> {
        if let Some(task) = self
            .mailbox
            .call(|reply| QueueMsg::Get { id, reply }, None, QUEUE)
            .await?
        {
            return Ok(task);
        }
        match &self.store {
            Some(store) => store.get_task(id).await?,
            None => None,
        }
        .ok_or(QueueError::NotFound(id).into())
    }

    /// The store the queue journals to, if any.
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// Waits until every change made so far is committed to the store (at once without
    /// one).
    pub async fn flush(&self) -> Result<(), Error> {
        Ok(self.mailbox.call(QueueMsg::Flush, None, QUEUE).await??)
    }

    /// Commits a workflow journal round in the task store's transaction, after every task
    /// change made so far (so a step's journaled outcome never lands before its task's
    /// completion). Sent when called, so rounds reach the writer in the order they were
    /// made; the future answers once the round is durable (at once without a store).
    pub(crate) fn journal(
        &self,
        batch: crate::store::WorkflowBatch,
    ) -> impl std::future::Future<Output = Result<(), Error>> + Send + 'static {
        let (tx, rx) = ractor::concurrency::oneshot();
        let write = crate::store::JournalWrite {
            batch,
            reply: tx.into(),
        };
        let sent = self.mailbox.send(QueueMsg::Journal(write));
        async move {
            sent.map_err(|_| Error::Stopped { actor: QUEUE })?;
            Ok(rx.await.map_err(|_| Error::Stopped { actor: QUEUE })??)
        }
    }

    /// Records in the store's registry that this queue's node is leaving (before a stop).
    pub(crate) fn leave(&self) {
        if self.store.is_some() {
            let _ = self.mailbox.send(QueueMsg::Leaving);
        }
    }

    /// Records in the store's registry that these workers are alive.
    /// Sheds new `Low` work whatever the backlog while `on`: the coordinator says so while
    /// every compute node's circuit breaker is open. False once the queue is gone.
    pub(crate) fn set_degraded(&self, on: bool) -> bool {
        self.mailbox.send(QueueMsg::Degraded(on)).is_ok()
    }

    pub(crate) fn persist_heartbeats(&self, workers: Vec<Arc<str>>) {
        if self.store.is_some() && !workers.is_empty() {
            let _ = self.mailbox.send(QueueMsg::Heartbeats(workers));
        }
    }

    /// Tasks with `status` (all when `None`), oldest first, at most `limit`, after the
    /// cursor `after`.
    pub async fn list(
        &self,
        status: Option<TaskStatus>,
        after: Option<TaskId>,
        limit: usize,
    ) -> Result<Vec<TaskSnapshot>, Error> {
        self.query(TaskQuery {
            status,
            after,
            limit,
            task_type: None,
            newest_first: false,
        })
        .await
    }

    /// The tasks matching `query`, oldest first. With a store, finished tasks (and listings
    /// of every status) come from it, so they include tasks from before a restart and past
    /// `max_finished_tasks`; waiting and running tasks come from memory, which leads.
    pub async fn query(&self, query: TaskQuery) -> Result<Vec<TaskSnapshot>, Error> {
        if let Some(store) = &self.store {
            if query.status.is_none_or(|s| s.is_finished()) {
                // Whatever changed in memory so far is in the store first.
                self.flush().await?;
                return store.list(&query).await;
            }
        }
        self.mailbox
            .call(|reply| QueueMsg::List { query, reply }, None, QUEUE)
            .await
    }

    /// The dead letters, oldest first.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<TaskSnapshot>, Error> {
        self.mailbox
            .call(|reply| QueueMsg::DeadLetters { limit, reply }, None, QUEUE)
            .await
    }

    /// Cancels a task. Returns the status it had.
    pub async fn cancel(&self, id: TaskId) -> Result<TaskStatus, Error> {
        Ok(self
            .mailbox
            .call(|reply| QueueMsg::Cancel { id, reply }, None, QUEUE)
            .await??)
    }

    /// Puts a dead-lettered task back in the queue.
    pub async fn requeue(&self, id: TaskId) -> Result<(), Error> {
        Ok(self
            .mailbox
            .call(|reply| QueueMsg::Requeue { id, reply }, None, QUEUE)
            .await??)
    }

    /// The queue's counters.
    pub async fn stats(&self) -> Result<QueueStats, Error> {
        self.mailbox.call(QueueMsg::Stats, None, QUEUE).await
    }

    /// Queued tasks per routing class (task type and required labels), classes with
    /// queued tasks only: what a node launcher reads to know which nodes are wanted.
    pub async fn class_backlog(&self) -> Result<Vec<ClassBacklog>, Error> {
        self.mailbox.call(QueueMsg::Classes, None, QUEUE).await
    }

    /// Stops taking submits (they fail with `QueueError::Closed`), then answers once no
    /// task is waiting or running, or `timeout` passes; returns the tasks still unfinished.
    pub async fn close_and_drain(&self, timeout: Duration) -> Result<usize, Error> {
        let (tx, rx) = oneshot::channel();
        self.mailbox
            .call(|reply| QueueMsg::Close { drained: tx, reply }, None, QUEUE)
            .await?;
        let _ = tokio::time::timeout(timeout, rx).await;
        self.stats().await.map(|s| s.queue_size + s.running)
    }

    /// Records a remote node's state in the store (nothing without one).
    pub(crate) fn record_node(&self, row: crate::store::NodeRow) {
        let _ = self.mailbox.send(QueueMsg::Node(row));
    }
}
