//! [`HttpTool`]: a GET or POST to a host on an allowlist (`http_tool`), for agents that
//! call web APIs, with every connection's address checked, capped sizes and a time limit.
//!
//! Where a request may go is decided before anything is sent, and again for every
//! redirect and every connection (module `guard`): the scheme is http or https, the URL
//! holds no `user@`, its host and port are on the allowlist, and the address connected to
//! is not loopback, private, link-local, cloud metadata or otherwise internal, whether the
//! URL names it literally or a name resolves to it (so DNS rebinding reaches nothing
//! internal). No proxy from the environment is used.
//!
//! Calls to compute nodes are [`HttpCall`](crate::HttpCall)'s job: this handler reaches
//! third-party hosts directly from the worker.

mod address;
mod allowlist;
mod config;
mod guard;
mod response;

pub use config::{HttpToolBuilder, HttpToolConfigError};

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::{Method, Url};
use serde::{Deserialize, Serialize};
use wrangle::{TaskContext, TaskError, TaskHandler};

use guard::{Guard, Refused};

/// Longest `url`, in bytes.
const MAX_URL_BYTES: usize = 8 * 1024;
/// Most `headers`.
const MAX_HEADERS: usize = 32;
/// Longest header name, in bytes.
const MAX_HEADER_NAME_BYTES: usize = 256;
/// Longest header value, in bytes.
const MAX_HEADER_VALUE_BYTES: usize = 8 * 1024;

/// Input of [`HttpTool`].
///
/// Bounds (a task past one is refused, permanently, naming the field): `url` at most
/// 8 KiB, at most 32 `headers` (names from the handler's allowlist, values at most 8 KiB),
/// `body` only with POST and at most [`HttpToolBuilder::max_request_bytes`], `timeout_ms`
/// from 1 to [`HttpToolBuilder::max_timeout`].
#[derive(Clone, Default, Deserialize)]
pub struct HttpToolInput {
    /// An `http` or `https` URL whose host (and port) is on the handler's allowlist, with no
    /// `user:password@`.
    pub url: String,
    /// `GET` (the default) or `POST`.
    #[serde(default)]
    pub method: HttpMethod,
    /// Request headers, by name; only names the handler allows
    /// ([`HttpToolBuilder::allow_header`]). Their values are never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The body of a POST: `{"json": ...}` (sent as `application/json`) or
    /// `{"text": "..."}` (sent as `text/plain; charset=utf-8`), unless a `content-type`
    /// header says otherwise. Default: empty.
    #[serde(default)]
    pub body: Option<HttpBody>,
    /// How long the whole exchange (connection, redirects, body) may take, in
    /// milliseconds. Default: the handler's [`HttpToolBuilder::default_timeout`] (30 s).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// Header values may be secrets: only their names are shown.
impl fmt::Debug for HttpToolInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpToolInput")
            .field("url", &self.url)
            .field("method", &self.method)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("body", &self.body.as_ref().map(HttpBody::kind))
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// The method of an [`HttpToolInput`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum HttpMethod {
    /// `GET`.
    #[default]
    #[serde(rename = "GET", alias = "get")]
    Get,
    /// `POST`.
    #[serde(rename = "POST", alias = "post")]
    Post,
}

/// A request or response body: `{"json": ...}` or `{"text": "..."}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpBody {
    /// JSON.
    Json(serde_json::Value),
    /// Text (a response's invalid UTF-8 replaced).
    Text(String),
}

impl HttpBody {
    fn kind(&self) -> &'static str {
        match self {
            Self::Json(_) => "json",
            Self::Text(_) => "text",
        }
    }
}

/// What [`HttpTool`] returns for a response that is not an error (1xx to 3xx; a 3xx only
/// when it was not followed, such as a 304 or a redirect with no `location`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HttpToolOutput {
    /// The status code.
    pub status: u16,
    /// The URL that answered, after any redirects.
    pub url: String,
    /// The response headers the handler returns ([`HttpToolBuilder::return_header`];
    /// `content-type` by default), by lowercase name.
    pub headers: BTreeMap<String, String>,
    /// The body: `json` when the content type is JSON (`application/json`, `...+json`)
    /// and the whole body parses, `text` otherwise (invalid UTF-8 replaced).
    pub body: HttpBody,
    /// True when the body went past [`HttpToolBuilder::max_response_bytes`]: `body` holds
    /// the first bytes, as text, and the rest was not read.
    pub truncated: bool,
    /// From sending the request to the end of the body, in milliseconds.
    pub elapsed_ms: u64,
}

