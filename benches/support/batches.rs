//! Running no-op tasks in large batches, shared by the benchmark reports.

use std::time::{Duration, Instant};

use wrangle::{QueueRef, TaskOutcome, TaskSpec};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Submits `tasks` copies of `spec` in batches of `chunk`, then waits for every outcome
/// (each within `patience`); returns the time from the first submit to the last outcome.
pub(crate) async fn run_batches(
    queue: &QueueRef,
    spec: &TaskSpec,
    tasks: usize,
    chunk: usize,
    patience: Duration,
) -> Res<Duration> {
    let started = Instant::now();
    let mut streams = Vec::new();
    for start in (0..tasks).step_by(chunk) {
        let batch = vec![spec.clone(); chunk.min(tasks - start)];
        let (ids, rx) = queue.submit_batch_streaming(batch).await?;
        streams.push((ids.len(), rx));
    }
    for (count, mut rx) in streams {
        for _ in 0..count {
            match tokio::time::timeout(patience, rx.recv()).await {
                Ok(Some((_, TaskOutcome::Completed { .. }))) => {}
                Ok(Some((id, other))) => return Err(format!("task {id} ended {other:?}").into()),
                Ok(None) | Err(_) => return Err("the runtime stopped answering".into()),
            }
        }
    }
    Ok(started.elapsed())
}

/// The `q` quantile (0..=1) of `sorted` samples.
pub(crate) fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[i - 1]
}

/// Submit-to-result times of a steady run.
pub(crate) struct Latency {
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) p999: Duration,
    pub(crate) max: Duration,
    /// Tasks per second actually submitted and finished.
    pub(crate) achieved: f64,
}

/// Offers copies of `spec` at `rate` tasks/s for `secs` seconds, in batches every
/// millisecond, and records each task's time from submit to result.
pub(crate) async fn steady_latency(
    queue: &QueueRef,
    spec: &TaskSpec,
    rate: f64,
    secs: u64,
) -> Res<Latency> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let started = Instant::now();
    let total = (rate * secs as f64) as usize;
    let mut sent = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut pending = Vec::new();
    while sent < total {
        tick.tick().await;
        let due = ((started.elapsed().as_secs_f64() * rate) as usize).min(total);
        if due <= sent {
            continue;
        }
        let batch = vec![spec.clone(); due - sent];
        let at = Instant::now();
        let (ids, mut stream) = queue.submit_batch_streaming(batch).await?;
        sent += ids.len();
        let tx = tx.clone();
        pending.push(tokio::spawn(async move {
            for _ in 0..ids.len() {
                match stream.recv().await {
                    Some((_, TaskOutcome::Completed { .. })) => {
                        let _ = tx.send(at.elapsed());
                    }
                    _ => return,
                }
            }
        }));
    }
    drop(tx);
    for p in pending {
        p.await?;
    }
    let elapsed = started.elapsed();
    let mut samples = Vec::with_capacity(total);
    while let Some(d) = rx.recv().await {
        samples.push(d);
    }
    if samples.len() != total {
        return Err(format!("{} of {total} tasks completed", samples.len()).into());
    }
    samples.sort_unstable();
    let at = |q: f64| quantile(&samples, q);
    Ok(Latency {
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
        max: *samples.last().ok_or("no samples")?,
        achieved: total as f64 / elapsed.as_secs_f64(),
    })
}
