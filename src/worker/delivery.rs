//! One delivery of leases, started as one task rather than one task per attempt.
//!
//! The task polls each attempt's handler once, in order. Attempts that end on that poll
//! (a no-op handler, a cache hit, a failure found at once) are reported back to the
//! worker together, in one message; an attempt still pending moves to a task of its own
//! and reports alone when it ends, so slow handlers still run side by side. Polling stops
//! for a turn once [`TURN`] has passed, so a long run of instant handlers shares its thread
//! with the runtime's other tasks: what ended so far is reported, the task yields, and the
//! rest of the delivery is polled on its next turn.
//!
//! A handler that blocks its thread in its first poll delays the attempts after it in the
//! same delivery (by that poll), where one task per attempt would have let other threads
//! start them meanwhile: as anywhere on a tokio runtime, blocking work belongs in
//! `tokio::task::spawn_blocking`.

use std::future::poll_fn;
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use super::actor::{Origin, WorkerMsg};
use super::run::{AttemptJob, Begun, Running};
use super::AttemptReport;
use crate::mailbox::Mailbox;
use crate::task::{LeaseToken, TaskId};

/// How long one turn of a delivery polls attempts before it lets other tasks run.
const TURN: Duration = Duration::from_micros(200);

/// A leased attempt, ready to start.
pub(crate) struct LeasedJob {
    /// The task.
    pub(crate) task_id: TaskId,
    /// The lease's token, which the report carries.
    pub(crate) token: LeaseToken,
    /// What to run.
    pub(crate) job: AttemptJob,
}

/// Starts a delivery's attempts on one task; ends are reported to `worker`.
pub(crate) fn spawn(jobs: Vec<LeasedJob>, worker: Mailbox<WorkerMsg>) {
    tokio::spawn(async move {
        let mut jobs = jobs.into_iter();
        loop {
            let mut ended = Vec::with_capacity(jobs.len());
            poll_fn(|cx| {
                // One clock reading per attempt: when it starts, and when the one before
                // it ended.
                let mut now = Instant::now();
                let turn_ends = now + TURN;
                for j in jobs.by_ref() {
                    match j.job.begin(cx, now) {
                        Begun::Ended(outcome) => ended.push(AttemptReport {
                            task_id: j.task_id,
                            token: j.token,
                            outcome,
                        }),
                        Begun::Running(running) => {
                            spawn_running(j.task_id, j.token, running, worker.clone())
                        }
                    }
                    now = Instant::now();
                    if now >= turn_ends {
                        break;
                    }
                }
                Poll::Ready(())
            })
            .await;
            // A worker that is gone takes no reports; its leases go back to the queue, and
            // the attempts not started yet are dropped with this task.
            if !ended.is_empty() && worker.send(WorkerMsg::Finished(ended)).is_err() {
                return;
            }
            if jobs.len() == 0 {
                return;
            }
            tokio::task::yield_now().await;
        }
    });
}

/// Runs an attempt that did not end on its first poll, in a task of its own.
fn spawn_running(task_id: TaskId, token: LeaseToken, running: Running, worker: Mailbox<WorkerMsg>) {
    tokio::spawn(async move {
        let outcome = running.finish().await;
        let _ = worker.send(WorkerMsg::Done {
            task_id,
            outcome,
            origin: Origin::Lease(token),
        });
    });
}
