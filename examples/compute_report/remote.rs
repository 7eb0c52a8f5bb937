//! The compute report's SSH and Docker sections: commands through a node's proxy (the
//! backend's own client, the direct call) and as `remote_command` tasks through the whole
//! path, then how long a node whose backend dies takes to be marked unhealthy. Each section
//! is skipped, saying so, when its server is missing.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use wrangle::compute::{
    CommandRequest, ComputeCluster, ComputeConfig, ComputeNode, ComputeNodeRef, ComputeRequest,
};
use wrangle::prelude::*;
use wrangle::{CoordinatorConfig, HandlerRegistry, RestartBudget, WorkerConfig};

use crate::{docker, drive, line, sshd, Res};

/// Health checks every 100 ms, unhealthy after 3 failures: what the dying figures use.
fn fast(config: ComputeConfig) -> ComputeConfig {
    ComputeConfig {
        health_interval: Duration::from_millis(100),
        health_timeout: Duration::from_millis(500),
        unhealthy_after: 3,
        max_backoff: Duration::from_millis(100),
        ..config
    }
}

fn command(argv: &[&str]) -> ComputeRequest {
    ComputeRequest::Command(CommandRequest {
        argv: argv.iter().map(|a| a.to_string()).collect(),
        stdin: None,
    })
}

/// `n` runs of `argv` on `node`, `concurrency` at a time: through its proxy, then as
/// `remote_command` tasks through a coordinator (2 workers sharing `concurrency` slots).
async fn commands(
    what: &str,
    cluster: &ComputeCluster,
    node: ComputeNodeRef,
    argv: &'static [&'static str],
    n: usize,
    concurrency: usize,
) -> Res<()> {
    let direct = drive(n, concurrency, move |_| {
        let node = node.clone();
        async move {
            node.execute(command(argv))
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        }
    })
    .await?;
    let base = direct.0;
    line(&format!("{what}, through the proxy"), n, &direct, base);

    let handlers = HandlerRegistry::new();
    wrangle_actors::register_compute(&handlers, cluster);
    let config = CoordinatorConfig {
        min_workers: 2,
        max_workers: 2,
        auto_scale: false,
        worker: WorkerConfig {
            max_concurrent_tasks: concurrency.div_ceil(2) as u32,
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
    let node_id = cluster
        .list_nodes()
        .first()
        .map(|n| n.id.clone())
        .ok_or("a node")?;
    let tasks = {
        let c = c.clone();
        drive(n, concurrency, move |_| {
            let (c, node_id) = (c.clone(), node_id.clone());
            async move {
                let input = json!({"node": node_id, "argv": argv, "stream": false});
                let handle = c
                    .submit_async(TaskSpec::new("remote_command", &input)?)
                    .await?;
                handle
                    .result::<serde_json::Value>(Duration::from_secs(120))
                    .await?;
                Ok(())
            }
        })
        .await?
    };
    line(&format!("{what}, as remote_command tasks"), n, &tasks, base);
    c.stop(true).await?;
    Ok(())
}

/// Time from `kill` returning until `cluster` lists none of its nodes as available.
async fn dying(what: &str, cluster: &ComputeCluster, kill: impl FnOnce()) {
    kill();
    let t0 = Instant::now();
    while !cluster.get_available_nodes().is_empty() {
        if t0.elapsed() > Duration::from_secs(30) {
            println!("  {what:<36}  still healthy after 30 s");
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    println!(
        "  {what:<36}{:>7.0} ms  (checks every 100 ms, unhealthy after 3 failures)",
        t0.elapsed().as_secs_f64() * 1e3
    );
}

/// SSH: `true` over one reused connection to an sshd this report starts on 127.0.0.1.
pub(crate) async fn ssh(n: usize) -> Res<()> {
    const SSHD: &str = "/usr/sbin/sshd";
    if !Path::new(SSHD).is_file() {
        println!("ssh: SKIPPED, {SSHD} is missing (apt-get install openssh-server)");
        return Ok(());
    }
    let Some(mut server) = sshd::Sshd::start() else {
        println!("ssh: SKIPPED, sshd did not start");
        return Ok(());
    };
    let concurrency = 8;
    println!("ssh: {n} commands per run, {concurrency} channels at once on one connection");
    let config = fast(ComputeConfig {
        credentials_dir: Some(server.path("creds")),
        known_hosts: Some(server.path("known_hosts")),
        ..ComputeConfig::default()
    });
    let cluster = ComputeCluster::start_with("bench-ssh", config, RestartBudget::default()).await?;
    let node = ComputeNode::new("ssh", &server.endpoint())?
        .credential("id_ed25519")
        .max_concurrent(concurrency);
    cluster.add_node(node).await?;
    let node = cluster.node("ssh").ok_or("node added")?;
    commands("`true` over SSH", &cluster, node, &["true"], n, concurrency).await?;
    println!(
        "  connections sshd served: {} (one, reused)",
        server.connections()
    );
    dying("sshd killed -> node unhealthy", &cluster, || server.kill()).await;
    cluster.stop().await;
    Ok(())
}

/// Docker: `true` exec'd in a running container, and in a new container per run from an
/// image, on this machine's engine.
pub(crate) async fn docker(exec_n: usize, run_n: usize) -> Res<()> {
    if let Err(e) = docker::docker(&["version", "--format", "{{.Server.Version}}"]) {
        println!("docker: SKIPPED, the engine does not answer: {e}");
        return Ok(());
    }
    if !docker::ready() {
        println!("docker: SKIPPED, the test image could not be made");
        return Ok(());
    }
    let concurrency = 8;
    println!(
        "docker: {exec_n} execs and {run_n} container runs per run, {concurrency} at once \
         (image {})",
        docker::IMAGE
    );
    let (target, run_id) = (docker::uid("bench"), docker::uid("bench-run"));
    let _cleanup = docker::Cleanup {
        node_ids: vec![run_id.clone()],
        containers: vec![target.clone()],
    };
    docker::sleeper(&target);
    let config = fast(ComputeConfig::default());
    let cluster =
        ComputeCluster::start_with("bench-exec", config.clone(), RestartBudget::default()).await?;
    let node = ComputeNode::new("exec", &format!("docker://{target}"))?.max_concurrent(concurrency);
    cluster.add_node(node).await?;
    let node = cluster.node("exec").ok_or("node added")?;
    commands(
        "`true` exec'd in a container",
        &cluster,
        node,
        &["true"],
        exec_n,
        concurrency,
    )
    .await?;

    let runs = ComputeCluster::start_with("bench-run", config, RestartBudget::default()).await?;
    let image = format!("docker://image/{}", docker::IMAGE);
    runs.add_node(ComputeNode::new(&run_id, &image)?.max_concurrent(concurrency))
        .await?;
    let node = runs.node(&run_id).ok_or("node added")?;
    commands(
        "`true` in a new container",
        &runs,
        node,
        &["true"],
        run_n,
        concurrency,
    )
    .await?;
    runs.stop().await;

    dying("container stopped -> node unhealthy", &cluster, || {
        let _ = docker::docker(&["stop", "-t", "0", &target]);
    })
    .await;
    cluster.stop().await;
    Ok(())
}
