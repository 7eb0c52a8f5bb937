//! The agent's side of the credit protocol, frame by frame: an agent state whose gate is a
//! local actor that hands every frame to the test.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc;

use ractor::BytesConvertable;

use super::agent::{AgentArgs, AgentMsg, AgentState};
use crate::cluster::gate::GateMsg;
use crate::cluster::net::{self, Connector};
use crate::cluster::wire::{FromGate, FromNode, Hello, NodeLoad, Up};
use crate::task::{Lease, Payload, TaskId};
use crate::worker::{AttemptOutcome, AttemptReport, Capabilities, LeaseSink, WorkerCall};

/// Stands in for the coordinator's gate: every frame goes to the test.
struct Tap;

impl Actor for Tap {
    type Msg = GateMsg;
    type State = mpsc::UnboundedSender<FromNode>;
    type Arguments = mpsc::UnboundedSender<FromNode>;

    async fn pre_start(
        &self,
        _myself: ActorRef<GateMsg>,
        tx: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(tx)
    }

    async fn handle(
        &self,
        _myself: ActorRef<GateMsg>,
        msg: GateMsg,
        tx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let GateMsg::Node { body, .. } = msg {
            let _ = tx.send(body);
        }
        Ok(())
    }
}

/// Stands in for the agent's own mailbox (the flushes it sends itself): the test flushes.
/// The connection attempts it is told to make go to the test.
struct Void;

impl Actor for Void {
    type Msg = AgentMsg;
    type State = mpsc::UnboundedSender<()>;
    type Arguments = mpsc::UnboundedSender<()>;

    async fn pre_start(
        &self,
        _myself: ActorRef<AgentMsg>,
        connects: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(connects)
    }

    async fn handle(
        &self,
        _myself: ActorRef<AgentMsg>,
        msg: AgentMsg,
        connects: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let AgentMsg::Connect = msg {
            let _ = connects.send(());
        }
        Ok(())
    }
}

/// A worker's sink that keeps what it is given.
#[derive(Debug, Default)]
struct Kept(Mutex<Vec<Lease>>);

impl LeaseSink for Kept {
    fn deliver(&self, leases: Vec<Lease>) -> Result<(), Vec<Lease>> {
        self.0.lock().unwrap().extend(leases);
        Ok(())
    }
    fn cancel(&self, _task_id: TaskId) {}
}

struct Rig {
    state: AgentState,
    /// Each `Connect` the agent sent itself (an attempt at the address it moved to).
    connects: mpsc::UnboundedReceiver<()>,
    frames: mpsc::UnboundedReceiver<FromNode>,
    sink: Arc<Kept>,
}

const W: &str = "n1/w-1";

impl Rig {
    /// An agent of node `n1`, joined, with worker `n1/w-1` (incarnation 1, 4 free slots).
    async fn joined() -> Self {
        Self::joined_to(&["127.0.0.1:9"]).await
    }

    /// [`Rig::joined`], given the coordinator `addresses` (joined to the first).
    async fn joined_to(addresses: &[&str]) -> Self {
        let (tx, frames) = mpsc::unbounded_channel();
        let (gate, _) = Actor::spawn(None, Tap, tx).await.unwrap();
        let (connects_tx, connects) = mpsc::unbounded_channel();
        let (void, _) = Actor::spawn(None, Void, connects_tx).await.unwrap();
        let server = net::start_server(
            "n1",
            "127.0.0.1:0".parse().unwrap(),
            "cookie",
            None,
            ractor_cluster::DEFAULT_MAX_INBOUND_FRAME_SIZE,
        )
        .await
        .unwrap();
        let connectors: Vec<Connector> = addresses
            .iter()
            .map(|address| Connector {
                server: server.clone(),
                address: address.to_string(),
                tls: None,
                timeout: Duration::from_secs(1),
            })
            .collect();
        let events = connectors[0].subscribe(|_| {});
        let args = AgentArgs {
            name: "n1".into(),
            hello: Hello {
                instance: 7,
                labels: Vec::new(),
                task_types: vec!["t".into()],
                address: "127.0.0.1:0".into(),
                version: "test".into(),
                capacity: 4,
            },
            connectors,
            heartbeat: Duration::from_millis(100),
            slots: 4,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(1),
            backlog: Default::default(),
        };
        let mut state = AgentState::new(args, void, events);
        state.gate = Some(gate);
        let sink = Arc::new(Kept::default());
        state.worker_call(attach(4, sink.clone()));
        let mut rig = Self {
            state,
            connects,
            frames,
            sink,
        };
        rig.welcome();
        // The welcome's announce of the worker.
        let ups = rig.ups_until_attach().await;
        assert!(
            matches!(ups[..], [Up::Attach { credits: 4, .. }]),
            "{ups:?}"
        );
        rig
    }

