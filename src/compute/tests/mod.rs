//! The compute cluster against real HTTP servers on 127.0.0.1 (axum, in the test): slots,
//! selection, health and the breaker, status mapping, streams, supervision and removal.
//! The circuit breaker's own run is in `breaker`.

mod breaker;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::{mpsc, Notify};

use super::*;
use crate::supervision::RestartBudget;

/// What the test server counts.
#[derive(Default)]
struct Counts {
    now: AtomicUsize,
    peak: AtomicUsize,
    served: AtomicUsize,
    release: Notify,
}

async fn slow(State(c): State<Arc<Counts>>) -> &'static str {
    let now = c.now.fetch_add(1, Ordering::SeqCst) + 1;
    c.peak.fetch_max(now, Ordering::SeqCst);
    c.release.notified().await;
    c.now.fetch_sub(1, Ordering::SeqCst);
    c.served.fetch_add(1, Ordering::SeqCst);
    "{\"done\":true}"
}

fn app(counts: Arc<Counts>) -> Router {
    Router::new()
        .route("/", get(|| async { "up" }))
        .route("/echo", post(|body: String| async move { body }))
        .route("/slow", post(slow))
        .route(
            "/busy",
            get(|| async {
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, "7")],
                    "slow down",
                )
            }),
        )
        .route(
            "/boom",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route(
            "/bad",
            get(|| async { (StatusCode::BAD_REQUEST, "missing field `model`") }),
        )
        .route(
            "/auth",
            get(|h: axum::http::HeaderMap| async move {
                h.get(header::AUTHORIZATION)
                    .map(|v| v.to_str().unwrap_or("").to_string())
                    .unwrap_or_default()
            }),
        )
        .route("/garbage", get(|| async { "{not json" }))
        .route("/hang", get(std::future::pending::<&'static str>))
        .route(
            "/sse",
            get(|| async {
                "data: {\"n\":1}\n\n: keep-alive\ndata: {\"n\":2}\n\ndata: [DONE]\n\n"
            }),
        )
        .route(
            "/ndjson",
            get(|| async { "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n" }),
        )
        .route("/cut", get(cut_stream))
        .with_state(counts)
}

/// A stream that sends one event, then, once the client has it, fails mid-body.
async fn cut_stream() -> Response {
    let chunks = futures_util::stream::unfold(0, |step| async move {
        match step {
            0 => Some((Ok::<_, std::io::Error>("data: {\"n\":1}\n\n"), 1)),
            1 => {
                // Past the headers and the first event: the connection then drops.
                tokio::time::sleep(Duration::from_millis(50)).await;
                Some((Err(std::io::Error::other("dropped")), 2))
            }
            _ => None,
        }
    });
    Body::from_stream(chunks).into_response()
}

async fn serve(
    listener: tokio::net::TcpListener,
    counts: Arc<Counts>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        axum::serve(listener, app(counts)).await.expect("serve");
    })
}

async fn server() -> (SocketAddr, Arc<Counts>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Arc::new(Counts::default());
    let task = serve(listener, counts.clone()).await;
    (addr, counts, task)
}

fn fast_checks() -> ComputeConfig {
    ComputeConfig {
        health_interval: Duration::from_millis(20),
        health_timeout: Duration::from_millis(500),
        unhealthy_after: 3,
        max_backoff: Duration::from_millis(40),
        max_waiting: 100,
        ..ComputeConfig::default()
    }
}

async fn cluster() -> ComputeCluster {
    ComputeCluster::start_with("test", fast_checks(), RestartBudget::default())
        .await
        .unwrap()
}

/// Waits (up to 10 s) until `cond` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn post_json(path: &str) -> ComputeRequest {
    ComputeRequest::Http(HttpRequest::post(
        path,
        serde_json::json!({"hello": "node"}),
    ))
}

