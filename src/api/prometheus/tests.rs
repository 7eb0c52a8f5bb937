//! The exposition `prometheus-client` writes from a snapshot: names, help, types, labels,
//! and histograms whose buckets are cumulative and end in `+Inf` equal to `_count`.

use std::time::Duration;

use super::*;
use crate::metrics::Histogram;

#[test]
fn counters_gauges_and_labels_keep_their_names_and_help() {
    let mut m = Snapshot::default();
    m.counter("wrangle_tasks_completed_total", "Tasks completed.", 3);
    m.gauges_by(
        "wrangle_tasks",
        "Tasks by status, now.",
        "status",
        [("queued", 2), ("running", 1)],
    );
    m.gauge_f64(
        "wrangle_throughput_tasks_per_second",
        "Tasks per second.",
        1.5,
    );
    m.counters_by(
        "wrangle_compute_requests_total",
        "Requests.",
        "node",
        [("a\"b", 7)],
    );
    let text = encode(m);
    assert_eq!(
        text,
        "# HELP wrangle_tasks_completed_total Tasks completed.\n\
         # TYPE wrangle_tasks_completed_total counter\n\
         wrangle_tasks_completed_total 3\n\
         # HELP wrangle_tasks Tasks by status, now.\n\
         # TYPE wrangle_tasks gauge\n\
         wrangle_tasks{status=\"queued\"} 2\n\
         wrangle_tasks{status=\"running\"} 1\n\
         # HELP wrangle_throughput_tasks_per_second Tasks per second.\n\
         # TYPE wrangle_throughput_tasks_per_second gauge\n\
         wrangle_throughput_tasks_per_second 1.5\n\
         # HELP wrangle_compute_requests_total Requests.\n\
         # TYPE wrangle_compute_requests_total counter\n\
         wrangle_compute_requests_total{node=\"a\\\"b\"} 7\n"
    );
}

#[test]
fn histogram_buckets_are_cumulative_and_count_is_the_last() {
    let h = Histogram::default();
    for ms in [0, 1, 1, 3, 700, 400_000] {
        h.observe(Duration::from_millis(ms));
    }
    let mut m = Snapshot::default();
    m.histogram(
        "wrangle_task_latency_seconds",
        "From submit to completion.",
        &h,
    );
    m.histograms_by(
        "wrangle_compute_request_seconds",
        "Compute request latency.",
        "node",
        [("gpu1", h.counts(), h.sum_secs())],
    );
    let text = encode(m);
    assert!(
        text.contains("# TYPE wrangle_task_latency_seconds histogram\n"),
        "{text}"
    );
    for (name, labels) in [
        ("wrangle_task_latency_seconds", ""),
        ("wrangle_compute_request_seconds", "node=\"gpu1\","),
    ] {
        let buckets: Vec<(String, u64)> = text
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{name}_bucket{{{labels}le=\"")))
            .map(|rest| {
                let (le, n) = rest.split_once("\"} ").unwrap();
                (le.to_string(), n.parse().unwrap())
            })
            .collect();
        assert_eq!(buckets.len(), crate::metrics::BUCKETS.len() + 1, "{text}");
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "not cumulative: {buckets:?}"
        );
        assert_eq!(buckets[0], ("0.0005".to_string(), 1));
        assert_eq!(buckets[1], ("0.001".to_string(), 3));
        assert_eq!(
            buckets[10],
            ("1".to_string(), 5),
            "bounds as Prometheus writes them"
        );
        let (le, last) = buckets.last().unwrap();
        assert_eq!(
            (le.as_str(), *last),
            ("+Inf", 6),
            "one observation above every bound"
        );
        let suffix = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", labels.trim_end_matches(','))
        };
        let count = format!("{name}_count{suffix} {last}\n");
        assert!(text.contains(&count), "{count} in\n{text}");
        let sum = format!("{name}_sum{suffix} 400.705\n");
        assert!(text.contains(&sum), "{sum} in\n{text}");
    }
}

