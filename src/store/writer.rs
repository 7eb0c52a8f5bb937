//! The store writer: one actor that turns the queue's stream of changes into few, large
//! transactions (group commit).
//!
//! Changes pile up while a commit is in flight; the next commit takes all of them at once,
//! so under load one fsync carries thousands of changes, and at rest a lone submit commits
//! at once. Later changes to a task replace earlier ones not yet written, so a task that is
//! submitted, leased and completed between two commits costs one row.
//!
//! A submit waiting for durability is answered only after its commit. If a commit fails,
//! the submits in it are refused (their tasks are dropped from the queue again, so nothing
//! runs that the caller was told failed) and the other changes are kept and retried with
//! backoff. A batch the database refuses for good (a value it will never take) is written
//! piece by piece instead ([`super::split`]): the refused rows are left out, their submits
//! refused, their tasks recorded failed with the reason, and the rest committed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::db::{Db, KeyTaken};
use super::dropped::{Dropped, Fate};
use super::pending::{Batch, Pending, TaskWrite};
use super::retention::{self, Retention};
use super::rows::{ms, StoreOp, TaskState};
use super::split::{self, Key, Split};
use super::StoreError;
use crate::mailbox::{Mailbox, MailboxDepth};
use crate::queue::{QueueError, QueueMsg, Submitted};
use crate::task::{IdMap, IdSet, TaskId, TaskStatus};

/// The store writer actor. Started by the queue, linked to it.
#[derive(Debug)]
pub(crate) struct StoreWriter;

/// A submit answered once its tasks are committed.
pub(crate) struct Ack {
    pub(crate) reply: RpcReplyPort<Result<Vec<Submitted>, QueueError>>,
    pub(crate) submitted: Vec<Submitted>,
}

/// The writer's messages.
pub(crate) enum StoreMsg {
    /// Changes from the queue, in the order it made them, and the submits to answer once
    /// they are committed.
    Write { ops: Vec<StoreOp>, acks: Vec<Ack> },
    /// Commit everything sent before this now; answer when done.
    Flush(RpcReplyPort<Result<(), StoreError>>),
    /// Try again after a failed commit.
    Retry,
    /// Delete finished tasks past their retention.
    Prune,
}

impl ractor::Message for StoreMsg {}

pub(crate) struct WriterArgs {
    pub(crate) db: Db,
    pub(crate) depth: MailboxDepth,
    pub(crate) queue: Mailbox<QueueMsg>,
    pub(crate) retention: Retention,
    pub(crate) prune_interval: Duration,
    pub(crate) max_batch: usize,
    pub(crate) stats: Arc<WriterStats>,
}

/// The writer's counters, read by `/metrics` and the benchmarks.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Transactions committed.
    pub commits: AtomicU64,
    /// Task rows written (inserts and updates).
    pub task_rows: AtomicU64,
    /// Commits that failed.
    pub failures: AtomicU64,
    /// Finished tasks deleted by retention.
    pub pruned: AtomicU64,
    /// Rows the database refused for good (a value no retry makes storable): each was left
    /// out of its batch so the rest could commit, and its task recorded failed with the
    /// reason where even that could be stored. Exported as
    /// `wrangle_store_rejected_rows_total`.
    pub rejected_rows: AtomicU64,
    /// The database's size in bytes at the last prune interval.
    pub database_bytes: AtomicU64,
    /// Free bytes on the SQLite file's disk at the last prune interval (`u64::MAX` when
    /// not known).
    pub disk_free_bytes: AtomicU64,
    /// False from a failed commit until the next one succeeds.
    pub healthy: AtomicBool,
}

