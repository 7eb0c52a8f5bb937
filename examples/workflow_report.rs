//! Measures the workflow engine and prints the figures the README quotes, on SQLite (a
//! temporary file) and, when `DATABASE_URL` names a PostgreSQL server, on PostgreSQL:
//!
//! - checkpoint overhead: runs of 10 ms steps, with each checkpoint mode (`before_next`,
//!   the default, and `overlapped`), against the same tasks submitted one after another
//!   without a workflow (the baseline, in the same run), 10 runs at once and one alone,
//!   each the median of five alternated rounds after one to warm up;
//! - no-op steps per second through sequential and parallel workflows, 100 runs at once;
//! - step-to-next-step latency within one run (p50, p99), in each checkpoint mode;
//! - the time to resume 10,000 unfinished runs after a restart.
//!
//! ```text
//! cargo run --release --example workflow_report
//! DATABASE_URL=postgres://postgres@127.0.0.1/wrangle cargo run --release --example workflow_report
//! ```

use std::time::{Duration, Instant};

use serde_json::json;
use wrangle::workflow::{Checkpoint, Input, RunStatus, Step, Workflow};
use wrangle::{
    handler_fn, Coordinator, CoordinatorConfig, EventKind, StoreConfig, TaskError, TaskSpec,
};

const RUNS: usize = 100;

/// The system allocator, counting the bytes allocated and not yet freed.
#[global_allocator]
static HEAP: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

fn config(url: &str) -> CoordinatorConfig {
    let mut c = CoordinatorConfig {
        min_workers: 4,
        max_workers: 4,
        auto_scale: false,
        store: Some(StoreConfig::new(url)),
        ..CoordinatorConfig::default()
    };
    c.worker.max_concurrent_tasks = 64;
    c
}

async fn coordinator(url: &str, workflows: Vec<Workflow>) -> Coordinator {
    start(config(url), workflows).await
}

async fn start(config: CoordinatorConfig, workflows: Vec<Workflow>) -> Coordinator {
    let mut b = Coordinator::builder()
        .config(config)
        .handler(
            "noop",
            handler_fn(|_ctx, _: serde_json::Value| async move { Ok::<_, TaskError>(()) }),
        )
        .handler(
            "work10",
            handler_fn(|_ctx, _: serde_json::Value| async move {
                let start = Instant::now();
                tokio::time::sleep(Duration::from_millis(10)).await;
                MARKS.lock().unwrap().push((start, Instant::now()));
                Ok::<_, TaskError>(())
            }),
        );
    for wf in workflows {
        b = b.workflow(wf);
    }
    b.start().await.expect("coordinator starts")
}

fn sequential(name: &str, task_type: &str, steps: usize) -> Workflow {
    (0..steps).fold(Workflow::new(name), |wf, i| {
        wf.step(Step::task(format!("s{i}"), task_type).input(Input::Value(json!(i))))
    })
}

fn parallel(name: &str, steps: usize) -> Workflow {
    Workflow::new(name).parallel(
        "fan",
        (0..steps).map(|i| Step::task(format!("p{i}"), "noop").input(Input::Value(json!(i)))),
    )
}

