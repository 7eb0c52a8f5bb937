//! The submit tool follows the leading coordinator: a standby (a stub here, answering as
//! the standby protocol says: 307 to the leader, or 503 `no_leader` during a takeover) is
//! followed with the token to the real coordinator program; a dead coordinator in the list
//! is passed over; a redirect it must not follow ends the run with a clear error; and when
//! the coordinator dies while the tool waits, the tool waits for the same tasks on the one
//! that took over: a stub's redirect to a coordinator restarted on the same SQLite file,
//! and (with `DATABASE_URL` naming a PostgreSQL server) a real standby's takeover.

#[path = "support/databases.rs"]
#[allow(dead_code)]
mod databases;
#[path = "support/net.rs"]
mod net;
#[path = "support/programs.rs"]
mod programs;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, LOCATION, RETRY_AFTER};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Value};

use net::free_port;
use programs::{example_binary, Program};

const TOKEN: &str = "f0llow-t0ken";

/// A coordinator program on a free port, with the token; `database` as
/// `WRANGLE_DATABASE_URL` (PostgreSQL: in failover, leading or standing by).
async fn coordinator(dir: &Path, database: &str) -> (Program, String) {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let child = Command::new(example_binary("coordinator"))
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env("WRANGLE_DATABASE_URL", database)
        .env("WRANGLE_TOKEN", TOKEN)
        .env("WRANGLE_MIN_WORKERS", "2")
        .env("WRANGLE_LEADER_LEASE_MS", "1000")
        .env("WRANGLE_LEADER_RENEW_MS", "300")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut program = Program(child);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(
            program.0.try_wait().unwrap().is_none(),
            "the coordinator exited"
        );
        assert!(
            Instant::now() < deadline,
            "the coordinator never answered /healthz"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (program, base)
}

/// A standby as the protocol describes it, in this process: it redirects every request to
/// `leader` (307, the same path and query), after answering `no_leader` (503,
/// `Retry-After: 1`) to the first `no_leader` requests.
struct Standby {
    url: String,
    leader: Mutex<String>,
    no_leader: AtomicUsize,
    /// Requests it answered.
    hits: AtomicUsize,
    /// Whether every request it answered carried the token.
    always_token: AtomicBool,
}

impl Standby {
    async fn start(leader: &str, no_leader: usize) -> Arc<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let me = Arc::new(Self {
            url: format!("http://{}", listener.local_addr().unwrap()),
            leader: Mutex::new(leader.to_string()),
            no_leader: AtomicUsize::new(no_leader),
            hits: AtomicUsize::new(0),
            always_token: AtomicBool::new(true),
        });
        let app = Router::new().fallback(answer).with_state(me.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        me
    }

    fn lead_to(&self, leader: &str) {
        *self.leader.lock().unwrap() = leader.to_string();
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn answer(
    State(me): State<Arc<Standby>>,
    uri: Uri,
    headers: HeaderMap,
    _body: Bytes,
) -> Response {
    me.hits.fetch_add(1, Ordering::SeqCst);
    let bearer = format!("Bearer {TOKEN}");
    if headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(bearer.as_str()) {
        me.always_token.store(false, Ordering::SeqCst);
    }
    let takeover = me
        .no_leader
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if takeover {
        let body = json!({"error": "no_leader", "message": "a takeover is under way"});
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(RETRY_AFTER, "1")],
            Json(body),
        )
            .into_response();
    }
    let leader = me.leader.lock().unwrap().clone();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let body =
        json!({"error": "standby", "message": "this coordinator stands by", "leader": leader});
    (
        StatusCode::TEMPORARY_REDIRECT,
        [(LOCATION, format!("{leader}{path}"))],
        Json(body),
    )
        .into_response()
}

/// A TCP relay to a coordinator that counts the waits (`GET /tasks/ID/wait?...`) sent
/// through it; a connection is cut when the coordinator's side ends.
struct Relay {
    url: String,
    waits: Arc<AtomicUsize>,
}

impl Relay {
    async fn start(upstream: &str) -> Self {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let waits = Arc::new(AtomicUsize::new(0));
        let counter = waits.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (upstream, counter) = (upstream.clone(), counter.clone());
                tokio::spawn(async move {
                    if let Ok(outbound) = tokio::net::TcpStream::connect(&upstream).await {
                        pipe(inbound, outbound, counter).await;
                    }
                });
            }
        });
        Self { url, waits }
    }

    fn waits(&self) -> usize {
        self.waits.load(Ordering::SeqCst)
    }
}

