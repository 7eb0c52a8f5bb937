//! Scale report: one coordinator (this process) and many node processes joined over real
//! ractor_cluster connections on loopback, by default 100 nodes of 100 workers each (10,000
//! workers). At each step (10, 25, 50 and 100 nodes) it prints the coordinator's resident
//! memory and CPU while idle (heartbeats and bookkeeping only) and under a steady load, the
//! submit-to-result latency of no-op tasks spread over every node, and the growth per node
//! and per worker from the first step to the last.
//!
//! The nodes are the `node` example, started as child processes; build both first:
//!
//! ```text
//! cargo build --release --example node --example scale_report
//! cargo run --release --example scale_report
//! cargo run --release --example scale_report -- 40 50   # 40 nodes of 50 workers
//! ```
//!
//! Every node process shares this machine's cores with the coordinator, so the latency is
//! that of a crowded machine; the coordinator's own CPU and memory are what grow with the
//! cluster. It measures and prints; it asserts nothing.

#[path = "../benches/support/batches.rs"]
#[allow(dead_code)] // shared with the other reports; this one uses part of it
mod batches;
#[path = "../benches/support/nodes.rs"]
mod nodes;
#[path = "../benches/support/report.rs"]
#[allow(dead_code)] // shared with the other reports; this one uses part of it
mod report;

use std::error::Error;
use std::time::{Duration, Instant};

use wrangle::prelude::*;
use wrangle::ClusterConfig;

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

const COOKIE: &str = "scale-report";
/// How long each idle and loaded measurement lasts.
const WINDOW: Duration = Duration::from_secs(5);
/// Tasks per second offered during the loaded measurement.
const RATE: f64 = 2_000.0;
/// Nodes started at once (the gate takes a bounded number of handshakes at a time).
const WAVE: usize = 10;

/// Scale report: what the coordinator costs as node processes join.
#[derive(Debug, clap::Parser)]
#[command(name = "scale_report")]
struct Args {
    /// Most node processes.
    #[arg(default_value_t = 100)]
    nodes: usize,
    /// Workers per node.
    #[arg(default_value_t = 100)]
    workers: usize,
}

fn main() -> Res<()> {
    let Args { nodes, workers } = wrangle::settings::cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(nodes, workers))
}

/// What the coordinator cost at one cluster size.
struct Step {
    nodes: usize,
    workers: usize,
    rss: u64,
    idle_cpu: f64,
    load_cpu: f64,
    latency: batches::Latency,
}

async fn run(max_nodes: usize, per_node: usize) -> Res<()> {
    println!(
        "scale report: up to {max_nodes} node processes of {per_node} workers, load average {}",
        report::load_average()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut cluster = ClusterConfig::new(format!("127.0.0.1:{port}").parse()?, COOKIE);
    // Heartbeats as a production cluster would set them, not the tests' 300 ms.
    cluster.heartbeat_interval = Duration::from_secs(1);
    cluster.node_timeout = Duration::from_secs(5);
    let mut config = CoordinatorConfig {
        min_workers: 1,
        max_workers: 1,
        auto_scale: false,
        cluster: Some(cluster),
        ..CoordinatorConfig::default()
    };
    config.queue.max_queue_size = 1_000_000;
    // Finished tasks are not what this report measures: keep few, so memory between steps
    // differs by what the nodes and workers cost.
    config.queue.max_finished_tasks = 1_000;
    let coordinator = Coordinator::builder().config(config).start().await?;

    let base_idle = cpu_share(WINDOW).await?;
    println!(
        "\nwithout nodes: {:.1} MiB resident, {:.2}% of a core idle",
        mib(report::rss_bytes()?),
        base_idle * 100.0
    );

    let mut running: Vec<nodes::NodeProcess> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut steps = Vec::new();
    for target in [10, 25, 50, 100, max_nodes] {
        let target = target.min(max_nodes);
        if target <= names.len() {
            continue;
        }
        let started = Instant::now();
        while names.len() < target {
            let wave_end = (names.len() + WAVE).min(target);
            for i in names.len()..wave_end {
                let name = format!("scale-{i:03}");
                let w = per_node.to_string();
                running.push(nodes::start_node(
                    port,
                    COOKIE,
                    &name,
                    &["--labels", "bench", "--workers", &w, "--slots", "1"],
                )?);
                names.push(name);
            }
            let attached = names.len() * per_node + 1;
            nodes::wait_online(&coordinator, &names, attached, Duration::from_secs(120)).await?;
        }
        let joined = started.elapsed();
        // The load first, so every step's memory holds the same high-water mark of a loaded
        // run, and the difference between steps is what the nodes and workers cost.
        let spec = TaskSpec::from_payload("echo", Payload::null()).label("bench");
        let cpu_before = report::cpu_time()?;
        let at = Instant::now();
        let latency =
            batches::steady_latency(coordinator.queue(), &spec, RATE, WINDOW.as_secs()).await?;
        let load_cpu =
            (report::cpu_time()? - cpu_before).as_secs_f64() / at.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle_cpu = cpu_share(WINDOW).await?;
        let rss = report::rss_bytes()?;
        println!(
            "{target:>4} nodes, {:>6} workers joined in {joined:.1?}: {:.1} MiB, idle {:.1}% of a core, \
             loaded {:.1}%, p50 {:.2?} p99 {:.2?}",
            target * per_node,
            mib(rss),
            idle_cpu * 100.0,
            load_cpu * 100.0,
            latency.p50,
            latency.p99,
        );
        steps.push(Step {
            nodes: target,
            workers: target * per_node,
            rss,
            idle_cpu,
            load_cpu,
            latency,
        });
    }
    coordinator.stop(false).await?;
    drop(running);

    println!(
        "\ncoordinator cost by cluster size ({} tasks/s offered under load, {WINDOW:?} windows)",
        report::per_s(RATE)
    );
    println!(
        "  {:>5} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9} {:>10}",
        "nodes", "workers", "RSS MiB", "idle CPU", "load CPU", "p50", "p99", "p99.9"
    );
    for s in &steps {
        println!(
            "  {:>5} {:>7} {:>10.1} {:>8.2}% {:>8.1}% {:>9.2?} {:>9.2?} {:>10.2?}",
            s.nodes,
            s.workers,
            mib(s.rss),
            s.idle_cpu * 100.0,
            s.load_cpu * 100.0,
            s.latency.p50,
            s.latency.p99,
            s.latency.p999,
        );
    }
    if let (Some(first), Some(last)) = (steps.first(), steps.last()) {
        if last.nodes > first.nodes {
            let dn = (last.nodes - first.nodes) as f64;
            let dw = (last.workers - first.workers) as f64;
            println!(
                "\ngrowth from {} to {} nodes: {:.1} KiB and {:.3}% of a core (idle) per added node; \
                 {:.0} B per added worker",
                first.nodes,
                last.nodes,
                (last.rss as f64 - first.rss as f64) / 1024.0 / dn,
                (last.idle_cpu - first.idle_cpu) * 100.0 / dn,
                (last.rss as f64 - first.rss as f64) / dw,
            );
        }
    }
    Ok(())
}

/// The share of one core this process used over `window`.
async fn cpu_share(window: Duration) -> Res<f64> {
    let before = report::cpu_time()?;
    let at = Instant::now();
    tokio::time::sleep(window).await;
    Ok((report::cpu_time()? - before).as_secs_f64() / at.elapsed().as_secs_f64())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
