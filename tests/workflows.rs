//! Workflows end to end through a coordinator and its real handlers, on SQLite and on
//! PostgreSQL: every pattern, pause/resume/cancel/retry, and a restart that resumes a run
//! from its journal without running a completed step again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use wrangle::prelude::*;
use wrangle::workflow::{Condition, Input, Op, RunStatus, Step, Workflow, WorkflowDef};
use wrangle::StoreConfig;

#[macro_use]
#[path = "support/databases.rs"]
mod databases;
#[path = "support/common.rs"]
mod common;

const WAIT: Duration = Duration::from_secs(30);

/// How many times each step key ran, across coordinators.
type Counts = Arc<Mutex<HashMap<String, u32>>>;

fn config(url: &str) -> CoordinatorConfig {
    CoordinatorConfig {
        min_workers: 2,
        max_workers: 2,
        auto_scale: false,
        store: Some(StoreConfig::new(url)),
        ..CoordinatorConfig::default()
    }
}

/// Handlers: `add` (n + 1), `double`, `sum` (of a list), `count` (counts the step named in
/// its input, and hangs while `gate` is closed for the step named `hang_at`).
fn builder(
    url: &str,
    counts: Counts,
    hang_at: Option<&'static str>,
) -> wrangle::CoordinatorBuilder {
    Coordinator::builder()
        .config(config(url))
        .handler(
            "add",
            handler_fn(|_ctx, n: i64| async move { Ok::<_, TaskError>(n + 1) }),
        )
        .handler(
            "double",
            handler_fn(|_ctx, n: i64| async move { Ok::<_, TaskError>(n * 2) }),
        )
        .handler(
            "sum",
            handler_fn(|_ctx, list: Vec<i64>| async move {
                Ok::<_, TaskError>(list.iter().sum::<i64>())
            }),
        )
        .handler(
            "flaky",
            handler_fn(|_ctx, v: Value| async move {
                if v["ok"] == json!(true) {
                    Ok(json!("fine"))
                } else {
                    Err(TaskError::permanent("not ok"))
                }
            }),
        )
        .handler(
            "count",
            handler_fn(move |ctx: TaskContext, step: String| {
                let counts = counts.clone();
                async move {
                    *counts.lock().unwrap().entry(step.clone()).or_default() += 1;
                    if Some(step.as_str()) == hang_at {
                        ctx.cancelled().await;
                        return Err(TaskError::retryable("cancelled"));
                    }
                    Ok::<_, TaskError>(step)
                }
            }),
        )
}

fn patterns() -> Workflow {
    Workflow::new("patterns")
        .step(Step::task("first", "add").input_key("n").output_key("n"))
        .parallel(
            "fan",
            [
                Step::task("left", "double")
                    .input_key("n")
                    .output_key("left"),
                Step::task("right", "add")
                    .input_key("n")
                    .output_key("right"),
            ],
        )
        .step(
            Step::map("each", "items", "add")
                .then("double")
                .concurrency(2)
                .reduce("sum")
                .output_key("total"),
        )
        .step(Step::Condition {
            name: "big".into(),
            when: Condition::new("total", Op::Gt, Some(json!(20))),
            then: vec![Step::task("yes", "add")
                .input(Input::Value(json!(100)))
                .output_key("branch")
                .into()],
            otherwise: vec![Step::task("no", "add")
                .input(Input::Value(json!(0)))
                .output_key("branch")
                .into()],
        })
        .step(Step::Loop {
            name: "grow".into(),
            steps: vec![Step::task("inc", "add")
                .input_key("k")
                .output_key("k")
                .into()],
            until: Condition::new("k", Op::Ge, Some(json!(3))),
            max_iterations: 10,
        })
        .sleep("nap", Duration::from_millis(50))
}

async fn every_pattern_runs_to_the_end(url: String) {
    let counts = Counts::default();
    let c = builder(&url, counts, None).start().await.unwrap();
    let flows = c.workflows();
    let version = flows.register(patterns()).await.unwrap();
    assert_eq!(version.len(), 16, "a hash version: {version}");
    let run = flows
        .start("patterns", json!({"n": 1, "items": [1, 2, 3], "k": 0}))
        .await
        .unwrap();
    let done = flows.wait(run, WAIT).await.unwrap();
    assert_eq!(done.status, RunStatus::Completed, "{done:?}");
    let s = &done.state;
    assert_eq!(s["n"], 2);
    assert_eq!(
        (s["left"].clone(), s["right"].clone()),
        (json!(4), json!(3))
    );
    // (1+1)*2 + (2+1)*2 + (3+1)*2
    assert_eq!(s["total"], 18);
    assert_eq!(s["branch"], 1, "18 is not > 20: the else branch");
    assert_eq!(s["k"], 3);
    // first, left, right, 3 items × 2 stages, reduce, no, 3 × inc, nap
    assert_eq!(done.steps_completed, 1 + 2 + 6 + 1 + 1 + 3 + 1);
    assert!(done.steps_running.is_empty());
    // The journal holds each step's outcome, and the run row its final state.
    let events = databases::count(
        &url,
        "SELECT COUNT(*) FROM workflow_events WHERE kind = 'done'",
    )
    .await;
    assert_eq!(events, 15);
    c.stop(true).await.unwrap();
    // A finished run reads back from the store after a restart.
    let c = builder(&url, Counts::default(), None)
        .start()
        .await
        .unwrap();
    let again = c.workflows().status(run).await.unwrap();
    assert_eq!(again.status, RunStatus::Completed);
    assert_eq!(again.state, done.state);
    c.stop(true).await.unwrap();
}

