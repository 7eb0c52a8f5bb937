//! A coordinator and node programs as real OS processes joined over loopback TCP, driven
//! through the coordinator's HTTP API.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::net::free_port;
use super::programs::{example_binary, Program};

pub(crate) const COOKIE: &str = "loopback-secret";

/// Something that serves the coordinator's HTTP API.
pub(crate) trait Api {
    /// The URL of `path` (`/nodes`) on it.
    fn url(&self, path: &str) -> String;
}

impl Api for Coordinator {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }
}

/// A coordinator program with its cluster listener, storing in an SQLite file in `dir`.
pub(crate) struct Coordinator {
    pub(crate) process: Program,
    pub(crate) http: u16,
    pub(crate) cluster: u16,
    dir: PathBuf,
}

impl Coordinator {
    pub(crate) fn start(dir: &Path) -> Self {
        Self::start_on(dir, free_port(), free_port())
    }

    pub(crate) fn start_on(dir: &Path, http: u16, cluster: u16) -> Self {
        Self::start_with(dir, http, cluster, &[])
    }

    /// Started with extra environment variables (settings).
    pub(crate) fn start_with(dir: &Path, http: u16, cluster: u16, env: &[(&str, &Path)]) -> Self {
        let db = format!("sqlite://{}", dir.join("cluster.db").display());
        // The cookie from a file, as the programs' docs advise (a flag shows in `ps`).
        let cookie = dir.join(format!("coordinator-{http}.cookie"));
        std::fs::write(&cookie, format!("{COOKIE}\n")).unwrap();
        let child = Command::new(example_binary("coordinator"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args(["--bind", &format!("127.0.0.1:{http}")])
            .args(["--database-url", &db])
            .args(["--cluster-listen", &format!("127.0.0.1:{cluster}")])
            .arg("--cookie-file")
            .arg(&cookie)
            .env("WRANGLE_NODE_TIMEOUT_MS", "1500")
            .env("RUST_LOG", "warn,wrangle=info")
            .env("NO_COLOR", "1")
            .current_dir(dir)
            .stdout(log_file(&dir.join(format!("coordinator-{http}.log"))))
            .stderr(log_file(&dir.join(format!("coordinator-{http}.err"))))
            .spawn()
            .unwrap();
        Self {
            process: Program(child),
            http,
            cluster,
            dir: dir.to_path_buf(),
        }
    }

    /// Starts a node program joining this coordinator.
    pub(crate) fn node(&self, name: &str, labels: &str, cookie: &str) -> Node {
        self.node_with(name, labels, cookie, &[])
    }

    /// Starts a node program that joins over TLS, trusting the CA at `ca` (see
    /// [`certificates`]) for the name `localhost`.
    pub(crate) fn tls_node(&self, name: &str, labels: &str, ca: &Path) -> Node {
        let ca = ca.to_str().unwrap();
        self.node_with(
            name,
            labels,
            COOKIE,
            &["--tls-ca", ca, "--tls-server-name", "localhost"],
        )
    }

    /// Starts a node program with extra arguments.
    pub(crate) fn node_with(&self, name: &str, labels: &str, cookie: &str, extra: &[&str]) -> Node {
        spawn_node(&self.dir, self.cluster, name, labels, cookie, extra)
    }
}

/// Starts a node program named `name` joining the cluster listener on 127.0.0.1:`cluster`
/// (a coordinator program's, or one in the test's own process), with 2 workers x 4 slots,
/// serving `journal` tasks; its journal, log and cookie files go in `dir`.
pub(crate) fn spawn_node(
    dir: &Path,
    cluster: u16,
    name: &str,
    labels: &str,
    cookie: &str,
    extra: &[&str],
) -> Node {
    let journal = dir.join(format!("{name}.journal"));
    let log = dir.join(format!("{name}.log"));
    let cookie_file = dir.join(format!("{name}.cookie"));
    std::fs::write(&cookie_file, cookie).unwrap();
    let child = Command::new(example_binary("node"))
        .args(["--join", &format!("127.0.0.1:{cluster}")])
        .arg("--cookie-file")
        .arg(&cookie_file)
        .args(["--name", name, "--labels", labels])
        .args(["--workers", "2", "--slots", "4", "--heartbeat-ms", "200"])
        .args(extra)
        .arg("--journal")
        .arg(&journal)
        .env("RUST_LOG", "warn,wrangle=info")
        .env("NO_COLOR", "1")
        .stdout(log_file(&log))
        .stderr(log_file(&log.with_extension("err")))
        .spawn()
        .unwrap();
    Node {
        process: Program(child),
        journal,
        log,
    }
}

/// The programs log (tracing) to stdout.
fn log_file(path: &Path) -> std::fs::File {
    std::fs::File::create(path).unwrap()
}

/// A node program.
pub(crate) struct Node {
    pub(crate) process: Program,
    pub(crate) journal: PathBuf,
    pub(crate) log: PathBuf,
}

impl Node {
    pub(crate) fn kill(&mut self) {
        self.process.0.kill().unwrap(); // SIGKILL
        self.process.0.wait().unwrap();
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Executions per task id: `(attempt, node)` for each run, from every journal given
/// (`cancelled ID` lines, which say a run was cancelled, are not executions).
pub(crate) fn executions(journals: &[&Path]) -> HashMap<String, Vec<(u32, String)>> {
    let mut runs: HashMap<String, Vec<(u32, String)>> = HashMap::new();
    for path in journals {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for line in text.lines().filter(|l| !l.starts_with("cancelled ")) {
            let mut parts = line.split(' ');
            let (Some(id), Some(attempt), Some(node)) = (parts.next(), parts.next(), parts.next())
            else {
                panic!("journal line `{line}` is not `ID ATTEMPT NODE`");
            };
            runs.entry(id.to_string())
                .or_default()
                .push((attempt.parse().unwrap(), node.to_string()));
        }
    }
    for r in runs.values_mut() {
        r.sort();
    }
    runs
}

/// Polls `cond` every 20 ms until it holds, panicking with `what` after `timeout`.
pub(crate) async fn until<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The coordinator's `/nodes`, or an empty list while it does not answer.
pub(crate) async fn nodes(http: &reqwest::Client, c: &impl Api) -> Vec<Value> {
    match http.get(c.url("/nodes")).send().await {
        Ok(r) if r.status().is_success() => r.json().await.unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// True when the node `name` is listed with `status`.
pub(crate) async fn node_is(
    http: &reqwest::Client,
    c: &impl Api,
    name: &str,
    status: &str,
) -> bool {
    nodes(http, c)
        .await
        .iter()
        .any(|n| n["id"] == name && n["status"] == status)
}

/// Submits `count` `journal` tasks (sleeping `ms`, requiring `labels`); returns their ids.
pub(crate) async fn submit(
    http: &reqwest::Client,
    c: &impl Api,
    count: usize,
    ms: u64,
    labels: &[&str],
) -> Vec<String> {
    let tasks: Vec<Value> = (0..count)
        .map(|_| json!({"task_type": "journal", "payload": {"ms": ms}, "labels": labels, "retries": 5}))
        .collect();
    submit_tasks(http, c, tasks).await
}

/// Submits `tasks` (task objects as `POST /tasks` takes them) in one request; their ids.
pub(crate) async fn submit_tasks(
    http: &reqwest::Client,
    c: &impl Api,
    tasks: Vec<Value>,
) -> Vec<String> {
    let r = http
        .post(c.url("/tasks"))
        .json(&json!({ "tasks": tasks }))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert!(status.is_success(), "submit: {status} {body}");
    body["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

/// The task's JSON.
pub(crate) async fn task(http: &reqwest::Client, c: &impl Api, id: &str) -> Value {
    http.get(c.url(&format!("/tasks/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits until every task in `ids` is completed.
pub(crate) async fn all_completed(
    http: &reqwest::Client,
    c: &impl Api,
    ids: &[String],
    timeout: Duration,
) {
    let mut left: Vec<String> = ids.to_vec();
    let deadline = Instant::now() + timeout;
    while !left.is_empty() {
        let mut still = Vec::new();
        for id in left {
            let t = task(http, c, &id).await;
            match t["status"].as_str() {
                Some("completed") => {}
                Some("failed") | Some("cancelled") | Some("timeout") => panic!("task ended {t}"),
                _ => still.push(id),
            }
        }
        left = still;
        if !left.is_empty() {
            assert!(
                Instant::now() < deadline,
                "{} tasks unfinished after {timeout:?}, for example {}",
                left.len(),
                task(http, c, &left[0]).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A throwaway CA and a certificate for `localhost` signed by it, made with `openssl`.
pub(crate) fn certificates(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl is installed");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=wrangle test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
}

/// A frame in whatever bytes the test wants, sent to a remote actor as is.
pub(crate) struct RawFrame(pub(crate) Vec<u8>);

impl ractor::BytesConvertable for RawFrame {
    fn into_bytes(self) -> Vec<u8> {
        self.0
    }
    fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

/// This test process as a bare ractor_cluster peer named `name`, holding the cookie,
/// connected to `c`; returns its server and the coordinator's gate.
pub(crate) async fn intruder(
    c: &Coordinator,
    name: &str,
) -> (
    ractor::ActorRef<ractor_cluster::NodeServerMessage>,
    ractor::ActorRef<RawFrame>,
) {
    let server = ractor_cluster::NodeServer::new(
        0,
        COOKIE.to_string(),
        name.to_string(),
        "127.0.0.1".to_string(),
        None,
        Some(ractor_cluster::node::NodeConnectionMode::Isolated),
    )
    .with_listen_addr([127, 0, 0, 1].into());
    let (server, _) = ractor::Actor::spawn(None, server, ()).await.unwrap();
    until(
        "the coordinator to listen",
        Duration::from_secs(30),
        || async {
            ractor_cluster::client_connect(&server, format!("127.0.0.1:{}", c.cluster))
                .await
                .is_ok()
        },
    )
    .await;
    let remote_gate = || {
        ractor::pg::get_members(&"wrangle.gate".to_string())
            .into_iter()
            .find(|g| !g.get_id().is_local())
    };
    until(
        "the gate's process group to arrive",
        Duration::from_secs(30),
        || async { remote_gate().is_some() },
    )
    .await;
    (server, remote_gate().unwrap().into())
}
