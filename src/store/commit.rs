//! What one commit means for the submits waiting on it: a commit that succeeds answers
//! them with what the database took; one that fails refuses those that must commit and
//! retries the rest with backoff; a batch the database refuses for good is written piece by
//! piece instead ([`super::split`]): the refused rows are left out, their submits refused,
//! their tasks recorded failed with the reason, and the rest committed. Every task that
//! will not be stored is reported through [`Unstored`](super::batch::Unstored).

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::batch::{BatchStored, SubmitBatch};
use super::db::KeyTaken;
use super::dropped::Fate;
use super::pending::{Batch, TaskWrite};
use super::rows::{ms, TaskState};
use super::split::{self, Key, Split};
use super::writer::{StoreMsg, WriterState};
use super::StoreError;
use crate::task::{IdMap, IdSet, TaskStatus};

/// Writes everything pending in one transaction, then answers the waiting submits.
pub(super) async fn commit(state: &mut WriterState) {
    if state.pending.is_empty() {
        return;
    }
    if state.pending.no_rows() && state.pending.acks.is_empty() && state.failing.is_none() {
        // Only flushes wait, and everything before them is committed.
        for reply in std::mem::take(&mut state.pending.flushes) {
            let _ = reply.send(Ok(()));
        }
        for reply in std::mem::take(&mut state.pending.journal_acks) {
            let _ = reply.send(Ok(()));
        }
        return;
    }
    let batch = state.pending.batch();
    let rows = (batch.inserts.len() + batch.updates.len()) as u64;
    let started = std::time::Instant::now();
    let written = state.db.write(&batch).await;
    state.stats.commit_latency.observe(started.elapsed());
    match written {
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
    state.rows_written += rows;
    if state.rows_written >= state.analyze_at {
        state.analyze_at = state.analyze_at.saturating_mul(8);
        let db = state.db.clone();
        tokio::spawn(async move {
            if let Err(e) = db.analyze().await {
                tracing::warn!(error = %e, "refreshing the database's statistics failed");
            }
        });
    }
    if state.failing.take().is_some() {
        tracing::info!("store writes succeed again");
        state.stats.healthy.store(true, Ordering::Relaxed);
    }
    state.pending.clear_rows();
    key_taken(state, taken);
    for batch in std::mem::take(&mut state.pending.acks) {
        let held = held(state, &batch);
        let _ = batch.reply.send(Ok(BatchStored { held }));
    }
    for reply in std::mem::take(&mut state.pending.flushes) {
        let _ = reply.send(Ok(()));
    }
    for reply in std::mem::take(&mut state.pending.journal_acks) {
        let _ = reply.send(Ok(()));
    }
}

/// The tasks of `batch` left out because another task holds their idempotency key, each
/// with that holder.
fn held(state: &WriterState, batch: &SubmitBatch) -> Vec<KeyTaken> {
    batch
        .tasks()
        .filter_map(|&task| {
            let holder = state.dropped.holder(task)?;
            Some(KeyTaken { task, holder })
        })
        .collect()
}

/// A commit failed for a reason a retry may cure: refuses the waiting submits and tries
/// the rest again after a backoff.
fn failed(state: &mut WriterState, e: sqlx::Error) {
    // A refusal of the leader's fence stays one (`StoreError::NotLeader`).
    let error = StoreError::from(e);
    state.stats.failures.fetch_add(1, Ordering::Relaxed);
    state.stats.healthy.store(false, Ordering::Relaxed);
    let backoff = match &state.failing {
        Some((_, last)) => (*last * 2).min(Duration::from_secs(5)),
        None => Duration::from_millis(100),
    };
    tracing::error!(error = %error, retry_in = ?backoff, "store commit failed");
    let acks = std::mem::take(&mut state.pending.acks);
    refuse(state, acks, &error);
    for reply in std::mem::take(&mut state.pending.flushes) {
        let _ = reply.send(Err(error.clone()));
    }
    state.failing = Some((error, backoff));
    state.me.send_after(backoff, || StoreMsg::Retry);
}

/// Settles the units the database refused for good: a new task is not stored (its submit
/// is refused with the reason); a stored task whose change was refused is recorded failed
/// with the reason instead, when even that can be stored; a registry row or heartbeat is
/// dropped. Every such row is counted in `rejected_rows`, and every task that will not be
/// stored is reported. Returns the key holders found by the pieces that committed.
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
                Key::Journal => {
                    // Nothing of the round is durable: the engine hears why and tries again.
                    state.pending.journal = Default::default();
                    tracing::error!(%reason, "workflow journal rows refused by the database");
                    for reply in std::mem::take(&mut state.pending.journal_acks) {
                        let _ = reply.send(Err(StoreError::Unavailable(format!(
                            "the database refused the workflow journal: {reason}"
                        ))));
                    }
                }
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
    let (refused, kept): (Vec<SubmitBatch>, Vec<SubmitBatch>) =
        std::mem::take(&mut state.pending.acks)
            .into_iter()
            .partition(|b| b.tasks().any(|id| fresh.contains(id)));
    state.pending.acks = kept;
    for batch in refused {
        let reason = batch
            .tasks()
            .find_map(|id| reasons.get(id))
            .cloned()
            .unwrap_or_default();
        for id in batch.tasks() {
            fresh.remove(id);
        }
        let error = StoreError::Unavailable(format!("the database refused the task: {reason}"));
        refuse(state, vec![batch], &error);
    }
    // New tasks without a waiting submit (buffered durability) are reported too.
    for &id in &fresh {
        state.dropped.note(id, Fate::Lost);
    }
    unstored.extend(fresh);
    if !unstored.is_empty() {
        state.unstored.not_stored(unstored);
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
/// (made while the holder was neither stored nor in memory): they are reported not stored,
/// like a refused submit, and remembered with their holder, which answers their submits.
fn key_taken(state: &mut WriterState, taken: &[KeyTaken]) {
    if taken.is_empty() {
        return;
    }
    for t in taken {
        tracing::warn!(
            task_id = %t.task,
            holder = %t.holder,
            "task not stored: another task holds its idempotency key"
        );
        state.dropped.note(t.task, Fate::HeldBy(t.holder));
    }
    state
        .unstored
        .not_stored(taken.iter().map(|t| t.task).collect());
}

/// Answers submits with an error and reports their new tasks not stored.
pub(super) fn refuse(state: &mut WriterState, batches: Vec<SubmitBatch>, error: &StoreError) {
    let mut ids = Vec::new();
    for batch in batches {
        state.pending.forget(&batch.fresh);
        for &id in &batch.fresh {
            state.dropped.note(id, Fate::Lost);
        }
        ids.extend_from_slice(&batch.fresh);
        let _ = batch.reply.send(Err(error.clone()));
    }
    if !ids.is_empty() {
        state.unstored.not_stored(ids);
    }
}
