//! The writer's side of a submit, in the store's own terms: the tasks of one submit to
//! store together ([`SubmitBatch`]), what became of them ([`BatchStored`]), and the way the
//! writer reports tasks it could not store to whoever owns them ([`Unstored`]).
//!
//! The writer decides nothing about submits: it says what the database took. The queue,
//! which hands these in, turns them into its answers.

use ractor::RpcReplyPort;

use super::db::KeyTaken;
use super::StoreError;
use crate::task::TaskId;

/// The tasks of one submit, answered once they are committed (or refused).
#[derive(Debug)]
pub(crate) struct SubmitBatch {
    /// The new tasks the submit made: stored together, or none of them.
    pub(crate) fresh: Vec<TaskId>,
    /// Tasks made by earlier submits that an idempotency key of this one matched; they may
    /// not be stored yet, so the answer waits for them too.
    pub(crate) matched: Vec<TaskId>,
    /// Where the answer goes.
    pub(crate) reply: RpcReplyPort<Result<BatchStored, StoreError>>,
}

impl SubmitBatch {
    /// Every task the answer names.
    pub(crate) fn tasks(&self) -> impl Iterator<Item = &TaskId> {
        self.fresh.iter().chain(&self.matched)
    }
}

/// What became of a [`SubmitBatch`] whose tasks the database took. A batch not stored is
/// answered with the [`StoreError`] instead.
#[derive(Debug, Default)]
pub(crate) struct BatchStored {
    /// Tasks of the batch that were not stored because another task holds their idempotency
    /// key in the database, each with that holder; the rest of the batch is stored.
    pub(crate) held: Vec<KeyTaken>,
}

impl BatchStored {
    /// The task holding the idempotency key `task` was left out for, if it was.
    pub(crate) fn holder(&self, task: TaskId) -> Option<TaskId> {
        self.held.iter().find(|t| t.task == task).map(|t| t.holder)
    }
}

/// Hears of tasks the writer could not store and will not try again (a commit that
/// failed under a submit waiting on it, rows the database refused for good, a key another
/// task holds), so that their owner takes them back out. The queue hands one to the
/// writer: the writer never names the queue.
pub(crate) trait Unstored: Send + Sync + 'static {
    /// These tasks are not stored.
    fn not_stored(&self, ids: Vec<TaskId>);
}
