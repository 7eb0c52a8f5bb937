//! Tasks that reach compute nodes through the ready-made handlers (`http_call`,
//! `remote_command`, `chat` from wrangle-actors), through the whole runtime: queue, worker,
//! handler, node proxy, a real HTTP server on 127.0.0.1 and back. A node whose server dies
//! mid-run is marked unhealthy, gets no new work, and the tasks it had are retried on the
//! other node and complete; a refusal fails its task at once.

#[path = "support/common.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use serde_json::json;
use tokio::sync::oneshot;
use wrangle::compute::{ComputeCluster, ComputeConfig, ComputeNode};
use wrangle::{Error, RestartBudget, TaskSpec, TaskStatus};
use wrangle_actors::HttpCallOutput;

use common::{eventually, fixed, handlers, secs, start};

/// An HTTP server on its own runtime and thread, so stopping it closes every connection
/// at once, as a machine that dies would.
struct Server {
    addr: SocketAddr,
    served: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(addr: &str, name: &'static str) -> Self {
        let listener = std::net::TcpListener::bind(addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = oneshot::channel::<()>();
        let count = served.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let app = Router::new()
                    .route(
                        "/work",
                        post(move |body: String| {
                            let count = count.clone();
                            async move {
                                // Long enough that a run spans the server's death.
                                tokio::time::sleep(Duration::from_millis(5)).await;
                                count.fetch_add(1, Ordering::SeqCst);
                                format!("{{\"by\":\"{name}\",\"echo\":{body}}}")
                            }
                        }),
                    )
                    .route(
                        "/refuse",
                        post(|| async { (StatusCode::BAD_REQUEST, "bad model") }),
                    );
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                tokio::select! {
                    r = axum::serve(listener, app) => r.unwrap(),
                    _ = stopped => {}
                }
            });
            // Dropping the runtime drops every connection task: sockets close.
        });
        Self {
            addr,
            served,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn cluster() -> ComputeCluster {
    let config = ComputeConfig {
        health_interval: Duration::from_millis(50),
        health_timeout: Duration::from_millis(500),
        max_backoff: Duration::from_millis(200),
        ..ComputeConfig::default()
    };
    ComputeCluster::start_with("tasks", config, RestartBudget::default())
        .await
        .unwrap()
}

async fn result(c: &wrangle::Coordinator, id: wrangle::TaskId) -> HttpCallOutput {
    let outcome = c.wait_for(id, secs(60)).await.unwrap();
    outcome.into_result(id).unwrap().decode().unwrap()
}

fn call(path: &str, n: usize) -> TaskSpec {
    let input = json!({
        "labels": {"pool": "web"},
        "request": {"method": "POST", "path": path, "body": {"n": n}},
    });
    TaskSpec::new("http_call", &input).unwrap().retries(10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_of_a_node_that_dies_are_retried_on_a_healthy_node_and_complete() {
    let mut a = Server::start("127.0.0.1:0", "a");
    let b = Server::start("127.0.0.1:0", "b");
    let compute = cluster().await;
    for (id, server) in [("a", &a), ("b", &b)] {
        let node = ComputeNode::new(id, &server.url())
            .unwrap()
            .label("pool", "web")
            .max_concurrent(4);
        compute.add_node(node).await.unwrap();
    }
    let registry = handlers();
    wrangle_actors::register_compute(&registry, &compute);
    let c = start(fixed(8), registry).await;

    let tasks = c
        .submit_batch((0..300).map(|n| call("/work", n)).collect())
        .await
        .unwrap();
    eventually("node a has served some", secs(20), || async {
        a.served.load(Ordering::SeqCst) >= 20
    })
    .await;
    a.kill();
    let served_by_a = a.served.load(Ordering::SeqCst);

    for (n, &id) in tasks.iter().enumerate() {
        let out: HttpCallOutput = result(&c, id).await;
        assert_eq!(
            out.body["echo"],
            json!({"n": n}),
            "task {n} got its own answer"
        );
    }
    assert_eq!(
        served_by_a + b.served.load(Ordering::SeqCst),
        300,
        "every task was served once to completion"
    );
    eventually("node a is marked unhealthy", secs(10), || async {
        compute
            .get_available_nodes()
            .iter()
            .map(|n| n.id.clone())
            .collect::<Vec<_>>()
            == ["b"]
    })
    .await;
    let info = compute.node("a").unwrap().info();
    assert!(
        !info.health.healthy && info.health.reason.is_some(),
        "{info:?}"
    );

    // With a down, new work goes to b only.
    let before = b.served.load(Ordering::SeqCst);
    let more = c
        .submit_batch((0..20).map(|n| call("/work", n)).collect())
        .await
        .unwrap();
    for &id in &more {
        let out: HttpCallOutput = result(&c, id).await;
        assert_eq!(out.node, "b");
    }
    assert_eq!(b.served.load(Ordering::SeqCst) - before, 20);
    c.stop(true).await.unwrap();
    compute.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_fails_its_task_at_once_and_a_missing_node_is_retried() {
    let server = Server::start("127.0.0.1:0", "a");
    let compute = cluster().await;
    compute
        .add_node(
            ComputeNode::new("a", &server.url())
                .unwrap()
                .label("pool", "web"),
        )
        .await
        .unwrap();
    let registry = handlers();
    wrangle_actors::register_compute(&registry, &compute);
    let c = start(fixed(2), registry).await;

    let refused = c.submit_async(call("/refuse", 1)).await.unwrap();
    match refused.result::<HttpCallOutput>(secs(10)).await {
        Err(Error::TaskFailed { status, error, .. }) => {
            assert_eq!(status, TaskStatus::Failed);
            assert!(
                error.contains("400") && error.contains("bad model"),
                "{error}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        c.get_task(refused.id).await.unwrap().attempts.len(),
        1,
        "a refusal is not retried"
    );

    let input = json!({"labels": {"gpu": "h100"}, "request": {"method": "GET", "path": "/"}});
    let nowhere = c
        .submit_async(TaskSpec::new("http_call", &input).unwrap().retries(2))
        .await
        .unwrap();
    let failed = nowhere
        .result::<HttpCallOutput>(secs(20))
        .await
        .unwrap_err()
        .to_string();
    assert!(failed.contains("no available compute node"), "{failed}");
    assert_eq!(
        c.get_task(nowhere.id).await.unwrap().attempts.len(),
        3,
        "retried while it lasted"
    );
    c.stop(true).await.unwrap();
    compute.stop().await;
}
