//! Agent benchmark: what the `chat` actor adds to a model call, and how many streaming
//! chat sessions one coordinator holds, against a mock OpenAI-compatible server in a child
//! process of its own (so its memory is not counted).
//!
//! 1. Overhead: the same chat completion asked `--calls` times one after another, straight
//!    with reqwest (the baseline) and as `chat` tasks through the whole path (submit →
//!    queue → worker → handler → node proxy → server → result), with p50/p99 latency and
//!    the difference (target: at most 1 ms added at p99).
//! 2. Sessions: `--sessions` streaming `chat` tasks at once, each a stream the server
//!    feeds one token a second; once every session has its first token, the coordinator's
//!    resident memory is read, at a quarter, half and all of them, as bytes per session
//!    (target: 10,000 sessions, flat memory per session). Then every stream must finish.
//!
//! ```text
//! cargo run --release --example agent_report
//! cargo run --release --example agent_report -- --calls 5000 --sessions 10000 --tokens 20
//! ```
//!
//! It measures and prints; it asserts nothing.

#[path = "../benches/support/batches.rs"]
#[allow(dead_code)] // shared with the other reports; this one uses part of it
mod batches;
#[path = "../benches/support/report.rs"]
#[allow(dead_code)] // shared with the other reports; this one uses part of it
mod report;

use std::error::Error;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use batches::quantile;
use report::{load_average, rss_bytes, target};
use serde_json::{json, Value};
use wrangle::compute::{ComputeCluster, ComputeConfig, ComputeNode};
use wrangle::{
    Coordinator, CoordinatorConfig, EventKind, HandlerRegistry, RestartBudget, TaskSpec,
    WorkerConfig,
};
use wrangle_actors::{Chat, ChatOutput};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// Agent report: chat overhead and concurrent streaming sessions.
#[derive(Debug, clap::Parser)]
#[command(name = "agent_report")]
struct Args {
    /// Sequential model calls in the overhead runs.
    #[arg(long, default_value_t = 3_000)]
    calls: usize,
    /// Streaming sessions held at once.
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Tokens per streamed session (one a second).
    #[arg(long, default_value_t = 15)]
    tokens: u32,
    /// Serve the mock model on this port instead (the child process).
    #[arg(long, hide = true)]
    serve: Option<u16>,
}

