//! Spec 3's quick start in Rust: a data pipeline workflow (extract → three analyses in
//! parallel → load) started asynchronously on a coordinator with an SQLite store, its status
//! printed while it runs. Kill it mid-run and start it again: the run resumes from its
//! journal, and the steps it had completed do not run again.
//!
//! ```text
//! cargo run --example workflow
//! cargo run --example workflow -- --database-url postgres://postgres@127.0.0.1/wrangle
//! ```

use std::time::Duration;

use serde_json::{json, Value};
use wrangle::workflow::{Input, RunStatus, Step, Workflow};
use wrangle::{handler_fn, Coordinator, CoordinatorConfig, StoreConfig, TaskError};

/// A step's work: `ms` of waiting, then `f` of the input.
fn slow(ms: u64, f: fn(Value) -> Value) -> impl wrangle::TaskHandler {
    handler_fn(move |_ctx, input: Value| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, TaskError>(f(input))
    })
}

fn pipeline() -> Workflow {
    Workflow::new("data-pipeline")
        .description("extract, analyse in parallel, load")
        .step(
            Step::task("extract", "extract")
                .input_key("source")
                .output_key("data"),
        )
        .parallel(
            "parallel-analysis",
            [
                Step::task("sentiment", "sentiment")
                    .input_key("data")
                    .output_key("sentiment"),
                Step::task("entities", "entities")
                    .input_key("data")
                    .output_key("entities"),
                Step::task("summary", "summary")
                    .input_key("data")
                    .output_key("summary"),
            ],
        )
        .step(
            Step::task("load", "load")
                .input(Input::Keys(vec![
                    "sentiment".into(),
                    "entities".into(),
                    "summary".into(),
                ]))
                .output_key("report"),
        )
}

/// Spec 3's quick start: a data pipeline workflow on a coordinator with a store.
#[derive(Debug, clap::Parser)]
#[command(name = "workflow")]
struct Args {
    /// The store: sqlite://PATH or postgres://...
    #[arg(
        long = "database-url",
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "sqlite://workflow.db",
        value_name = "URL"
    )]
    url: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Args { url } = wrangle::settings::cli::parse();
    let coordinator = Coordinator::builder()
        .config(CoordinatorConfig {
            store: Some(StoreConfig::new(&url)),
            ..CoordinatorConfig::default()
        })
        .handler(
            "extract",
            slow(300, |src| {
                json!(format!("rows from {}", src.as_str().unwrap_or("?")))
            }),
        )
        .handler("sentiment", slow(500, |_| json!("positive")))
        .handler("entities", slow(700, |_| json!(["ada", "grace"])))
        .handler(
            "summary",
            slow(400, |d| json!(format!("{} chars", d.to_string().len()))),
        )
        .handler("load", slow(200, |all| json!({"loaded": all})))
        // Registered before start, so a run left by a killed process resumes.
        .workflow(pipeline())
        .start()
        .await?;
    let flows = coordinator.workflows();
    // A run this store still has (the process was killed), else a new one.
    let run = match flows.list(Some(RunStatus::Running), 1).await?.first() {
        Some(run) => {
            println!("resuming run {} from its journal", run.id);
            run.id
        }
        None => {
            flows
                .start("data-pipeline", json!({"source": "s3://bucket/data.csv"}))
                .await?
        }
    };
    loop {
        let s = flows.status(run).await?;
        let running: Vec<&String> = s.steps_running.keys().collect();
        println!(
            "status: {}, progress: {}/5 steps, running: {running:?}",
            s.status, s.steps_completed
        );
        if !s.status.is_active() {
            println!(
                "report: {}",
                s.state.get("report").cloned().unwrap_or_default()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    coordinator.stop(true).await?;
    Ok(())
}
