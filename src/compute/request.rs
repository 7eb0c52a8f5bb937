//! What a compute node is asked to do ([`ComputeRequest`]), what it answers
//! ([`ComputeResponse`]), streamed output ([`StreamChunk`]) and failures ([`ComputeError`]),
//! each failure saying whether trying again (on another node) could help.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::handler::TaskError;

/// HTTP methods a request may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// GET
    Get,
    /// POST
    Post,
    /// PUT
    Put,
    /// DELETE
    Delete,
}

/// How a streamed HTTP response is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamFormat {
    /// Server-sent events (`data: …` lines; OpenAI-compatible servers).
    Sse,
    /// One JSON document per line (Ollama).
    Ndjson,
}

/// An HTTP request to a node: a path under its endpoint, an optional JSON body.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HttpRequest {
    /// The method.
    pub method: HttpMethod,
    /// The path, joined to the node's endpoint (`/v1/chat/completions`).
    pub path: String,
    /// A JSON body.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// Read the response as a stream of this format, each piece delivered as it comes.
    #[serde(default)]
    pub stream: Option<StreamFormat>,
}

impl HttpRequest {
    /// `GET path`.
    pub fn get(path: impl Into<String>) -> Self {
        Self {
            method: HttpMethod::Get,
            path: path.into(),
            body: None,
            stream: None,
        }
    }

    /// `POST path` with a JSON body.
    pub fn post(path: impl Into<String>, body: serde_json::Value) -> Self {
        Self {
            method: HttpMethod::Post,
            path: path.into(),
            body: Some(body),
            stream: None,
        }
    }

    /// Reads the response as a stream.
    pub fn streaming(mut self, format: StreamFormat) -> Self {
        self.stream = Some(format);
        self
    }
}

/// A command for a machine, container or pod: a program and its arguments (no shell
/// unless the program is one).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommandRequest {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Bytes for its standard input.
    #[serde(default)]
    pub stdin: Option<String>,
}

/// What to ask of a node.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ComputeRequest {
    /// An HTTP call (HTTP nodes).
    Http(HttpRequest),
    /// A command (Docker, Kubernetes and SSH nodes).
    Command(CommandRequest),
}

impl ComputeRequest {
    /// Checks the request's bounds; the error names the field.
    pub(crate) fn validate(&self) -> Result<(), ComputeError> {
        let bad = |field: &str, why: &str| ComputeError::invalid(format!("{field}: {why}"));
        match self {
            Self::Http(r) => {
                if !r.path.starts_with('/') || r.path.len() > 4096 {
                    return Err(bad("path", "must start with '/' and be at most 4096 bytes"));
                }
                if r.path.contains("://") || r.path.starts_with("//") {
                    return Err(bad("path", "must be a path, not a URL"));
                }
                if r.path.chars().any(|c| c.is_control() || c.is_whitespace()) {
                    return Err(bad("path", "contains spaces or control characters"));
                }
            }
            Self::Command(c) => {
                if c.argv.is_empty() || c.argv[0].is_empty() {
                    return Err(bad("argv", "needs a program"));
                }
                if c.argv.len() > 4096 || c.argv.iter().map(String::len).sum::<usize>() > 1 << 20 {
                    return Err(bad("argv", "at most 4096 arguments and 1 MiB"));
                }
                if c.argv.iter().any(|a| a.contains('\0')) {
                    return Err(bad("argv", "contains a NUL byte"));
                }
            }
        }
        Ok(())
    }
}

/// A node's answer.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ComputeResponse {
    /// An HTTP response with a success status.
    Http {
        /// The status code.
        status: u16,
        /// The body (for a streamed response, what followed the last event, usually empty).
        #[serde(with = "body_text")]
        body: Bytes,
        /// A streamed response's events (SSE `data` or NDJSON lines), in order.
        events: Vec<String>,
    },
    /// A command's end.
    Command {
        /// Its exit code (`None`: killed by a signal, or the backend gave none).
        exit_code: Option<i64>,
        /// Its standard output (lossy UTF-8).
        stdout: String,
        /// Its standard error (lossy UTF-8).
        stderr: String,
    },
}

impl ComputeResponse {
    /// An HTTP body decoded as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ComputeError> {
        match self {
            Self::Http { body, .. } => serde_json::from_slice(body).map_err(|e| {
                ComputeError::protocol(format!("response body is not the JSON expected: {e}"))
            }),
            Self::Command { .. } => Err(ComputeError::invalid("a command has no JSON body")),
        }
    }
}

mod body_text {
    pub(super) fn serialize<S: serde::Serializer>(
        b: &bytes::Bytes,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&String::from_utf8_lossy(b))
    }
}

/// A piece of streamed output, as it arrives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamChunk {
    /// One event of a streamed HTTP response.
    Event(String),
    /// Standard output of a command.
    Stdout(Bytes),
    /// Standard error of a command.
    Stderr(Bytes),
}

