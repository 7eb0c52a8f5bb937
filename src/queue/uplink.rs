//! Where a worker gets its leases and sends its reports: the coordinator's queue itself
//! (workers in the coordinator's process), or the node agent of a node process, which
//! carries the same calls over the network to the coordinator's queue.

use std::sync::Arc;

use super::{AttemptReport, Capabilities, LeaseSink, QueueRef};
use crate::cluster::AgentLink;
use crate::task::{LeaseToken, TaskId};

/// One message of the worker side of the credit protocol. The queue and a node's agent
/// take the same four, so a worker cannot tell which one it talks to.
pub(crate) enum WorkerCall {
    /// A worker (or a new incarnation of one) offers what it serves and its free slots;
    /// `sink` is where its leases go.
    Attach {
        worker: Arc<str>,
        incarnation: u64,
        caps: Capabilities,
        credits: u32,
        sink: Arc<dyn LeaseSink>,
    },
    /// A worker is gone: its leases go back to the queue.
    Detach { worker: Arc<str>, incarnation: u64 },
    /// A worker sets its free slots outright (0 while draining).
    SetCredits { worker: Arc<str>, credits: u32 },
    /// A worker's finished attempts, and the slots they freed.
    Report {
        worker: Arc<str>,
        reports: Vec<AttemptReport>,
        credits: u32,
    },
    /// A worker still runs these attempts: their leases (tasks without a timeout) last
    /// another `lease_time`.
    Extend {
        worker: Arc<str>,
        leases: Vec<(TaskId, LeaseToken)>,
    },
}

/// The worker side of the credit protocol, wherever the queue is.
#[derive(Clone, Debug)]
pub(crate) enum Uplink {
    /// The queue in this process.
    Queue(QueueRef),
    /// The coordinator's queue, through this node's agent.
    Node(AgentLink),
}

impl Uplink {
    /// A worker (or a new incarnation of one) offers what it serves and its free slots.
    pub(crate) fn attach(
        &self,
        worker: Arc<str>,
        incarnation: u64,
        caps: Capabilities,
        credits: u32,
        sink: Arc<dyn LeaseSink>,
    ) {
        self.send(WorkerCall::Attach {
            worker,
            incarnation,
            caps,
            credits,
            sink,
        });
    }

    /// A worker is gone: its leases go back to the queue.
    pub(crate) fn detach(&self, worker: Arc<str>, incarnation: u64) {
        self.send(WorkerCall::Detach {
            worker,
            incarnation,
        });
    }

    /// A worker sets its credits outright (0 while draining).
    pub(crate) fn set_credits(&self, worker: Arc<str>, credits: u32) {
        self.send(WorkerCall::SetCredits { worker, credits });
    }

    /// Finished attempts, and the slots they freed.
    pub(crate) fn report(&self, worker: Arc<str>, reports: Vec<AttemptReport>, credits: u32) {
        self.send(WorkerCall::Report {
            worker,
            reports,
            credits,
        });
    }

    /// The worker still runs these attempts: extend their leases.
    pub(crate) fn extend(&self, worker: Arc<str>, leases: Vec<(TaskId, LeaseToken)>) {
        self.send(WorkerCall::Extend { worker, leases });
    }

    fn send(&self, call: WorkerCall) {
        match self {
            Self::Queue(q) => q.worker_call(call),
            Self::Node(a) => a.worker_call(call),
        }
    }
}
