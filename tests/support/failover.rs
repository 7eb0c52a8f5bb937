//! The failover tests' programs and checks: coordinator programs in failover on one
//! PostgreSQL database, node programs given every coordinator's address, and what the
//! database says of the run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

pub(crate) use super::cluster::submit_tasks as submit;
use super::cluster::{until, Api, COOKIE};
use super::databases;
use super::net::free_port;
use super::programs::{example_binary, Program};

/// A coordinator program in failover on the database at `url`.
pub(crate) struct Coord {
    pub(crate) process: Program,
    pub(crate) http: u16,
    pub(crate) cluster: u16,
    pub(crate) name: &'static str,
}

impl Api for Coord {
    fn url(&self, path: &str) -> String {
        Coord::url(self, path)
    }
}

impl Coord {
    pub(crate) fn start(
        dir: &Path,
        name: &'static str,
        url: &str,
        lease_ms: u64,
        renew_ms: u64,
    ) -> Self {
        Self::start_with(dir, name, url, (lease_ms, renew_ms), &[])
    }

    /// Started with extra environment variables (settings).
    pub(crate) fn start_with(
        dir: &Path,
        name: &'static str,
        url: &str,
        (lease_ms, renew_ms): (u64, u64),
        env: &[(&str, &str)],
    ) -> Self {
        let (http, cluster) = (free_port(), free_port());
        let cookie = dir.join(format!("{name}.cookie"));
        std::fs::write(&cookie, format!("{COOKIE}\n")).unwrap();
        let url = format!("{url}?application_name=wrangle_{name}");
        let child = Command::new(example_binary("coordinator"))
            .args(["--bind", &format!("127.0.0.1:{http}")])
            .args(["--database-url", &url])
            .args(["--cluster-listen", &format!("127.0.0.1:{cluster}")])
            .arg("--cookie-file")
            .arg(&cookie)
            .args(["--leader-lease-ms", &lease_ms.to_string()])
            .args(["--leader-renew-ms", &renew_ms.to_string()])
            .args(["--min-workers", "1", "--max-workers", "1"])
            .env_remove("DATABASE_URL")
            .envs(env.iter().copied())
            .env("WRANGLE_NODE_TIMEOUT_MS", "1500")
            .env("RUST_LOG", "warn,wrangle=info")
            .env("NO_COLOR", "1")
            .current_dir(dir)
            .stdout(log(&dir.join(format!("{name}.log"))))
            .stderr(log(&dir.join(format!("{name}.err"))))
            .spawn()
            .unwrap();
        Self {
            process: Program(child),
            http,
            cluster,
            name,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    /// `/readyz`'s role (`leader`, `standby`, ...), or `None` while it does not answer.
    pub(crate) async fn role(&self, http: &reqwest::Client) -> Option<String> {
        let r = http.get(self.url("/readyz")).send().await.ok()?;
        let body: Value = r.json().await.ok()?;
        body["role"].as_str().map(str::to_string)
    }

    pub(crate) async fn stats(&self, http: &reqwest::Client) -> Option<Value> {
        let r = http.get(self.url("/stats")).send().await.ok()?;
        r.status().is_success().then_some(())?;
        r.json().await.ok()
    }

    pub(crate) fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.process.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} {}", self.name);
    }

    pub(crate) fn log_text(&self, dir: &Path) -> String {
        std::fs::read_to_string(dir.join(format!("{}.log", self.name))).unwrap_or_default()
            + &std::fs::read_to_string(dir.join(format!("{}.err", self.name))).unwrap_or_default()
    }
}

pub(crate) fn log(path: &Path) -> std::fs::File {
    std::fs::File::create(path).unwrap()
}

/// A node program serving `journal` tasks, given every coordinator's cluster address.
pub(crate) fn node(dir: &Path, name: &str, coordinators: &[&Coord]) -> (Program, PathBuf) {
    let journal = dir.join(format!("{name}.journal"));
    let cookie = dir.join(format!("{name}.cookie"));
    std::fs::write(&cookie, COOKIE).unwrap();
    let join: Vec<String> = coordinators
        .iter()
        .map(|c| format!("127.0.0.1:{}", c.cluster))
        .collect();
    let child = Command::new(example_binary("node"))
        .args(["--join", &join.join(",")])
        .arg("--cookie-file")
        .arg(&cookie)
        .args(["--name", name])
        .args(["--workers", "2", "--slots", "8", "--heartbeat-ms", "200"])
        .arg("--journal")
        .arg(&journal)
        .env("RUST_LOG", "warn,wrangle=info")
        .env("NO_COLOR", "1")
        .stdout(log(&dir.join(format!("{name}.log"))))
        .stderr(log(&dir.join(format!("{name}.err"))))
        .spawn()
        .unwrap();
    (Program(child), journal)
}

