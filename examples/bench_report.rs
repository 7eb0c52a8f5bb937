//! Benchmark report: the figures the README quotes, measured in one run, next to a bare
//! ractor baseline measured in the same run (so the ratios hold on a noisy machine).
//!
//! - baseline: `call` round-trips per second and `cast`s per second on a bare ractor actor;
//! - no-op (`echo`) tasks per second, from submit to result, with 1, 2 and 4 workers
//!   (best of 3 runs), and how that compares with the baseline;
//! - dispatch latency (submit to handler start), p50/p99/max, with 2 workers fed at half of
//!   their measured peak rate in small paced batches: once on a fresh queue (its task table
//!   still growing) and once in steady state (finished-task retention full), both paced by
//!   a tokio sleep (1 ms bursts); then in steady state with submits from an OS thread every
//!   ~50 us (a steady arrival, which the target is read against);
//! - resident memory per queued task with 1,000,000 tasks queued, the slowest submit while
//!   a fresh queue's task table grows to that size, and one listing page of queued tasks.
//!
//! The client (submits, waits for outcomes) runs as a task on the runtime, as a service's
//! request handler would; a client blocked on a thread outside the runtime pays a cross-thread
//! wake-up per outcome and measures that instead. Throughput runs are timed after a warm-up
//! past `max_finished_tasks`, so every timed task also pays for evicting an old one.
//!
//! It measures and prints; it asserts nothing. The machine's load average is printed with
//! the figures: on a shared machine, read the ratios and the CPU time per task. Run it in
//! release mode:
//!
//! ```text
//! cargo run --release --example bench_report
//! cargo run --release --example bench_report -- 50000   # fewer tasks per throughput run
//! cargo run --release --example bench_report -- memory  # only the 1,000,000-task figures
//! cargo run --release --example bench_report -- throughput [tasks]  # only the per-task cost
//! cargo run --release --example bench_report -- cost [tasks] [workers]  # one fixed-size run
//! cargo run --release --example bench_report -- latency [rate]  # latency at one rate, and its floor
//! ```
//!
//! `latency` measures the dispatch latency at `rate` tasks/s (default 100,000, fixed so that
//! two builds compare at one rate), fine-paced and in 1 ms bursts, next to its floor in the
//! same run: a message from an OS thread, paced the same way, to a bare ractor actor.
//!
//! `cost` runs the steady-state warm-up and then one run of `tasks` (default 50,000) no-op
//! tasks with `workers` (default 2), and prints nothing but its rate: a fixed amount of work
//! for an instruction counter. Two sizes under `valgrind --tool=callgrind` give the
//! instructions per task as the difference of their totals over the difference of sizes,
//! whatever else the machine runs.

use std::error::Error;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wrangle::prelude::*;

#[path = "bench_report/memory.rs"]
mod memory;
use memory::queued_memory;
#[path = "bench_report/latency.rs"]
mod latency;
#[path = "bench_report/throughput.rs"]
mod throughput;
use throughput::{run_noop, Throughputs};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// Tasks per submit in the throughput runs.
const CHUNK: usize = 10_000;
/// How long the paced latency run submits.
const LATENCY_RUN: Duration = Duration::from_secs(4);
/// Warm-up of the steady-state runs: past the default `max_finished_tasks` (100,000), so
/// the queue's task table has stopped growing and every new task evicts an old one.
const STEADY_WARM_UP: usize = 120_000;

#[tokio::main]
async fn main() -> Res<()> {
    tokio::spawn(report()).await?
}

/// Benchmark report: the figures the README quotes, next to a bare ractor baseline.
#[derive(Debug, clap::Parser)]
#[command(name = "bench_report", args_conflicts_with_subcommands = true)]
struct Args {
    /// One part of the report only.
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Tasks per throughput run of the whole report.
    #[arg(default_value_t = 200_000)]
    tasks: usize,
}

#[derive(Debug, clap::Subcommand)]
enum Mode {
    /// Only the 1,000,000-task figures: memory, the growing table and listing.
    Memory,
    /// The dispatch latency at one rate, and its floor.
    Latency {
        /// Tasks per second.
        #[arg(default_value_t = 100_000.0)]
        rate: f64,
    },
    /// The steady-state warm-up, then one fixed-size run; prints its rate only.
    Cost {
        /// No-op tasks.
        #[arg(default_value_t = 50_000)]
        tasks: usize,
        /// Workers.
        #[arg(default_value_t = 2)]
        workers: usize,
    },
    /// Only the per-task cost: the baseline and the no-op rates.
    Throughput {
        /// Tasks per run.
        #[arg(default_value_t = 200_000)]
        tasks: usize,
    },
}

