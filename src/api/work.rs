//! The worker protocol over HTTP (scope `work`): a worker in any language leases tasks,
//! keeps their leases alive, reports progress, and completes or fails them, each report
//! carrying its lease's fencing token. See [`crate::pull`] for the rules.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::batch::json_body;
use super::error::{ApiError, ErrorBody};
use super::tasks::parse_id;
use super::ApiState;
use crate::pull::{LeaseRequest, PullError, MAX_TASKS};
use crate::task::{Lease, LeaseToken, Payload, TaskId};
use crate::TaskError;

/// Longest error message a failure report may carry, in bytes.
const MAX_ERROR: usize = 16 * 1024;

impl From<PullError> for ApiError {
    fn from(e: PullError) -> Self {
        match e {
            PullError::Invalid { field, reason } => Self::bad(field, reason),
            PullError::UnknownWorker(_) => Self::NotFound(e.to_string()),
            PullError::TooManyWorkers(_) => Self::Unavailable(e.to_string()),
        }
    }
}

fn token(raw: &str, field: &str) -> Result<LeaseToken, ApiError> {
    raw.parse()
        .map_err(|e| ApiError::bad(field, format!("{e}")))
}

fn stale(id: TaskId) -> ApiError {
    ApiError::Conflict(format!(
        "task {id}: the token is not the task's current lease (it expired and the task was \
         handed out again, the task was cancelled, or the lease is another worker's); drop \
         this attempt"
    ))
}

/// A lease call.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LeaseBody {
    /// The worker's name (1 to 64 letters, digits, `.`, `_`, `-`, `:`). It shows in
    /// `/workers` as `http:NAME`.
    worker: String,
    /// The task types it runs (1 to 64).
    task_types: Vec<String>,
    /// Its labels, matched against tasks' required labels.
    #[serde(default)]
    labels: Vec<String>,
    /// At most this many tasks (1 to 1,000). Default 1.
    #[serde(default = "one")]
    max_tasks: u32,
    /// Seconds to wait for a first task when none is ready (cut to the server's
    /// `max_wait`). Default 0: answer at once.
    #[serde(default)]
    wait_secs: f64,
}

fn one() -> u32 {
    1
}

/// A leased task.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct LeasedTask {
    #[schema(value_type = String, format = Uuid)]
    task_id: TaskId,
    /// The fencing token: every report about this attempt carries it back.
    token: String,
    task_type: String,
    /// The task's input.
    #[schema(value_type = Object)]
    payload: Payload,
    /// The attempt number (1 for the first run).
    attempt: u32,
    /// The trace the task belongs to (32 hex digits): carry it into your spans and logs.
    trace_id: String,
    /// The task's own timeout: report before it passes.
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_secs: Option<f64>,
    /// For a task without a timeout: the lease ends this long after it was granted unless
    /// a heartbeat extends it.
    #[serde(skip_serializing_if = "Option::is_none")]
    lease_secs: Option<f64>,
}

impl From<Lease> for LeasedTask {
    fn from(l: Lease) -> Self {
        Self {
            task_id: l.task_id,
            token: l.token.to_string(),
            task_type: l.task_type.to_string(),
            attempt: l.attempt(),
            trace_id: l.trace_id.to_string(),
            payload: l.payload,
            timeout_secs: l.timeout.map(|d| d.as_secs_f64()),
            lease_secs: l.lease_time.map(|d| d.as_secs_f64()),
        }
    }
}

/// What a lease call got.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Leased {
    /// Empty when no task came within the wait.
    tasks: Vec<LeasedTask>,
}

/// Leases up to `max_tasks` tasks to a worker, waiting up to `wait_secs` for the first.
/// The first call under a name registers the worker; a worker silent for longer than the
/// coordinator's `worker_timeout` is dropped and its tasks go back to the queue.
#[utoipa::path(post, path = "/workers/lease", tag = "workers", request_body = LeaseBody,
    responses((status = 200, body = Leased), (status = 400, body = ErrorBody),
              (status = 503, body = ErrorBody, description = "too many pulling workers")))]
pub(crate) async fn lease(
    State(state): State<ApiState>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Leased>, ApiError> {
    let b: LeaseBody = json_body(raw)?;
    if !b.wait_secs.is_finite() || b.wait_secs < 0.0 {
        return Err(ApiError::bad(
            "wait_secs",
            "must be a number of seconds, 0 or more",
        ));
    }
    let wait = Duration::from_secs_f64(b.wait_secs.min(state.config.max_wait.as_secs_f64()));
    let request = LeaseRequest {
        worker: b.worker,
        task_types: b.task_types,
        labels: b.labels,
        max_tasks: b.max_tasks,
        wait,
    };
    let leases = state.coordinator.pull_workers().lease(request).await?;
    Ok(Json(Leased {
        tasks: leases.into_iter().map(LeasedTask::from).collect(),
    }))
}

/// A lease the worker still holds.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeldLease {
    #[schema(value_type = String, format = Uuid)]
    task_id: TaskId,
    token: String,
}

