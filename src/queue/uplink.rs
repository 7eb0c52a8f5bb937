//! The queue in this process as a worker's uplink: a worker's calls go straight into the
//! queue's mailbox.

use super::QueueRef;
use crate::worker::{Uplink, UplinkRef, WorkerCall};

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
