//! The agent as its workers' uplink: their calls become wire changes, batched into one
//! `Up` frame per burst for the gate, and the leases and cancellations that come back go
//! to the right worker. Reports stay kept until the gate acknowledges them, and go again
//! after the next welcome if it never did.

use std::sync::Arc;
use std::time::Instant;

use ractor::ActorRef;

use super::agent::{AgentMsg, AgentState};
use super::oversized::refuse_oversized;
use super::progress::Note;
use crate::cluster::wire::{self, FromNode, Up};
use crate::task::{Lease, TaskId};
use crate::worker::{Capabilities, LeaseSink, Uplink, WorkerCall};

/// Frames go out once this many changes are waiting, even mid-burst.
const MAX_BATCH: usize = 512;

/// `Up` frames whose reports are kept until the gate acknowledges them, at most.
const MAX_UNACKED: usize = 4096;

/// The node's workers' way to the coordinator's queue: through the agent.
#[derive(Clone, Debug)]
pub(crate) struct AgentLink(pub(super) ActorRef<AgentMsg>);

impl Uplink for AgentLink {
    fn call(&self, call: WorkerCall) {
        let _ = self.0.cast(AgentMsg::Worker(call));
    }

    /// The node's own event bus is seen by no one on the coordinator: progress goes there.
    fn carries_progress(&self) -> bool {
        true
    }
}

/// A worker of this node, as the agent tracks it.
pub(super) struct LocalWorker {
    /// Which life of it announced itself last.
    incarnation: u64,
    /// What it serves, re-announced after each welcome.
    caps: Capabilities,
    /// Where its leases go.
    sink: Arc<dyn LeaseSink>,
    /// Free slots as far as the coordinator's leases and this worker's reports say.
    free: i64,
}

