//! Security tests: the http boundary. Cross-site requests, DNS rebinding, tokens and their
//! scopes, input bounds; every refused request is checked to change nothing.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use wrangle::api::{router, ApiConfig};
use wrangle::Coordinator;

use crate::common;

async fn coordinator() -> Coordinator {
    common::start(common::fixed(1), common::handlers()).await
}

/// A request: method, URI, headers, body.
async fn send(
    app: &Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, Value, axum::http::HeaderMap) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value, headers)
}

async fn submitted(c: &Coordinator) -> u64 {
    c.get_stats().await.unwrap().queue.submitted
}

const JSON: (&str, &str) = ("content-type", "application/json");
const TASK: &str = r#"{"task_type": "echo", "payload": 1}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_are_not_json_are_refused_with_415() {
    let c = coordinator().await;
    let app = router(c.clone(), ApiConfig::default());
    let workers = c.get_stats().await.unwrap().workers.worker_count;
    for kind in [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        for (uri, body) in [
            ("/tasks", TASK),
            ("/tasks/submit", TASK),
            ("/scale", r#"{"workers": 3}"#),
        ] {
            let (s, v, _) = send(&app, "POST", uri, &[("content-type", kind)], body).await;
            assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{kind} to {uri}");
            assert_eq!(v["error"]["field"], "content-type");
        }
    }
    // No content type at all, with a body.
    let (s, _, _) = send(&app, "POST", "/tasks", &[], TASK).await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(submitted(&c).await, 0, "nothing refused was queued");
    assert_eq!(c.get_stats().await.unwrap().workers.worker_count, workers);

    // JSON goes through, with or without parameters.
    let (s, _, _) = send(&app, "POST", "/tasks", &[JSON], TASK).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _, _) = send(
        &app,
        "POST",
        "/tasks",
        &[("content-type", "application/json; charset=utf-8")],
        TASK,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    // A body-less POST needs no content type.
    let (s, _, _) = send(
        &app,
        "POST",
        "/tasks/00000000-0000-7000-8000-000000000000/requeue",
        &[],
        "",
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    c.stop(false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebound_host_names_get_421() {
    let c = coordinator().await;
    let app = router(c.clone(), ApiConfig::default());
    for (method, uri, body) in [("GET", "/stats", ""), ("POST", "/tasks", TASK)] {
        let (s, v, _) = send(
            &app,
            method,
            uri,
            &[("host", "attacker.example:7700"), JSON],
            body,
        )
        .await;
        assert_eq!(s, StatusCode::MISDIRECTED_REQUEST, "{method} {uri}");
        assert_eq!(v["error"]["field"], "host");
    }
    assert_eq!(submitted(&c).await, 0);
    for host in ["127.0.0.1:7700", "localhost:7700", "[::1]:7700", "10.0.0.7"] {
        let (s, _, _) = send(&app, "GET", "/stats", &[("host", host)], "").await;
        assert_eq!(s, StatusCode::OK, "{host}");
    }
    // Liveness probes answer whatever name they use.
    let (s, _, _) = send(&app, "GET", "/healthz", &[("host", "svc.cluster")], "").await;
    assert_eq!(s, StatusCode::OK);

    let app = router(
        c.clone(),
        ApiConfig {
            allowed_hosts: vec!["wrangle.internal".into()],
            ..ApiConfig::default()
        },
    );
    let (s, _, _) = send(
        &app,
        "GET",
        "/stats",
        &[("host", "wrangle.internal:80")],
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "a configured name is served");
    c.stop(false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_origins_get_403() {
    let c = coordinator().await;
    let app = router(
        c.clone(),
        ApiConfig {
            cors_origins: vec!["https://ui.example".into()],
            ..ApiConfig::default()
        },
    );
    let host = ("host", "127.0.0.1:7700");
    for origin in ["https://evil.example", "null", "http://127.0.0.1:9999"] {
        for (uri, body) in [("/tasks", TASK), ("/scale", r#"{"workers": 3}"#)] {
            let (s, v, _) = send(&app, "POST", uri, &[host, JSON, ("origin", origin)], body).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{origin} to {uri}");
            assert_eq!(v["error"]["field"], "origin");
        }
    }
    assert_eq!(submitted(&c).await, 0);
    for origin in ["http://127.0.0.1:7700", "https://ui.example"] {
        let (s, _, _) = send(
            &app,
            "POST",
            "/tasks",
            &[host, JSON, ("origin", origin)],
            TASK,
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{origin}");
    }
    c.stop(false).await.unwrap();
}

fn scoped() -> ApiConfig {
    use wrangle::api::{ApiToken, Scope};
    ApiConfig {
        tokens: vec![
            ApiToken::new("r3ader", [Scope::Read]),
            ApiToken::new("subm1t", [Scope::Submit]),
            ApiToken::new("0perate", [Scope::Operate, Scope::Read]),
        ],
        ..ApiConfig::default()
    }
}

fn bearer(t: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {t}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_needs_its_scope_and_403_names_it() {
    let c = coordinator().await;
    let app = router(c.clone(), scoped());
    let workers = c.get_stats().await.unwrap().workers.worker_count;
    let refused = [
        ("r3ader", "POST", "/tasks", TASK, "submit"),
        ("r3ader", "POST", "/scale", r#"{"workers": 3}"#, "operate"),
        ("subm1t", "GET", "/tasks", "", "read"),
        ("subm1t", "GET", "/events", "", "read"),
        ("subm1t", "POST", "/scale", r#"{"workers": 3}"#, "operate"),
        ("0perate", "POST", "/tasks", TASK, "submit"),
    ];
    for (token, method, uri, body, scope) in refused {
        let auth = bearer(token);
        let (s, v, _) = send(&app, method, uri, &[(auth.0, &auth.1), JSON], body).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{token} {method} {uri}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("`{scope}`")), "{message}");
    }
    assert_eq!(submitted(&c).await, 0, "a refused submit queued nothing");
    assert_eq!(c.get_stats().await.unwrap().workers.worker_count, workers);

    let auth = bearer("subm1t");
    let (s, v, _) = send(&app, "POST", "/tasks", &[(auth.0, &auth.1), JSON], TASK).await;
    assert_eq!(s, StatusCode::CREATED);
    let id = v["tasks"][0]["id"].as_str().unwrap().to_string();
    let auth = bearer("r3ader");
    let (s, _, _) = send(
        &app,
        "GET",
        &format!("/tasks/{id}"),
        &[(auth.0, &auth.1)],
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = send(
        &app,
        "DELETE",
        &format!("/tasks/{id}"),
        &[(auth.0, &auth.1)],
        "",
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "reading is not cancelling");
    let auth = bearer("0perate");
    let (s, _, _) = send(
        &app,
        "POST",
        "/scale",
        &[(auth.0, &auth.1), JSON],
        r#"{"workers": 1}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // A token nobody configured, and an empty one, are 401.
    for t in ["nobody", ""] {
        let auth = bearer(t);
        let (s, _, _) = send(&app, "GET", "/stats", &[(auth.0, &auth.1)], "").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{t:?}");
    }
    c.stop(false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_configured_token_lets_nobody_in() {
    let c = coordinator().await;
    let app = router(
        c.clone(),
        ApiConfig {
            token: Some(String::new()),
            ..ApiConfig::default()
        },
    );
    for headers in [vec![("authorization", "Bearer ")], vec![]] {
        let (s, _, _) = send(&app, "GET", "/stats", &headers, "").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{headers:?}");
    }
    c.stop(false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sets_a_strict_http_only_cookie_and_urls_carry_no_secret() {
    let c = coordinator().await;
    let app = router(c.clone(), scoped());
    let host = ("host", "127.0.0.1:7700");
    // The page and its assets are public; the data is not; the URL form is gone.
    for uri in ["/", "/assets/app.js", "/assets/style.css"] {
        let (s, _, _) = send(&app, "GET", uri, &[host], "").await;
        assert_eq!(s, StatusCode::OK, "{uri}");
    }
    let (s, _, _) = send(&app, "GET", "/stats?access_token=r3ader", &[host], "").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    let (s, _, h) = send(
        &app,
        "POST",
        "/login",
        &[host, JSON],
        r#"{"token": "wrong"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(h.get("set-cookie").is_none());
    let (s, _, _) = send(
        &app,
        "POST",
        "/login",
        &[host, ("content-type", "text/plain")],
        r#"{"token": "r3ader"}"#,
    )
    .await;
    assert_eq!(
        s,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "a cross-site form cannot log in"
    );
    let (s, v, h) = send(
        &app,
        "POST",
        "/login",
        &[host, JSON],
        r#"{"token": "r3ader"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["scopes"], json!(["read"]));
    let cookie = h["set-cookie"].to_str().unwrap().to_string();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    let pair = cookie.split(';').next().unwrap().to_string();
    let (s, _, _) = send(&app, "GET", "/stats", &[host, ("cookie", &pair)], "").await;
    assert_eq!(s, StatusCode::OK, "the cookie authenticates");
    let (s, _, _) = send(
        &app,
        "POST",
        "/tasks",
        &[host, JSON, ("cookie", &pair)],
        TASK,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "with the token's own scopes only");
    // Another site's page cannot ride the cookie.
    let (s, _, _) = send(
        &app,
        "POST",
        "/scale",
        &[
            host,
            JSON,
            ("cookie", &pair),
            ("origin", "https://evil.example"),
        ],
        r#"{"workers": 3}"#,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, h) = send(&app, "POST", "/logout", &[host], "").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(h["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(submitted(&c).await, 0);
    c.stop(false).await.unwrap();
}

#[test]
fn the_openapi_document_states_the_limits_and_status_codes_the_server_uses() {
    let doc = serde_json::to_value(wrangle::api::openapi()).unwrap();
    let responses = |method: &str, path: &str| -> Vec<String> {
        doc["paths"][path][method]["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path}"))
            .keys()
            .cloned()
            .collect()
    };
    let submit = responses("post", "/tasks");
    for code in ["201", "400", "401", "403", "413", "415", "421", "429"] {
        assert!(
            submit.contains(&code.to_string()),
            "POST /tasks lacks {code}: {submit:?}"
        );
    }
    let stats = responses("get", "/stats");
    assert!(stats.contains(&"421".to_string()) && !stats.contains(&"415".to_string()));
    assert!(!responses("get", "/healthz").contains(&"401".to_string()));
    let task = &doc["components"]["schemas"]["TaskRequest"]["properties"];
    assert_eq!(task["retries"]["maximum"], 100);
    assert_eq!(task["delay_ms"]["maximum"], 31_536_000_000u64);
    assert_eq!(task["timeout_ms"]["maximum"], 2_592_000_000u64);
    assert!(doc["paths"]["/login"]["post"].is_object());
}

#[path = "http_limits.rs"]
mod limits;

#[path = "http_input.rs"]
mod input;
