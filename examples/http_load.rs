//! HTTP submit throughput on loopback, beside the in-process submit rate measured in the same
//! run: single-task `POST /tasks` requests from concurrent keep-alive connections, then
//! batches of 100. The server and the load generator share this machine's cores, as they
//! would on one host.
//!
//! ```text
//! cargo run --release --example http_load
//! cargo run --release --example http_load -- 200000   # requests per phase
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use wrangle::api::{router, serve, ApiConfig};
use wrangle::{Coordinator, CoordinatorConfig, HandlerRegistry, TaskSpec, WorkerConfig};

const CONNECTIONS: usize = 64;

async fn start() -> Result<(Coordinator, String), Box<dyn std::error::Error>> {
    let handlers = HandlerRegistry::new();
    wrangle_actors::register_all(&handlers);
    let config = CoordinatorConfig {
        min_workers: 2,
        max_workers: 2,
        auto_scale: false,
        worker: WorkerConfig {
            max_concurrent_tasks: 256,
            ..WorkerConfig::default()
        },
        ..CoordinatorConfig::default()
    };
    let coordinator = Coordinator::start(config, handlers).await?;
    // The server's defaults, limits on: its rate limit (50,000 requests/s per client, bursts
    // of 100,000), connection cap and timeouts must let this load through.
    let app = router(coordinator.clone(), ApiConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(serve(listener, app, std::future::pending()));
    Ok((coordinator, url))
}

/// Sends `requests` POSTs of `body` over `CONNECTIONS` concurrent connections; returns
/// requests per second.
async fn load(url: &str, requests: usize, body: serde_json::Value) -> f64 {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CONNECTIONS)
        .build()
        .expect("client");
    let body = Arc::new(serde_json::to_vec(&body).expect("json"));
    let failures = AtomicUsize::new(0);
    let started = Instant::now();
    futures_util::stream::iter(0..requests)
        .map(|_| {
            let (http, body, failures) = (&http, body.clone(), &failures);
            async move {
                let ok = http
                    .post(format!("{url}/tasks"))
                    .header("content-type", "application/json")
                    .body(body.as_ref().clone())
                    .send()
                    .await
                    .map(|r| r.status().as_u16() == 201)
                    .unwrap_or(false);
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .buffer_unordered(CONNECTIONS)
        .for_each(|_| async {})
        .await;
    let secs = started.elapsed().as_secs_f64();
    let failed = failures.load(Ordering::Relaxed);
    assert_eq!(failed, 0, "{failed} requests failed");
    requests as f64 / secs
}

async fn drain(c: &Coordinator) {
    loop {
        let s = c.get_stats().await.expect("stats");
        if s.queue.queue_size == 0 && s.queue.running == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// HTTP load: requests per second through the API.
#[derive(Debug, clap::Parser)]
#[command(name = "http_load")]
struct Args {
    /// Requests per phase.
    #[arg(default_value_t = 100_000)]
    requests: usize,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Args { requests } = wrangle::settings::cli::parse();
    let (coordinator, url) = start().await?;
    println!(
        "wrangle HTTP load: {requests} requests per phase, {CONNECTIONS} connections, 2 workers"
    );

    // Warm up connections and code paths.
    load(&url, 2_000, json!({"task_type": "echo", "payload": 1})).await;
    drain(&coordinator).await;

    let single = load(
        &url,
        requests,
        json!({"task_type": "echo", "payload": {"n": 1}}),
    )
    .await;
    drain(&coordinator).await;
    let batch: Vec<_> = (0..100)
        .map(|i| json!({"task_type": "echo", "payload": {"n": i}}))
        .collect();
    let batches = (requests / 100).max(1);
    let batch_rps = load(&url, batches, json!(batch)).await;
    drain(&coordinator).await;

    // In-process baseline: the same tasks through the library API, from the same number
    // of concurrent callers, one task per call and then 100 per call.
    let in_process = |per_call: usize| {
        let coordinator = coordinator.clone();
        async move {
            let calls = requests / per_call;
            let started = Instant::now();
            futures_util::stream::iter(0..calls)
                .map(|_| {
                    let coordinator = coordinator.clone();
                    async move {
                        let specs = (0..per_call)
                            .map(|i| TaskSpec::new("echo", &json!({"n": i})).expect("spec"))
                            .collect();
                        coordinator.submit_batch(specs).await.expect("submit");
                    }
                })
                .buffer_unordered(CONNECTIONS)
                .for_each(|_| async {})
                .await;
            (calls * per_call) as f64 / started.elapsed().as_secs_f64()
        }
    };
    let in_single = in_process(1).await;
    drain(&coordinator).await;
    let in_batch = in_process(100).await;
    drain(&coordinator).await;

    println!();
    println!("| submit path                         | tasks/s   |");
    println!("|-------------------------------------|-----------|");
    println!("| HTTP, one task per request          | {single:>9.0} |");
    println!(
        "| HTTP, 100 tasks per request         | {:>9.0} |",
        batch_rps * 100.0
    );
    println!("| in-process, one task per call       | {in_single:>9.0} |");
    println!("| in-process, 100 tasks per call      | {in_batch:>9.0} |");
    println!(
        "\nHTTP / in-process: single {:.2}, batch {:.2}",
        single / in_single,
        batch_rps * 100.0 / in_batch
    );
    coordinator.stop(false).await?;
    Ok(())
}
