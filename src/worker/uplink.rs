//! Where a worker gets its leases and sends its reports. A worker speaks the worker side
//! of the credit protocol to an [`Uplink`] and cannot tell which one it has: the queue in
//! its own process, or a node's agent that carries the same calls over the network to the
//! coordinator's queue. Each of those implements the trait where it lives, so this module
//! names neither.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use super::{AttemptReport, Capabilities, RoutingStrategy};
use crate::handler::ProgressSink;
use crate::task::{Lease, LeaseToken, TaskId};

/// One message of the worker side of the credit protocol. The queue and a node's agent
/// take the same six, so a worker cannot tell which one it talks to.
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
    /// A running attempt's progress, under the token of the lease it runs on: published
    /// only while that lease is the task's current one. Sent by node workers only (see
    /// [`Uplink::carries_progress`]); a local worker publishes on its event bus itself.
    Progress {
        worker: Arc<str>,
        task_id: TaskId,
        token: LeaseToken,
        fraction: f32,
        message: String,
    },
}

/// The far end of a worker's credit protocol: takes its calls, one message each. Calls
/// never wait; one that cannot be delivered is dropped (the queue's leases bring back
/// whatever it carried).
pub(crate) trait Uplink: Any + Send + Sync + fmt::Debug {
    /// Carries one call to the queue.
    fn call(&self, call: WorkerCall);

    /// Whether attempts' progress goes through this uplink (a node's agent, which carries
    /// it to the coordinator) rather than on the worker's own event bus. False for the
    /// queue in this process: its workers' bus is the coordinator's, so progress is
    /// published there directly, with no trip through the queue's mailbox.
    fn carries_progress(&self) -> bool {
        false
    }
}

/// Where the queue sends a worker's leases and cancellations. Local workers are actors;
/// remote ones are reached through their node.
pub(crate) trait LeaseSink: Send + Sync + fmt::Debug + 'static {
    /// Hands leases to the worker; gives them back if the worker is gone.
    fn deliver(&self, leases: Vec<Lease>) -> Result<(), Vec<Lease>>;
    /// Tells the worker to stop one attempt.
    fn cancel(&self, task_id: TaskId);
    /// How the queue spreads tasks over this worker and the others of its pool: its pool's
    /// strategy. Asked once, when the worker attaches. Workers reached through a node or
    /// the HTTP worker protocol keep the default, least-loaded.
    fn routing(&self) -> RoutingStrategy {
        RoutingStrategy::LeastLoaded
    }
}

/// Where a worker pulls tasks from: a handle to an uplink, shared by a pool's workers.
/// Build one from a [`QueueRef`](crate::QueueRef) (`queue.into()`); wherever one is asked
/// for, a `QueueRef` will do. Cloning shares it.
#[derive(Clone, Debug)]
pub struct UplinkRef(Arc<dyn Uplink>);

impl UplinkRef {
    /// A handle to `uplink`.
    pub(crate) fn new(uplink: impl Uplink) -> Self {
        Self(Arc::new(uplink))
    }

    /// The uplink itself, when it is a `T` (a pool asks whether its queue is in this
    /// process).
    pub(crate) fn downcast_ref<T: Uplink>(&self) -> Option<&T> {
        let any: &dyn Any = &*self.0;
        any.downcast_ref()
    }

    /// A worker (or a new incarnation of one) offers what it serves and its free slots.
    pub(crate) fn attach(
        &self,
        worker: Arc<str>,
        incarnation: u64,
        caps: Capabilities,
        credits: u32,
        sink: Arc<dyn LeaseSink>,
    ) {
        self.0.call(WorkerCall::Attach {
            worker,
            incarnation,
            caps,
            credits,
            sink,
        });
    }

    /// A worker is gone: its leases go back to the queue.
    pub(crate) fn detach(&self, worker: Arc<str>, incarnation: u64) {
        self.0.call(WorkerCall::Detach {
            worker,
            incarnation,
        });
    }

    /// A worker sets its credits outright (0 while draining).
    pub(crate) fn set_credits(&self, worker: Arc<str>, credits: u32) {
        self.0.call(WorkerCall::SetCredits { worker, credits });
    }

    /// Finished attempts, and the slots they freed.
    pub(crate) fn report(&self, worker: Arc<str>, reports: Vec<AttemptReport>, credits: u32) {
        self.0.call(WorkerCall::Report {
            worker,
            reports,
            credits,
        });
    }

    /// The worker still runs these attempts: extend their leases.
    pub(crate) fn extend(&self, worker: Arc<str>, leases: Vec<(TaskId, LeaseToken)>) {
        self.0.call(WorkerCall::Extend { worker, leases });
    }

    /// Where the attempts of a worker on this uplink send their progress: this uplink when
    /// it carries progress, else nowhere (they publish on the worker's bus).
    pub(crate) fn progress_sink(&self) -> Option<Arc<dyn ProgressSink>> {
        self.0
            .carries_progress()
            .then(|| Arc::new(self.clone()) as Arc<dyn ProgressSink>)
    }
}

impl ProgressSink for UplinkRef {
    fn progress(
        &self,
        worker: &Arc<str>,
        task_id: TaskId,
        token: LeaseToken,
        fraction: f32,
        message: String,
    ) {
        self.0.call(WorkerCall::Progress {
            worker: worker.clone(),
            task_id,
            token,
            fraction,
            message,
        });
    }
}
