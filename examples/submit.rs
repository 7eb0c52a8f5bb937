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

use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

const USAGE: &str = "\
Submit tasks to a wrangle coordinator and wait for them.

USAGE:
    submit [OPTIONS] TYPE [PAYLOAD]
    submit [OPTIONS] --file TASKS.jsonl

OPTIONS:
    --url <URL>        the coordinator (default http://127.0.0.1:7700, or WRANGLE_URL)
    --token <TOKEN>    bearer token (or WRANGLE_TOKEN); shows in `ps`: prefer the next
    --token-file <PATH>  read the bearer token from this file (or WRANGLE_TOKEN_FILE)
    --file <PATH>      JSON-lines: one task per line, e.g. {\"task_type\": \"echo\", \"payload\": 1}
    --count <N>        submit the TYPE/PAYLOAD task N times (default 1)
    --batch <N>        tasks per request (default 500)
    --no-wait          submit only; do not wait for results
    -h, --help         print this help
";

struct Args {
    url: String,
    token: Option<String>,
    file: Option<String>,
    task_type: Option<String>,
    payload: Value,
    count: usize,
    batch: usize,
    wait: bool,
}

/// The bearer token in the file at `path`, without its trailing newline.
fn token_from_file(path: &str) -> Result<String, String> {
    wrangle::settings::read_secret_file("--token-file", path.as_ref()).map_err(|e| e.to_string())
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut a = Args {
        url: std::env::var("WRANGLE_URL").unwrap_or_else(|_| "http://127.0.0.1:7700".into()),
        token: match std::env::var("WRANGLE_TOKEN_FILE") {
            Ok(path) => Some(token_from_file(&path)?),
            Err(_) => std::env::var("WRANGLE_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
        },
        file: None,
        task_type: None,
        payload: Value::Null,
        count: 1,
        batch: 500,
        wait: true,
    };
    let mut positional = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--url" => a.url = value("--url")?.trim_end_matches('/').to_string(),
            "--token" => a.token = Some(value("--token")?),
            "--token-file" => a.token = Some(token_from_file(&value("--token-file")?)?),
            "--file" => a.file = Some(value("--file")?),
            "--count" => {
                a.count = value("--count")?
                    .parse()
                    .map_err(|_| "--count must be a whole number".to_string())?
            }
            "--batch" => {
                a.batch = value("--batch")?
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or("--batch must be a number above 0")?
            }
            "--no-wait" => a.wait = false,
            flag if flag.starts_with("--") => return Err(format!("unknown option `{flag}`")),
            _ => positional.push(arg),
        }
    }
    match (a.file.is_some(), positional.as_slice()) {
        (true, []) => {}
        (false, [t]) => a.task_type = Some(t.clone()),
        (false, [t, p]) => {
            a.task_type = Some(t.clone());
            a.payload = serde_json::from_str(p).map_err(|e| format!("PAYLOAD is not JSON: {e}"))?;
        }
        (true, _) => return Err("give either --file or TYPE [PAYLOAD], not both".into()),
        (false, []) => return Err("nothing to submit: give TYPE [PAYLOAD] or --file".into()),
        (false, _) => return Err("too many arguments: TYPE [PAYLOAD]".into()),
    }
    Ok(Some(a))
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
            let task = json!({"task_type": a.task_type, "payload": a.payload});
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
    let Some(a) = parse_args()? else {
        print!("{USAGE}");
        return Ok(true);
    };
    let tasks = load_tasks(&a)?;
    let http = reqwest::Client::new();
    let auth = |r: reqwest::RequestBuilder| match &a.token {
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
    for chunk in tasks.chunks(a.batch) {
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
    if !a.wait {
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