fn counted(steps: usize) -> Workflow {
    let mut wf = Workflow::new("counted");
    for i in 0..steps {
        let name = format!("s{i:02}");
        wf = wf.step(Step::task(name.clone(), "count").input(Input::Value(json!(name))));
    }
    wf
}

async fn a_restart_resumes_without_running_a_completed_step_again(url: String) {
    let counts = Counts::default();
    let c = builder(&url, counts.clone(), Some("s10"))
        .workflow(counted(20))
        .start()
        .await
        .unwrap();
    let run = c.workflows().start("counted", json!({})).await.unwrap();
    let probe = counts.clone();
    common::eventually("step s10 to start", WAIT, || {
        let n = probe.lock().unwrap().get("s10").copied();
        async move { n == Some(1) }
    })
    .await;
    // Stop hard: s10 is cancelled mid-run, and the run waits in the journal.
    c.stop(false).await.unwrap();
    let c = builder(&url, counts.clone(), None)
        .workflow(counted(20))
        .start()
        .await
        .unwrap();
    let done = c.workflows().wait(run, WAIT).await.unwrap();
    assert_eq!(done.status, RunStatus::Completed, "{done:?}");
    let counts = counts.lock().unwrap().clone();
    for i in 0..20 {
        let key = format!("s{i:02}");
        let expected = if i == 10 { 2 } else { 1 };
        assert_eq!(counts.get(&key), Some(&expected), "{key}: {counts:?}");
    }
    c.stop(true).await.unwrap();
}

async fn runs_pause_resume_cancel_and_retry(url: String) {
    let counts = Counts::default();
    let c = builder(&url, counts.clone(), Some("s01"))
        .start()
        .await
        .unwrap();
    let flows = c.workflows();
    flows.register(counted(3)).await.unwrap();
    // Pause while s01 hangs: nothing after it starts; resume; cancel.
    let run = flows.start("counted", json!({})).await.unwrap();
    let probe = counts.clone();
    common::eventually("s01 to start", WAIT, || {
        let n = probe.lock().unwrap().get("s01").copied();
        async move { n == Some(1) }
    })
    .await;
    assert_eq!(flows.pause(run).await.unwrap().status, RunStatus::Paused);
    let err = flows.pause(run).await.unwrap_err().to_string();
    assert!(err.contains("is paused: cannot pause"), "{err}");
    assert_eq!(flows.resume(run).await.unwrap().status, RunStatus::Running);
    let cancelled = flows.cancel(run).await.unwrap();
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    assert_eq!(
        flows.wait(run, WAIT).await.unwrap().status,
        RunStatus::Cancelled
    );
    assert!(flows.retry(run).await.is_err(), "a cancelled run is final");
    assert_eq!(
        counts.lock().unwrap().get("s02"),
        None,
        "nothing ran after the cancel"
    );

    // A failed step fails the run; a retry runs only what did not complete.
    let def: WorkflowDef = serde_json::from_value(json!({
        "name": "retryable",
        "steps": [
            {"kind": "task", "name": "a", "task_type": "add", "input": {"value": 1}, "output_key": "a"},
            {"kind": "task", "name": "b", "task_type": "flaky", "input": {"key": "gate"}}
        ]
    }))
    .unwrap();
    flows.register_json(def).await.unwrap();
    let run = flows
        .start("retryable", json!({"gate": {"ok": false}}))
        .await
        .unwrap();
    let failed = flows.wait(run, WAIT).await.unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    assert!(
        failed.error.as_deref().unwrap().contains("step b"),
        "{failed:?}"
    );
    // The retry reads the state as it is: still not ok, so it fails again, once more.
    let retried = flows.retry(run).await.unwrap();
    assert_eq!(retried.retries, 1);
    let again = flows.wait(run, WAIT).await.unwrap();
    assert_eq!(again.status, RunStatus::Failed);
    assert_eq!(again.steps_completed, 1, "step a ran once");
    c.stop(true).await.unwrap();
}

async fn bad_definitions_are_refused_naming_the_step(url: String) {
    let c = builder(&url, Counts::default(), None)
        .start()
        .await
        .unwrap();
    let def: WorkflowDef = serde_json::from_value(json!({
        "name": "bad",
        "steps": [{"kind": "task", "name": "x", "task_type": "nobody-serves-this"}]
    }))
    .unwrap();
    let err = c
        .workflows()
        .register_json(def)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("step \"x\"") && err.contains("nobody-serves-this"),
        "{err}"
    );
    let err = c
        .workflows()
        .start("bad", json!({}))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no workflow named \"bad\""), "{err}");
    let err = c
        .workflows()
        .start("bad", json!([1]))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("input is a JSON object"), "{err}");
    c.stop(true).await.unwrap();
}

on_both!(
    every_pattern_runs_to_the_end,
    a_restart_resumes_without_running_a_completed_step_again,
    runs_pause_resume_cancel_and_retry,
    bad_definitions_are_refused_naming_the_step,
);
