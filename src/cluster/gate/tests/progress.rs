//! Progress from a node's worker reaches the coordinator's event bus only when it answers
//! the task's current lease, held by that worker of that node.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc;

use super::gate_with;
use crate::cluster::node::AgentMsg;
use crate::cluster::wire::{FromGate, FromNode, Up, MAX_PROGRESS_BYTES};
use crate::events::{EventBus, EventKind};
use crate::queue::{QueueConfig, QueueRef};
use crate::task::{Lease, LeaseToken, TaskId, TaskSpec};
use crate::worker::Capabilities;

/// Stands in for a node's agent: the leases the gate sends it go to the test.
struct Catch;

impl Actor for Catch {
    type Msg = AgentMsg;
    type State = mpsc::UnboundedSender<Lease>;
    type Arguments = mpsc::UnboundedSender<Lease>;

    async fn pre_start(
        &self,
        _myself: ActorRef<AgentMsg>,
        tx: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(tx)
    }

    async fn handle(
        &self,
        _myself: ActorRef<AgentMsg>,
        msg: AgentMsg,
        tx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let AgentMsg::Coordinator {
            body: FromGate::Leases { leases, .. },
            ..
        } = msg
        {
            for lease in leases {
                let _ = tx.send(lease);
            }
        }
        Ok(())
    }
}

fn up(seq: u64, item: Up) -> FromNode {
    FromNode::Up {
        seq,
        items: vec![item],
    }
}

fn progress(worker: &str, task_id: TaskId, token: LeaseToken, message: String) -> Up {
    Up::Progress {
        worker: worker.into(),
        task_id,
        token,
        fraction: 0.5,
        message,
    }
}

#[tokio::test]
async fn progress_is_published_only_under_the_current_lease_of_its_worker() {
    let events = EventBus::default();
    let mut seen = events.subscribe();
    let (queue, _) = QueueRef::spawn_inner(QueueConfig::default(), events, None, None)
        .await
        .unwrap();
    let (tx, mut leases) = mpsc::unbounded_channel();
    let (agent, _) = Actor::spawn(None, Catch, tx).await.unwrap();
    let mut gate = gate_with(queue.clone(), agent, 1);
    let attach = |worker: &str| Up::Attach {
        worker: worker.into(),
        incarnation: 1,
        caps: Capabilities {
            task_types: HashSet::from([Arc::from("echo")]),
            labels: Vec::new(),
        },
        credits: 1,
        slots: 1,
    };
    gate.on_frame("n1".into(), 9, up(1, attach("n1/w-1")));
    let id = queue
        .submit(TaskSpec::new("echo", &1).unwrap())
        .await
        .unwrap()
        .id;
    let lease = tokio::time::timeout(Duration::from_secs(5), leases.recv())
        .await
        .expect("a lease")
        .unwrap();
    assert_eq!(lease.task_id, id);
    // n1's other worker, attached after the lease went to w-1, holds no lease.
    gate.on_frame("n1".into(), 9, up(2, attach("n1/w-2")));

    let stale = LeaseToken {
        nonce: lease.token.nonce ^ 1,
        ..lease.token
    };
    let earlier = LeaseToken {
        attempt: lease.token.attempt - 1,
        ..lease.token
    };
    let frames = [
        // A token that is not the lease's (forged, or from before a restart).
        progress("n1/w-1", id, stale, "stale".into()),
        // An attempt before the current one.
        progress("n1/w-1", id, earlier, "earlier".into()),
        // The right token from a worker that does not hold the lease.
        progress("n1/w-2", id, lease.token, "not mine".into()),
        // A worker of another node: the gate ignores it before the queue sees it.
        progress("n2/w-1", id, lease.token, "other node".into()),
        // The holder, with a message far past the limit.
        progress("n1/w-1", id, lease.token, "é".repeat(MAX_PROGRESS_BYTES)),
    ];
    for (seq, item) in (3..).zip(frames) {
        gate.on_frame("n1".into(), 9, up(seq, item));
    }
    // A frame without n1's session key is refused whole.
    gate.on_frame(
        "n1".into(),
        8,
        up(9, progress("n1/w-1", id, lease.token, "forged".into())),
    );
    // The queue has handled every frame once it answers this.
    let stats = queue.stats().await.unwrap();
    assert_eq!(stats.stale_progress, 3, "{stats:?}");
    assert_eq!(stats.stale_reports, 0, "progress is not a report");

    let mut published = Vec::new();
    while let Ok(event) = seen.try_recv() {
        if let EventKind::TaskProgress {
            id: task,
            fraction,
            message,
        } = &event.kind
        {
            published.push((*task, *fraction, message.clone()));
        }
    }
    assert_eq!(published.len(), 1, "only the holder's: {published:?}");
    let (task, fraction, message) = &published[0];
    assert_eq!((*task, *fraction), (id, 0.5));
    // Cut on a character boundary: 'é' is two bytes.
    assert_eq!(message, &"é".repeat(MAX_PROGRESS_BYTES / 2));
    assert_eq!(gate.args.counters.snapshot().forged_frames, 1);
}
