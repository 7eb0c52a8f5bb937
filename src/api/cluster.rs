//! Cluster routes: nodes, workers, scaling, stats, health.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ErrorBody};
use super::ApiState;
use crate::coordinator::{CoordinatorStats, ScaleDecision};
use crate::pool::PoolStats;
use crate::scaling::ScalingEvent;
use crate::worker::WorkerInfo;

/// A machine taking part in the cluster: the coordinator's own process, and every node
/// that joined over the network (online, lost or left).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct NodeInfo {
    /// The node's name.
    id: String,
    /// `coordinator` or `worker`.
    role: &'static str,
    /// `online`, `lost` or `left`.
    status: crate::cluster::NodeStatus,
    /// Its labels.
    labels: Vec<String>,
    /// Milliseconds since it was last heard from (0 for the coordinator).
    silent_ms: u64,
    /// Why it was lost, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    lost_reason: Option<String>,
    /// Its pools.
    pools: Vec<PoolStats>,
    /// Its workers.
    workers: usize,
    /// Tasks running on it.
    running: u64,
    /// Its task slots.
    capacity: u64,
    /// Task types it serves.
    task_types: Vec<String>,
}

/// Every node with its pools, load and capacity.
#[utoipa::path(get, path = "/nodes", tag = "cluster", responses((status = 200, body = Vec<NodeInfo>)))]
pub(crate) async fn nodes(State(state): State<ApiState>) -> Result<Json<Vec<NodeInfo>>, ApiError> {
    let pool = state.coordinator.pool().stats().await?;
    let remote = state.coordinator.nodes().await?;
    let mut nodes = vec![NodeInfo {
        id: state.node_name.clone(),
        role: "coordinator",
        status: crate::cluster::NodeStatus::Online,
        labels: Vec::new(),
        silent_ms: 0,
        lost_reason: None,
        workers: pool.worker_count,
        running: pool.current_tasks,
        capacity: pool.total_slots,
        task_types: state
            .coordinator
            .handlers()
            .task_types()
            .iter()
            .map(|t| t.to_string())
            .collect(),
        pools: vec![pool],
    }];
    nodes.extend(remote.into_iter().map(|n| NodeInfo {
        id: n.name,
        role: "worker",
        status: n.status,
        labels: n.labels,
        silent_ms: n.silent_ms,
        lost_reason: n.lost_reason,
        workers: n.pool.worker_count,
        running: n.pool.current_tasks,
        capacity: n.pool.total_slots,
        task_types: n.task_types,
        pools: vec![n.pool],
    }));
    Ok(Json(nodes))
}

/// The same as `/nodes` (the route database-backed agent systems use).
#[utoipa::path(get, path = "/agents/nodes", tag = "cluster", responses((status = 200, body = Vec<NodeInfo>)))]
pub(crate) async fn agents_nodes(state: State<ApiState>) -> Result<Json<Vec<NodeInfo>>, ApiError> {
    nodes(state).await
}

/// Every worker with status, load, counters, labels and restarts.
#[utoipa::path(get, path = "/workers", tag = "cluster", responses((status = 200, body = Vec<WorkerInfo>)))]
pub(crate) async fn workers(
    State(state): State<ApiState>,
) -> Result<Json<Vec<WorkerInfo>>, ApiError> {
    let mut workers = state.coordinator.get_workers().await?;
    for node in state.coordinator.nodes().await? {
        if node.status == crate::cluster::NodeStatus::Online {
            workers.extend(node.workers);
        }
    }
    workers.extend(state.coordinator.pull_workers().workers());
    Ok(Json(workers))
}

/// A scaling request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScaleRequest {
    /// The number of local workers wanted, within the pool's bounds.
    workers: usize,
}

/// Sets the local pool's size.
#[utoipa::path(post, path = "/scale", tag = "cluster", request_body = ScaleRequest,
    responses((status = 200, body = ScaleDecision), (status = 400, body = ErrorBody)))]
pub(crate) async fn scale(
    State(state): State<ApiState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ScaleDecision>, ApiError> {
    let body = body.map_err(|e| ApiError::bad("body", e.body_text()))?;
    let mut de = serde_json::Deserializer::from_slice(&body);
    let req: ScaleRequest = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "workers".to_string()
        } else {
            path
        };
        ApiError::bad(field, e.into_inner().to_string())
    })?;
    Ok(Json(state.coordinator.scale(req.workers).await?))
}

/// Queue, pool and mailbox counters, and the last scaling change.
#[utoipa::path(get, path = "/stats", tag = "cluster", responses((status = 200, body = CoordinatorStats)))]
pub(crate) async fn stats(
    State(state): State<ApiState>,
) -> Result<Json<CoordinatorStats>, ApiError> {
    Ok(Json(state.coordinator.get_stats().await?))
}

