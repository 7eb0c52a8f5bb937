//! Following the leading coordinator, for the submit tool.
//!
//! Several coordinators can share one PostgreSQL database: one leads, the others stand by.
//! A standby answers every API route with `307 Temporary Redirect` to the leader, or with
//! `503` and `{"error": "no_leader"}` while a takeover is under way. reqwest drops the
//! `Authorization` header when it follows a redirect to another origin (another port is
//! one), so redirects are followed here, by hand: the same method, body and token, at most
//! [`MAX_HOPS`] hops, to `http` and `https` only. The leader found is remembered, so later
//! calls go straight to it. When the coordinator in use cannot be reached or knows no
//! leader yet, the others given are tried in turn, pausing between rounds, until the
//! failover time runs out.
//!
//! A redirect or a `no_leader` answer means the request was not acted on, so sending it
//! again is always safe. A request whose answer was lost after it was sent may have been
//! acted on: it is sent again only when the caller says that is safe ([`Resend::Safe`]).

use std::error::Error as _;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use tokio::time::Instant;

/// The most redirects one call follows.
pub(crate) const MAX_HOPS: usize = 3;
/// The first pause after a round of coordinators that all failed; it doubles up to
/// [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between rounds, whatever a `Retry-After` says.
const MAX_PAUSE: Duration = Duration::from_secs(2);
/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether a call may be sent again after its request went out and its answer was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resend {
    /// Sending it again changes nothing: a read, a wait, a submit whose tasks all carry an
    /// idempotency key.
    Safe,
    /// It may have been acted on: a lost answer ends the call with an error.
    Never,
}

/// One API call: what to send, how long to wait for its answer, and whether it may be
/// sent again.
#[derive(Debug)]
pub(crate) struct Call {
    method: Method,
    /// The path and query, from the leading `/`.
    path: String,
    /// JSON, when the call has a body.
    body: Option<Bytes>,
    /// How long the whole exchange with one coordinator may take (a long-poll's wait
    /// plus a margin), so a frozen coordinator is given up on like a dead one.
    timeout: Duration,
    resend: Resend,
}

impl Call {
    /// A `GET` (always safe to send again), answered within a minute.
    pub(crate) fn get(path: impl Into<String>) -> Self {
        Self {
            method: Method::GET,
            path: path.into(),
            body: None,
            timeout: Duration::from_secs(60),
            resend: Resend::Safe,
        }
    }

    /// A `POST` of a JSON body, answered within a minute.
    pub(crate) fn post(path: impl Into<String>, body: Bytes, resend: Resend) -> Self {
        Self {
            method: Method::POST,
            path: path.into(),
            body: Some(body),
            timeout: Duration::from_secs(60),
            resend,
        }
    }

    /// Gives one coordinator `timeout` to answer.
    pub(crate) fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// A coordinator's answer: its status and its body as JSON (`Null` when it is not JSON).
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: Value,
}

impl Answer {
    /// The API's error message (with the field at fault), or the status line.
    pub(crate) fn error(&self) -> String {
        let status = self.status;
        let error = &self.body["error"];
        // The API's errors nest their detail; a standby's name its kind and say the rest
        // beside it.
        let message = error["message"]
            .as_str()
            .or_else(|| self.body["message"].as_str());
        match (error["field"].as_str(), message) {
            (Some(f), Some(m)) => format!("{status}: {f}: {m}"),
            (None, Some(m)) => format!("{status}: {m}"),
            _ => status.to_string(),
        }
    }
}

/// The coordinators a client was given, and the one its calls go to.
#[derive(Debug)]
pub(crate) struct Coordinators {
    /// Follows no redirect by itself (it would drop the token).
    http: reqwest::Client,
    /// Sent as `Authorization: Bearer` on every hop.
    token: Option<String>,
    /// The base URLs given, without a trailing `/`, in the order they are tried.
    urls: Vec<String>,
    /// How long one call keeps trying to reach a leader before it fails.
    failover: Duration,
    /// Where calls go now.
    at: Mutex<At>,
}

