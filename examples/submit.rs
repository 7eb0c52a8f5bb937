//! Sends tasks to a running coordinator over HTTP, waits for them with a progress bar, and
//! prints a summary (completed, failed, throughput).
//!
//! Tasks come from a JSON-lines file (one task object per line, as `POST /tasks` takes them)
//! or from arguments (`TYPE [PAYLOAD] [--count N]`).
//!
//! Given several coordinators (`--url a,b`), it follows the leader: a standby's redirect is
//! followed with the token, and when the coordinator in use dies it tries the others until
//! one leads, then carries on submitting and waiting for the same tasks. Each task is given
//! an idempotency key (unless it has one), so a batch whose answer was lost can be sent
//! again without making its tasks twice.
//!
//! ```text
//! cargo run --release --example submit -- echo '{"hello": "world"}' --count 1000
//! cargo run --release --example submit -- --file tasks.jsonl --url http://127.0.0.1:7700
//! cargo run --release --example submit -- --url http://10.0.0.1:7700,http://10.0.0.2:7700 echo 1
//! cargo run --release --example submit -- --help
//! ```

#[path = "submit/leader.rs"]
mod leader;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use wrangle::settings::cli::{SecretArgs, Token};

use leader::{Call, Coordinators, Resend};

/// How long the coordinator holds one wait for a task open.
const WAIT: Duration = Duration::from_secs(30);

/// Submit tasks to a wrangle coordinator and wait for them.
#[derive(Debug, Parser)]
#[command(name = "submit")]
struct Args {
    /// The coordinators, comma-separated: standbys redirect to the leader, and the others
    /// are tried when the one in use cannot be reached.
    #[arg(
        long,
        env = "WRANGLE_URL",
        default_value = "http://127.0.0.1:7700",
        value_delimiter = ',',
        value_name = "URL[,URL...]"
    )]
    url: Vec<String>,
    /// The bearer token.
    #[command(flatten)]
    token: SecretArgs<Token>,
    /// How long each request keeps trying to reach a leading coordinator (through
    /// takeovers and dead coordinators) before the tool gives up, in seconds.
    #[arg(
        long,
        env = "WRANGLE_FAILOVER_SECS",
        default_value_t = 10,
        value_name = "S"
    )]
    failover_secs: u64,
    /// Send the tasks without idempotency keys: cheaper for the coordinator, but a batch
    /// whose answer is lost (the coordinator died while taking it) ends the run, as it may
    /// or may not have been accepted.
    #[arg(long = "no-idempotency-keys")]
    no_idempotency_keys: bool,
    /// JSON lines: one task per line, e.g. {"task_type": "echo", "payload": 1}.
    #[arg(long, value_name = "PATH", conflicts_with = "task_type")]
    file: Option<String>,
    /// Submit the TYPE/PAYLOAD task N times.
    #[arg(long, default_value_t = 1, value_name = "N")]
    count: usize,
    /// Tasks per request.
    #[arg(long, default_value_t = 500, value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..))]
    batch: u32,
    /// Submit only; do not wait for results.
    #[arg(long = "no-wait")]
    no_wait: bool,
    /// The task type (without --file).
    #[arg(value_name = "TYPE", required_unless_present = "file")]
    task_type: Option<String>,
    /// The task's payload, as JSON.
    #[arg(value_name = "PAYLOAD", requires = "task_type", value_parser = parse_json)]
    payload: Option<Value>,
}

fn parse_json(s: &str) -> Result<Value, String> {
    serde_json::from_str(s).map_err(|e| format!("not JSON: {e}"))
}

fn load_tasks(a: &Args) -> Result<Vec<Value>, String> {
    match &a.file {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
            text.lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(n, l)| {
                    serde_json::from_str(l).map_err(|e| format!("{path}:{}: not JSON: {e}", n + 1))
                })
                .collect()
        }
        None => {
            let payload = a.payload.clone().unwrap_or(Value::Null);
            let task = json!({"task_type": a.task_type, "payload": payload});
            Ok(vec![task; a.count])
        }
    }
}

/// Gives every task object without an idempotency key one of its own, unique to this run
/// (`submit-RUN-N`, N its line or place), so that sending a batch again cannot make its
/// tasks twice.
fn add_idempotency_keys(tasks: &mut [Value]) {
    let run = uuid::Uuid::now_v7().simple();
    for (n, task) in tasks.iter_mut().enumerate() {
        let keyless = !has_key(task);
        if let (true, Some(t)) = (keyless, task.as_object_mut()) {
            t.insert("idempotency_key".into(), json!(format!("submit-{run}-{n}")));
        }
    }
}

