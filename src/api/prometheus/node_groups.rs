//! Node groups on `/metrics`, each sample labelled `group`: what the group did since the
//! coordinator started (launches, failures, terminations, losses, drains), how long its
//! drains took, and, now, its nodes by state, its backoff and the work waiting for it. All
//! of it read from the groups' status ([`GroupStatus`]), as the last tick left it.

use super::snapshot::Snapshot;
use crate::launch::{Counts, GroupStatus, MemberState};

/// Every state a group's node can be in, as the API spells it.
const STATES: [(MemberState, &str); 5] = [
    (MemberState::Launching, "launching"),
    (MemberState::Joining, "joining"),
    (MemberState::Running, "running"),
    (MemberState::Draining, "draining"),
    (MemberState::Stopping, "stopping"),
];

/// Adds the `wrangle_node_group_*` families for `groups`.
pub(super) fn node_group_metrics(m: &mut Snapshot, groups: &[GroupStatus]) {
    type Field = fn(&Counts) -> u64;
    let counters: [(&'static str, &'static str, Field); 7] = [
        (
            "wrangle_node_group_launches_total",
            "Nodes a node group asked its launcher to start.",
            |c| c.launches,
        ),
        (
            "wrangle_node_group_launch_failures_total",
            "Launches that failed: the launcher's error, or a node that never joined (also in wrangle_node_group_never_joined_total).",
            |c| c.launch_failures,
        ),
        (
            "wrangle_node_group_never_joined_total",
            "Launched nodes that did not join within join_timeout, or were lost before they joined.",
            |c| c.never_joined,
        ),
        (
            "wrangle_node_group_terminations_total",
            "Nodes (and unknown labelled resources) a node group asked its launcher to stop.",
            |c| c.terminations,
        ),
        (
            "wrangle_node_group_lost_total",
            "Nodes the provider stopped running without being asked.",
            |c| c.lost,
        ),
        (
            "wrangle_node_group_drains_total",
            "Drains begun: idle nodes, and manual sizes down.",
            |c| c.drains,
        ),
        (
            "wrangle_node_group_undrains_total",
            "Drains undone: work waited for the group, or the node still had work at drain_timeout.",
            |c| c.undrains,
        ),
    ];
    for (name, help, field) in counters {
        let rows = groups.iter().map(|g| (g.name.as_str(), field(&g.counts)));
        m.counters_by(name, help, "group", rows);
    }
    m.histograms_by(
        "wrangle_node_group_drain_seconds",
        "From a node's drain to its termination, for drains that ended so.",
        "group",
        groups.iter().map(|g| {
            let sum = g.counts.drain_ms as f64 / 1000.0;
            (g.name.as_str(), g.drain_times.clone(), sum)
        }),
    );
    m.gauges_by2(
        "wrangle_node_group_nodes",
        "A node group's nodes by state, now.",
        ["group", "state"],
        groups.iter().flat_map(|g| {
            STATES.iter().map(move |(state, label)| {
                let n = g.members.iter().filter(|n| n.state == *state).count();
                (g.name.as_str(), *label, n as u64)
            })
        }),
    );
    m.gauges_f64_by(
        "wrangle_node_group_backoff_seconds",
        "Seconds until a node group may launch again after failed launches (0: now).",
        "group",
        groups
            .iter()
            .map(|g| (g.name.as_str(), g.backoff_ms as f64 / 1000.0)),
    );
    m.gauges_by(
        "wrangle_node_group_failures_in_a_row",
        "A node group's failed launches since its last node joined.",
        "group",
        groups
            .iter()
            .map(|g| (g.name.as_str(), u64::from(g.failures))),
    );
    m.gauges_by(
        "wrangle_node_group_waiting",
        "Tasks waiting that only a node group serves, plus its nodes' mailbox depths, at its last tick.",
        "group",
        groups.iter().map(|g| (g.name.as_str(), g.waiting)),
    );
}
