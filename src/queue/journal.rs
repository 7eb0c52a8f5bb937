//! The queue's side of its store: the link to the writer, the submits handed to it, and
//! how the writer's answers (in the store's own terms) become the queue's. Every submit
//! decision is made here or in the core; the store only says what the database took (and,
//! for idempotency keys memory does not hold, which tasks hold them).

use std::sync::Arc;

use tokio::time::Instant;

use ractor::RpcReplyPort;

use super::actor::{QueueMsg, QueueState};
use super::core::{Admission, QueueCore};
use super::waiters::Waiter;
use super::{QueueError, Submitted};
use crate::error::Error;
use crate::mailbox::Mailbox;
use crate::store::{
    BatchStored, Claim, Durability, JournalWrite, NodeRow, Store, StoreError, StoreMsg, StoreOp,
    SubmitBatch, Unstored,
};
use crate::task::{TaskId, TaskSpec};

/// The queue's answer to a submit it took: the tasks, and with a store, the writer's word on
/// them when the answer waits for it. [`Accepted::settle`] makes the caller's answer.
pub(crate) struct Accepted {
    /// One per spec accepted: the task made, or the task an idempotency key known in
    /// memory matched.
    pub(crate) submitted: Vec<Submitted>,
    /// The specs load shedding left out (positions in the batch, and why), when the
    /// submit allowed it.
    pub(crate) shed: Vec<(usize, QueueError)>,
    /// The store writer's answer, when the submit must wait for its commit (committed
    /// durability, or a new task whose idempotency key only the database can check).
    pub(super) stored:
        Option<ractor::concurrency::OneshotReceiver<Result<BatchStored, StoreError>>>,
}

impl Accepted {
    /// Waits for the writer, if the answer depends on it: a task the database holds under
    /// another task's idempotency key is answered as that task (`existing`); a batch not
    /// stored is refused (`NotStored`), its tasks already taken back out of the queue.
    pub(crate) async fn settle(self) -> Result<Vec<Submitted>, QueueError> {
        debug_assert!(
            self.shed.is_empty(),
            "a submit that sheds tasks settles each"
        );
        let mut submitted = self.submitted;
        let Some(stored) = self.stored else {
            return Ok(submitted);
        };
        match stored.await {
            Ok(Ok(stored)) => {
                for s in &mut submitted {
                    if let Some(holder) = stored.holder(s.id) {
                        *s = Submitted {
                            id: holder,
                            existing: true,
                        };
                    }
                }
                Ok(submitted)
            }
            Ok(Err(e)) => Err(not_stored(e)),
            Err(_) => Err(QueueError::NotStored {
                reason: WRITER_STOPPED.into(),
            }),
        }
    }
}

impl Accepted {
    /// [`Self::settle`] for a submit whose shed tasks were left out: one answer per spec of
    /// the batch, in order, the shed ones refused.
    pub(crate) async fn settle_each(
        mut self,
    ) -> Result<Vec<Result<Submitted, QueueError>>, QueueError> {
        let shed = std::mem::take(&mut self.shed);
        let mut accepted = self.settle().await?.into_iter();
        let mut shed = shed.into_iter().peekable();
        let mut out = Vec::with_capacity(accepted.len() + shed.len());
        loop {
            match shed.next_if(|(i, _)| *i == out.len()) {
                Some((_, refused)) => out.push(Err(refused)),
                None => match accepted.next() {
                    Some(s) => out.push(Ok(s)),
                    None => break,
                },
            }
        }
        Ok(out)
    }
}

/// A submit the store could not commit: refused for want of the leadership, or not stored.
fn not_stored(e: crate::store::StoreError) -> QueueError {
    match e {
        crate::store::StoreError::NotLeader { reason } => QueueError::NotLeader { reason },
        e => QueueError::NotStored {
            reason: e.to_string(),
        },
    }
}

/// Why a submit fails when the store writer is gone.
pub(super) const WRITER_STOPPED: &str = "store writer stopped";

/// Hands the queue the tasks its store writer could not store, to take them back out.
struct TakeBack(Mailbox<QueueMsg>);

impl Unstored for TakeBack {
    fn not_stored(&self, ids: Vec<TaskId>) {
        let _ = self.0.send(QueueMsg::NotStored { ids });
    }
}

/// The queue's link to its store.
pub(super) struct StoreLink {
    /// The store, for the idempotency keys memory does not hold.
    store: Store,
    pub(super) writer: Mailbox<StoreMsg>,
    pub(super) durability: Durability,
    /// Submits to hand the writer with the next changes; each is answered by it.
    batches: Vec<SubmitBatch>,
    /// How many of `batches` are workflow steps' (their answers may wait for a journal
    /// round, as the engine does not wait on them).
    step_batches: usize,
    /// Workflow journal rounds to hand the writer after the next changes.
    pub(super) journals: Vec<JournalWrite>,
    /// The node this queue registered in the store.
    pub(super) node: Arc<str>,
    /// This queue's hold on the database (one queue per database).
    pub(super) claim: Option<Claim>,
}

