//! The `http_tool` handler end to end through a real coordinator and a local axum server:
//! JSON and text results, hosts off the allowlist refused (before any byte is sent), a
//! redirect out of the allowlist refused and one within it followed, link-local and
//! metadata addresses refused, loopback refused under the default config whether named
//! literally or by a name that resolves to it (the DNS-rebinding guard), the body cap, the
//! time limit, `Retry-After`, cancellation, and bad input refused naming the field.
//!
//! The server is on 127.0.0.1, so most tests opt in to private addresses and reach it by
//! pinned names (`api.test`, `other.test`, `evil.test`, all answering 127.0.0.1).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Redirect;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use wrangle::{Coordinator, EventKind, TaskSpec};
use wrangle_actors::{HttpBody, HttpTool, HttpToolBuilder, HttpToolOutput};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The local server: its port and how many requests reached it.
struct Server {
    port: u16,
    hits: Arc<AtomicUsize>,
}

impl Server {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind((LOCALHOST, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&hits);
        let to = move |url: &str| Redirect::temporary(&url.replace("PORT", &port.to_string()));
        let app = Router::new()
            .route("/json", get(|| async { Json(json!({ "hello": "world" })) }))
            .route(
                "/echo",
                post(|headers: HeaderMap, body: String| async move {
                    let header = |name| headers.get(name).map(|v| v.to_str().unwrap().to_string());
                    Json(json!({
                        "content_type": header(CONTENT_TYPE),
                        "accept": header(ACCEPT),
                        "body": body,
                    }))
                }),
            )
            .route(
                "/text",
                post(|body: String| async move { format!("got {body}") }),
            )
            .route("/big", get(|| async { "x".repeat(1 << 20) }))
            .route("/hang", get(std::future::pending::<String>))
            .route(
                "/busy",
                get(|| async {
                    (
                        StatusCode::TOO_MANY_REQUESTS,
                        [(RETRY_AFTER, "7")],
                        "slow down",
                    )
                }),
            )
            .route(
                "/missing",
                get(|| async { (StatusCode::NOT_FOUND, "no such thing") }),
            )
            .route(
                "/to-other",
                get(move || async move { to("http://other.test:PORT/json") }),
            )
            .route(
                "/to-evil",
                get(move || async move { to("http://evil.test:PORT/json") }),
            )
            .route(
                "/to-metadata",
                get(|| async { Redirect::temporary("http://169.254.169.254/latest/meta-data/") }),
            )
            .route("/loop", get(|| async { Redirect::temporary("/loop") }))
            .layer(axum::middleware::from_fn(
                move |req: axum::extract::Request, next: axum::middleware::Next| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    next.run(req)
                },
            ));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { port, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// `path` on the allowlisted `api.test`.
    fn url(&self, path: &str) -> String {
        format!("http://api.test:{}{path}", self.port)
    }

    /// A tool allowing `api.test` and `other.test` on this port, with private addresses
    /// allowed (the server is on loopback).
    fn tool(&self) -> HttpToolBuilder {
        HttpTool::builder()
            .allow_host(format!("api.test:{}", self.port))
            .allow_host(format!("other.test:{}", self.port))
            .allow_host("169.254.169.254")
            .resolve("api.test", [LOCALHOST])
            .resolve("other.test", [LOCALHOST])
            .resolve("evil.test", [LOCALHOST])
            .allow_private_addresses(true)
    }
}

async fn coordinator(tool: HttpToolBuilder) -> Coordinator {
    Coordinator::builder()
        .handler("http_tool", tool.build().expect("a valid tool"))
        .start()
        .await
        .expect("coordinator starts")
}

async fn run(c: &Coordinator, input: Value) -> Result<HttpToolOutput, wrangle::Error> {
    c.submit_async(TaskSpec::new("http_tool", &input)?.retries(0))
        .await?
        .result(Duration::from_secs(60))
        .await
}

/// The error message of a task that must fail.
async fn refused(c: &Coordinator, input: Value) -> String {
    match run(c, input.clone()).await {
        Ok(out) => panic!("{input} should be refused, got: {out:?}"),
        Err(e) => e.to_string(),
    }
}

fn assert_contains(message: &str, expected: &str) {
    assert!(
        message.contains(expected),
        "expected `{expected}` in: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_returns_json_and_a_post_sends_its_body() {
    let server = Server::start().await;
    let c = coordinator(server.tool()).await;

    let out = run(&c, json!({ "url": server.url("/json") }))
        .await
        .unwrap();
    assert_eq!(out.status, 200);
    assert_eq!(out.body, HttpBody::Json(json!({ "hello": "world" })));
    assert_eq!(out.headers["content-type"], "application/json");
    assert!(!out.truncated);

    let out = run(
        &c,
        json!({
            "url": server.url("/echo"),
            "method": "POST",
            "headers": { "Accept": "text/plain" },
            "body": { "text": "hi there" },
        }),
    )
    .await
    .unwrap();
    let sent = json!({
        "content_type": "text/plain; charset=utf-8",
        "accept": "text/plain",
        "body": "hi there",
    });
    assert_eq!(out.body, HttpBody::Json(sent));

    let out = run(
        &c,
        json!({ "url": server.url("/echo"), "method": "post", "body": { "json": { "a": [1, 2] } } }),
    )
    .await
    .unwrap();
    let sent = json!({
        "content_type": "application/json",
        // The client's own default when the task sets none.
        "accept": "*/*",
        "body": "{\"a\":[1,2]}",
    });
    assert_eq!(out.body, HttpBody::Json(sent));

    // A text answer comes back as text.
    let out = run(
        &c,
        json!({ "url": server.url("/text"), "method": "POST", "body": { "text": "x" } }),
    )
    .await
    .unwrap();
    assert_eq!(out.body, HttpBody::Text("got x".into()));
    assert_eq!(out.headers["content-type"], "text/plain; charset=utf-8");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_off_the_allowlist_is_refused_before_anything_is_sent() {
    let server = Server::start().await;
    let c = coordinator(server.tool()).await;
    let port = server.port;
    let error = refused(
        &c,
        json!({ "url": format!("http://evil.test:{port}/json") }),
    )
    .await;
    assert_contains(
        &error,
        &format!("url: host `evil.test:{port}` is not on the allowlist"),
    );
    // On the allowlist, but not on this port (no port in an entry means 80 or 443).
    let error = refused(&c, json!({ "url": "http://api.test/json" })).await;
    assert_contains(&error, "url: host `api.test:80` is not on the allowlist");
    assert_eq!(server.hits(), 0, "no request reached the server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_followed_only_within_the_allowlist() {
    let server = Server::start().await;
    let c = coordinator(server.tool().max_redirects(3)).await;
    let port = server.port;

    let out = run(&c, json!({ "url": server.url("/to-other") }))
        .await
        .unwrap();
    assert_eq!(out.url, format!("http://other.test:{port}/json"));
    assert_eq!(out.body, HttpBody::Json(json!({ "hello": "world" })));
    assert_eq!(server.hits(), 2);

    let error = refused(&c, json!({ "url": server.url("/to-evil") })).await;
    assert_contains(
        &error,
        &format!("url: redirect refused: host `evil.test:{port}` is not on the allowlist"),
    );
    assert_eq!(
        server.hits(),
        3,
        "the redirect to evil.test was not followed"
    );

    // Allowlisted, but the metadata service's address is never reached.
    let error = refused(&c, json!({ "url": server.url("/to-metadata") })).await;
    assert_contains(
        &error,
        "url: redirect refused: 169.254.169.254 is a cloud metadata address",
    );

    let error = refused(&c, json!({ "url": server.url("/loop") })).await;
    assert_contains(&error, "url: more than 3 redirects");
    assert_eq!(
        server.hits(),
        4 + 4,
        "the first request and three redirects"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_local_and_metadata_literals_are_refused_even_with_private_addresses_allowed() {
    let server = Server::start().await;
    for tool in [server.tool(), server.tool().allow_private_addresses(false)] {
        let c = coordinator(tool.allow_host("169.254.1.1").allow_host("[fe80::1]")).await;
        let error = refused(
            &c,
            json!({ "url": "http://169.254.169.254/latest/meta-data/" }),
        )
        .await;
        assert_contains(&error, "url: 169.254.169.254 is a cloud metadata address");
        let error = refused(&c, json!({ "url": "http://169.254.1.1/" })).await;
        assert_contains(&error, "url: 169.254.1.1 is a link-local address");
        let error = refused(&c, json!({ "url": "http://[fe80::1]/" })).await;
        assert_contains(&error, "url: fe80::1 is a link-local address");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_is_refused_by_default_however_it_is_reached() {
    let server = Server::start().await;
    let port = server.port;
    // The default config: allowlisted names and an allowlisted literal, all loopback.
    let c = coordinator(
        HttpTool::builder()
            .allow_host(format!("localhost:{port}"))
            .allow_host(format!("127.0.0.1:{port}"))
            .allow_host(format!("rebind.test:{port}"))
            // A public answer next to the internal one does not make the name acceptable.
            .resolve("rebind.test", ["93.184.216.34".parse().unwrap(), LOCALHOST]),
    )
    .await;
    let error = refused(
        &c,
        json!({ "url": format!("http://127.0.0.1:{port}/json") }),
    )
    .await;
    assert_contains(&error, "url: 127.0.0.1 is a loopback address");
    let error = refused(
        &c,
        json!({ "url": format!("http://rebind.test:{port}/json") }),
    )
    .await;
    assert_contains(
        &error,
        "url: `rebind.test` resolves to 127.0.0.1, a loopback address",
    );
    // The system resolver's answer for `localhost` (127.0.0.1 or ::1) is refused alike.
    let error = refused(
        &c,
        json!({ "url": format!("http://localhost:{port}/json") }),
    )
    .await;
    assert_contains(&error, "url: `localhost` resolves to ");
    assert_contains(&error, "a loopback address");
    assert_eq!(server.hits(), 0, "no request reached the server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_is_cut_at_the_cap_and_flagged() {
    let server = Server::start().await;
    let c = coordinator(server.tool().max_response_bytes(1000)).await;
    let out = run(&c, json!({ "url": server.url("/big") })).await.unwrap();
    assert!(out.truncated, "{:?}", out.headers);
    assert_eq!(out.body, HttpBody::Text("x".repeat(1000)));
    // A JSON body within the cap is not flagged.
    let out = run(&c, json!({ "url": server.url("/json") }))
        .await
        .unwrap();
    assert!(!out.truncated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_time_limit_fails() {
    let server = Server::start().await;
    let c = coordinator(server.tool()).await;
    let error = refused(&c, json!({ "url": server.url("/hang"), "timeout_ms": 300 })).await;
    assert_contains(&error, "timed out after 300 ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_retried_after_its_retry_after_and_a_404_is_not_retried() {
    let server = Server::start().await;
    let c = coordinator(server.tool()).await;
    let mut events = c.events().subscribe();
    let spec = TaskSpec::new("http_tool", &json!({ "url": server.url("/busy") })).unwrap();
    let handle = c.submit_async(spec.retries(1)).await.unwrap();
    let retried = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let event = events.recv().await.expect("the event stream is open");
            if let EventKind::TaskRetried {
                id,
                error,
                delay_ms,
                ..
            } = &event.kind
            {
                if *id == handle.id {
                    return (error.clone(), *delay_ms);
                }
            }
        }
    })
    .await
    .expect("the 429 is retried");
    assert_contains(&retried.0, "HTTP 429 Too Many Requests: slow down");
    assert!(
        retried.1 >= 7000,
        "the retry waits for Retry-After: {retried:?}"
    );
    c.cancel_task(handle.id).await.unwrap();

    let spec = TaskSpec::new("http_tool", &json!({ "url": server.url("/missing") })).unwrap();
    let handle = c.submit_async(spec.retries(3)).await.unwrap();
    let error = handle
        .result::<HttpToolOutput>(Duration::from_secs(60))
        .await
        .expect_err("a 404 fails")
        .to_string();
    assert_contains(&error, "HTTP 404 Not Found: no such thing");
    let task = c.get_task(handle.id).await.unwrap();
    assert_eq!(task.attempts.len(), 1, "a 4xx is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_closes_the_connection() {
    // A bare socket, to see the client's side close.
    let listener = tokio::net::TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (accepted_tx, accepted) = tokio::sync::oneshot::channel();
    let closed = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = socket.read(&mut buf).await.unwrap();
        accepted_tx
            .send(String::from_utf8_lossy(&buf[..n]).into_owned())
            .unwrap();
        // Never answer; read until the client closes.
        while socket.read(&mut buf).await.unwrap_or(0) > 0 {}
    });
    let c = coordinator(
        HttpTool::builder()
            .allow_host(format!("api.test:{port}"))
            .resolve("api.test", [LOCALHOST])
            .allow_private_addresses(true),
    )
    .await;
    let input = json!({ "url": format!("http://api.test:{port}/slow") });
    let handle = c
        .submit_async(TaskSpec::new("http_tool", &input).unwrap())
        .await
        .unwrap();
    let request = tokio::time::timeout(Duration::from_secs(30), accepted)
        .await
        .expect("the request arrives")
        .unwrap();
    assert!(request.starts_with("GET /slow HTTP/1.1\r\n"), "{request}");
    c.cancel_task(handle.id).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .expect("the connection is closed after the cancel")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_naming_the_field() {
    let server = Server::start().await;
    let c = coordinator(
        server
            .tool()
            .allow_header("x-api-key")
            .max_request_bytes(1000),
    )
    .await;
    let port = server.port;
    let error = refused(
        &c,
        json!({ "url": format!("http://user:pw@api.test:{port}/json") }),
    )
    .await;
    assert_contains(
        &error,
        "url: credentials in the URL (`user@host`) are not allowed",
    );
    assert!(!error.contains("pw@"), "{error}");
    let error = refused(&c, json!({ "url": format!("ftp://api.test:{port}/") })).await;
    assert_contains(&error, "url: scheme `ftp` is not allowed");
    let error = refused(&c, json!({ "url": "not a url" })).await;
    assert_contains(&error, "url: not a valid URL");
    let error = refused(
        &c,
        json!({ "url": server.url("/json"), "headers": { "X-Secret": "hunter2" } }),
    )
    .await;
    assert_contains(&error, "headers.X-Secret: not an allowed header");
    let error = refused(
        &c,
        json!({ "url": server.url("/json"), "headers": { "x-api-key": "s3cr3t\n" } }),
    )
    .await;
    assert_contains(&error, "headers.x-api-key: not a valid header value");
    assert!(
        !error.contains("s3cr3t"),
        "header values are never quoted: {error}"
    );
    let error = refused(
        &c,
        json!({ "url": server.url("/json"), "body": { "text": "x" } }),
    )
    .await;
    assert_contains(&error, "body: only a POST has a body");
    let error = refused(&c, json!({ "url": server.url("/json"), "timeout_ms": 0 })).await;
    assert_contains(&error, "timeout_ms: 0, expected 1 to 300000");
    let input =
        json!({ "url": server.url("/echo"), "method": "POST", "body": { "json": vec![0; 600] } });
    let error = refused(&c, input).await;
    assert_contains(&error, "body: 1201 bytes, at most 1000");
    assert_eq!(server.hits(), 0, "no request reached the server");
}

#[test]
fn bad_settings_are_refused_when_built() {
    let err = HttpTool::builder().build().unwrap_err().to_string();
    assert_contains(&err, "hosts: the allowlist is empty");
    let err = HttpTool::builder()
        .allow_host("https://api.example.com/")
        .build()
        .unwrap_err()
        .to_string();
    assert_contains(&err, "hosts: `https://api.example.com/`: expected a host");
    let err = HttpTool::builder()
        .allow_host("api.example.com")
        .allow_header("Host")
        .build()
        .unwrap_err()
        .to_string();
    assert_contains(&err, "headers: `host`: set by the client");
    let err = HttpTool::builder()
        .allow_host("api.example.com")
        .max_response_bytes(0)
        .build()
        .unwrap_err()
        .to_string();
    assert_contains(&err, "max_response_bytes: must be at least 1 byte");
}
