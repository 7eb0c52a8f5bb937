//! Node groups under faults, with real processes: a node SIGKILLed under `min_nodes` is
//! replaced and its tasks finish on the replacement; a launched program that never joins
//! is terminated after `join_timeout`, counted, and backed off, with nothing left running.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wrangle::launch::{MemberState, NodeGroupConfig, NodeGroups, ProcessLauncher};
use wrangle::{ClusterConfig, Coordinator, CoordinatorConfig, TaskSpec, TaskStatus};

#[path = "support/launch.rs"]
mod launch;
#[path = "support/net.rs"]
mod net;
use launch::{alive, until};
// Only `example_binary` is used here.
#[allow(dead_code)]
#[path = "support/programs.rs"]
mod programs;

async fn coordinator(
    group: NodeGroupConfig,
    launcher: ProcessLauncher,
    node_timeout: Duration,
) -> Coordinator {
    let listen = format!("127.0.0.1:{}", net::free_port()).parse().unwrap();
    let mut cluster = ClusterConfig::new(listen, "launch-faults-test");
    cluster.node_timeout = node_timeout;
    let config = CoordinatorConfig {
        cluster: Some(cluster),
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

fn running(groups: &NodeGroups) -> Vec<(String, u32)> {
    groups.status()[0]
        .members
        .iter()
        .filter(|m| m.state == MemberState::Running)
        .filter_map(|m| Some((m.node.clone(), m.resource.as_ref()?.parse().ok()?)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_min_nodes_is_replaced_and_its_tasks_finish() {
    let dir = tempfile::tempdir().unwrap();
    let launcher = ProcessLauncher::new(
        programs::example_binary("node"),
        ["--workers", "2", "--slots", "2", "--heartbeat-ms", "200"]
            .map(String::from)
            .to_vec(),
    )
    .log_dir(dir.path());
    let group = NodeGroupConfig {
        labels: vec!["gpu".into()],
        task_types: vec!["sleep".into()],
        min_nodes: 1,
        max_nodes: 1,
        join_timeout: Duration::from_secs(30),
        stop_grace: Duration::from_secs(5),
        ..NodeGroupConfig::new("pinned")
    };
    let c = coordinator(group, launcher, Duration::from_millis(1_500)).await;
    let groups = c.node_groups().unwrap();
    until("the min_nodes node to run", Duration::from_secs(30), || {
        running(&groups).len() == 1
    })
    .await;
    let (first, pid) = running(&groups).remove(0);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let spec = TaskSpec::new("sleep", &serde_json::json!({ "ms": 1_500 }))
            .unwrap()
            .label("gpu");
        tasks.push(c.submit_async(spec).await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.get_task(tasks[0].id).await.unwrap().status != TaskStatus::Running {
        assert!(Instant::now() < deadline, "the first task never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rustix::process::kill_process_group(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    until("a replacement to run", Duration::from_secs(30), || {
        running(&groups).iter().any(|(node, _)| *node != first)
    })
    .await;
    for t in tasks {
        let slept: u64 = t.result(Duration::from_secs(60)).await.unwrap();
        assert_eq!(slept, 1_500);
    }
    assert!(!alive(pid));
    let status = groups.status().remove(0);
    assert_eq!(status.counts.lost, 1, "{:?}", status.counts);
    assert!(
        status.members.len() <= 1,
        "max_nodes holds: {:?}",
        status.members
    );
    c.stop(true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_never_joins_is_terminated_after_join_timeout_and_backed_off() {
    // A program that starts fine but never joins.
    let launcher = ProcessLauncher::new("sleep", vec!["300".into()]);
    let group = NodeGroupConfig {
        task_types: vec!["echo".into()],
        labels: vec!["never".into()],
        min_nodes: 0,
        max_nodes: 1,
        join_timeout: Duration::from_secs(1),
        stop_grace: Duration::from_secs(2),
        scale_up_cooldown: Duration::from_millis(100),
        ..NodeGroupConfig::new("silent")
    };
    let c = coordinator(group, launcher, Duration::from_millis(1_500)).await;
    let groups = c.node_groups().unwrap();
    let task = c
        .submit_async(TaskSpec::new("echo", &1).unwrap().label("never"))
        .await
        .unwrap();
    let mut pids = std::collections::BTreeSet::new();
    until("a node to be given up", Duration::from_secs(20), || {
        let status = groups.status().remove(0);
        pids.extend(
            status
                .members
                .iter()
                .filter_map(|m| m.resource.as_ref()?.parse::<u32>().ok()),
        );
        status.counts.terminations >= 1 && status.counts.never_joined >= 1
    })
    .await;
    assert!(!pids.is_empty());
    until(
        "the silent processes to end",
        Duration::from_secs(10),
        || pids.iter().all(|p| !alive(*p)),
    )
    .await;
    let status = groups.status().remove(0);
    let error = status.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("join"),
        "the error says why: {error}; {:?}",
        groups.history()
    );
    assert!(status.failures >= 1 && status.backoff_ms > 0, "{status:?}");
    // Backed off: within the first 2 s of backoff no second launch.
    let launches = status.counts.launches;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(
        groups.status()[0].counts.launches,
        launches,
        "no launch during the backoff"
    );
    assert_eq!(
        c.get_task(task.id).await.unwrap().status,
        TaskStatus::Queued,
        "the task waits, intact"
    );
    c.stop(false).await.unwrap();
}
