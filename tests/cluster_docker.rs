//! Multi-host, on this machine's Docker engine: a coordinator and three node containers on
//! a private Docker network. The image is built `FROM scratch` with the coordinator and node
//! programs this test run compiled (`support/node_image.rs`); no registry is needed.
//!
//! One node is cut off (`docker network disconnect`) mid-run: its tasks are run elsewhere,
//! and once reconnected it joins again and takes work. Another is `docker kill`ed mid-run:
//! nothing is lost. Executions are journaled (bind-mounted files); a task may run twice only
//! if the faulted node had started it. With `CI=true` the test fails when Docker is
//! unreachable; elsewhere it says so and passes without running.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

#[path = "support/net.rs"]
mod net;
#[path = "support/node_image.rs"]
mod node_image;
#[allow(dead_code)] // only `example_binary` is used
#[path = "support/programs.rs"]
mod programs;
#[path = "support/cluster.rs"]
#[allow(dead_code)] // the loopback tests' processes are not used here
mod rig;

use node_image::docker;
use rig::until;

const COOKIE: &str = "docker-secret";

fn must(args: &[&str]) -> String {
    docker(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Removes the containers, the network and the image when the test ends, however it ends.
struct Cleanup {
    containers: Vec<String>,
    network: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", c]);
        }
        let _ = docker(&["network", "rm", &self.network]);
        let _ = docker(&["rmi", "-f", &self.image]);
    }
}

struct Cluster {
    http: reqwest::Client,
    api: String,
    network: String,
    journals: PathBuf,
}

impl rig::Api for Cluster {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }
}

impl Cluster {
    async fn status_of(&self, node: &str) -> Option<String> {
        rig::nodes(&self.http, self)
            .await
            .into_iter()
            .find(|n| n["id"] == node)
            .and_then(|n| n["status"].as_str().map(String::from))
    }

    async fn submit(&self, count: usize, ms: u64) -> Vec<String> {
        rig::submit(&self.http, self, count, ms, &[]).await
    }

    async fn all_completed(&self, ids: &[String], timeout: Duration) {
        rig::all_completed(&self.http, self, ids, timeout).await
    }