impl StoreLink {
    /// Claims the database for this queue, reloads what it holds into `core`, registers
    /// this queue's node and starts the writer, which reports to `me` what it could not
    /// store.
    pub(super) async fn open(
        store: Store,
        core: &mut QueueCore,
        me: &Mailbox<QueueMsg>,
    ) -> Result<Self, Error> {
        let node: Arc<str> = Arc::from(store.config().node.as_str());
        core.persist_as(node.clone());
        let claim = store.claim().await?;
        // Raised by the claim: leases granted before this start never match again.
        core.set_epoch(store.epoch());
        let started = std::time::Instant::now();
        let tasks = store.load().await?;
        let restored = core.restore(tasks, Instant::now());
        tracing::info!(
            tasks = restored,
            took = ?started.elapsed(),
            backend = store.backend(),
            "queue recovered from the store"
        );
        core.out.writes.push(StoreOp::Node(NodeRow {
            id: node.clone(),
            address: None,
            labels: "[]".into(),
            status: "active",
            at_ms: crate::store::ms(std::time::SystemTime::now()),
        }));
        let take_back = Arc::new(TakeBack(me.clone()));
        Ok(Self {
            writer: store.start_writer(me.actor().get_cell(), take_back).await?,
            durability: store.config().durability,
            store,
            batches: Vec::new(),
            step_batches: 0,
            journals: Vec::new(),
            node,
            claim: Some(claim),
        })
    }

    /// Hands a submit's tasks to the writer with the next changes, when its answer must
    /// wait for their commit (committed durability). Returns where the writer's answer
    /// arrives. `steps`: a workflow engine's submit, which may wait for its journal round.
    pub(super) fn journal(
        &mut self,
        submitted: &[Submitted],
        steps: bool,
    ) -> Option<ractor::concurrency::OneshotReceiver<Result<BatchStored, StoreError>>> {
        if self.durability != Durability::Committed {
            return None;
        }
        let (fresh, matched): (Vec<&Submitted>, Vec<&Submitted>) =
            submitted.iter().partition(|s| !s.existing);
        let (tx, rx) = ractor::concurrency::oneshot();
        self.step_batches += usize::from(steps);
        self.batches.push(SubmitBatch {
            fresh: fresh.into_iter().map(|s| s.id).collect(),
            matched: matched.into_iter().map(|s| s.id).collect(),
            reply: tx.into(),
        });
        Some(rx)
    }

    /// Whether changes may wait for a workflow journal round (which comes through the
    /// queue, to be committed in the same transaction): only while no submit but the
    /// engine's steps and no round waits on the next commit.
    pub(super) fn may_hold(&self) -> bool {
        self.batches.len() == self.step_batches && self.journals.is_empty()
    }

    /// The idempotency keys of `specs` that memory does not hold: only the database can
    /// tell whether a task holds them (one finished before a restart, or that left memory).
    pub(super) fn unknown_keys(core: &QueueCore, specs: &[TaskSpec]) -> Vec<String> {
        specs
            .iter()
            .filter_map(|s| s.options.idempotency_key.as_deref())
            .filter(|k| !core.knows_key(k))
            .map(str::to_string)
            .collect()
    }

    /// Looks `keys` up in the database off the queue's thread (on the store's read
    /// connections, so a commit in flight does not hold it up), then hands the submit back
    /// to the queue with what was found. Only submits with keys memory does not hold come
    /// here; every other submit reaches the store once, in the writer's commit.
    pub(super) fn look_up_keys(
        &self,
        me: &Mailbox<QueueMsg>,
        keys: Vec<String>,
        specs: Vec<TaskSpec>,
        admission: Admission,
        waiter: Option<Waiter>,
        reply: RpcReplyPort<Result<Accepted, QueueError>>,
    ) {
        let store = self.store.clone();
        let me = me.clone();
        tokio::spawn(async move {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            match store.find_keys(&keys).await {
                Ok(known) => {
                    let _ = me.send(QueueMsg::Submit {
                        specs,
                        known: Some(known),
                        admission,
                        waiter,
                        reply,
                    });
                }
                Err(e) => {
                    let _ = reply.send(Err(QueueError::NotStored {
                        reason: e.to_string(),
                    }));
                }
            }
        });
    }
}

/// Hands the changes made so far, and the submits waiting on them, to the store writer.
pub(super) fn send_writes(state: &mut QueueState) {
    let Some(link) = &mut state.store else {
        return;
    };
    if state.core.out.writes.is_empty() && link.batches.is_empty() && link.journals.is_empty() {
        return;
    }
    let ops = std::mem::take(&mut state.core.out.writes);
    let batches = std::mem::take(&mut link.batches);
    link.step_batches = 0;
    let journals = std::mem::take(&mut link.journals);
    if let Err(Some(StoreMsg::Write {
        batches, journals, ..
    })) = link.writer.send(StoreMsg::Write {
        ops,
        batches,
        journals,
    }) {
        for j in journals {
            let _ = j
                .reply
                .send(Err(StoreError::Unavailable(WRITER_STOPPED.into())));
        }
        let mut ids = Vec::new();
        for batch in batches {
            ids.extend_from_slice(&batch.fresh);
            let _ = batch
                .reply
                .send(Err(StoreError::Unavailable(WRITER_STOPPED.into())));
        }
        state.core.abandon(&ids);
    }
}