#[test]
fn node_groups_show_their_counters_drain_times_and_nodes_by_state() {
    use crate::launch::{Counts, GroupStatus, MemberState, MemberStatus};
    let member = |node: &str, state| MemberStatus {
        node: node.into(),
        state,
        resource: None,
        in_state_ms: 0,
        idle_ms: None,
    };
    let group = |name: &str| GroupStatus {
        name: name.into(),
        launcher: "process".into(),
        labels: Vec::new(),
        task_types: Vec::new(),
        min_nodes: 0,
        max_nodes: 4,
        waiting: 0,
        members: Vec::new(),
        failures: 0,
        backoff_ms: 0,
        last_error: None,
        counts: Counts::default(),
        drain_times: vec![(1.0, 0), (2.5, 0), (10.0, 0), (f64::INFINITY, 0)],
    };
    let gpu = GroupStatus {
        waiting: 7,
        members: vec![
            member("gpu-1", MemberState::Running),
            member("gpu-2", MemberState::Running),
            member("gpu-3", MemberState::Draining),
            member("gpu-4", MemberState::Joining),
        ],
        failures: 2,
        backoff_ms: 1_500,
        last_error: Some("boom".into()),
        counts: Counts {
            launches: 9,
            launch_failures: 3,
            never_joined: 1,
            terminations: 4,
            lost: 1,
            drains: 5,
            undrains: 1,
            drained: 3,
            drain_ms: 12_500,
        },
        // Drains of 0.5 s, 2 s and 10 s.
        drain_times: vec![(1.0, 1), (2.5, 1), (10.0, 1), (f64::INFINITY, 0)],
        ..group("gpu")
    };
    let mut m = Snapshot::default();
    super::node_groups::node_group_metrics(&mut m, &[gpu, group("cpu")]);
    let text = encode(m);
    for line in [
        "# TYPE wrangle_node_group_launches_total counter",
        "wrangle_node_group_launches_total{group=\"gpu\"} 9",
        "wrangle_node_group_launches_total{group=\"cpu\"} 0",
        "wrangle_node_group_launch_failures_total{group=\"gpu\"} 3",
        "wrangle_node_group_never_joined_total{group=\"gpu\"} 1",
        "wrangle_node_group_terminations_total{group=\"gpu\"} 4",
        "wrangle_node_group_lost_total{group=\"gpu\"} 1",
        "wrangle_node_group_drains_total{group=\"gpu\"} 5",
        "wrangle_node_group_undrains_total{group=\"gpu\"} 1",
        "# TYPE wrangle_node_group_drain_seconds histogram",
        "wrangle_node_group_drain_seconds_bucket{group=\"gpu\",le=\"1\"} 1",
        "wrangle_node_group_drain_seconds_bucket{group=\"gpu\",le=\"2.5\"} 2",
        "wrangle_node_group_drain_seconds_bucket{group=\"gpu\",le=\"+Inf\"} 3",
        "wrangle_node_group_drain_seconds_sum{group=\"gpu\"} 12.5",
        "wrangle_node_group_drain_seconds_count{group=\"gpu\"} 3",
        "wrangle_node_group_drain_seconds_count{group=\"cpu\"} 0",
        "# TYPE wrangle_node_group_nodes gauge",
        "wrangle_node_group_nodes{group=\"gpu\",state=\"launching\"} 0",
        "wrangle_node_group_nodes{group=\"gpu\",state=\"joining\"} 1",
        "wrangle_node_group_nodes{group=\"gpu\",state=\"running\"} 2",
        "wrangle_node_group_nodes{group=\"gpu\",state=\"draining\"} 1",
        "wrangle_node_group_nodes{group=\"gpu\",state=\"stopping\"} 0",
        "wrangle_node_group_nodes{group=\"cpu\",state=\"running\"} 0",
        "wrangle_node_group_backoff_seconds{group=\"gpu\"} 1.5",
        "wrangle_node_group_failures_in_a_row{group=\"gpu\"} 2",
        "wrangle_node_group_waiting{group=\"gpu\"} 7",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
    }
}

#[tokio::test]
async fn model_calls_show_by_node_and_model() {
    let compute = crate::compute::ComputeCluster::start("t").await.unwrap();
    let call = crate::compute::ModelCall {
        prompt_tokens: Some(12),
        completion_tokens: Some(4),
        latency: Duration::from_millis(30),
        ok: true,
    };
    compute.record_model_call("gpu1", "gemma", call);
    compute.record_model_call("gpu1", "gemma", crate::compute::ModelCall::default());
    let mut m = Snapshot::default();
    model_metrics(&mut m, &compute);
    let text = encode(m);
    for line in [
        "wrangle_llm_requests_total{node=\"gpu1\",model=\"gemma\"} 2\n",
        "wrangle_llm_failures_total{node=\"gpu1\",model=\"gemma\"} 1\n",
        "wrangle_llm_prompt_tokens_total{node=\"gpu1\",model=\"gemma\"} 12\n",
        "wrangle_llm_completion_tokens_total{node=\"gpu1\",model=\"gemma\"} 4\n",
        "wrangle_llm_request_seconds_count{node=\"gpu1\",model=\"gemma\"} 1\n",
    ] {
        assert!(text.contains(line), "{line} in:\n{text}");
    }
    compute.stop().await;
}
