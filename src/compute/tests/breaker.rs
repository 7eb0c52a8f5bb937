//! A node's circuit breaker against a real server on 127.0.0.1 whose `/work` answers 500
//! until it is switched to 200: the breaker opens after `unhealthy_after` failures, then
//! refuses at once and retryably (the server counts what reaches it: nothing does), lets
//! one probe through once the cool-down is over (a failing one opens it for twice as long),
//! and closes when a probe succeeds; selection skips an open node for another that serves
//! the same labels. The breaker's clock is moved on rather than waited for.

use std::sync::atomic::AtomicBool;

use super::*;
use crate::handler::TaskError;

/// A server that fails its work while `failing` (and its health checks while
/// `checks_failing`), and counts what reaches it.
#[derive(Default)]
struct Flaky {
    failing: AtomicBool,
    checks_failing: AtomicBool,
    hits: AtomicUsize,
    /// Ends the requests to `/hold`.
    release: Notify,
}

impl Flaky {
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn work(State(f): State<Arc<Flaky>>) -> (StatusCode, &'static str) {
    f.hits.fetch_add(1, Ordering::SeqCst);
    if f.failing.load(Ordering::SeqCst) {
        (StatusCode::INTERNAL_SERVER_ERROR, "out of GPU memory")
    } else {
        (StatusCode::OK, "done")
    }
}

async fn health(State(f): State<Arc<Flaky>>) -> StatusCode {
    if f.checks_failing.load(Ordering::SeqCst) {
        StatusCode::BAD_GATEWAY
    } else {
        StatusCode::OK
    }
}

async fn hold(State(f): State<Arc<Flaky>>) -> &'static str {
    f.hits.fetch_add(1, Ordering::SeqCst);
    f.release.notified().await;
    "held"
}

async fn refuse(State(f): State<Arc<Flaky>>) -> (StatusCode, &'static str) {
    f.hits.fetch_add(1, Ordering::SeqCst);
    (StatusCode::BAD_REQUEST, "missing field `model`")
}

