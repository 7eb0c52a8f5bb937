//! Health failover through the whole runtime, for the SSH and Docker backends: two nodes of
//! the same kind and labels serve `remote_command` tasks; one backend dies mid-run (sshd
//! killed, or the container stopped). Its node is marked unhealthy after its failed checks,
//! receives nothing from then on, and the tasks it had are retried on the other node and
//! complete; started again, it becomes healthy again and serves tasks.
//!
//! Real servers: OpenSSH sshd started by the test (`support/sshd.rs`), this machine's Docker
//! engine (`support/compute_docker.rs`). Without them the tests say so loudly and pass;
//! under `CI=true` they fail.

#[path = "support/common.rs"]
mod common;
#[path = "support/compute_docker.rs"]
#[allow(dead_code)] // shared with the Docker backend tests; these use part of it
mod docker;
#[path = "support/net.rs"]
mod net;
#[path = "support/sshd.rs"]
#[allow(dead_code)] // shared with the SSH backend tests; these use part of it
mod sshd;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use wrangle::compute::{ComputeCluster, ComputeConfig, ComputeNode};
use wrangle::{Coordinator, RestartBudget, TaskId, TaskSpec};
use wrangle_actors::RemoteCommandOutput;

use common::{eventually, fixed_with_slots, handlers, secs, start};

/// Tasks submitted in each test.
const TASKS: usize = 40;

/// Health checks every 100 ms; unhealthy after 3 failures in a row.
fn fast(config: ComputeConfig) -> ComputeConfig {
    ComputeConfig {
        health_interval: Duration::from_millis(100),
        health_timeout: Duration::from_secs(2),
        unhealthy_after: 3,
        max_backoff: Duration::from_millis(200),
        ..config
    }
}

/// `n` tasks running `script` on a node labelled `pool=POOL`, each with retries to spare.
fn tasks(pool: &str, n: usize, script: &str) -> Vec<TaskSpec> {
    (0..n)
        .map(|i| {
            let input = json!({
                "labels": {"pool": pool},
                "argv": ["sh", "-c", format!("{script}; echo {i}")],
            });
            TaskSpec::new("remote_command", &input).unwrap().retries(20)
        })
        .collect()
}

/// A coordinator whose handlers send `remote_command` tasks to `compute`.
async fn coordinator(compute: &ComputeCluster) -> Coordinator {
    let registry = handlers();
    wrangle_actors::register_compute(&registry, compute);
    start(fixed_with_slots(2, 8), registry).await
}

/// Each task's output, in order; every one must complete.
async fn outputs(c: &Coordinator, ids: &[TaskId]) -> Vec<RemoteCommandOutput> {
    let mut out = Vec::new();
    for &id in ids {
        let outcome = c.wait_for(id, secs(90)).await.unwrap();
        out.push(outcome.into_result(id).unwrap().decode().unwrap());
    }
    out
}

/// A backend that can be made to die and started again.
trait Backend {
    /// Dies (mid-run).
    fn kill(&mut self);
    /// Starts again.
    fn revive(&mut self);
}

impl Backend for sshd::Sshd {
    fn kill(&mut self) {
        sshd::Sshd::kill(self);
    }

    fn revive(&mut self) {
        self.resume();
    }
}

/// A running container, stopped and started with the docker CLI.
struct Container(String);

impl Backend for Container {
    fn kill(&mut self) {
        docker::must(&["stop", "-t", "0", &self.0]);
    }

    fn revive(&mut self) {
        docker::must(&["start", &self.0]);
    }
}

