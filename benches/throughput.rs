//! Throughput of the in-process runtime, next to its baseline measured in the same run.
//!
//! - `ractor_baseline`: a bare ractor actor, `call` round-trip and `cast` throughput: the
//!   floor that every actor framework on ractor pays per message;
//! - `noop_tasks`: no-op (`echo`) tasks from submit to result with 1, 2 and 4 workers, per
//!   batch of 10,000 tasks submitted in chunks through `submit_batch_streaming`.
//!
//! Criterion prints elements per second for both groups, so their ratio is the cost of one
//! task in ractor messages. The one-table summary the README quotes (with dispatch latency
//! and memory per queued task) comes from `cargo run --release --example bench_report`.
//!
//! ```text
//! cargo bench --bench throughput
//! ```

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ractor::Actor;
use tokio::runtime::Runtime;
use wrangle::prelude::*;

/// Tasks per measured batch.
const BATCH: usize = 10_000;
/// Tasks per `submit_batch_streaming` call within a batch.
const CHUNK: usize = 1_000;
/// Casts per measured `cast` iteration.
const CASTS: u64 = 10_000;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

// ----- baseline -----------------------------------------------------------------------------

#[path = "support/pong.rs"]
mod pong;
use pong::{Pong, PongMsg};

fn ractor_baseline(c: &mut Criterion) {
    let rt = runtime();
    let (actor, handle) = rt
        .block_on(Actor::spawn(None, Pong, ()))
        .expect("spawn the baseline actor");
    let mut group = c.benchmark_group("ractor_baseline");
    group.throughput(Throughput::Elements(1));
    group.bench_function("call_roundtrip", |b| {
        b.iter_custom(|iters| {
            let actor = actor.clone();
            // The client runs as a task on the runtime, as wrangle's callers do.
            rt.block_on(async move {
                tokio::spawn(async move {
                    let started = Instant::now();
                    for _ in 0..iters {
                        ractor::call!(actor, PongMsg::Ping).expect("pong answers");
                    }
                    started.elapsed()
                })
                .await
                .expect("the client task")
            })
        })
    });
    group.throughput(Throughput::Elements(CASTS));
    group.bench_function("cast", |b| {
        b.iter_custom(|iters| {
            let actor = actor.clone();
            rt.block_on(async move {
                tokio::spawn(async move {
                    let started = Instant::now();
                    for _ in 0..iters * CASTS {
                        actor.cast(PongMsg::Cast).expect("pong is running");
                    }
                    // Every cast is handled once the call behind them is answered.
                    ractor::call!(actor, PongMsg::Ping).expect("pong answers");
                    started.elapsed()
                })
                .await
                .expect("the client task")
            })
        })
    });
    group.finish();
    actor.stop(None);
    rt.block_on(handle).expect("the baseline actor stops");
}

// ----- no-op tasks --------------------------------------------------------------------------

/// Submits [`BATCH`] echo tasks in chunks of [`CHUNK`] and waits for every outcome.
async fn run_batch(coordinator: Coordinator) -> Duration {
    let spec = TaskSpec::from_payload("echo", Payload::null());
    let chunks: Vec<Vec<TaskSpec>> = (0..BATCH / CHUNK)
        .map(|_| vec![spec.clone(); CHUNK])
        .collect();
    let started = Instant::now();
    let mut streams = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        let (ids, rx) = coordinator
            .queue()
            .submit_batch_streaming(chunk)
            .await
            .expect("the queue accepts the chunk");
        streams.push((ids.len(), rx));
    }
    for (count, mut rx) in streams {
        for _ in 0..count {
            let (id, outcome) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await
                .expect("an outcome within 60 s")
                .expect("the queue answers");
            assert!(
                matches!(outcome, TaskOutcome::Completed { .. }),
                "task {id} ended {outcome:?}"
            );
        }
    }
    started.elapsed()
}

fn noop_tasks(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("noop_tasks");
    group.throughput(Throughput::Elements(BATCH as u64));
    // Two seconds of warm-up run past the queue's finished-task retention (100,000 tasks),
    // so measured tasks also pay for evicting old ones, as in a long-running process.
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(6));
    for workers in [1usize, 2, 4] {
        let config = CoordinatorConfig {
            min_workers: workers,
            max_workers: workers,
            auto_scale: false,
            worker: WorkerConfig {
                max_concurrent_tasks: 64,
                ..WorkerConfig::default()
            },
            ..CoordinatorConfig::default()
        };
        let coordinator = rt.block_on(async {
            Coordinator::builder()
                .config(config)
                .handler("echo", wrangle_actors::Echo)
                .start()
                .await
                .expect("the coordinator starts")
        });
        group.bench_with_input(BenchmarkId::new("workers", workers), &workers, |b, _| {
            b.iter_custom(|iters| {
                let coordinator = coordinator.clone();
                rt.block_on(async move {
                    tokio::spawn(async move {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            total += run_batch(coordinator.clone()).await;
                        }
                        total
                    })
                    .await
                    .expect("the client task")
                })
            })
        });
        rt.block_on(coordinator.stop(false))
            .expect("the coordinator stops");
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = ractor_baseline, noop_tasks
}
criterion_main!(benches);
