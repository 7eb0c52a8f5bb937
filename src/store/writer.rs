//! The store writer: one actor that turns the queue's stream of changes into few, large
//! transactions (group commit).
//!
//! Changes pile up while a commit is in flight; the next commit takes all of them at once,
//! so under load one fsync carries thousands of changes, and at rest a lone submit commits
//! at once. Later changes to a task replace earlier ones not yet written, so a task that is
//! submitted, leased and completed between two commits costs one row.
//!
//! A submit waiting for durability ([`SubmitBatch`]) is answered only after its commit,
//! with what the database took ([`BatchStored`]). If a commit fails, the submits in it are
//! refused and their tasks reported not stored (their owner takes them back out, so nothing
//! runs that the caller was told failed); the other changes are kept and retried with
//! backoff. What a commit's outcome means for the waiting submits is in [`super::commit`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::batch::{SubmitBatch, Unstored};
use super::commit::{self, commit};
use super::db::Db;
use super::dropped::Dropped;
use super::pending::Pending;
use super::retention::{self, Retention};
use super::rows::StoreOp;
use super::workflows::JournalWrite;
use super::{StoreError, WriterStats};
use crate::mailbox::{Mailbox, MailboxDepth};

/// The store writer actor. Started by the queue, linked to it.
#[derive(Debug)]
pub(crate) struct StoreWriter;

/// The writer's messages.
pub(crate) enum StoreMsg {
    /// Changes, in the order they were made, the submits to answer once their tasks'
    /// fate is known, and workflow journal rounds made after those changes.
    Write {
        ops: Vec<StoreOp>,
        batches: Vec<SubmitBatch>,
        journals: Vec<JournalWrite>,
    },
    /// Commit everything sent before this now; answer when done.
    Flush(RpcReplyPort<Result<(), StoreError>>),
    /// Try again after a failed commit.
    Retry,
    /// Delete finished tasks past their retention.
    Prune,
}

impl ractor::Message for StoreMsg {}

/// What the writer starts with.
pub(crate) struct WriterArgs {
    pub(crate) db: Db,
    pub(crate) depth: MailboxDepth,
    /// Where tasks that could not be stored are reported.
    pub(crate) unstored: Arc<dyn Unstored>,
    pub(crate) retention: Retention,
    pub(crate) prune_interval: Duration,
    pub(crate) max_batch: usize,
    pub(crate) stats: Arc<WriterStats>,
}

/// The writer's state.
pub(crate) struct WriterState {
    pub(super) db: Db,
    /// Own mailbox, counted: an empty mailbox is the signal to commit.
    pub(super) me: Mailbox<StoreMsg>,
    /// Where tasks that could not be stored are reported.
    pub(super) unstored: Arc<dyn Unstored>,
    pub(super) pending: Pending,
    /// Set after a failed commit: the error, and when to try again. Submits arriving
    /// before then are refused at once instead of waiting on a database that is down.
    pub(super) failing: Option<(StoreError, Duration)>,
    retention: Retention,
    prune_interval: Duration,
    /// Commit early once this many tasks are pending, even while more changes arrive.
    max_batch: usize,
    pub(super) stats: Arc<WriterStats>,
    /// New tasks recently left out, so no later submit is told they exist.
    pub(super) dropped: Dropped,
    /// Task rows this writer has written, and the count at which it next refreshes the
    /// database's statistics (see `Db::analyze`).
    pub(super) rows_written: u64,
    pub(super) analyze_at: u64,
}

/// Rows written before the first refresh of the statistics; each next one comes after
/// eight times as many.
const FIRST_ANALYZE_AT: u64 = 1_000;

impl Actor for StoreWriter {
    type Msg = StoreMsg;
    type State = WriterState;
    type Arguments = WriterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<StoreMsg>,
        args: WriterArgs,
    ) -> Result<WriterState, ActorProcessingErr> {
        args.stats.healthy.store(true, Ordering::Relaxed);
        args.stats
            .disk_free_bytes
            .store(u64::MAX, Ordering::Relaxed);
        let me = Mailbox::new(myself, args.depth);
        // Runs even without bounds: it measures the database and the disk.
        me.send_after(Duration::from_secs(1), || StoreMsg::Prune);
        Ok(WriterState {
            db: args.db,
            me,
            unstored: args.unstored,
            pending: Pending::default(),
            failing: None,
            retention: args.retention,
            prune_interval: args.prune_interval,
            max_batch: args.max_batch.max(1),
            stats: args.stats,
            dropped: Dropped::default(),
            rows_written: 0,
            analyze_at: FIRST_ANALYZE_AT,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<StoreMsg>,
        msg: StoreMsg,
        state: &mut WriterState,
    ) -> Result<(), ActorProcessingErr> {
        state.me.depth().received();
        match msg {
            StoreMsg::Write {
                ops,
                batches,
                journals,
            } => {
                for op in ops {
                    state.pending.add(op);
                }
                for batch in batches {
                    take_batch(state, batch);
                }
                // Held through an outage, never refused early: a journal round must land
                // before anything it caused happens, however long that takes.
                for j in journals {
                    state.pending.journal.merge(j.batch);
                    state.pending.journal_acks.push(j.reply);
                }
            }
            StoreMsg::Flush(reply) => {
                state.pending.flushes.push(reply);
                if state.failing.is_some() {
                    commit(state).await;
                    return Ok(());
                }
            }
            StoreMsg::Retry => {
                if state.failing.is_some() {
                    commit(state).await;
                    return Ok(());
                }
            }
            StoreMsg::Prune => {
                retention::apply(&state.db, &state.retention, &state.stats).await;
                state
                    .me
                    .send_after(state.prune_interval, || StoreMsg::Prune);
            }
        }
        // Whatever the message, changes left pending by a busier moment go now if nothing
        // else is waiting: a tick must never be the last message before a quiet spell.
        let quiet = state.me.depth().get() == 0;
        if state.failing.is_none() && (quiet || state.pending.tasks.len() >= state.max_batch) {
            commit(state).await;
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<StoreMsg>,
        state: &mut WriterState,
    ) -> Result<(), ActorProcessingErr> {
        if !state.pending.is_empty() {
            commit(state).await;
        }
        Ok(())
    }
}

/// A submit arrives: it waits for the next commit, unless it names a task already known
/// lost (nothing of it can be stored as answered) or the database is down (refused now
/// rather than held).
fn take_batch(state: &mut WriterState, batch: SubmitBatch) {
    if let Some(lost) = state.dropped.first_lost(&batch.matched) {
        let error = StoreError::Unavailable(format!(
            "task {lost}, which holds this submit's idempotency key, was not stored; \
             submit again"
        ));
        commit::refuse(state, vec![batch], &error);
        return;
    }
    match &state.failing {
        None => state.pending.acks.push(batch),
        Some((error, _)) => {
            let error = error.clone();
            commit::refuse(state, vec![batch], &error);
        }
    }
}