/// Starts `runs` runs of `name` at once (as the baseline's clients start at once: a start
/// is answered once its run row is committed, and one after another those commits would
/// be counted as the steps' time) and waits for all of them.
async fn run_all(c: &Coordinator, name: &str, runs: usize) -> Duration {
    let started = Instant::now();
    let each: Vec<_> = (0..runs)
        .map(|_| {
            let (c, name) = (c.clone(), name.to_string());
            tokio::spawn(async move {
                let id = c.workflows().start(&name, json!({})).await.unwrap();
                c.workflows()
                    .wait(id, Duration::from_secs(600))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for run in each {
        let done = run.await.unwrap();
        assert_eq!(done.status, RunStatus::Completed, "{done:?}");
    }
    started.elapsed()
}

/// Checkpoint overhead: `runs` runs of 20 steps of 10 ms, with each checkpoint mode,
/// against the same tasks submitted by as many clients, each waiting for one task before
/// submitting the next. One round to warm up, then five, alternated; the medians are
/// compared.
/// With one run, also the median gap from a step's end (in its handler) to the next
/// step's start: the cost on each step's path, without the run's start and end (each
/// answered after a commit, once per run).
async fn checkpoint_overhead(c: &Coordinator, runs: usize) {
    let (mut base, mut before_next, mut overlapped) = (Vec::new(), Vec::new(), Vec::new());
    let mut gaps: [Vec<f64>; 3] = Default::default();
    for round in 0..6 {
        MARKS.lock().unwrap().clear();
        let b = plain_tasks(c, runs, 20).await;
        let gb = median_gap();
        let j = run_all(c, "ten-ms", runs).await;
        let gj = median_gap();
        let o = run_all(c, "ten-ms-overlapped", runs).await;
        let go = median_gap();
        if round > 0 {
            base.push(b);
            before_next.push(j);
            overlapped.push(o);
            for (all, g) in gaps.iter_mut().zip([gb, gj, go]) {
                all.push(g);
            }
        }
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let b = median(&mut base);
    let ms = |v: &[Duration]| {
        v.iter()
            .map(|d| format!("{:.0}", d.as_secs_f64() * 1e3))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (mode, samples) in [
        ("before_next", &mut before_next),
        ("overlapped", &mut overlapped),
    ] {
        let j = median(samples);
        let overhead = (j.as_secs_f64() / b.as_secs_f64() - 1.0) * 100.0;
        println!(
            "checkpoint overhead on 10 ms steps, checkpoint = {mode}, {runs} run(s) x 20 steps: {overhead:+.2}% (medians of 5 alternated: {:.1} ms journaled, {:.1} ms as plain tasks; journaled {} ms; plain {} ms)",
            j.as_secs_f64() * 1e3,
            b.as_secs_f64() * 1e3,
            ms(samples),
            ms(&base),
        );
    }
    if runs == 1 {
        let [b, j, o] = gaps.map(|mut g| {
            g.sort_by(f64::total_cmp);
            g[g.len() / 2]
        });
        println!(
            "a step's end to the next step's start (one run; medians of 5): {b:.0} us as plain tasks, {j:.0} us with checkpoint = before_next ({:+.0} us), {o:.0} us with overlapped ({:+.0} us)",
            j - b,
            o - b
        );
    }
}

/// Each `work10` task's start and end, in the order they ended.
static MARKS: std::sync::Mutex<Vec<(Instant, Instant)>> = std::sync::Mutex::new(Vec::new());

/// The median gap between a `work10` task's end and the next one's start, in microseconds,
/// over the marks since the last call (which it clears).
fn median_gap() -> f64 {
    let marks = std::mem::take(&mut *MARKS.lock().unwrap());
    let mut gaps: Vec<f64> = marks
        .windows(2)
        .map(|w| w[1].0.saturating_duration_since(w[0].1).as_secs_f64() * 1e6)
        .collect();
    gaps.sort_by(f64::total_cmp);
    gaps.get(gaps.len() / 2).copied().unwrap_or(0.0)
}

/// Submits `per_client` `work10` tasks from each of `clients` clients at once, each client
/// waiting for one task before submitting the next; the time until all are done.
async fn plain_tasks(c: &Coordinator, clients: usize, per_client: usize) -> Duration {
    let started = Instant::now();
    let each: Vec<_> = (0..clients)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move {
                for i in 0..per_client {
                    c.submit_spec(TaskSpec::new("work10", &i).unwrap())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for client in each {
        client.await.unwrap();
    }
    started.elapsed()
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

async fn report(backend: &str, url: &str) {
    println!("\n## {backend}");
    let c = coordinator(
        url,
        vec![
            sequential("ten-ms", "work10", 20),
            sequential("ten-ms-overlapped", "work10", 20).checkpoint(Checkpoint::Overlapped),
            sequential("long-overlapped", "noop", 1_000).checkpoint(Checkpoint::Overlapped),
            sequential("seq", "noop", 100),
            sequential("seq-overlapped", "noop", 100).checkpoint(Checkpoint::Overlapped),
            parallel("par", 100),
            sequential("long", "noop", 1_000),
        ],
    )
    .await;

    for runs in [10, 1] {
        checkpoint_overhead(&c, runs).await;
    }

    for (name, label) in [
        ("seq", "sequential"),
        ("seq-overlapped", "sequential, checkpoint = overlapped"),
        ("par", "parallel"),
    ] {
        let took = run_all(&c, name, RUNS).await;
        let steps = RUNS * 100;
        println!(
            "no-op steps/s, {label} (100 runs x 100 steps at once): {:.0} ({steps} steps in {:.2} s)",
            steps as f64 / took.as_secs_f64(),
            took.as_secs_f64()
        );
    }

    // Step-to-next-step latency: the gaps between step completions of one run of 1,000
    // sequential no-op steps, seen on the event bus, in each checkpoint mode.
    for (name, mode) in [("long", "before_next"), ("long-overlapped", "overlapped")] {
        let mut events = c.events().subscribe();
        let id = c.workflows().start(name, json!({})).await.unwrap();
        let mut at = Vec::with_capacity(1_000);
        while at.len() < 1_000 {
            match events.recv().await {
                Ok(e) => {
                    if let EventKind::WorkflowStep { run, .. } = &e.kind {
                        if *run == id.as_uuid() {
                            at.push(Instant::now());
                        }
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => panic!("lagged {n}"),
                Err(e) => panic!("{e}"),
            }
        }
        let mut gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
        gaps.sort();
        // The mean does not depend on when this task reads the events (a late read sees
        // several at once, and their gaps look short).
        let mean = (at[at.len() - 1] - at[0]).as_secs_f64() * 1e3 / (at.len() - 1) as f64;
        println!(
            "step-to-next-step latency in one run, checkpoint = {mode}: mean {mean:.3} ms, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            pct(&gaps, 0.5),
            pct(&gaps, 0.99),
            gaps.last().unwrap().as_secs_f64() * 1e3
        );
    }
    let checkpoints = &c.workflows().metrics().checkpoint_latency;
    let commits = &c.store().expect("a store").writer_stats().commit_latency;
    println!(
        "journal round, sent to durable (whole report so far, bucket bounds): p50 <= {:.1} ms, p99 <= {:.1} ms; task store transactions: p50 <= {:.1} ms, p99 <= {:.1} ms",
        checkpoints.quantile(0.5).unwrap_or(0.0) * 1e3,
        checkpoints.quantile(0.99).unwrap_or(0.0) * 1e3,
        commits.quantile(0.5).unwrap_or(0.0) * 1e3,
        commits.quantile(0.99).unwrap_or(0.0) * 1e3,
    );
    c.stop(true).await.unwrap();

    // A map over 100,000 items: its time and what it holds in memory, with the queue's
    // default retention of finished tasks (100,000 kept in memory for reads) and with 1,000
    // kept, which leaves what the workflow itself holds.
    for keep in [None, Some(1_000)] {
        big_map(url, keep).await;
    }

    // Resume: 10,000 runs waiting on a durable timer, then a restart.
    let nap = Workflow::new("nap").sleep("wait", Duration::from_secs(3600));
    let c = coordinator(url, vec![nap.clone()]).await;
    for _ in 0..10_000 {
        c.workflows().start("nap", json!({})).await.unwrap();
    }
    c.stop(false).await.unwrap();
    let started = Instant::now();
    let c = coordinator(url, vec![nap]).await;
    // Answered once recovery is done (it runs before the engine takes messages).
    let active = c
        .workflows()
        .list(Some(RunStatus::Running), 20_000)
        .await
        .unwrap()
        .len();
    let resumed = started.elapsed();
    println!(
        "resume after a restart: {active} unfinished runs back in {:.0} ms (coordinator start included)",
        resumed.as_secs_f64() * 1e3
    );
    c.stop(false).await.unwrap();
}

/// Runs a map over 100,000 no-op items (concurrency 256, outputs into the state) on a new
/// coordinator whose queue keeps `keep` finished tasks in memory (its default if `None`),
/// and prints its time and the process's resident memory before and after.
async fn big_map(url: &str, keep: Option<usize>) {
    let map = Workflow::new("big-map").step(
        Step::map("each", "items", "noop")
            .concurrency(256)
            .output_key("out"),
    );
    let mut config = config(url);
    if let Some(keep) = keep {
        config.queue.max_finished_tasks = keep;
    }
    let c = start(config, vec![map]).await;
    let items: Vec<u32> = (0..100_000).collect();
    let heap_before = HEAP.allocated();
    // The heap's peak while the map runs, sampled every millisecond.
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(heap_before));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(HEAP.allocated(), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let started = Instant::now();
    let id = c
        .workflows()
        .start("big-map", json!({ "items": items }))
        .await
        .unwrap();
    let done = c
        .workflows()
        .wait(id, Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(done.status, RunStatus::Completed, "{:?}", done.error);
    let took = started.elapsed();
    sampler.abort();
    let mib = |bytes: usize| bytes as f64 / f64::from(1 << 20);
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    // The run's final state holds the 100,000 items and their outputs: its size as JSON.
    let state_json = serde_json::to_vec(&done.state).map_or(0, |v| v.len());
    drop(done);
    let kept = keep.map_or("the queue's default of".into(), |k| format!("{k}"));
    println!(
        "map over 100,000 items (concurrency 256, {kept} finished tasks kept in memory): {:.2} s, {:.0} items/s; heap {:.1} MiB before, peak {:+.1} MiB during, {:+.1} MiB after (the final state is {:.1} MiB as JSON)",
        took.as_secs_f64(),
        100_000.0 / took.as_secs_f64(),
        mib(heap_before),
        mib(peak) - mib(heap_before),
        mib(HEAP.allocated()) - mib(heap_before),
        mib(state_json),
    );
    c.stop(true).await.unwrap();
}

/// Workflow report: workflow throughput and journal cost on each backend.
#[derive(Debug, clap::Parser)]
#[command(name = "workflow_report")]
struct Args {
    /// A PostgreSQL server to measure too (a database of its own is made on it).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_name = "URL")]
    database_url: Option<String>,
}

#[tokio::main]
async fn main() {
    let args: Args = wrangle::settings::cli::parse();
    println!(
        "# workflow_report (load average {})",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("wf.db").display());
    report("SQLite", &sqlite).await;
    if let Some(server) = args.database_url {
        if server.starts_with("postgres") {
            // A fresh database of its own, dropped after.
            use sqlx::Connection;
            let name = format!("wrangle_wfreport_{}", std::process::id());
            let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut admin)
                .await
                .unwrap();
            let (base, _) = server.rsplit_once('/').unwrap();
            report("PostgreSQL", &format!("{base}/{name}")).await;
            sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
                .execute(&mut admin)
                .await
                .unwrap();
        }
    }
}
