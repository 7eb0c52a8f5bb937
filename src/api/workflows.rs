//! Workflow routes: definitions as JSON (registered with the `operate` scope), runs started
//! with `submit`, read with `read`, and paused, resumed, cancelled or retried with
//! `operate`.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::batch::json_body as body;
use super::error::{ApiError, ErrorBody};
use super::tasks::{page_limit, parse_duration, query_error};
use super::ApiState;
use crate::workflow::{
    BulkFilter, BulkOutcome, Checkpoint, Control, RunId, RunOptions, RunSnapshot, RunStatus,
    WorkflowDef, WorkflowError, MAX_NAME_LEN,
};

fn parse_run(raw: &str) -> Result<RunId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::bad("id", format!("`{raw}` is not a run id (a UUID)")))
}

impl From<WorkflowError> for ApiError {
    fn from(e: WorkflowError) -> Self {
        match e {
            WorkflowError::Invalid { step, reason } => Self::bad(format!("steps.{step}"), reason),
            WorkflowError::BadInput(reason) => Self::bad("body", reason),
            WorkflowError::BadOption { option, reason } => Self::bad(option, reason),
            WorkflowError::UnknownWorkflow(_) | WorkflowError::RunNotFound(_) => {
                Self::NotFound(e.to_string())
            }
            WorkflowError::WrongStatus { .. } => Self::Conflict(e.to_string()),
            WorkflowError::TooManyRuns(_)
            | WorkflowError::Stopped
            | WorkflowError::WaitTimeout(_) => Self::Unavailable(e.to_string()),
            WorkflowError::Store(reason) => {
                tracing::warn!(%reason, "workflow store error");
                Self::Unavailable("the database is unavailable".into())
            }
        }
    }
}

/// A registered workflow.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Registered {
    /// Its name.
    name: String,
    /// Its newest version (explicit, or a hash of the definition).
    version: String,
    /// The definition (see the README's workflow section for its JSON form).
    #[schema(value_type = Object)]
    definition: WorkflowDef,
}

/// Registered workflows with their newest versions.
#[utoipa::path(get, path = "/workflows", tag = "workflows",
    responses((status = 200, body = Vec<Registered>)))]
pub(crate) async fn definitions(
    State(state): State<ApiState>,
) -> Result<Json<Vec<Registered>>, ApiError> {
    let defs = state.coordinator.workflows().definitions().await?;
    Ok(Json(
        defs.into_iter()
            .map(|(name, version, definition)| Registered {
                name,
                version,
                definition,
            })
            .collect(),
    ))
}

/// Registers a workflow defined as JSON: `{"name", "version"?, "steps": [...]}`, each step
/// `{"kind": "task" | "sequence" | "parallel" | "map" | "sleep" | "condition" | "loop", ...}`.
/// A bad definition is refused naming the step (`steps.NAME`), and nothing is started.
#[utoipa::path(post, path = "/workflows", tag = "workflows",
    request_body(content = Object, description = "a workflow definition"),
    responses((status = 201, body = Registered), (status = 400, body = ErrorBody)))]
pub(crate) async fn register(
    State(state): State<ApiState>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Registered>), ApiError> {
    let def: WorkflowDef = body(raw)?;
    let version = state
        .coordinator
        .workflows()
        .register_json(def.clone())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(Registered {
            name: def.name.clone(),
            version,
            definition: def,
        }),
    ))
}

#[derive(Debug, Deserialize)]
pub(crate) struct StartParams {
    checkpoint: Option<String>,
    timeout: Option<String>,
}

impl StartParams {
    fn options(&self) -> Result<RunOptions, ApiError> {
        let mut options = RunOptions::new();
        if let Some(raw) = self.checkpoint.as_deref() {
            let value = serde_json::Value::String(raw.to_string());
            let mode = serde_json::from_value::<Checkpoint>(value).map_err(|_| {
                ApiError::bad(
                    "checkpoint",
                    format!("`{raw}` is not a checkpoint mode: before_next or overlapped"),
                )
            })?;
            options = options.checkpoint(mode);
        }
        if let Some(raw) = self.timeout.as_deref() {
            options = options.timeout(parse_duration(raw, "timeout")?);
        }
        Ok(options)
    }
}

