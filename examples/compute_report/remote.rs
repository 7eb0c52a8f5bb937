//! The compute report's SSH and Docker sections: commands through a node's proxy (the
//! backend's own client, the direct call) and as `remote_command` tasks through the whole
//! path, then how long a node whose backend dies takes to be marked unhealthy. SSH has a
//! baseline beside them, OpenSSH's `ssh` over one multiplexed connection; Docker's baseline
//! is the proxy's own call. Each section is skipped, saying so, when its server is missing.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use wrangle::compute::{
    CommandRequest, ComputeCluster, ComputeConfig, ComputeNode, ComputeRequest,
};
use wrangle::prelude::*;
use wrangle::{CoordinatorConfig, HandlerRegistry, RestartBudget, WorkerConfig};

use crate::{docker, drive, line, sshd, Res};

/// Health checks every 100 ms, unhealthy after 3 failures: what the dying figures use. A
/// check may take 5 s: under load a command over SSH takes hundreds of milliseconds, and a
/// check cut shorter would fail a node that is only busy.
fn fast(config: ComputeConfig) -> ComputeConfig {
    ComputeConfig {
        health_interval: Duration::from_millis(100),
        health_timeout: Duration::from_secs(5),
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

/// `n` runs of `argv` on the one node of `cluster`, `concurrency` at a time: through its proxy, then (after
/// `between`) as `remote_command` tasks through a coordinator (2 workers sharing
/// `concurrency` slots), which stops `cluster` when it stops. The figures are set beside
/// `baseline` (runs/s), or beside the proxy's.
async fn commands(
    what: &str,
    cluster: &ComputeCluster,
    argv: &'static [&'static str],
    n: usize,
    concurrency: usize,
    baseline: Option<f64>,
    between: impl FnOnce(),
) -> Res<()> {
    // The cluster's one node.
    let node_id = cluster
        .list_nodes()
        .first()
        .map(|n| n.id.clone())
        .ok_or("a node")?;
    let node = cluster.node(&node_id).ok_or("a node")?;
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
    let base = baseline.unwrap_or(direct.0);
    line(&format!("{what}, through the proxy"), n, &direct, base);
    between();

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

/// Time from the start of `kill` until `node`, alone in a cluster of its own with `config`
/// and healthy before, is no longer available, and how long `kill` itself took (the
/// backend died somewhere within it).
async fn dying(
    what: &str,
    config: ComputeConfig,
    node: ComputeNode,
    kill: impl FnOnce(),
) -> Res<()> {
    let cluster = ComputeCluster::start_with("watch", config, RestartBudget::default()).await?;
    let id = node.id().to_string();
    cluster.add_node(node).await?;
    cluster
        .node(&id)
        .ok_or("node added")?
        .execute(command(&["true"]))
        .await
        .map_err(|e| e.to_string())?;
    // From a healthy node with no failure counted: a figure from one already failing
    // would say nothing.
    let settled = Instant::now();
    loop {
        let info = cluster.node(&id).ok_or("node added")?.info();
        if info.health.healthy && info.health.consecutive_failures == 0 {
            break;
        }
        if settled.elapsed() > Duration::from_secs(10) {
            println!("  {what:<44}  not measured: the node is failing already");
            cluster.stop().await;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let t0 = Instant::now();
    kill();
    let killed = t0.elapsed();
    while !cluster.get_available_nodes().is_empty() {
        if t0.elapsed() > Duration::from_secs(30) {
            println!("  {what:<44}  still healthy after 30 s");
            cluster.stop().await;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    println!(
        "  {what:<44}{:>7.0} ms from the kill's start (the kill took {:.0} ms; checks every \
         100 ms, unhealthy after 3 failures)",
        t0.elapsed().as_secs_f64() * 1e3,
        killed.as_secs_f64() * 1e3,
    );
    cluster.stop().await;
    Ok(())
}

/// The baseline for SSH: OpenSSH's own client running `true`, each command a new `ssh`
/// process multiplexed over one master connection (`ControlMaster`), so what is measured is
/// the server's cost per command plus a process start. `None` without an `ssh` client.
async fn openssh_client(server: &sshd::Sshd, n: usize, concurrency: usize) -> Res<Option<f64>> {
    let control = server.path("control.sock");
    let args: Vec<String> = vec![
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "ControlMaster=auto".into(),
        "-o".into(),
        format!("ControlPath={}", control.display()),
        "-o".into(),
        "ControlPersist=60".into(),
        "-o".into(),
        format!(
            "UserKnownHostsFile={}",
            server.path("known_hosts").display()
        ),
        "-i".into(),
        server.path("creds/id_ed25519").display().to_string(),
        "-p".into(),
        server.port.to_string(),
        format!("{}@127.0.0.1", server.user),
        "true".into(),
    ];
    let one = move |args: Vec<String>| -> Res<()> {
        let out = std::process::Command::new("ssh").args(&args).output()?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
        }
        Ok(())
    };
    // The master connection, opened once before the clock starts.
    if let Err(e) = one(args.clone()) {
        println!("  OpenSSH client baseline SKIPPED: {e}");
        return Ok(None);
    }
    let result = drive(n, concurrency, move |_| {
        let args = args.clone();
        async move { tokio::task::spawn_blocking(move || one(args)).await? }
    })
    .await?;
    line("OpenSSH's ssh, one master connection", n, &result, result.0);
    let _ = std::process::Command::new("ssh")
        .args(["-O", "exit", "-o"])
        .arg(format!("ControlPath={}", control.display()))
        .arg("127.0.0.1")
        .output();
    Ok(Some(result.0))
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
    // sshd allows 10 sessions per connection (MaxSessions); the backend keeps two of its
    // channels spare (a health check, stopping an abandoned command), and a closed
    // channel takes a moment to be freed on the server: 6 at once stays clear of it.
    let concurrency = 6;
    println!("ssh: {n} commands per run, {concurrency} channels at once on one connection");
    let config = fast(ComputeConfig {
        credentials_dir: Some(server.path("creds")),
        known_hosts: Some(server.path("known_hosts")),
        ..ComputeConfig::default()
    });
    let cluster =
        ComputeCluster::start_with("bench-ssh", config.clone(), RestartBudget::default()).await?;
    let node = ComputeNode::new("ssh", &server.endpoint())?
        .credential("id_ed25519")
        .max_concurrent(concurrency);
    cluster.add_node(node).await?;
    let baseline = openssh_client(&server, n, concurrency).await?;
    commands(
        "`true` over SSH",
        &cluster,
        &["true"],
        n,
        concurrency,
        baseline,
        || {
            println!(
                "  connections sshd serves after them: {} (one, reused)",
                server.connections()
            )
        },
    )
    .await?;
    let node = ComputeNode::new("ssh", &server.endpoint())?.credential("id_ed25519");
    dying("sshd killed -> node unhealthy", config, node, || {
        server.kill()
    })
    .await?;
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
    commands(
        "`true` exec'd in a container",
        &cluster,
        &["true"],
        exec_n,
        concurrency,
        None,
        || {},
    )
    .await?;

    let runs =
        ComputeCluster::start_with("bench-run", config.clone(), RestartBudget::default()).await?;
    let image = format!("docker://image/{}", docker::IMAGE);
    runs.add_node(ComputeNode::new(&run_id, &image)?.max_concurrent(concurrency))
        .await?;
    commands(
        "`true` in a new container",
        &runs,
        &["true"],
        run_n,
        concurrency,
        None,
        || {},
    )
    .await?;

    // The coordinators of the runs above stopped their clusters with them.
    let node = ComputeNode::new("exec", &format!("docker://{target}"))?;
    dying("container stopped -> node unhealthy", config, node, || {
        let _ = docker::docker(&["stop", "-t", "0", &target]);
    })
    .await
}
