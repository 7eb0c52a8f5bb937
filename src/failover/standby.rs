//! The HTTP port of a coordinator program in failover: the leader's router while it leads;
//! while it stands by, its own answers and redirects to the leader.

use std::convert::Infallible;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;

use super::Failover;
use crate::api::auth::{credential, scopes_of};
use crate::api::error::ApiError;
use crate::api::guard::admit_and_place;
use crate::api::Scope;

/// True for a leader address a standby may send clients to: `http(s)://host[:port]`, no
/// credentials, no path (the lease row is the database's to say, but a redirect names it
/// to every client).
pub(super) fn usable_base(url: &str) -> bool {
    let Ok(uri) = url.parse::<Uri>() else {
        return false;
    };
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let authority_ok = uri
        .authority()
        .is_some_and(|a| !a.as_str().contains('@') && !a.host().is_empty());
    let path_ok = matches!(uri.path(), "" | "/") && uri.query().is_none();
    scheme_ok && authority_ok && path_ok && url.len() <= 2048
}

impl Failover {
    /// The program's whole HTTP app: give it to [`crate::api::serve_with`]. Requests go
    /// to the leader's router while this program leads (but `/failover`, answered here
    /// in both roles); while it stands by, `/healthz`, `/readyz`, `/failover`, `/stats`
    /// and `/metrics` are answered here and every other request is redirected to the
    /// leader.
    pub fn router(&self) -> Router {
        let me = self.clone();
        Router::new().fallback_service(tower::service_fn(move |req: Request| {
            let me = me.clone();
            async move { Ok::<_, Infallible>(me.serve(req).await) }
        }))
    }

    async fn serve(&self, req: Request) -> Response {
        let leading = self.leading();
        // The leader's router checks what goes to it; what is answered here is checked here,
        // as the leader would: rate limit, then `Host` and `Origin` (DNS rebinding).
        if leading.is_none() || req.uri().path() == "/failover" {
            let inner = &self.inner;
            if let Err(refused) = admit_and_place(&inner.limiter, &inner.api, &req) {
                return refused.into_response();
            }
        }
        if req.uri().path() == "/failover" {
            if let Some(refused) = self.refuse_unauthorized(&req) {
                return refused;
            }
            return match self.status().await {
                Ok(status) => Json(status).into_response(),
                Err(e) => unavailable(&format!("cannot read the lease: {e}")),
            };
        }
        if let Some(mut app) = leading {
            return match tower::Service::call(&mut app, req).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
        }
        match req.uri().path() {
            "/healthz" => "ok".into_response(),
            "/readyz" => (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"ready": false, "role": "standby", "leader": self.leader_url()})),
            )
                .into_response(),
            "/stats" => {
                if let Some(refused) = self.refuse_unauthorized(&req) {
                    return refused;
                }
                match self.status().await {
                    Ok(status) => {
                        Json(json!({"role": "standby", "failover": status})).into_response()
                    }
                    Err(e) => unavailable(&format!("cannot read the lease: {e}")),
                }
            }
            "/metrics" => {
                if let Some(refused) = self.refuse_unauthorized(&req) {
                    return refused;
                }
                let text = format!(
                    "# HELP wrangle_failover_leader 1 while this coordinator leads.\n\
                     # TYPE wrangle_failover_leader gauge\n\
                     wrangle_failover_leader 0\n\
                     # HELP wrangle_failover_takeovers_total Leaderships this coordinator took.\n\
                     # TYPE wrangle_failover_takeovers_total counter\n\
                     wrangle_failover_takeovers_total {}\n",
                    self.takeovers()
                );
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
            }
            _ => self.redirect(&req),
        }
    }

    /// 307 to the same path and query on the leader, or 503 `no_leader` while none is
    /// known.
    fn redirect(&self, req: &Request) -> Response {
        let Some(base) = self.leader_url() else {
            let mut response = (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({
                    "error": "no_leader",
                    "message": "this coordinator stands by and no coordinator leads at the \
                                moment (a takeover is under way): retry shortly",
                })),
            )
                .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        };
        let target = format!(
            "{}{}",
            base.trim_end_matches('/'),
            req.uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
        );
        let Ok(location) = HeaderValue::from_str(&target) else {
            return unavailable("the leader's address is not a valid Location");
        };
        let mut response = (
            StatusCode::TEMPORARY_REDIRECT,
            Json(json!({
                "error": "standby",
                "message": "this coordinator stands by: send the request to the leader",
                "leader": base,
            })),
        )
            .into_response();
        response.headers_mut().insert(header::LOCATION, location);
        response
    }

    /// Refuses a request without a token holding the `read` scope (when tokens are set),
    /// as the leader's API does: 401 without a valid token, 403 naming the scope.
    fn refuse_unauthorized(&self, req: &Request) -> Option<Response> {
        if self.inner.tokens.is_empty() {
            return None;
        }
        let refusal =
            match credential(req.headers()).and_then(|t| scopes_of(&self.inner.tokens, &t)) {
                None => ApiError::Unauthorized,
                Some(scopes) if scopes.contains(&Scope::Read) => return None,
                Some(_) => ApiError::MissingScope(Scope::Read.as_str()),
            };
        Some(refusal.into_response())
    }
}

fn unavailable(message: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": {"code": "unavailable", "message": message}})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::usable_base;

    #[test]
    fn only_plain_http_bases_are_redirect_targets() {
        assert!(usable_base("http://10.0.0.5:7700"));
        assert!(usable_base("https://coordinator.example:443/"));
        for bad in [
            "ftp://10.0.0.5",
            "http://user:pw@10.0.0.5:7700",
            "http://10.0.0.5:7700/api",
            "http://10.0.0.5:7700/?next=x",
            "javascript:alert(1)",
            "",
            "10.0.0.5:7700",
        ] {
            assert!(!usable_base(bad), "{bad} accepted");
        }
    }
}
