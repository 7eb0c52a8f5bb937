//! How often a run's journal is committed against how soon its next steps start: the
//! workflow's checkpoint mode.

use serde::{Deserialize, Serialize};

/// When a step's outcome is committed to the journal, against when the steps it starts
/// begin: the balance of checkpoint frequency and speed. A run's end is committed before
/// its waiters hear of it in both modes; so are timers, child runs and steps resumed after
/// a pause or a restart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Checkpoint {
    /// A step's outcome is committed before any step it starts is queued: a crash runs
    /// again only the steps that were in flight, each with the input it had (at least
    /// once). Each step waits for one commit (about 0.4 to 1 ms on SQLite here).
    #[default]
    BeforeNext,
    /// The steps an outcome starts are queued while its journal round commits, so no step
    /// waits for a commit. A crash before that commit lands runs the finished step again
    /// and the steps started from it too (still at least once, under the same idempotency
    /// keys); if the finished step gives a different output the second time, those steps
    /// run again with it: use this for steps that give the same output for the same
    /// input, or whose effects are idempotent. Steps go ahead of the store by a few
    /// rounds at most: a store that stalls holds the run up, as it does in the default
    /// mode.
    Overlapped,
}

impl Checkpoint {
    pub(super) fn is_default(&self) -> bool {
        *self == Self::default()
    }
}