/// Starts a run of the workflow's newest version; the body (a JSON object, or empty) is its
/// first state. Answers at once with the run as it is (once it is stored). The query may
/// set the run's own checkpoint mode and a timeout for the whole run: past it the run
/// fails and its running steps are cancelled (a retry counts it again from the retry).
#[utoipa::path(post, path = "/workflows/{name}/runs", tag = "workflows",
    params(("name" = String, Path, description = "the workflow's name"),
           ("checkpoint" = Option<String>, Query, pattern = "^(before_next|overlapped)$", description = "this run's checkpoint mode, instead of the definition's"),
           ("timeout" = Option<String>, Query, pattern = "^[0-9]{1,15}(ms|s|m|h)?$", description = "the whole run's timeout, e.g. 90s, 10m or 2h (at most a year)")),
    request_body(content = Option<Object>, description = "the run's input (its first state); none starts it with an empty state"),
    responses((status = 201, body = RunSnapshot), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn start(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    params: Result<Query<StartParams>, QueryRejection>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<RunSnapshot>), ApiError> {
    let Query(params) = params.map_err(query_error)?;
    let options = params.options()?;
    let empty = raw.as_ref().is_ok_and(|b| b.is_empty());
    let input: Value = if empty { Value::Null } else { body(raw)? };
    let flows = state.coordinator.workflows();
    let id = flows.start_with(&name, input, options).await?;
    Ok((StatusCode::CREATED, Json(flows.status(id).await?)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListParams {
    status: Option<String>,
    limit: Option<String>,
}

/// Runs, newest first: active ones and finished ones.
#[utoipa::path(get, path = "/workflows/runs", tag = "workflows",
    params(("status" = Option<String>, Query, description = "running, paused, completed, failed, cancelled or stopped"),
           ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "1..=1000, default 100")),
    responses((status = 200, body = Vec<RunSnapshot>), (status = 400, body = ErrorBody)))]
pub(crate) async fn list(
    State(state): State<ApiState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Vec<RunSnapshot>>, ApiError> {
    let Query(params) = params.map_err(query_error)?;
    let status = params
        .status
        .map(|s| {
            s.parse::<RunStatus>()
                .map_err(|e| ApiError::bad("status", e))
        })
        .transpose()?;
    let limit = page_limit(params.limit.as_deref(), 100)?;
    let runs = state.coordinator.workflows().list(status, limit).await?;
    Ok(Json(runs))
}

/// One run: status, steps completed and running, state, error, times.
#[utoipa::path(get, path = "/workflows/runs/{id}", tag = "workflows",
    params(("id" = String, Path, format = Uuid, description = "run id (a UUID)")),
    responses((status = 200, body = RunSnapshot), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<RunSnapshot>, ApiError> {
    let id = parse_run(&id)?;
    Ok(Json(state.coordinator.workflows().status(id).await?))
}

#[derive(Debug, Deserialize)]
pub(crate) struct WaitParams {
    timeout: Option<String>,
}

/// Waits until the run ends (completed, failed, stopped or cancelled) or `timeout`
/// (default 30s, at most `max_wait`). 200 with the ended run, 202 with the run as it is.
#[utoipa::path(get, path = "/workflows/runs/{id}/wait", tag = "workflows",
    params(("id" = String, Path, format = Uuid, description = "run id (a UUID)"),
           ("timeout" = Option<String>, Query, pattern = "^[0-9]{1,15}(ms|s|m)?$", description = "e.g. 500ms, 30s, 2m")),
    responses((status = 200, body = RunSnapshot, description = "ended"),
              (status = 202, body = RunSnapshot, description = "still active when the wait ran out"),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn wait(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    params: Result<Query<WaitParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = parse_run(&id)?;
    let Query(params) = params.map_err(query_error)?;
    let timeout = match params.timeout.as_deref() {
        Some(t) => parse_duration(t, "timeout")?,
        None => Duration::from_secs(30),
    }
    .min(state.config.max_wait);
    let flows = state.coordinator.workflows();
    match flows.wait(id, timeout).await {
        Ok(run) => Ok((StatusCode::OK, Json(run)).into_response()),
        Err(crate::Error::Workflow(WorkflowError::WaitTimeout(_))) => {
            let run = flows.status(id).await?;
            Ok((StatusCode::ACCEPTED, Json(run)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// Pauses, resumes, cancels or retries a run.
#[utoipa::path(post, path = "/workflows/runs/{id}/{action}", tag = "workflows",
    params(("id" = String, Path, format = Uuid, description = "run id (a UUID)"),
           ("action" = String, Path, description = "pause, resume, cancel or retry")),
    responses((status = 200, body = RunSnapshot), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "not in a status that allows it")))]
pub(crate) async fn control(
    State(state): State<ApiState>,
    Path((id, action)): Path<(String, String)>,
) -> Result<Json<RunSnapshot>, ApiError> {
    let id = parse_run(&id)?;
    let flows = state.coordinator.workflows();
    let run = match action.as_str() {
        "pause" => flows.pause(id).await?,
        "resume" => flows.resume(id).await?,
        "cancel" => flows.cancel(id).await?,
        "retry" => flows.retry(id).await?,
        other => {
            return Err(ApiError::NotFound(format!(
                "no run action `{}`: use pause, resume, cancel or retry",
                other.escape_debug()
            )))
        }
    };
    Ok(Json(run))
}

/// Pauses, resumes or cancels every active run that the body's filter matches (every
/// field given must match; `{}` takes every active run), or retries every matching failed
/// or stopped run still in memory. Runs it cannot change are listed with why.
#[utoipa::path(post, path = "/workflows/runs/bulk/{action}", tag = "workflows",
    params(("action" = String, Path, description = "pause, resume, cancel or retry")),
    request_body = BulkFilter,
    responses((status = 200, body = BulkOutcome), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "no such action")))]
pub(crate) async fn bulk(
    State(state): State<ApiState>,
    Path(action): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<BulkOutcome>, ApiError> {
    let op = match action.as_str() {
        "pause" => Control::Pause,
        "resume" => Control::Resume,
        "cancel" => Control::Cancel,
        "retry" => Control::Retry,
        other => {
            return Err(ApiError::NotFound(format!(
                "no bulk action `{}`: use pause, resume, cancel or retry",
                other.escape_debug()
            )))
        }
    };
    let filter: BulkFilter = body(raw)?;
    if let Some(w) = &filter.workflow {
        if w.is_empty() || w.len() > MAX_NAME_LEN {
            return Err(ApiError::bad(
                "workflow",
                format!("a workflow name is 1 to {MAX_NAME_LEN} characters"),
            ));
        }
    }
    Ok(Json(state.coordinator.workflows().bulk(op, filter).await?))
}
