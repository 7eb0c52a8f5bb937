//! Compute cluster benchmark: HTTP requests to a local axum server, in one run,
//!
//! - straight from a reqwest client (the baseline),
//! - through a node's proxy (`ComputeNodeRef::execute`),
//! - as `http_call` tasks through the whole path (submit → queue → worker → handler →
//!   proxy → server → result),
//!
//! each with requests/s and p50/p99 latency, and the proxy's and the whole path's overhead
//! against the baseline; then how long a node whose server dies takes to be marked
//! unhealthy with fast checks (100 ms interval, 3 failures).
//!
//! Then the same for SSH (commands over one reused connection to an OpenSSH sshd the
//! report starts on 127.0.0.1, as the SSH tests do) and Docker (commands exec'd in a
//! running container, and runs in a new container per command, from the tests' busybox
//! image), each through the node's proxy and as `remote_command` tasks, and the time from
//! sshd killed or the container stopped to the node marked unhealthy (`remote.rs`). A
//! section whose server is missing is skipped with a line saying so.
//!
//! ```text
//! cargo run --release --example compute_report
//! cargo run --release --example compute_report -- 50000   # HTTP requests per run
//! cargo run --release --example compute_report -- 20000 600 500 60   # and SSH commands,
//!                                         # Docker execs and container runs per run
//! ```
//!
//! It measures and prints; it asserts nothing.

#[path = "../benches/support/batches.rs"]
#[allow(dead_code)] // shared with the other reports; this one uses part of it
mod batches;
// The SSH and Docker tests' servers, shared as they are: an sshd with its keys, and the
// Docker CLI with the test image.
#[path = "../tests/support/compute_docker.rs"]
#[allow(dead_code)] // shared with the Docker tests; this report uses part of it
mod docker;
#[path = "../tests/support/net.rs"]
mod net;
#[path = "compute_report/remote.rs"]
mod remote;
#[path = "../benches/support/report.rs"]
#[allow(dead_code)] // shared with the other reports; this one uses part of it
mod report;
#[path = "../tests/support/sshd.rs"]
#[allow(dead_code)] // shared with the SSH tests; this report uses part of it
mod sshd;

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::{get, post};
use batches::quantile;
use report::{cpu_time, load_average, per_s, target};
use serde_json::json;
use tokio::sync::Semaphore;
use wrangle::compute::{ComputeCluster, ComputeConfig, ComputeNode, ComputeRequest, HttpRequest};
use wrangle::prelude::*;
use wrangle::{CoordinatorConfig, HandlerRegistry, RestartBudget, WorkerConfig};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// HTTP requests in flight at once in every run.
const CONCURRENCY: usize = 64;

/// SSH commands per run.
const SSH_COMMANDS: usize = 600;

/// Docker commands exec'd in a running container, and runs in new containers, per run.
const DOCKER_EXECS: usize = 500;
const DOCKER_RUNS: usize = 60;

/// A server on its own thread and runtime (as a separate machine would be), until `stop`.
fn server() -> Res<(
    String,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new()
                .route("/", get(|| async { "up" }))
                .route("/echo", post(|body: String| async move { body }));
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            tokio::select! {
                r = axum::serve(listener, app) => r.unwrap(),
                _ = stopped => {}
            }
        });
    });
    Ok((url, stop, thread))
}

/// Runs `n` calls of `one`, `concurrency` at a time: (requests/s, sorted latencies, CPU).
async fn drive<F, Fut>(n: usize, concurrency: usize, one: F) -> Res<(f64, Vec<Duration>, Duration)>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Res<()>> + Send,
{
    let one = Arc::new(one);
    let gate = Arc::new(Semaphore::new(concurrency));
    let cpu0 = cpu_time()?;
    let t0 = Instant::now();
    let mut calls = Vec::with_capacity(n);
    for i in 0..n {
        let permit = gate.clone().acquire_owned().await?;
        let one = one.clone();
        calls.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = one(i).await;
            drop(permit);
            r.map(|()| t.elapsed())
        }));
    }
    let mut lat = Vec::with_capacity(n);
    for c in calls {
        lat.push(c.await??);
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_time()? - cpu0;
    lat.sort_unstable();
    Ok((n as f64 / secs, lat, cpu))
}

fn line(what: &str, n: usize, (rate, lat, cpu): &(f64, Vec<Duration>, Duration), base: f64) {
    println!(
        "  {what:<44}{:>9}/s  p50 {:>7.3} ms  p99 {:>7.3} ms  CPU {:>5.1} µs/request  {:>5.1}% of the baseline",
        per_s(*rate),
        quantile(lat, 0.50).as_secs_f64() * 1e3,
        quantile(lat, 0.99).as_secs_f64() * 1e3,
        cpu.as_secs_f64() * 1e6 / n as f64,
        rate / base * 100.0,
    );
}

