//! Cluster benchmark report, over loopback, in one run: no-op tasks per second from a
//! coordinator (this process) to its own workers (the in-process baseline), to one node
//! process and to two; submit-to-result latency p50/p99 to one node at half its peak rate;
//! and the time from a node's death to its tasks running on another node: a node that
//! freezes (SIGSTOP: its connection stays open, it just goes silent, as in a partition),
//! found by the missed heartbeats; and a node killed (SIGKILL: its connection closes).
//!
//! The nodes are the `node` example, started as child processes; build both first:
//!
//! ```text
//! cargo build --release --example node --example cluster_report
//! cargo run --release --example cluster_report
//! cargo run --release --example cluster_report -- 100000   # tasks per throughput run
//! ```
//!
//! It measures and prints; it asserts nothing.

#[path = "../benches/support/batches.rs"]
#[allow(dead_code)] // shared with the other reports; this one uses part of it
mod batches;
#[path = "../benches/support/nodes.rs"]
mod nodes;
#[path = "../benches/support/report.rs"]
#[allow(dead_code)] // shared with the other reports; this one uses part of it
mod report;

use std::error::Error;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use nodes::NodeProcess;
use wrangle::prelude::*;
use wrangle::ClusterConfig;

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

const COOKIE: &str = "cluster-report";
/// Tasks per submit.
const CHUNK: usize = 10_000;

/// Cluster report: throughput and latency through nodes joined over TCP.
#[derive(Debug, clap::Parser)]
#[command(name = "cluster_report")]
struct Args {
    /// Tasks per throughput run.
    #[arg(default_value_t = 200_000)]
    tasks: usize,
}

fn main() -> Res<()> {
    let Args { tasks } = wrangle::settings::cli::parse();
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
        .block_on(run(tasks))
}

async fn run(tasks: usize) -> Res<()> {
    println!(
        "cluster report: {tasks} no-op tasks per run, load average {}",
        report::load_average()
    );

    // The in-process baseline: the coordinator's own two workers.
    let local = Coordinator::builder()
        .config(config(2, None))
        .handler(
            "echo",
            handler_fn(|_ctx, v: serde_json::Value| async move { Ok::<_, TaskError>(v) }),
        )
        .start()
        .await?;
    run_noop(&local, tasks / 4, None).await?; // warm-up
    let in_process = rate(tasks, run_noop(&local, tasks, None).await?);
    local.stop(false).await?;

    // The same, through node processes: tasks require `bench`, which only nodes have.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let listen = format!("127.0.0.1:{port}").parse()?;
    let coordinator = Coordinator::builder()
        .config(config(1, Some(ClusterConfig::new(listen, COOKIE))))
        .start()
        .await?;
    let first = start_node(port, "bench-1")?;
    wait_online(&coordinator, &["bench-1"]).await?;
    run_noop(&coordinator, tasks / 4, Some("bench")).await?; // warm-up
    let one_node = rate(tasks, run_noop(&coordinator, tasks, Some("bench")).await?);
    let lat = batches::steady_latency(coordinator.queue(), &spec(Some("bench")), one_node / 2.0, 4)
        .await?;

    let second = start_node(port, "bench-2")?;
    wait_online(&coordinator, &["bench-1", "bench-2"]).await?;
    run_noop(&coordinator, tasks / 4, Some("bench")).await?; // warm-up
    let two_nodes = rate(tasks, run_noop(&coordinator, tasks, Some("bench")).await?);

    let mut nodes = vec![("bench-1", first), ("bench-2", second)];
    let frozen = failover(&coordinator, &mut nodes, "STOP").await?;
    // The frozen node stays frozen (and listed as lost); a fresh one takes its place.
    let survivor = nodes[1 - frozen.victim].0;
    nodes.push(("bench-3", start_node(port, "bench-3")?));
    wait_online(&coordinator, &[survivor, "bench-3"]).await?;
    let mut pair: Vec<(&'static str, NodeProcess)> = Vec::new();
    for node in nodes {
        if node.0 == survivor || node.0 == "bench-3" {
            pair.push(node);
        }
        // The frozen one is dropped here: killed.
    }
    let killed = failover(&coordinator, &mut pair, "KILL").await?;
    coordinator.stop(false).await?;

    println!("\nno-op tasks per second (submit to result, {tasks} tasks, batches of {CHUNK})");
    println!(
        "  in process (2 local workers)        {:>14}",
        report::per_s(in_process)
    );
    report::target(
        "to one node process",
        report::per_s(one_node),
        ">= 50,000",
        one_node >= 50_000.0,
    );
    println!(
        "  to two node processes               {:>14}",
        report::per_s(two_nodes)
    );
    println!(
        "  one node / in process                {:>13.2}x",
        one_node / in_process
    );
    println!(
        "\nlatency to one node at half its peak ({} tasks/s offered, {} achieved)",
        report::per_s(one_node / 2.0),
        report::per_s(lat.achieved)
    );
    println!("  p50 submit to result               {:>12.2?}", lat.p50);
    report::target(
        "p99 submit to result",
        format!("{:.2?}", lat.p99),
        "<= 5 ms",
        lat.p99 <= Duration::from_millis(5),
    );
    println!("  max                                {:>12.2?}", lat.max);
    let timeout = ClusterConfig::new(listen, COOKIE).node_timeout;
    for (what, f) in [
        (
            format!("frozen (SIGSTOP), node_timeout {timeout:?}"),
            &frozen,
        ),
        ("killed (SIGKILL)".to_string(), &killed),
    ] {
        println!(
            "\nnode {what}: {} with {} tasks running on it",
            f.name, f.moved
        );
        println!("  first moved task running elsewhere  {:>12.2?}", f.first);
        report::target(
            "all moved tasks running elsewhere",
            format!("{:.2?}", f.last),
            "<= 2 s",
            f.last <= Duration::from_secs(2),
        );
    }
    Ok(())
}

fn config(workers: usize, cluster: Option<ClusterConfig>) -> CoordinatorConfig {
    let mut c = CoordinatorConfig {
        min_workers: workers,
        max_workers: workers,
        auto_scale: false,
        cluster,
        ..CoordinatorConfig::default()
    };
    c.worker.max_concurrent_tasks = 256;
    c.queue.max_queue_size = 2_000_000;
    c
}

/// A node serving `bench` tasks with two workers of 256 slots each.
fn start_node(port: u16, name: &str) -> Res<NodeProcess> {
    nodes::start_node(
        port,
        COOKIE,
        name,
        &[
            "--labels",
            "bench",
            "--workers",
            "2",
            "--slots",
            "256",
            "--heartbeat-ms",
            "200",
        ],
    )
}

/// Waits for `names` online, with two workers each plus the one local worker attached.
async fn wait_online(coordinator: &Coordinator, names: &[&str]) -> Res<()> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let workers = 2 * names.len() + 1;
    nodes::wait_online(coordinator, &names, workers, Duration::from_secs(30)).await
}

