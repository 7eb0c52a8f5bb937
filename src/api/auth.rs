//! Authentication and authorization: bearer tokens (or the dashboard's login cookie), each
//! with scopes, checked against the scope of the route asked for.
//!
//! A token is compared in constant time with every configured token (`subtle`), so neither
//! its content nor which token matched shows in the timing. Browsers log in once through
//! `POST /login`, which sets an `HttpOnly; SameSite=Strict` cookie: the secret never travels
//! in a URL, and another site's page cannot use the cookie (SameSite, plus the `Origin`
//! check and JSON-only bodies of [`super::guard`]).

use std::collections::BTreeSet;
use std::fmt;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use percent_encoding::{percent_decode_str, utf8_percent_encode, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::ApiState;

/// The name of the dashboard's login cookie.
pub(crate) const COOKIE: &str = "wrangle_token";

/// What a token may do. Each route needs one scope; a token holds any set of them.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read anything: tasks, nodes, workers, stats, events, metrics, the OpenAPI document.
    Read,
    /// Submit tasks.
    Submit,
    /// The worker protocol: lease, extend, complete and fail tasks.
    Work,
    /// Change what runs: cancel, re-queue, scale.
    Operate,
    /// Manage the system: compute nodes and settings.
    Admin,
}

impl Scope {
    /// Every scope, in order.
    pub const ALL: [Scope; 5] = [
        Scope::Read,
        Scope::Submit,
        Scope::Work,
        Scope::Operate,
        Scope::Admin,
    ];

    /// Its lowercase name, as in settings and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Submit => "submit",
            Self::Work => "work",
            Self::Operate => "operate",
            Self::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s.trim())
            .ok_or_else(|| format!("`{s}` is not a scope: read, submit, work, operate or admin"))
    }
}

/// A bearer token and the scopes it grants. Its `Debug` form hides the secret.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// The secret a client sends as `Authorization: Bearer <token>`. Must not be empty.
    pub token: String,
    /// What it may do.
    pub scopes: BTreeSet<Scope>,
}

impl ApiToken {
    /// A token with the given scopes.
    pub fn new(token: impl Into<String>, scopes: impl IntoIterator<Item = Scope>) -> Self {
        Self {
            token: token.into(),
            scopes: scopes.into_iter().collect(),
        }
    }

    /// A token with every scope.
    pub fn full(token: impl Into<String>) -> Self {
        Self::new(token, Scope::ALL)
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiToken")
            .field("token", &"<redacted>")
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// The scope a route needs; `None` for the public ones.
pub(crate) fn required_scope(method: &Method, path: &str) -> Option<Scope> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        // `/readyz` too: load balancers probe it without a token (it says ready or not,
        // and the role: leader, standby or single).
        (_, ["healthz" | "readyz"] | [""] | ["assets", ..] | ["login"] | ["logout"]) => None,
        (
            _,
            ["worker", ..] | ["workers", "lease" | "heartbeat" | "reports" | "leave" | "tasks", ..],
        ) => Some(Scope::Work),
        (_, ["compute", ..] | ["compute_nodes", ..] | ["settings", ..]) => Some(Scope::Admin),
        (&Method::GET | &Method::HEAD, _) => Some(Scope::Read),
        (&Method::POST, ["tasks"] | ["tasks", "submit" | "run"]) => Some(Scope::Submit),
        (&Method::POST, ["tasks", "wait"]) => Some(Scope::Read),
        (&Method::DELETE, ["tasks", _]) => Some(Scope::Operate),
        (&Method::POST, ["tasks", _, "requeue"] | ["scale"]) => Some(Scope::Operate),
        (&Method::POST, ["workflows", _, "runs"]) => Some(Scope::Submit),
        (&Method::POST, ["workflows"] | ["workflows", "runs", _, _]) => Some(Scope::Operate),
        // Anything else that changes state: the strongest scope, so a new route is closed
        // until it is given its own.
        _ => Some(Scope::Admin),
    }
}

/// The scopes of the token in `given`, if it is one of `tokens`. Every configured token is
/// compared, in constant time, whatever matched before.
pub(crate) fn scopes_of(tokens: &[ApiToken], given: &str) -> Option<BTreeSet<Scope>> {
    let mut found: Option<&ApiToken> = None;
    for t in tokens {
        // An empty configured token is a configuration error; it never matches.
        let equal: bool =
            (!t.token.is_empty()) & bool::from(t.token.as_bytes().ct_eq(given.as_bytes()));
        if equal {
            found = Some(t);
        }
    }
    found.map(|t| t.scopes.clone())
}

/// The credential a request carries: the bearer token, else the login cookie.
pub(crate) fn credential(headers: &HeaderMap) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    bearer.or_else(|| cookie(headers, COOKIE))
}

/// The value of cookie `name`, percent-decoded.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| percent_decode_str(v).decode_utf8().ok())
        .map(|v| v.into_owned())
}

/// Requires a token holding the route's scope, when tokens are configured: 401 without a
/// valid one, 403 naming the missing scope.
pub(crate) fn authorize(state: &ApiState, req: &Request) -> Result<(), ApiError> {
    if state.tokens.is_empty() {
        return Ok(());
    }
    let Some(needed) = required_scope(req.method(), req.uri().path()) else {
        return Ok(());
    };
    let Some(scopes) = credential(req.headers()).and_then(|t| scopes_of(&state.tokens, &t)) else {
        return Err(ApiError::Unauthorized);
    };
    if !scopes.contains(&needed) {
        tracing::warn!(scope = needed.as_str(), path = %req.uri().path(), "request refused: scope missing");
        return Err(ApiError::MissingScope(needed.as_str()));
    }
    Ok(())
}