/// One entry of `GET /scale/history`: a change of the local pool's size (`"kind": "pool"`,
/// with the fields of a [`ScaleDecision`]) or a node group's decision (`"kind": "node"`, with
/// the fields of a [`ScalingEvent`]).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(crate) enum ScaleHistoryEntry {
    /// The local pool's workers changed.
    Pool(ScaleDecision),
    /// A node group launched, joined, drained, terminated or lost a node.
    Node(ScalingEvent),
}

impl ScaleHistoryEntry {
    fn at(&self) -> std::time::SystemTime {
        match self {
            Self::Pool(d) => d.at,
            Self::Node(e) => e.at,
        }
    }
}

/// Recent scaling decisions, oldest first: the local pool's (its last ones, as `POST /scale`
/// and the autoscaler made them) and the node groups' (their last 1,000), each marked with
/// its `kind`.
#[utoipa::path(get, path = "/scale/history", tag = "cluster", responses((status = 200, body = Vec<ScaleHistoryEntry>)))]
pub(crate) async fn scale_history(State(state): State<ApiState>) -> Json<Vec<ScaleHistoryEntry>> {
    let pool = state.coordinator.scale_history();
    let nodes = state
        .coordinator
        .node_groups()
        .map(|g| g.history())
        .unwrap_or_default();
    let mut entries: Vec<ScaleHistoryEntry> = pool
        .into_iter()
        .map(ScaleHistoryEntry::Pool)
        .chain(nodes.into_iter().map(ScaleHistoryEntry::Node))
        .collect();
    // Each list is oldest first already; a stable sort keeps that order within each, and
    // puts the pool's decision first when one of each has the same time.
    entries.sort_by_key(ScaleHistoryEntry::at);
    Json(entries)
}

/// The node groups the coordinator launches nodes for, and their recent decisions.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct NodeGroupsView {
    /// Each group as of its last tick (empty without node groups).
    groups: Vec<crate::launch::GroupStatus>,
    /// Their last scaling events (at most 1,000), oldest first.
    events: Vec<ScalingEvent>,
}

/// Node groups: their nodes with each one's state, their counters and last decisions.
#[utoipa::path(get, path = "/scale/groups", tag = "cluster", responses((status = 200, body = NodeGroupsView)))]
pub(crate) async fn scale_groups(State(state): State<ApiState>) -> Json<NodeGroupsView> {
    Json(match state.coordinator.node_groups() {
        Some(g) => NodeGroupsView {
            groups: g.status(),
            events: g.history(),
        },
        None => NodeGroupsView {
            groups: Vec::new(),
            events: Vec::new(),
        },
    })
}

/// Liveness: the HTTP server answers. Needs no token.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "ok")))]
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the coordinator runs and takes tasks. The body says its role: `single`,
/// `leader` (failover on PostgreSQL), `deposed` (it lost the leadership and is stepping
/// down; a standby's `/readyz` says `standby`).
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "ready", body = Readiness),
        (status = 503, description = "not ready", body = Readiness)))]
pub(crate) async fn readyz(State(state): State<ApiState>) -> Response {
    let store = state.coordinator.store();
    let store_down = store.is_some_and(|s| {
        !s.writer_stats()
            .healthy
            .load(std::sync::atomic::Ordering::Relaxed)
    });
    let role = store.map_or("single", |s| s.role());
    let not_ready = |reason: &str| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Readiness {
                ready: false,
                role: role.to_string(),
                reason: Some(reason.to_string()),
            }),
        )
            .into_response()
    };
    if !state.coordinator.is_running() {
        not_ready("the coordinator is not running")
    } else if role == "deposed" {
        not_ready("another coordinator leads now; this one is stepping down")
    } else if store_down {
        // Submits would be refused: send traffic elsewhere until commits succeed again.
        not_ready("store unavailable")
    } else {
        Json(Readiness {
            ready: true,
            role: role.to_string(),
            reason: None,
        })
        .into_response()
    }
}

/// What `/readyz` answers.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Readiness {
    /// True when it takes tasks.
    ready: bool,
    /// `single`, `leader`, `deposed` (or, from a standby, `standby`).
    role: String,
    /// Why it is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// The coordinators sharing this one's PostgreSQL database: who leads, who stands by,
/// the last takeover. A coordinator without failover answers `"role": "single"`.
#[utoipa::path(get, path = "/failover", tag = "cluster",
    responses((status = 200, description = "the failover view", body = crate::failover::FailoverStatus),
        (status = 503, description = "the lease cannot be read", body = ErrorBody)))]
pub(crate) async fn failover(
    State(state): State<ApiState>,
) -> Result<Json<crate::failover::FailoverStatus>, ApiError> {
    let store = state.coordinator.store();
    let role = store.map_or("single", |s| s.role());
    crate::failover::FailoverStatus::read(store, role, None)
        .await
        .map(Json)
        .map_err(|e| ApiError::Unavailable(format!("cannot read the lease: {e}")))
}
