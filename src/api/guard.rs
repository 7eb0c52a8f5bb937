//! Cross-site and DNS-rebinding guards: JSON-only bodies, and `Host`/`Origin` checks.
//!
//! A page on another site can make a browser send "simple" requests (a `text/plain` or
//! form-encoded POST) to any address, and DNS rebinding can point a name the attacker owns at
//! `127.0.0.1`. So every body must be `application/json` (which a browser only sends
//! cross-site after a CORS preflight the server does not grant), `Host` must name this server
//! (an IP address, `localhost`, or a configured name: a rebound name is answered 421), and an
//! `Origin`, when a browser sends one, must be this server's own or a configured CORS origin
//! (403 otherwise).

use axum::body::HttpBody;
use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::rate_limit::SharedLimiter;
use super::{ApiConfig, ApiState};

/// Every request's checks in one middleware (one boxed future and one clone of the routes
/// per request, where a layer per check cost one each: a fifth of a single submit's time),
/// in this order: the client's rate limit; then, on every route but `/healthz`, `Host` and
/// `Origin`, JSON-only bodies and the token's scope.
pub(crate) async fn guard(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    if let Err(refused) = check(&state, &req) {
        return refused.into_response();
    }
    next.run(req).await
}

fn check(state: &ApiState, req: &Request) -> Result<(), ApiError> {
    admit_and_place(&state.limiter, &state.config, req)?;
    if req.uri().path() == "/healthz" {
        return Ok(());
    }
    json_only(req)?;
    super::auth::authorize(state, req)
}

/// The checks before any route's own: the client's rate limit, then (on every route but
/// `/healthz`) `Host` and `Origin`. A standby coordinator runs them on the routes it
/// answers itself, with the API's own settings.
pub(crate) fn admit_and_place(
    limiter: &SharedLimiter,
    config: &ApiConfig,
    req: &Request,
) -> Result<(), ApiError> {
    super::rate_limit::admit(limiter, req)?;
    if req.uri().path() == "/healthz" {
        return Ok(());
    }
    host_and_origin(config, req)
}

/// Refuses (415) a request with a body that is not `application/json`.
///
/// Methods that carry a body (POST, PUT, PATCH, DELETE) must declare
/// `content-type: application/json` (parameters such as `charset` allowed) whenever they send
/// a body or any content type at all; a body-less `POST /tasks/{id}/requeue` without a content
/// type stays accepted.
fn json_only(req: &Request) -> Result<(), ApiError> {
    let carries_body = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if carries_body {
        // A body of no bytes (`content-length: 0`, or none at all) needs no type.
        let has_body = req.body().size_hint().exact() != Some(0);
        match req.headers().get(header::CONTENT_TYPE) {
            Some(kind) => {
                let kind = kind.to_str().unwrap_or_default();
                if !is_json(kind) {
                    return Err(ApiError::UnsupportedMediaType(
                        kind.chars().take(100).collect(),
                    ));
                }
            }
            None if has_body => return Err(ApiError::UnsupportedMediaType(String::new())),
            None => {}
        }
    }
    Ok(())
}

/// `application/json`, with or without parameters, in any case.
fn is_json(kind: &str) -> bool {
    let essence = kind.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// Refuses a request whose `Host` names another server (421: DNS rebinding), or whose
/// `Origin` is another site (403: a cross-site request).
fn host_and_origin(config: &ApiConfig, req: &Request) -> Result<(), ApiError> {
    // HTTP/2 carries the host in the URI's authority instead of a header.
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    if let Some(host) = host {
        if !host_allowed(host, &config.allowed_hosts) {
            tracing::warn!(host = %host.chars().take(100).collect::<String>(), "request for another host refused");
            return Err(ApiError::MisdirectedHost);
        }
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("null");
        if !origin_allowed(origin, host, &config.cors_origins) {
            tracing::warn!(origin = %origin.chars().take(100).collect::<String>(), "cross-site request refused");
            return Err(ApiError::ForeignOrigin);
        }
    }
    Ok(())
}

/// The host name of a `Host` value (`name`, `name:port`, `[v6]:port`), in lower case.
fn host_name(host: &str) -> Option<String> {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.starts_with(':')) {
            return None;
        }
        inside
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
            Some(_) => return None,
            None => host,
        }
    };
    (!name.is_empty()).then(|| name.to_ascii_lowercase())
}

/// An IP address (no rebinding can make a browser send one for a page it did not load from
/// that address), `localhost` or a name under it, or one of the configured names.
pub(crate) fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let Some(name) = host_name(host) else {
        return false;
    };
    name.parse::<std::net::IpAddr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || allowed.iter().any(|a| {
            host_name(a).is_some_and(|a| a == name || (a.starts_with('.') && name.ends_with(&a)))
        })
}

/// The request's own origin (`http(s)://` + its `Host`), or a configured CORS origin.
fn origin_allowed(origin: &str, host: Option<&str>, cors: &[String]) -> bool {
    if cors.iter().any(|c| c.trim_end_matches('/') == origin) {
        return true;
    }
    let Some(authority) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    host.is_some_and(|h| h.eq_ignore_ascii_case(authority))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let none: &[String] = &[];
        for ok in [
            "127.0.0.1:7700",
            "localhost",
            "LOCALHOST:1",
            "[::1]:7700",
            "10.1.2.3",
            "app.localhost:80",
        ] {
            assert!(host_allowed(ok, none), "{ok}");
        }
        for bad in [
            "evil.example:7700",
            "",
            "[::1",
            "a:b:c",
            "localhost.evil.com",
        ] {
            assert!(!host_allowed(bad, none), "{bad}");
        }
        let names = vec!["wrangle.internal".to_string(), ".corp.example".to_string()];
        assert!(host_allowed("wrangle.internal:7700", &names));
        assert!(host_allowed("a.corp.example", &names));
        assert!(!host_allowed("corp.example.evil", &names));
    }

    #[test]
    fn origins() {
        let cors = vec!["https://ui.example".to_string()];
        assert!(origin_allowed(
            "http://127.0.0.1:7700",
            Some("127.0.0.1:7700"),
            &[]
        ));
        assert!(!origin_allowed(
            "http://127.0.0.1:7701",
            Some("127.0.0.1:7700"),
            &[]
        ));
        assert!(!origin_allowed("null", Some("127.0.0.1:7700"), &[]));
        assert!(!origin_allowed("http://evil.example", None, &[]));
        assert!(origin_allowed("https://ui.example", None, &cors));
    }

    #[test]
    fn json_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/jsonx"));
        assert!(!is_json("application/x-www-form-urlencoded"));
    }
}
