//! Quickstart: embed wrangle in a program, register handlers, submit 100,000 tasks with a
//! progress bar, then print the runtime's stats and the throughput.
//!
//! ```text
//! cargo run --release --example quickstart
//! cargo run --release --example quickstart -- 1000000   # a different task count
//! ```

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use wrangle::prelude::*;

/// The input of our `score` task.
#[derive(Serialize, Deserialize)]
struct Document {
    id: u64,
    words: u32,
}

/// Quickstart: tasks through an in-process coordinator, then its stats.
#[derive(Debug, clap::Parser)]
#[command(name = "quickstart")]
struct Args {
    /// Tasks to run.
    #[arg(default_value_t = 100_000, value_name = "TASKS")]
    total: usize,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let Args { total } = wrangle::settings::cli::parse();

    // 1. A coordinator with an autoscaled local pool of 2..=4 workers.
    let config = CoordinatorConfig {
        min_workers: 2,
        max_workers: 4,
        worker: WorkerConfig {
            max_concurrent_tasks: 256,
            ..WorkerConfig::default()
        },
        ..CoordinatorConfig::default()
    };
    let coordinator = Coordinator::builder()
        .config(config)
        // 2. Handlers: a typed closure, and the ready-made `echo` from wrangle-actors.
        .handler(
            "score",
            handler_fn(|_ctx, doc: Document| async move {
                Ok::<_, TaskError>(doc.words as u64 * 3 + doc.id % 7)
            }),
        )
        .handler("echo", wrangle_actors::Echo)
        .start()
        .await?;

    // 3. One task, awaited.
    let score: u64 = coordinator
        .submit("score", &Document { id: 1, words: 250 })
        .await?
        .decode()?;
    println!("one task: score = {score}");

    // 4. Many tasks, in batches, with a progress bar fed by the results as they finish.
    let bar = ProgressBar::new(total as u64).with_style(
        ProgressStyle::with_template("{bar:40.cyan/blue} {pos}/{len} tasks  {per_sec}  eta {eta}")?
            .progress_chars("##-"),
    );
    let started = Instant::now();
    let mut results = Vec::new();
    let mut next = 0u64;
    while next < total as u64 {
        let end = (next + 10_000).min(total as u64);
        let specs = (next..end)
            .map(|id| TaskSpec::new("score", &Document { id, words: 100 }))
            .collect::<Result<Vec<_>, _>>()?;
        let (_, rx) = coordinator.queue().submit_batch_streaming(specs).await?;
        results.push((end - next, rx));
        next = end;
    }
    let mut completed = 0u64;
    let mut failed = 0u64;
    for (count, mut rx) in results {
        for _ in 0..count {
            match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
                Ok(Some((_, TaskOutcome::Completed { .. }))) => completed += 1,
                Ok(Some(_)) => failed += 1,
                Ok(None) | Err(_) => return Err("the runtime stopped answering".into()),
            }
            bar.inc(1);
        }
    }
    bar.finish();
    let elapsed = started.elapsed();

    // 5. Stats, then a graceful stop.
    let stats = coordinator.get_stats().await?;
    println!(
        "\n{completed} completed, {failed} failed in {:.2} s: {:.0} tasks/s",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    println!(
        "queue: submitted {}, completed {}, retried {}, dead-lettered {}",
        stats.queue.submitted,
        stats.queue.completed,
        stats.queue.retried,
        stats.queue.dead_lettered
    );
    println!(
        "pool `{}`: {} workers, {} restarts",
        stats.workers.name, stats.workers.worker_count, stats.workers.restarts
    );
    for decision in coordinator.scale_history() {
        println!(
            "autoscaler: {} -> {} workers ({}; {:.1} waiting per worker)",
            decision.from, decision.to, decision.reason, decision.pressure_per_worker
        );
    }
    let report = coordinator.stop(true).await?;
    println!("stopped gracefully, {} tasks unfinished", report.unfinished);
    Ok(())
}
