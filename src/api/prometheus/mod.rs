//! `GET /metrics`: the runtime's counters, gauges and latency histograms in the Prometheus
//! text format (0.0.4), written by `prometheus-client`.
//!
//! Each scrape reads the coordinator's figures into a [`Snapshot`] and encodes it through a
//! registry of its own: no process-wide recorder, so an application embedding wrangle keeps
//! its own metrics setup.

mod node_groups;
mod snapshot;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;

use super::error::ApiError;
use super::ApiState;
use crate::worker::WorkerStatus;
use snapshot::Snapshot;

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "metrics",
    responses((status = 200, content_type = "text/plain", description = "Prometheus text format 0.0.4")))]
pub(crate) async fn metrics(State(state): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    let m = read(&state).await?;
    Ok((
        [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
        encode(m),
    ))
}

/// The snapshot in the text format.
fn encode(snapshot: Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    let mut out = String::with_capacity(8192);
    // Writing to a `String` cannot fail.
    let _ = prometheus_text::encode(&mut out, &registry);
    out
}

/// Everything `/metrics` shows, read now.
async fn read(state: &ApiState) -> Result<Snapshot, ApiError> {
    let stats = state.coordinator.get_stats().await?;
    let workers = state.coordinator.get_workers().await?;
    let q = &stats.queue;
    let mut m = Snapshot::default();

    m.gauges_by(
        "wrangle_tasks",
        "Tasks by status, now.",
        "status",
        [
            ("pending", q.pending as u64),
            ("queued", q.queued as u64),
            ("running", q.running as u64),
            ("dead_lettered", q.dead_lettered as u64),
            ("unroutable", q.unroutable as u64),
        ],
    );
    m.counter(
        "wrangle_tasks_submitted_total",
        "Tasks accepted.",
        q.submitted,
    );
    m.counter(
        "wrangle_tasks_completed_total",
        "Tasks completed.",
        q.completed,
    );
    m.counter(
        "wrangle_tasks_failed_total",
        "Tasks failed for good.",
        q.failed,
    );
    m.counter(
        "wrangle_tasks_cancelled_total",
        "Tasks cancelled.",
        q.cancelled,
    );
    m.counter(
        "wrangle_tasks_timed_out_total",
        "Tasks that timed out on their last attempt.",
        q.timed_out,
    );
    m.counter(
        "wrangle_task_retries_total",
        "Retries scheduled.",
        q.retried,
    );
    m.counter(
        "wrangle_leases_lost_total",
        "Leases taken back from dead or silent workers.",
        q.leases_lost,
    );
    m.counter(
        "wrangle_stale_reports_total",
        "Reports and lease extensions refused: their fencing token was not the current lease's.",
        q.stale_reports,
    );
    m.counter(
        "wrangle_stale_progress_total",
        "Progress reports from node workers dropped: their fencing token was not the current lease's.",
        q.stale_progress,
    );
    m.counters_by(
        "wrangle_tasks_shed_total",
        "Tasks refused at submit by load shedding (shed_low_above, shed_normal_above), by priority.",
        "priority",
        [
            ("low", q.shed.low as u64),
            ("normal", q.shed.normal as u64),
            ("high", q.shed.high as u64),
            ("critical", q.shed.critical as u64),
        ],
    );
    let tm = state.coordinator.queue().metrics();
    let now_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    m.gauge_f64(
        "wrangle_throughput_tasks_per_second",
        "Tasks completed per second over the last 10 whole seconds.",
        tm.completions.per_second(now_secs),
    );
    m.gauge(
        "wrangle_queue_depth",
        "Tasks waiting (queued and pending).",
        q.queue_size as u64,
    );
    m.gauges_by(
        "wrangle_queue_bytes",
        "Bytes the queue holds in memory: payloads of unfinished tasks (kind=\"live\"), finished tasks kept (\"finished\"), dead letters (\"dead_letter\").",
        "kind",
        [
            ("live", q.live_bytes),
            ("finished", q.finished_bytes),
            ("dead_letter", q.dead_letter_bytes),
        ],
    );
    m.gauges_by(
        "wrangle_queue_depth_by_priority",
        "Tasks queued, by priority.",
        "priority",
        [
            ("low", q.queued_by_priority.low as u64),
            ("normal", q.queued_by_priority.normal as u64),
            ("high", q.queued_by_priority.high as u64),
            ("critical", q.queued_by_priority.critical as u64),
        ],
    );
    let mb = &stats.mailboxes;
    m.gauges_by(
        "wrangle_mailbox_depth",
        "Messages waiting in actor mailboxes.",
        "actor",
        [
            ("coordinator", mb.coordinator),
            ("queue", mb.queue),
            ("pool", mb.pool),
            ("workers", mb.workers),
        ],
    );
    m.gauges_by(
        "wrangle_workers",
        "Workers by status.",
        "status",
        [
            WorkerStatus::Idle,
            WorkerStatus::Busy,
            WorkerStatus::Draining,
            WorkerStatus::Stopped,
            WorkerStatus::Error,
        ]
        .map(|status| {
            let n = workers.iter().filter(|w| w.status == status).count();
            // The status as the API spells it (`idle`, `busy`, ...).
            let name = serde_json::to_value(status).unwrap_or_default();
            (name.as_str().unwrap_or_default().to_string(), n as u64)
        }),
    );
    let p = &stats.workers;
    m.gauges_by(
        "wrangle_worker_slots",
        "Task slots: busy and total.",
        "state",
        [
            ("busy", p.current_tasks as u64),
            ("total", p.total_slots as u64),
        ],
    );
    m.counter(
        "wrangle_worker_restarts_total",
        "Workers restarted by their pool.",
        p.restarts,
    );
    m.counter(
        "wrangle_pool_restarts_total",
        "Failed worker pools restarted by the coordinator.",
        stats.pool_restarts,
    );
    m.counter(
        "wrangle_gate_restarts_total",
        "Failed cluster gates restarted by the coordinator.",
        stats.gate_restarts,
    );
    m.gauge(
        "wrangle_scale_decisions",
        "Scaling changes kept in history.",
        state.coordinator.scale_history().len() as u64,
    );
    if let Some(compute) = state.coordinator.compute() {
        compute_metrics(&mut m, compute);
    }
    if let Some(groups) = state.coordinator.node_groups() {
        node_groups::node_group_metrics(&mut m, &groups.status());
    }
    workflow_metrics(&mut m, state.coordinator.workflows().metrics());
    if let Some(store) = state.coordinator.store() {
        store_metrics(&mut m, store.writer_stats());
        m.gauge(
            "wrangle_coordinator_epoch",
            "The coordinator epoch this coordinator writes with.",
            store.epoch(),
        );
        m.gauge(
            "wrangle_failover_leader",
            "1 while this coordinator holds the PostgreSQL leader lease (failover).",
            u64::from(store.role() == "leader"),
        );
    }
    if let Some(c) = &stats.cluster {
        m.gauge("wrangle_cluster_nodes_online", "Nodes online.", c.online);
        m.counter(
            "wrangle_cluster_joins_total",
            "Node joins accepted.",
            c.joins,
        );
        m.counter(
            "wrangle_cluster_lost_total",
            "Nodes given up (closed or silent).",
            c.lost,
        );
        m.counter(
            "wrangle_cluster_refused_total",
            "Node joins refused.",
            c.refused,
        );
        m.counter(
            "wrangle_cluster_bad_frames_total",
            "Frames from peers that did not decode.",
            c.bad_frames,
        );
        m.counter(
            "wrangle_cluster_forged_frames_total",
            "Frames naming a node without the key of its session.",
            c.forged_frames,
        );
        m.counter(
            "wrangle_cluster_credits_clamped_total",
            "Credit requests cut to a worker's slots or its node's capacity.",
            c.credits_clamped,
        );
        m.counter(
            "wrangle_cluster_handshakes_refused_total",
            "Connections closed before authenticating (deadline, too many pending, too much data).",
            c.handshakes_refused,
        );
    }
    m.histogram(
        "wrangle_task_latency_seconds",
        "From submit to completion.",
        &tm.latency,
    );
    m.histogram(
        "wrangle_task_run_seconds",
        "From lease to result of completed attempts.",
        &tm.run_time,
    );
    Ok(m)
}

/// The store's writer: commits, rows, failures, health, size.
fn store_metrics(m: &mut Snapshot, w: &crate::store::WriterStats) {
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    m.histogram(
        "wrangle_store_commit_seconds",
        "One write transaction of the task store's writer, first statement to commit.",
        &w.commit_latency,
    );
    m.counter(
        "wrangle_store_commits_total",
        "Store transactions committed.",
        load(&w.commits),
    );
    m.counter(
        "wrangle_store_task_rows_total",
        "Task rows written (inserts and updates).",
        load(&w.task_rows),
    );
    m.counter(
        "wrangle_store_failures_total",
        "Store commits that failed.",
        load(&w.failures),
    );
    m.counter(
        "wrangle_store_pruned_total",
        "Finished tasks deleted by retention.",
        load(&w.pruned),
    );
    m.counter(
        "wrangle_store_rejected_rows_total",
        "Rows the database refused for good, left out of their batch.",
        load(&w.rejected_rows),
    );
    let healthy = w.healthy.load(std::sync::atomic::Ordering::Relaxed);
    m.gauge(
        "wrangle_store_healthy",
        "1 while the store's last commit succeeded.",
        u64::from(healthy),
    );
    m.gauge(
        "wrangle_store_database_bytes",
        "Size of the database, measured at each prune interval.",
        load(&w.database_bytes),
    );
    let free = load(&w.disk_free_bytes);
    if free != u64::MAX {
        m.gauge(
            "wrangle_store_disk_free_bytes",
            "Free space of the disk holding the SQLite file.",
            free,
        );
    }
}

/// Per compute node: requests, failures, load, health, circuit breaker, restarts and
/// request latency.
fn compute_metrics(m: &mut Snapshot, compute: &crate::compute::ComputeCluster) {
    let mut infos = Vec::new();
    let mut latencies = Vec::new();
    compute.with_latency(|info, latency| {
        infos.push(info.clone());
        latencies.push((info.id.clone(), latency.counts(), latency.sum_secs()));
    });
    type Field = fn(&crate::compute::ComputeNodeInfo) -> u64;
    let series: [(&str, bool, &str, Field); 10] = [
        (
            "wrangle_compute_requests_total",
            true,
            "Requests a compute node finished.",
            |i| i.requests,
        ),
        (
            "wrangle_compute_failures_total",
            true,
            "Requests that failed.",
            |i| i.failures,
        ),
        (
            "wrangle_compute_in_flight",
            false,
            "Requests running on a compute node.",
            |i| i.in_flight as u64,
        ),
        (
            "wrangle_compute_waiting",
            false,
            "Requests waiting for a slot.",
            |i| i.waiting as u64,
        ),
        (
            "wrangle_compute_healthy",
            false,
            "1 when the node receives work.",
            |i| u64::from(i.health.healthy && !i.draining),
        ),
        (
            "wrangle_compute_breaker_state",
            false,
            "The node's circuit breaker: 0 closed, 1 open, 2 half-open.",
            |i| i.breaker.state.code(),
        ),
        (
            "wrangle_compute_breaker_trips_total",
            true,
            "Times the node's circuit breaker opened.",
            |i| i.breaker.trips,
        ),
        (
            "wrangle_compute_breaker_rejected_total",
            true,
            "Requests the node's circuit breaker refused at once.",
            |i| i.breaker.rejected,
        ),
        (
            "wrangle_compute_proxy_restarts_total",
            true,
            "Node proxies restarted.",
            |i| i.restarts,
        ),
        (
            "wrangle_compute_mailbox_depth",
            false,
            "Messages waiting in a node proxy's mailbox.",
            |i| i.mailbox_depth,
        ),
    ];
    for (name, counter, help, field) in series {
        let rows = infos.iter().map(|i| (i.id.clone(), field(i)));
        if counter {
            m.counters_by(name, help, "node", rows);
        } else {
            m.gauges_by(name, help, "node", rows);
        }
    }
    m.histograms_by(
        "wrangle_compute_request_seconds",
        "Compute request latency, from start to answer.",
        "node",
        latencies,
    );
    model_metrics(m, compute);
}

/// Model calls by node and model: requests, failures, tokens and latency.
fn model_metrics(m: &mut Snapshot, compute: &crate::compute::ComputeCluster) {
    let usage = compute.model_usage();
    let keys = ["node", "model"];
    type Field = fn(&crate::compute::ModelCounters) -> u64;
    let series: [(&str, &str, Field); 4] = [
        ("wrangle_llm_requests_total", "Model calls.", |c| c.requests),
        (
            "wrangle_llm_failures_total",
            "Model calls that failed.",
            |c| c.failures,
        ),
        (
            "wrangle_llm_prompt_tokens_total",
            "Prompt tokens, as the servers counted them.",
            |c| c.prompt_tokens,
        ),
        (
            "wrangle_llm_completion_tokens_total",
            "Completion tokens, as the servers counted them.",
            |c| c.completion_tokens,
        ),
    ];
    for (name, help, field) in series {
        let rows = usage.iter().map(|(n, model, c)| (n, model, field(c)));
        m.counters_by2(name, help, keys, rows);
    }
    m.histograms_by2(
        "wrangle_llm_request_seconds",
        "Latency of model calls that succeeded.",
        keys,
        usage
            .iter()
            .map(|(n, model, c)| (n, model, c.latency.counts(), c.latency.sum_secs())),
    );
}

/// The workflow engine: runs by what happened to them, steps, and latencies.
fn workflow_metrics(m: &mut Snapshot, w: &crate::workflow::WorkflowMetrics) {
    let c = w.counts();
    m.counters_by(
        "wrangle_workflow_runs_total",
        "Workflow runs by what happened to them.",
        "event",
        [
            ("started", c.started),
            ("completed", c.completed),
            ("failed", c.failed),
            ("cancelled", c.cancelled),
            ("stopped", c.stopped),
            ("timed_out", c.timed_out),
            ("paused", c.paused),
            ("resumed", c.resumed),
            ("retried", c.retried),
            ("recovered", c.recovered),
        ],
    );
    m.gauge(
        "wrangle_workflow_runs_active",
        "Workflow runs running or paused.",
        c.active,
    );
    m.counters_by(
        "wrangle_workflow_steps_total",
        "Workflow steps by how they ended.",
        "status",
        [("completed", c.steps_completed), ("failed", c.steps_failed)],
    );
    m.histogram(
        "wrangle_workflow_step_seconds",
        "From a workflow step's start to its outcome.",
        &w.step_latency,
    );
    m.histogram(
        "wrangle_workflow_checkpoint_seconds",
        "One commit of the workflow journal.",
        &w.checkpoint_latency,
    );
}

#[cfg(test)]
mod tests;