/// Sends a GET or POST (`http_tool`) to a host on its allowlist and returns the status,
/// the content type and the body (JSON or text). Every redirect target and every address
/// connected to is checked as the first URL is: http or https only, no `user@`, a host and
/// port on the allowlist, and no loopback, private, link-local, metadata or other internal
/// address whether named literally or resolved (so DNS rebinding reaches nothing internal).
/// No proxy from the environment is used. [`HttpToolBuilder`] sets the allowlists and caps.
///
/// Errors: a URL, header or body the rules refuse, and any 4xx, fail permanently naming
/// the field; a 429 or 503 is retryable, after the server's `Retry-After` (in seconds)
/// when it sends one; other 5xx, network failures and the time limit are retryable.
/// Cancelling the task drops the connection.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use wrangle::{Coordinator, TaskSpec};
/// use wrangle_actors::{HttpBody, HttpTool, HttpToolOutput};
///
/// let tool = HttpTool::builder()
///     .allow_host("api.github.com")
///     .allow_host("*.githubusercontent.com")
///     .allow_header("authorization")
///     .max_response_bytes(256 * 1024)
///     .build()?;
/// let coordinator = Coordinator::builder()
///     .handler("http_tool", tool)
///     .start()
///     .await?;
/// let input = serde_json::json!({
///     "url": "https://api.github.com/repos/slawlor/ractor",
///     "headers": { "accept": "application/vnd.github+json" },
/// });
/// let out: HttpToolOutput = coordinator
///     .submit_async(TaskSpec::new("http_tool", &input)?)
///     .await?
///     .result(Duration::from_secs(60))
///     .await?;
/// if let HttpBody::Json(repo) = out.body {
///     println!("{} stars", repo["stargazers_count"]);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct HttpTool {
    inner: Arc<Inner>,
}

/// What every request of one [`HttpTool`] shares.
#[derive(Debug)]
struct Inner {
    /// The client: the guarded resolver, the redirect policy, no proxy.
    client: reqwest::Client,
    /// The allowlist and address checks, shared with the client's resolver and policy.
    guard: Arc<Guard>,
    /// Request headers a task may set, sorted.
    request_headers: Vec<HeaderName>,
    /// Response headers returned, sorted.
    response_headers: Vec<HeaderName>,
    /// Response bytes kept.
    max_response_bytes: usize,
    /// Largest request body.
    max_request_bytes: usize,
    /// Time limit when the task gives none.
    default_timeout: Duration,
    /// Largest time limit a task may ask for.
    max_timeout: Duration,
}

impl HttpTool {
    /// A builder with no host allowed yet and the default caps.
    pub fn builder() -> HttpToolBuilder {
        HttpToolBuilder::default()
    }
}

impl TaskHandler for HttpTool {
    type Input = HttpToolInput;
    type Output = HttpToolOutput;

    async fn handle(
        &self,
        ctx: TaskContext,
        input: HttpToolInput,
    ) -> Result<HttpToolOutput, TaskError> {
        let (request, timeout) = self.inner.request(input)?;
        // Dropping the exchange (cancelled, timed out) closes its connection.
        tokio::select! {
            _ = ctx.cancelled() => Err(TaskError::permanent("cancelled")),
            done = tokio::time::timeout(timeout, self.inner.exchange(request)) => {
                done.unwrap_or_else(|_| Err(TaskError::retryable(format!(
                    "timed out after {} ms",
                    timeout.as_millis()
                ))))
            }
        }
    }
}

