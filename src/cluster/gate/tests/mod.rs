//! The gate's join rate limit and its local messages.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, BytesConvertable};

use super::join::admit;
use super::nodes::{oldest_departed, NodeEntry, NodeStatus};
use super::*;
use crate::cluster::wire::{Hello, NodeLoad};

mod progress;

#[test]
fn a_flapping_node_is_refused_until_its_oldest_join_ages_out() {
    let start = Instant::now();
    let mut joins = VecDeque::new();
    for i in 0..3 {
        let at = start + Duration::from_secs(i * 10);
        assert_eq!(admit(&mut joins, at, 3), Ok(()));
        joins.push_back(at);
    }
    // A fourth join 30 s in: the first (at 0 s) leaves the window at 60 s.
    let at = start + Duration::from_secs(30);
    assert_eq!(admit(&mut joins, at, 3), Err(Duration::from_secs(30)));
    // Past the window, it is admitted again.
    let at = start + Duration::from_secs(61);
    assert_eq!(admit(&mut joins, at, 3), Ok(()));
    assert_eq!(joins.len(), 2, "the join at 0 s aged out");
}

#[test]
fn local_requests_never_go_on_the_wire_and_garbage_decodes_as_malformed() {
    let (tx, _rx) = ractor::concurrency::oneshot();
    let local = GateMsg::Nodes(tx.into());
    let bytes = local.into_bytes();
    assert!(bytes.is_empty());
    let GateMsg::Malformed(bad) = GateMsg::from_bytes(bytes) else {
        panic!("an empty frame decoded as a message");
    };
    assert_eq!(bad.from, None);
}

#[test]
fn only_the_departed_nodes_heard_from_longest_ago_are_forgotten() {
    let start = Instant::now();
    let at = |s| start + Duration::from_secs(s);
    let nodes = [
        ("old-online", NodeStatus::Online, at(0)),
        ("lost-1", NodeStatus::Lost, at(1)),
        ("left-2", NodeStatus::Left, at(2)),
        ("lost-3", NodeStatus::Lost, at(3)),
    ];
    assert!(oldest_departed(nodes.into_iter(), 3).is_empty());
    let mut gone = oldest_departed(nodes.into_iter(), 1);
    gone.sort();
    assert_eq!(gone, vec!["left-2".to_string(), "lost-1".to_string()]);
}

/// Stands in for a node's agent.
struct Quiet;

impl Actor for Quiet {
    type Msg = AgentMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<AgentMsg>,
        _: (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

/// A gate's state with node `n1` online on session `session`.
async fn gate_with_node_on(session: SessionId) -> GateState {
    let (queue, _) = crate::queue::QueueRef::spawn(crate::queue::QueueConfig::default())
        .await
        .unwrap();
    let (agent, _) = Actor::spawn(None, Quiet, ()).await.unwrap();
    gate_with(queue, agent, session)
}

/// A gate's state over `queue`, with node `n1` online on session `session` through `agent`,
/// under session key 9.
fn gate_with(queue: QueueRef, agent: ActorRef<AgentMsg>, session: SessionId) -> GateState {
    let args = GateArgs {
        name: "coordinator".into(),
        queue,
        events: EventBus::default(),
        heartbeat: Duration::from_millis(100),
        timeout: Duration::from_secs(1),
        max_joins_per_minute: 10,
        server: None,
        sessions: SessionTable::default(),
        remote_types: Default::default(),
        load: Default::default(),
        counters: Default::default(),
    };
    let mut state = GateState {
        args,
        nodes: HashMap::new(),
        anonymous_bad_frames: 0,
    };
    let hello = Hello {
        instance: 1,
        labels: Vec::new(),
        task_types: Vec::new(),
        address: "127.0.0.1:1".into(),
        version: "test".into(),
        capacity: 4,
    };
    state.nodes.insert(
        "n1".into(),
        NodeEntry {
            hello,
            agent,
            session: Some(session),
            key: 9,
            status: NodeStatus::Online,
            last_seen: Instant::now(),
            workers: HashMap::new(),
            task_types: Default::default(),
            load: NodeLoad::default(),
            joins: VecDeque::new(),
            total_joins: 1,
            bad_frames: 0,
            lost_reason: None,
            told_rejoin: false,
            up_to: 0,
            draining: false,
            backlog_share: 0,
        },
    );
    state
}

#[tokio::test]
async fn each_node_gets_its_share_of_the_classes_it_serves_by_capacity() {
    let mut state = gate_with_node_on(1).await;
    let agent = state.nodes["n1"].agent.clone();
    let mut gpu = gate_with(state.args.queue.clone(), agent, 2)
        .nodes
        .remove("n1")
        .unwrap();
    gpu.key = 10;
    gpu.hello.labels = vec!["gpu=a100".into()];
    gpu.hello.capacity = 12;
    state.nodes.insert("n2".into(), gpu);
    for n in state.nodes.values_mut() {
        n.task_types = ["t".into()].into_iter().collect();
    }
    let class = |task_type: &str, labels: &[&str], queued| crate::queue::ClassBacklog {
        task_type: task_type.into(),
        labels: labels.iter().map(|l| l.to_string()).collect(),
        queued,
        routable: true,
    };
    let classes = [
        class("t", &[], 16),          // both serve it: 4 and 12 slots
        class("t", &["gpu"], 7),      // only n2
        class("u", &[], 100),         // nobody
        class("t", &["gpu=h100"], 5), // nobody
    ];
    state.share_backlog(&classes);
    assert_eq!(state.nodes["n1"].backlog_share, 4);
    assert_eq!(state.nodes["n2"].backlog_share, 12 + 7);
    // A drained node gets no share: the others get it all.
    state.nodes.get_mut("n2").unwrap().draining = true;
    state.share_backlog(&classes);
    assert_eq!(state.nodes["n1"].backlog_share, 16);
    assert_eq!(state.nodes["n2"].backlog_share, 0);
}

#[tokio::test]
async fn the_late_close_of_a_nodes_old_session_does_not_lose_it() {
    // n1 connected again (session 2) before its first session (1) was seen to close; the
    // close of session 1 arrives now, after n1 moved to session 2.
    let mut state = gate_with_node_on(2).await;
    state.session_closed("n1", 1);
    assert_eq!(state.nodes["n1"].status, NodeStatus::Online);
    assert_eq!(state.args.counters.snapshot().lost, 0);
    // The close of the session it is on loses it.
    state.session_closed("n1", 2);
    assert_eq!(state.nodes["n1"].status, NodeStatus::Lost);
    assert_eq!(state.args.counters.snapshot().lost, 1);
}

#[tokio::test]
async fn frames_naming_a_node_without_its_key_are_refused() {
    let mut state = gate_with_node_on(1).await;
    state.on_frame("n1".into(), 8, FromNode::Leave);
    state.on_frame("n1".into(), wire::NO_KEY, FromNode::Leave);
    assert_eq!(state.nodes["n1"].status, NodeStatus::Online);
    assert_eq!(state.args.counters.snapshot().forged_frames, 2);
    state.on_frame("n1".into(), 9, FromNode::Leave);
    assert_eq!(state.nodes["n1"].status, NodeStatus::Left);
}
