//! Many results in one call: `POST /tasks/wait` waits for a set of tasks, and
//! `POST /tasks/run` submits a batch and waits for it on the same request. Both answer
//! with one JSON document when everything is in, or, when the client accepts
//! `application/x-ndjson`, stream one line per task as each finishes, then a last line
//! that names what did not finish within the timeout.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{stream, StreamExt as _};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::batch::{json_body, read_body};
use super::error::{ApiError, ErrorBody};
use super::tasks::{
    parse_duration, query_error, specs_from, traceparent, SubmittedTask, TaskRequest,
};
use super::ApiState;
use crate::task::{Payload, TaskId, TaskOutcome, TaskStatus};

/// The content type of a streamed answer.
const NDJSON: &str = "application/x-ndjson";

/// How one task ended.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TaskResult {
    #[schema(value_type = String, format = Uuid)]
    id: TaskId,
    /// Its place in the submitted batch (`/tasks/run` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    status: TaskStatus,
    /// The output, when it completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    result: Option<Payload>,
    /// The last error, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl TaskResult {
    fn new(id: TaskId, index: Option<usize>, outcome: TaskOutcome) -> Self {
        let status = outcome.status();
        let (result, error) = match outcome {
            TaskOutcome::Completed { result } => (Some(result), None),
            TaskOutcome::Failed { error } => (None, Some(error)),
            TaskOutcome::Cancelled | TaskOutcome::Timeout => (None, None),
        };
        Self {
            id,
            index,
            status,
            result,
            error,
        }
    }
}

/// The end of a wait: what finished, and what did not.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct WaitEnd {
    /// Always true: the last line of a stream.
    done: bool,
    /// Tasks that finished.
    finished: usize,
    /// Tasks still unfinished when the timeout passed.
    #[schema(value_type = Vec<String>)]
    unfinished: Vec<TaskId>,
    /// Ids no task has (never existed, or pruned long ago).
    #[schema(value_type = Vec<String>)]
    not_found: Vec<TaskId>,
}

/// Every result of a wait, in the order the tasks finished.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct WaitAnswer {
    results: Vec<TaskResult>,
    #[serde(flatten)]
    end: WaitEnd,
}

/// A wait in progress: outcomes arrive on `rx`, and the tasks still awaited are `pending`.
struct Waiting {
    rx: mpsc::UnboundedReceiver<(TaskId, TaskOutcome)>,
    pending: HashSet<TaskId>,
    /// Batch positions, for `/tasks/run`.
    index: Option<HashMap<TaskId, usize>>,
    not_found: Vec<TaskId>,
    finished: usize,
    deadline: Instant,
}

impl Waiting {
    /// The next results: every one ready now (at least one, unless the wait is over).
    async fn next(&mut self) -> Vec<TaskResult> {
        let mut out = Vec::new();
        if self.pending.is_empty() {
            return out;
        }
        match tokio::time::timeout_at(self.deadline, self.rx.recv()).await {
            Ok(Some(first)) => self.take(first, &mut out),
            // The queue stopped, or the time is up.
            Ok(None) | Err(_) => return out,
        }
        while let Ok(more) = self.rx.try_recv() {
            self.take(more, &mut out);
        }
        out
    }

    fn take(&mut self, (id, outcome): (TaskId, TaskOutcome), out: &mut Vec<TaskResult>) {
        // Twice for one task (a key matched a task both in memory and the store): once.
        if self.pending.remove(&id) {
            self.finished += 1;
            let index = self.index.as_ref().and_then(|m| m.get(&id).copied());
            out.push(TaskResult::new(id, index, outcome));
        }
    }

    fn end(self) -> WaitEnd {
        let mut unfinished: Vec<TaskId> = self.pending.into_iter().collect();
        unfinished.sort_unstable();
        WaitEnd {
            done: true,
            finished: self.finished,
            unfinished,
            not_found: self.not_found,
        }
    }

    /// The whole answer, as one document or a stream of lines.
    async fn answer(mut self, first_line: Option<String>, stream_it: bool) -> Response {
        if !stream_it {
            let mut results = Vec::with_capacity(self.pending.len());
            loop {
                let batch = self.next().await;
                if batch.is_empty() {
                    break;
                }
                results.extend(batch);
            }
            return Json(WaitAnswer {
                results,
                end: self.end(),
            })
            .into_response();
        }
        let start = first_line.map(|l| Ok::<_, std::convert::Infallible>(Bytes::from(l)));
        let lines = stream::unfold(Some(self), |state| async move {
            let mut waiting = state?;
            let batch = waiting.next().await;
            if batch.is_empty() {
                return Some((lines_of(&[waiting.end()]), None));
            }
            Some((lines_of(&batch), Some(waiting)))
        });
        let body = stream::iter(start).chain(lines.map(Ok));
        (
            [
                (header::CONTENT_TYPE, NDJSON),
                (header::CACHE_CONTROL, "no-store"),
            ],
            Body::from_stream(body),
        )
            .into_response()
    }
}

/// One JSON line per item.
fn lines_of<T: Serialize>(items: &[T]) -> Bytes {
    let mut out = Vec::with_capacity(items.len() * 96);
    for item in items {
        serde_json::to_writer(&mut out, item).expect("results serialize");
        out.push(b'\n');
    }
    Bytes::from(out)
}

/// True when the client asked for a stream of lines.
fn wants_lines(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().starts_with(NDJSON)))
}

