//! Task routes: submit (one or a batch), get, wait, cancel, list, re-queue.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::batch::{decode, read_body, split_batch};
use super::error::{ApiError, ErrorBody};
use super::ApiState;
use crate::queue::TaskQuery;
use crate::task::{
    Payload, TaskId, TaskOptions, TaskPriority, TaskSnapshot, TaskSpec, TaskStatus, TraceId,
};

/// One task to submit.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskRequest {
    /// The task type (a registered handler).
    #[serde(alias = "type")]
    #[schema(min_length = 1)]
    task_type: String,
    /// The input, any JSON (alias `data`).
    #[serde(default, alias = "data")]
    #[schema(value_type = Object)]
    payload: Option<serde_json::Value>,
    /// `low`, `normal`, `high`, `critical`, or 0, 5, 10, 20. Default `normal`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    priority: Option<PriorityInput>,
    /// How long one attempt may run, in milliseconds: 1 to 2,592,000,000 (30 days).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 2_592_000_000_u64)]
    timeout_ms: Option<u64>,
    /// Retries after a failed attempt: 0 to 100.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 100)]
    retries: Option<u32>,
    /// Labels a worker must have.
    #[serde(default)]
    labels: Vec<String>,
    /// Free-form metadata.
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    /// A repeated submit with this key returns the existing task.
    #[serde(default)]
    idempotency_key: Option<String>,
    /// Do not run before this many milliseconds: 0 to 31,536,000,000 (365 days).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 31_536_000_000_u64)]
    delay_ms: Option<u64>,
    /// The trace the task belongs to: 32 hex digits (W3C Trace Context). Default: the
    /// request's `traceparent` header's, else the task's own id.
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^[0-9a-f]{32}$")]
    trace_id: Option<crate::task::TraceId>,
    /// Tasks with the same key run on one worker while it lives (it waits a short while
    /// for that worker when it is busy): 1 to 256 bytes.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 256)]
    affinity_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PriorityInput {
    Name(String),
    Level(i64),
}

impl PriorityInput {
    fn resolve(&self) -> Option<TaskPriority> {
        TaskPriority::ALL.into_iter().find(|p| match self {
            Self::Name(n) => p.as_str() == n.to_ascii_lowercase(),
            Self::Level(l) => p.level() as i64 == *l,
        })
    }
}

impl TaskRequest {
    fn into_spec(self, field: &str) -> Result<TaskSpec, ApiError> {
        let priority = match &self.priority {
            None => TaskPriority::Normal,
            Some(p) => p.resolve().ok_or_else(|| {
                ApiError::bad(
                    format!("{field}priority"),
                    "expected low, normal, high, critical, or 0, 5, 10, 20",
                )
            })?,
        };
        let payload = Payload::from(self.payload.unwrap_or(serde_json::Value::Null));
        let options = TaskOptions {
            priority,
            timeout: self.timeout_ms.map(Duration::from_millis),
            retries: self.retries,
            labels: self.labels,
            metadata: self.metadata,
            idempotency_key: self.idempotency_key,
            delay: self.delay_ms.map(Duration::from_millis),
            trace_id: self.trace_id,
            affinity_key: self.affinity_key,
        };
        // Checked here, before anything is queued, to name the field as the client wrote it.
        options.validate().map_err(|e| match e {
            crate::Error::Invalid {
                field: name,
                reason,
            } => {
                let name = match name {
                    "timeout" => "timeout_ms",
                    "delay" => "delay_ms",
                    other => other,
                };
                ApiError::bad(format!("{field}{name}"), reason)
            }
            other => other.into(),
        })?;
        Ok(TaskSpec::from_payload(self.task_type, payload).with_options(options))
    }
}

/// What a submit returns: one entry per task accepted, in order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SubmitResponse {
    /// The accepted tasks, in the order they were given (all of them, unless `refused`
    /// names some).
    tasks: Vec<SubmittedTask>,
    /// The tasks of the batch that load shedding refused while the others were accepted:
    /// absent when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    refused: Vec<RefusedTask>,
}

/// A task of a batch refused by load shedding.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RefusedTask {
    /// Its position in the batch (from 0).
    index: usize,
    /// Why: `overloaded`.
    code: &'static str,
    /// What happened, for a person (the backlog and the mark it passed).
    message: String,
    /// Seconds to wait before submitting it again.
    retry_after_secs: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SubmittedTask {
    #[schema(value_type = String, format = Uuid)]
    id: TaskId,
    /// True when an idempotency key matched an existing task (nothing new was made).
    existing: bool,
}

impl From<&crate::task::Submitted> for SubmittedTask {
    fn from(s: &crate::task::Submitted) -> Self {
        Self {
            id: s.id,
            existing: s.existing,
        }
    }
}

