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
