//! Holding a message's changes for the workflow engine's next journal round, so that a
//! step's completion, the next step's row and the round that journals them reach the
//! writer together and commit in one transaction.

use super::actor::{QueueMsg, QueueState};
use super::journal::{self, StoreLink};
use super::waiters::Waiting;

/// The hold, as the queue keeps it from one message to the next.
#[derive(Debug, Default)]
pub(super) struct JournalHold {
    /// Changes are held for a journal round: `Some(n)` after the `n`th hand-off to the
    /// writer, and `Nudge(n)` will end the hold.
    holding: Option<u64>,
    /// Hand-offs of changes to the writer so far.
    handoffs: u64,
    /// This message is a `Nudge` for a hold that already ended: changes held since stay.
    late_nudge: bool,
    /// This message submitted workflow steps (their rows may wait for a journal round):
    /// `Some(followed)`, as [`Waiter::Steps`](super::waiters::Waiter::Steps) says.
    pub(super) steps_submitted: Option<bool>,
}

impl JournalHold {
    /// A new message: nothing of it is known yet.
    pub(super) fn new_message(&mut self) {
        self.steps_submitted = None;
        self.late_nudge = false;
    }

    /// The `Nudge` set after the `n`th hand-off came: it ends that hold only.
    pub(super) fn nudged(&mut self, n: u64) {
        self.late_nudge = self.holding != Some(n);
    }
}

/// How long this message's changes wait for the engine's next journal round.
#[derive(Debug)]
enum Hold {
    /// They go to the writer now.
    No,
    /// Up to [`HOLD_FOR_JOURNAL`]: a step's completion (its round comes at once), or steps
    /// whose commit the engine waits on.
    Briefly,
    /// Until the next round or any other write, however long: new steps the engine follows
    /// without waiting for their rows (a crash before their commit loses nothing: the
    /// journal says they started, and recovery submits them again under the same keys).
    /// Their rows ride with the round of their own completion, if nothing goes first.
    UntilRound,
}

/// The longest a workflow step's completion waits for the engine's journal round before it
/// goes to the writer on its own. The round comes well within it; without the hold they
/// would be transactions in a row, each on the step's path.
const HOLD_FOR_JOURNAL: std::time::Duration = std::time::Duration::from_millis(2);

/// Whether this message's changes wait for a journal round: they do when it submitted
/// workflow steps or finished tasks that are all workflow steps (a round will follow and
/// carry them to the writer in one transaction), and no other submit waits on the next
/// commit.
fn hold(state: &QueueState) -> Hold {
    let finished = &state.core.out.finished;
    let holds = (state.hold.steps_submitted.is_some() || !finished.is_empty())
        && state.store.as_ref().is_some_and(StoreLink::may_hold)
        && finished
            .iter()
            .all(|(id, _)| state.waiters.get(id).is_some_and(Waiting::is_steps));
    match (holds, state.hold.steps_submitted) {
        (false, _) => Hold::No,
        (true, Some(true)) if finished.is_empty() => Hold::UntilRound,
        (true, _) => Hold::Briefly,
    }
}

/// Hands this message's changes to the writer, or holds them for the engine's round.
pub(super) fn send_or_hold(state: &mut QueueState) {
    match hold(state) {
        // Held since: its own `Nudge` ends that hold.
        Hold::No if state.hold.late_nudge => {}
        Hold::No => {
            journal::send_writes(state);
            state.hold.holding = None;
            state.hold.handoffs += 1;
        }
        Hold::Briefly if state.hold.holding.is_none() => {
            let n = state.hold.handoffs;
            state.hold.holding = Some(n);
            state
                .me
                .send_after(HOLD_FOR_JOURNAL, move || QueueMsg::Nudge(n));
        }
        Hold::Briefly | Hold::UntilRound => {}
    }
}
