//! The gate's join rate limit and its local messages.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ractor::BytesConvertable;

use super::*;

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