/// A heartbeat.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeartbeatBody {
    worker: String,
    /// The leases to extend; every lease the worker holds when absent.
    #[serde(default)]
    leases: Option<Vec<HeldLease>>,
}

/// What a heartbeat answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct HeartbeatAnswer {
    /// Leases that are not the worker's current ones: stop those attempts.
    #[schema(value_type = Vec<String>)]
    refused: Vec<TaskId>,
    /// Tasks it holds that were cancelled: stop them.
    #[schema(value_type = Vec<String>)]
    cancelled: Vec<TaskId>,
}

/// Keeps a worker alive and extends its leases of tasks without a timeout by the queue's
/// `lease_time`; answers which leases were refused and which tasks were cancelled.
#[utoipa::path(post, path = "/workers/heartbeat", tag = "workers", request_body = HeartbeatBody,
    responses((status = 200, body = HeartbeatAnswer), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody, description = "no such pulling worker: lease again")))]
pub(crate) async fn heartbeat(
    State(state): State<ApiState>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<HeartbeatAnswer>, ApiError> {
    let b: HeartbeatBody = json_body(raw)?;
    let leases = match b.leases {
        None => None,
        Some(list) if list.len() > MAX_TASKS as usize => {
            return Err(ApiError::bad("leases", format!("at most {MAX_TASKS}")))
        }
        Some(list) => Some(
            list.iter()
                .enumerate()
                .map(|(i, l)| Ok((l.task_id, token(&l.token, &format!("leases[{i}].token"))?)))
                .collect::<Result<Vec<_>, ApiError>>()?,
        ),
    };
    let beat = state
        .coordinator
        .pull_workers()
        .heartbeat(&b.worker, leases)
        .await?;
    Ok(Json(HeartbeatAnswer {
        refused: beat.refused,
        cancelled: beat.cancelled,
    }))
}

/// One finished attempt.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReportBody {
    #[schema(value_type = String, format = Uuid)]
    task_id: TaskId,
    token: String,
    /// `completed` (with `result`) or `failed` (with `error`).
    status: ReportStatus,
    /// The output, for `completed`.
    #[serde(default)]
    #[schema(value_type = Object)]
    result: Option<Box<RawValue>>,
    /// What went wrong, for `failed` (at most 16 KiB).
    #[serde(default)]
    error: Option<String>,
    /// For `failed`: retry while the task has retries left (default), or fail it now.
    #[serde(default = "yes")]
    retryable: bool,
    /// For a retryable failure: wait at least this long before the retry.
    #[serde(default)]
    retry_after_secs: Option<f64>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ReportStatus {
    Completed,
    Failed,
}

impl ReportBody {
    fn into_report(
        self,
        field: &str,
    ) -> Result<(TaskId, LeaseToken, Result<Payload, TaskError>), ApiError> {
        let token = token(&self.token, &format!("{field}token"))?;
        let outcome = match self.status {
            ReportStatus::Completed => {
                let raw = self.result.as_deref().map_or("null", RawValue::get);
                Ok(Payload::from_json_bytes(raw.as_bytes().to_vec())
                    .map_err(|e| ApiError::bad(format!("{field}result"), e.to_string()))?)
            }
            ReportStatus::Failed => {
                let message = self.error.unwrap_or_else(|| "failed".into());
                if message.len() > MAX_ERROR {
                    return Err(ApiError::bad(
                        format!("{field}error"),
                        format!("at most {MAX_ERROR} bytes"),
                    ));
                }
                let mut e = if self.retryable {
                    TaskError::retryable(message)
                } else {
                    TaskError::permanent(message)
                };
                if let Some(secs) = self.retry_after_secs {
                    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
                        return Err(ApiError::bad(
                            format!("{field}retry_after_secs"),
                            "must be 0 to 86400 seconds",
                        ));
                    }
                    e = e.with_retry_after(Duration::from_secs_f64(secs));
                }
                Err(e)
            }
        };
        Ok((self.task_id, token, outcome))
    }
}

/// Many reports of one worker.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReportsBody {
    worker: String,
    /// At most 1,000.
    reports: Vec<ReportBody>,
}

/// What a batch of reports did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ReportsAnswer {
    /// Reports that counted.
    accepted: usize,
    /// Tasks whose reports were refused: their token was not the current lease's.
    #[schema(value_type = Vec<String>)]
    refused: Vec<TaskId>,
}

/// Completes or fails many leased tasks in one call. Reports whose token is not the task's
/// current lease are refused and listed; the others count.
#[utoipa::path(post, path = "/workers/reports", tag = "workers", request_body = ReportsBody,
    responses((status = 200, body = ReportsAnswer), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody, description = "no such pulling worker: lease again")))]
