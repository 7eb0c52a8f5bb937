//! The counters `/metrics` shows of a group: drains and undrains, drain times from a drain's
//! start to its node's termination, and nodes that never joined apart from launch errors.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::*;

static NEXT: AtomicU32 = AtomicU32::new(0);

fn numbered(group: &str) -> String {
    format!("{group}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn plan() -> Plan {
    Plan::with_names(
        NodeGroupConfig {
            max_nodes: 2,
            join_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(20),
            launch_backoff: Duration::from_secs(1),
            ..NodeGroupConfig::new("gpu")
        },
        numbered,
    )
}

/// Node `name` online with `in_flight` tasks, run by the provider as resource `r1`.
fn online(name: &str, in_flight: u64) -> Observed {
    let view = NodeView {
        online: true,
        in_flight,
        slots: 2,
        mailbox: 0,
    };
    Observed {
        queued: 0,
        nodes: HashMap::from([(name.to_string(), view)]),
        resources: Some(vec![Resource {
            id: "r1".into(),
            node: name.to_string(),
        }]),
    }
}

#[test]
fn a_drain_is_timed_from_its_start_to_the_termination_and_an_undrain_starts_it_over() {
    let mut p = plan();
    let mut now = Instant::now();
    let name = match &p.manual(1, now).unwrap()[..] {
        [Action::Launch { name }] => name.clone(),
        other => panic!("{other:?}"),
    };
    p.launched(&name, Ok("r1".into()), now);
    p.tick(now, &online(&name, 1));
    assert_eq!(p.members[&name].state, MemberState::Running);
    // Drained by hand with a task in flight: undone at drain_timeout, and not timed.
    let drain = vec![Action::Drain { name: name.clone() }];
    assert_eq!(p.manual(0, now).unwrap(), drain);
    p.tick(now, &online(&name, 1));
    now += Duration::from_secs(20);
    let undrain = vec![Action::Undrain { name: name.clone() }];
    assert_eq!(p.tick(now, &online(&name, 1)), undrain);
    assert_eq!((p.counts.drains, p.counts.undrains), (1, 1));
    // Drained again, now idle: stopped 3 s later, gone half a second after that.
    now += Duration::from_secs(1);
    assert_eq!(p.manual(0, now).unwrap(), drain);
    p.tick(now, &online(&name, 0));
    now += Duration::from_secs(3);
    let terminate = vec![Action::Terminate {
        name: name.clone(),
        resource: "r1".into(),
    }];
    assert_eq!(p.tick(now, &online(&name, 0)), terminate);
    assert_eq!(p.counts.drained, 0, "not terminated yet");
    now += Duration::from_millis(500);
    p.terminated(&name, "r1", Ok(()), now);
    let c = p.counts;
    assert_eq!(
        (c.drains, c.undrains, c.drained, c.drain_ms),
        (2, 1, 1, 3_500)
    );
    // 3.5 s is in the third bucket (1, 2.5, 5 s, ...), and only there.
    assert_eq!(DRAIN_BUCKETS[2], 5.0);
    assert_eq!(p.drain_buckets[2], 1);
    assert_eq!(p.drain_buckets.iter().sum::<u64>(), 1);
}

#[test]
fn a_node_that_never_joins_is_counted_apart_from_a_launch_error() {
    let mut p = plan();
    let now = Instant::now();
    let names: Vec<String> = p
        .manual(2, now)
        .unwrap()
        .into_iter()
        .map(|a| match a {
            Action::Launch { name } => name,
            other => panic!("{other:?}"),
        })
        .collect();
    p.launched(&names[0], Err("no capacity".into()), now);
    assert_eq!((p.counts.launch_failures, p.counts.never_joined), (1, 0));
    p.launched(&names[1], Ok("r1".into()), now);
    let offline = Observed {
        resources: Some(vec![Resource {
            id: "r1".into(),
            node: names[1].clone(),
        }]),
        ..Observed::default()
    };
    let actions = p.tick(now + Duration::from_secs(5), &offline);
    assert!(
        matches!(&actions[..], [Action::Terminate { name, .. }] if *name == names[1]),
        "{actions:?}"
    );
    let c = p.counts;
    assert_eq!(
        (
            c.launches,
            c.launch_failures,
            c.never_joined,
            c.terminations
        ),
        (2, 2, 1, 1)
    );
}