/// A flaky server and its URL.
async fn flaky(failing: bool) -> (String, Arc<Flaky>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let f = Arc::new(Flaky::default());
    f.failing.store(failing, Ordering::SeqCst);
    let app = Router::new()
        .route("/", get(health))
        .route("/work", get(work))
        .route("/hold", get(hold))
        .route("/refuse", get(refuse))
        .with_state(f.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (url, f)
}

/// Open after 3 failures in a row, for 60 s at first. Health checks only when a node is
/// added and when its breaker asks: none lands between a test's requests.
async fn breaker_cluster() -> ComputeCluster {
    let config = ComputeConfig {
        health_interval: Duration::from_secs(3600),
        unhealthy_after: 3,
        breaker_open_for: Duration::from_secs(60),
        breaker_max_open_for: Duration::from_secs(600),
        ..ComputeConfig::default()
    };
    ComputeCluster::start_with("breaker", config, RestartBudget::default())
        .await
        .unwrap()
}

/// Adds node `id` at `url` labelled `model=llama`, once its first check is done.
async fn add(c: &ComputeCluster, id: &str, url: &str) -> ComputeNodeRef {
    let node = ComputeNode::new(id, url)
        .unwrap()
        .label("model", "llama")
        .max_concurrent(4);
    c.add_node(node).await.unwrap();
    let node = c.node(id).unwrap();
    until("the first check", || {
        node.info().health.checked_at.is_some()
    })
    .await;
    node
}

fn state(node: &ComputeNodeRef) -> BreakerState {
    node.info().breaker.state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_open_the_breaker_then_calls_fail_fast_until_a_probe_closes_it() {
    let (url, server) = flaky(true).await;
    let c = breaker_cluster().await;
    let node = add(&c, "gpu1", &url).await;

    for n in 1..=3 {
        let e = node.execute(get_req("/work")).await.unwrap_err();
        assert_eq!(e.kind, ComputeErrorKind::Remote, "{e}");
        assert!(e.message.contains("out of GPU memory"), "{e}");
        let expected = if n < 3 {
            BreakerState::Closed
        } else {
            BreakerState::Open
        };
        assert_eq!(state(&node), expected, "after {n} failures");
    }
    assert_eq!(server.hits(), 3);
    let info = node.info();
    assert!(!info.health.healthy);
    assert_eq!(info.breaker.trips, 1);
    assert_eq!(
        info.breaker.reason.as_deref(),
        Some("3 failures in a row"),
        "{info:?}"
    );
    let (opened, retry) = (
        info.breaker.opened_at.unwrap(),
        info.breaker.retry_at.unwrap(),
    );
    let cool_down = retry.duration_since(opened).unwrap();
    assert!(
        cool_down > Duration::from_secs(59) && cool_down <= Duration::from_secs(61),
        "{cool_down:?}"
    );
    assert!(c.select_node(&Selector::new()).is_none());

    // Open: every call fails at once, retryably, not before the cool-down ends.
    for _ in 0..5 {
        let e = node.execute(get_req("/work")).await.unwrap_err();
        assert_eq!(
            (e.kind, e.is_retryable()),
            (ComputeErrorKind::Unavailable, true)
        );
        assert!(e.message.contains("circuit breaker is open"), "{e}");
        let after = e.retry_after.expect("the cool-down left");
        assert!(
            after > Duration::from_secs(50) && after <= Duration::from_secs(60),
            "{after:?}"
        );
        let task: TaskError = e.into();
        assert_eq!(
            task.retry_after(),
            Some(after),
            "the queue retries no earlier"
        );
    }
    assert_eq!(server.hits(), 3, "nothing reached the server while open");
    assert_eq!(node.info().breaker.rejected, 5);

    // The cool-down ends: one probe goes through, fails, and the breaker opens for twice
    // as long.
    node.pass_time(Duration::from_secs(60));
    assert_eq!(state(&node), BreakerState::HalfOpen);
    assert!(node.info().health.healthy);
    assert_eq!(c.select_node(&Selector::new()).unwrap().id(), "gpu1");
    let e = node.execute(get_req("/work")).await.unwrap_err();
    assert_eq!(
        e.kind,
        ComputeErrorKind::Remote,
        "the probe reached the server"
    );
    assert_eq!(server.hits(), 4);
    let info = node.info();
    assert_eq!(
        (info.breaker.state, info.breaker.trips),
        (BreakerState::Open, 2)
    );
    assert_eq!(
        info.breaker.reason.as_deref(),
        Some("the half-open probe failed")
    );
    let after = node
        .execute(get_req("/work"))
        .await
        .unwrap_err()
        .retry_after
        .unwrap();
    assert!(
        after > Duration::from_secs(110) && after <= Duration::from_secs(120),
        "{after:?}"
    );
    assert_eq!(server.hits(), 4);

    // The server heals; past the longer cool-down, the probe succeeds and closes it.
    server.failing.store(false, Ordering::SeqCst);
    node.pass_time(Duration::from_secs(120));
    assert!(node.execute(get_req("/work")).await.is_ok());
    let info = node.info();
    assert_eq!(info.breaker.state, BreakerState::Closed);
    assert!(info.health.healthy);
    assert_eq!(
        (info.breaker.consecutive_failures, info.breaker.opened_at),
        (0, None)
    );
    for _ in 0..3 {
        assert!(node.execute(get_req("/work")).await.is_ok());
    }
    assert_eq!(server.hits(), 8);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_do_not_open_the_breaker_and_a_success_ends_the_row() {
    let (url, server) = flaky(true).await;
    let c = breaker_cluster().await;
    let node = add(&c, "gpu1", &url).await;
    for _ in 0..10 {
        let e = node.execute(get_req("/refuse")).await.unwrap_err();
        assert_eq!(e.kind, ComputeErrorKind::Rejected, "{e}");
    }
    for _ in 0..2 {
        node.execute(get_req("/work")).await.unwrap_err();
    }
    server.failing.store(false, Ordering::SeqCst);
    node.execute(get_req("/work")).await.unwrap();
    server.failing.store(true, Ordering::SeqCst);
    for _ in 0..2 {
        node.execute(get_req("/work")).await.unwrap_err();
    }
    let b = node.info().breaker;
    assert_eq!(
        (b.state, b.consecutive_failures, b.trips),
        (BreakerState::Closed, 2, 0)
    );
    assert_eq!((b.window_requests, b.window_failures), (15, 4));
    assert_eq!(server.hits(), 15);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selection_skips_a_node_whose_breaker_is_open_for_another_serving_the_label() {
    let (bad_url, bad) = flaky(true).await;
    let (good_url, good) = flaky(false).await;
    let c = breaker_cluster().await;
    let a = add(&c, "a", &bad_url).await;
    add(&c, "b", &good_url).await;
    let llama = Selector::new().label("model", "llama");
    assert_eq!(c.select_node(&llama).unwrap().id(), "a", "ties go by id");
    for _ in 0..3 {
        a.execute(get_req("/work")).await.unwrap_err();
    }
    assert_eq!(state(&a), BreakerState::Open);
    for _ in 0..10 {
        assert_eq!(c.select_node(&llama).unwrap().id(), "b");
        assert!(c.execute(&llama, get_req("/work")).await.is_ok());
    }
    assert_eq!((bad.hits(), good.hits()), (3, 10));
    let available: Vec<String> = c.get_available_nodes().into_iter().map(|n| n.id).collect();
    assert_eq!(available, ["b"]);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_checks_open_it_waiters_give_up_and_a_passing_check_lets_a_probe_through() {
    let (url, server) = flaky(false).await;
    let c = breaker_cluster().await;
    let node = ComputeNode::new("gpu1", &url).unwrap().max_concurrent(1);
    c.add_node(node).await.unwrap();
    let node = c.node("gpu1").unwrap();
    until("the first check", || {
        node.info().health.checked_at.is_some()
    })
    .await;
    let held = {
        let node = node.clone();
        tokio::spawn(async move { node.execute(get_req("/hold")).await })
    };
    until("the slot is taken", || server.hits() == 1).await;
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let node = node.clone();
            tokio::spawn(async move { node.execute(get_req("/work")).await })
        })
        .collect();
    until("two wait for the slot", || node.info().waiting == 2).await;

    // The node fails its checks: the third opens the breaker, and the waiters give up.
    server.checks_failing.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(c.health_check().await.get("gpu1"), Some(&false));
    }
    for w in waiters {
        let e = w.await.unwrap().unwrap_err();
        assert_eq!(
            (e.kind, e.is_retryable()),
            (ComputeErrorKind::Unavailable, true),
            "{e}"
        );
        assert!(e.message.contains("circuit breaker is open"), "{e}");
    }
    let b = node.info().breaker;
    assert_eq!((b.state, b.waiting_for_check), (BreakerState::Open, true));
    server.release.notify_one();
    assert!(held.await.unwrap().is_ok(), "what ran finishes");
    assert_eq!(server.hits(), 1, "the waiters never reached the server");

    // Past the cool-down, a node that fails its checks still gets no probe.
    node.pass_time(Duration::from_secs(600));
    assert_eq!(state(&node), BreakerState::Open);
    assert!(node.execute(get_req("/work")).await.is_err());
    assert_eq!(server.hits(), 1);
    // One passing check half-opens it; the probe, a real request, closes it.
    server.checks_failing.store(false, Ordering::SeqCst);
    assert_eq!(c.health_check().await.get("gpu1"), Some(&true));
    assert_eq!(state(&node), BreakerState::HalfOpen);
    assert!(node.execute(get_req("/work")).await.is_ok());
    assert_eq!(state(&node), BreakerState::Closed);
    assert_eq!(server.hits(), 2);
    c.stop().await;
}
