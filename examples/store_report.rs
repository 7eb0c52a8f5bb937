//! Durable-state benchmark: what storing every task costs, measured in one run.
//!
//! - full task lifecycle per second (submit, lease, complete, and every change committed)
//!   in memory, on an SQLite file and on PostgreSQL, with no-op (`echo`) tasks submitted in
//!   batches of 10,000 (best of 3 runs), and the ratio of each to in-memory;
//! - the same with single-task submits from 256 concurrent clients, each `submit` returning
//!   only once its task is committed: what group commit buys;
//! - recovery: how long a queue takes to start on a store holding 100,000 unfinished tasks.
//!
//! PostgreSQL is measured when `DATABASE_URL` names a server: the report makes its own
//! database there (`wrangle_bench_PID`) and drops it at the end. SQLite uses a file in a
//! temporary directory, with `synchronous=FULL` (an fsync per commit).
//!
//! ```text
//! cargo run --release --example store_report
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo run --release --example store_report
//! ```

use std::error::Error;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sqlx::Connection;
use wrangle::prelude::*;
use wrangle::{QueueConfig, QueueRef, Store, StoreConfig};

#[path = "../benches/support/batches.rs"]
#[allow(dead_code)] // shared with the other reports; this one uses part of it
mod batches;
#[path = "../benches/support/report.rs"]
#[allow(dead_code)] // shared with the other reports; this one uses part of it
mod report;
use report::{cpu_time, load_average, per_s, target};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

const LIFECYCLE_TASKS: usize = 100_000;
const CHUNK: usize = 10_000;
const RUNS: usize = 3;
const SINGLE_TASKS: usize = 50_000;
const CLIENTS: usize = 256;
const RECOVERED: usize = 100_000;

/// Store report: commits and rows per second on each backend.
#[derive(Debug, clap::Parser)]
#[command(name = "store_report")]
struct Args {
    /// A PostgreSQL server to measure too (a database of its own is made on it).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_name = "URL")]
    database_url: Option<String>,
}

#[tokio::main]
async fn main() -> Res<()> {
    let args: Args = wrangle::settings::cli::parse();
    tokio::spawn(run(args)).await?
}

/// Where one backend's figures are measured.
struct Backend {
    name: &'static str,
    url: Option<String>,
}

struct Figures {
    batched: f64,
    cpu_per_task: Duration,
    single: f64,
    commits_per_1k: f64,
    rows_per_task: f64,
}