/// Where calls go: the leader a standby named, else the URL given at `index`.
#[derive(Debug)]
struct At {
    /// A leader that is none of the URLs given (a standby named it).
    leader: Option<String>,
    /// The URL given that calls go to when `leader` is `None`.
    index: usize,
}

/// Why one attempt at a call failed.
enum Failure {
    /// Nothing was sent: the coordinator could not be reached.
    Unreached(String),
    /// The request went out but its answer was lost: it may have been acted on.
    Lost(String),
    /// The coordinator knows no leader yet: try again after `retry_after` (if it said).
    NoLeader {
        message: String,
        retry_after: Option<Duration>,
    },
    /// A redirect that must not be followed: no retry helps.
    Refused(String),
}

impl Coordinators {
    /// Checks the URLs (`http` or `https`, at least one) and builds the HTTP client.
    pub(crate) fn new(
        urls: &[String],
        token: Option<String>,
        failover: Duration,
    ) -> Result<Self, String> {
        let urls = urls
            .iter()
            .map(|u| u.trim())
            .filter(|u| !u.is_empty())
            .map(|u| match Url::parse(u) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => {
                    Ok(url.as_str().trim_end_matches('/').to_string())
                }
                Ok(_) => Err(format!("--url: {u} is not an http or https URL")),
                Err(e) => Err(format!("--url: {u} is not a URL: {e}")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if urls.is_empty() {
            return Err("--url: no coordinator given".into());
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self {
            http,
            token,
            urls,
            failover,
            at: Mutex::new(At {
                leader: None,
                index: 0,
            }),
        })
    }

    /// The coordinator calls go to now (the leader, once a standby named it).
    pub(crate) fn current(&self) -> String {
        let at = self.at.lock().expect("not poisoned");
        at.leader
            .clone()
            .unwrap_or_else(|| self.urls[at.index].clone())
    }

    /// The first URL given.
    pub(crate) fn first(&self) -> &str {
        &self.urls[0]
    }

    /// Makes the call on the leader: follows standbys' redirects, and tries the other
    /// coordinators while the one in use cannot be reached or knows no leader, for up to
    /// the failover time. Any answer but those (an error status included) is returned.
    pub(crate) async fn call(&self, call: &Call) -> Result<Answer, String> {
        let deadline = Instant::now() + self.failover;
        let mut pause = FIRST_PAUSE;
        let mut misses = 0usize;
        loop {
            let base = self.current();
            let (why, retry_after) = match self.attempt(&base, call).await {
                Ok((leader, answer)) => {
                    self.found(leader);
                    return Ok(answer);
                }
                Err(Failure::Refused(why)) => return Err(why),
                Err(Failure::Lost(why)) if call.resend == Resend::Never => {
                    self.failed(&base);
                    return Err(format!(
                        "{why}; the request had been sent and may have been acted on, so it \
                         is not sent again"
                    ));
                }
                Err(Failure::Lost(why) | Failure::Unreached(why)) => (why, None),
                Err(Failure::NoLeader {
                    message,
                    retry_after,
                }) => (message, retry_after),
            };
            self.failed(&base);
            misses += 1;
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "no leading coordinator answered within {} s (tried {}): {why}",
                    self.failover.as_secs_f64(),
                    self.urls.join(", ")
                ));
            }
            // Every coordinator failed once since the last pause: wait before the next round.
            if misses.is_multiple_of(self.urls.len()) {
                let wait = retry_after.unwrap_or(pause).min(MAX_PAUSE);
                tokio::time::sleep(wait.min(deadline - now)).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
    }

    /// One attempt at `call`, starting at `base` and following up to [`MAX_HOPS`]
    /// redirects; the base URL of the coordinator that answered, and its answer.
    async fn attempt(&self, base: &str, call: &Call) -> Result<(String, Answer), Failure> {
        let mut url = Url::parse(&format!("{base}{}", call.path))
            .map_err(|e| Failure::Refused(format!("{base}{} is not a URL: {e}", call.path)))?;
        let mut chain = vec![url.to_string()];
        for hop in 0..=MAX_HOPS {
            let mut request = self
                .http
                .request(call.method.clone(), url.clone())
                .timeout(call.timeout);
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            if let Some(body) = &call.body {
                request = request
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            let response = request.send().await.map_err(|e| lost(&url, e))?;
            let status = response.status();
            if matches!(
                status,
                StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT
            ) {
                let next = location(&url, response.headers()).map_err(Failure::Refused)?;
                chain.push(next.to_string());
                if hop == MAX_HOPS {
                    return Err(Failure::Refused(format!(
                        "more than {MAX_HOPS} redirects: {}",
                        chain.join(" -> ")
                    )));
                }
                url = next;
                continue;
            }
            let retry_after = retry_after(response.headers());
            let bytes = response.bytes().await.map_err(|e| lost(&url, e))?;
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let answer = Answer { status, body };
            if status == StatusCode::SERVICE_UNAVAILABLE && is_no_leader(&answer.body) {
                return Err(Failure::NoLeader {
                    message: format!("{url} knows no leader yet ({})", answer.error()),
                    retry_after,
                });
            }
            return Ok((base_of(&url, &call.path), answer));
        }
        unreachable!("the last hop returns")
    }

    /// `leader` answered: calls go to it from now on.
    fn found(&self, leader: String) {
        let mut at = self.at.lock().expect("not poisoned");
        match self.urls.iter().position(|u| *u == leader) {
            Some(i) => {
                *at = At {
                    leader: None,
                    index: i,
                }
            }
            None => at.leader = Some(leader),
        }
    }

    /// `base` failed: calls go to the next coordinator (unless another call moved on
    /// already).
    fn failed(&self, base: &str) {
        let mut at = self.at.lock().expect("not poisoned");
        if at.leader.as_deref() == Some(base) {
            at.leader = None;
        } else if at.leader.is_none() && self.urls[at.index] == base {
            at.index = (at.index + 1) % self.urls.len();
        }
    }
}

/// A failed send: unreached when no connection opened (nothing was sent), else lost.
fn lost(url: &Url, e: reqwest::Error) -> Failure {
    let connect = e.is_connect();
    let e = e.without_url();
    let mut why = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        why = format!("{why}: {s}");
        source = s.source();
    }
    if connect {
        Failure::Unreached(format!("cannot reach {url}: {why}"))
    } else {
        Failure::Lost(format!("lost {url}: {why}"))
    }
}

/// Where a redirect points, when it may be followed: an `http` or `https` URL.
fn location(from: &Url, headers: &HeaderMap) -> Result<Url, String> {
    let raw = headers
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| format!("{from} redirected without a readable Location"))?;
    let to = from
        .join(raw)
        .map_err(|e| format!("{from} redirected to {raw:?}, not a URL: {e}"))?;
    if !matches!(to.scheme(), "http" | "https") {
        return Err(format!(
            "{from} redirected to {raw:?}, which is not an http or https URL"
        ));
    }
    Ok(to)
}

/// A `Retry-After` in seconds, if the answer has one.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: f64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// A standby's "no leader yet": `{"error": "no_leader"}` (or the API's nested form).
fn is_no_leader(body: &Value) -> bool {
    body["error"] == "no_leader" || body["error"]["code"] == "no_leader"
}

/// The base URL of the coordinator that answered `url`: `url` without the path and query
/// the call asked for (or its origin, when the redirect changed them).
fn base_of(url: &Url, path: &str) -> String {
    match url.as_str().strip_suffix(path) {
        Some(base) => base.trim_end_matches('/').to_string(),
        None => url.origin().ascii_serialization(),
    }
}
