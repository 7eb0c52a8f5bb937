//! Where a worker gets its leases and sends its reports: the coordinator's queue itself
//! (workers in the coordinator's process), or the node agent of a node process, which
//! carries the same four calls over the network to the coordinator's queue.

use std::sync::Arc;

use super::{AttemptReport, Capabilities, LeaseSink, QueueRef};
use crate::cluster::AgentLink;

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
        match self {
            Self::Queue(q) => q.attach(worker, incarnation, caps, credits, sink),
            Self::Node(a) => a.attach(worker, incarnation, caps, credits, sink),
        }
    }

    /// A worker is gone: its leases go back to the queue.
    pub(crate) fn detach(&self, worker: Arc<str>, incarnation: u64) {
        match self {
            Self::Queue(q) => q.detach(worker, incarnation),
            Self::Node(a) => a.detach(worker, incarnation),
        }
    }

    /// A worker sets its credits outright (0 while draining).
    pub(crate) fn set_credits(&self, worker: Arc<str>, credits: u32) {
        match self {
            Self::Queue(q) => q.set_credits(worker, credits),
            Self::Node(a) => a.set_credits(worker, credits),
        }
    }

    /// Finished attempts, and the slots they freed.
    pub(crate) fn report(&self, worker: Arc<str>, reports: Vec<AttemptReport>, credits: u32) {
        match self {
            Self::Queue(q) => q.report(worker, reports, credits),
            Self::Node(a) => a.report(worker, reports, credits),
        }
    }
}