/// The writer's state.
pub(crate) struct WriterState {
    db: Db,
    /// Own mailbox, counted: an empty mailbox is the signal to commit.
    me: Mailbox<StoreMsg>,
    /// Where tasks that could not be stored are reported.
    queue: Mailbox<QueueMsg>,
    pending: Pending,
    /// Set after a failed commit: the error, and when to try again. Submits arriving
    /// before then are refused at once instead of waiting on a database that is down.
    failing: Option<(String, Duration)>,
    retention: Retention,
    prune_interval: Duration,
    /// Commit early once this many tasks are pending, even while more changes arrive.
    max_batch: usize,
    stats: Arc<WriterStats>,
    /// New tasks recently left out, so no later submit is told they exist.
    dropped: Dropped,
}

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
            queue: args.queue,
            pending: Pending::default(),
            failing: None,
            retention: args.retention,
            prune_interval: args.prune_interval,
            max_batch: args.max_batch.max(1),
            stats: args.stats,
            dropped: Dropped::default(),
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
            StoreMsg::Write { ops, acks } => {
                for op in ops {
                    state.pending.add(op);
                }
                if let Some((error, _)) = &state.failing {
                    // The database is down: refuse these submits now rather than hold them.
                    let error = error.clone();
                    refuse(state, acks, &error);
                } else {
                    for mut ack in acks {
                        match state
                            .dropped
                            .settle(ack.submitted.iter_mut().map(|s| (&mut s.id, s.existing)))
                        {
                            None => state.pending.acks.push(ack),
                            Some(lost) => {
                                let error = format!(
                                    "task {lost}, which holds this submit's idempotency key,                                      was not stored; submit again"
                                );
                                refuse(state, vec![ack], &error);
                            }
                        }
                    }
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

/// Writes everything pending in one transaction, then answers the waiting submits.
async fn commit(state: &mut WriterState) {
    if state.pending.is_empty() {
        return;
    }
    if state.pending.no_rows() && state.pending.acks.is_empty() && state.failing.is_none() {
        // Only flushes wait, and everything before them is committed.
        for reply in std::mem::take(&mut state.pending.flushes) {
            let _ = reply.send(Ok(()));
        }
        return;
    }
    let batch = state.pending.batch();
    let rows = (batch.inserts.len() + batch.updates.len()) as u64;
    match state.db.write(&batch).await {
        Ok(taken) => committed(state, &taken, rows, 1),
        Err(e) if split::incurable(&state.db, &e) => {
            tracing::warn!(
                error = %e,
                rows,
                "the database refused a batch for good; writing it piece by piece"
            );
            drop(batch);
            let units = state.pending.units();
            let pending = &state.pending;
            let result = split::write_split(&state.db, units, |u| pending.batch_of(u)).await;
            match result {
                Ok(done) => {
                    let rows = rows.saturating_sub(refused_rows(state, &done));
                    let commits = done.commits;
                    let taken = take_refused(state, done).await;
                    committed(state, &taken, rows, commits);
                }
                Err((done, e)) => {
                    // The rows refused so far are settled; the rest is retried as usual.
                    take_refused(state, done).await;
                    failed(state, e);
                }
            }
        }
        Err(e) => failed(state, e),
    }
}

/// How many of the batch's task rows were refused.
fn refused_rows(state: &WriterState, done: &Split) -> u64 {
    let refused = done.refused.iter().flat_map(|(unit, _)| unit);
    refused
        .filter(|k| matches!(k, Key::Task(id) if state.pending.tasks.contains_key(id)))
        .count() as u64
}

/// A commit succeeded: the pending rows are stored; answers the submits and flushes.
fn committed(state: &mut WriterState, taken: &[KeyTaken], rows: u64, commits: u64) {
    state.stats.commits.fetch_add(commits, Ordering::Relaxed);
    state.stats.task_rows.fetch_add(rows, Ordering::Relaxed);
    if state.failing.take().is_some() {
        tracing::info!("store writes succeed again");
        state.stats.healthy.store(true, Ordering::Relaxed);
    }
    state.pending.clear_rows();
    let holders = key_taken(state, taken);
    for mut ack in std::mem::take(&mut state.pending.acks) {
        for s in &mut ack.submitted {
            if let Some(&holder) = holders.get(&s.id) {
                *s = Submitted {
                    id: holder,
                    existing: true,
                };
            }
        }
        let _ = ack.reply.send(Ok(ack.submitted));
    }
    for reply in std::mem::take(&mut state.pending.flushes) {
        let _ = reply.send(Ok(()));
    }
}

/// A commit failed for a reason a retry may cure: refuses the waiting submits and tries
/// the rest again after a backoff.
fn failed(state: &mut WriterState, e: sqlx::Error) {
    let error = format!("database unavailable: {e}");
    state.stats.failures.fetch_add(1, Ordering::Relaxed);
    state.stats.healthy.store(false, Ordering::Relaxed);
    let backoff = match &state.failing {
        Some((_, last)) => (*last * 2).min(Duration::from_secs(5)),
        None => Duration::from_millis(100),
    };
    tracing::error!(error = %e, retry_in = ?backoff, "store commit failed");
    let acks = std::mem::take(&mut state.pending.acks);
    refuse(state, acks, &error);
    for reply in std::mem::take(&mut state.pending.flushes) {
        let _ = reply.send(Err(StoreError::Unavailable(error.clone())));
    }
    state.failing = Some((error, backoff));
    state.me.send_after(backoff, || StoreMsg::Retry);
}

/// Settles the units the database refused for good: a new task is not stored (its submit
/// is refused with the reason); a stored task whose change was refused is recorded failed
/// with the reason instead, when even that can be stored; a registry row or heartbeat is
/// dropped. Every such row is counted in `rejected_rows`, and the queue is told which
/// tasks it could not store. Returns the key holders found by the pieces that committed.
async fn take_refused(state: &mut WriterState, done: Split) -> Vec<KeyTaken> {
    let mut fresh = IdSet::default();
    let mut unstored = Vec::new();
    let mut heartbeats = Vec::new();
    let mut reasons: IdMap<String> = IdMap::default();
    for (unit, reason) in &done.refused {
        for key in unit {
            state.stats.rejected_rows.fetch_add(1, Ordering::Relaxed);
            match key {
                Key::Task(id) => {
                    let write = state.pending.tasks.remove(id);
                    state.pending.forget(&[*id]);
                    reasons.insert(*id, reason.clone());
                    match write {
                        Some(TaskWrite { new: Some(_), .. }) => {
                            fresh.insert(*id);
                        }
                        Some(TaskWrite {
                            new: None,
                            state: Some(s),
                        }) => {
                            record_failed(state, s, reason).await;
                            unstored.push(*id);
                        }
                        _ => tracing::error!(task_id = %id, %reason, "attempt rows dropped"),
                    }
                }
                Key::Worker(w) => {
                    state.pending.workers.remove(w);
                    tracing::error!(worker = %w, %reason, "worker registry row dropped");
                }
                Key::Node(n) => {
                    state.pending.nodes.remove(n);
                    tracing::error!(node = %n, %reason, "node registry row dropped");
                }
                Key::Heartbeat(i) => heartbeats.push(*i),
            }
        }
    }
    heartbeats.sort_unstable();
    for i in heartbeats.into_iter().rev() {
        if i < state.pending.heartbeats.len() {
            state.pending.heartbeats.remove(i);
            tracing::error!("worker heartbeat dropped: the database refused it");
        }
    }
    // Submits holding a refused new task are refused whole (their tasks form one unit).
    let (refused, kept): (Vec<Ack>, Vec<Ack>) = std::mem::take(&mut state.pending.acks)
        .into_iter()
        .partition(|ack| ack.submitted.iter().any(|s| fresh.contains(&s.id)));
    state.pending.acks = kept;
    for ack in refused {
        let reason = ack
            .submitted
            .iter()
            .find_map(|s| reasons.get(&s.id))
            .cloned()
            .unwrap_or_default();
        for s in &ack.submitted {
            fresh.remove(&s.id);
        }
        let error = format!("the database refused the task: {reason}");
        refuse(state, vec![ack], &error);
    }
    // New tasks without a waiting submit (buffered durability) go out of the queue too.
    for &id in &fresh {
        state.dropped.note(id, Fate::Lost);
    }
    unstored.extend(fresh);
    if !unstored.is_empty() {
        let _ = state.queue.send(QueueMsg::NotStored { ids: unstored });
    }
    done.taken
}

/// Stores a task whose change the database refused as failed, with the reason; when even
/// that is refused the task keeps its last stored state.
async fn record_failed(state: &mut WriterState, s: TaskState, reason: &str) {
    let id = s.id;
    let error = format!("not stored: the database refused this task's change: {reason}");
    let fallback = TaskState {
        status: TaskStatus::Failed,
        ready_at_ms: None,
        finished_at_ms: Some(ms(SystemTime::now())),
        result: None,
        error: Some(error.clone()),
        dead_seq: None,
        ..s
    };
    let batch = Batch {
        updates: vec![fallback],
        ..Batch::default()
    };
    match state.db.write(&batch).await {
        Ok(_) => {
            state.stats.commits.fetch_add(1, Ordering::Relaxed);
            tracing::error!(task_id = %id, %error, "task recorded failed");
        }
        Err(e) => tracing::error!(
            task_id = %id,
            %reason,
            error = %e,
            "task change dropped: the database refused it, and its failure too"
        ),
    }
}

/// Tasks the database would not store because another task holds their idempotency key
/// (made while the holder was neither stored nor in memory): they go back out of the queue,
/// like a refused submit, and their submits are answered with the holder. Returns each
/// left-out task's holder.
fn key_taken(state: &mut WriterState, taken: &[KeyTaken]) -> IdMap<TaskId> {
    let mut holders = IdMap::default();
    if taken.is_empty() {
        return holders;
    }
    for t in taken {
        tracing::warn!(
            task_id = %t.task,
            holder = %t.holder,
            "task not stored: another task holds its idempotency key"
        );
        holders.insert(t.task, t.holder);
        state.dropped.note(t.task, Fate::HeldBy(t.holder));
    }
    let ids = taken.iter().map(|t| t.task).collect();
    let _ = state.queue.send(QueueMsg::NotStored { ids });
    holders
}

/// Answers submits with an error and takes their new tasks back out of the queue.
fn refuse(state: &mut WriterState, acks: Vec<Ack>, error: &str) {
    let mut ids = Vec::new();
    for ack in acks {
        let fresh: Vec<TaskId> = ack
            .submitted
            .iter()
            .filter(|s| !s.existing)
            .map(|s| s.id)
            .collect();
        state.pending.forget(&fresh);
        for &id in &fresh {
            state.dropped.note(id, Fate::Lost);
        }
        ids.extend(fresh);
        let _ = ack.reply.send(Err(QueueError::NotStored {
            reason: error.to_string(),
        }));
    }
    if !ids.is_empty() {
        let _ = state.queue.send(QueueMsg::NotStored { ids });
    }
}