impl AgentState {
    /// A call from one of this node's workers: kept for the welcome's re-announce, and
    /// queued for the gate as a wire change.
    pub(super) fn worker_call(&mut self, call: WorkerCall) {
        match call {
            WorkerCall::Attach {
                worker,
                incarnation,
                caps,
                credits,
                sink,
            } => {
                let free = match self.workers.get(&worker) {
                    // The same incarnation announcing again (its handlers changed): leases
                    // already on their way to it are not in its own count of free slots,
                    // so the agent keeps its count, as the queue does. Taking the worker's
                    // would announce too many free slots after the next join.
                    Some(w) if w.incarnation == incarnation => w.free,
                    _ => i64::from(credits),
                };
                self.push(Up::Attach {
                    worker: worker.clone(),
                    incarnation,
                    caps: caps.clone(),
                    credits,
                    slots: self.args.slots,
                });
                self.workers.insert(
                    worker,
                    LocalWorker {
                        incarnation,
                        caps,
                        sink,
                        free,
                    },
                );
            }
            WorkerCall::Detach {
                worker,
                incarnation,
            } => {
                if self.workers.get(&worker).map(|w| w.incarnation) == Some(incarnation) {
                    self.workers.remove(&worker);
                }
                self.push(Up::Detach {
                    worker,
                    incarnation,
                });
            }
            WorkerCall::SetCredits { worker, credits } => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.free = i64::from(credits);
                }
                self.push(Up::Credits { worker, credits });
            }
            WorkerCall::Report {
                worker,
                mut reports,
                credits,
            } => {
                for r in &mut reports {
                    refuse_oversized(r);
                    // A progress report still held goes first, while the lease holds.
                    if let Some(note) = self.progress.finish(r.task_id) {
                        self.push(note.into_up());
                    }
                }
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.free += i64::from(credits);
                }
                // A frame carries whole changes: results finished together are cut into
                // several reports here, or they would make one frame past the limit (and
                // the coordinator would end the session, losing the node, every time). The
                // freed slots go with the last, once every attempt they belong to is
                // reported (the gate lets through no more slots than are free then).
                let mut parts = wire::batches(reports, wire::report_weight);
                if parts.is_empty() {
                    parts.push(Vec::new());
                }
                let last = parts.len() - 1;
                for (i, reports) in parts.into_iter().enumerate() {
                    self.push(Up::Report {
                        worker: worker.clone(),
                        reports,
                        credits: if i == last { credits } else { 0 },
                    });
                }
            }
            WorkerCall::Extend { worker, leases } => self.push(Up::Extend { worker, leases }),
            WorkerCall::Progress {
                worker,
                task_id,
                token,
                fraction,
                message,
            } => {
                if !self.joined {
                    // A snapshot: the next one, after the welcome, replaces it.
                    return;
                }
                let note = Note {
                    worker,
                    task_id,
                    token,
                    fraction,
                    message,
                };
                if let Some(note) = self.progress.offer(note, Instant::now()) {
                    self.push(note.into_up());
                }
                self.schedule_progress();
            }
        }
    }

    /// Held progress whose time came goes out; the next look is scheduled while any task
    /// is tracked.
    pub(super) fn progress_due(&mut self) {
        self.progress_scheduled = false;
        for note in self.progress.due(Instant::now()) {
            self.push(note.into_up());
        }
        self.schedule_progress();
    }

    /// Schedules the next look at held progress, unless one is scheduled or none is held.
    fn schedule_progress(&mut self) {
        if self.progress_scheduled {
            return;
        }
        if let Some(wait) = self.progress.next_due(Instant::now()) {
            self.progress_scheduled = true;
            self.myself.send_after(wait, || AgentMsg::ProgressDue);
        }
    }

    /// Queues a change for the gate; it goes out with the rest of its burst.
    pub(super) fn push(&mut self, up: Up) {
        if !self.joined {
            // Not registered: the welcome re-announces every worker as it is then. The
            // rest waits for the welcome and goes out before that announce: a gate that
            // restarted finds the leases still held by the queue, which needs the reports,
            // freed slots and detaches; a coordinator that restarted (a newer epoch) or
            // handed the leases out again refuses them by their fencing tokens.
            if !matches!(up, Up::Attach { .. }) {
                self.outbox.push(up);
            }
            return;
        }
        self.outbox.push(up);
        if self.outbox.len() >= MAX_BATCH {
            self.flush();
        } else if !self.flush_queued {
            self.flush_queued = true;
            let _ = self.myself.cast(AgentMsg::Flush);
        }
    }

    /// Sends the waiting changes, in frames the gate accepts.
    pub(super) fn flush(&mut self) {
        if self.outbox.is_empty() || !self.joined {
            return;
        }
        let items = std::mem::take(&mut self.outbox);
        for items in wire::batches(items, wire::up_weight) {
            self.seq += 1;
            let reports: Vec<Up> = items
                .iter()
                .filter(|u| matches!(u, Up::Report { .. }))
                .cloned()
                .collect();
            if !reports.is_empty() {
                if self.unacked.len() >= MAX_UNACKED {
                    // A gate that never acknowledges (it is not answering heartbeats
                    // either, and will be given up): keep the newest.
                    self.unacked.pop_front();
                }
                self.unacked.push_back((self.seq, reports));
            }
            let seq = self.seq;
            self.send(FromNode::Up { seq, items });
        }
    }

    /// Welcomed (again): what waited for the welcome goes out, then every worker is
    /// announced as it is now.
    pub(super) fn rejoined(&mut self) {
        // Reports a gate got and did not acknowledge go again, first: if it died
        // with them, the queue still holds their leases (a queue that handed them
        // out again, or recorded them already, ignores them). Their freed slots go
        // nowhere: the announce below sets each worker's free slots outright.
        let again: Vec<Up> = std::mem::take(&mut self.unacked)
            .into_iter()
            .flat_map(|(_, reports)| reports)
            .map(|up| match up {
                Up::Report {
                    worker, reports, ..
                } => Up::Report {
                    worker,
                    reports,
                    credits: 0,
                },
                other => other,
            })
            .collect();
        if !again.is_empty() {
            tracing::info!(frames = again.len(), "sending unacknowledged reports again");
        }
        let waiting = std::mem::take(&mut self.outbox);
        self.outbox = again;
        self.outbox.extend(waiting);
        let attach: Vec<Up> = self
            .workers
            .iter()
            .map(|(id, w)| Up::Attach {
                worker: id.clone(),
                incarnation: w.incarnation,
                caps: w.caps.clone(),
                credits: w.free.max(0) as u32,
                slots: self.args.slots,
            })
            .collect();
        for up in attach {
            self.push(up);
        }
        self.flush();
    }

    /// Leases from the queue for one of this node's workers.
    pub(super) fn deliver(&mut self, worker: &Arc<str>, leases: Vec<Lease>) {
        let Some(w) = self.workers.get_mut(worker) else {
            // The worker is gone; its detach returns these to the queue.
            tracing::debug!(%worker, count = leases.len(), "leases for a worker that is gone");
            return;
        };
        w.free -= leases.len() as i64;
        if let Err(returned) = w.sink.deliver(leases) {
            tracing::debug!(%worker, count = returned.len(), "worker refused leases");
        }
    }

    /// The queue cancelled a task one of this node's workers runs.
    pub(super) fn cancel(&self, worker: &Arc<str>, task_id: TaskId) {
        if let Some(w) = self.workers.get(worker) {
            w.sink.cancel(task_id);
        }
    }

    /// The gate applied every `Up` frame up to `up_to`: their reports need not go again.
    pub(super) fn acked(&mut self, up_to: u64) {
        while self.unacked.front().is_some_and(|(seq, _)| *seq <= up_to) {
            self.unacked.pop_front();
        }
    }
}