    fn welcome(&mut self) {
        self.state.on_frame(
            "coordinator",
            FromGate::Welcome {
                heartbeat_ms: 100,
                timeout_ms: 1000,
                key: 7,
            },
        );
    }

    fn leases(&mut self, count: usize) -> Vec<Lease> {
        let leases: Vec<Lease> = (0..count).map(|_| lease()).collect();
        self.state.on_frame(
            "coordinator",
            FromGate::Leases {
                worker: W.into(),
                leases: leases.clone(),
            },
        );
        assert_eq!(self.sink.0.lock().unwrap().len(), count);
        leases
    }

    /// Every change the agent sends, in order, up to and with the next attach.
    async fn ups_until_attach(&mut self) -> Vec<Up> {
        let mut ups = Vec::new();
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), self.frames.recv())
                .await
                .expect("no attach within 5 s")
                .expect("the tap is gone");
            let FromNode::Up { items, .. } = frame else {
                continue;
            };
            let done = items.iter().any(|u| matches!(u, Up::Attach { .. }));
            ups.extend(items);
            if done {
                return ups;
            }
        }
    }
}

fn attach(credits: u32, sink: Arc<Kept>) -> WorkerCall {
    WorkerCall::Attach {
        worker: W.into(),
        incarnation: 1,
        caps: Capabilities {
            task_types: HashSet::from([Arc::from("t")]),
            labels: Vec::new(),
        },
        credits,
        sink,
    }
}

fn lease() -> Lease {
    Lease {
        task_id: TaskId::new(),
        token: crate::task::LeaseToken {
            epoch: 1,
            attempt: 1,
            nonce: fastrand::u64(..),
        },
        task_type: "t".into(),
        payload: Payload::encode(&1).unwrap(),
        timeout: None,
        lease_time: None,
        trace_id: crate::task::TraceId::random(),
    }
}

fn completed(lease: &Lease, bytes: usize) -> AttemptReport {
    AttemptReport {
        task_id: lease.task_id,
        token: lease.token,
        outcome: AttemptOutcome::Completed(Payload::encode(&"x".repeat(bytes)).unwrap()),
    }
}

#[tokio::test]
async fn results_finished_together_go_out_in_frames_the_coordinator_accepts() {
    let mut rig = Rig::joined().await;
    let leases = rig.leases(3);
    // Three results of 7 MiB each, reported in one go (the worker batches its reports):
    // each fits in a frame, together they do not.
    let reports = leases.iter().map(|l| completed(l, 7 << 20)).collect();
    rig.state.worker_call(WorkerCall::Report {
        worker: W.into(),
        reports,
        credits: 3,
    });
    rig.state.flush();
    let (mut reported, mut credits) = (0, 0);
    while reported < 3 {
        let frame = tokio::time::timeout(Duration::from_secs(5), rig.frames.recv())
            .await
            .expect("all three reports sent within 5 s")
            .expect("the tap is gone");
        let bytes = rig.state.frame(frame.clone()).into_bytes().len();
        assert!(
            bytes < crate::CLUSTER_FRAME_BYTES,
            "a frame of {bytes} bytes: the coordinator drops the session of a peer that sends it"
        );
        let FromNode::Up { items, .. } = frame else {
            continue;
        };
        for up in items {
            if let Up::Report {
                reports,
                credits: c,
                ..
            } = up
            {
                reported += reports.len();
                credits += c;
            }
        }
    }
    assert_eq!(credits, 3, "every freed slot is returned, once");
}

