//! Compute routes: the external nodes of the coordinator's compute cluster, listed with
//! health and load, added and removed at run time (the `admin` scope).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use super::error::{ApiError, ErrorBody};
use super::ApiState;
use crate::compute::{ComputeCluster, ComputeNodeInfo, ComputeNodeSpec};

fn cluster(state: &ApiState) -> Result<&ComputeCluster, ApiError> {
    state
        .coordinator
        .compute()
        .ok_or_else(|| ApiError::NotFound("this coordinator has no compute cluster".into()))
}

/// Every compute node with its health, load and last error.
#[utoipa::path(get, path = "/compute/nodes", tag = "compute",
    responses((status = 200, body = Vec<ComputeNodeInfo>)))]
pub(crate) async fn list(State(state): State<ApiState>) -> Json<Vec<ComputeNodeInfo>> {
    Json(
        state
            .coordinator
            .compute()
            .map(|c| c.list_nodes())
            .unwrap_or_default(),
    )
}

/// Adds a compute node; answers it as listed.
#[utoipa::path(post, path = "/compute/nodes", tag = "compute", request_body = ComputeNodeSpec,
    responses((status = 201, body = ComputeNodeInfo), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn add(
    State(state): State<ApiState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<ComputeNodeInfo>), ApiError> {
    let body = body.map_err(|e| ApiError::bad("body", e.body_text()))?;
    let mut de = serde_json::Deserializer::from_slice(&body);
    let spec: ComputeNodeSpec = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "body".to_string()
        } else {
            path
        };
        ApiError::bad(field, e.into_inner().to_string())
    })?;
    let cluster = cluster(&state)?;
    let id = spec.id.clone();
    cluster.add_node(spec.into_node()?).await?;
    let info = cluster
        .node(&id)
        .map(|n| n.info())
        .ok_or_else(|| ApiError::NotFound(format!("compute node {id} was removed meanwhile")))?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// Removes a compute node once the work it has is done.
#[utoipa::path(delete, path = "/compute/nodes/{id}", tag = "compute",
    params(("id" = String, Path, description = "The node's id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(crate) async fn remove(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let cluster = cluster(&state)?;
    if cluster.node(&id).is_none() {
        return Err(ApiError::NotFound(format!(
            "no compute node `{}`",
            id.escape_debug()
        )));
    }
    cluster.remove_node(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