/// Whether a task carries an idempotency key (so sending it again is safe).
fn has_key(task: &Value) -> bool {
    task["idempotency_key"]
        .as_str()
        .is_some_and(|k| !k.is_empty())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Ok(true) when every task completed.
async fn run() -> Result<bool, String> {
    let a: Args = wrangle::settings::cli::parse();
    let token = a
        .token
        .resolve()
        .map_err(|e| e.to_string())?
        .filter(|t| !t.is_empty());
    let mut tasks = load_tasks(&a)?;
    if !a.no_idempotency_keys {
        add_idempotency_keys(&mut tasks);
    }
    let coordinators = Coordinators::new(&a.url, token, Duration::from_secs(a.failover_secs))?;
    let style = ProgressStyle::with_template(
        "{msg:>10} {bar:40.cyan/blue} {pos}/{len} {per_sec} eta {eta}",
    )
    .expect("valid template")
    .progress_chars("##-");
    let started = Instant::now();
    let bar = ProgressBar::new(tasks.len() as u64)
        .with_style(style.clone())
        .with_message("submitted");
    let mut ids = Vec::with_capacity(tasks.len());
    for chunk in tasks.chunks(a.batch as usize) {
        let body = serde_json::to_vec(chunk).map_err(|e| e.to_string())?;
        // Keyed tasks are answered as the tasks already made when the batch comes twice.
        let resend = if chunk.iter().all(has_key) {
            Resend::Safe
        } else {
            Resend::Never
        };
        let submitted = coordinators
            .call(&Call::post("/tasks", body.into(), resend))
            .await
            .and_then(|r| {
                if r.status.is_success() {
                    Ok(r.body)
                } else {
                    Err(r.error())
                }
            });
        let body = match submitted {
            Ok(body) => body,
            Err(e) => {
                bar.abandon();
                return Err(format!(
                    "submit failed after {} accepted tasks: {e}",
                    ids.len()
                ));
            }
        };
        for t in body["tasks"].as_array().into_iter().flatten() {
            ids.push(t["id"].as_str().unwrap_or_default().to_string());
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish();
    if a.no_wait {
        println!("{} tasks submitted", ids.len());
        say_leader(&coordinators);
        return Ok(true);
    }
    let bar = ProgressBar::new(ids.len() as u64)
        .with_style(style)
        .with_message("finished");
    let (mut completed, mut failed, mut other) = (0usize, 0usize, 0usize);
    let mut first_error = None;
    let waits = ids.iter().map(|id| {
        let (coordinators, bar) = (&coordinators, &bar);
        // A wait the coordinator holds open, plus time for the answer to come back.
        let call = Call::get(format!("/tasks/{id}/wait?timeout={}s", WAIT.as_secs()))
            .timeout(WAIT + Duration::from_secs(15));
        async move {
            loop {
                let r = coordinators
                    .call(&call)
                    .await
                    .map_err(|e| format!("lost the coordinators while waiting: {e}"))?;
                if r.status.as_u16() == 202 {
                    continue; // still running: wait again
                }
                if !r.status.is_success() {
                    return Err(format!("waiting for {id}: {}", r.error()));
                }
                bar.inc(1);
                return Ok::<_, String>((id, r.body));
            }
        }
    });
    let mut finished = futures_util::stream::iter(waits).buffer_unordered(64);
    while let Some(result) = finished.next().await {
        let (id, t) = result?;
        match t["status"].as_str() {
            Some("completed") => completed += 1,
            Some("failed") | Some("timeout") => {
                failed += 1;
                first_error
                    .get_or_insert_with(|| format!("{id}: {}", t["error"].as_str().unwrap_or("?")));
            }
            _ => other += 1,
        }
    }
    bar.finish();
    let secs = started
        .elapsed()
        .as_secs_f64()
        .max(Duration::from_millis(1).as_secs_f64());
    println!(
        "{completed} completed, {failed} failed, {other} cancelled in {secs:.2} s ({:.0} tasks/s)",
        ids.len() as f64 / secs
    );
    if let Some(e) = first_error {
        println!("first failure: {e}");
    }
    say_leader(&coordinators);
    Ok(failed == 0 && other == 0)
}

/// Names the coordinator the run ended on, when it is not the first one given.
fn say_leader(coordinators: &Coordinators) {
    let now = coordinators.current();
    if now != coordinators.first() {
        println!("followed the leader to {now}");
    }
}
