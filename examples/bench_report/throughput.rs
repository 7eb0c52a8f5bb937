//! The per-task cost: no-op tasks per second from submit to result with 1, 2 and 4 workers,
//! and the CPU time each task takes, next to a bare ractor actor's round-trip rate measured
//! in the same run. `bench_report throughput [tasks]` prints only these.

use std::time::{Duration, Instant};

use ractor::Actor;
use wrangle::prelude::*;

use super::{batches, fixed, report, Res, CHUNK, STEADY_WARM_UP};
use report::{cpu_time, per_s};

#[path = "../../benches/support/pong.rs"]
mod pong;
use pong::{Pong, PongMsg};

/// Throughput runs per worker count; the best one is reported.
const RUNS: usize = 3;
/// Ractor messages per baseline run.
const BASELINE_MESSAGES: usize = 200_000;
/// Baseline runs; the best one is reported (they are short and the noisiest figure).
const BASELINE_RUNS: usize = 5;

/// The baseline and the no-op rates of one run.
pub(crate) struct Throughputs {
    /// Bare ractor `call` round trips per second.
    call_rate: f64,
    /// Bare ractor casts per second.
    cast_rate: f64,
    /// Each worker count's best run.
    pub(crate) rates: Vec<(usize, Throughput)>,
}

/// One worker count's best run.
pub(crate) struct Throughput {
    pub(crate) rate: f64,
    /// CPU time of the whole process (every thread) per task, in that run.
    cpu_per_task: Duration,
}

impl Throughputs {
    /// Measures the baseline, then `tasks` no-op tasks with 1, 2 and 4 workers.
    pub(crate) async fn measure(tasks: usize) -> Res<Self> {
        let (call_rate, cast_rate) = ractor_baseline().await?;
        let mut rates = Vec::new();
        for workers in [1, 2, 4] {
            rates.push((workers, noop_rate(workers, tasks).await?));
        }
        Ok(Self {
            call_rate,
            cast_rate,
            rates,
        })
    }

    pub(crate) fn print(&self, tasks: usize) {
        println!(
            "baseline: bare ractor actor ({BASELINE_MESSAGES} messages, best of {BASELINE_RUNS})"
        );
        println!(
            "  {:<34}{:>14}",
            "call round-trip (ractor::call!)",
            per_s(self.call_rate)
        );
        println!(
            "  {:<34}{:>14}",
            "cast (send_message)",
            per_s(self.cast_rate)
        );
        println!();
        println!(
            "no-op tasks, submit to result ({tasks} tasks in batches of {CHUNK}, best of {RUNS})"
        );
        println!(
            "  {:<9}{:>11}{:>16}{:>10}{:>14}",
            "workers", "tasks/s", "CPU per task", "vs call", "in casts"
        );
        for (workers, t) in &self.rates {
            println!(
                "  {:<9}{:>11}{:>13.1} us{:>9.2}x{:>14.1}",
                workers,
                per_s(t.rate),
                t.cpu_per_task.as_secs_f64() * 1e6,
                t.rate / self.call_rate,
                self.cast_rate / t.rate
            );
        }
        println!(
            "  (vs call: task rate / call rate; in casts: one task costs the time of that many casts)"
        );
    }
}

/// Calls per second (one at a time) and casts per second (then one call to wait for them).
async fn ractor_baseline() -> Res<(f64, f64)> {
    let (actor, handle) = Actor::spawn(None, Pong, ()).await?;
    let (mut call, mut cast) = (0.0f64, 0.0f64);
    for _ in 0..BASELINE_RUNS {
        let started = Instant::now();
        for _ in 0..BASELINE_MESSAGES {
            ractor::call!(actor, PongMsg::Ping)?;
        }
        call = call.max(BASELINE_MESSAGES as f64 / started.elapsed().as_secs_f64());

        let started = Instant::now();
        for _ in 0..BASELINE_MESSAGES {
            actor.cast(PongMsg::Cast)?;
        }
        ractor::call!(actor, PongMsg::Ping)?;
        cast = cast.max(BASELINE_MESSAGES as f64 / started.elapsed().as_secs_f64());
    }
    actor.stop(None);
    handle.await?;
    Ok((call, cast))
}

/// No-op tasks per second with `workers` workers: the best of [`RUNS`] runs of `tasks`,
/// after a warm-up past the finished-task retention.
async fn noop_rate(workers: usize, tasks: usize) -> Res<Throughput> {
    let coordinator = Coordinator::builder()
        .config(fixed(workers))
        .handler("echo", wrangle_actors::Echo)
        .start()
        .await?;
    run_noop(&coordinator, STEADY_WARM_UP).await?;
    let mut best = Throughput {
        rate: 0.0,
        cpu_per_task: Duration::ZERO,
    };
    for _ in 0..RUNS {
        let cpu = cpu_time()?;
        let elapsed = run_noop(&coordinator, tasks).await?;
        let cpu = cpu_time()?.saturating_sub(cpu);
        let rate = tasks as f64 / elapsed.as_secs_f64();
        if rate > best.rate {
            best = Throughput {
                rate,
                cpu_per_task: cpu / tasks as u32,
            };
        }
    }
    coordinator.stop(false).await?;
    Ok(best)
}

/// One run of `tasks` no-op tasks with `workers` workers after the steady-state warm-up:
/// its rate (the `cost` mode, for instruction counts).
pub(crate) async fn fixed_run(workers: usize, tasks: usize) -> Res<f64> {
    let coordinator = Coordinator::builder()
        .config(fixed(workers))
        .handler("echo", wrangle_actors::Echo)
        .start()
        .await?;
    run_noop(&coordinator, STEADY_WARM_UP).await?;
    let elapsed = run_noop(&coordinator, tasks).await?;
    coordinator.stop(false).await?;
    Ok(tasks as f64 / elapsed.as_secs_f64())
}

/// Submits `tasks` echo tasks in batches of [`CHUNK`] and waits for every outcome.
pub(crate) async fn run_noop(coordinator: &Coordinator, tasks: usize) -> Res<Duration> {
    let spec = TaskSpec::from_payload("echo", Payload::null());
    batches::run_batches(
        coordinator.queue(),
        &spec,
        tasks,
        CHUNK,
        Duration::from_secs(60),
    )
    .await
}