async fn run(args: Args) -> Res<()> {
    println!("wrangle store report (load average {})", load_average());
    let dir = std::env::temp_dir().join(format!("wrangle-store-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let postgres = match args.database_url {
        Some(url) if url.starts_with("postgres") => Some(bench_database(&url).await?),
        _ => None,
    };
    let mut backends = vec![
        Backend {
            name: "memory",
            url: None,
        },
        Backend {
            name: "sqlite",
            url: Some(format!("sqlite://{}", dir.join("lifecycle.db").display())),
        },
    ];
    if let Some((_, url)) = &postgres {
        backends.push(Backend {
            name: "postgres",
            url: Some(url.clone()),
        });
    } else {
        println!("PostgreSQL not measured: DATABASE_URL names no postgres:// server");
    }

    let mut memory_rate = 0.0;
    let mut rows = Vec::new();
    for b in &backends {
        let f = lifecycle(b.url.as_deref()).await?;
        if b.name == "memory" {
            memory_rate = f.batched;
        }
        rows.push((b.name, f));
    }
    println!(
        "\nfull lifecycle, no-op tasks ({LIFECYCLE_TASKS} in batches of {CHUNK}, best of {RUNS}; \
         then {SINGLE_TASKS} single submits from {CLIENTS} clients):"
    );
    println!(
        "  {:<10}{:>12}{:>10}{:>12}{:>11}{:>12}{:>18}",
        "backend",
        "batched/s",
        "vs memory",
        "CPU/task",
        "rows/task",
        "single/s",
        "commits/1k tasks"
    );
    for (name, f) in &rows {
        println!(
            "  {name:<10}{:>12}{:>9.2}x{:>9.1} us{:>11.2}{:>12}{:>18}",
            per_s(f.batched),
            f.batched / memory_rate,
            f.cpu_per_task.as_secs_f64() * 1e6,
            f.rows_per_task,
            per_s(f.single),
            if *name == "memory" {
                "-".to_string()
            } else {
                format!("{:.1}", f.commits_per_1k)
            }
        );
    }

    let mut recovery = Vec::new();
    for b in backends.iter().filter(|b| b.url.is_some()) {
        let url = b.url.as_deref().unwrap_or_default();
        let url = if b.name == "sqlite" {
            format!("sqlite://{}", dir.join("recovery.db").display())
        } else {
            url.to_string()
        };
        recovery.push((b.name, recover(&url).await?));
    }

    println!("\ntargets:");
    for (name, f) in &rows {
        match *name {
            "sqlite" => target(
                "SQLite lifecycle/s",
                per_s(f.batched),
                ">= 100,000",
                f.batched >= 100_000.0,
            ),
            "postgres" => target(
                "PostgreSQL lifecycle/s",
                per_s(f.batched),
                ">= 50,000",
                f.batched >= 50_000.0,
            ),
            _ => {}
        }
    }
    for (name, took) in &recovery {
        target(
            &format!("recovery of {} tasks ({name})", per_s(RECOVERED as f64)),
            format!("{:.3} s", took.as_secs_f64()),
            "< 2 s",
            *took < Duration::from_secs(2),
        );
    }

    std::fs::remove_dir_all(&dir)?;
    if let Some((server, url)) = postgres {
        drop_database(&server, &url).await?;
    }
    Ok(())
}

/// Lifecycle throughput on `url` (in memory for `None`).
async fn lifecycle(url: Option<&str>) -> Res<Figures> {
    let mut config = CoordinatorConfig {
        min_workers: 2,
        max_workers: 2,
        auto_scale: false,
        store: url.map(StoreConfig::new),
        ..CoordinatorConfig::default()
    };
    config.worker.max_concurrent_tasks = 64;
    let coordinator = Coordinator::builder()
        .config(config)
        .handler("echo", wrangle_actors::Echo)
        .start()
        .await?;
    // Warm-up: the tables and caches of the first run are not the steady state.
    batched(&coordinator, CHUNK).await?;
    let rows = |c: &Coordinator| {
        c.store()
            .map_or(0, |s| s.writer_stats().task_rows.load(Ordering::Relaxed))
    };
    let rows_before = rows(&coordinator);
    let mut best = (0.0f64, Duration::ZERO);
    for _ in 0..RUNS {
        let cpu = cpu_time()?;
        let took = batched(&coordinator, LIFECYCLE_TASKS).await?;
        let cpu = cpu_time()?.saturating_sub(cpu);
        let rate = LIFECYCLE_TASKS as f64 / took.as_secs_f64();
        if rate > best.0 {
            best = (rate, cpu / LIFECYCLE_TASKS as u32);
        }
    }
    let rows_per_task = (rows(&coordinator) - rows_before) as f64 / (RUNS * LIFECYCLE_TASKS) as f64;
    let commits = |c: &Coordinator| {
        c.store()
            .map_or(0, |s| s.writer_stats().commits.load(Ordering::Relaxed))
    };
    let before = commits(&coordinator);
    let took = single_submits(&coordinator).await?;
    let commits_per_1k = (commits(&coordinator) - before) as f64 * 1000.0 / SINGLE_TASKS as f64;
    coordinator.stop(false).await?;
    Ok(Figures {
        batched: best.0,
        cpu_per_task: best.1,
        single: SINGLE_TASKS as f64 / took.as_secs_f64(),
        commits_per_1k,
        rows_per_task,
    })
}

/// Submits `tasks` no-op tasks in batches, waits for every outcome, then for every change
/// to be committed.
async fn batched(coordinator: &Coordinator, tasks: usize) -> Res<Duration> {
    let spec = TaskSpec::from_payload("echo", Payload::null());
    let started = Instant::now();
    let patience = Duration::from_secs(120);
    batches::run_batches(coordinator.queue(), &spec, tasks, CHUNK, patience).await?;
    coordinator.queue().flush().await?;
    Ok(started.elapsed())
}

/// [`SINGLE_TASKS`] single submits from [`CLIENTS`] concurrent clients, each waiting for
/// its submit (the commit, with a store) before the next; then every outcome and commit.
async fn single_submits(coordinator: &Coordinator) -> Res<Duration> {
    let started = Instant::now();
    let per_client = SINGLE_TASKS / CLIENTS;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let c = coordinator.clone();
        clients.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                let h = c
                    .submit_async(TaskSpec::from_payload("echo", Payload::null()))
                    .await?;
                ids.push(h.id);
            }
            Ok::<_, wrangle::Error>(ids)
        }));
    }
    let mut ids = Vec::new();
    for c in clients {
        ids.extend(c.await??);
    }
    for id in ids {
        coordinator.wait_for(id, Duration::from_secs(120)).await?;
    }
    coordinator.queue().flush().await?;
    Ok(started.elapsed() * SINGLE_TASKS as u32 / (per_client * CLIENTS) as u32)
}

/// Stores [`RECOVERED`] unfinished tasks, then times a queue starting on them.
async fn recover(url: &str) -> Res<Duration> {
    let store = Store::open(StoreConfig::new(url)).await?;
    let (queue, handle) = QueueRef::spawn_with_store(QueueConfig::default(), store.clone()).await?;
    let spec = TaskSpec::new("echo", &serde_json::json!({"n": 1}))?;
    for _ in (0..RECOVERED).step_by(CHUNK) {
        queue.submit_batch(vec![spec.clone(); CHUNK]).await?;
    }
    queue.flush().await?;
    queue.actor().stop(None);
    handle.await?;
    store.close().await;

    let started = Instant::now();
    let store = Store::open(StoreConfig::new(url)).await?;
    let opened = started.elapsed();
    let (queue, handle) = QueueRef::spawn_with_store(QueueConfig::default(), store.clone()).await?;
    let took = started.elapsed();
    let stats = queue.stats().await?;
    if stats.recovered != RECOVERED as u64 {
        return Err(format!("recovered {} tasks, not {RECOVERED}", stats.recovered).into());
    }
    println!(
        "recovery on {}: {} tasks in {:.3} s (connect and migrate check {:.3} s)",
        store.backend(),
        stats.recovered,
        took.as_secs_f64(),
        opened.as_secs_f64()
    );
    queue.actor().stop(None);
    handle.await?;
    store.close().await;
    Ok(took)
}

/// A fresh database for the report on the server at `url`: (server url, its url).
async fn bench_database(url: &str) -> Res<(String, String)> {
    let name = format!("wrangle_bench_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(url).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    let base = url.split('?').next().unwrap_or(url);
    let server = base.rsplit_once('/').map_or(base, |(s, _)| s);
    Ok((url.to_string(), format!("{server}/{name}")))
}

async fn drop_database(server: &str, url: &str) -> Res<()> {
    let name = url.rsplit('/').next().unwrap_or_default();
    let mut admin = sqlx::PgConnection::connect(server).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    Ok(())
}