/// Records the `application_name` of every session that writes a task or attempt row.
pub(crate) async fn audit_writes(url: &str) {
    databases::execute(
        url,
        "CREATE TABLE write_audit (app TEXT NOT NULL, tbl TEXT NOT NULL, \
             at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()); \
         CREATE FUNCTION audit_write() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             INSERT INTO write_audit (app, tbl) \
             VALUES (current_setting('application_name'), TG_TABLE_NAME); \
             RETURN NULL; END $$; \
         CREATE TRIGGER audit_tasks AFTER INSERT OR UPDATE OR DELETE ON tasks \
             FOR EACH ROW EXECUTE FUNCTION audit_write(); \
         CREATE TRIGGER audit_attempts AFTER INSERT OR UPDATE OR DELETE ON attempts \
             FOR EACH ROW EXECUTE FUNCTION audit_write();",
    )
    .await;
}

/// An HTTP client that gives up on a frozen coordinator.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

/// Coordinator `a`, leading, and `b`, standing by, with this lease and renewal.
pub(crate) async fn leader_and_standby(
    dir: &Path,
    url: &str,
    lease_ms: u64,
    renew_ms: u64,
    http: &reqwest::Client,
) -> (Coord, Coord) {
    leader_and_standby_with(dir, url, (lease_ms, renew_ms), &[], http).await
}

/// [`leader_and_standby`], both started with these extra environment variables.
pub(crate) async fn leader_and_standby_with(
    dir: &Path,
    url: &str,
    lease: (u64, u64),
    env: &[(&str, &str)],
    http: &reqwest::Client,
) -> (Coord, Coord) {
    let a = Coord::start_with(dir, "a", url, lease, env);
    wait_role(http, &a, "leader", Duration::from_secs(60)).await;
    let b = Coord::start_with(dir, "b", url, lease, env);
    wait_role(http, &b, "standby", Duration::from_secs(60)).await;
    (a, b)
}

pub(crate) async fn wait_role(http: &reqwest::Client, c: &Coord, role: &str, timeout: Duration) {
    until(&format!("{} to be {role}", c.name), timeout, || async {
        c.role(http).await.as_deref() == Some(role)
    })
    .await;
}

pub(crate) async fn stored(url: &str, sql: &str) -> i64 {
    databases::count(url, sql).await
}

/// Waits until the database holds exactly `tasks` tasks, every one completed: nothing
/// lost, nothing left over.
pub(crate) async fn every_task_completed(url: &str, tasks: usize, timeout: Duration) {
    let done = "SELECT COUNT(*) FROM tasks WHERE status = 'completed'";
    until("every task completed", timeout, || async {
        stored(url, done).await == tasks as i64
    })
    .await;
    assert_eq!(
        stored(url, "SELECT COUNT(*) FROM tasks").await,
        tasks as i64
    );
}

pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The ids of the tasks stored as completed.
pub(crate) async fn completed_ids(url: &str) -> std::collections::HashSet<String> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT id::text FROM tasks WHERE status = 'completed'")
            .fetch_all(&mut c)
            .await
            .unwrap();
    c.close().await.unwrap();
    ids.into_iter().collect()
}

/// Online node programs as the coordinator lists them (0 while it does not answer).
pub(crate) async fn cluster_nodes_online(http: &reqwest::Client, c: &Coord) -> usize {
    match http.get(c.url("/nodes")).send().await {
        Ok(r) if r.status().is_success() => r
            .json::<Vec<Value>>()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|n| n["status"] == "online" && n["role"] != "coordinator")
            .count(),
        _ => 0,
    }
}

/// The index of the coordinator that says it leads, waiting up to `timeout` for one.
pub(crate) async fn leader_of(
    coords: &[Coord],
    http: &reqwest::Client,
    timeout: Duration,
) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        for (i, c) in coords.iter().enumerate() {
            if c.role(http).await.as_deref() == Some("leader") {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no leader within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