/// What `POST /login` takes.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Login {
    /// One of the configured tokens.
    token: String,
}

/// What `POST /login` answers.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct LoggedIn {
    /// The scopes of the token.
    scopes: BTreeSet<Scope>,
}

/// Logs a browser in: checks the token and sets it as an `HttpOnly; SameSite=Strict`
/// cookie, so the dashboard's requests and event stream carry it without a URL parameter.
#[utoipa::path(post, path = "/login", tag = "auth", request_body = Login,
    responses((status = 200, body = LoggedIn, description = "logged in; the cookie is set"),
              (status = 400, body = super::error::ErrorBody), (status = 401, body = super::error::ErrorBody),
              (status = 415, body = super::error::ErrorBody)))]
pub(crate) async fn login(
    State(state): State<ApiState>,
    tls: Option<axum::Extension<super::OverTls>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let login: Login = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad("token", format!("expected {{\"token\": \"...\"}}: {e}")))?;
    let scopes = scopes_of(&state.tokens, &login.token).ok_or(ApiError::Unauthorized)?;
    let secure = if tls.is_some() { "; Secure" } else { "" };
    let value = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict{secure}",
        utf8_percent_encode(&login.token, NON_ALPHANUMERIC)
    );
    let cookie =
        HeaderValue::from_str(&value).map_err(|_| ApiError::bad("token", "not a valid token"))?;
    let mut res = axum::Json(LoggedIn { scopes }).into_response();
    res.headers_mut().insert(header::SET_COOKIE, cookie);
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// Logs a browser out: clears the cookie.
#[utoipa::path(post, path = "/logout", tag = "auth",
    responses((status = 204, description = "the cookie is cleared")))]
pub(crate) async fn logout() -> Response {
    let clear = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, clear)]).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_their_scope() {
        let cases = [
            (Method::GET, "/tasks", Some(Scope::Read)),
            (Method::GET, "/events", Some(Scope::Read)),
            (Method::POST, "/tasks", Some(Scope::Submit)),
            (Method::POST, "/tasks/submit", Some(Scope::Submit)),
            (Method::POST, "/tasks/run", Some(Scope::Submit)),
            (Method::POST, "/tasks/wait", Some(Scope::Read)),
            (Method::DELETE, "/tasks/x", Some(Scope::Operate)),
            (Method::POST, "/tasks/x/requeue", Some(Scope::Operate)),
            (Method::POST, "/workflows/etl/runs", Some(Scope::Submit)),
            (Method::POST, "/workflows", Some(Scope::Operate)),
            (
                Method::POST,
                "/workflows/runs/x/cancel",
                Some(Scope::Operate),
            ),
            (Method::GET, "/workflows/runs/x", Some(Scope::Read)),
            (Method::POST, "/scale", Some(Scope::Operate)),
            (Method::POST, "/workers/lease", Some(Scope::Work)),
            (Method::POST, "/workers/heartbeat", Some(Scope::Work)),
            (Method::POST, "/workers/reports", Some(Scope::Work)),
            (Method::POST, "/workers/leave", Some(Scope::Work)),
            (Method::POST, "/workers/tasks/x/complete", Some(Scope::Work)),
            (Method::GET, "/workers", Some(Scope::Read)),
            (Method::POST, "/compute/nodes", Some(Scope::Admin)),
            (Method::GET, "/compute/nodes", Some(Scope::Admin)),
            (Method::PUT, "/somewhere/new", Some(Scope::Admin)),
            (Method::GET, "/", None),
            (Method::GET, "/assets/app.js", None),
            (Method::POST, "/login", None),
            (Method::GET, "/healthz", None),
            (Method::GET, "/readyz", None),
            (Method::GET, "/failover", Some(Scope::Read)),
        ];
        for (method, path, scope) in cases {
            assert_eq!(required_scope(&method, path), scope, "{method} {path}");
        }
    }

    #[test]
    fn tokens_match_exactly_and_empty_ones_never() {
        let tokens = vec![
            ApiToken::new("reader", [Scope::Read]),
            ApiToken::full("root"),
            ApiToken::new("", Scope::ALL),
        ];
        assert_eq!(scopes_of(&tokens, "reader").unwrap().len(), 1);
        assert_eq!(scopes_of(&tokens, "root").unwrap().len(), 5);
        assert!(
            scopes_of(&tokens, "").is_none(),
            "an empty token never passes"
        );
        assert!(scopes_of(&tokens, "reade").is_none());
        assert!(scopes_of(&tokens, "readers").is_none());
    }

    #[test]
    fn cookie_is_percent_decoded() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; wrangle_token=s%20%3B%3D3; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("s ;=3"));
        assert!(!format!("{:?}", ApiToken::full("hunter2")).contains("hunter2"));
        let config = super::super::ApiConfig {
            token: Some("hunter3".into()),
            tokens: vec![ApiToken::full("hunter4")],
            ..Default::default()
        };
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("hunter3") && !shown.contains("hunter4"),
            "{shown}"
        );
    }
}
