//! The plan against a simulated provider and gate, on a clock the tests move by hand.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::*;

static NEXT: AtomicU32 = AtomicU32::new(0);

fn numbered(group: &str) -> String {
    format!("{group}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn cfg() -> NodeGroupConfig {
    NodeGroupConfig {
        task_types: vec!["infer".into()],
        labels: vec!["gpu".into()],
        max_nodes: 3,
        idle_timeout: Duration::from_secs(10),
        join_timeout: Duration::from_secs(5),
        drain_timeout: Duration::from_secs(20),
        scale_up_cooldown: Duration::from_secs(2),
        scale_down_cooldown: Duration::from_secs(3),
        launch_backoff: Duration::from_secs(1),
        ..NodeGroupConfig::new("gpu")
    }
}

/// A provider and a gate around one plan.
struct Sim {
    plan: Plan,
    now: Instant,
    queued: u64,
    /// What the gate sees.
    nodes: HashMap<String, NodeView>,
    /// What the provider runs: node → resource.
    running: HashMap<String, String>,
    /// Nodes the gate has drained.
    drained: std::collections::HashSet<String>,
    /// Launches the provider refuses, from now on.
    refuse: bool,
    /// Every action, in order.
    log: Vec<Action>,
}

impl Sim {
    fn new(cfg: NodeGroupConfig) -> Self {
        Self {
            plan: Plan::with_names(cfg, numbered),
            now: Instant::now(),
            queued: 0,
            nodes: HashMap::new(),
            running: HashMap::new(),
            drained: Default::default(),
            refuse: false,
            log: Vec::new(),
        }
    }

    fn observed(&self) -> Observed {
        Observed {
            queued: self.queued,
            nodes: self.nodes.clone(),
            resources: Some(
                self.running
                    .iter()
                    .map(|(node, id)| Resource {
                        id: id.clone(),
                        node: node.clone(),
                    })
                    .collect(),
            ),
        }
    }

    /// One tick, with every launcher call answered at once.
    fn tick(&mut self) -> Vec<Action> {
        let obs = self.observed();
        let actions = self.plan.tick(self.now, &obs);
        assert!(
            self.plan.members.len() <= self.plan.cfg.max_nodes,
            "{} members past max_nodes {}",
            self.plan.members.len(),
            self.plan.cfg.max_nodes
        );
        for a in &actions {
            self.apply(a.clone());
        }
        actions
    }

    fn apply(&mut self, a: Action) {
        self.log.push(a.clone());
        match a {
            Action::Launch { name } => {
                if self.refuse {
                    self.plan
                        .launched(&name, Err("no capacity".into()), self.now);
                } else {
                    let id = format!("r-{name}");
                    self.running.insert(name.clone(), id.clone());
                    self.plan.launched(&name, Ok(id), self.now);
                }
            }
            Action::Terminate { name, resource } => {
                let view = self.nodes.get(&name).copied().unwrap_or_default();
                assert!(
                    !(view.online && view.in_flight > 0),
                    "{name} terminated with {} task(s) in flight",
                    view.in_flight
                );
                assert_eq!(self.running.get(&name), Some(&resource));
                self.running.remove(&name);
                self.nodes.remove(&name);
                self.drained.remove(&name);
                self.plan.terminated(&name, &resource, Ok(()), self.now);
            }
            Action::Drain { name } => {
                self.drained.insert(name);
            }
            Action::Undrain { name } => {
                self.drained.remove(&name);
            }
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// Every node the provider runs joins.
    fn join_all(&mut self) {
        for name in self.running.keys() {
            self.nodes.entry(name.clone()).or_insert(NodeView {
                online: true,
                in_flight: 0,
                slots: 16,
                mailbox: 0,
            });
        }
    }

    fn state(&self, name: &str) -> Option<MemberState> {
        self.plan.members.get(name).map(|m| m.state)
    }

    fn events(&mut self) -> Vec<String> {
        self.plan
            .take_events()
            .into_iter()
            .map(|e| e.action)
            .collect()
    }
}

fn launched(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Launch { name } => Some(name.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn waiting_tasks_launch_a_node_that_runs_them_then_drains_and_stops_when_idle() {
    let mut s = Sim::new(cfg());
    assert!(s.tick().is_empty(), "nothing waits: nothing to launch");
    s.queued = 5;
    let first = launched(&s.tick());
    assert_eq!(first.len(), 1, "one step up");
    let node = first[0].clone();
    assert_eq!(s.state(&node), Some(MemberState::Joining));
    // While it joins, 5 tasks per 16 slots is below the threshold: no second node.
    s.advance(Duration::from_secs(3));
    assert!(launched(&s.tick()).is_empty());
    s.join_all();
    s.nodes.get_mut(&node).unwrap().in_flight = 5;
    s.queued = 0;
    s.tick();
    assert_eq!(s.state(&node), Some(MemberState::Running));
    // Busy nodes are never idle, however long they run.
    s.advance(Duration::from_secs(60));
    s.tick();
    assert_eq!(s.state(&node), Some(MemberState::Running));
    s.nodes.get_mut(&node).unwrap().in_flight = 0;
    s.tick();
    s.advance(Duration::from_secs(9));
    s.tick();
    assert_eq!(s.state(&node), Some(MemberState::Running), "idle 9 s of 10");
    s.advance(Duration::from_secs(1));
    assert_eq!(s.tick(), vec![Action::Drain { name: node.clone() }]);
    // One tick for the gate's counts to include every lease handed out before the drain,
    // then, nothing in flight: terminated.
    s.advance(Duration::from_secs(1));
    s.tick();
    assert_eq!(s.state(&node), Some(MemberState::Draining));
    s.advance(Duration::from_secs(1));
    s.tick();
    assert!(s.state(&node).is_none());
    assert!(s.running.is_empty());
    assert_eq!(
        s.events(),
        [
            "launch",
            "launched",
            "joined",
            "drain",
            "terminate",
            "terminated"
        ]
    );
}

#[test]
fn more_waiting_work_than_slots_launches_up_to_max_nodes_with_cooldowns() {
    let mut s = Sim::new(cfg());
    s.queued = 1_000;
    assert_eq!(launched(&s.tick()).len(), 1);
    s.join_all();
    s.advance(Duration::from_secs(1));
    assert!(launched(&s.tick()).is_empty(), "within the cool-down");
    s.advance(Duration::from_secs(1));
    assert_eq!(launched(&s.tick()).len(), 1);
    s.join_all();
    s.advance(Duration::from_secs(2));
    assert_eq!(launched(&s.tick()).len(), 1);
    s.join_all();
    for _ in 0..10 {
        s.advance(Duration::from_secs(2));
        assert!(launched(&s.tick()).is_empty(), "max_nodes is 3");
    }
    assert_eq!(s.plan.members.len(), 3);
}

#[test]
fn a_node_that_never_joins_is_terminated_and_launches_back_off() {
    let mut s = Sim::new(cfg());
    s.queued = 1;
    let node = launched(&s.tick()).remove(0);
    s.advance(Duration::from_secs(4));
    s.tick();
    assert_eq!(s.state(&node), Some(MemberState::Joining));
    s.advance(Duration::from_secs(1));
    let actions = s.tick();
    assert!(actions.contains(&Action::Terminate {
        name: node.clone(),
        resource: format!("r-{node}")
    }));
    assert_eq!(s.plan.failures, 1);
    assert_eq!(s.plan.counts.launch_failures, 1);
    // The failure holds launches back for launch_backoff (1 s), even past the cool-down.
    assert!(launched(&s.tick()).is_empty());
    s.advance(Duration::from_secs(1));
    assert_eq!(launched(&s.tick()).len(), 1);
}

#[test]
fn failed_launches_back_off_doubling_and_do_not_loop() {
    let mut s = Sim::new(cfg());
    s.refuse = true;
    s.queued = 1;
    let mut launches = 0;
    // 60 s of ticks every 100 ms: with waits of 1, 2, 4, 8, 16, 32 s, six launches (one at
    // the start, then after each wait that ends within the minute: 1+2+4+8+16 = 31 s,
    // the next at 63 s).
    for _ in 0..600 {
        launches += launched(&s.tick()).len();
        s.advance(Duration::from_millis(100));
    }
    assert_eq!(launches, 6);
    assert_eq!(s.plan.failures, 6);
    assert_eq!(s.plan.last_error.as_deref(), Some("no capacity"));
    s.refuse = false;
    s.advance(Duration::from_secs(64));
    assert_eq!(launched(&s.tick()).len(), 1);
    s.join_all();
    s.tick();
    assert_eq!(s.plan.failures, 0, "a join resets the failures");
}

/// A group with one node, launched for one task, joined, and idle for its whole
/// `idle_timeout` (10 s): the next tick drains it.
fn idle_node_at_its_idle_timeout() -> (Sim, String) {
    let mut s = Sim::new(cfg());
    s.queued = 1;
    let node = launched(&s.tick()).remove(0);
    s.join_all();
    s.queued = 0;
    s.tick();
    s.advance(Duration::from_secs(10));
    (s, node)
}

#[test]
fn a_drained_node_with_work_in_flight_is_never_terminated_and_the_drain_is_undone() {
    let (mut s, node) = idle_node_at_its_idle_timeout();
    assert_eq!(s.tick(), vec![Action::Drain { name: node.clone() }]);
    // A lease the queue handed out just before the drain took effect.
    s.nodes.get_mut(&node).unwrap().in_flight = 1;
    for _ in 0..19 {
        s.advance(Duration::from_secs(1));
        s.tick();
        assert_eq!(s.state(&node), Some(MemberState::Draining));
    }
    s.advance(Duration::from_secs(1));
    assert_eq!(s.tick(), vec![Action::Undrain { name: node.clone() }]);
    assert_eq!(s.state(&node), Some(MemberState::Running));
}

#[test]
fn waiting_work_undrains_a_draining_node_before_launching_another() {
    let (mut s, node) = idle_node_at_its_idle_timeout();
    s.tick();
    assert_eq!(s.state(&node), Some(MemberState::Draining));
    s.queued = 3;
    assert_eq!(s.tick(), vec![Action::Undrain { name: node }]);
}

#[test]
fn a_node_the_provider_lost_is_replaced_below_min_nodes() {
    let mut s = Sim::new(NodeGroupConfig {
        min_nodes: 1,
        ..cfg()
    });
    let node = launched(&s.tick()).remove(0);
    s.join_all();
    s.tick();
    // Killed: the provider no longer runs it, the gate has lost it.
    s.running.remove(&node);
    s.nodes.get_mut(&node).unwrap().online = false;
    let again = launched(&s.tick());
    assert_eq!(again.len(), 1);
    assert_ne!(again[0], node);
    assert!(s.events().contains(&"lost".to_string()));
    assert_eq!(s.plan.counts.lost, 1);
}

#[test]
fn labelled_strangers_are_adopted_when_online_and_stopped_when_not() {
    let mut s = Sim::new(cfg());
    s.running.insert("gpu-old".into(), "r-old".into());
    s.nodes.insert(
        "gpu-old".into(),
        NodeView {
            online: true,
            in_flight: 2,
            slots: 8,
            mailbox: 0,
        },
    );
    s.running.insert("gpu-ghost".into(), "r-ghost".into());
    s.tick();
    assert_eq!(s.state("gpu-old"), Some(MemberState::Running));
    assert_eq!(
        s.state("gpu-ghost"),
        None,
        "not yet: the grace is join_timeout"
    );
    s.advance(Duration::from_secs(5));
    let actions = s.tick();
    assert!(actions.contains(&Action::Terminate {
        name: "gpu-ghost".into(),
        resource: "r-ghost".into()
    }));
    assert!(s.running.contains_key("gpu-old"));
}

#[test]
fn manual_sizes_hold_min_and_max() {
    let mut s = Sim::new(NodeGroupConfig {
        min_nodes: 1,
        ..cfg()
    });
    s.tick();
    assert!(s.plan.manual(4, s.now).unwrap_err().contains("1..=3"));
    assert!(s.plan.manual(0, s.now).unwrap_err().contains("1..=3"));
    let actions = s.plan.manual(3, s.now).unwrap();
    assert_eq!(launched(&actions).len(), 2);
    for a in actions {
        s.apply(a);
    }
    s.join_all();
    s.tick();
    let drains = s.plan.manual(1, s.now).unwrap();
    assert_eq!(drains.len(), 2);
    assert!(drains.iter().all(|a| matches!(a, Action::Drain { .. })));
}

#[derive(Clone, Debug)]
enum Op {
    /// Tasks waiting for the group now.
    Queue(u64),
    /// Time passes (ms).
    Advance(u64),
    /// The nodes the provider runs join.
    Join,
    /// Node i (of the online ones) takes or finishes work.
    Work(usize, u64),
    /// Node i is killed under the plan.
    Kill(usize),
    /// The provider refuses launches, or takes them again.
    Refuse(bool),
    /// One tick.
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => prop_oneof![Just(0u64), 1..200u64].prop_map(Op::Queue),
        3 => (1..20_000u64).prop_map(Op::Advance),
        2 => Just(Op::Join),
        2 => (0..4usize, 0..5u64).prop_map(|(i, n)| Op::Work(i, n)),
        1 => (0..4usize).prop_map(Op::Kill),
        1 => any::<bool>().prop_map(Op::Refuse),
        4 => Just(Op::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Across bursts, idle periods, kills and refused launches: the group never holds more
    /// than max_nodes, never terminates a node with work in flight (asserted in `apply`),
    /// and once launches succeed again and time passes, it holds at least min_nodes.
    #[test]
    fn nodes_stay_within_bounds_and_busy_nodes_are_never_terminated(
        min in 0..3usize,
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let mut s = Sim::new(NodeGroupConfig { min_nodes: min, ..cfg() });
        for op in ops {
            match op {
                Op::Queue(n) => s.queued = n,
                Op::Advance(ms) => s.advance(Duration::from_millis(ms)),
                Op::Join => s.join_all(),
                Op::Work(i, n) => {
                    let mut online: Vec<&String> = s.nodes.keys().collect();
                    online.sort();
                    if let Some(name) = online.get(i).map(|n| (*n).clone()) {
                        // A drained node gets no new work, only finishes what it had.
                        let v = s.nodes.get_mut(&name).unwrap();
                        if !s.drained.contains(&name) || n < v.in_flight {
                            v.in_flight = n;
                        }
                    }
                }
                Op::Kill(i) => {
                    let mut names: Vec<String> = s.running.keys().cloned().collect();
                    names.sort();
                    if let Some(name) = names.get(i) {
                        s.running.remove(name);
                        s.nodes.remove(name);
                    }
                }
                Op::Refuse(r) => s.refuse = r,
                Op::Tick => {
                    s.tick();
                }
            }
        }
        // Recovery: launches succeed, nodes join, time passes.
        s.refuse = false;
        for _ in 0..40 {
            s.advance(Duration::from_secs(10));
            s.tick();
            s.join_all();
        }
        let active = s.plan.active();
        prop_assert!(active >= min, "{active} active below min_nodes {min}");
        prop_assert!(s.plan.members.len() <= s.plan.cfg.max_nodes);
    }
}