    /// Task ids each node's journal holds, and every `(task, node)` run.
    fn runs(&self) -> Vec<(String, String)> {
        let mut runs = Vec::new();
        for entry in std::fs::read_dir(&self.journals).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
            for line in text.lines() {
                let parts: Vec<&str> = line.split(' ').collect();
                assert_eq!(parts.len(), 3, "journal line `{line}`");
                runs.push((parts[0].to_string(), parts[2].to_string()));
            }
        }
        runs
    }

    fn ran_on(&self, node: &str) -> HashSet<String> {
        self.runs()
            .into_iter()
            .filter(|(_, n)| n == node)
            .map(|(id, _)| id)
            .collect()
    }

    /// Tasks of `ids` that ran more than once; each must have run on `faulted` first.
    fn duplicates(&self, ids: &[String], faulted: &HashSet<String>) -> usize {
        let runs = self.runs();
        let wanted: HashSet<&String> = ids.iter().collect();
        let mut count: std::collections::HashMap<&String, usize> = Default::default();
        for (id, _) in &runs {
            if wanted.contains(id) {
                *count.entry(id).or_default() += 1;
            }
        }
        for id in ids {
            assert!(count.contains_key(id), "{id} never ran");
        }
        let twice: Vec<&&String> = count
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, _)| id)
            .collect();
        for id in &twice {
            assert!(
                faulted.contains(**id),
                "{id} ran twice but the faulted node never started it"
            );
        }
        twice.len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_and_killed_node_containers_lose_no_task() {
    if let Err(e) = docker(&["info", "--format", "{{.ServerVersion}}"]) {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true but the Docker engine is unreachable: {e}");
        }
        eprintln!("Docker engine unreachable, multi-host test not run: {e}");
        return;
    }
    let run = format!("{:08x}", fastrand::u32(..));
    let dir = tempfile::tempdir().unwrap();
    let image = format!("wrangle-test:{run}");
    let network = format!("wrangle-test-{run}");
    let mut cleanup = Cleanup {
        containers: Vec::new(),
        network: network.clone(),
        image: image.clone(),
    };
    node_image::build(&image, dir.path(), &["coordinator", "node"], None);
    must(&["network", "create", &network]);

    let journals = dir.path().join("journal");
    std::fs::create_dir_all(&journals).unwrap();
    let coordinator = format!("wrangle-coord-{run}");
    cleanup.containers.push(coordinator.clone());
    let port = net::free_port();
    must(&[
        "run",
        "-d",
        "--name",
        &coordinator,
        "--network",
        &network,
        "-p",
        &format!("127.0.0.1:{port}:7700"),
        "-e",
        "WRANGLE_NODE_TIMEOUT_MS=1500",
        "-e",
        "RUST_LOG=warn,wrangle=info",
        &image,
        "/bin/coordinator",
        "--bind",
        "0.0.0.0:7700",
        // Published on the host's loopback only (`-p 127.0.0.1:...`), so no token.
        "--dangerously-allow-public-without-token",
        "--database-url",
        "memory",
        "--cluster-listen",
        "0.0.0.0:7450",
        "--cookie",
        COOKIE,
    ]);
    let ip = must(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &coordinator,
    ]);
    let mount = format!("{}:/journal", journals.display());
    let nodes = ["node-1", "node-2", "node-3"];
    let container = |node: &str| format!("wrangle-{node}-{run}");
    for node in nodes {
        cleanup.containers.push(container(node));
        must(&[
            "run",
            "-d",
            "--name",
            &container(node),
            "--network",
            &network,
            "-v",
            &mount,
            "-e",
            "RUST_LOG=warn,wrangle=info",
            &image,
            "/bin/node",
            "--join",
            &format!("{ip}:7450"),
            "--cookie",
            COOKIE,
            "--name",
            node,
            "--workers",
            "2",
            "--slots",
            "4",
            "--heartbeat-ms",
            "200",
            "--journal",
            &format!("/journal/{node}.log"),
        ]);
    }
    let c = Cluster {
        http: reqwest::Client::new(),
        api: format!("http://127.0.0.1:{port}"),
        network: network.clone(),
        journals,
    };
    until("three nodes online", Duration::from_secs(60), || async {
        let n = rig::nodes(&c.http, &c).await;
        nodes.iter().all(|name| {
            n.iter()
                .any(|x| x["id"] == *name && x["status"] == "online")
        })
    })
    .await;

    // Partition node-1 mid-run.
    let ids = c.submit(400, 50).await;
    until(
        "node-1 to run 20 tasks",
        Duration::from_secs(60),
        || async { c.ran_on("node-1").len() >= 20 },
    )
    .await;
    must(&["network", "disconnect", &c.network, &container("node-1")]);
    let on_node_1 = c.ran_on("node-1");
    c.all_completed(&ids, Duration::from_secs(90)).await;
    assert_eq!(c.status_of("node-1").await.as_deref(), Some("lost"));
    let partition_twice = c.duplicates(&ids, &c.ran_on("node-1"));
    // node-1 had 2 workers x 4 slots in flight at most when it was cut off.
    assert!(
        partition_twice <= 8,
        "{partition_twice} tasks ran twice after the cut"
    );
    println!(
        "partition: node-1 started {} of 400 tasks before the cut, {partition_twice} ran twice",
        on_node_1.len()
    );

    // Heal: node-1 joins again and takes work.
    must(&["network", "connect", &c.network, &container("node-1")]);
    until("node-1 online again", Duration::from_secs(60), || async {
        c.status_of("node-1").await.as_deref() == Some("online")
    })
    .await;
    let before = c.ran_on("node-1");
    let ids = c.submit(200, 50).await;
    c.all_completed(&ids, Duration::from_secs(60)).await;
    let after = c.ran_on("node-1");
    assert!(
        ids.iter()
            .any(|id| after.contains(id) && !before.contains(id)),
        "node-1 took no work after re-joining"
    );

    // docker kill node-2 mid-run.
    let ids = c.submit(300, 50).await;
    let ran_before: HashSet<String> = c.ran_on("node-2");
    until(
        "node-2 to run 20 of the batch",
        Duration::from_secs(60),
        || async { c.ran_on("node-2").difference(&ran_before).count() >= 20 },
    )
    .await;
    must(&["kill", &container("node-2")]);
    c.all_completed(&ids, Duration::from_secs(90)).await;
    until("node-2 listed lost", Duration::from_secs(30), || async {
        c.status_of("node-2").await.as_deref() == Some("lost")
    })
    .await;
    let kill_twice = c.duplicates(&ids, &c.ran_on("node-2"));
    // node-2 had 2 workers x 4 slots in flight at most.
    assert!(
        kill_twice <= 8,
        "{kill_twice} tasks ran twice after the kill"
    );
    println!("kill: {kill_twice} tasks that node-2 had started ran twice");
    drop(cleanup);
}
