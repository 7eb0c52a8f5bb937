//! A workflow run that survives `kill -9`: a coordinator on a store runs one workflow of
//! `--steps` sequential steps; each step's execution appends `STEP PID` to the `--journal`
//! file. Kill the program at any point and run the same command again: the run resumes
//! from its journal; completed steps do not run again, and only a step in flight at the
//! kill may run twice. The crash test (`tests/workflow_crash.rs`) drives it.
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
use wrangle::workflow::{Input, RunStatus, Step, Workflow};
use wrangle::{handler_fn, Coordinator, CoordinatorConfig, StoreConfig, TaskContext, TaskError};

const USAGE: &str = "\
workflow_durable: runs one workflow of sequential steps on a store; safe to kill and rerun.

OPTIONS:
    --database-url <URL>  sqlite://PATH or postgres://...; default DATABASE_URL, else
                          sqlite://workflow_durable.db
    --steps <N>           steps in the workflow; default 50
    --journal <PATH>      file each step execution appends `STEP PID` to; default
                          workflow_durable.log
    --work-ms <MS>        time each step takes; default 10
    --hang-after <N>      after N executions in this process, further ones journal and
                          hang, so that a kill finds a step surely running; default never
";

struct Args {
    url: String,
    steps: usize,
    journal: PathBuf,
    work: Duration,
    hang_after: Option<usize>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        url: std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "sqlite://workflow_durable.db".into()),
        steps: 50,
        journal: "workflow_durable.log".into(),
        work: Duration::from_millis(10),
        hang_after: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        let number = |v: String, name: &str| v.parse::<usize>().map_err(|e| format!("{name}: {e}"));
        match arg.as_str() {
            "--database-url" => a.url = value("--database-url")?,
            "--steps" => a.steps = number(value("--steps")?, "--steps")?,
            "--journal" => a.journal = value("--journal")?.into(),
            "--work-ms" => {
                a.work = Duration::from_millis(number(value("--work-ms")?, "--work-ms")? as u64)
            }
            "--hang-after" => a.hang_after = Some(number(value("--hang-after")?, "--hang-after")?),
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if a.steps == 0 || a.steps > 10_000 {
        return Err("--steps must be 1 to 10000".into());
    }
    Ok(a)
}

fn workflow(steps: usize) -> Workflow {
    (0..steps).fold(Workflow::new("durable"), |wf, i| {
        let name = format!("s{i:04}");
        wf.step(Step::task(name.clone(), "step").input(Input::Value(json!(name))))
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse()?;
    let journal = Arc::new(std::sync::Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&args.journal)?,
    ));
    let ran = Arc::new(AtomicUsize::new(0));
    let (work, hang_after) = (args.work, args.hang_after);
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
        .workflow(workflow(args.steps))
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