pub(crate) async fn reports(
    State(state): State<ApiState>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<ReportsAnswer>, ApiError> {
    let b: ReportsBody = json_body(raw)?;
    if b.reports.len() > MAX_TASKS as usize {
        return Err(ApiError::bad("reports", format!("at most {MAX_TASKS}")));
    }
    let reports = b
        .reports
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.into_report(&format!("reports[{i}].")))
        .collect::<Result<Vec<_>, _>>()?;
    let n = reports.len();
    let refused = state
        .coordinator
        .pull_workers()
        .report(&b.worker, reports)
        .await?;
    Ok(Json(ReportsAnswer {
        accepted: n - refused.len(),
        refused,
    }))
}

/// One task's completion.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompleteBody {
    worker: String,
    token: String,
    /// The output (any JSON). Default null.
    #[serde(default)]
    #[schema(value_type = Object)]
    result: Option<Box<RawValue>>,
}

/// One task's failure.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FailBody {
    worker: String,
    token: String,
    /// What went wrong (at most 16 KiB).
    error: String,
    /// Retry while the task has retries left (default), or fail it now.
    #[serde(default = "yes")]
    retryable: bool,
    /// Wait at least this long before the retry.
    #[serde(default)]
    retry_after_secs: Option<f64>,
}

/// A report's answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ReportAccepted {
    #[schema(value_type = String, format = Uuid)]
    task_id: TaskId,
}

async fn report_one(
    state: &ApiState,
    worker: &str,
    body: ReportBody,
) -> Result<Json<ReportAccepted>, ApiError> {
    let task_id = body.task_id;
    let report = body.into_report("")?;
    let refused = state
        .coordinator
        .pull_workers()
        .report(worker, vec![report])
        .await?;
    if refused.is_empty() {
        Ok(Json(ReportAccepted { task_id }))
    } else {
        Err(stale(task_id))
    }
}

/// Completes a leased task.
#[utoipa::path(post, path = "/workers/tasks/{id}/complete", tag = "workers", request_body = CompleteBody,
    params(("id" = String, Path, format = Uuid, description = "task id (a UUID)")),
    responses((status = 200, body = ReportAccepted), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody, description = "no such pulling worker: lease again"),
              (status = 409, body = ErrorBody, description = "the token is not the task's current lease")))]
pub(crate) async fn complete(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<ReportAccepted>, ApiError> {
    let task_id = parse_id(&id)?;
    let b: CompleteBody = json_body(raw)?;
    let body = ReportBody {
        task_id,
        token: b.token,
        status: ReportStatus::Completed,
        result: b.result,
        error: None,
        retryable: true,
        retry_after_secs: None,
    };
    report_one(&state, &b.worker, body).await
}

/// Fails a leased task's attempt: it retries while it has retries left, unless
/// `retryable` is false.
#[utoipa::path(post, path = "/workers/tasks/{id}/fail", tag = "workers", request_body = FailBody,
    params(("id" = String, Path, format = Uuid, description = "task id (a UUID)")),
    responses((status = 200, body = ReportAccepted), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody, description = "no such pulling worker: lease again"),
              (status = 409, body = ErrorBody, description = "the token is not the task's current lease")))]
pub(crate) async fn fail(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<ReportAccepted>, ApiError> {
    let task_id = parse_id(&id)?;
    let b: FailBody = json_body(raw)?;
    let body = ReportBody {
        task_id,
        token: b.token,
        status: ReportStatus::Failed,
        result: None,
        error: Some(b.error),
        retryable: b.retryable,
        retry_after_secs: b.retry_after_secs,
    };
    report_one(&state, &b.worker, body).await
}

/// A running attempt's progress.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProgressBody {
    worker: String,
    token: String,
    /// From 0 to 1.
    fraction: f32,
    /// At most 4 KiB.
    #[serde(default)]
    message: String,
}

/// Publishes a running attempt's progress on the event stream (dropped when the token is
/// no longer the task's current lease).
#[utoipa::path(post, path = "/workers/tasks/{id}/progress", tag = "workers", request_body = ProgressBody,
    params(("id" = String, Path, format = Uuid, description = "task id (a UUID)")),
    responses((status = 202, description = "taken"), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody, description = "no such pulling worker: lease again")))]
pub(crate) async fn progress(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let task_id = parse_id(&id)?;
    let b: ProgressBody = json_body(raw)?;
    let token = token(&b.token, "token")?;
    state
        .coordinator
        .pull_workers()
        .progress(&b.worker, task_id, token, b.fraction, b.message)?;
    Ok(StatusCode::ACCEPTED)
}

/// A worker that stops.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LeaveBody {
    worker: String,
}

/// What leaving gave back.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Left {
    /// Leases it held, now back in the queue.
    returned: usize,
}

/// A worker stops: its leases go back to the queue at once.
#[utoipa::path(post, path = "/workers/leave", tag = "workers", request_body = LeaveBody,
    responses((status = 200, body = Left), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody, description = "no such pulling worker")))]
pub(crate) async fn leave(
    State(state): State<ApiState>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Left>, ApiError> {
    let b: LeaveBody = json_body(raw)?;
    let returned = state.coordinator.pull_workers().leave(&b.worker)?;
    Ok(Json(Left { returned }))
}
