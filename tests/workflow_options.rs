//! A run's own options (spec 3's execution options), on SQLite and on PostgreSQL: a
//! timeout for the whole run fails it and cancels its running steps, paused or not, counts
//! again from a retry, and holds across a restart together with the run's checkpoint mode.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use wrangle::prelude::*;
use wrangle::workflow::{Checkpoint, RunOptions, RunSnapshot, RunStatus, Step, Workflow};
use wrangle::StoreConfig;

#[macro_use]
#[path = "support/databases.rs"]
mod databases;

const WAIT: Duration = Duration::from_secs(30);

/// What the `step` handler tells the test.
#[derive(Debug, PartialEq)]
enum Seen {
    Started,
    Cancelled,
}

/// Says `Cancelled` when the handler holding it is dropped before it returns.
struct OnDrop(mpsc::UnboundedSender<Seen>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(Seen::Cancelled);
    }
}

/// A coordinator whose `step` handler hangs until it is cancelled while `hang` is set,
/// and returns at once otherwise; it reports its starts and cancellations on `seen`.
async fn coordinator(
    url: &str,
    hang: Arc<AtomicBool>,
    seen: mpsc::UnboundedSender<Seen>,
) -> Coordinator {
    Coordinator::builder()
        .config(CoordinatorConfig {
            min_workers: 2,
            max_workers: 2,
            auto_scale: false,
            store: Some(StoreConfig::new(url)),
            ..CoordinatorConfig::default()
        })
        .handler(
            "step",
            handler_fn(move |_ctx: TaskContext, _: Value| {
                let (hang, seen) = (hang.clone(), seen.clone());
                async move {
                    let _ = seen.send(Seen::Started);
                    if hang.load(Ordering::SeqCst) {
                        // A cancelled attempt's handler is dropped where it waits.
                        let _dropped = OnDrop(seen);
                        std::future::pending::<()>().await;
                    }
                    Ok::<_, TaskError>(json!("done"))
                }
            }),
        )
        .workflow(
            Workflow::new("two")
                .step(Step::task("a", "step").output_key("a"))
                .step(Step::task("b", "step").output_key("b")),
        )
        .start()
        .await
        .unwrap()
}

async fn next(seen: &mut mpsc::UnboundedReceiver<Seen>, want: Seen) {
    let got = tokio::time::timeout(WAIT, seen.recv()).await;
    assert_eq!(got.ok().flatten(), Some(want));
}

fn assert_timed_out(run: &RunSnapshot, deadline: i64) {
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    let error = run.error.as_deref().unwrap_or_default();
    assert!(error.contains("timed out"), "{error}");
    let ended = run.finished_at_ms.unwrap();
    assert!(
        ended >= deadline,
        "ended at {ended}, before its deadline {deadline}"
    );
}

async fn a_run_past_its_timeout_fails_and_its_steps_are_cancelled(url: String) {
    let hang = Arc::new(AtomicBool::new(true));
    let (tx, mut seen) = mpsc::unbounded_channel();
    let c = coordinator(&url, hang.clone(), tx).await;
    let flows = c.workflows();
    let timeout = Duration::from_millis(1000);
    let options = RunOptions::new().timeout(timeout);

    // Running: the step that hangs is cancelled when the run times out.
    let run = flows.start_with("two", json!({}), options).await.unwrap();
    let started = flows.status(run).await.unwrap();
    let deadline = started.created_at_ms + 1000;
    assert_eq!(started.deadline_ms, Some(deadline));
    assert_eq!(started.checkpoint, Some(Checkpoint::BeforeNext));
    next(&mut seen, Seen::Started).await;
    let failed = flows.wait(run, WAIT).await.unwrap();
    assert_timed_out(&failed, deadline);
    next(&mut seen, Seen::Cancelled).await;

    // Paused: the timeout still counts.
    let paused = flows.start_with("two", json!({}), options).await.unwrap();
    next(&mut seen, Seen::Started).await;
    assert_eq!(flows.pause(paused).await.unwrap().status, RunStatus::Paused);
    let p = flows.wait(paused, WAIT).await.unwrap();
    assert_timed_out(&p, p.created_at_ms + 1000);
    next(&mut seen, Seen::Cancelled).await;

    // A retry gets the whole timeout again, from the retry; with steps that no longer
    // hang, it completes.
    hang.store(false, Ordering::SeqCst);
    let retried = flows.retry(run).await.unwrap();
    assert_eq!(retried.status, RunStatus::Running);
    assert_eq!(retried.deadline_ms, Some(retried.updated_at_ms + 1000));
    assert!(retried.deadline_ms > Some(deadline), "{retried:?}");
    let done = flows.wait(run, WAIT).await.unwrap();
    assert_eq!(done.status, RunStatus::Completed, "{done:?}");
    assert_eq!(done.state["b"], json!("done"));
    c.stop(true).await.unwrap();
}

