//! Node groups with local processes: the coordinator (in this test's process) launches real
//! node programs when labelled tasks wait that only they can serve, the nodes join over
//! loopback TCP and run them, then go idle, are drained and exit; no process is left.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wrangle::launch::{NodeGroupConfig, ProcessLauncher};
use wrangle::{ClusterConfig, Coordinator, CoordinatorConfig, StoreConfig, TaskSpec};

#[path = "support/launch.rs"]
mod launch;
#[path = "support/net.rs"]
mod net;
use launch::{alive, run_echoes, until};
// Only `example_binary` is used here.
#[allow(dead_code)]
#[path = "support/programs.rs"]
mod programs;

fn group() -> NodeGroupConfig {
    NodeGroupConfig {
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
        ..NodeGroupConfig::new("gpu")
    }
}

async fn coordinator(dir: &std::path::Path, launcher: Arc<ProcessLauncher>) -> Coordinator {
    let listen = format!("127.0.0.1:{}", net::free_port()).parse().unwrap();
    let config = CoordinatorConfig {
        cluster: Some(ClusterConfig::new(listen, "launch-test")),
        store: Some(StoreConfig::sqlite(dir.join("launch.db"))),
        autoscale_interval: Duration::from_millis(200),
        ..CoordinatorConfig::default()
    };
    Coordinator::builder()
        .config(config)
        .node_group(group(), launcher)
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_labelled_tasks_launch_nodes_that_run_them_then_exit_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let node = programs::example_binary("node");
    let launcher = Arc::new(
        ProcessLauncher::new(
            node,
            ["--workers", "2", "--slots", "2", "--heartbeat-ms", "200"]
                .map(String::from)
                .to_vec(),
        )
        .log_dir(dir.path()),
    );
    let c = coordinator(dir.path(), launcher).await;
    let groups = c.node_groups().expect("the coordinator has node groups");
    assert!(
        c.task_types().iter().any(|t| &**t == "echo"),
        "the group's task type is accepted with no node online"
    );
    // No local handler serves `echo`: only the group can.
    let mut pids = std::collections::BTreeSet::new();
    run_echoes(&c, 40, "gpu=a100", Duration::from_secs(60), || {
        for g in groups.status() {
            pids.extend(g.members.iter().filter_map(|m| m.resource.clone()));
        }
    })
    .await;
    assert!(!pids.is_empty(), "a node was launched");
    // Idle past 1.5 s: drained, terminated, and the process is gone.
    until("the group to have no node", Duration::from_secs(30), || {
        groups.status()[0].members.is_empty()
    })
    .await;
    for pid in &pids {
        let pid: u32 = pid.parse().unwrap();
        assert!(!alive(pid), "node process {pid} is still running");
    }
    let actions: Vec<String> = groups.history().into_iter().map(|e| e.action).collect();
    for expected in [
        "launch",
        "launched",
        "joined",
        "drain",
        "terminate",
        "terminated",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} missing from {actions:?}"
        );
    }
    assert!(
        !actions.iter().any(|a| a == "launch_failed" || a == "lost"),
        "{actions:?}"
    );
    // Every decision is in the store too (written off the actor's path, a moment later).
    let deadline = Instant::now() + Duration::from_secs(10);
    let stored = loop {
        let stored = c.store().unwrap().scaling_events(1_000).await.unwrap();
        if stored.len() == groups.history().len() || Instant::now() > deadline {
            break stored;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(stored.len(), groups.history().len());
    assert_eq!(stored.last().unwrap().action, "terminated");

    // The same decisions through the HTTP API: `/scale/history` beside the pool's, and the
    // group's counters on `/metrics`, each equal to the events it counts.
    let history = groups.history();
    let app = wrangle::api::router(c.clone(), wrangle::api::ApiConfig::default());
    let entries: Vec<serde_json::Value> =
        serde_json::from_str(&get(&app, "/scale/history").await).unwrap();
    let node_actions: Vec<&str> = entries
        .iter()
        .filter(|e| e["kind"] == "node")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    let actions: Vec<&str> = history.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(node_actions, actions);
    assert!(
        entries
            .iter()
            .all(|e| e["kind"] == "node" || e["kind"] == "pool"),
        "{entries:?}"
    );
    let text = get(&app, "/metrics").await;
    let metric = |name: &str| -> f64 {
        let prefix = format!("{name}{{group=\"gpu\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .parse()
            .unwrap()
    };
    let events = |action: &str| actions.iter().filter(|a| **a == action).count() as f64;
    assert_eq!(
        metric("wrangle_node_group_launches_total"),
        events("launch")
    );
    assert_eq!(metric("wrangle_node_group_launch_failures_total"), 0.0);
    assert_eq!(metric("wrangle_node_group_never_joined_total"), 0.0);
    assert_eq!(metric("wrangle_node_group_lost_total"), 0.0);
    assert_eq!(
        metric("wrangle_node_group_terminations_total"),
        events("terminate")
    );
    let drains = metric("wrangle_node_group_drains_total");
    assert_eq!(drains, events("drain"));
    assert_eq!(
        metric("wrangle_node_group_undrains_total"),
        events("undrain")
    );
    // Every node is gone and none was lost: each drain was undone or ended in its node's
    // termination, and each of those was timed.
    let drained = metric("wrangle_node_group_drain_seconds_count");
    assert!(drained >= 1.0, "{text}");
    assert_eq!(drained, drains - events("undrain"));
    let took = metric("wrangle_node_group_drain_seconds_sum");
    assert!(
        took > 0.0 && took < 60.0 * drained,
        "{took} s for {drained} drain(s)"
    );
    for state in ["launching", "joining", "running", "draining", "stopping"] {
        let line = format!("wrangle_node_group_nodes{{group=\"gpu\",state=\"{state}\"}} 0");
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }
    c.stop(true).await.unwrap();
}

/// The body of `GET uri` on the router.
async fn get(app: &axum::Router, uri: &str) -> String {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let req = axum::http::Request::get(uri)
        .body(axum::body::Body::empty())
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), axum::http::StatusCode::OK, "GET {uri}");
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_that_fails_backs_off_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let launcher = Arc::new(ProcessLauncher::new(
        dir.path().join("no-such-program"),
        Vec::new(),
    ));
    let c = coordinator(dir.path(), launcher).await;
    let groups = c.node_groups().unwrap();
    let spec = TaskSpec::new("echo", &1).unwrap().label("gpu");
    let task = c.submit_async(spec).await.unwrap();
    until("two failed launches", Duration::from_secs(20), || {
        groups.status()[0].counts.launch_failures >= 2
    })
    .await;
    let status = groups.status().remove(0);
    let error = status.last_error.unwrap();
    assert!(error.contains("no-such-program"), "{error}");
    assert!(status.backoff_ms > 0 || status.failures >= 2);
    // Backoff: 2 s, then 4 s; within 3 s of the second failure there is no third.
    let before = groups.status()[0].counts.launches;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        groups.status()[0].counts.launches,
        before,
        "no launch during the backoff"
    );
    // The task waits, intact.
    assert_eq!(
        c.get_task(task.id).await.unwrap().status,
        wrangle::TaskStatus::Queued
    );
    c.stop(false).await.unwrap();
}
