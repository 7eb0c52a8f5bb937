//! Across machines, on loopback: the coordinator program and node programs as separate OS
//! processes joined over TCP (ractor_cluster), driven through the coordinator's HTTP API.
//! Nodes run `journal` tasks, which only nodes serve; each execution is journaled with its
//! attempt and node, so executions can be counted.

use std::collections::HashSet;
use std::time::Duration;

#[path = "support/net.rs"]
mod net;
#[path = "support/programs.rs"]
mod programs;
#[path = "support/cluster.rs"]
mod rig;

use rig::{
    all_completed, certificates, executions, intruder, node_is, submit, until, Api, Coordinator,
    RawFrame, COOKIE,
};
use serde_json::json;

const JOIN: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelled_tasks_land_on_matching_nodes_and_a_killed_node_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let c = Coordinator::start(dir.path());
    let gpu = c.node("gpu-1", "gpu=a100,region=eu", COOKIE);
    let mut cpu = c.node("cpu-1", "region=us", COOKIE);
    until("both nodes online", JOIN, || async {
        node_is(&http, &c, "gpu-1", "online").await && node_is(&http, &c, "cpu-1", "online").await
    })
    .await;

    // Labels route: `gpu` only to gpu-1, `region=us` only to cpu-1.
    let on_gpu = submit(&http, &c, 20, 1, &["gpu"]).await;
    let on_us = submit(&http, &c, 20, 1, &["region=us"]).await;
    all_completed(&http, &c, &on_gpu, JOIN).await;
    all_completed(&http, &c, &on_us, JOIN).await;
    let runs = executions(&[&gpu.journal, &cpu.journal]);
    for id in &on_gpu {
        assert_eq!(runs[id], vec![(1, "gpu-1".to_string())], "{id}");
    }
    for id in &on_us {
        assert_eq!(runs[id], vec![(1, "cpu-1".to_string())], "{id}");
    }

    // Unlabelled work spreads over both; cpu-1 is killed once it has run some of it.
    let before = executions(&[&gpu.journal, &cpu.journal]);
    let ids = submit(&http, &c, 300, 40, &[]).await;
    until("cpu-1 to run 30 of the batch", JOIN, || async {
        executions(&[&cpu.journal])
            .keys()
            .filter(|k| !before.contains_key(*k))
            .count()
            >= 30
    })
    .await;
    cpu.kill();
    let killed_at = std::time::Instant::now();
    let cpu_runs: HashSet<String> = executions(&[&cpu.journal]).into_keys().collect();
    all_completed(&http, &c, &ids, Duration::from_secs(60)).await;
    println!(
        "after the kill, the last tasks finished within {:?}",
        killed_at.elapsed()
    );
    until("cpu-1 listed as lost", JOIN, || {
        node_is(&http, &c, "cpu-1", "lost")
    })
    .await;

    let runs = executions(&[&gpu.journal, &cpu.journal]);
    let mut twice = 0;
    for id in &ids {
        let r = runs.get(id).unwrap_or_else(|| panic!("{id} never ran"));
        if r.len() > 1 {
            twice += 1;
            // Only a task cpu-1 had started could run again, and then once more at most.
            assert!(cpu_runs.contains(id), "{id} ran twice without cpu-1: {r:?}");
            assert_eq!(r.len(), 2, "{id}: {r:?}");
            assert_eq!(r[0].1, "cpu-1", "{id}: {r:?}");
        }
    }
    // cpu-1 had 2 workers x 4 slots: at most 8 attempts were in flight on it.
    assert!(twice <= 8, "{twice} tasks ran twice; cpu-1 had 8 slots");
    println!(
        "killed node: {} of 300 tasks ran on it, {twice} were in flight and ran again elsewhere",
        ids.iter().filter(|id| cpu_runs.contains(*id)).count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_again_by_themselves_after_the_coordinator_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut c = Coordinator::start(dir.path());
    let node = c.node("n-1", "zone=a", COOKIE);
    until("n-1 online", JOIN, || node_is(&http, &c, "n-1", "online")).await;
    let first = submit(&http, &c, 5, 1, &["zone=a"]).await;
    all_completed(&http, &c, &first, JOIN).await;

    // kill -9 the coordinator, start it again on the same ports and database.
    let (http_port, cluster_port) = (c.http, c.cluster);
    c.process.0.kill().unwrap();
    c.process.0.wait().unwrap();
    drop(c);
    let c = Coordinator::start_on(dir.path(), http_port, cluster_port);
    until("n-1 to join the new coordinator", JOIN, || {
        node_is(&http, &c, "n-1", "online")
    })
    .await;
    let second = submit(&http, &c, 5, 1, &["zone=a"]).await;
    all_completed(&http, &c, &second, JOIN).await;
    let runs = executions(&[&node.journal]);
    // A completion is committed a few milliseconds after it is reported, so a first-batch
    // task whose completion was not yet committed at the kill may run once more.
    for id in &first {
        assert!(runs[id].len() <= 2, "{id}: {:?}", runs[id]);
    }
    for id in &second {
        assert_eq!(runs[id].len(), 1, "{id}: {:?}", runs[id]);
    }
    let log = std::fs::read_to_string(&node.log).unwrap();
    assert!(log.contains("lost the coordinator"), "{log}");
    assert_eq!(log.matches("joined the coordinator").count(), 2, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_wrong_cookie_is_refused_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let c = Coordinator::start(dir.path());
    let good = c.node("good", "zone=a", COOKIE);
    let bad = c.node("intruder", "secret-hardware", "not-the-cookie");
    until("the good node online", JOIN, || {
        node_is(&http, &c, "good", "online")
    })
    .await;
    // A task only the intruder could serve, submitted while it knocks.
    let stuck = submit(&http, &c, 1, 1, &["secret-hardware"]).await;
    until("the intruder to be refused twice", JOIN, || async {
        bad.log_text().matches("authentication failed").count() >= 2
    })
    .await;
    let t = rig::task(&http, &c, &stuck[0]).await;
    assert_eq!(t["status"], "queued", "{t}");
    assert!(
        !rig::nodes(&http, &c)
            .await
            .iter()
            .any(|n| n["id"] == "intruder"),
        "the intruder is listed"
    );
    assert!(
        executions(&[&bad.journal]).is_empty(),
        "the intruder ran a task"
    );
    let coordinator_log =
        std::fs::read_to_string(dir.path().join(format!("coordinator-{}.log", c.http))).unwrap();
    assert!(
        coordinator_log.contains("did not authenticate"),
        "{coordinator_log}"
    );
    drop(good);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_node_before_it_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let c = Coordinator::start(dir.path());
    let mut node = c.node("drainer", "drain", COOKIE);
    until("drainer online", JOIN, || {
        node_is(&http, &c, "drainer", "online")
    })
    .await;
    // Eight slots, eight tasks of 1.5 s each: all running when the signal comes.
    let ids = submit(&http, &c, 8, 1_500, &["drain"]).await;
    until("all eight running", JOIN, || async {
        executions(&[&node.journal]).len() == 8
    })
    .await;
    let pid = node.process.0.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::task::spawn_blocking(move || {
        let s = node.process.0.wait().unwrap();
        (s, node)
    })
    .await
    .unwrap();
    assert!(status.0.success(), "the node exited with {}", status.0);
    // Every task finished on the node, once, before it left.
    for id in &ids {
        let t = rig::task(&http, &c, id).await;
        assert_eq!(t["status"], "completed", "{t}");
        assert_eq!(t["attempts"].as_array().unwrap().len(), 1, "{t}");
    }
    until("drainer listed as left", JOIN, || {
        node_is(&http, &c, "drainer", "left")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_are_counted_and_logged_with_the_peer_name() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let c = Coordinator::start(dir.path());

    // This test process joins as a bare ractor_cluster peer named `garbler` and sends the
    // coordinator's gate frames that are not wrangle messages.
    let (server, gate) = intruder(&c, "garbler").await;
    // Version 1, sender `garbler` (postcard: length then bytes), then a body that is no
    // message; then an empty frame.
    let mut frame = vec![1, 7];
    frame.extend_from_slice(b"garbler");
    frame.extend_from_slice(&[0xff, 0xfe, 0xfd]);
    gate.cast(RawFrame(frame)).unwrap();
    gate.cast(RawFrame(Vec::new())).unwrap();

    // The HTTP listener may come up after the cluster's: a refused connection is "not yet".
    until("two bad frames counted", JOIN, || async {
        let Ok(answer) = http.get(c.url("/metrics")).send().await else {
            return false;
        };
        answer
            .text()
            .await
            .is_ok_and(|t| t.contains("wrangle_cluster_bad_frames_total 2"))
    })
    .await;
    // The count and the log line are written one after the other, not at once.
    let log_path = dir.path().join(format!("coordinator-{}.log", c.http));
    until("the bad frame logged with its sender", JOIN, || async {
        std::fs::read_to_string(&log_path).is_ok_and(|log| {
            log.lines()
                .any(|l| l.contains("did not decode") && l.contains("garbler"))
        })
    })
    .await;

    // The coordinator carries on: a node joins and runs work.
    let node = c.node("after", "zone=z", COOKIE);
    until("a node online", JOIN, || {
        node_is(&http, &c, "after", "online")
    })
    .await;
    let ids = submit(&http, &c, 3, 1, &["zone=z"]).await;
    all_completed(&http, &c, &ids, JOIN).await;
    assert_eq!(executions(&[&node.journal]).len(), 3);
    server.stop(None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_over_tls_and_a_clear_text_node_cannot() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let http = reqwest::Client::new();
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    let c = Coordinator::start_with(
        dir.path(),
        net::free_port(),
        net::free_port(),
        &[
            ("WRANGLE_CLUSTER_TLS_CERT", &cert),
            ("WRANGLE_CLUSTER_TLS_KEY", &key),
        ],
    );
    let secure = c.tls_node("secure", "tls", &dir.path().join("ca.pem"));
    let plain = c.node("plain", "plain", COOKIE);
    until("the TLS node online", JOIN, || {
        node_is(&http, &c, "secure", "online")
    })
    .await;
    let ids = submit(&http, &c, 5, 1, &["tls"]).await;
    all_completed(&http, &c, &ids, JOIN).await;
    assert_eq!(executions(&[&secure.journal]).len(), 5);
    // The clear-text node keeps being turned away and is never listed.
    until("the clear-text node to fail twice", JOIN, || async {
        let log = plain.log_text();
        log.matches("refused this node").count() + log.matches("could not reach").count() >= 2
    })
    .await;
    assert!(
        !rig::nodes(&http, &c)
            .await
            .iter()
            .any(|n| n["id"] == "plain"),
        "a clear-text node joined a TLS listener"
    );
}

/// The coordinator's `/events` as (kind, JSON) pairs, read until `done` says so or
/// `timeout` passes (then the test fails).
async fn read_events(
    mut stream: reqwest::Response,
    timeout: Duration,
    mut done: impl FnMut(&str, &serde_json::Value) -> bool,
) -> Vec<(String, serde_json::Value)> {
    let deadline = tokio::time::Instant::now() + timeout;
    let (mut text, mut events) = (String::new(), Vec::new());
    loop {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .unwrap_or_else(|_| panic!("timed out reading /events; so far {events:?}"))
            .unwrap()
            .expect("the event stream ended");
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim_start().to_string())
            };
            let (Some(kind), Some(data)) = (field("event:"), field("data:")) else {
                continue; // a keep-alive comment
            };
            let json: serde_json::Value = serde_json::from_str(&data).unwrap();
            let stop = done(&kind, &json);
            events.push((kind, json));
            if stop {
                return events;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_reported_on_a_node_reaches_the_coordinators_event_stream() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let c = Coordinator::start(dir.path());
    let _node = c.node("prog-1", "progress=yes", COOKIE);
    until("prog-1 online", JOIN, || {
        node_is(&http, &c, "prog-1", "online")
    })
    .await;
    let stream = http.get(c.url("/events")).send().await.unwrap();
    assert!(stream.status().is_success(), "{}", stream.status());

    // `sleep` (wrangle-actors) reports progress ten times, every 30 ms, the last at 1.0;
    // only the node has the label, so it runs there.
    let r = http
        .post(c.url("/tasks"))
        .json(&json!({"tasks": [
            {"task_type": "sleep", "payload": {"ms": 300}, "labels": ["progress=yes"]}
        ]}))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    let id = body["tasks"][0]["id"]
        .as_str()
        .expect("a task id")
        .to_string();
    let events = read_events(stream, JOIN, |kind, e| {
        kind == "task_completed" && e["id"] == id.as_str()
    })
    .await;
    let t = rig::task(&http, &c, &id).await;
    let worker = t["attempts"][0]["worker"].as_str().unwrap_or_default();
    assert!(worker.starts_with("prog-1/"), "ran on the node: {t}");
    let progress: Vec<&serde_json::Value> = events
        .iter()
        .filter(|(k, _)| k == "task_progress")
        .map(|(_, e)| e)
        .collect();
    assert!(!progress.is_empty(), "no progress reached the coordinator");
    assert!(
        progress.iter().all(|e| e["id"] == id.as_str()),
        "{progress:?}"
    );
    let fractions: Vec<f64> = progress
        .iter()
        .map(|e| e["fraction"].as_f64().unwrap())
        .collect();
    assert!(fractions.windows(2).all(|w| w[0] < w[1]), "{fractions:?}");
    // Thinned out or not, the last report arrives, before the completion.
    let last = progress.last().unwrap();
    assert_eq!(last["fraction"].as_f64(), Some(1.0), "{progress:?}");
    assert_eq!(last["message"], "slept 300 ms");
}
