//! Node groups with Docker containers on this machine's engine: the coordinator (in this
//! test's process) launches node containers of an image built for the test without a
//! registry (`support/node_image.rs`), on the host's network, when labelled tasks wait that
//! only they can serve; idle ones are drained and removed, and a container killed under
//! `min_nodes` is replaced while its tasks finish elsewhere. Afterwards no container with
//! the test's group label remains (`docker ps -a`). With `CI=true` the tests fail when
//! Docker is unreachable; elsewhere they say so and pass without running.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wrangle::launch::{DockerLauncher, MemberState, NodeGroupConfig, NodeGroups};
use wrangle::{ClusterConfig, Coordinator, CoordinatorConfig, StoreConfig, TaskSpec, TaskStatus};

#[path = "support/launch.rs"]
mod launch;
#[path = "support/net.rs"]
mod net;
use launch::{run_echoes, until};
use node_image::docker;
#[path = "support/node_image.rs"]
mod node_image;
#[allow(dead_code)] // only `example_binary` is used
#[path = "support/programs.rs"]
mod programs;

/// False (after saying why) when the engine is unreachable outside CI.
fn engine_here() -> bool {
    match docker(&["info", "--format", "{{.ServerVersion}}"]) {
        Ok(_) => true,
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but the Docker engine is unreachable: {e}")
        }
        Err(e) => {
            eprintln!("Docker engine unreachable, Docker launcher test not run: {e}");
            false
        }
    }
}

/// The containers of group `group`, running or not.
fn containers_of(group: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=wrangle.group={group}"),
    ])
    .unwrap()
    .lines()
    .map(String::from)
    .collect()
}

/// A test's image and group; removes the group's containers and the image however the
/// test ends.
struct Rig {
    image: String,
    group: String,
    dir: tempfile::TempDir,
}

impl Rig {
    fn new() -> Self {
        let run = format!("{:08x}", fastrand::u32(..));
        let dir = tempfile::tempdir().unwrap();
        let image = format!("wrangle-launch-test:{run}");
        node_image::build(&image, dir.path(), &["node"], Some("/bin/node"));
        Self {
            image,
            group: format!("dk{run}"),
            dir,
        }
    }

    fn group(&self, min_nodes: usize, max_nodes: usize) -> NodeGroupConfig {
        NodeGroupConfig {
            labels: vec!["gpu=a100".into()],
            task_types: vec!["echo".into(), "sleep".into()],
            min_nodes,
            max_nodes,
            slots_per_node: 4,
            idle_timeout: Duration::from_millis(1_500),
            join_timeout: Duration::from_secs(30),
            stop_grace: Duration::from_secs(10),
            scale_up_cooldown: Duration::from_millis(500),
            scale_down_cooldown: Duration::from_millis(500),
            ..NodeGroupConfig::new(self.group.clone())
        }
    }

    async fn coordinator(&self, group: NodeGroupConfig, worker_timeout: Duration) -> Coordinator {
        let launcher = DockerLauncher::new(
            self.image.clone(),
            ["--workers", "2", "--slots", "2", "--heartbeat-ms", "200"]
                .map(String::from)
                .to_vec(),
        );
        let listen = format!("127.0.0.1:{}", net::free_port()).parse().unwrap();
        let mut cluster = ClusterConfig::new(listen, "launch-docker-test");
        cluster.node_timeout = worker_timeout;
        let config = CoordinatorConfig {
            cluster: Some(cluster),
            store: Some(StoreConfig::sqlite(self.dir.path().join("launch.db"))),
            autoscale_interval: Duration::from_millis(200),
            ..CoordinatorConfig::default()
        };
        Coordinator::builder()
            .config(config)
            .node_group(group, Arc::new(launcher))
            .start()
            .await
            .unwrap()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for c in containers_of(&self.group) {
            let _ = docker(&["rm", "-f", &c]);
        }
        let _ = docker(&["rmi", "-f", &self.image]);
    }
}