#[tokio::test]
async fn a_worker_announcing_again_does_not_forget_the_leases_on_their_way_to_it() {
    let mut rig = Rig::joined().await;
    rig.leases(2);
    // Its handlers changed before it took the two leases from its mailbox: it counts 4 free.
    rig.state.worker_call(attach(4, rig.sink.clone()));
    rig.state.flush();
    rig.ups_until_attach().await;
    // After the next join the coordinator's queue believes what the agent announces.
    rig.state.on_frame("coordinator", FromGate::Rejoin);
    rig.welcome();
    let ups = rig.ups_until_attach().await;
    assert!(
        matches!(ups[..], [Up::Attach { credits: 2, .. }]),
        "two of four slots are taken: {ups:?}"
    );
}

#[tokio::test]
async fn what_workers_say_while_the_link_is_down_reaches_the_coordinator_after_the_welcome() {
    let mut rig = Rig::joined().await;
    let leases = rig.leases(2);
    // One attempt finishes just before the coordinator asks the node to join again (its
    // frame not yet sent), the other while the node is not joined.
    rig.state.worker_call(WorkerCall::Report {
        worker: W.into(),
        reports: vec![completed(&leases[0], 10)],
        credits: 1,
    });
    rig.state.on_frame("coordinator", FromGate::Rejoin);
    rig.state.worker_call(WorkerCall::Report {
        worker: W.into(),
        reports: vec![completed(&leases[1], 10)],
        credits: 1,
    });
    rig.welcome();
    // A gate that kept the worker's leases (it restarted; the queue did not) needs both
    // reports and their credits; one that handed them out again ignores them before the
    // attach starts the worker afresh with what is free.
    let ups = rig.ups_until_attach().await;
    let ids: Vec<TaskId> = ups
        .iter()
        .flat_map(|u| match u {
            Up::Report { reports, .. } => reports.iter().map(|r| r.task_id).collect(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(ids, vec![leases[0].task_id, leases[1].task_id], "{ups:?}");
    assert!(
        matches!(ups.last(), Some(Up::Attach { credits: 4, .. })),
        "the attach comes last, with every slot free: {ups:?}"
    );
}

#[tokio::test]
async fn a_node_that_left_does_not_say_hello_again_before_it_stops() {
    let mut rig = Rig::joined().await;
    let (tx, _farewell) = ractor::concurrency::oneshot();
    rig.state.leave(tx.into());
    // The agent ticks on until the node stops it (after the farewell, or 2 s without one).
    rig.state.tick().await;
    rig.state.on_frame("coordinator", FromGate::Rejoin);
    // A frame behind them: everything the agent sent before it has arrived.
    rig.state.send(FromNode::Heartbeat(NodeLoad::default()));
    let mut said = Vec::new();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), rig.frames.recv())
            .await
            .expect("the last frame within 5 s")
            .expect("the tap is gone");
        match frame {
            FromNode::Heartbeat(_) => break,
            FromNode::Hello(_) => said.push("hello"),
            FromNode::Leave => said.push("leave"),
            FromNode::Up { .. } => said.push("up"),
        }
    }
    assert_eq!(said, vec!["leave"]);
}

#[tokio::test]
async fn reports_a_gate_never_acknowledged_go_again_after_the_next_welcome() {
    let mut rig = Rig::joined().await;
    let leases = rig.leases(2);
    for (lease, acked) in [(&leases[0], true), (&leases[1], false)] {
        rig.state.worker_call(WorkerCall::Report {
            worker: W.into(),
            reports: vec![completed(lease, 10)],
            credits: 1,
        });
        rig.state.flush();
        let frame = rig.frames.recv().await.unwrap();
        let FromNode::Up { seq, .. } = frame else {
            panic!("{frame:?}");
        };
        if acked {
            // The gate applied it and said so with its answer to a heartbeat.
            rig.state.on_frame(
                "coordinator",
                FromGate::Ack {
                    up_to: seq,
                    backlog: 0,
                },
            );
        }
    }
    // The gate dies with the second report (a new one asks the node to join again).
    rig.state.on_frame("coordinator", FromGate::Rejoin);
    rig.welcome();
    let ups = rig.ups_until_attach().await;
    let again: Vec<(TaskId, u32)> = ups
        .iter()
        .flat_map(|u| match u {
            Up::Report {
                reports, credits, ..
            } => reports.iter().map(|r| (r.task_id, *credits)).collect(),
            _ => Vec::new(),
        })
        .collect();
    // Only the unacknowledged one, without its slot (the attach sets the free slots).
    assert_eq!(again, vec![(leases[1].task_id, 0)], "{ups:?}");
    assert!(
        matches!(ups.last(), Some(Up::Attach { credits: 4, .. })),
        "{ups:?}"
    );
    // Acknowledged now, a later welcome does not repeat it.
    let up_to = rig.state.seq;
    rig.state
        .on_frame("coordinator", FromGate::Ack { up_to, backlog: 0 });
    rig.state.on_frame("coordinator", FromGate::Rejoin);
    rig.welcome();
    let ups = rig.ups_until_attach().await;
    assert!(matches!(ups[..], [Up::Attach { .. }]), "{ups:?}");
}