/// The trace id of a request's `traceparent` header (W3C Trace Context), if it has one.
pub(crate) fn traceparent(headers: &HeaderMap) -> Result<Option<TraceId>, ApiError> {
    let Some(value) = headers.get("traceparent") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::bad("traceparent", "not ASCII"))?;
    TraceId::from_traceparent(text)
        .map(Some)
        .map_err(|e| ApiError::bad("traceparent", e.to_string()))
}

/// Turns a body (one task, an array, or `{"tasks": [...]}`) into specs; tasks without a
/// trace id of their own take `trace` (the request's `traceparent`).
pub(crate) fn specs_from(
    state: &ApiState,
    body: &[u8],
    trace: Option<TraceId>,
) -> Result<Vec<TaskSpec>, ApiError> {
    let items = split_batch(body, state.config.max_batch)?;
    if items.is_empty() {
        return Err(ApiError::bad("tasks", "no tasks given"));
    }
    let coordinator = &state.coordinator;
    items
        .into_iter()
        .map(|(at, raw)| {
            let req: TaskRequest = decode(raw, &at)?;
            if !coordinator.serves(&req.task_type) {
                let known = coordinator.task_types();
                let names: Vec<&str> = known.iter().map(|t| &**t).collect();
                return Err(ApiError::bad(
                    format!("{at}task_type"),
                    format!(
                        "unknown task type `{}`; known types: {}",
                        req.task_type,
                        names.join(", ")
                    ),
                ));
            }
            let mut spec = req.into_spec(&at)?;
            if spec.options().trace_id.is_none() {
                if let Some(t) = trace {
                    spec = spec.trace_id(t);
                }
            }
            Ok(spec)
        })
        .collect()
}

/// Submits one task or a batch. All are accepted, or none; but under load shedding
/// (`shed_low_above`, `shed_normal_above`), the tasks it refuses are left out and named in
/// `refused` while the others are accepted, and a submit whose every task is refused is
/// answered 503 `overloaded` with `Retry-After`.
#[utoipa::path(post, path = "/tasks", tag = "tasks",
    request_body(content = Vec<TaskRequest>, description = "one task, an array of tasks, or `{\"tasks\": [...]}`"),
    responses(
        (status = 201, body = SubmitResponse, description = "accepted; under load shedding some tasks may be named in `refused` (with a `Retry-After` header)"),
        (status = 400, body = ErrorBody, description = "malformed task; `field` names it"),
        (status = 413, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "queue full or shutting down (`unavailable`), or every task refused by load shedding (`overloaded`, with `Retry-After`)")))]
pub(crate) async fn submit(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let trace = traceparent(&headers)?;
    let body = read_body(body, state.config.max_body_bytes)?;
    let specs = specs_from(&state, &body, trace)?;
    let answers = state.coordinator.queue().submit_each(specs).await?;
    let mut tasks = Vec::with_capacity(answers.len());
    let mut refused = Vec::new();
    for (index, answer) in answers.into_iter().enumerate() {
        match answer {
            Ok(s) => tasks.push(SubmittedTask::from(&s)),
            Err(e) => refused.push((index, e)),
        }
    }
    if tasks.is_empty() {
        if let Some((_, e)) = refused.pop() {
            // Nothing accepted: the submit as a whole is refused (503 with Retry-After).
            return Err(crate::Error::Queue(e).into());
        }
    }
    let refused: Vec<RefusedTask> = refused
        .into_iter()
        .map(|(index, e)| RefusedTask {
            index,
            code: "overloaded",
            retry_after_secs: match &e {
                crate::QueueError::Overloaded { retry_after, .. } => {
                    super::error::retry_after_header(*retry_after)
                }
                _ => 1,
            },
            message: e.to_string(),
        })
        .collect();
    let retry_after = refused.iter().map(|r| r.retry_after_secs).max();
    let mut response =
        (StatusCode::CREATED, Json(SubmitResponse { tasks, refused })).into_response();
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, secs.into());
    }
    Ok(response)
}

/// The same as `POST /tasks` (the route database-backed agent systems use).
#[utoipa::path(post, path = "/tasks/submit", tag = "tasks",
    request_body = TaskRequest,
    responses((status = 201, body = SubmitResponse), (status = 400, body = ErrorBody)))]
pub(crate) async fn submit_compat(
    state: State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    submit(state, headers, body).await
}

/// A query string that does not parse (a parameter given twice, say), as JSON like every
/// other error.
pub(crate) fn query_error(e: QueryRejection) -> ApiError {
    ApiError::bad("query", e.body_text())
}

pub(crate) fn parse_id(raw: &str) -> Result<TaskId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::bad("id", format!("`{raw}` is not a task id (a UUID)")))
}