/// A wait for many tasks.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WaitBody {
    /// The tasks (at most `max_batch`, 10,000 by default; repeats count once).
    #[schema(value_type = Vec<String>)]
    ids: Vec<TaskId>,
    /// Seconds to wait at most (default 30, cut to the server's `max_wait`).
    #[serde(default)]
    timeout_secs: Option<f64>,
}

fn timeout_of(state: &ApiState, secs: Option<f64>, field: &str) -> Result<Duration, ApiError> {
    let secs = secs.unwrap_or(30.0);
    if !secs.is_finite() || secs < 0.0 {
        return Err(ApiError::bad(
            field,
            "must be a number of seconds, 0 or more",
        ));
    }
    Ok(Duration::from_secs_f64(
        secs.min(state.config.max_wait.as_secs_f64()),
    ))
}

/// Waits for many tasks at once. With `Accept: application/x-ndjson` the answer streams
/// one line per task as it finishes (those already finished first), then a last line
/// `{"done": true, ...}` naming the tasks unfinished at the timeout and the ids not found.
/// Otherwise one JSON document once all are in or the timeout passes.
#[utoipa::path(post, path = "/tasks/wait", tag = "tasks", request_body = WaitBody,
    responses((status = 200, description = "every result, or (as NDJSON) one line per result then the end line",
               content((WaitAnswer = "application/json"), (String = "application/x-ndjson"))),
              (status = 400, body = ErrorBody),
              (status = 429, body = ErrorBody, description = "too many open waits and streams from this client")))]
pub(crate) async fn wait_many(
    State(state): State<ApiState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let raw = read_body(raw, state.config.max_body_bytes)?;
    let b: WaitBody = json_body(Ok(raw))?;
    if b.ids.len() > state.config.max_batch {
        return Err(ApiError::bad(
            "ids",
            format!("at most {} ids", state.config.max_batch),
        ));
    }
    let timeout = timeout_of(&state, b.timeout_secs, "timeout_secs")?;
    let pending: HashSet<TaskId> = b.ids.iter().copied().collect();
    let (tx, rx) = mpsc::unbounded_channel();
    let ids: Vec<TaskId> = pending.iter().copied().collect();
    let not_found = state.coordinator.queue().wait_many(ids, tx).await?;
    let mut pending = pending;
    for id in &not_found {
        pending.remove(id);
    }
    let waiting = Waiting {
        rx,
        pending,
        index: None,
        not_found,
        finished: 0,
        deadline: Instant::now() + timeout,
    };
    Ok(waiting.answer(None, wants_lines(&headers)).await)
}

#[derive(Debug, Deserialize)]
pub(crate) struct RunParams {
    timeout: Option<String>,
}

/// What `/tasks/run` streams first: the accepted tasks, in order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RunStart {
    tasks: Vec<SubmittedTask>,
}

/// Submits one task or a batch (all or none, as `POST /tasks`) and waits for their results
/// on the same request (`timeout`, default 30s, at most `max_wait`). With
/// `Accept: application/x-ndjson`: a first line `{"tasks": [...]}` with the ids, one line
/// per result as it finishes (with its `index` in the batch), then the end line.
/// Otherwise one JSON document with every result once all are in.
#[utoipa::path(post, path = "/tasks/run", tag = "tasks",
    request_body(content = Vec<TaskRequest>, description = "one task, an array of tasks, or `{\"tasks\": [...]}`"),
    params(("timeout" = Option<String>, Query, pattern = "^[0-9]{1,15}(ms|s|m)?$", description = "e.g. 500ms, 30s, 2m; at most max_wait (5m by default)")),
    responses((status = 200, description = "every result, or (as NDJSON) the ids, one line per result, then the end line",
               content((WaitAnswer = "application/json"), (String = "application/x-ndjson"))),
              (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 429, body = ErrorBody, description = "too many open waits and streams from this client"),
              (status = 503, body = ErrorBody, description = "queue full or shutting down")))]
pub(crate) async fn run(
    State(state): State<ApiState>,
    headers: HeaderMap,
    params: Result<Query<RunParams>, QueryRejection>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(query_error)?;
    let timeout = match params.timeout.as_deref() {
        Some(t) => parse_duration(t, "timeout")?,
        None => Duration::from_secs(30),
    }
    .min(state.config.max_wait);
    let trace = traceparent(&headers)?;
    let raw = read_body(raw, state.config.max_body_bytes)?;
    let specs = specs_from(&state, &raw, trace)?;
    let queue = state.coordinator.queue();
    let (tx, rx) = mpsc::unbounded_channel();
    let submitted = queue.submit_batch_to(specs, tx.clone()).await?;
    // A key that matched a task only the store holds: its outcome is looked up there.
    let existing: Vec<TaskId> = submitted
        .iter()
        .filter(|s| s.existing)
        .map(|s| s.id)
        .collect();
    let not_found = if existing.is_empty() {
        Vec::new()
    } else {
        queue.wait_many(existing, tx).await?
    };
    let index: HashMap<TaskId, usize> = submitted
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id, i))
        .collect();
    let mut pending: HashSet<TaskId> = index.keys().copied().collect();
    for id in &not_found {
        pending.remove(id);
    }
    let stream_it = wants_lines(&headers);
    let first = stream_it.then(|| {
        let tasks = submitted.iter().map(SubmittedTask::from).collect();
        String::from_utf8(lines_of(&[RunStart { tasks }]).to_vec()).expect("JSON is UTF-8")
    });
    let waiting = Waiting {
        rx,
        pending,
        index: Some(index),
        not_found,
        finished: 0,
        deadline: Instant::now() + timeout,
    };
    let mut response = waiting.answer(first, stream_it).await;
    *response.status_mut() = StatusCode::OK;
    Ok(response)
}
