//! Launch report: how fast node groups bring up a node for waiting work and take it away
//! when idle, and whether scaling down ever loses or re-runs a task. One coordinator (this
//! process) with a node group whose launcher starts the `node` example:
//!
//! - **cold start**: a labelled task only the group serves is submitted to an empty group;
//!   the time to its result (launch, process or container start, join, lease, run), and the
//!   join time the group recorded. Repeated, each after the group went back to zero.
//! - **idle to terminated**: from the last result to the group's `terminated` event, with
//!   `idle_timeout` = 1 s and a 200 ms tick (so at least 1 s of it is the timeout itself).
//! - **scale-down safety**: bursts of `sleep` tasks separated by idle gaps longer than
//!   `idle_timeout`, so nodes are drained and terminated between and during bursts; every
//!   task must complete exactly once (attempts counted from the task's history).
//!
//! With the local-process launcher, and with Docker containers (host network) when an
//! engine is reachable. Build the node program first:
//!
//! ```text
//! cargo build --release --example node --example launch_report
//! cargo run --release --example launch_report            # 5 cold starts per launcher
//! cargo run --release --example launch_report -- 10      # 10
//! ```
//!
//! It measures and prints; it asserts nothing.

#[path = "../tests/support/node_image.rs"]
mod node_image;
#[path = "../tests/support/programs.rs"]
#[allow(dead_code)] // only `example_binary` is used
mod programs;

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wrangle::launch::{DockerLauncher, Launcher, NodeGroupConfig, ProcessLauncher};
use wrangle::{ClusterConfig, Coordinator, CoordinatorConfig, TaskSpec, TaskStatus};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

const NODE_ARGS: [&str; 6] = ["--workers", "2", "--slots", "8", "--heartbeat-ms", "200"];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Res<()> {
    let reps: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(5);
    let node = programs::example_binary("node");
    println!("launch report: {reps} cold starts per launcher, idle_timeout 1 s, tick 200 ms");
    let process = ProcessLauncher::new(&node, NODE_ARGS.map(String::from).to_vec());
    run("process", Arc::new(process), reps).await?;
    let engine = std::process::Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if engine {
        let dir = tempfile::tempdir()?;
        let image = format!("wrangle-launch-report:{:08x}", fastrand::u32(..));
        node_image::build(&image, dir.path(), &["node"], Some("/bin/node"));
        let docker = DockerLauncher::new(image.clone(), NODE_ARGS.map(String::from).to_vec());
        let result = run("docker", Arc::new(docker), reps).await;
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", &image])
            .output();
        result?;
    } else {
        println!("\n[docker] no engine reachable: not measured");
    }
    Ok(())
}

fn group(name: &str) -> NodeGroupConfig {
    NodeGroupConfig {
        labels: vec!["pool=report".into()],
        task_types: vec!["echo".into(), "sleep".into()],
        min_nodes: 0,
        max_nodes: 3,
        slots_per_node: 16,
        scale_up_step: 1,
        idle_timeout: Duration::from_secs(1),
        join_timeout: Duration::from_secs(60),
        stop_grace: Duration::from_secs(10),
        scale_up_cooldown: Duration::from_millis(200),
        scale_down_cooldown: Duration::from_millis(200),
        ..NodeGroupConfig::new(name)
    }
}

async fn run(kind: &str, launcher: Arc<dyn Launcher>, reps: usize) -> Res<()> {
    println!("\n[{kind}]");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let name = format!("report{:06x}", fastrand::u32(..0xff_ffff));
    let config = CoordinatorConfig {
        cluster: Some(ClusterConfig::new(
            format!("127.0.0.1:{port}").parse()?,
            "launch-report",
        )),
        autoscale_interval: Duration::from_millis(200),
        ..CoordinatorConfig::default()
    };
    let c = Coordinator::builder()
        .config(config)
        .node_group(group(&name), launcher)
        .start()
        .await?;
    let groups = c.node_groups().ok_or("no node groups")?;
    let empty = |what: &'static str| {
        let groups = groups.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !groups.status()[0].members.is_empty() {
                if Instant::now() > deadline {
                    return Err(format!("the group never emptied ({what})"));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(())
        }
    };

    let (mut cold, mut joins, mut idle) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        let seen = groups.history().len();
        let start = Instant::now();
        let spec = TaskSpec::new("echo", &1)?.label("pool=report");
        let out: u32 = c
            .submit_async(spec)
            .await?
            .result(Duration::from_secs(120))
            .await?;
        assert_eq!(out, 1);
        cold.push(start.elapsed());
        let done = Instant::now();
        empty("after a cold start").await?;
        idle.push(done.elapsed());
        for e in &groups.history()[seen..] {
            if e.action == "joined" {
                // "joined N ms after it started"
                if let Some(ms) = e
                    .reason
                    .split_whitespace()
                    .nth(1)
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    joins.push(Duration::from_millis(ms));
                }
            }
        }
    }
    line("first waiting task -> its result", &cold);
    line("  of which: started -> joined", &joins);
    line("last result -> node terminated", &idle);

    // Bursts with idle gaps: nodes come and go while tasks run.
    let mut ids = Vec::new();
    let bursts = 4;
    for b in 0..bursts {
        for _ in 0..150 {
            let spec =
                TaskSpec::new("sleep", &serde_json::json!({ "ms": 100 }))?.label("pool=report");
            ids.push(c.submit_async(spec).await?);
        }
        let last = ids.last().expect("submitted").id;
        let deadline = Instant::now() + Duration::from_secs(120);
        while c.get_task(last).await?.status != TaskStatus::Completed {
            if Instant::now() > deadline {
                return Err(format!("burst {b} did not finish").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Longer than idle_timeout: some nodes drain and stop here.
        tokio::time::sleep(Duration::from_millis(1_600)).await;
    }
    let (mut completed, mut reruns, mut lost) = (0, 0, 0);
    for h in &ids {
        let t = c.get_task(h.id).await?;
        match t.status {
            TaskStatus::Completed => completed += 1,
            _ => lost += 1,
        }
        if t.attempts.len() > 1 {
            reruns += 1;
        }
    }
    let counts = groups.status()[0].counts;
    println!(
        "  scale-down safety: {} tasks in {bursts} bursts: {completed} completed, {lost} lost, \
         {reruns} re-run; {} launches, {} drains, {} terminations (target: 0 lost, 0 re-run)",
        ids.len(),
        counts.launches,
        counts.drains,
        counts.terminations
    );
    empty("at the end").await?;
    c.stop(true).await?;
    Ok(())
}

fn line(what: &str, samples: &[Duration]) {
    if samples.is_empty() {
        println!("  {what:<36} no samples");
        return;
    }
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let median = ms[ms.len() / 2];
    println!(
        "  {what:<36} median {median:>7.0} ms   min {:>7.0} ms   max {:>7.0} ms   (n={})",
        ms[0],
        ms[ms.len() - 1],
        ms.len()
    );
}