/// One task: status, options, input, result or error, attempts.
#[utoipa::path(get, path = "/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, format = Uuid, description = "task id (a UUID)")),
    responses((status = 200, body = TaskSnapshot), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<TaskSnapshot>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(state.coordinator.get_task(id).await?))
}

#[derive(Debug, Deserialize)]
pub(crate) struct WaitParams {
    timeout: Option<String>,
}

/// Parses `1500`, `1500ms`, `30s` or `2m`.
pub(crate) fn parse_duration(raw: &str, field: &str) -> Result<Duration, ApiError> {
    let raw = raw.trim();
    let (digits, unit) = raw
        .find(|c: char| !c.is_ascii_digit())
        .map_or((raw, "ms"), |i| raw.split_at(i));
    let n: u64 = digits.parse().map_err(|_| {
        ApiError::bad(
            field,
            format!("`{raw}` is not a duration like 500ms, 30s or 2m"),
        )
    })?;
    let too_long = || ApiError::bad(field, format!("`{raw}` is too long a duration"));
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" | "h" => n
            .checked_mul(if unit == "m" { 60 } else { 3600 })
            .map(Duration::from_secs)
            .ok_or_else(too_long),
        _ => Err(ApiError::bad(
            field,
            format!("unknown unit `{unit}`; use ms, s, m or h"),
        )),
    }
}

/// Waits until the task finishes or `timeout` (default 30s, at most `max_wait`, 5m by
/// default) passes. 200 with the finished task, or 202 with the task as it is when the wait
/// ran out. A client holds at most `max_streams_per_client` waits and event streams at once.
#[utoipa::path(get, path = "/tasks/{id}/wait", tag = "tasks",
    params(("id" = String, Path, format = Uuid, description = "task id (a UUID)"),
           ("timeout" = Option<String>, Query, pattern = "^[0-9]{1,15}(ms|s|m)?$", description = "e.g. 500ms, 30s, 2m; at most max_wait (5m by default)")),
    responses((status = 200, body = TaskSnapshot, description = "finished"),
              (status = 202, body = TaskSnapshot, description = "still running when the wait ran out"),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 429, body = ErrorBody, description = "too many open waits and streams from this client")))]
pub(crate) async fn wait(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    params: Result<Query<WaitParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let Query(params) = params.map_err(query_error)?;
    let timeout = match params.timeout.as_deref() {
        Some(t) => parse_duration(t, "timeout")?,
        None => Duration::from_secs(30),
    }
    .min(state.config.max_wait);
    let finished = match state.coordinator.wait_for(id, timeout).await {
        Ok(_) => true,
        Err(crate::Error::Queue(crate::QueueError::WaitTimeout { .. })) => false,
        Err(e) => return Err(e.into()),
    };
    let snapshot = state.coordinator.get_task(id).await?;
    let status = if finished {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(snapshot)).into_response())
}

/// What a cancel or re-queue returns.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TaskChange {
    #[schema(value_type = String, format = Uuid)]
    id: TaskId,
    /// The status before.
    previous_status: TaskStatus,
    /// The status now.
    status: TaskStatus,
}

/// Cancels a task; a running one is told to stop.
#[utoipa::path(delete, path = "/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, format = Uuid, description = "task id (a UUID)")),
    responses((status = 200, body = TaskChange), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "already finished")))]
pub(crate) async fn cancel(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<TaskChange>, ApiError> {
    let id = parse_id(&id)?;
    let previous_status = state.coordinator.cancel_task(id).await?;
    Ok(Json(TaskChange {
        id,
        previous_status,
        status: TaskStatus::Cancelled,
    }))
}

/// Puts a dead-lettered task back in the queue with a fresh retry budget.
#[utoipa::path(post, path = "/tasks/{id}/requeue", tag = "tasks",
    params(("id" = String, Path, format = Uuid, description = "task id (a UUID)")),
    responses((status = 200, body = TaskChange), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "not dead-lettered")))]
pub(crate) async fn requeue(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<TaskChange>, ApiError> {
    let id = parse_id(&id)?;
    let before = state.coordinator.get_task(id).await?.status;
    state.coordinator.requeue(id).await?;
    Ok(Json(TaskChange {
        id,
        previous_status: before,
        status: TaskStatus::Queued,
    }))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListParams {
    status: Option<String>,
    #[serde(rename = "type")]
    task_type: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
    order: Option<String>,
}

/// A page of tasks.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TaskPage {
    /// Oldest first.
    tasks: Vec<TaskSnapshot>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[schema(value_type = Option<String>)]
    next_cursor: Option<TaskId>,
}

const MAX_PAGE: usize = 1000;

/// A list route's `limit`: absent is `default`; otherwise a number from 1 to [`MAX_PAGE`],
/// refused with a 400 naming `limit` (never silently clamped).
pub(crate) fn page_limit(limit: Option<&str>, default: usize) -> Result<usize, ApiError> {
    let Some(l) = limit else {
        return Ok(default);
    };
    l.parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_PAGE).contains(n))
        .ok_or_else(|| {
            ApiError::bad(
                "limit",
                format!("`{l}` is not a number from 1 to {MAX_PAGE}"),
            )
        })
}