/// Where streamed output goes while a request runs. Bounded: a slow reader slows the
/// stream rather than growing memory.
pub type StreamSink = mpsc::Sender<StreamChunk>;

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComputeErrorKind {
    /// The node could not be reached (refused, reset, unhealthy, its proxy restarted):
    /// retryable on another node.
    Unavailable,
    /// No node in the cluster matches, or none is healthy: retryable (nodes come back).
    NoNode,
    /// The request took longer than its timeout: retryable.
    Timeout,
    /// The node, or its wait line in the proxy, is full (HTTP 429): retryable, not before
    /// `retry_after`. Not the node's fault: its circuit breaker does not count it.
    Busy,
    /// The node failed (HTTP 5xx; a 503's `Retry-After` is kept in `retry_after`):
    /// retryable.
    Remote,
    /// The node refused the request (HTTP 4xx other than 429): permanent.
    Rejected,
    /// The answer broke the protocol (malformed JSON, a stream cut short): retryable.
    Protocol,
    /// The request is malformed or too large: permanent.
    Invalid,
}

/// A failed compute request.
///
/// It converts into a [`TaskError`] that keeps its verdict (retryable or permanent), so a
/// handler may use `?` on it. For that reason it does not implement `std::error::Error`:
/// every such error converts into a *retryable* `TaskError`, which would retry refusals.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ComputeError {
    /// What kind of failure.
    pub kind: ComputeErrorKind,
    /// What happened.
    pub message: String,
    /// When the node said to come back (`Retry-After`).
    pub retry_after: Option<Duration>,
}

impl ComputeError {
    pub(crate) fn new(kind: ComputeErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ComputeErrorKind::Unavailable, message)
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(ComputeErrorKind::Invalid, message)
    }

    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        Self::new(ComputeErrorKind::Protocol, message)
    }

    /// True when trying again, on this node later or on another, could succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self.kind,
            ComputeErrorKind::Rejected | ComputeErrorKind::Invalid
        )
    }

    /// True when the failure says the node itself is in trouble (it counts towards its
    /// circuit breaker), rather than the request: it could not be reached, it did not
    /// answer in time, or it failed (HTTP 500, 502, 503, 504 and every other 5xx). A refusal
    /// (4xx), a 429 and a broken answer are not.
    pub(crate) fn is_node_fault(&self) -> bool {
        matches!(
            self.kind,
            ComputeErrorKind::Unavailable | ComputeErrorKind::Timeout | ComputeErrorKind::Remote
        )
    }
}

impl fmt::Display for ComputeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)?;
        if let Some(after) = self.retry_after {
            write!(f, " (retry after {after:?})")?;
        }
        Ok(())
    }
}

impl From<ComputeError> for TaskError {
    fn from(e: ComputeError) -> Self {
        if e.is_retryable() {
            let error = TaskError::retryable(e.to_string());
            match e.retry_after {
                Some(after) => error.with_retry_after(after),
                None => error,
            }
        } else {
            TaskError::permanent(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_out_of_bounds_are_refused_naming_the_field() {
        let bad = |r: ComputeRequest| r.validate().unwrap_err().message;
        assert!(bad(ComputeRequest::Http(HttpRequest::get("v1/models"))).starts_with("path"));
        assert!(
            bad(ComputeRequest::Http(HttpRequest::get("//evil.example/x"))).starts_with("path")
        );
        assert!(bad(ComputeRequest::Http(HttpRequest::get("/a b"))).starts_with("path"));
        let cmd = |argv: Vec<&str>| {
            ComputeRequest::Command(CommandRequest {
                argv: argv.into_iter().map(String::from).collect(),
                stdin: None,
            })
        };
        assert!(bad(cmd(vec![])).starts_with("argv"));
        assert!(bad(cmd(vec!["echo", "a\0b"])).starts_with("argv"));
        assert!(cmd(vec!["echo", "hi"]).validate().is_ok());
        assert!(ComputeRequest::Http(HttpRequest::get("/v1/models"))
            .validate()
            .is_ok());
    }

    #[test]
    fn failures_map_to_retryable_or_permanent_task_errors() {
        for (kind, retryable) in [
            (ComputeErrorKind::Unavailable, true),
            (ComputeErrorKind::NoNode, true),
            (ComputeErrorKind::Timeout, true),
            (ComputeErrorKind::Busy, true),
            (ComputeErrorKind::Remote, true),
            (ComputeErrorKind::Protocol, true),
            (ComputeErrorKind::Rejected, false),
            (ComputeErrorKind::Invalid, false),
        ] {
            let e: TaskError = ComputeError::new(kind, "x").into();
            assert_eq!(e.is_retryable(), retryable, "{kind:?}");
        }
        let busy = ComputeError {
            retry_after: Some(Duration::from_secs(7)),
            ..ComputeError::new(ComputeErrorKind::Busy, "HTTP 429")
        };
        let e: TaskError = busy.into();
        assert_eq!(
            e.retry_after(),
            Some(Duration::from_secs(7)),
            "the queue hears Retry-After"
        );
    }

    #[test]
    fn node_faults_are_what_the_breaker_counts() {
        use ComputeErrorKind as K;
        for (kind, fault) in [
            (K::Unavailable, true),
            (K::Timeout, true),
            (K::Remote, true),
            (K::Busy, false),
            (K::Rejected, false),
            (K::Protocol, false),
            (K::Invalid, false),
            (K::NoNode, false),
        ] {
            assert_eq!(
                ComputeError::new(kind, "x").is_node_fault(),
                fault,
                "{kind:?}"
            );
        }
    }
}