#[tokio::test]
async fn a_silent_coordinator_is_given_up_for_the_next_address() {
    let mut rig = Rig::joined_to(&["127.0.0.1:9", "127.0.0.1:10"]).await;
    assert_eq!(rig.state.status.coordinator, "127.0.0.1:9");
    assert!(rig.state.status.joined);
    // Nothing heard for longer than the welcome's timeout (1 s).
    rig.state.last_heard = std::time::Instant::now() - Duration::from_secs(2);
    rig.state.tick().await;
    assert!(rig.state.gate.is_none() && !rig.state.joined);
    assert!(
        rig.state.connecting,
        "an attempt at the next address is scheduled"
    );
    assert_eq!(rig.state.connector().address(), "127.0.0.1:10");
    assert_eq!(rig.state.status.coordinator, "127.0.0.1:10");
}

#[tokio::test]
async fn a_refused_hello_moves_on_with_several_addresses_and_waits_with_one() {
    let refused = || FromGate::Refused {
        reason: "joined 11 times in the last minute".into(),
        retry_after_ms: 30_000,
    };
    let mut rig = Rig::joined_to(&["127.0.0.1:9", "127.0.0.1:10"]).await;
    rig.state.joined = false;
    rig.state.on_frame("coordinator", refused());
    assert!(rig.state.gate.is_none() && rig.state.hold_until.is_none());
    assert_eq!(rig.state.status.coordinator, "127.0.0.1:10");

    // Its only coordinator: it keeps the connection and says no hello until told to.
    let mut rig = Rig::joined().await;
    rig.state.joined = false;
    rig.state.on_frame("coordinator", refused());
    assert!(rig.state.gate.is_some() && rig.state.hold_until.is_some());
    assert_eq!(rig.state.status.coordinator, "127.0.0.1:9");
}

#[tokio::test(start_paused = true)]
async fn a_lost_coordinator_is_followed_by_the_next_address_at_once_and_a_failed_cycle_waits() {
    let mut rig = Rig::joined_to(&["127.0.0.1:9", "127.0.0.1:10"]).await;
    // How long until the agent's next connection attempt, on the paused clock.
    async fn next_attempt(rig: &mut Rig) -> Duration {
        let start = tokio::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(10), rig.connects.recv())
            .await
            .expect("an attempt within 10 s")
            .expect("the mailbox is gone");
        // What the agent does with its `Connect`.
        rig.state.connecting = false;
        start.elapsed()
    }
    // The coordinator it joined goes silent: the next address at once.
    rig.state.last_heard = std::time::Instant::now() - Duration::from_secs(2);
    rig.state.tick().await;
    assert_eq!(next_attempt(&mut rig).await, Duration::ZERO);
    assert_eq!(rig.state.status.coordinator, "127.0.0.1:10");
    // That one refuses the connection too: a whole cycle failed, so it waits
    // `reconnect_min` (100 ms, jittered by half either way) before the first again.
    rig.state.retry_later(false);
    let waited = next_attempt(&mut rig).await;
    assert!(
        (Duration::from_millis(50)..=Duration::from_millis(150)).contains(&waited),
        "{waited:?}"
    );
    assert_eq!(rig.state.status.coordinator, "127.0.0.1:9");
    // The first fails: on to the second at once; it fails: a longer wait (200 ms ± half).
    rig.state.retry_later(false);
    assert_eq!(next_attempt(&mut rig).await, Duration::ZERO);
    rig.state.retry_later(false);
    let waited = next_attempt(&mut rig).await;
    assert!(
        (Duration::from_millis(100)..=Duration::from_millis(300)).contains(&waited),
        "{waited:?}"
    );
}
