//! The API's one error type: a status code and a JSON body, never internal details.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::error::Error;
use crate::queue::QueueError;

/// An error answered to an HTTP client.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// 400: the request is malformed; `field` names what to fix.
    BadRequest { field: String, message: String },
    /// 401: missing or wrong bearer token.
    Unauthorized,
    /// 403: the token is valid but lacks the scope the route needs.
    MissingScope(&'static str),
    /// 403: a browser sent the request from another site's page.
    ForeignOrigin,
    /// 421: `Host` names a server this is not (DNS rebinding).
    MisdirectedHost,
    /// 415: a body that is not `application/json` (the content type given, if any).
    UnsupportedMediaType(String),
    /// 404.
    NotFound(String),
    /// 409: the request is valid but conflicts with the task's state.
    Conflict(String),
    /// 413.
    PayloadTooLarge(usize),
    /// 429.
    RateLimited,
    /// 429: the client holds its maximum of open streams.
    TooManyStreams(usize),
    /// 503: the runtime cannot take it now (queue full, shutting down).
    Unavailable(String),
    /// 503: load shedding refused the task; try again after this long (`Retry-After`).
    Overloaded {
        message: String,
        retry_after: std::time::Duration,
    },
    /// 503 `not_leader` with `Retry-After: 1`: another coordinator took the lead
    /// (failover) and this one steps down; nothing was accepted.
    NotLeader,
    /// 500: logged here, answered without details.
    Internal(String),
}

/// The JSON body of every error.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ErrorDetail {
    /// A stable machine-readable code (`bad_request`, `not_found`, ...).
    code: &'static str,
    /// What went wrong, for a person.
    message: String,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

impl ApiError {
    pub(crate) fn bad(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::BadRequest {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A `Retry-After` value: whole seconds, rounded up, at least one.
pub(crate) fn retry_after_header(after: std::time::Duration) -> u64 {
    after.as_secs_f64().ceil().max(1.0) as u64
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Told to every 429 and 503; an overload names its own.
        let mut retry_after_secs = 1;
        let (status, code, message, field) = match self {
            Self::BadRequest { field, message } => {
                (StatusCode::BAD_REQUEST, "bad_request", message, Some(field))
            }
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or invalid bearer token".to_string(),
                None,
            ),
            Self::MissingScope(scope) => (
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this token lacks the `{scope}` scope this route needs"),
                None,
            ),
            Self::ForeignOrigin => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "requests from another site's page are refused".to_string(),
                Some("origin".to_string()),
            ),
            Self::MisdirectedHost => (
                StatusCode::MISDIRECTED_REQUEST,
                "misdirected",
                "this server does not answer for that host name; add it to allowed_hosts"
                    .to_string(),
                Some("host".to_string()),
            ),
            Self::UnsupportedMediaType(given) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                if given.is_empty() {
                    "a body needs `content-type: application/json`".to_string()
                } else {
                    format!("content type `{given}` refused; send `application/json`")
                },
                Some("content-type".to_string()),
            ),
            Self::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m, None),
            Self::Conflict(m) => (StatusCode::CONFLICT, "conflict", m, None),
            Self::PayloadTooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request body exceeds the limit of {limit} bytes"),
                None,
            ),
            Self::RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests from this client; retry shortly".to_string(),
                None,
            ),
            Self::TooManyStreams(max) => (
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams",
                format!("this client already holds {max} open streams; close one first"),
                None,
            ),
            Self::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", m, None),
            Self::Overloaded {
                message,
                retry_after,
            } => {
                retry_after_secs = retry_after_header(retry_after);
                (StatusCode::SERVICE_UNAVAILABLE, "overloaded", message, None)
            }
            Self::NotLeader => (
                StatusCode::SERVICE_UNAVAILABLE,
                "not_leader",
                "this coordinator is no longer the leader (another took over); nothing was \
                 accepted: retry, and the new leader will answer"
                    .to_string(),
                None,
            ),
            Self::Internal(detail) => {
                tracing::error!(%detail, "internal error answering a request");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error".to_string(),
                    None,
                )
            }
        };
        let body = Json(ErrorBody {
            error: ErrorDetail {
                code,
                message,
                field,
            },
        });
        let mut response = (status, body).into_response();
        match status {
            StatusCode::UNAUTHORIZED => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
            }
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, retry_after_secs.into());
            }
            _ => {}
        }
        response
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid { field, reason } => Self::bad(field, reason),
            Error::Queue(q) => match q {
                QueueError::InvalidTask { index, reason } => {
                    Self::bad(format!("tasks[{index}]"), reason)
                }
                QueueError::NotFound(id) => Self::NotFound(format!("task {id} not found")),
                QueueError::AlreadyFinished { .. } | QueueError::NotDeadLettered { .. } => {
                    Self::Conflict(q.to_string())
                }
                QueueError::Full { .. } | QueueError::FullBytes { .. } | QueueError::Closed => {
                    Self::Unavailable(q.to_string())
                }
                QueueError::WaitTimeout { .. } => Self::Unavailable(q.to_string()),
                QueueError::Overloaded { retry_after, .. } => Self::Overloaded {
                    message: q.to_string(),
                    retry_after,
                },
                // Failover: the store refused the write because another coordinator leads
                // now; this one steps down. Nothing was accepted: retry (at the leader).
                QueueError::NotLeader { .. } => Self::NotLeader,
                // The database's own message may name hosts and users: it goes to the log.
                QueueError::NotStored { reason } => {
                    tracing::warn!(%reason, "submit refused: not stored");
                    Self::Unavailable(
                        "tasks not stored: the database is unavailable; nothing was accepted"
                            .into(),
                    )
                }
            },
            Error::Store(
                crate::store::StoreError::Fenced { .. }
                | crate::store::StoreError::NotLeader { .. },
            ) => Self::NotLeader,
            Error::Store(e) => {
                tracing::warn!(error = %e, "store error");
                Self::Unavailable("the database is unavailable".into())
            }
            Error::Stopped { actor } => Self::Unavailable(format!("{actor} is not running")),
            Error::Workflow(w) => w.into(),
            Error::Pull(p) => p.into(),
            other => Self::Internal(other.to_string()),
        }
    }
}