fn rate(tasks: usize, took: Duration) -> f64 {
    tasks as f64 / took.as_secs_f64()
}

fn spec(label: Option<&str>) -> TaskSpec {
    let spec = TaskSpec::from_payload("echo", Payload::null());
    match label {
        Some(l) => spec.label(l),
        None => spec,
    }
}

/// Submits `tasks` echo tasks in batches of [`CHUNK`] and waits for every outcome.
async fn run_noop(coordinator: &Coordinator, tasks: usize, label: Option<&str>) -> Res<Duration> {
    let patience = Duration::from_secs(60);
    batches::run_batches(coordinator.queue(), &spec(label), tasks, CHUNK, patience).await
}

struct Failover {
    /// Index of the node signalled.
    victim: usize,
    name: &'static str,
    moved: usize,
    first: Duration,
    last: Duration,
}

/// Runs 64 two-second `sleep`s, sends `signal` to the node running most of them once all
/// have started, and measures when each of those started again on the other node (the
/// queue's own record of the new attempt).
async fn failover(
    coordinator: &Coordinator,
    nodes: &mut [(&'static str, NodeProcess)],
    signal: &str,
) -> Res<Failover> {
    let specs: Vec<TaskSpec> = (0..64)
        .map(|_| Ok(TaskSpec::new("sleep", &serde_json::json!({"ms": 2000}))?.label("bench")))
        .collect::<Result<_, wrangle::Error>>()?;
    let ids = coordinator.queue().submit_batch(specs).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let second = format!("{}/", nodes[1].0);
    let (victim, on_victim) = loop {
        let mut on: [Vec<TaskId>; 2] = Default::default();
        let mut running = 0;
        for s in &ids {
            let t = coordinator.get_task(s.id).await?;
            if let Some(a) = t.attempts.last().filter(|a| a.finished_at.is_none()) {
                running += 1;
                on[usize::from(a.worker.starts_with(&second))].push(s.id);
            }
        }
        if running == ids.len() {
            let busier = usize::from(on[1].len() > on[0].len());
            break (busier, std::mem::take(&mut on[busier]));
        }
        if Instant::now() > deadline {
            return Err(format!("the sleeps did not all start within 10 s ({running} did)").into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let survivor = format!("{}/", nodes[1 - victim].0);
    let signalled = SystemTime::now();
    let pid = nodes[victim].1 .0.id().to_string();
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()?;
    if !sent.success() {
        return Err(format!("kill -{signal} {pid} failed").into());
    }
    let mut restarted: Vec<Duration> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while restarted.len() < on_victim.len() {
        restarted.clear();
        for id in &on_victim {
            let t = coordinator.get_task(*id).await?;
            if let Some(a) = t.attempts.iter().find(|a| a.worker.starts_with(&survivor)) {
                restarted.push(a.started_at.duration_since(signalled).unwrap_or_default());
            }
        }
        if Instant::now() > deadline {
            return Err("the signalled node's tasks did not restart within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    restarted.sort_unstable();
    Ok(Failover {
        victim,
        name: nodes[victim].0,
        moved: on_victim.len(),
        first: restarted[0],
        last: *restarted.last().expect("moved"),
    })
}
