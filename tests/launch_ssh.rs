//! Node groups over SSH: the coordinator (in this test's process) starts the node program
//! on 127.0.0.1 through a real OpenSSH server started by the test (`support/sshd.rs`),
//! reached as a compute node with key login and a checked host key. The nodes join over
//! loopback TCP, run the labelled tasks only they can serve, go idle, are drained and
//! stopped; no node process is left (found by the group in their environment). Under
//! `CI=true` a missing sshd fails the test.

use std::sync::Arc;
use std::time::Duration;

use wrangle::compute::{ComputeCluster, ComputeConfig, ComputeNode};
use wrangle::launch::{Launcher, NodeGroupConfig, SshLauncher};
use wrangle::{ClusterConfig, Coordinator, CoordinatorConfig, RestartBudget};

#[path = "support/launch.rs"]
mod launch;
#[path = "support/net.rs"]
mod net;
use launch::{processes_of, run_echoes, until};
// Only `example_binary` is used here.
#[allow(dead_code)]
#[path = "support/programs.rs"]
mod programs;
#[allow(dead_code)]
#[path = "support/sshd.rs"]
mod sshd;

/// A compute cluster with one SSH host, `h1`: the test's sshd, logged in with its key.
async fn hosts(sshd: &sshd::Sshd) -> ComputeCluster {
    let compute = ComputeCluster::start_with(
        "hosts",
        ComputeConfig {
            credentials_dir: Some(sshd.path("creds")),
            known_hosts: Some(sshd.path("known_hosts")),
            ..ComputeConfig::default()
        },
        RestartBudget::default(),
    )
    .await
    .unwrap();
    compute
        .add_node(
            ComputeNode::new("h1", &sshd.endpoint())
                .unwrap()
                .credential("id_ed25519")
                .timeout(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    compute
}

/// Removes the group's files on the host however the test ends.
struct HostFiles(String);

impl Drop for HostFiles {
    fn drop(&mut self) {
        if let Some(home) = std::env::var_os("HOME") {
            let dir = std::path::Path::new(&home)
                .join(".wrangle/nodes")
                .join(&self.0);
            let _ = std::fs::remove_dir_all(dir);
        }
        for pid in processes_of(&self.0) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_started_over_ssh_join_run_the_tasks_and_are_stopped_when_idle() {
    let Some(sshd) = sshd::Sshd::start() else {
        return;
    };
    let group = format!("ssh{:08x}", fastrand::u32(..));
    let _files = HostFiles(group.clone());
    let compute = hosts(&sshd).await;
    let node = programs::example_binary("node");
    let launcher = SshLauncher::new(
        compute.clone(),
        vec!["h1".into()],
        node.to_str().unwrap(),
        ["--workers", "2", "--slots", "2", "--heartbeat-ms", "200"]
            .map(String::from)
            .to_vec(),
    );
    let listen = format!("127.0.0.1:{}", net::free_port()).parse().unwrap();
    let config = CoordinatorConfig {
        cluster: Some(ClusterConfig::new(listen, "launch-ssh-test")),
        autoscale_interval: Duration::from_millis(200),
        ..CoordinatorConfig::default()
    };
    let group_config = NodeGroupConfig {
        labels: vec!["gpu=a100".into()],
        task_types: vec!["echo".into()],
        min_nodes: 0,
        max_nodes: 2,
        slots_per_node: 4,
        idle_timeout: Duration::from_millis(1_500),
        join_timeout: Duration::from_secs(30),
        stop_grace: Duration::from_secs(10),
        scale_up_cooldown: Duration::from_millis(500),
        scale_down_cooldown: Duration::from_millis(500),
        ..NodeGroupConfig::new(group.clone())
    };
    let c = Coordinator::builder()
        .config(config)
        .node_group(group_config, Arc::new(launcher))
        .start()
        .await
        .unwrap();
    let groups = c.node_groups().unwrap();
    let mut seen = std::collections::BTreeSet::new();
    run_echoes(&c, 20, "gpu=a100", Duration::from_secs(90), || {
        seen.extend(processes_of(&group))
    })
    .await;
    assert!(!seen.is_empty(), "a node process ran on the host");
    for pid in &seen {
        // Started through sshd: the node's environment holds what the launcher sent.
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let env = String::from_utf8_lossy(&env);
        assert!(env.contains("WRANGLE_COOKIE=launch-ssh-test"), "{env}");
        // ... and the cookie is on no command line.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&cmdline).contains("launch-ssh-test"));
    }
    until("the group to have no node", Duration::from_secs(40), || {
        groups.status()[0].members.is_empty()
    })
    .await;
    until("the node processes to end", Duration::from_secs(10), || {
        processes_of(&group).is_empty()
    })
    .await;
    let actions: Vec<String> = groups.history().into_iter().map(|e| e.action).collect();
    for expected in ["launch", "launched", "joined", "drain", "terminated"] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} missing from {actions:?}"
        );
    }
    assert!(!actions.iter().any(|a| a == "launch_failed"), "{actions:?}");
    c.stop(true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ssh_launcher_lists_only_its_live_nodes_and_reports_a_dead_one_gone() {
    let Some(sshd) = sshd::Sshd::start() else {
        return;
    };
    let group = format!("ssh{:08x}", fastrand::u32(..));
    let _files = HostFiles(group.clone());
    let compute = hosts(&sshd).await;
    // A stand-in node program: sleeps until it is stopped.
    let launcher = SshLauncher::new(
        compute.clone(),
        vec!["h1".into()],
        "sleep",
        vec!["300".into()],
    );
    let launch = |name: &str| wrangle::launch::NodeLaunch {
        name: format!("{group}-{name}"),
        group: group.clone(),
        env: [("WRANGLE_NODE_NAME".to_string(), format!("{group}-{name}"))].into(),
        resource_labels: Default::default(),
    };
    let a = launcher.launch(launch("0000000a")).await.unwrap();
    let b = launcher.launch(launch("0000000b")).await.unwrap();
    assert_eq!(a, format!("{group}-0000000a@h1"));
    let mut listed: Vec<String> = launcher
        .list(group.clone())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    listed.sort();
    assert_eq!(listed, vec![a.clone(), b.clone()]);
    assert_eq!(processes_of(&group).len(), 2);
    // One dies on its own: it is listed no more.
    let pids = processes_of(&group);
    let dead = pids
        .iter()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|e| String::from_utf8_lossy(&e).contains(&format!("{group}-0000000b")))
        })
        .copied()
        .unwrap();
    std::process::Command::new("kill")
        .args(["-KILL", &dead.to_string()])
        .status()
        .unwrap();
    until("the killed one to end", Duration::from_secs(10), || {
        !sshd::alive(dead)
    })
    .await;
    let listed: Vec<String> = launcher
        .list(group.clone())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, vec![a.clone()]);
    // Another group's listing does not see this one's nodes.
    assert!(launcher.list("other".into()).await.unwrap().is_empty());
    // Terminate stops it (SIGTERM ends `sleep`), and terminating it again is not an error.
    launcher
        .terminate(a.clone(), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(processes_of(&group).is_empty());
    launcher.terminate(a, Duration::from_secs(5)).await.unwrap();
    assert!(launcher.list(group.clone()).await.unwrap().is_empty());
    compute.stop().await;
}
