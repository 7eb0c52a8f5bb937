//! Failover benchmark: how long from the leader's death (SIGKILL) until the standby leads,
//! and until the first task runs under it, for the default lease and shorter ones.
//!
//! Each trial starts two coordinator programs on a fresh database of the PostgreSQL server
//! named by `DATABASE_URL`, gives the leader 2,000 `sleep` tasks, kills it with SIGKILL once
//! 100 have completed, and times the standby: its `/readyz` saying `leader`, and the first
//! attempt it stores with a start after the kill (read from the `attempts` table). The
//! coordinator program is the `coordinator` example, next to this one; build both first:
//!
//! ```text
//! cargo build --release --example coordinator --example failover_report
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!     cargo run --release --example failover_report -- --trials 5
//! ```
//!
//! It measures and prints; it asserts nothing.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sqlx::Connection;

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// Failover report: takeover times after the leader's SIGKILL.
#[derive(Debug, clap::Parser)]
#[command(name = "failover_report")]
struct Args {
    /// The PostgreSQL server (a database of its own is made there for each trial).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_name = "URL")]
    database_url: String,
    /// Kills per lease setting.
    #[arg(long, default_value_t = 5)]
    trials: usize,
}

/// (lease, renewal) in milliseconds: the default first.
const SETTINGS: [(u64, u64); 3] = [(3_000, 1_000), (1_000, 250), (400, 100)];

#[tokio::main]
async fn main() -> Res<()> {
    let args: Args = wrangle::settings::cli::parse();
    let program = sibling("coordinator")?;
    println!(
        "wrangle failover report: {} trials per setting, coordinator {}",
        args.trials,
        program.display()
    );
    println!(
        "\n  {:<16}{:>26}{:>26}",
        "lease / renew", "leading (min/med/max)", "first task (min/med/max)"
    );
    for (n, (lease, renew)) in SETTINGS.into_iter().enumerate() {
        let mut leading = Vec::new();
        let mut first = Vec::new();
        for trial in 0..args.trials {
            let name = format!("wrangle_failover_report_{}_{n}_{trial}", std::process::id());
            let url = fresh_database(&args.database_url, &name).await?;
            let result = one_kill(&program, &url, lease, renew).await;
            drop_database(&args.database_url, &name).await?;
            let (l, f) = result?;
            leading.push(l);
            first.push(f);
        }
        println!(
            "  {:<16}{:>26}{:>26}",
            format!("{lease} / {renew} ms"),
            spread(&mut leading),
            spread(&mut first)
        );
    }
    println!(
        "\nleading: SIGKILL to the standby's /readyz saying leader; first task: SIGKILL to the \
         first attempt the new leader stored (recovery included)."
    );
    Ok(())
}

/// The example `name` built beside this one.
fn sibling(name: &str) -> Res<PathBuf> {
    let path = std::env::current_exe()?
        .parent()
        .ok_or("no examples directory")?
        .join(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: cargo build --release --example {name}",
            path.display()
        )
        .into())
    }
}

fn spread(v: &mut [Duration]) -> String {
    v.sort();
    let ms = |d: Duration| d.as_millis();
    format!(
        "{} / {} / {} ms",
        ms(v[0]),
        ms(v[v.len() / 2]),
        ms(v[v.len() - 1])
    )
}

/// A coordinator program, killed when dropped.
struct Coordinator {
    child: Child,
    http: u16,
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Coordinator {
    fn start(program: &Path, url: &str, lease: u64, renew: u64) -> Res<Self> {
        let http = free_port()?;
        let child = Command::new(program)
            .args([
                "--bind",
                &format!("127.0.0.1:{http}"),
                "--database-url",
                url,
            ])
            .args(["--leader-lease-ms", &lease.to_string()])
            .args(["--leader-renew-ms", &renew.to_string()])
            .args(["--min-workers", "1", "--max-workers", "1"])
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Self { child, http })
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    async fn readiness(&self, http: &reqwest::Client) -> Option<Value> {
        let r = http.get(self.url("/readyz")).send().await.ok()?;
        r.json().await.ok()
    }

    async fn wait_for(&self, http: &reqwest::Client, what: impl Fn(&Value) -> bool) -> Res<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.readiness(http).await.is_some_and(|v| what(&v)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("coordinator on {} never got ready", self.http).into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn free_port() -> Res<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One trial: (SIGKILL to the standby leading, SIGKILL to the first task it started).
async fn one_kill(program: &Path, url: &str, lease: u64, renew: u64) -> Res<(Duration, Duration)> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let mut a = Coordinator::start(program, url, lease, renew)?;
    a.wait_for(&http, |v| v["role"] == "leader").await?;
    let b = Coordinator::start(program, url, lease, renew)?;
    let leader = a.url("");
    b.wait_for(&http, |v| {
        v["role"] == "standby" && v["leader"] == leader.as_str()
    })
    .await?;
    let tasks: Vec<Value> = (0..2_000)
        .map(|_| json!({"task_type": "sleep", "payload": {"ms": 50}}))
        .collect();
    let r = http
        .post(a.url("/tasks"))
        .json(&json!({ "tasks": tasks }))
        .send()
        .await?;
    if !r.status().is_success() {
        return Err(format!("submit: {}", r.status()).into());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats: Value = http.get(a.url("/stats")).send().await?.json().await?;
        if stats["queue"]["completed"].as_u64().unwrap_or(0) >= 100 {
            break;
        }
        if Instant::now() > deadline {
            return Err("the leader ran no tasks".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed_ms = unix_ms();
    a.child.kill()?;
    let killed = Instant::now();
    a.child.wait()?;
    b.wait_for(&http, |v| v["role"] == "leader").await?;
    let leading = killed.elapsed();
    let mut db = sqlx::PgConnection::connect(url).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let started: i64 = loop {
        let first: Option<i64> =
            sqlx::query_scalar("SELECT MIN(started_at_ms) FROM attempts WHERE started_at_ms > $1")
                .bind(killed_ms)
                .fetch_one(&mut db)
                .await?;
        if let Some(ms) = first {
            break ms;
        }
        if Instant::now() > deadline {
            return Err("no task ran under the new leader".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    db.close().await?;
    drop(b);
    let first = Duration::from_millis((started - killed_ms).max(0) as u64);
    Ok((leading, first))
}

async fn fresh_database(server: &str, name: &str) -> Res<String> {
    let mut admin = sqlx::PgConnection::connect(server).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    let base = server.split('?').next().unwrap_or(server);
    let (root, _) = base.rsplit_once('/').ok_or("a database URL ends in /DB")?;
    Ok(format!("{root}/{name}"))
}

async fn drop_database(server: &str, name: &str) -> Res<()> {
    let mut admin = sqlx::PgConnection::connect(server).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    Ok(())
}
