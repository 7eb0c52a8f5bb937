//! The gate's side of remote workers: their changes applied to the queue, and the sink
//! through which the queue sends them leases over their node's session.

use std::sync::Arc;

use ractor::ActorRef;

use super::credits::Ledger;
use super::nodes::{NodeEntry, RemoteWorker};
use super::GateArgs;
use crate::cluster::net::{session_of, SessionId, SessionTable};
use crate::cluster::node::{agent_group, AgentMsg};
use crate::cluster::stats::ClusterCounters;
use crate::cluster::wire::{self, FromGate, Up};
use crate::task::{Lease, TaskId};
use crate::worker::{LeaseSink, WorkerCall};

/// Applies one worker-side change from an online node.
pub(super) fn apply(
    args: &GateArgs,
    from: &str,
    node: &mut NodeEntry,
    agent: &ActorRef<AgentMsg>,
    item: Up,
) {
    let worker = match &item {
        Up::Attach { worker, .. }
        | Up::Detach { worker, .. }
        | Up::Credits { worker, .. }
        | Up::Report { worker, .. }
        | Up::Extend { worker, .. }
        | Up::Progress { worker, .. } => worker.clone(),
    };
    // A node speaks only for its own workers: `node/w-N`.
    if worker.split_once('/').map(|(n, _)| n) != Some(from) {
        tracing::warn!(node = %from, %worker, "ignored a change for a worker of another node");
        return;
    }
    match item {
        Up::Attach {
            worker,
            incarnation,
            caps,
            credits,
            slots,
        } => {
            // Its slots, within what the node's capacity leaves after its other workers.
            let others: u64 = node
                .workers
                .iter()
                .filter(|(id, _)| **id != worker)
                .map(|(_, w)| u64::from(w.ledger.slots))
                .sum();
            let left = u64::from(node.hello.capacity).saturating_sub(others);
            let allowed = u64::from(slots).min(left) as u32;
            let mut ledger = Ledger::new(allowed);
            // A drained node's workers attach with no credits.
            let credits = if node.draining { 0 } else { credits };
            let passed = ledger.attach(credits);
            if allowed < slots || passed < credits {
                clamped(args, from, &worker, "attach", credits, passed);
            }
            let sink = Arc::new(RemoteSink {
                agent: agent.clone(),
                worker: worker.clone(),
                from: args.name.clone(),
                delivered: ledger.delivered(),
            });
            node.workers.insert(
                worker.clone(),
                RemoteWorker {
                    incarnation,
                    ledger,
                },
            );
            node.task_types.extend(caps.task_types.iter().cloned());
            let credits = passed;
            args.queue.worker_call(WorkerCall::Attach {
                worker,
                incarnation,
                caps,
                credits,
                sink,
            });
        }
        Up::Detach {
            worker,
            incarnation,
        } => {
            if node.workers.get(&worker).map(|w| w.incarnation) == Some(incarnation) {
                node.workers.remove(&worker);
            }
            args.queue.worker_call(WorkerCall::Detach {
                worker,
                incarnation,
            });
        }
        Up::Credits { worker, credits } => {
            let credits = if node.draining { 0 } else { credits };
            // A worker that is not attached has no credits to set.
            let Some(w) = node.workers.get_mut(&worker) else {
                return;
            };
            let passed = w.ledger.set(credits);
            if passed < credits {
                clamped(args, from, &worker, "credits", credits, passed);
            }
            args.queue.worker_call(WorkerCall::SetCredits {
                worker,
                credits: passed,
            })
        }
        Up::Report {
            worker,
            reports,
            credits,
        } => {
            // The reports always go through; the slots they free only up to the worker's,
            // and none while the node is drained.
            let credits = if node.draining { 0 } else { credits };
            let passed = match node.workers.get_mut(&worker) {
                Some(w) => w.ledger.report(reports.len(), credits),
                None => 0,
            };
            if passed < credits {
                clamped(args, from, &worker, "report", credits, passed);
            }
            args.queue.worker_call(WorkerCall::Report {
                worker,
                reports,
                credits: passed,
            })
        }
        Up::Extend { worker, leases } => args
            .queue
            .worker_call(WorkerCall::Extend { worker, leases }),
        Up::Progress {
            worker,
            task_id,
            token,
            fraction,
            mut message,
        } => {
            // The node cuts its messages; one that did not is cut here, not trusted.
            wire::cap_progress(&mut message);
            // The queue publishes it only if this worker holds the task's current lease
            // under this token; otherwise it is dropped and counted (`stale_progress`).
            args.queue.worker_call(WorkerCall::Progress {
                worker,
                task_id,
                token,
                fraction: wire::clean_fraction(fraction),
                message,
            })
        }
    }
}

/// Counts and logs credits asked for past a worker's slots or its node's capacity.
fn clamped(args: &GateArgs, node: &str, worker: &str, change: &str, asked: u32, passed: u32) {
    ClusterCounters::bump(&args.counters.credits_clamped);
    tracing::warn!(
        %node,
        %worker,
        change,
        asked,
        passed,
        "credits past the worker's declared slots or its node's capacity: clamped"
    );
}

/// The agent of node `node`, found through its process group, on a session authenticated
/// under that name: whoever else joins the group (any peer can) is not it. When the node has
/// agents on several sessions (it connected again), the newest other than `registered` (the
/// one it is registered through) is the one saying hello.
pub(super) fn find_agent(
    node: &str,
    sessions: &SessionTable,
    registered: Option<ractor::ActorId>,
) -> Option<ActorRef<AgentMsg>> {
    let mut bound: Vec<(SessionId, ractor::ActorCell)> =
        ractor::pg::get_members(&agent_group(node))
            .into_iter()
            .filter_map(|cell| {
                let session = session_of(&cell)?;
                (sessions.name_of(session).as_deref() == Some(node)).then_some((session, cell))
            })
            .collect();
    bound.sort_by_key(|(session, _)| *session);
    let newest_other = bound
        .iter()
        .rev()
        .find(|(_, cell)| Some(cell.get_id()) != registered);
    newest_other
        .or_else(|| bound.last())
        .map(|(_, cell)| ActorRef::from(cell.clone()))
}

/// Where the queue sends a remote worker's leases: over its node's session.
struct RemoteSink {
    agent: ActorRef<AgentMsg>,
    worker: Arc<str>,
    from: Arc<str>,
    /// Leases delivered, for the worker's ledger.
    delivered: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for RemoteSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSink")
            .field("worker", &self.worker)
            .finish()
    }
}

impl LeaseSink for RemoteSink {
    fn deliver(&self, leases: Vec<Lease>) -> Result<(), Vec<Lease>> {
        use ractor::ActorStatus::{Stopped, Stopping};
        if matches!(self.agent.get_status(), Stopping | Stopped) {
            return Err(leases);
        }
        self.delivered
            .fetch_add(leases.len() as u64, std::sync::atomic::Ordering::Relaxed);
        // If the session dies with these on the way, the node is lost and its workers'
        // leases go back to the queue then.
        for batch in wire::batches(leases, |l| l.payload.len()) {
            let _ = self.agent.cast(AgentMsg::Coordinator {
                from: self.from.to_string(),
                body: FromGate::Leases {
                    worker: self.worker.clone(),
                    leases: batch,
                },
            });
        }
        Ok(())
    }

    fn cancel(&self, task_id: TaskId) {
        let _ = self.agent.cast(AgentMsg::Coordinator {
            from: self.from.to_string(),
            body: FromGate::Cancel {
                worker: self.worker.clone(),
                task_id,
            },
        });
    }
}