fn reply() -> Value {
    json!({
        "choices": [{"message": {"role": "assistant", "content": "hello there"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2},
    })
}

/// The mock model: whole answers at once, streams one token a second (`max_tokens` of
/// them).
async fn serve(port: u16) -> Res<()> {
    let open = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/v1/chat/completions",
            post(move |Json(body): Json<Value>| {
                let open = open.clone();
                async move { completions(body, open).await }
            }),
        );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("{}", listener.local_addr()?.port());
    axum::serve(listener, app).await?;
    Ok(())
}

async fn completions(body: Value, open: Arc<AtomicUsize>) -> Response {
    if body["stream"] != true {
        return Json(reply()).into_response();
    }
    let tokens = body["max_tokens"].as_u64().unwrap_or(10);
    open.fetch_add(1, Ordering::Relaxed);
    let stream = async_stream(tokens, open);
    Sse::new(stream).into_response()
}

fn async_stream(
    tokens: u64,
    open: Arc<AtomicUsize>,
) -> impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>> {
    futures_util::stream::unfold(0u64, move |i| {
        let open = open.clone();
        async move {
            if i > tokens {
                return None;
            }
            if i > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let event = if i == tokens {
                open.fetch_sub(1, Ordering::Relaxed);
                json!({"choices": [{"delta": {}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 9, "completion_tokens": tokens}})
            } else {
                json!({"choices": [{"delta": {"content": format!("t{i} ")}}]})
            };
            Some((Ok(Event::default().data(event.to_string())), i + 1))
        }
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() -> Res<()> {
    let args: Args = wrangle::settings::cli::parse();
    if let Some(port) = args.serve {
        return serve(port).await;
    }
    println!(
        "agent report: {} sequential calls, {} streaming sessions of {} tokens; load {}",
        args.calls,
        args.sessions,
        args.tokens,
        load_average()
    );
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--serve", "0"])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut port = String::new();
    BufReader::new(child.stdout.take().ok_or("child stdout")?).read_line(&mut port)?;
    let url = format!("http://127.0.0.1:{}", port.trim());
    let result = run(&args, &url).await;
    let _ = child.kill();
    let _ = child.wait();
    result
}

async fn run(args: &Args, url: &str) -> Res<()> {
    // 1. Overhead, one call at a time.
    let client = reqwest::Client::new();
    let endpoint = format!("{url}/v1/chat/completions");
    let body =
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": false});
    let mut direct = Vec::with_capacity(args.calls);
    for _ in 0..args.calls {
        let t = Instant::now();
        let v: Value = client
            .post(&endpoint)
            .json(&body)
            .send()
            .await?
            .json()
            .await?;
        std::hint::black_box(v);
        direct.push(t.elapsed());
    }
    direct.sort_unstable();

    let compute = ComputeCluster::start_with(
        "bench",
        ComputeConfig {
            max_waiting: args.sessions.max(1) * 2,
            ..ComputeConfig::default()
        },
        RestartBudget::default(),
    )
    .await?;
    let node = ComputeNode::new("mock", url)?.max_concurrent(args.sessions.max(64));
    compute.add_node(node).await?;
    let handlers = HandlerRegistry::new();
    handlers.register("chat", Chat::new(compute.clone()));
    let slots = (args.sessions / 4 + 1) as u32;
    let c = Coordinator::start(
        CoordinatorConfig {
            min_workers: 4,
            max_workers: 4,
            auto_scale: false,
            worker: WorkerConfig {
                max_concurrent_tasks: slots,
                ..WorkerConfig::default()
            },
            ..CoordinatorConfig::default()
        },
        handlers,
    )
    .await?;
    let ask = |stream: bool, tokens: u32| {
        TaskSpec::new(
            "chat",
            &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                "stream": stream, "max_tokens": tokens}),
        )
    };
    let mut through = Vec::with_capacity(args.calls);
    for _ in 0..args.calls {
        let t = Instant::now();
        let out: ChatOutput = c
            .submit_async(ask(false, 2)?)
            .await?
            .result(Duration::from_secs(30))
            .await?;
        std::hint::black_box(out);
        through.push(t.elapsed());
    }
    through.sort_unstable();
    println!("1. one model call at a time ({} calls each)", args.calls);
    for (what, lat) in [
        ("reqwest, direct", &direct),
        ("chat task, whole path", &through),
    ] {
        println!(
            "  {what:<28} p50 {:>7.3} ms  p99 {:>7.3} ms",
            ms(quantile(lat, 0.50)),
            ms(quantile(lat, 0.99))
        );
    }
    let added50 = ms(quantile(&through, 0.50)) - ms(quantile(&direct, 0.50));
    let added99 = ms(quantile(&through, 0.99)) - ms(quantile(&direct, 0.99));
    println!("  added by wrangle: p50 {added50:.3} ms, p99 {added99:.3} ms");
    target(
        "added at p99",
        format!("{added99:.3} ms"),
        "≤ 1 ms",
        added99 <= 1.0,
    );

    // 2. Sessions.
    println!(
        "2. {} streaming sessions of {} tokens, one a second",
        args.sessions, args.tokens
    );
    let first = Arc::new(dashmap_set());
    let mut events = c.events().subscribe();
    let seen = first.clone();
    let listener = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(e) => {
                    if let EventKind::TaskProgress { id, .. } = &e.kind {
                        seen.lock().unwrap().insert(*id);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
    });
    let base = rss_bytes()?;
    let t0 = Instant::now();
    let mut handles = Vec::with_capacity(args.sessions);
    let mut marks: Vec<usize> = [4, 2, 1]
        .iter()
        .map(|d| args.sessions / d)
        .filter(|n| *n > 0)
        .collect();
    marks.dedup();
    for mark in marks {
        while handles.len() < mark {
            handles.push(c.submit_async(ask(true, args.tokens)?).await?);
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while first.lock().unwrap().len() < mark && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let streaming = first.lock().unwrap().len();
        let rss = rss_bytes()?;
        println!(
            "  {streaming:>6} sessions streaming: RSS {:>7.1} MiB, {:>7.0} bytes per session above the idle coordinator",
            rss as f64 / (1 << 20) as f64,
            (rss.saturating_sub(base)) as f64 / streaming.max(1) as f64
        );
    }
    let held = first.lock().unwrap().len();
    let mut ok = 0;
    for h in handles {
        if let Ok(out) = h.result::<ChatOutput>(Duration::from_secs(600)).await {
            ok += usize::from(out.content.split_whitespace().count() == args.tokens as usize);
        }
    }
    println!(
        "  {ok} of {} streams finished whole in {:.1} s",
        args.sessions,
        t0.elapsed().as_secs_f64()
    );
    target(
        "streaming sessions held at once",
        held.to_string(),
        "≥ 10,000",
        held >= 10_000,
    );
    listener.abort();
    c.stop(false).await?;
    compute.stop().await;
    Ok(())
}

fn dashmap_set() -> std::sync::Mutex<std::collections::HashSet<wrangle::TaskId>> {
    std::sync::Mutex::new(std::collections::HashSet::new())
}