async fn a_run_keeps_its_options_across_a_restart(url: String) {
    let hang = Arc::new(AtomicBool::new(true));
    let (tx, mut seen) = mpsc::unbounded_channel();
    let c = coordinator(&url, hang.clone(), tx.clone()).await;
    let options = RunOptions::new()
        .checkpoint(Checkpoint::Overlapped)
        .timeout(Duration::from_secs(3));
    let run = c
        .workflows()
        .start_with("two", json!({}), options)
        .await
        .unwrap();
    next(&mut seen, Seen::Started).await;
    let before = c.workflows().status(run).await.unwrap();
    // Stop hard: the step is cancelled, and the run waits in the journal.
    c.stop(false).await.unwrap();
    next(&mut seen, Seen::Cancelled).await;

    let c = coordinator(&url, hang, tx).await;
    let after = c.workflows().status(run).await.unwrap();
    assert_eq!(after.checkpoint, Some(Checkpoint::Overlapped), "{after:?}");
    assert_eq!(after.deadline_ms, before.deadline_ms, "the deadline holds");
    // The step runs again (at least once), and the deadline, not the restart, ends it.
    let failed = c.workflows().wait(run, WAIT).await.unwrap();
    assert_timed_out(&failed, before.deadline_ms.unwrap());
    c.stop(true).await.unwrap();
}

/// A workflow's own timeout holds for its runs, unless a run brings its own.
async fn a_workflow_timeout_bounds_its_runs_unless_a_run_has_its_own(url: String) {
    let hang = Arc::new(AtomicBool::new(true));
    let (tx, mut seen) = mpsc::unbounded_channel();
    let c = coordinator(&url, hang, tx).await;
    let flows = c.workflows();
    let bounded = Workflow::new("bounded")
        .timeout(Duration::from_millis(800))
        .step(Step::task("a", "step"));
    flows.register(bounded).await.unwrap();
    let run = flows.start("bounded", json!({})).await.unwrap();
    let started = flows.status(run).await.unwrap();
    let deadline = started.created_at_ms + 800;
    assert_eq!(started.deadline_ms, Some(deadline));
    next(&mut seen, Seen::Started).await;
    assert_timed_out(&flows.wait(run, WAIT).await.unwrap(), deadline);
    next(&mut seen, Seen::Cancelled).await;

    let own = RunOptions::new().timeout(Duration::from_secs(3600));
    let long = flows.start_with("bounded", json!({}), own).await.unwrap();
    let s = flows.status(long).await.unwrap();
    assert_eq!(s.deadline_ms, Some(s.created_at_ms + 3_600_000));
    assert_eq!(
        flows.cancel(long).await.unwrap().status,
        RunStatus::Cancelled
    );
    // Its step's task is cancelled too (queued or running) before the coordinator stops.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stats = c.queue().stats().await.unwrap();
        if stats.cancelled == 2 && stats.running == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{stats:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    c.stop(true).await.unwrap();
}

on_both!(
    a_workflow_timeout_bounds_its_runs_unless_a_run_has_its_own,
    a_run_past_its_timeout_fails_and_its_steps_are_cancelled,
    a_run_keeps_its_options_across_a_restart,
);