async fn report() -> Res<()> {
    let args: Args = wrangle::settings::cli::parse();
    if let Some(Mode::Memory) = args.mode {
        // Only the 1,000,000-task figures: memory, the growing table and listing.
        let load = load_average();
        let memory = queued_memory().await?;
        println!(
            "load average (1, 5, 15 min): {load} before, {} after",
            load_average()
        );
        memory.print();
        return Ok(());
    }
    if let Some(Mode::Latency { rate }) = args.mode {
        return latency::report(rate).await;
    }
    if let Some(Mode::Cost { tasks, workers }) = args.mode {
        let rate = throughput::fixed_run(workers, tasks).await?;
        println!(
            "{tasks} no-op tasks, {workers} workers: {} tasks/s",
            per_s(rate)
        );
        return Ok(());
    }
    let (only_throughput, tasks) = match args.mode {
        Some(Mode::Throughput { tasks }) => (true, tasks),
        _ => (false, args.tasks),
    };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load_before = load_average();
    if only_throughput {
        // Only the per-task cost: the baseline and the no-op rates.
        let figures = Throughputs::measure(tasks).await?;
        println!(
            "load average (1, 5, 15 min): {load_before} before, {} after",
            load_average()
        );
        figures.print(tasks);
        return Ok(());
    }
    eprintln!("measuring (about a minute)...");

    // Memory first, while the heap is fresh: later phases free memory that a 1M-task
    // queue would otherwise reuse, hiding its cost.
    let memory = queued_memory().await?;
    let figures = Throughputs::measure(tasks).await?;
    let half = figures.rates[1].1.rate / 2.0;
    let fresh = dispatch_latency(half, CHUNK, Pacing::Timer).await?;
    let steady = dispatch_latency(half, STEADY_WARM_UP, Pacing::Timer).await?;
    let smooth = dispatch_latency(half, STEADY_WARM_UP, Pacing::Thread).await?;
    let load_after = load_average();

    println!();
    println!("wrangle bench report: {cpus} CPUs, tokio multi-thread runtime, release build");
    println!("load average (1, 5, 15 min): {load_before} before, {load_after} after");
    println!();
    figures.print(tasks);
    println!();
    println!(
        "dispatch latency, submit to handler start: 2 workers at {} tasks/s (50% of their peak)",
        per_s(half)
    );
    println!(
        "  {:<26}{:>8}{:>10}{:>11}{:>11}{:>11}{:>11}",
        "queue", "tasks", "batch", "p50", "p99", "p99.9", "max"
    );
    for (name, l) in [
        ("fresh (table growing)", &fresh),
        ("steady (retention full)", &steady),
        ("steady, fine pacing", &smooth),
    ] {
        println!(
            "  {:<26}{:>8}{:>10.0}{:>11}{:>11}{:>11}{:>11}",
            name,
            l.samples.len(),
            l.mean_batch,
            ms(l.percentile(0.50)),
            ms(l.percentile(0.99)),
            ms(l.percentile(0.999)),
            ms(l.percentile(1.0))
        );
    }
    println!(
        "  (achieved {}, {} and {} tasks/s; batch: mean tasks per paced submit)",
        per_s(fresh.achieved_rate),
        per_s(steady.achieved_rate),
        per_s(smooth.achieved_rate)
    );
    println!(
        "  (the first two pace with a tokio sleep: the 1 ms timer wheel makes bursts of about\n   \
         `rate / 1000` tasks, each burst queueing behind itself; fine pacing submits from an\n   \
         OS thread every ~50 us, so tasks arrive a few at a time)"
    );
    println!();
    memory.print();
    println!();
    println!("against the targets (measured, not asserted)");
    let best = figures.rates.iter().map(|r| r.1.rate).fold(0.0, f64::max);
    target(
        "no-op tasks/s, best worker count",
        per_s(best),
        ">= 200,000",
        best >= 200_000.0,
    );
    let p99 = smooth.percentile(0.99);
    target(
        "p99 dispatch latency, 50% load",
        ms(p99),
        "<= 1.000 ms",
        p99 <= Duration::from_millis(1),
    );
    let bursts = steady.percentile(0.99);
    target(
        "  same, arriving in 1 ms bursts",
        ms(bursts),
        "<= 1.000 ms",
        bursts <= Duration::from_millis(1),
    );
    target(
        "resident memory per queued task",
        format!("{:.0} B", memory.per_task()),
        "<= 256 B",
        memory.per_task() <= 256.0,
    );
    target(
        "worst submit, table growing to 1M",
        ms(memory.worst_submit()),
        "<= 1.000 ms",
        memory.worst_submit() <= Duration::from_millis(1),
    );
    target(
        "list 100 queued of 1M",
        ms(memory.list_median()),
        "<= 10.000 ms",
        memory.list_median() <= Duration::from_millis(10),
    );
    Ok(())
}

const MIB: f64 = 1024.0 * 1024.0;

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// A config with exactly `workers` local workers and no autoscaling.
fn fixed(workers: usize) -> CoordinatorConfig {
    CoordinatorConfig {
        min_workers: workers,
        max_workers: workers.max(1),
        auto_scale: false,
        worker: WorkerConfig {
            max_concurrent_tasks: 64,
            ..WorkerConfig::default()
        },
        ..CoordinatorConfig::default()
    }
}