/// The whole drill on the cluster's nodes `dying` and `other` (both labelled `pool=POOL`),
/// where `backend` is the one behind `dying`. Returns (tasks retried, tasks run on `other`).
async fn drill(pool: &str, compute: &ComputeCluster, backend: &mut impl Backend) -> (usize, usize) {
    let dying = compute.node("dying").unwrap();
    let other = compute.node("other").unwrap();
    let c = coordinator(compute).await;
    let ids = c
        .submit_batch(tasks(pool, TASKS, "sleep 0.3"))
        .await
        .unwrap();
    // Mid-run: the node whose backend dies now has answered some commands and is running
    // more.
    eventually("the dying node to answer 4 and run 2", secs(30), || async {
        let i = dying.info();
        i.requests >= 4 && i.in_flight >= 2
    })
    .await;
    let answered = dying.info().requests;
    backend.kill();
    eventually("the dying node marked unhealthy", secs(30), || async {
        !dying.info().health.healthy
    })
    .await;
    let info = dying.info();
    assert!(info.health.consecutive_failures >= 3, "{:?}", info.health);
    // From here until it is started again, it must stay unhealthy: a check that passed
    // (a connection that outlived its server) would hand it tasks again.
    let revived = Arc::new(AtomicBool::new(false));
    let watch = {
        let (dying, revived) = (dying.clone(), revived.clone());
        tokio::spawn(async move {
            loop {
                if dying.info().health.healthy {
                    revived.store(true, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };

    // What it had in flight ends (fails); after that it receives nothing. (A request is
    // counted when it ends; one that passed the health check is in flight or waiting.)
    eventually("the dying node's requests to end", secs(30), || async {
        let i = dying.info();
        i.in_flight == 0 && i.waiting == 0
    })
    .await;
    let sent = dying.info().requests;
    let out = outputs(&c, &ids).await;
    for (i, o) in out.iter().enumerate() {
        assert_eq!(o.exit_code, Some(0), "{o:?}");
        assert_eq!(o.stdout, format!("{i}\n"), "task {i} got its own answer");
    }
    let mut retried = 0;
    for &id in &ids {
        let t = c.get_task(id).await.unwrap();
        if t.attempts.len() > 1 {
            retried += 1;
            assert_eq!(t.attempts[0].outcome.as_deref(), Some("failed"), "{t:?}");
        }
    }
    // The two (at least) it was running when it died failed there and ran again.
    assert!(retried >= 2, "only {retried} tasks ran again");
    watch.abort();
    assert!(
        !revived.load(Ordering::SeqCst),
        "the dead node was healthy again"
    );
    assert_eq!(
        dying.info().requests,
        sent,
        "nothing went to the node once it was unhealthy"
    );
    let on_other = out.iter().filter(|o| o.node == "other").count();
    assert!(on_other >= retried, "{on_other} ran on the other node");
    // Before it died, every request it got was answered.
    assert!(
        TASKS - on_other >= answered as usize,
        "{on_other}, {answered}"
    );
    // The other node served throughout; on a loaded machine its own checks may time out
    // now and then (2 s), so it is asked to be healthy, not to have never wavered.
    eventually("the other node healthy", secs(30), || async {
        other.info().health.healthy
    })
    .await;

    backend.revive();
    eventually("the node healthy again", secs(30), || async {
        dying.info().health.healthy
    })
    .await;
    let pinned = json!({"node": "dying", "argv": ["echo", "back"]});
    let ids = c
        .submit_batch(vec![TaskSpec::new("remote_command", &pinned).unwrap()])
        .await
        .unwrap();
    let back = &outputs(&c, &ids).await[0];
    assert_eq!(
        (back.node.as_str(), back.stdout.as_str()),
        ("dying", "back\n")
    );
    c.stop(true).await.unwrap();
    (retried, on_other)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_sshd_fails_over_to_the_other_ssh_node_and_comes_back() {
    let Some(mut a) = sshd::Sshd::start() else {
        return;
    };
    let b = sshd::Sshd::start().unwrap();
    // One login key and one known_hosts file for both machines: b accepts a's key.
    std::fs::copy(a.path("creds/id_ed25519.pub"), b.path("authorized_keys")).unwrap();
    let both = a.path("known_hosts_both");
    let hosts = std::fs::read_to_string(a.path("known_hosts")).unwrap()
        + &std::fs::read_to_string(b.path("known_hosts")).unwrap();
    std::fs::write(&both, hosts).unwrap();
    let config = fast(ComputeConfig {
        credentials_dir: Some(a.path("creds")),
        known_hosts: Some(both),
        ..ComputeConfig::default()
    });
    let compute = ComputeCluster::start_with("failover-ssh", config, RestartBudget::default())
        .await
        .unwrap();
    for (id, server) in [("dying", &a), ("other", &b)] {
        let node = ComputeNode::new(id, &server.endpoint())
            .unwrap()
            .credential("id_ed25519")
            .label("pool", "ssh")
            .max_concurrent(4);
        compute.add_node(node).await.unwrap();
    }
    let (retried, on_other) = drill("ssh", &compute, &mut a).await;
    println!(
        "ssh: {retried} tasks ran again after the kill, {on_other} of {TASKS} on the other node"
    );
    compute.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_container_fails_over_to_the_other_docker_node_and_comes_back() {
    if !docker::ready() {
        return;
    }
    let (box_a, box_b) = (docker::uid("fo-a"), docker::uid("fo-b"));
    let _cleanup = docker::Cleanup {
        node_ids: Vec::new(),
        containers: vec![box_a.clone(), box_b.clone()],
    };
    docker::sleeper(&box_a);
    docker::sleeper(&box_b);
    let config = fast(ComputeConfig::default());
    let compute = ComputeCluster::start_with("failover-docker", config, RestartBudget::default())
        .await
        .unwrap();
    for (id, container) in [("dying", &box_a), ("other", &box_b)] {
        let node = ComputeNode::new(id, &format!("docker://{container}"))
            .unwrap()
            .label("pool", "docker")
            .max_concurrent(4);
        compute.add_node(node).await.unwrap();
    }
    let (retried, on_other) = drill("docker", &compute, &mut Container(box_a.clone())).await;
    println!(
        "docker: {retried} tasks ran again after the stop, {on_other} of {TASKS} on the other node"
    );
    compute.stop().await;
}