/// Copies both ways until either side ends, counting the waits the client sends.
async fn pipe(
    mut inbound: tokio::net::TcpStream,
    mut outbound: tokio::net::TcpStream,
    waits: Arc<AtomicUsize>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const MARK: &[u8] = b"/wait?";
    let (mut client_in, mut client_out) = inbound.split();
    let (mut server_in, mut server_out) = outbound.split();
    let up = async {
        // The end of the previous read, so a mark cut in two is still counted once.
        let mut seen: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = client_in.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            seen.extend_from_slice(&buf[..n]);
            let found = seen.windows(MARK.len()).filter(|w| *w == MARK).count();
            waits.fetch_add(found, Ordering::SeqCst);
            let keep = seen.len().min(MARK.len() - 1);
            seen.drain(..seen.len() - keep);
            server_out.write_all(&buf[..n]).await?;
        }
    };
    let down = tokio::io::copy(&mut server_in, &mut client_out);
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// A `POST` with the token that must succeed; its JSON answer.
async fn post(url: String, body: Value) -> Value {
    let r = reqwest::Client::new()
        .post(url)
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    r.json().await.unwrap()
}

/// A pulling worker declares `task_type` and never takes a task: tasks of that type are
/// accepted, and none can finish on this coordinator.
async fn declare_held(base: &str, task_type: &str) {
    post(
        format!("{base}/workers/lease"),
        json!({"worker": "idle", "task_types": [task_type]}),
    )
    .await;
}

/// Runs `n` tasks of `task_type` on the coordinator at `base`, as a pulling worker.
async fn run_held(base: &str, task_type: &str, n: usize) {
    let mut done = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while done < n {
        let leased = post(
            format!("{base}/workers/lease"),
            json!({"worker": "runner", "task_types": [task_type], "max_tasks": n,
                   "wait_secs": 1}),
        )
        .await;
        let reports: Vec<Value> = leased["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                json!({"task_id": t["task_id"], "token": t["token"], "status": "completed",
                       "result": t["payload"]})
            })
            .collect();
        if !reports.is_empty() {
            let answer = post(
                format!("{base}/workers/reports"),
                json!({"worker": "runner", "reports": reports}),
            )
            .await;
            done += answer["accepted"].as_u64().unwrap() as usize;
        }
        assert!(Instant::now() < deadline, "only {done} tasks ran");
    }
}

/// What a run of the submit tool printed, and how it ended.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn submit_command(args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(example_binary("submit"));
    command
        .args(args)
        .env_remove("WRANGLE_URL")
        .env_remove("WRANGLE_TOKEN_FILE")
        .env("WRANGLE_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn finish(child: tokio::process::Child) -> Run {
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the submit tool finished within 2 minutes")
        .unwrap();
    let run = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!(
        "submit exited {:?}\n--- stdout\n{}--- stderr (last 2000 bytes)\n{}",
        run.code,
        run.stdout,
        tail(&run.stderr)
    );
    run
}

fn tail(s: &str) -> &str {
    let mut at = s.len().saturating_sub(2000);
    while !s.is_char_boundary(at) {
        at += 1;
    }
    &s[at..]
}

async fn submit(args: &[&str]) -> Run {
    finish(submit_command(args).spawn().unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_follows_a_standby_to_the_leader_with_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let (_leader, leader) = coordinator(dir.path(), "memory").await;
    let standby = Standby::start(&leader, 0).await;

    let run = submit(&[
        "--url",
        &standby.url,
        "--count",
        "300",
        "--batch",
        "100",
        "echo",
        r#"{"n": 1}"#,
    ])
    .await;
    assert_eq!(run.code, Some(0));
    assert!(run.stdout.contains("300 completed, 0 failed"));
    assert!(run
        .stdout
        .contains(&format!("followed the leader to {leader}")));
    // Only the first request went through the standby: the leader was remembered.
    assert_eq!(standby.hits(), 1);
    assert!(standby.always_token.load(Ordering::SeqCst));

    // The leader named as the second of two coordinators, the first dead (nothing
    // listens there), given in the environment.
    let standby = Standby::start(&leader, 0).await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut command = submit_command(&["--count", "50", "echo", "2"]);
    command.env("WRANGLE_URL", format!("{dead},{}", standby.url));
    let run = finish(command.spawn().unwrap()).await;
    assert_eq!(run.code, Some(0));
    assert!(run.stdout.contains("50 completed, 0 failed"));
    assert!(run
        .stdout
        .contains(&format!("followed the leader to {leader}")));
    assert_eq!(standby.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_waits_out_a_takeover_and_three_hops_at_most() {
    let dir = tempfile::tempdir().unwrap();
    let (_leader, leader) = coordinator(dir.path(), "memory").await;

    // A standby that knows no leader for its first two answers (Retry-After: 1).
    let standby = Standby::start(&leader, 2).await;
    let run = submit(&["--url", &standby.url, "--count", "20", "echo", "3"]).await;
    assert_eq!(run.code, Some(0));
    assert!(run.stdout.contains("20 completed, 0 failed"));
    assert_eq!(
        standby.hits(),
        3,
        "two no_leader answers, then the redirect"
    );

    // Still no leader when the failover time runs out: a clear error.
    let standby = Standby::start(&leader, usize::MAX).await;
    let run = submit(&["--url", &standby.url, "--failover-secs", "1", "echo", "4"]).await;
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr
            .contains("no leading coordinator answered within 1 s")
            && run.stderr.contains("knows no leader yet"),
    );

    // Three redirects are followed; a fourth is refused.
    let third = Standby::start(&leader, 0).await;
    let second = Standby::start(&third.url, 0).await;
    let first = Standby::start(&second.url, 0).await;
    let run = submit(&["--url", &first.url, "echo", "5"]).await;
    assert_eq!(run.code, Some(0));
    assert!(run.stdout.contains("1 completed, 0 failed"));
    let before = Standby::start(&first.url, 0).await;
    let run = submit(&["--url", &before.url, "echo", "6"]).await;
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("more than 3 redirects"));
    assert!(run.stderr.contains("submit failed after 0 accepted tasks"));

    // Only http and https are followed.
    let elsewhere = Standby::start("ftp://127.0.0.1:21", 0).await;
    let run = submit(&["--url", &elsewhere.url, "echo", "7"]).await;
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("which is not an http or https URL"));
}