/// Compute report: requests through compute nodes (HTTP, SSH, Docker).
#[derive(Debug, clap::Parser)]
#[command(name = "compute_report")]
struct Args {
    /// HTTP requests per run.
    #[arg(default_value_t = 20_000)]
    requests: usize,
    /// SSH commands.
    #[arg(default_value_t = SSH_COMMANDS)]
    ssh: usize,
    /// Docker execs.
    #[arg(default_value_t = DOCKER_EXECS)]
    execs: usize,
    /// Docker runs.
    #[arg(default_value_t = DOCKER_RUNS)]
    runs: usize,
}

#[tokio::main]
async fn main() -> Res<()> {
    let Args {
        requests: n,
        ssh: ssh_n,
        execs: exec_n,
        runs: run_n,
    } = wrangle::settings::cli::parse();
    println!(
        "compute report: {n} requests per run, {CONCURRENCY} in flight; load {}",
        load_average()
    );
    let (url, stop, thread) = server()?;

    let client = reqwest::Client::new();
    let echo = format!("{url}/echo");
    let direct = drive(n, CONCURRENCY, move |i| {
        let (client, echo) = (client.clone(), echo.clone());
        async move {
            let r = client.post(&echo).json(&json!({ "i": i })).send().await?;
            r.error_for_status()?.bytes().await?;
            Ok(())
        }
    })
    .await?;
    let base = direct.0;
    line("reqwest, direct", n, &direct, base);

    let cluster = ComputeCluster::start("bench").await?;
    let node = ComputeNode::new("local", &url)?.max_concurrent(CONCURRENCY);
    cluster.add_node(node).await?;
    let node = cluster.node("local").ok_or("node added")?;
    let proxied = drive(n, CONCURRENCY, move |i| {
        let node = node.clone();
        async move {
            let request = ComputeRequest::Http(HttpRequest::post("/echo", json!({ "i": i })));
            node.execute(request).await.map_err(|e| e.to_string())?;
            Ok(())
        }
    })
    .await?;
    line("through the node proxy", n, &proxied, base);

    let handlers = HandlerRegistry::new();
    wrangle_actors::register_compute(&handlers, &cluster);
    let config = CoordinatorConfig {
        min_workers: 4,
        max_workers: 4,
        auto_scale: false,
        worker: WorkerConfig {
            max_concurrent_tasks: (CONCURRENCY / 4) as u32,
            ..WorkerConfig::default()
        },
        ..CoordinatorConfig::default()
    };
    let c = Coordinator::builder()
        .config(config)
        .handlers(handlers)
        .compute(cluster.clone())
        .start()
        .await?;
    let tasks = {
        let c = c.clone();
        drive(n, CONCURRENCY, move |i| {
            let c = c.clone();
            async move {
                let input = json!({"node": "local", "request": {"method": "POST", "path": "/echo", "body": {"i": i}}});
                let handle = c.submit_async(TaskSpec::new("http_call", &input)?).await?;
                handle.result::<serde_json::Value>(Duration::from_secs(60)).await?;
                Ok(())
            }
        })
        .await?
    };
    line("as http_call tasks", n, &tasks, base);
    target(
        "proxy overhead",
        format!("{:.1}%", (1.0 - proxied.0 / base) * 100.0),
        "<= 10%",
        proxied.0 >= 0.9 * base,
    );
    target(
        "http_call tasks/s",
        per_s(tasks.0),
        ">= 20,000",
        tasks.0 >= 20_000.0,
    );
    c.stop(true).await?;

    // A dying backend: how long until its node receives nothing.
    let fast = ComputeConfig {
        health_interval: Duration::from_millis(100),
        health_timeout: Duration::from_millis(500),
        max_backoff: Duration::from_millis(100),
        ..ComputeConfig::default()
    };
    let watch = ComputeCluster::start_with("watch", fast, RestartBudget::default()).await?;
    watch.add_node(ComputeNode::new("dying", &url)?).await?;
    let _ = stop.send(());
    thread.join().map_err(|_| "server thread panicked")?;
    let t0 = Instant::now();
    while !watch.get_available_nodes().is_empty() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    println!(
        "  backend dead -> node unhealthy      {:>7.0} ms  (checks every 100 ms, unhealthy after 3 failures)",
        t0.elapsed().as_secs_f64() * 1e3
    );
    watch.stop().await;

    remote::ssh(ssh_n).await?;
    remote::docker(exec_n, run_n).await?;
    println!("load after: {}", load_average());
    Ok(())
}
