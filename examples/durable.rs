//! A run that survives being killed: a coordinator on a store submits `--tasks` tasks (with
//! idempotency keys `job-0`, `job-1`, ...) and waits for all of them. Kill it at any point,
//! even with `kill -9`, and run the same command again: the tasks already stored are found by
//! their keys instead of being submitted twice, finished ones are not run again, and the
//! rest, including those that were running at the kill, run to completion.
//!
//! Each execution appends `KEY PID` to the `--journal` file, so executions can be counted.
//!
//! ```text
//! cargo run --release --example durable -- --tasks 10000
//! cargo run --release --example durable -- --database-url postgres://postgres@127.0.0.1/wrangle
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;

use wrangle::{handler_fn, Coordinator, CoordinatorConfig, StoreConfig, TaskError, TaskSpec};

/// durable: submits tasks to a coordinator on a store and waits for them; safe to kill and
/// rerun.
#[derive(Debug, Parser)]
#[command(name = "durable")]
struct Args {
    /// sqlite://PATH or postgres://...
    #[arg(
        long = "database-url",
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "sqlite://durable.db",
        value_name = "URL"
    )]
    url: String,
    /// Tasks to run (keys job-0 .. job-N-1).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    tasks: usize,
    /// File each execution appends `KEY PID` to.
    #[arg(long, default_value = "durable.log", value_name = "PATH")]
    journal: PathBuf,
    /// Time each task takes, in milliseconds.
    #[arg(long = "work-ms", default_value_t = 1, value_name = "MS")]
    work_ms: u64,
    /// Local workers.
    #[arg(long, default_value_t = 2, value_name = "N")]
    workers: usize,
    /// Tasks each worker runs at once.
    #[arg(long, default_value_t = 16, value_name = "N")]
    slots: u32,
    /// After N executions in this process, every further one journals and then hangs, so a
    /// kill finds tasks surely running (the crash test uses it). Default never.
    #[arg(long = "hang-after", value_name = "N")]
    hang_after: Option<usize>,
}

fn main() -> ExitCode {
    let args: Args = wrangle::settings::cli::parse();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Into::into)
        .and_then(|rt| rt.block_on(run(args)))
    {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<bool, Box<dyn std::error::Error>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.journal)
        .map_err(|e| format!("cannot open {}: {e}", args.journal.display()))?;
    // The file and how many executions this process has journaled: counted and written
    // under one lock, so the journal's lines past `--hang-after` are exactly the tasks that
    // hang.
    let journal = Arc::new(Mutex::new((file, 0usize)));
    let hang_after = args.hang_after;
    let pid = std::process::id();
    let work = Duration::from_millis(args.work_ms);
    let mut config = CoordinatorConfig {
        min_workers: args.workers,
        max_workers: args.workers,
        auto_scale: false,
        store: Some(StoreConfig::new(&args.url)),
        ..CoordinatorConfig::default()
    };
    config.worker.max_concurrent_tasks = args.slots;
    let coordinator = Coordinator::builder()
        .config(config)
        .handler(
            "record",
            handler_fn(move |_ctx, key: String| {
                let journal = journal.clone();
                async move {
                    tokio::time::sleep(work).await;
                    let hang = {
                        let mut j = journal.lock().unwrap_or_else(|p| p.into_inner());
                        // One `write` of one short line to a file opened for appending: a
                        // kill cannot split one.
                        j.0.write_all(format!("{key} {pid}\n").as_bytes())
                            .map_err(|e| TaskError::retryable(format!("journal: {e}")))?;
                        j.1 += 1;
                        hang_after.is_some_and(|n| j.1 > n)
                    };
                    if hang {
                        std::future::pending::<()>().await;
                    }
                    Ok::<_, TaskError>(key)
                }
            }),
        )
        .start()
        .await?;
    let stats = coordinator.queue().stats().await?;
    println!(
        "pid {pid}: store {} open, {} unfinished tasks recovered",
        coordinator
            .store()
            .map(|s| s.config().redacted_url())
            .unwrap_or_default(),
        stats.recovered
    );

    let started = Instant::now();
    let mut ids = Vec::with_capacity(args.tasks);
    let mut existing = 0;
    let keys: Vec<usize> = (0..args.tasks).collect();
    for chunk in keys.chunks(500) {
        let specs = chunk
            .iter()
            .map(|i| {
                let key = format!("job-{i}");
                Ok(TaskSpec::new("record", &key)?
                    .idempotency_key(key)
                    .retries(5))
            })
            .collect::<Result<Vec<_>, wrangle::Error>>()?;
        for s in coordinator.queue().submit_batch(specs).await? {
            existing += usize::from(s.existing);
            ids.push(s.id);
        }
    }
    println!(
        "submitted {} tasks ({existing} already stored) in {:.2?}",
        ids.len() - existing,
        started.elapsed()
    );

    let mut completed = 0;
    let mut other = 0;
    for (n, id) in ids.iter().enumerate() {
        match coordinator.wait_for(*id, Duration::from_secs(600)).await? {
            wrangle::TaskOutcome::Completed { .. } => completed += 1,
            outcome => {
                other += 1;
                eprintln!("task {id} ended {outcome:?}");
            }
        }
        if (n + 1) % 2000 == 0 {
            println!("finished {} / {}", n + 1, ids.len());
        }
    }
    println!(
        "all {} tasks finished in {:.2?}: {completed} completed, {other} not",
        ids.len(),
        started.elapsed()
    );
    coordinator.stop(true).await?;
    Ok(other == 0)
}
