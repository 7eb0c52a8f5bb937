//! Nodes follow the leader: a node program given several coordinator addresses
//! (`--join A,B`) joins whichever coordinator program accepts it, and when that one is
//! killed or frozen it moves on to the next address by itself and runs the tasks of the
//! coordinator it finds there. Real processes on loopback; each coordinator stores in its
//! own SQLite file. The tests print how long each re-join took.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "support/net.rs"]
mod net;
#[path = "support/programs.rs"]
mod programs;
#[path = "support/cluster.rs"]
#[allow(dead_code)] // the TLS and intruder helpers are not used here
mod rig;

use net::free_port;
use programs::{example_binary, Program};
use rig::{all_completed, executions, node_is, submit, until, Api, Coordinator, Node, COOKIE};

const JOIN: Duration = Duration::from_secs(30);

/// A node program named `name` given the cluster ports `join` (on 127.0.0.1), in that
/// order, with 2 workers x 4 slots serving `journal` tasks; its files go in `dir`.
fn follower(dir: &Path, name: &str, join: &[u16]) -> Node {
    let journal = dir.join(format!("{name}.journal"));
    let log = dir.join(format!("{name}.log"));
    let cookie = dir.join(format!("{name}.cookie"));
    std::fs::write(&cookie, COOKIE).unwrap();
    let join = join
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let child = Command::new(example_binary("node"))
        .args(["--join", &join])
        .arg("--cookie-file")
        .arg(&cookie)
        .args(["--name", name])
        .args(["--workers", "2", "--slots", "4", "--heartbeat-ms", "200"])
        .arg("--journal")
        .arg(&journal)
        .env("RUST_LOG", "warn,wrangle=info")
        .env("NO_COLOR", "1")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
        .spawn()
        .unwrap();
    Node {
        process: Program(child),
        journal,
        log,
    }
}

/// Sends `signal` (`STOP`, `CONT`) to the coordinator program.
fn signal(c: &Coordinator, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(c.process.0.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal}");
}

/// Runs 20 `journal` tasks through `c` and checks that `node` ran them.
async fn runs_tasks(http: &reqwest::Client, c: &Coordinator, node: &Node, name: &str) {
    let ids = submit(http, c, 20, 1, &[]).await;
    all_completed(http, c, &ids, JOIN).await;
    let runs = executions(&[&node.journal]);
    for id in &ids {
        let by = runs
            .get(id)
            .map(|r| r.iter().map(|(_, n)| n.as_str()).collect::<Vec<_>>());
        assert!(
            by.as_ref().is_some_and(|by| by.contains(&name)),
            "task {id} ran on {by:?}, not on {name}"
        );
    }
}

/// Waits until the node's log says it joined the coordinator on `port`.
async fn logged_join(node: &Node, port: u16) {
    let line = format!("joined the coordinator at 127.0.0.1:{port}");
    until(&format!("`{line}` in the node's log"), JOIN, || async {
        node.log_text().contains(&line)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_moves_to_the_next_address_when_its_coordinator_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let http = reqwest::Client::new();
    let (a_http, a_cluster) = (free_port(), free_port());

    // Only B is up: the node is refused at A and joins B.
    let mut b = Coordinator::start(&dir_b);
    let node = follower(dir.path(), "follower-1", &[a_cluster, b.cluster]);
    until("the node online at B", JOIN, || {
        node_is(&http, &b, "follower-1", "online")
    })
    .await;
    logged_join(&node, b.cluster).await;
    runs_tasks(&http, &b, &node, "follower-1").await;

    // B dies; a coordinator comes up at A's address: the node finds it by itself.
    b.process.0.kill().unwrap();
    b.process.0.wait().unwrap();
    let killed = Instant::now();
    let a = Coordinator::start_on(&dir_a, a_http, a_cluster);
    // Polled by hand: the first time A answers is measured too.
    let deadline = Instant::now() + JOIN;
    let mut a_up = None;
    while !node_is(&http, &a, "follower-1", "online").await {
        if a_up.is_none()
            && http
                .get(a.url("/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        {
            a_up = Some(Instant::now());
        }
        assert!(
            Instant::now() < deadline,
            "the node never came online at A; its log:\n{}",
            node.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let joined = Instant::now();
    let a_up = a_up.unwrap_or(joined);
    println!(
        "re-join after B was killed: {} ms ({} ms after A answered /healthz)",
        joined.duration_since(killed).as_millis(),
        joined.duration_since(a_up).as_millis()
    );
    logged_join(&node, a_cluster).await;
    runs_tasks(&http, &a, &node, "follower-1").await;
    assert!(
        node.log_text()
            .contains("moving on to the next coordinator address"),
        "{}",
        node.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_leaves_a_frozen_coordinator_for_the_next_address() {
    let dir = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let http = reqwest::Client::new();
    let (b_http, b_cluster) = (free_port(), free_port());

    // A is up (B not yet): the node joins A, the first address.
    let a = Coordinator::start(&dir_a);
    let node = follower(dir.path(), "follower-2", &[a.cluster, b_cluster]);
    until("the node online at A", JOIN, || {
        node_is(&http, &a, "follower-2", "online")
    })
    .await;
    logged_join(&node, a.cluster).await;
    runs_tasks(&http, &a, &node, "follower-2").await;

    // A freezes (its socket stays open, nothing answers); B comes up.
    signal(&a, "STOP");
    let frozen = Instant::now();
    let b = Coordinator::start_on(&dir_b, b_http, b_cluster);
    until("the node online at B", JOIN, || {
        node_is(&http, &b, "follower-2", "online")
    })
    .await;
    println!(
        "re-join after A was frozen: {} ms",
        frozen.elapsed().as_millis()
    );
    logged_join(&node, b_cluster).await;
    runs_tasks(&http, &b, &node, "follower-2").await;
    assert!(
        node.log_text().contains("the coordinator went silent"),
        "{}",
        node.log_text()
    );

    // A wakes up, and goes (a stopped process is killed all the same if the test fails).
    signal(&a, "CONT");
    drop(a);
}