fn page(tasks: Vec<TaskSnapshot>, limit: usize) -> TaskPage {
    let next_cursor = (tasks.len() == limit)
        .then(|| tasks.last().map(|t| t.id))
        .flatten();
    TaskPage { tasks, next_cursor }
}

/// Lists tasks, oldest first (or newest with `order=desc`), filtered by status and type, a
/// page at a time.
#[utoipa::path(get, path = "/tasks", tag = "tasks",
    params(("status" = Option<String>, Query, description = "pending, queued, running, completed, failed, cancelled, timeout"),
           ("type" = Option<String>, Query, description = "task type"),
           ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "1..=1000, default 100"),
           ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
           ("order" = Option<String>, Query, description = "asc (oldest first, the default) or desc")),
    responses((status = 200, body = TaskPage), (status = 400, body = ErrorBody)))]
pub(crate) async fn list(
    State(state): State<ApiState>,
    p: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<TaskPage>, ApiError> {
    let Query(p) = p.map_err(query_error)?;
    let status = match p.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            s.parse::<TaskStatus>()
                .map_err(|e| ApiError::bad("status", e))?,
        ),
    };
    let limit = page_limit(p.limit.as_deref(), 100)?;
    let after = p
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.parse().map_err(|_| {
                ApiError::bad("cursor", format!("`{c}` is not a cursor from next_cursor"))
            })
        })
        .transpose()?;
    let newest_first = match p.order.as_deref() {
        None | Some("") | Some("asc") => false,
        Some("desc") => true,
        Some(o) => return Err(ApiError::bad("order", format!("`{o}` is not asc or desc"))),
    };
    let query = TaskQuery {
        status,
        task_type: p.task_type.filter(|t| !t.is_empty()),
        after,
        limit,
        newest_first,
    };
    Ok(Json(page(
        state.coordinator.queue().query(query).await?,
        limit,
    )))
}

async fn by_status(state: &ApiState, statuses: &[TaskStatus]) -> Result<Json<TaskPage>, ApiError> {
    let mut tasks = Vec::new();
    for &status in statuses {
        let query = TaskQuery {
            status: Some(status),
            limit: MAX_PAGE,
            ..TaskQuery::default()
        };
        tasks.extend(state.coordinator.queue().query(query).await?);
    }
    tasks.sort_by_key(|t| t.id);
    tasks.truncate(MAX_PAGE);
    Ok(Json(TaskPage {
        tasks,
        next_cursor: None,
    }))
}

/// Tasks waiting to run (queued and pending).
#[utoipa::path(get, path = "/tasks/queued", tag = "tasks", responses((status = 200, body = TaskPage)))]
pub(crate) async fn queued(State(state): State<ApiState>) -> Result<Json<TaskPage>, ApiError> {
    by_status(&state, &[TaskStatus::Queued, TaskStatus::Pending]).await
}

/// Tasks running now.
#[utoipa::path(get, path = "/tasks/in_progress", tag = "tasks", responses((status = 200, body = TaskPage)))]
pub(crate) async fn in_progress(State(state): State<ApiState>) -> Result<Json<TaskPage>, ApiError> {
    by_status(&state, &[TaskStatus::Running]).await
}

/// Finished tasks with their results or errors.
#[utoipa::path(get, path = "/tasks/results", tag = "tasks", responses((status = 200, body = TaskPage)))]
pub(crate) async fn results(State(state): State<ApiState>) -> Result<Json<TaskPage>, ApiError> {
    by_status(
        &state,
        &[
            TaskStatus::Completed,
            TaskStatus::Failed,
            TaskStatus::Timeout,
            TaskStatus::Cancelled,
        ],
    )
    .await
}

/// The dead letters, oldest first.
#[utoipa::path(get, path = "/tasks/dead_letters", tag = "tasks", responses((status = 200, body = TaskPage)))]
pub(crate) async fn dead_letters(
    State(state): State<ApiState>,
) -> Result<Json<TaskPage>, ApiError> {
    Ok(Json(TaskPage {
        tasks: state.coordinator.dead_letters(MAX_PAGE).await?,
        next_cursor: None,
    }))
}
