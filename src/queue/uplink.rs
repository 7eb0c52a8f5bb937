//! The queue in this process as a worker's uplink: a worker's calls go straight into the
//! queue's mailbox.

use super::{QueueMsg, QueueRef};
use crate::worker::{Uplink, UplinkRef, WorkerCall};

impl QueueRef {
    /// A call of the worker side of the credit protocol, from a local worker or, through
    /// the gate, a node's.
    pub(crate) fn worker_call(&self, call: WorkerCall) {
        let _ = self.mailbox.send(QueueMsg::Worker(call));
    }
}

impl Uplink for QueueRef {
    fn call(&self, call: WorkerCall) {
        self.worker_call(call);
    }
}

impl From<QueueRef> for UplinkRef {
    fn from(queue: QueueRef) -> Self {
        UplinkRef::new(queue)
    }
}
