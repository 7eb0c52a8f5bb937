//! A workflow run that survives `kill -9`: a coordinator on a store runs one workflow of
//! `--steps` sequential steps; each step's execution appends `STEP PID` to the `--journal`
//! file. Kill the program at any point and run the same command again: the run resumes
//! from its journal; completed steps do not run again, and only a step in flight at the
//! kill may run twice (with `--checkpoint overlapped`, the last few steps the killed
//! program ran, those after its last commit). The crash test (`tests/workflow_crash.rs`)
//! drives it.
//!
//! ```text
//! cargo run --release --example workflow_durable -- --steps 50
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use wrangle::workflow::{Checkpoint, Input, RunStatus, Step, Workflow};
use wrangle::{handler_fn, Coordinator, CoordinatorConfig, StoreConfig, TaskContext, TaskError};

/// workflow_durable: runs one workflow of sequential steps on a store; safe to kill and
/// rerun.
#[derive(Debug, clap::Parser)]
#[command(name = "workflow_durable")]
struct Args {
    /// sqlite://PATH or postgres://...
    #[arg(
        long = "database-url",
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "sqlite://workflow_durable.db",
        value_name = "URL"
    )]
    url: String,
    /// Steps in the workflow.
    #[arg(long, default_value_t = 50, value_name = "N",
        value_parser = clap::value_parser!(u16).range(1..=10_000))]
    steps: u16,
    /// File each step execution appends `STEP PID` to.
    #[arg(long, default_value = "workflow_durable.log", value_name = "PATH")]
    journal: PathBuf,
    /// Time each step takes, in milliseconds.
    #[arg(long = "work-ms", default_value_t = 10, value_name = "MS")]
    work_ms: u64,
    /// After N executions in this process, further ones journal and hang, so that a kill
    /// finds a step surely running. Default never.
    #[arg(long = "hang-after", value_name = "N")]
    hang_after: Option<usize>,
    /// When a step's outcome must be committed: before the next step starts, or while
    /// it runs (a kill may then run the last few steps again).
    #[arg(long, default_value = "before_next", value_name = "MODE",
        value_parser = ["before_next", "overlapped"])]
    checkpoint: String,
}

fn workflow(steps: usize, checkpoint: Checkpoint) -> Workflow {
    let wf = Workflow::new("durable").checkpoint(checkpoint);
    (0..steps).fold(wf, |wf, i| {
        let name = format!("s{i:04}");
        wf.step(Step::task(name.clone(), "step").input(Input::Value(json!(name))))
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Args = wrangle::settings::cli::parse();
    let checkpoint = match args.checkpoint.as_str() {
        "overlapped" => Checkpoint::Overlapped,
        _ => Checkpoint::BeforeNext,
    };
    let journal = Arc::new(std::sync::Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&args.journal)?,
    ));
    let ran = Arc::new(AtomicUsize::new(0));
    let (work, hang_after) = (Duration::from_millis(args.work_ms), args.hang_after);
    let step = handler_fn(move |ctx: TaskContext, name: String| {
        let (journal, ran) = (journal.clone(), ran.clone());
        async move {
            {
                let mut f = journal.lock().unwrap();
                // One write per line, so a reader never sees half of one.
                let line = format!("{name} {}\n", std::process::id());
                f.write_all(line.as_bytes())
                    .map_err(|e| TaskError::retryable(e.to_string()))?;
                f.flush().map_err(|e| TaskError::retryable(e.to_string()))?;
            }
            if hang_after.is_some_and(|n| ran.fetch_add(1, Ordering::SeqCst) >= n) {
                ctx.cancelled().await;
                return Err(TaskError::retryable("stopped while hanging"));
            }
            tokio::time::sleep(work).await;
            Ok::<_, TaskError>(name)
        }
    });
    let coordinator = Coordinator::builder()
        .config(CoordinatorConfig {
            store: Some(StoreConfig::new(&args.url)),
            ..CoordinatorConfig::default()
        })
        .handler("step", step)
        .workflow(workflow(args.steps.into(), checkpoint))
        .start()
        .await?;
    let flows = coordinator.workflows();
    let existing = flows.list(None, 1).await?;
    let run = match existing.first() {
        Some(run) => run.id,
        None => flows.start("durable", json!({})).await?,
    };
    let done = flows.wait(run, Duration::from_secs(3600)).await?;
    println!(
        "run {} {} after {} steps",
        done.id, done.status, done.steps_completed
    );
    coordinator.stop(true).await?;
    if done.status == RunStatus::Completed {
        Ok(())
    } else {
        Err(format!("run ended {}: {:?}", done.status, done.error).into())
    }
}
