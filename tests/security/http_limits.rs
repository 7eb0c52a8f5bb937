//! Limits on connections and time, over real sockets: slow heads and bodies are cut off,
//! connections past the cap wait, streams are capped per client and in duration; and TLS.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;
use wrangle::api::{router, serve_with, ApiConfig, ServeConfig, TlsFiles};
use wrangle::Coordinator;

use crate::common;

async fn coordinator() -> Coordinator {
    common::start(common::fixed(1), common::handlers()).await
}

/// Serves a router for `c` with `api` and `serve` on a free loopback port; its address.
async fn spawn(c: &Coordinator, api: ApiConfig, serve: ServeConfig) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(c.clone(), api);
    tokio::spawn(serve_with(listener, app, serve, std::future::pending()));
    addr
}

/// Reads until the server closes the connection; what it sent.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = stream.read_to_end(&mut out);
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the server closed the connection")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_that_never_ends_is_cut_off() {
    let c = coordinator().await;
    let serve = ServeConfig {
        header_read_timeout: Duration::from_millis(200),
        ..ServeConfig::default()
    };
    let addr = spawn(&c, ApiConfig::default(), serve).await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0")
        .await
        .unwrap();
    // The rest never comes: the server closes the connection (with or without a 408).
    let answer = read_to_close(&mut slow).await;
    assert!(!answer.contains("200 OK"), "{answer}");
    c.stop(false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_ends_is_cut_off_and_nothing_is_queued() {
    let c = coordinator().await;
    let api = ApiConfig {
        body_read_timeout: Duration::from_millis(200),
        ..ApiConfig::default()
    };
    let addr = spawn(&c, api, ServeConfig::default()).await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(
        b"POST /tasks HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n\
          content-length: 100\r\n\r\n{\"task_type\": ",
    )
    .await
    .unwrap();
    let answer = read_to_close(&mut slow).await;
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    assert_eq!(c.get_stats().await.unwrap().queue.submitted, 0);
    c.stop(false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_for_a_free_one() {
    let c = coordinator().await;
    let serve = ServeConfig {
        max_connections: 2,
        ..ServeConfig::default()
    };
    let addr = spawn(&c, ApiConfig::default(), serve).await;
    let first = TcpStream::connect(addr).await.unwrap();
    let _second = TcpStream::connect(addr).await.unwrap();
    let mut third = TcpStream::connect(addr).await.unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1];
    // Not served while two connections are open: the read cannot finish.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), third.peek(&mut buf))
            .await
            .is_err(),
        "a third connection was served past the cap of 2"
    );
    drop(first);
    let answer = read_to_close(&mut third).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    c.stop(false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_capped_per_client_and_in_duration() {
    let c = coordinator().await;
    let app = router(
        c.clone(),
        ApiConfig {
            max_streams_per_client: 2,
            max_event_stream: Duration::from_millis(300),
            ..ApiConfig::default()
        },
    );
    let events = || Request::get("/events").body(Body::empty()).unwrap();
    let a = app.clone().oneshot(events()).await.unwrap();
    let b = app.clone().oneshot(events()).await.unwrap();
    assert_eq!((a.status(), b.status()), (StatusCode::OK, StatusCode::OK));
    let refused = app.clone().oneshot(events()).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait = Request::get("/tasks/00000000-0000-7000-8000-000000000000/wait")
        .body(Body::empty())
        .unwrap();
    let refused = app.clone().oneshot(wait).await.unwrap();
    assert_eq!(
        refused.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "waits count with streams"
    );
    // A stream ends by itself after max_event_stream, and frees its slot.
    tokio::time::timeout(Duration::from_secs(20), a.into_body().collect())
        .await
        .expect("the event stream ended after max_event_stream")
        .unwrap();
    let again = app.clone().oneshot(events()).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    drop(b);
    c.stop(false).await.unwrap();
}

/// A throwaway CA (`ca.pem`) and a certificate for `localhost` signed by it (the cluster
/// tests' own, made with `openssl`).
fn certificate(dir: &std::path::Path) -> TlsFiles {
    crate::cluster::rig::certificates(dir);
    TlsFiles {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_serves_https_and_its_login_cookie_is_secure() {
    use rustls_pki_types::pem::PemObject;
    use tokio_rustls::rustls;

    let dir = tempfile::tempdir().unwrap();
    let files = certificate(dir.path());
    let c = coordinator().await;
    let api = ApiConfig {
        token: Some("tls-s3cret".into()),
        ..ApiConfig::default()
    };
    let serve = ServeConfig {
        tls: Some(files.clone()),
        ..ServeConfig::default()
    };
    let addr = spawn(&c, api, serve).await;

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_file(dir.path().join("ca.pem")).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let body = r#"{"token": "tls-s3cret"}"#;
    let request = format!(
        "POST /login HTTP/1.1\r\nHost: localhost\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.ok();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let cookie = answer
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_default();
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );

    // Plain HTTP on the TLS port gets no answer from the API.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut plain).await;
    assert!(!answer.contains("200 OK"), "{answer}");

    // A key that is not one is an error before anything is served.
    std::fs::write(&files.key, "not a key").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bad = ServeConfig {
        tls: Some(files),
        ..ServeConfig::default()
    };
    let err = serve_with(
        listener,
        router(c.clone(), ApiConfig::default()),
        bad,
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("server.key"), "{err}");
    c.stop(false).await.unwrap();
}
