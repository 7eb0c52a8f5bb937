//! Sends tasks to a running coordinator over HTTP, waits for them with a progress bar, and
//! prints a summary (completed, failed, throughput).
//!
//! Tasks come from a JSON-lines file (one task object per line, as `POST /tasks` takes them)
//! or from arguments (`TYPE [PAYLOAD] [--count N]`).
//!
//! ```text
//! cargo run --release --example submit -- echo '{"hello": "world"}' --count 1000
//! cargo run --release --example submit -- --file tasks.jsonl --url http://127.0.0.1:7700
//! cargo run --release --example submit -- --help
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use wrangle::settings::cli::{SecretArgs, Token};

/// Submit tasks to a wrangle coordinator and wait for them.
#[derive(Debug, Parser)]
#[command(name = "submit")]
struct Args {
    /// The coordinator.
    #[arg(long, env = "WRANGLE_URL", default_value = "http://127.0.0.1:7700")]
    url: String,
    /// The bearer token.
    #[command(flatten)]
    token: SecretArgs<Token>,
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

/// The API's error message, or the status line.
async fn error_of(r: reqwest::Response) -> String {
    let status = r.status();
    match r.json::<Value>().await {
        Ok(v) => match (v["error"]["field"].as_str(), v["error"]["message"].as_str()) {
            (Some(f), Some(m)) => format!("{status}: {f}: {m}"),
            (None, Some(m)) => format!("{status}: {m}"),
            _ => status.to_string(),
        },
        Err(_) => status.to_string(),
    }
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
    let mut a: Args = wrangle::settings::cli::parse();
    a.url = a.url.trim_end_matches('/').to_string();
    let token = a
        .token
        .resolve()
        .map_err(|e| e.to_string())?
        .filter(|t| !t.is_empty());
    let tasks = load_tasks(&a)?;
    let http = reqwest::Client::new();
    let auth = |r: reqwest::RequestBuilder| match &token {
        Some(t) => r.bearer_auth(t),
        None => r,
    };
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
        let r = auth(http.post(format!("{}/tasks", a.url)))
            .json(&chunk)
            .send()
            .await
            .map_err(|e| format!("cannot reach {}: {e}", a.url))?;
        if !r.status().is_success() {
            bar.abandon();
            return Err(format!(
                "submit refused after {} accepted tasks: {}",
                ids.len(),
                error_of(r).await
            ));
        }
        let body: Value = r.json().await.map_err(|e| e.to_string())?;
        for t in body["tasks"].as_array().into_iter().flatten() {
            ids.push(t["id"].as_str().unwrap_or_default().to_string());
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish();
    if a.no_wait {
        println!("{} tasks submitted", ids.len());
        return Ok(true);
    }
    let bar = ProgressBar::new(ids.len() as u64)
        .with_style(style)
        .with_message("finished");
    let (mut completed, mut failed, mut other) = (0usize, 0usize, 0usize);
    let mut first_error = None;
    let waits = ids.iter().map(|id| {
        let (http, bar) = (&http, &bar);
        let url = format!("{}/tasks/{id}/wait?timeout=30s", a.url);
        async move {
            loop {
                let r = auth(http.get(&url))
                    .send()
                    .await
                    .map_err(|e| format!("lost the coordinator: {e}"))?;
                if r.status().as_u16() == 202 {
                    continue; // still running: wait again
                }
                if !r.status().is_success() {
                    return Err(error_of(r).await);
                }
                let t: Value = r.json().await.map_err(|e| e.to_string())?;
                bar.inc(1);
                return Ok::<_, String>((id, t));
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
    Ok(failed == 0 && other == 0)
}