fn running_nodes(groups: &NodeGroups) -> Vec<(String, String)> {
    groups.status()[0]
        .members
        .iter()
        .filter(|m| m.state == MemberState::Running)
        .filter_map(|m| Some((m.node.clone(), m.resource.clone()?)))
        .collect()
}

fn actions(groups: &NodeGroups) -> Vec<String> {
    groups.history().into_iter().map(|e| e.action).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_labelled_tasks_launch_containers_that_run_them_then_are_removed() {
    if !engine_here() {
        return;
    }
    let rig = Rig::new();
    let c = rig
        .coordinator(rig.group(0, 2), Duration::from_secs(5))
        .await;
    let groups = c.node_groups().unwrap();
    assert!(containers_of(&rig.group).is_empty());
    let mut launched = std::collections::BTreeSet::new();
    run_echoes(&c, 20, "gpu=a100", Duration::from_secs(90), || {
        for g in groups.status() {
            launched.extend(g.members.iter().filter_map(|m| m.resource.clone()));
        }
    })
    .await;
    assert!(!launched.is_empty(), "a container ran the tasks");
    // Each container the group ran carries its labels.
    for id in &launched {
        let labels = docker(&["inspect", "-f", "{{json .Config.Labels}}", id]).unwrap();
        assert!(labels.contains(&format!("\"wrangle.group\":\"{}\"", rig.group)));
        // The cookie is in the environment, never on the command line.
        let args = docker(&["inspect", "-f", "{{json .Args}}", id]).unwrap();
        assert!(
            !args.contains("launch-docker-test"),
            "cookie in argv: {args}"
        );
    }
    until("the group to have no node", Duration::from_secs(40), || {
        groups.status()[0].members.is_empty()
    })
    .await;
    assert_eq!(containers_of(&rig.group), Vec::<String>::new());
    let actions = actions(&groups);
    for expected in ["launch", "launched", "joined", "drain", "terminated"] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} missing from {actions:?}"
        );
    }
    assert!(
        !actions.iter().any(|a| a == "launch_failed" || a == "lost"),
        "{actions:?}"
    );
    c.stop(true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_container_below_min_nodes_is_replaced_and_its_tasks_finish() {
    if !engine_here() {
        return;
    }
    let rig = Rig::new();
    let c = rig
        .coordinator(rig.group(1, 1), Duration::from_millis(1_500))
        .await;
    let groups = c.node_groups().unwrap();
    // min_nodes = 1: a node is launched with nothing waiting.
    until("the first node to run", Duration::from_secs(60), || {
        running_nodes(&groups).len() == 1
    })
    .await;
    let (first, container) = running_nodes(&groups).remove(0);
    let mut ids = Vec::new();
    for _ in 0..4 {
        let spec = TaskSpec::new("sleep", &serde_json::json!({ "ms": 2_000 }))
            .unwrap()
            .label("gpu");
        ids.push(c.submit_async(spec).await.unwrap());
    }
    // Killed while it runs them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let running = c.get_task(ids[0].id).await.unwrap().status == TaskStatus::Running;
        if running {
            break;
        }
        assert!(Instant::now() < deadline, "the first task never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    docker(&["kill", &container]).unwrap();
    until("a replacement node to run", Duration::from_secs(60), || {
        running_nodes(&groups)
            .iter()
            .any(|(node, _)| *node != first)
    })
    .await;
    for h in ids {
        let slept: u64 = h.result(Duration::from_secs(90)).await.unwrap();
        assert_eq!(slept, 2_000);
    }
    let actions = actions(&groups);
    assert!(actions.iter().any(|a| a == "lost"), "{actions:?}");
    // The killed container was reaped: only the replacement remains.
    let left = containers_of(&rig.group);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(!container.starts_with(&left[0]), "the killed one is gone");
    c.stop(true).await.unwrap();
    until(
        "stop to remove the last container",
        Duration::from_secs(20),
        || containers_of(&rig.group).is_empty(),
    )
    .await;
}
