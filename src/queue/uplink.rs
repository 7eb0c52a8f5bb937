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

    /// A pulling worker asks for up to `credits` tasks: answers once what the queue could
    /// lease it now is delivered to its sink.
    pub(crate) async fn pull(
        &self,
        worker: std::sync::Arc<str>,
        credits: u32,
    ) -> Result<(), crate::Error> {
        self.mailbox
            .call(
                |reply| QueueMsg::Pull {
                    worker,
                    credits,
                    reply,
                },
                None,
                super::QUEUE,
            )
            .await
    }

    /// A worker call whose caller hears back: the tasks whose reports or lease extensions
    /// were refused because their token was not the current lease's.
    pub(crate) async fn worker_call_checked(
        &self,
        call: WorkerCall,
    ) -> Result<Vec<crate::task::TaskId>, crate::Error> {
        self.mailbox
            .call(
                |reply| QueueMsg::Checked { call, reply },
                None,
                super::QUEUE,
            )
            .await
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
