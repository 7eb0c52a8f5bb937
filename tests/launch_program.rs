//! Node groups as a user sets them up: the coordinator program started with a
//! `wrangle.toml` holding a `[[node_groups]]` entry (a process launcher running the node
//! program), tasks submitted over HTTP that only the group's nodes can serve, the group and
//! its decisions read back from `GET /scale/groups`, and a SIGTERM to the coordinator that
//! stops the nodes it launched: no node process is left.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[path = "support/launch.rs"]
mod launch;
#[path = "support/net.rs"]
mod net;
use launch::processes_of;
#[path = "support/programs.rs"]
mod programs;
use programs::{example_binary, Program};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_groups_from_the_settings_file_launch_nodes_that_serve_http_submits() {
    let dir = tempfile::tempdir().unwrap();
    let group = format!("gpu{:06x}", fastrand::u32(..0xff_ffff));
    let (port, cluster_port) = (net::free_port(), net::free_port());
    let node = example_binary("node");
    std::fs::write(
        dir.path().join("wrangle.toml"),
        format!(
            r#"
bind = "127.0.0.1:{port}"
database_url = "memory"
cluster_listen = "127.0.0.1:{cluster_port}"
cookie = "program-test-cookie"

[[node_groups]]
name = "{group}"
labels = ["gpu=a100"]
task_types = ["echo"]
max_nodes = 1
slots_per_node = 4
idle_timeout_secs = 60
scale_up_cooldown_secs = 0.5
launcher = {{ kind = "process", program = "{node}", args = ["--workers", "1", "--slots", "4", "--heartbeat-ms", "200"], log_dir = "{logs}" }}
"#,
            node = node.display(),
            logs = dir.path().display(),
        ),
    )
    .unwrap();
    let child = Command::new(example_binary("coordinator"))
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .env_remove("WRANGLE_DATABASE_URL")
        .env_remove("WRANGLE_TOKEN")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut program = Program(child);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        if let Some(status) = program.0.try_wait().unwrap() {
            panic!("the coordinator exited ({status}) before it served");
        }
        assert!(Instant::now() < deadline, "the coordinator never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tasks: Vec<Value> = (0..10)
        .map(|i| json!({"task_type": "echo", "payload": {"n": i}, "labels": ["gpu=a100"]}))
        .collect();
    let r = http
        .post(format!("{base}/tasks"))
        .json(&tasks)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let body: Value = r.json().await.unwrap();
    for t in body["tasks"].as_array().unwrap() {
        let id = t["id"].as_str().unwrap();
        let r = http
            .get(format!("{base}/tasks/{id}/wait?timeout=60s"))
            .send()
            .await
            .unwrap();
        let task: Value = r.json().await.unwrap();
        assert_eq!(task["status"], "completed", "{task}");
    }
    let running = processes_of(&group);
    assert_eq!(running.len(), 1, "one node process serves the group");
    // The group's tick records the join (and the API shows it) shortly after.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let view: Value = http
            .get(format!("{base}/scale/groups"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(view["groups"][0]["name"], group.as_str(), "{view}");
        assert_eq!(view["groups"][0]["launcher"], "process", "{view}");
        let actions: Vec<&str> = view["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["action"].as_str())
            .collect();
        assert!(actions.contains(&"launched"), "{actions:?}");
        if actions.contains(&"joined") {
            break;
        }
        assert!(Instant::now() < deadline, "no join recorded: {actions:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A graceful stop of the coordinator stops the nodes it launched.
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !processes_of(&group).is_empty() {
        assert!(
            Instant::now() < deadline,
            "node processes outlived the coordinator: {:?}",
            processes_of(&group)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
