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
