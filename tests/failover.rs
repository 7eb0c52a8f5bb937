//! Failover with real processes on a real PostgreSQL server: two coordinator programs
//! share one database, one leads and one stands by; node programs are given both cluster
//! addresses. Killing the leader (SIGKILL) hands the run to the standby, whose nodes
//! re-join it by themselves; freezing the leader (SIGSTOP) past its lease hands the run
//! over too, and the frozen leader, woken, commits nothing and steps down.
//!
//! Each coordinator connects with its own `application_name`, so the database itself says
//! who wrote what: an audit trigger records the writer of every task and attempt row.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[path = "support/net.rs"]
mod net;
use net::free_port;
#[path = "support/programs.rs"]
mod programs;

#[path = "support/cluster.rs"]
#[allow(dead_code)]
mod cluster;
#[path = "support/databases.rs"]
#[allow(dead_code)]
mod databases;
#[path = "support/failover.rs"]
mod failover;
#[path = "support/pg_server.rs"]
mod pg_server;
use cluster::{executions, until};
use failover::*;

/// One scenario at a time: each runs several programs and times leases of a second or
/// three, which a machine shared with the other scenarios would stretch.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Two coordinators and two nodes; 10,000 tasks; the leader SIGKILLed mid-run. The standby
/// takes over with the default lease (3 s, renewed every second), the nodes re-join it,
/// and every task completes; only tasks in flight at the kill run twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_and_every_task_completes() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(url) = databases::fresh_postgres("failover_kill").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let http = client();
    let (mut a, b) = leader_and_standby(dir.path(), &url, 3_000, 1_000, &http).await;
    until(
        "the standby to know the leader",
        Duration::from_secs(30),
        || async {
            let r = http.get(b.url("/readyz")).send().await;
            match r {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["leader"] == a.url("")),
                Err(_) => false,
            }
        },
    )
    .await;
    // The standby sends clients to the leader.
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(b.url("/tasks?limit=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        a.url("/tasks?limit=1")
    );

    let (_n1, j1) = node(dir.path(), "n1", &[&a, &b]);
    let (_n2, j2) = node(dir.path(), "n2", &[&a, &b]);
    until(
        "both nodes on the leader",
        Duration::from_secs(30),
        || async { cluster_nodes_online(&http, &a).await == 2 },
    )
    .await;

    const TASKS: usize = 10_000;
    let mut ids = Vec::with_capacity(TASKS);
    for _ in 0..TASKS / 500 {
        let batch = (0..500)
            .map(|_| json!({"task_type": "journal", "payload": {"ms": 20}, "retries": 5}))
            .collect();
        ids.extend(submit(&http, &a, batch).await);
    }
    until(
        "a third of the tasks done",
        Duration::from_secs(120),
        || async {
            a.stats(&http)
                .await
                .and_then(|s| s["queue"]["completed"].as_u64())
                .is_some_and(|n| n >= (TASKS / 3) as u64)
        },
    )
    .await;

    let killed_ms = unix_ms();
    a.process.0.kill().unwrap(); // SIGKILL
    let killed = Instant::now();
    a.process.0.wait().unwrap();
    // What the dead leader had stored as done: the standby cannot lead for a while yet (the
    // lease was renewed within the last second and lasts 3), so this is its last word.
    let done_at_kill = completed_ids(&url).await;
    wait_role(&http, &b, "leader", Duration::from_secs(30)).await;
    let leading = killed.elapsed();
    // The first attempt started after the kill, as the new leader stored it.
    let first_start = format!(
        "SELECT COALESCE(MAX(started_at_ms), 0) FROM (SELECT MIN(started_at_ms) AS \
         started_at_ms FROM attempts WHERE started_at_ms > {killed_ms}) AS first"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let started_ms = loop {
        let ms = stored(&url, &first_start).await;
        if ms > 0 {
            break ms;
        }
        assert!(
            Instant::now() < deadline,
            "no task ran under the new leader"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let first_task = Duration::from_millis((started_ms - killed_ms).max(0) as u64);
    until(
        "both nodes on the new leader",
        Duration::from_secs(30),
        || async { cluster_nodes_online(&http, &b).await == 2 },
    )
    .await;
    let rejoined = killed.elapsed();
    every_task_completed(&url, TASKS, Duration::from_secs(180)).await;

    let runs = executions(&[&j1, &j2]);
    let missing = ids.iter().filter(|id| !runs.contains_key(*id)).count();
    assert_eq!(missing, 0, "tasks completed without running on a node");
    let twice = ids
        .iter()
        .filter(|id| runs.get(*id).is_some_and(|r| r.len() > 1))
        .count();
    println!(
        "takeover after SIGKILL: standby leading in {leading:?}, first task running in \
         {first_task:?}, both nodes re-joined in {rejoined:?}; {twice} of {TASKS} tasks ran \
         twice"
    );
    // Only tasks in flight at the kill may run twice: none that the dead leader had
    // stored as completed.
    let rerun_after_done: Vec<&String> = ids
        .iter()
        .filter(|id| runs.get(*id).is_some_and(|r| r.len() > 1) && done_at_kill.contains(*id))
        .collect();
    assert!(
        rerun_after_done.is_empty(),
        "{} tasks stored as completed before the kill ran again, e.g. {}",
        rerun_after_done.len(),
        rerun_after_done[0]
    );
    assert!(
        !done_at_kill.is_empty() && done_at_kill.len() < TASKS,
        "the kill came mid-run: {} of {TASKS} stored as completed",
        done_at_kill.len()
    );
    drop(b);
    databases::drop_postgres(&url).await;
}

/// Split brain: the leader frozen (SIGSTOP) past its lease while its tasks run; the
/// standby takes over. Woken (SIGCONT), the old leader finishes its tasks but commits
/// nothing (the database's audit of every task and attempt row says so) and steps down to
/// standby, saying why in `/failover` and its log; the new leader completes every task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_commits_nothing_after_the_takeover_and_steps_down() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(url) = databases::fresh_postgres("failover_freeze").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let http = client();
    let (a, b) = leader_and_standby(dir.path(), &url, 1_500, 500, &http).await;
    audit_writes(&url).await;

    // 40 tasks of 3 s on the leader's one local worker (16 at a time).
    let tasks = (0..40)
        .map(|_| json!({"task_type": "sleep", "payload": {"ms": 3000}, "retries": 5}))
        .collect();
    let ids = submit(&http, &a, tasks).await;
    until(
        "tasks running on the leader",
        Duration::from_secs(30),
        || async {
            a.stats(&http)
                .await
                .and_then(|s| s["queue"]["running"].as_u64())
                .is_some_and(|n| n > 0)
        },
    )
    .await;

    a.signal("STOP");
    wait_role(&http, &b, "leader", Duration::from_secs(30)).await;
    let takeover_epoch: i64 =
        stored(&url, "SELECT epoch FROM coordinator_leader WHERE id = 1").await;
    // Past the frozen leader's tasks' end, had it been running.
    tokio::time::sleep(Duration::from_secs(1)).await;
    a.signal("CONT");
    wait_role(&http, &a, "standby", Duration::from_secs(30)).await;
    let failover: Value = http
        .get(a.url("/failover"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(failover["role"], "standby", "{failover}");
    assert!(
        failover["stepped_down"]["reason"].as_str().is_some(),
        "the old leader says why it stepped down: {failover}"
    );
    assert_eq!(failover["leader_url"], b.url("").trim_end_matches('/'));
    let log = a.log_text(dir.path());
    assert!(
        log.contains("stepping down"),
        "the old leader's log says it stepped down"
    );
    for line in log
        .lines()
        .filter(|l| l.contains("refused") || l.contains("lost") || l.contains("stepping"))
        .take(8)
    {
        println!("old leader: {line}");
    }

    every_task_completed(&url, ids.len(), Duration::from_secs(60)).await;
    // Nothing the old leader wrote landed after the takeover.
    let after = format!(
        "SELECT COUNT(*) FROM write_audit WHERE app = 'wrangle_a' AND at >= \
         (SELECT acquired_at FROM coordinator_leader WHERE id = 1 AND epoch = {takeover_epoch})"
    );
    assert_eq!(
        stored(&url, &after).await,
        0,
        "the frozen leader wrote after the takeover"
    );
    // The new leader did write (the audit works).
    assert!(
        stored(
            &url,
            "SELECT COUNT(*) FROM write_audit WHERE app = 'wrangle_b'"
        )
        .await
            > 0,
        "the new leader's writes are audited"
    );
    drop((a, b));
    databases::drop_postgres(&url).await;
}

/// Whichever coordinator leads is SIGKILLed ten times within a minute (and restarted, to
/// stand by again); the run of 3,000 tasks still completes with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_ten_times_in_a_minute_loses_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(url) = databases::fresh_postgres("failover_flap").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let http = client();
    let (lease, renew) = (1_000, 250);
    let mut coords = [
        Coord::start(dir.path(), "a", &url, lease, renew),
        Coord::start(dir.path(), "b", &url, lease, renew),
    ];
    let mut at = leader_of(&coords, &http, Duration::from_secs(60)).await;
    const TASKS: usize = 3_000;
    let tasks = (0..TASKS)
        .map(|_| json!({"task_type": "sleep", "payload": {"ms": 100}, "retries": 20}))
        .collect();
    submit(&http, &coords[at], tasks).await;
    // Workflow runs too, defined over HTTP (so each new leader finds the definition in
    // the store): three steps of 400 ms, journaled one by one across the takeovers.
    const RUNS: usize = 20;
    let step = |name: &str| {
        json!({"kind": "task", "name": name, "task_type": "sleep", "input": {"key": "p"},
               "output_key": name})
    };
    let definition = json!({"name": "three", "steps": [step("one"), step("two"), step("three")]});
    let r = http
        .post(coords[at].url("/workflows"))
        .json(&definition)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "register: {}", r.status());
    for _ in 0..RUNS {
        let r = http
            .post(coords[at].url("/workflows/three/runs"))
            .json(&json!({"p": {"ms": 400}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }

    let started = Instant::now();
    for _ in 0..10 {
        let i = at;
        let name = coords[i].name;
        coords[i].process.0.kill().unwrap();
        coords[i].process.0.wait().unwrap();
        at = leader_of(&coords, &http, Duration::from_secs(30)).await;
        assert_ne!(at, i, "the killed coordinator answers as leader");
        // Back as a standby, on fresh ports, for the next kill.
        coords[i] = Coord::start(dir.path(), name, &url, lease, renew);
        wait_role(&http, &coords[i], "standby", Duration::from_secs(30)).await;
        // Let it run a little under each leader.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let flapping = started.elapsed();
    println!("ten leader kills in {flapping:?}");
    assert!(
        flapping < Duration::from_secs(60),
        "the ten kills took {flapping:?}, not a minute"
    );
    until(
        "every workflow run completed",
        Duration::from_secs(120),
        || async {
            stored(
                &url,
                "SELECT COUNT(*) FROM workflow_runs WHERE status = 'completed'",
            )
            .await
                == RUNS as i64
        },
    )
    .await;
    assert_eq!(
        stored(&url, "SELECT COUNT(*) FROM workflow_runs").await,
        RUNS as i64
    );
    // The tasks and each run's three steps all completed (a step re-queued at a takeover
    // may be a task of its own), none failed or left over.
    until("every task completed", Duration::from_secs(120), || async {
        stored(
            &url,
            "SELECT COUNT(*) FROM tasks WHERE status <> 'completed'",
        )
        .await
            == 0
    })
    .await;
    let total = stored(&url, "SELECT COUNT(*) FROM tasks").await;
    assert!(total >= (TASKS + 3 * RUNS) as i64, "{total} tasks stored");
    println!("{total} tasks stored for {TASKS} tasks and {RUNS} runs of 3 steps");
    let epoch = stored(&url, "SELECT epoch FROM coordinator_leader WHERE id = 1").await;
    assert!(
        epoch >= 11,
        "ten takeovers after the first lead: epoch {epoch}"
    );
    drop(coords);
    databases::drop_postgres(&url).await;
}

/// The database itself restarts mid-run (a server of the test's own, stopped for longer
/// than the lease): both coordinator programs live through it, exactly one leads
/// afterwards, and every task completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_coordinators_survive_a_database_restart_and_one_leads() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(server) = pg_server::PgServer::start(free_port()) else {
        return;
    };
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let http = client();
    let (mut a, mut b) = leader_and_standby(dir.path(), &url, 1_500, 500, &http).await;
    const TASKS: usize = 1_000;
    let tasks = (0..TASKS)
        .map(|_| json!({"task_type": "sleep", "payload": {"ms": 100}, "retries": 20}))
        .collect();
    submit(&http, &a, tasks).await;
    until("some tasks done", Duration::from_secs(60), || async {
        a.stats(&http)
            .await
            .and_then(|s| s["queue"]["completed"].as_u64())
            .is_some_and(|n| n >= 50)
    })
    .await;

    server.down();
    // Past the lease: the leader cannot renew and must not go on as if it still led.
    tokio::time::sleep(Duration::from_secs(4)).await;
    server.up();

    let deadline = Instant::now() + Duration::from_secs(60);
    let roles = loop {
        let roles = (a.role(&http).await, b.role(&http).await);
        if matches!(
            (roles.0.as_deref(), roles.1.as_deref()),
            (Some("leader"), Some("standby")) | (Some("standby"), Some("leader"))
        ) {
            break roles;
        }
        assert!(
            Instant::now() < deadline,
            "no single leader after the database restart: {roles:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for c in [&mut a, &mut b] {
        assert!(
            c.process.0.try_wait().unwrap().is_none(),
            "coordinator {} died with the database: {}",
            c.name,
            c.log_text(dir.path())
        );
    }
    every_task_completed(&url, TASKS, Duration::from_secs(120)).await;
    println!(
        "after the database restart: a {:?}, b {:?}",
        roles.0, roles.1
    );
    drop((a, b));
}

/// A standby's own routes (`/failover`, `/stats`, `/metrics`) ask for a token with the
/// `read` scope as the leader's do; the public probes stay public; every other route is
/// redirected to the leader, which checks the token itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_answers_its_own_routes_only_with_a_token() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(url) = databases::fresh_postgres("failover_tokens").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let http = client();
    const TOKEN: &str = "standby-t0ken-read";
    let env = [
        (
            "WRANGLE_TOKENS",
            "read=standby-t0ken-read,submit=standby-t0ken-submit",
        ),
        // 100 requests per second, bursts of 200: more than this test sends, until the
        // flood at its end.
        ("WRANGLE_RATE_LIMIT", "100"),
    ];
    let (a, b) = leader_and_standby_with(dir.path(), &url, (1_500, 500), &env, &http).await;

    let status = |path: &'static str, token: Option<&'static str>| {
        let mut request = http.get(b.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    for path in ["/failover", "/stats", "/metrics"] {
        assert_eq!(status(path, None).await, 401, "{path} without a token");
        assert_eq!(
            status(path, Some("wrong")).await,
            401,
            "{path}, a wrong token"
        );
        // A valid token without the read scope is refused too, naming the scope (403).
        let other = status(path, Some("standby-t0ken-submit")).await;
        assert_eq!(other, 403, "{path}, a token without the read scope");
        assert_eq!(
            status(path, Some(TOKEN)).await,
            200,
            "{path} with the token"
        );
    }
    assert_eq!(status("/healthz", None).await, 200);
    assert_eq!(status("/readyz", None).await, 503, "a standby is not ready");

    // Everything else goes to the leader, whose own checks then apply.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let answer = no_redirects.get(b.url("/tasks")).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 307);
    let location = answer.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(location, a.url("/tasks"));
    let at_leader = no_redirects.get(&location).send().await.unwrap();
    assert_eq!(
        at_leader.status().as_u16(),
        401,
        "the leader checks the token"
    );
    let failover: Value = http
        .get(b.url("/failover"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(failover["role"], "standby", "{failover}");
    // The member list says who leads by the lease, even before the leader's next renewal
    // rewrites its own row.
    let leaders: Vec<&Value> = failover["coordinators"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "leader")
        .collect();
    assert_eq!(leaders.len(), 1, "{failover}");
    assert_eq!(leaders[0]["name"], failover["leader"], "{failover}");

    // The standby's own routes are guarded as the leader's are: a rebound `Host` (DNS
    // rebinding) is answered 421 and a foreign `Origin` 403, even with the token.
    for (path, header, value, refused) in [
        ("/stats", "host", "attacker.example:7700", 421),
        ("/failover", "origin", "http://attacker.example", 403),
    ] {
        let answer = http
            .get(b.url(path))
            .header(header, value)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(
            answer.status().as_u16(),
            refused,
            "{path} with {header}: {value}"
        );
    }
    // And rate-limited: a flood of 400 requests meets 429s.
    let mut limited = 0;
    for _ in 0..400 {
        if status("/healthz", None).await == 429 {
            limited += 1;
        }
    }
    assert!(limited > 0, "no request of the flood was refused");
}
