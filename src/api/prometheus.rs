//! `GET /metrics`: Prometheus text exposition of the runtime's counters, gauges and
//! latency histograms.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::error::ApiError;
use super::ApiState;
use crate::metrics::Histogram;
use crate::worker::WorkerStatus;

fn metric(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    metric(out, name, "histogram", help);
    let (buckets, total) = h.cumulative();
    for (bound, count) in buckets {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
    let _ = writeln!(out, "{name}_sum {}", h.sum_secs());
    let _ = writeln!(out, "{name}_count {total}");
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "metrics",
    responses((status = 200, content_type = "text/plain", description = "Prometheus text format 0.0.4")))]
pub(crate) async fn metrics(State(state): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    let stats = state.coordinator.get_stats().await?;
    let q = &stats.queue;
    let mut out = String::with_capacity(4096);

    metric(&mut out, "wrangle_tasks", "gauge", "Tasks by status, now.");
    for (status, n) in [
        ("pending", q.pending as u64),
        ("queued", q.queued as u64),
        ("running", q.running as u64),
        ("dead_lettered", q.dead_lettered as u64),
        ("unroutable", q.unroutable as u64),
    ] {
        let _ = writeln!(out, "wrangle_tasks{{status=\"{status}\"}} {n}");
    }
    for (name, help, v) in [
        (
            "wrangle_tasks_submitted_total",
            "Tasks accepted.",
            q.submitted,
        ),
        (
            "wrangle_tasks_completed_total",
            "Tasks completed.",
            q.completed,
        ),
        (
            "wrangle_tasks_failed_total",
            "Tasks failed for good.",
            q.failed,
        ),
        (
            "wrangle_tasks_cancelled_total",
            "Tasks cancelled.",
            q.cancelled,
        ),
        (
            "wrangle_tasks_timed_out_total",
            "Tasks that timed out on their last attempt.",
            q.timed_out,
        ),
        (
            "wrangle_task_retries_total",
            "Retries scheduled.",
            q.retried,
        ),
        (
            "wrangle_leases_lost_total",
            "Leases taken back from dead or silent workers.",
            q.leases_lost,
        ),
        (
            "wrangle_stale_reports_total",
            "Reports and lease extensions refused: their fencing token was not the current lease's.",
            q.stale_reports,
        ),
        (
            "wrangle_stale_progress_total",
            "Progress reports from node workers dropped: their fencing token was not the current lease's.",
            q.stale_progress,
        ),
    ] {
        metric(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    }
    let tm = state.coordinator.queue().metrics();
    let now_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    metric(
        &mut out,
        "wrangle_throughput_tasks_per_second",
        "gauge",
        "Tasks completed per second over the last 10 whole seconds.",
    );
    let _ = writeln!(
        out,
        "wrangle_throughput_tasks_per_second {}",
        tm.completions.per_second(now_secs)
    );
    metric(
        &mut out,
        "wrangle_queue_depth",
        "gauge",
        "Tasks waiting (queued and pending).",
    );
    let _ = writeln!(out, "wrangle_queue_depth {}", q.queue_size);
    metric(
        &mut out,
        "wrangle_queue_bytes",
        "gauge",
        "Bytes the queue holds in memory: payloads of unfinished tasks (kind=\"live\"), finished tasks kept (\"finished\"), dead letters (\"dead_letter\").",
    );
    for (kind, v) in [
        ("live", q.live_bytes),
        ("finished", q.finished_bytes),
        ("dead_letter", q.dead_letter_bytes),
    ] {
        let _ = writeln!(out, "wrangle_queue_bytes{{kind=\"{kind}\"}} {v}");
    }
    for (p, n) in [
        ("low", q.queued_by_priority.low),
        ("normal", q.queued_by_priority.normal),
        ("high", q.queued_by_priority.high),
        ("critical", q.queued_by_priority.critical),
    ] {
        let _ = writeln!(
            out,
            "wrangle_queue_depth_by_priority{{priority=\"{p}\"}} {n}"
        );
    }
    metric(
        &mut out,
        "wrangle_mailbox_depth",
        "gauge",
        "Messages waiting in actor mailboxes.",
    );
    let m = &stats.mailboxes;
    for (actor, n) in [
        ("coordinator", m.coordinator),
        ("queue", m.queue),
        ("pool", m.pool),
        ("workers", m.workers),
    ] {
        let _ = writeln!(out, "wrangle_mailbox_depth{{actor=\"{actor}\"}} {n}");
    }
    metric(&mut out, "wrangle_workers", "gauge", "Workers by status.");
    let workers = state.coordinator.get_workers().await?;
    for status in [
        WorkerStatus::Idle,
        WorkerStatus::Busy,
        WorkerStatus::Draining,
        WorkerStatus::Stopped,
        WorkerStatus::Error,
    ] {
        let n = workers.iter().filter(|w| w.status == status).count();
        let name = serde_json::to_value(status).unwrap_or_default();
        let _ = writeln!(out, "wrangle_workers{{status={name}}} {n}");
    }
    let p = &stats.workers;
    metric(
        &mut out,
        "wrangle_worker_slots",
        "gauge",
        "Task slots: busy and total.",
    );
    let _ = writeln!(
        out,
        "wrangle_worker_slots{{state=\"busy\"}} {}",
        p.current_tasks
    );
    let _ = writeln!(
        out,
        "wrangle_worker_slots{{state=\"total\"}} {}",
        p.total_slots
    );
    metric(
        &mut out,
        "wrangle_worker_restarts_total",
        "counter",
        "Workers restarted by their pool.",
    );
    let _ = writeln!(out, "wrangle_worker_restarts_total {}", p.restarts);
    for (name, help, v) in [
        (
            "wrangle_pool_restarts_total",
            "Failed worker pools restarted by the coordinator.",
            stats.pool_restarts,
        ),
        (
            "wrangle_gate_restarts_total",
            "Failed cluster gates restarted by the coordinator.",
            stats.gate_restarts,
        ),
    ] {
        metric(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    }
    metric(
        &mut out,
        "wrangle_scale_decisions",
        "gauge",
        "Scaling changes kept in history.",
    );
    let _ = writeln!(
        out,
        "wrangle_scale_decisions {}",
        state.coordinator.scale_history().len()
    );
    if let Some(compute) = state.coordinator.compute() {
        compute_metrics(&mut out, compute);
    }
    workflow_metrics(&mut out, state.coordinator.workflows().metrics());
    if let Some(store) = state.coordinator.store() {
        let w = store.writer_stats();
        histogram(
            &mut out,
            "wrangle_store_commit_seconds",
            "One write transaction of the task store's writer, first statement to commit.",
            &w.commit_latency,
        );
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        for (name, help, v) in [
            (
                "wrangle_store_commits_total",
                "Store transactions committed.",
                load(&w.commits),
            ),
            (
                "wrangle_store_task_rows_total",
                "Task rows written (inserts and updates).",
                load(&w.task_rows),
            ),
            (
                "wrangle_store_failures_total",
                "Store commits that failed.",
                load(&w.failures),
            ),
            (
                "wrangle_store_pruned_total",
                "Finished tasks deleted by retention.",
                load(&w.pruned),
            ),
            (
                "wrangle_store_rejected_rows_total",
                "Rows the database refused for good, left out of their batch.",
                load(&w.rejected_rows),
            ),
        ] {
            metric(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {v}");
        }
        metric(
            &mut out,
            "wrangle_store_healthy",
            "gauge",
            "1 while the store's last commit succeeded.",
        );
        let healthy = w.healthy.load(std::sync::atomic::Ordering::Relaxed);
        let _ = writeln!(out, "wrangle_store_healthy {}", u8::from(healthy));
        metric(
            &mut out,
            "wrangle_store_database_bytes",
            "gauge",
            "Size of the database, measured at each prune interval.",
        );
        let _ = writeln!(
            out,
            "wrangle_store_database_bytes {}",
            load(&w.database_bytes)
        );
        let free = load(&w.disk_free_bytes);
        if free != u64::MAX {
            metric(
                &mut out,
                "wrangle_store_disk_free_bytes",
                "gauge",
                "Free space of the disk holding the SQLite file.",
            );
            let _ = writeln!(out, "wrangle_store_disk_free_bytes {free}");
        }
    }
    if let Some(c) = &stats.cluster {
        metric(
            &mut out,
            "wrangle_cluster_nodes_online",
            "gauge",
            "Nodes online.",
        );
        let _ = writeln!(out, "wrangle_cluster_nodes_online {}", c.online);
        for (name, help, v) in [
            (
                "wrangle_cluster_joins_total",
                "Node joins accepted.",
                c.joins,
            ),
            (
                "wrangle_cluster_lost_total",
                "Nodes given up (closed or silent).",
                c.lost,
            ),
            (
                "wrangle_cluster_refused_total",
                "Node joins refused.",
                c.refused,
            ),
            (
                "wrangle_cluster_bad_frames_total",
                "Frames from peers that did not decode.",
                c.bad_frames,
            ),
            (
                "wrangle_cluster_forged_frames_total",
                "Frames naming a node without the key of its session.",
                c.forged_frames,
            ),
            (
                "wrangle_cluster_credits_clamped_total",
                "Credit requests cut to a worker's slots or its node's capacity.",
                c.credits_clamped,
            ),
            (
                "wrangle_cluster_handshakes_refused_total",
                "Connections closed before authenticating (deadline, too many pending, too much data).",
                c.handshakes_refused,
            ),
        ] {
            metric(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {v}");
        }
    }
    histogram(
        &mut out,
        "wrangle_task_latency_seconds",
        "From submit to completion.",
        &tm.latency,
    );
    histogram(
        &mut out,
        "wrangle_task_run_seconds",
        "From lease to result of completed attempts.",
        &tm.run_time,
    );
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    ))
}

/// Per compute node: requests, failures, load, health, restarts and request latency.
/// Node ids are `[A-Za-z0-9_.-]`, safe as label values.
fn compute_metrics(out: &mut String, compute: &crate::compute::ComputeCluster) {
    let mut rows = Vec::new();
    compute.with_latency(|info, latency| {
        let (buckets, total) = latency.cumulative();
        rows.push((info.clone(), buckets, total, latency.sum_secs()));
    });
    type Field = fn(&crate::compute::ComputeNodeInfo) -> u64;
    let series: [(&str, &str, &str, Field); 7] = [
        (
            "wrangle_compute_requests_total",
            "counter",
            "Requests a compute node finished.",
            |i| i.requests,
        ),
        (
            "wrangle_compute_failures_total",
            "counter",
            "Requests that failed.",
            |i| i.failures,
        ),
        (
            "wrangle_compute_in_flight",
            "gauge",
            "Requests running on a compute node.",
            |i| i.in_flight as u64,
        ),
        (
            "wrangle_compute_waiting",
            "gauge",
            "Requests waiting for a slot.",
            |i| i.waiting as u64,
        ),
        (
            "wrangle_compute_healthy",
            "gauge",
            "1 when the node receives work.",
            |i| u64::from(i.health.healthy && !i.draining),
        ),
        (
            "wrangle_compute_proxy_restarts_total",
            "counter",
            "Node proxies restarted.",
            |i| i.restarts,
        ),
        (
            "wrangle_compute_mailbox_depth",
            "gauge",
            "Messages waiting in a node proxy's mailbox.",
            |i| i.mailbox_depth,
        ),
    ];
    for (name, kind, help, field) in series {
        metric(out, name, kind, help);
        for (info, ..) in &rows {
            let _ = writeln!(out, "{name}{{node=\"{}\"}} {}", info.id, field(info));
        }
    }
    let name = "wrangle_compute_request_seconds";
    metric(
        out,
        name,
        "histogram",
        "Compute request latency, from start to answer.",
    );
    for (info, buckets, total, sum) in &rows {
        let node = &info.id;
        for (bound, count) in buckets {
            let _ = writeln!(
                out,
                "{name}_bucket{{node=\"{node}\",le=\"{bound}\"}} {count}"
            );
        }
        let _ = writeln!(out, "{name}_bucket{{node=\"{node}\",le=\"+Inf\"}} {total}");
        let _ = writeln!(out, "{name}_sum{{node=\"{node}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{node=\"{node}\"}} {total}");
    }
}

/// The workflow engine: runs by what happened to them, steps, and latencies.
fn workflow_metrics(out: &mut String, m: &crate::workflow::WorkflowMetrics) {
    let c = m.counts();
    metric(
        out,
        "wrangle_workflow_runs_total",
        "counter",
        "Workflow runs by what happened to them.",
    );
    for (event, v) in [
        ("started", c.started),
        ("completed", c.completed),
        ("failed", c.failed),
        ("cancelled", c.cancelled),
        ("stopped", c.stopped),
        ("paused", c.paused),
        ("resumed", c.resumed),
        ("retried", c.retried),
        ("recovered", c.recovered),
    ] {
        let _ = writeln!(out, "wrangle_workflow_runs_total{{event=\"{event}\"}} {v}");
    }
    metric(
        out,
        "wrangle_workflow_runs_active",
        "gauge",
        "Workflow runs running or paused.",
    );
    let _ = writeln!(out, "wrangle_workflow_runs_active {}", c.active);
    metric(
        out,
        "wrangle_workflow_steps_total",
        "counter",
        "Workflow steps by how they ended.",
    );
    let _ = writeln!(
        out,
        "wrangle_workflow_steps_total{{status=\"completed\"}} {}",
        c.steps_completed
    );
    let _ = writeln!(
        out,
        "wrangle_workflow_steps_total{{status=\"failed\"}} {}",
        c.steps_failed
    );
    histogram(
        out,
        "wrangle_workflow_step_seconds",
        "From a workflow step's start to its outcome.",
        &m.step_latency,
    );
    histogram(
        out,
        "wrangle_workflow_checkpoint_seconds",
        "One commit of the workflow journal.",
        &m.checkpoint_latency,
    );
}