/// The coordinator dies while the tool waits for its tasks; another, on the same database,
/// takes over (the standby now redirects to it): the tool waits for the same tasks there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_waits_on_the_coordinator_that_took_over() {
    const TYPE: &str = "follow.held";
    const N: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("follow.db").display());
    let (mut old, old_url) = coordinator(dir.path(), &database).await;
    // The tool reaches the first coordinator through a relay that counts its waits.
    let relay = Relay::start(&old_url).await;
    let standby = Standby::start(&relay.url, 0).await;
    declare_held(&old_url, TYPE).await;

    let payload = r#"{"held": true}"#;
    let count = N.to_string();
    let tool = submit_command(&[
        "--url",
        &standby.url,
        "--failover-secs",
        "60",
        "--count",
        &count,
        TYPE,
        payload,
    ])
    .spawn()
    .unwrap();
    // Every wait is under way on the first coordinator (none can end there).
    let deadline = Instant::now() + Duration::from_secs(30);
    while relay.waits() < N {
        assert!(
            Instant::now() < deadline,
            "only {} waits were sent",
            relay.waits()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    old.0.kill().unwrap();
    old.0.wait().unwrap();
    let (_new, new_url) = coordinator(dir.path(), &database).await;
    standby.lead_to(&new_url);

    run_held(&new_url, TYPE, N).await;

    let run = finish(tool).await;
    assert_eq!(run.code, Some(0));
    assert!(run.stdout.contains(&format!("{N} completed, 0 failed")));
    assert!(run
        .stdout
        .contains(&format!("followed the leader to {new_url}")));
}

/// Two coordinator programs in failover on one PostgreSQL database: the tool is given the
/// leader (through a relay that counts its waits) and the standby; the leader is killed
/// while the tool waits; the standby (`503 no_leader` or a redirect to the dead leader
/// until it leads) takes over and the tool waits for the same tasks there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_rides_a_real_takeover() {
    const TYPE: &str = "follow.pg";
    const N: usize = 20;
    let Some(database) = databases::fresh_postgres("submit_follow").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut leader, leader_url) = coordinator(dir.path(), &database).await;
    wait_role(&leader_url, "leader").await;
    let (_standby, standby_url) = coordinator(dir.path(), &database).await;
    wait_role(&standby_url, "standby").await;
    declare_held(&leader_url, TYPE).await;
    let relay = Relay::start(&leader_url).await;

    let count = N.to_string();
    let urls = format!("{},{standby_url}", relay.url);
    let tool = submit_command(&[
        "--url",
        &urls,
        "--failover-secs",
        "60",
        "--count",
        &count,
        TYPE,
        "{}",
    ])
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while relay.waits() < N {
        assert!(
            Instant::now() < deadline,
            "only {} waits were sent",
            relay.waits()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    leader.0.kill().unwrap();
    leader.0.wait().unwrap();

    wait_role(&standby_url, "leader").await;
    run_held(&standby_url, TYPE, N).await;
    let run = finish(tool).await;
    assert_eq!(run.code, Some(0));
    assert!(run.stdout.contains(&format!("{N} completed, 0 failed")));
    assert!(run
        .stdout
        .contains(&format!("followed the leader to {standby_url}")));
    databases::drop_postgres(&database).await;
}

/// Waits until the coordinator at `base` says (`/readyz`) it has `role`.
async fn wait_role(base: &str, role: &str) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http
            .get(format!("{base}/readyz"))
            .bearer_auth(TOKEN)
            .send()
            .await
        {
            if r.json::<Value>().await.is_ok_and(|v| v["role"] == role) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{base} never became {role}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