impl Inner {
    /// Checks every bound of `input` and builds its request; answers its time limit.
    fn request(&self, input: HttpToolInput) -> Result<(reqwest::Request, Duration), TaskError> {
        if input.url.len() > MAX_URL_BYTES {
            let n = input.url.len();
            return Err(invalid(
                "url",
                format!("{n} bytes, at most {MAX_URL_BYTES}"),
            ));
        }
        let url =
            Url::parse(&input.url).map_err(|e| invalid("url", format!("not a valid URL: {e}")))?;
        self.guard.check_url(&url).map_err(refused)?;
        let timeout = match input.timeout_ms {
            None => self.default_timeout,
            Some(ms) if ms > 0 && Duration::from_millis(ms) <= self.max_timeout => {
                Duration::from_millis(ms)
            }
            Some(ms) => {
                let max = self.max_timeout.as_millis();
                return Err(invalid("timeout_ms", format!("{ms}, expected 1 to {max}")));
            }
        };
        let mut headers = self.headers(&input.headers)?;
        let (method, body) = match (input.method, input.body) {
            (HttpMethod::Get, None) => (Method::GET, None),
            (HttpMethod::Get, Some(_)) => return Err(invalid("body", "only a POST has a body")),
            (HttpMethod::Post, None) => (Method::POST, Some(Vec::new())),
            (HttpMethod::Post, Some(body)) => {
                let (bytes, content_type) = match body {
                    HttpBody::Json(value) => (
                        serde_json::to_vec(&value).map_err(|e| invalid("body.json", e))?,
                        "application/json",
                    ),
                    HttpBody::Text(text) => (text.into_bytes(), "text/plain; charset=utf-8"),
                };
                if bytes.len() > self.max_request_bytes {
                    let (n, max) = (bytes.len(), self.max_request_bytes);
                    return Err(invalid("body", format!("{n} bytes, at most {max}")));
                }
                headers
                    .entry(CONTENT_TYPE)
                    .or_insert(HeaderValue::from_static(content_type));
                (Method::POST, Some(bytes))
            }
        };
        let mut request = self.client.request(method, url).headers(headers);
        if let Some(body) = body {
            request = request.body(body);
        }
        let request = request
            .build()
            .map_err(|e| invalid("url", e.without_url()))?;
        Ok((request, timeout))
    }

    /// The task's headers, each allowed, bounded and marked sensitive.
    fn headers(&self, given: &BTreeMap<String, String>) -> Result<HeaderMap, TaskError> {
        if given.len() > MAX_HEADERS {
            let n = given.len();
            return Err(invalid(
                "headers",
                format!("{n} headers, at most {MAX_HEADERS}"),
            ));
        }
        let mut headers = HeaderMap::new();
        for (name, value) in given {
            if name.len() > MAX_HEADER_NAME_BYTES {
                let reason = format!(
                    "a name of {} bytes, at most {MAX_HEADER_NAME_BYTES}",
                    name.len()
                );
                return Err(invalid("headers", reason));
            }
            let field = format!("headers.{name}");
            let header = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|_| invalid(&field, "not a valid header name"))?;
            if !self.request_headers.contains(&header) {
                let allowed: Vec<_> = self.request_headers.iter().map(|h| h.as_str()).collect();
                let reason = format!("not an allowed header (allowed: {})", allowed.join(", "));
                return Err(invalid(&field, reason));
            }
            if value.len() > MAX_HEADER_VALUE_BYTES {
                let reason = format!("{} bytes, at most {MAX_HEADER_VALUE_BYTES}", value.len());
                return Err(invalid(&field, reason));
            }
            // The value is never quoted: it may be a secret.
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| invalid(&field, "not a valid header value"))?;
            value.set_sensitive(true);
            headers.insert(header, value);
        }
        Ok(headers)
    }
}

fn invalid(field: &str, reason: impl fmt::Display) -> TaskError {
    TaskError::permanent(format!("{field}: {reason}"))
}

/// A request the guard refused: permanent, naming `url`, and logged (hosts and addresses
/// only: never a path, a query or a header).
fn refused(reason: Refused) -> TaskError {
    tracing::warn!(%reason, "http_tool refused a request");
    invalid("url", reason)
}

/// The refusal somewhere in `e`'s chain of causes, if the guard's resolver or redirect
/// policy is why the request failed.
fn refusal<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return Some(refused);
        }
        cause = e.source();
    }
    None
}

/// A request that got no response: refused by the guard (permanent), or a network
/// failure (retryable).
fn send_error(e: reqwest::Error) -> TaskError {
    if let Some(reason) = refusal(&e) {
        return refused(reason.clone());
    }
    let e = e.without_url();
    let mut detail = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        detail = format!("{detail}: {c}");
        cause = c.source();
    }
    if e.is_connect() || e.is_timeout() {
        TaskError::retryable(format!("url: could not connect: {detail}"))
    } else {
        TaskError::retryable(format!("request failed: {detail}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_not_shown_by_debug() {
        let input = HttpToolInput {
            url: "https://api.example.com/".into(),
            headers: [("authorization".to_string(), "Bearer s3cret".to_string())].into(),
            ..HttpToolInput::default()
        };
        let shown = format!("{input:?}");
        assert!(shown.contains("authorization"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