fn get_req(path: &str) -> ComputeRequest {
    ComputeRequest::Http(HttpRequest::get(path))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_max_concurrent_wait_their_turn_and_all_complete() {
    let (addr, counts, _srv) = server().await;
    let c = cluster().await;
    c.add_node(
        ComputeNode::new("n1", &format!("http://{addr}"))
            .unwrap()
            .max_concurrent(2),
    )
    .await
    .unwrap();
    let node = c.node("n1").unwrap();
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let node = node.clone();
            tokio::spawn(async move { node.execute(post_json("/slow")).await })
        })
        .collect();
    until("two requests run and three wait", || {
        counts.now.load(Ordering::SeqCst) == 2 && node.info().waiting == 3
    })
    .await;
    assert_eq!(node.info().in_flight, 2);
    while counts.served.load(Ordering::SeqCst) < 5 {
        counts.release.notify_waiters();
        tokio::task::yield_now().await;
    }
    for call in calls {
        let r = call.await.unwrap().unwrap();
        assert_eq!(r.json::<serde_json::Value>().unwrap()["done"], true);
    }
    assert_eq!(
        counts.peak.load(Ordering::SeqCst),
        2,
        "never more than max_concurrent at once"
    );
    until("the counters settle", || node.info().requests == 5).await;
    assert_eq!(node.info().in_flight, 0);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_node_picks_the_least_loaded_matching_node() {
    let (addr, counts, _srv) = server().await;
    let c = cluster().await;
    for (id, gpu) in [("a", "a100"), ("b", "a100"), ("c", "t4")] {
        let node = ComputeNode::new(id, &format!("http://{addr}")).unwrap();
        c.add_node(
            node.label("gpu", gpu)
                .capability("memory_gb", 80.0)
                .max_concurrent(4),
        )
        .await
        .unwrap();
    }
    let a100 = Selector::new().label("gpu", "a100");
    assert_eq!(c.select_node(&a100).unwrap().id(), "a", "ties go by id");
    let busy = c.node("a").unwrap();
    let held = tokio::spawn(async move { busy.execute(post_json("/slow")).await });
    until("a has one in flight", || {
        c.node("a").unwrap().info().in_flight == 1
    })
    .await;
    assert_eq!(c.select_node(&a100).unwrap().id(), "b", "a is busier");
    assert!(c
        .select_node(&Selector::new().label("gpu", "h100"))
        .is_none());
    assert!(c
        .select_node(&Selector::new().require("memory_gb", 81.0))
        .is_none());
    let err = c
        .execute(&Selector::new().label("gpu", "h100"), get_req("/"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ComputeErrorKind::NoNode);
    assert!(err.is_retryable());
    while counts.served.load(Ordering::SeqCst) < 1 {
        counts.release.notify_waiters();
        tokio::task::yield_now().await;
    }
    held.await.unwrap().unwrap();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_and_broken_answers_map_to_what_a_retry_can_fix() {
    let (addr, _counts, _srv) = server().await;
    let c = cluster().await;
    c.add_node(
        ComputeNode::new("n", &format!("http://{addr}"))
            .unwrap()
            .max_concurrent(8)
            .timeout(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    let node = c.node("n").unwrap();
    let echo = node.execute(post_json("/echo")).await.unwrap();
    assert_eq!(
        echo.json::<serde_json::Value>().unwrap(),
        serde_json::json!({"hello": "node"})
    );

    let busy = node.execute(get_req("/busy")).await.unwrap_err();
    assert_eq!(busy.kind, ComputeErrorKind::Busy);
    assert_eq!(busy.retry_after, Some(Duration::from_secs(7)));
    assert!(busy.message.contains("slow down"), "{busy}");
    let boom = node.execute(get_req("/boom")).await.unwrap_err();
    assert_eq!(
        (boom.kind, boom.is_retryable()),
        (ComputeErrorKind::Remote, true)
    );
    let bad = node.execute(get_req("/bad")).await.unwrap_err();
    assert_eq!(
        (bad.kind, bad.is_retryable()),
        (ComputeErrorKind::Rejected, false)
    );
    assert!(bad.message.contains("missing field"), "{bad}");
    let garbage = node.execute(get_req("/garbage")).await.unwrap();
    assert_eq!(
        garbage.json::<serde_json::Value>().unwrap_err().kind,
        ComputeErrorKind::Protocol
    );
    let hang = node.execute(get_req("/hang")).await.unwrap_err();
    assert_eq!(hang.kind, ComputeErrorKind::Timeout);
    let invalid = node
        .execute(get_req("http://elsewhere/"))
        .await
        .unwrap_err();
    assert_eq!(invalid.kind, ComputeErrorKind::Invalid);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_arrive_event_by_event_and_a_cut_stream_fails_retryably() {
    let (addr, _counts, _srv) = server().await;
    let c = cluster().await;
    c.add_node(ComputeNode::new("n", &format!("http://{addr}")).unwrap())
        .await
        .unwrap();
    let node = c.node("n").unwrap();
    for (path, format, n) in [
        ("/sse", StreamFormat::Sse, 2),
        ("/ndjson", StreamFormat::Ndjson, 3),
    ] {
        let (tx, mut rx) = mpsc::channel(16);
        let request = ComputeRequest::Http(HttpRequest::get(path).streaming(format));
        let ComputeResponse::Http { events, .. } =
            node.execute_streaming(request, tx).await.unwrap()
        else {
            panic!("an HTTP answer");
        };
        let expected: Vec<String> = (1..=n).map(|i| format!("{{\"n\":{i}}}")).collect();
        assert_eq!(events, expected, "{path}");
        let mut streamed = Vec::new();
        while let Ok(StreamChunk::Event(e)) = rx.try_recv() {
            streamed.push(e);
        }
        assert_eq!(streamed, expected, "{path}: each event reached the sink");
    }
    let cut = ComputeRequest::Http(HttpRequest::get("/cut").streaming(StreamFormat::Sse));
    let err = node.execute(cut).await.unwrap_err();
    assert_eq!(err.kind, ComputeErrorKind::Protocol, "{err}");
    assert!(err.is_retryable());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_makes_its_node_unhealthy_and_a_live_one_brings_it_back() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let srv = serve(listener, Arc::new(Counts::default())).await;
    let c = cluster().await;
    c.add_node(ComputeNode::new("n", &format!("http://{addr}")).unwrap())
        .await
        .unwrap();
    assert_eq!(c.health_check().await.get("n"), Some(&true));

    srv.abort();
    let _ = srv.await;
    until("the node is marked unhealthy", || {
        c.get_available_nodes().is_empty()
    })
    .await;
    let info = c.node("n").unwrap().info();
    assert!(!info.health.healthy);
    assert!(info.health.consecutive_failures >= 3, "{info:?}");
    assert!(info.health.reason.is_some());
    assert!(
        c.select_node(&Selector::new()).is_none(),
        "an unhealthy node gets nothing"
    );
    let refused = c
        .node("n")
        .unwrap()
        .execute(get_req("/"))
        .await
        .unwrap_err();
    assert_eq!(
        (refused.kind, refused.is_retryable()),
        (ComputeErrorKind::Unavailable, true)
    );

    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let _srv = serve(listener, Arc::new(Counts::default())).await;
    until("one passing check brings it back", || {
        c.get_available_nodes().len() == 1
    })
    .await;
    assert!(c.node("n").unwrap().execute(get_req("/")).await.is_ok());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_proxy_is_restarted_and_its_running_request_fails_retryably() {
    let (addr, counts, _srv) = server().await;
    let c = cluster().await;
    c.add_node(ComputeNode::new("n", &format!("http://{addr}")).unwrap())
        .await
        .unwrap();
    let node = c.node("n").unwrap();
    let held = {
        let node = node.clone();
        tokio::spawn(async move { node.execute(post_json("/slow")).await })
    };
    until("the request runs", || {
        counts.now.load(Ordering::SeqCst) == 1
    })
    .await;
    node.crash();
    let err = held.await.unwrap().unwrap_err();
    assert_eq!(
        (err.kind, err.is_retryable()),
        (ComputeErrorKind::Unavailable, true),
        "{err}"
    );
    until("the proxy is back", || {
        node.info().restarts == 1 && c.get_available_nodes().len() == 1
    })
    .await;
    assert!(node.execute(post_json("/echo")).await.is_ok());
    until("the new proxy counts only its own work", || {
        let info = node.info();
        info.in_flight == 0 && info.requests == 2
    })
    .await;
    assert_eq!(
        node.info().failures,
        1,
        "the request lost with the proxy counts as failed"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_node_finishes_its_work_first_and_bad_additions_name_the_field() {
    let (addr, counts, _srv) = server().await;
    let c = cluster().await;
    let url = format!("http://{addr}");
    c.add_node(ComputeNode::new("n", &url).unwrap())
        .await
        .unwrap();
    let field = |e: crate::Error| match e {
        crate::Error::Invalid { field, .. } => field,
        e => panic!("{e}"),
    };
    let twice = c
        .add_node(ComputeNode::new("n", &url).unwrap())
        .await
        .unwrap_err();
    assert_eq!(field(twice), "node_id");
    let zero = c
        .add_node(ComputeNode::new("z", &url).unwrap().max_concurrent(0))
        .await;
    assert_eq!(field(zero.unwrap_err()), "max_concurrent");
    let ssh = c
        .add_node(ComputeNode::new("s", "ssh://ada@127.0.0.1:22").unwrap())
        .await;
    // An SSH node logs in with a key: without one it is refused.
    assert_eq!(field(ssh.unwrap_err()), "credential");
    assert_eq!(field(c.remove_node("nope").await.unwrap_err()), "node_id");

    let node = c.node("n").unwrap();
    let held = {
        let node = node.clone();
        tokio::spawn(async move { node.execute(post_json("/slow")).await })
    };
    until("the request runs", || {
        counts.now.load(Ordering::SeqCst) == 1
    })
    .await;
    let removing = {
        let c = c.clone();
        tokio::spawn(async move { c.remove_node("n").await })
    };
    until("the node drains", || node.info().draining).await;
    assert!(
        c.select_node(&Selector::new()).is_none(),
        "a draining node takes nothing new"
    );
    assert!(
        !removing.is_finished(),
        "removal waits for the running request"
    );
    while counts.served.load(Ordering::SeqCst) < 1 {
        counts.release.notify_waiters();
        tokio::task::yield_now().await;
    }
    assert!(held.await.unwrap().is_ok(), "the running request completed");
    removing.await.unwrap().unwrap();
    assert!(c.list_nodes().is_empty());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_credential_is_read_from_the_credentials_dir_and_sent_as_a_bearer_token() {
    let (addr, _counts, _srv) = server().await;
    let url = format!("http://{addr}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model-key"), "s3cret-t0ken\n").unwrap();
    let field = |e: crate::Error| match e {
        crate::Error::Invalid { field, reason } => {
            assert!(!reason.contains("s3cret"), "{reason}");
            field
        }
        e => panic!("{e}"),
    };

    let without_dir = cluster().await;
    let named = ComputeNode::new("n", &url).unwrap().credential("model-key");
    assert_eq!(
        field(without_dir.add_node(named.clone()).await.unwrap_err()),
        "credential"
    );
    without_dir.stop().await;

    let config = ComputeConfig {
        credentials_dir: Some(dir.path().to_path_buf()),
        ..fast_checks()
    };
    let c = ComputeCluster::start_with("creds", config, RestartBudget::default())
        .await
        .unwrap();
    let missing = ComputeNode::new("m", &url).unwrap().credential("other-key");
    assert_eq!(field(c.add_node(missing).await.unwrap_err()), "credential");
    let escape = ComputeNode::new("e", &url)
        .unwrap()
        .credential("../model-key");
    assert_eq!(field(c.add_node(escape).await.unwrap_err()), "credential");
    c.add_node(named).await.unwrap();
    let r = c
        .node("n")
        .unwrap()
        .execute(get_req("/auth"))
        .await
        .unwrap();
    let ComputeResponse::Http { body, .. } = r else {
        panic!("an HTTP answer")
    };
    assert_eq!(&body[..], b"Bearer s3cret-t0ken");
    assert!(
        !format!("{:?}", c.list_nodes()).contains("s3cret"),
        "the token is never shown"
    );
    c.stop().await;
}
