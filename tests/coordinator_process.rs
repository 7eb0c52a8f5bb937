//! The coordinator program as a user runs it: started as a process, tasks submitted with a
//! plain HTTP client over a real socket, results read back, `/metrics` parsed, and a SIGTERM
//! that stops it gracefully.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[path = "support/net.rs"]
mod net;
use net::free_port;
#[path = "support/programs.rs"]
mod programs;
use programs::{example_binary, Program};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_program_over_a_real_socket() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(example_binary("coordinator"))
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .env_remove("WRANGLE_DATABASE_URL")
        .env("WRANGLE_TOKEN", "t0ken")
        .env("WRANGLE_MIN_WORKERS", "2")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut program = Program(child);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the coordinator never answered /healthz"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let auth = |r: reqwest::RequestBuilder| r.bearer_auth("t0ken");

    // Without the token: refused.
    let r = http.get(format!("{base}/stats")).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // A batch of 200 echo tasks and one that fails for good.
    let tasks: Vec<Value> = (0..200)
        .map(|i| json!({"task_type": "echo", "payload": {"n": i}}))
        .collect();
    let r = auth(http.post(format!("{base}/tasks")))
        .json(&tasks)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    let ids: Vec<String> = body["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 200);
    let r = auth(http.post(format!("{base}/tasks")))
        .json(&json!({"task_type": "fail", "payload": {"mode": "permanent", "message": "nope"}}))
        .send()
        .await
        .unwrap();
    let failing: Value = r.json().await.unwrap();
    let failing = failing["tasks"][0]["id"].as_str().unwrap().to_string();

    for (i, id) in ids.iter().enumerate() {
        let r = auth(http.get(format!("{base}/tasks/{id}/wait?timeout=10s")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let t: Value = r.json().await.unwrap();
        assert_eq!(t["status"], "completed");
        assert_eq!(t["result"], json!({"n": i}));
    }
    let t: Value = auth(http.get(format!("{base}/tasks/{failing}/wait?timeout=10s")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (t["status"].as_str(), t["error"].as_str()),
        (Some("failed"), Some("nope"))
    );

    // /metrics parses as Prometheus text and agrees with what we did.
    let text = auth(http.get(format!("{base}/metrics")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut samples = std::collections::HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (name, value) = line.rsplit_once(' ').unwrap();
        samples.insert(
            name.to_string(),
            value
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("bad sample: {line}")),
        );
    }
    assert_eq!(samples["wrangle_tasks_completed_total"], 200.0);
    assert_eq!(samples["wrangle_tasks_failed_total"], 1.0);
    assert_eq!(samples["wrangle_tasks{status=\"dead_lettered\"}"], 1.0);
    assert_eq!(samples["wrangle_task_latency_seconds_count"], 200.0);
    assert_eq!(
        samples["wrangle_task_latency_seconds_bucket{le=\"+Inf\"}"],
        200.0
    );
    assert!(samples["wrangle_worker_slots{state=\"total\"}"] >= 2.0);
    assert!(samples["wrangle_store_commits_total"] >= 1.0);
    let stats: Value = auth(http.get(format!("{base}/stats")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["store"]["backend"], "sqlite");
    assert_eq!(stats["store"]["url"], "sqlite://wrangle.db");
    assert_eq!(stats["store"]["durability"], "committed");
    assert_eq!(stats["store"]["healthy"], true);
    assert_eq!(samples["wrangle_store_failures_total"], 0.0);
    assert_eq!(samples["wrangle_store_healthy"], 1.0);
    assert_eq!(samples["wrangle_stale_reports_total"], 0.0);
    assert_eq!(samples["wrangle_store_rejected_rows_total"], 0.0);
    // Measured at each prune interval (the first a second after start): present, maybe 0.
    assert!(samples.contains_key("wrangle_store_database_bytes"));
    // 200 completed tasks and one dead letter kept in memory; nothing waits.
    assert_eq!(samples["wrangle_queue_bytes{kind=\"live\"}"], 0.0);
    assert!(samples["wrangle_queue_bytes{kind=\"finished\"}"] > 0.0);
    assert!(samples["wrangle_queue_bytes{kind=\"dead_letter\"}"] > 0.0);

    // A dashboard's event stream stays open; it must not hold the shutdown up.
    let events = auth(http.get(format!("{base}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    assert_eq!(events.headers()["content-type"], "text/event-stream");

    // SIGTERM: a graceful stop that reports what it finished, and exit code 0.
    let pid = program.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = program.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the coordinator did not stop after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");
    // The event stream was ended by the server, not cut.
    tokio::time::timeout(Duration::from_secs(5), events.bytes())
        .await
        .expect("the event stream ended with the server")
        .expect("the event stream closed cleanly");
    let mut out = String::new();
    use std::io::Read;
    program
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(out.contains("dashboard: http://127.0.0.1:"), "{out}");
    assert!(!out.contains("t0ken"), "the secret is never printed: {out}");
    assert!(
        out.contains("stopped: 200 tasks completed, 0 unfinished"),
        "{out}"
    );

    // The default store: `wrangle.db` beside the program, holding what it did.
    let store = wrangle::Store::open(wrangle::StoreConfig::sqlite(dir.path().join("wrangle.db")))
        .await
        .unwrap();
    let counts = store.task_counts().await.unwrap();
    assert_eq!(counts.get(&wrangle::TaskStatus::Completed), Some(&200));
    assert_eq!(counts.get(&wrangle::TaskStatus::Failed), Some(&1));
    store.close().await;
}

/// Runs the coordinator program with `args` and `env` until it exits (it must, at once) and
/// returns its exit success and its standard error.
fn refused_start(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(example_binary("coordinator"));
    cmd.args(args)
        .current_dir(dir.path())
        .env_remove("WRANGLE_TOKEN")
        .env_remove("WRANGLE_TOKENS")
        .env("WRANGLE_DATABASE_URL", "memory");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut program = Program(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = program.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the program kept running: {args:?} {env:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    use std::io::Read;
    program
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.success(), err)
}

#[test]
fn public_bind_without_a_token_and_empty_tokens_refuse_to_start() {
    let port = free_port().to_string();
    let public = format!("0.0.0.0:{port}");
    let (ok, err) = refused_start(&["--bind", &public], &[]);
    assert!(!ok, "started on {public} with no token");
    assert!(
        err.contains("--dangerously-allow-public-without-token"),
        "{err}"
    );
    let (ok, err) = refused_start(&["--token", ""], &[]);
    assert!(
        !ok && err.contains("token"),
        "an empty --token started: {err}"
    );
    let (ok, err) = refused_start(&[], &[("WRANGLE_TOKEN", "")]);
    assert!(
        !ok && err.contains("token"),
        "an empty WRANGLE_TOKEN started: {err}"
    );
}

/// Runs example `name` with `args` and `env` in `dir` until it exits (it must, at once);
/// returns its exit success, standard output and standard error.
fn run_to_exit(
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
    dir: &std::path::Path,
) -> (bool, String, String) {
    let mut cmd = Command::new(example_binary(name));
    cmd.args(args).current_dir(dir);
    for var in [
        "WRANGLE_TOKEN",
        "WRANGLE_TOKENS",
        "DATABASE_URL",
        "WRANGLE_CONFIG",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_into_a_closed_pipe_is_no_panic() {
    // `--help | head`: the reader is gone before the program writes (here, before it
    // starts, so the write surely fails).
    for name in ["coordinator", "node", "durable", "submit", "migrate"] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(example_binary(name))
            .arg("--help")
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{name}: {err}");
        assert!(out.status.success(), "{name}: {} {err}", out.status);
    }
}

#[test]
fn help_lists_the_settings_and_hides_secrets_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, help, _) = run_to_exit(
        "coordinator",
        &["--help"],
        &[
            ("WRANGLE_TOKEN", "t0ken-in-env"),
            ("WRANGLE_TOKENS", "read=r3ader-in-env"),
            ("WRANGLE_COOKIE", "c00kie-in-env"),
            ("WRANGLE_DATABASE_URL", "postgres://u:pa55word@db/w"),
        ],
        dir.path(),
    );
    assert!(ok);
    for secret in ["t0ken-in-env", "r3ader-in-env", "c00kie-in-env", "pa55word"] {
        assert!(!help.contains(secret), "{secret} in\n{help}");
    }
    for shown in [
        "--bind <ADDR>",
        "--token-file <PATH>",
        "[env: WRANGLE_MAX_WAIT_SECS",
        "[env: WRANGLE_MAX_EVENT_STREAM_SECS",
        "[env: WRANGLE_COOKIE_FILE",
        "DATABASE_URL is read when WRANGLE_DATABASE_URL",
        "each overriding the one before: the defaults, the settings file",
    ] {
        assert!(help.contains(shown), "{shown} in\n{help}");
    }
}

#[test]
fn settings_layer_defaults_file_environment_flags() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("wrangle.toml"),
        "min_workers = 1\nmax_workers = 5\nmax_batch = 7\nlabels = [\"from-file\"]\n",
    )
    .unwrap();
    let env = [
        ("WRANGLE_MAX_WORKERS", "7"),
        ("WRANGLE_MAX_BATCH", "8"),
        ("WRANGLE_LABELS", "from-env,b"),
        ("DATABASE_URL", "sqlite://generic.db"),
        ("WRANGLE_DATABASE_URL", "memory"),
        ("WRANGLE_COOKIE", "c00kie"),
    ];
    let (ok, shown, err) = run_to_exit(
        "coordinator",
        &["--check", "--max-workers", "6"],
        &env,
        dir.path(),
    );
    assert!(ok, "{err}");
    for line in [
        "min_workers: 1,",    // the file
        "max_batch: 8,",      // the environment over the file
        "max_workers: 6,",    // the flag over both
        "max_wait_secs: 300", // the default
        "\"from-env\"",
        "database_url: \"memory\"",
    ] {
        assert!(shown.contains(line), "{line} in\n{shown}");
    }
    assert!(
        !shown.contains("c00kie") && shown.contains("<redacted>"),
        "{shown}"
    );
    // DATABASE_URL counts when WRANGLE_DATABASE_URL is not set.
    let (ok, shown, _) = run_to_exit(
        "coordinator",
        &["--check"],
        &[("DATABASE_URL", "sqlite://generic.db")],
        dir.path(),
    );
    assert!(ok && shown.contains("sqlite://generic.db"), "{shown}");
    // A bad value from a variable names the flag and the variable.
    let (ok, _, err) = run_to_exit(
        "coordinator",
        &["--check"],
        &[("WRANGLE_MIN_WORKERS", "many")],
        dir.path(),
    );
    assert!(!ok, "a bad WRANGLE_MIN_WORKERS was accepted");
    assert!(
        err.contains("--min-workers") && err.contains("WRANGLE_MIN_WORKERS"),
        "{err}"
    );
}

#[test]
fn the_node_program_reads_the_coordinators_settings_file() {
    let dir = tempfile::tempdir().unwrap();
    // No `join` anywhere: the node refuses to start and says where to give it.
    let (ok, _, err) = run_to_exit("node", &[], &[], dir.path());
    assert!(!ok && err.contains("--join"), "{err}");
    // `cookie` and `[node]` come from the file: a name the checks refuse shows it was read
    // (a valid one would start a node that keeps retrying the absent coordinator).
    std::fs::write(
        dir.path().join("settings.toml"),
        "cookie = \"c00kie\"\n[node]\njoin = \"127.0.0.1:1\"\nname = \"bad name\"\n",
    )
    .unwrap();
    let (ok, _, err) = run_to_exit("node", &["--config", "settings.toml"], &[], dir.path());
    assert!(!ok && err.contains("`bad name`"), "{err}");
    assert!(!err.contains("c00kie"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_can_be_json() {
    let port = free_port();
    let mut child = Command::new(example_binary("coordinator"))
        .args([
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--log-format",
            "json",
        ])
        .env("WRANGLE_DATABASE_URL", "memory")
        .env_remove("WRANGLE_TOKEN")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let pid = child.id().to_string();
    let _program = Program(child);
    // Once it serves, a graceful stop logs at INFO (each worker stopping).
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the coordinator never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopped = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(stopped.success());
    // Read lines until one is a JSON log record at INFO.
    let found = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut seen = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if v["level"] == "INFO" && v["fields"]["message"].is_string() {
                    return Ok(v);
                }
            }
            seen.push(line);
            if seen.len() > 200 {
                break;
            }
        }
        Err(seen)
    });
    let record = tokio::time::timeout(Duration::from_secs(30), found)
        .await
        .expect("no log line within 30 s")
        .unwrap()
        .unwrap_or_else(|seen| panic!("no JSON log record among: {seen:?}"));
    assert!(record["timestamp"].is_string(), "{record}");
    assert!(
        record["target"].as_str().unwrap().starts_with("wrangle"),
        "{record}"
    );
}