#[path = "../benches/support/batches.rs"]
#[allow(dead_code)] // shared with the other reports; this one uses part of it
mod batches;
#[path = "../benches/support/report.rs"]
#[allow(dead_code)] // shared with the other reports; this one uses part of it
mod report;
use report::{load_average, per_s, target};

// ----- dispatch latency ---------------------------------------------------------------------

struct Latency {
    /// Submit-to-start time of every task, sorted.
    samples: Vec<Duration>,
    achieved_rate: f64,
    mean_batch: f64,
}

impl Latency {
    fn percentile(&self, q: f64) -> Duration {
        batches::quantile(&self.samples, q)
    }
}

/// The `stamp` tasks for indexes `range`, with their submit time recorded (nanoseconds since
/// `epoch`) just before they are sent.
fn stamped_batch(
    range: std::ops::Range<usize>,
    epoch: Instant,
    sent: &[AtomicU64],
) -> Result<Vec<TaskSpec>, wrangle::Error> {
    let specs = range
        .clone()
        .map(|i| TaskSpec::new("stamp", &i))
        .collect::<Result<Vec<_>, _>>()?;
    let now = epoch.elapsed().as_nanos() as u64;
    for slot in &sent[range] {
        slot.store(now, Ordering::Release);
    }
    Ok(specs)
}

/// How the latency run spaces its submits.
#[derive(Clone, Copy)]
enum Pacing {
    /// A tokio sleep between batches: the timer wheel's 1 ms ticks make bursts.
    Timer,
    /// An OS thread sleeping ~50 us between batches: a steadier arrival.
    Thread,
}

/// Submits tasks at `rate` per second for [`LATENCY_RUN`] to 2 workers, in small batches
/// paced by the clock, and records for every task the time from just before its submit to
/// the start of its handler. `warm_up` no-op tasks run first.
async fn dispatch_latency(rate: f64, warm_up: usize, pacing: Pacing) -> Res<Latency> {
    let total = (rate * LATENCY_RUN.as_secs_f64()) as usize;
    // Nanoseconds since `epoch`: when each task was submitted, and how long it waited.
    let epoch = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let waited: Arc<Vec<AtomicU64>> =
        Arc::new((0..total).map(|_| AtomicU64::new(u64::MAX)).collect());
    let started_count = Arc::new(AtomicUsize::new(0));
    let stamp = {
        let (sent, waited, started_count) = (sent.clone(), waited.clone(), started_count.clone());
        handler_fn(move |_ctx, i: usize| {
            let now = epoch.elapsed().as_nanos() as u64;
            waited[i].store(
                now.saturating_sub(sent[i].load(Ordering::Acquire)),
                Ordering::Relaxed,
            );
            started_count.fetch_add(1, Ordering::Release);
            async { Ok::<_, TaskError>(()) }
        })
    };
    let coordinator = Coordinator::builder()
        .config(fixed(2))
        .handler("echo", wrangle_actors::Echo)
        .handler("stamp", stamp)
        .start()
        .await?;
    run_noop(&coordinator, warm_up).await?;

    let (elapsed, batches) = match pacing {
        Pacing::Timer => {
            let started = Instant::now();
            let (mut next, mut batches) = (0usize, 0usize);
            while next < total {
                let due = ((started.elapsed().as_secs_f64() * rate) as usize).min(total);
                if due > next {
                    let specs = stamped_batch(next..due, epoch, &sent)?;
                    coordinator.queue().submit_batch(specs).await?;
                    batches += 1;
                    next = due;
                }
                // The timer wheel ticks every millisecond: batches hold about `rate / 1000`
                // tasks.
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
            (started.elapsed(), batches)
        }
        Pacing::Thread => {
            let (queue, sent) = (coordinator.queue().clone(), sent.clone());
            let runtime = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || -> Result<(Duration, usize), String> {
                let started = Instant::now();
                let (mut next, mut batches) = (0usize, 0usize);
                while next < total {
                    let due = ((started.elapsed().as_secs_f64() * rate) as usize).min(total);
                    if due > next {
                        let specs =
                            stamped_batch(next..due, epoch, &sent).map_err(|e| e.to_string())?;
                        runtime
                            .block_on(queue.submit_batch(specs))
                            .map_err(|e| e.to_string())?;
                        batches += 1;
                        next = due;
                    }
                    std::thread::sleep(Duration::from_micros(50));
                }
                Ok((started.elapsed(), batches))
            })
            .await??
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while started_count.load(Ordering::Acquire) < total {
        if Instant::now() > deadline {
            return Err("latency run: tasks did not all start within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    coordinator.stop(true).await?;
    let mut samples: Vec<Duration> = waited
        .iter()
        .map(|w| Duration::from_nanos(w.load(Ordering::Relaxed)))
        .collect();
    samples.sort_unstable();
    Ok(Latency {
        samples,
        achieved_rate: total as f64 / elapsed.as_secs_f64(),
        mean_batch: total as f64 / batches.max(1) as f64,
    })
}
