//! Workflows end to end through a coordinator and its real handlers, on SQLite and on
//! PostgreSQL: every pattern, pause/resume/cancel/retry, and a restart that resumes a run
//! from its journal without running a completed step again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::Connection;
use wrangle::prelude::*;
use wrangle::workflow::{
    BulkFilter, Checkpoint, Condition, Control, Input, Op, RunOptions, RunStatus, Step, Workflow,
    WorkflowDef,
};
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
            "planner",
            handler_fn(|_ctx, count: usize| async move {
                let steps: Vec<Value> = (0..count)
                    .map(|i| {
                        json!({"kind": "task", "name": format!("p{i}"), "task_type": "add",
                        "input": {"value": i}, "output_key": format!("p{i}")})
                    })
                    .collect();
                Ok::<_, TaskError>(json!({
                    "steps": [{"kind": "parallel", "name": "calls", "steps": steps}]
                }))
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

/// Every pattern, in each checkpoint mode.
async fn every_pattern_runs_to_the_end(url: String) {
    let counts = Counts::default();
    let c = builder(&url, counts, None).start().await.unwrap();
    let flows = c.workflows();
    let mut runs = Vec::new();
    for mode in [Checkpoint::BeforeNext, Checkpoint::Overlapped] {
        let version = flows.register(patterns().checkpoint(mode)).await.unwrap();
        assert_eq!(version.len(), 16, "a hash version: {version}");
        let run = flows
            .start("patterns", json!({"n": 1, "items": [1, 2, 3], "k": 0}))
            .await
            .unwrap();
        let done = flows.wait(run, WAIT).await.unwrap();
        assert_eq!(done.status, RunStatus::Completed, "{mode:?}: {done:?}");
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
        runs.push(done);
    }
    // The journal holds each step's outcome, and the run row its final state.
    let events = databases::count(
        &url,
        "SELECT COUNT(*) FROM workflow_events WHERE kind = 'done'",
    )
    .await;
    assert_eq!(events, 15 * 2);
    c.stop(true).await.unwrap();
    // A finished run reads back from the store after a restart.
    let c = builder(&url, Counts::default(), None)
        .start()
        .await
        .unwrap();
    for done in runs {
        let again = c.workflows().status(done.id).await.unwrap();
        assert_eq!(again.status, RunStatus::Completed);
        assert_eq!(again.state, done.state);
    }
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

/// `kid`: n → n + 1 → × 2, with a `count` step in between (which hangs at `hang_at`).
fn kid() -> Workflow {
    Workflow::new("kid")
        .step(Step::task("inc", "add").input_key("n").output_key("n"))
        .step(Step::task("mark", "count").input(Input::Value(json!("kid-mark"))))
        .step(Step::task("dbl", "double").input_key("n").output_key("n"))
}

/// `parent`: a child run of `kid`, then a dynamic step adding `count` parallel calls.
fn parent() -> Workflow {
    Workflow::new("parent")
        .step(
            Step::child("sub", "kid")
                .input(Input::Keys(vec!["n".into()]))
                .output_key("kid"),
        )
        .step(
            Step::dynamic("plan", "planner")
                .input_key("count")
                .output_key("plan"),
        )
        .step(Step::task("after", "count").input(Input::Value(json!("parent-after"))))
}

async fn child_runs_and_dynamic_steps_run_to_the_end(url: String) {
    let counts = Counts::default();
    let c = builder(&url, counts.clone(), None)
        .workflow(kid())
        .workflow(parent())
        .start()
        .await
        .unwrap();
    let flows = c.workflows();
    let run = flows
        .start("parent", json!({"n": 5, "count": 3}))
        .await
        .unwrap();
    let done = flows.wait(run, WAIT).await.unwrap();
    assert_eq!(done.status, RunStatus::Completed, "{done:?}");
    assert_eq!(done.state["kid"], json!({"n": 12}), "{done:?}");
    for i in 0..3 {
        assert_eq!(done.state[&format!("p{i}")], json!(i + 1), "{done:?}");
    }
    // The child, the planner, three calls and `after`.
    assert_eq!(done.steps_completed, 6);
    assert_eq!(done.steps_total, 6);
    let kids: Vec<_> = flows
        .list(None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.workflow == "kid")
        .collect();
    assert_eq!(kids.len(), 1, "{kids:?}");
    assert_eq!(kids[0].status, RunStatus::Completed);
    // A child step naming an unregistered workflow is refused, naming the step.
    let orphan = Workflow::new("orphan").step(Step::child("lost", "nowhere"));
    let err = flows.register(orphan).await.unwrap_err().to_string();
    assert!(
        err.contains("step \"lost\"") && err.contains("nowhere"),
        "{err}"
    );
    c.stop(true).await.unwrap();
}

async fn a_restart_finds_the_child_run_again(url: String) {
    let counts = Counts::default();
    let c = builder(&url, counts.clone(), Some("kid-mark"))
        .workflow(kid())
        .workflow(parent())
        .start()
        .await
        .unwrap();
    let run = c
        .workflows()
        .start("parent", json!({"n": 1, "count": 1}))
        .await
        .unwrap();
    let probe = counts.clone();
    common::eventually("the child's mark step to start", WAIT, || {
        let n = probe.lock().unwrap().get("kid-mark").copied();
        async move { n == Some(1) }
    })
    .await;
    c.stop(false).await.unwrap();
    let c = builder(&url, counts.clone(), None)
        .workflow(kid())
        .workflow(parent())
        .start()
        .await
        .unwrap();
    let done = c.workflows().wait(run, WAIT).await.unwrap();
    assert_eq!(done.status, RunStatus::Completed, "{done:?}");
    assert_eq!(done.state["kid"], json!({"n": 4}));
    let counts = counts.lock().unwrap().clone();
    // The mark step was in flight at the stop: it ran again; nothing else did.
    assert_eq!(counts.get("kid-mark"), Some(&2), "{counts:?}");
    assert_eq!(counts.get("parent-after"), Some(&1), "{counts:?}");
    let kids = c.workflows().list(None, 100).await.unwrap();
    let kids: Vec<_> = kids.iter().filter(|r| r.workflow == "kid").collect();
    assert_eq!(kids.len(), 1, "one child run, found again: {kids:?}");
    c.stop(true).await.unwrap();
}

async fn bulk_operations_and_cancelling_a_parent(url: String) {
    let counts = Counts::default();
    let c = builder(&url, counts.clone(), Some("s01"))
        .workflow(counted(3))
        .workflow(kid())
        .workflow(parent())
        .start()
        .await
        .unwrap();
    let flows = c.workflows();
    let mut runs = Vec::new();
    for _ in 0..5 {
        runs.push(flows.start("counted", json!({})).await.unwrap());
    }
    let probe = counts.clone();
    common::eventually("every run's s01 to start", WAIT, || {
        let n = probe.lock().unwrap().get("s01").copied();
        async move { n == Some(5) }
    })
    .await;
    let only = |status| BulkFilter {
        workflow: Some("counted".into()),
        status,
    };
    let paused = flows.bulk(Control::Pause, only(None)).await.unwrap();
    assert_eq!((paused.matched, paused.changed), (5, 5), "{paused:?}");
    for run in &runs {
        assert_eq!(flows.status(*run).await.unwrap().status, RunStatus::Paused);
    }
    // Nothing is paused any more once resumed: a second resume matches nothing.
    let resumed = flows.bulk(Control::Resume, only(None)).await.unwrap();
    assert_eq!(resumed.changed, 5);
    let again = flows.bulk(Control::Resume, only(None)).await.unwrap();
    assert_eq!((again.matched, again.changed), (0, 0));
    let cancelled = flows
        .bulk(Control::Cancel, only(Some(RunStatus::Running)))
        .await
        .unwrap();
    assert_eq!(cancelled.changed, 5, "{cancelled:?}");
    for run in &runs {
        let s = flows.wait(*run, WAIT).await.unwrap();
        assert_eq!(s.status, RunStatus::Cancelled);
    }
    assert_eq!(counts.lock().unwrap().get("s02"), None);

    // Cancelling a parent cancels the child run it waits on (whose step hangs: it
    // counts "s01").
    let stuck =
        Workflow::new("stuck").step(Step::task("hang", "count").input(Input::Value(json!("s01"))));
    flows.register(stuck).await.unwrap();
    flows
        .register(Workflow::new("holder").step(Step::child("sub", "stuck")))
        .await
        .unwrap();
    let run = flows.start("holder", json!({})).await.unwrap();
    let probe = counts.clone();
    common::eventually("the child's step to start", WAIT, || {
        let n = probe.lock().unwrap().get("s01").copied();
        async move { n == Some(6) }
    })
    .await;
    let list = flows.list(Some(RunStatus::Running), 100).await.unwrap();
    let kid = list
        .iter()
        .find(|r| r.workflow == "stuck")
        .expect("child runs")
        .id;
    assert_eq!(
        flows.cancel(run).await.unwrap().status,
        RunStatus::Cancelled
    );
    let kid = flows.wait(kid, WAIT).await.unwrap();
    assert_eq!(kid.status, RunStatus::Cancelled, "{kid:?}");
    c.stop(true).await.unwrap();
}

/// Listing by status reaches past memory: with 2 finished runs kept in memory, 3 failed
/// runs older than 6 completed ones are still the page of `status=failed` (the store is
/// asked for that status, not for the newest runs and then filtered), newest first; an
/// active status is answered from memory alone.
async fn listing_by_status_finds_older_runs_in_the_store(url: String) {
    let mut config = config(&url);
    config.workflows.keep_finished = 2;
    let c = builder(&url, Counts::default(), None)
        .config(config)
        .start()
        .await
        .unwrap();
    let flows = c.workflows();
    let def: WorkflowDef = serde_json::from_value(json!({
        "name": "gated",
        "steps": [{"kind": "task", "name": "b", "task_type": "flaky", "input": {"key": "gate"}}]
    }))
    .unwrap();
    flows.register_json(def).await.unwrap();
    // One run to its end: failed unless `ok`.
    let finished = |ok: bool| async move {
        let run = flows
            .start("gated", json!({"gate": {"ok": ok}}))
            .await
            .unwrap();
        (run, flows.wait(run, WAIT).await.unwrap().status)
    };
    let mut failed = Vec::new();
    for _ in 0..3 {
        let (run, status) = finished(false).await;
        assert_eq!(status, RunStatus::Failed);
        failed.push(run);
    }
    for _ in 0..6 {
        assert_eq!(finished(true).await.1, RunStatus::Completed);
    }
    let page = flows.list(Some(RunStatus::Failed), 3).await.unwrap();
    let ids: Vec<_> = page.iter().map(|r| r.id).collect();
    failed.reverse();
    assert_eq!(ids, failed, "the three failed runs, newest first");
    let two = flows.list(Some(RunStatus::Failed), 2).await.unwrap();
    assert_eq!(two.len(), 2);
    let all = flows.list(None, 100).await.unwrap();
    assert_eq!(all.len(), 9, "every run, from memory and the store");
    assert!(flows
        .list(Some(RunStatus::Running), 10)
        .await
        .unwrap()
        .is_empty());
    c.stop(true).await.unwrap();
}

/// A step's task row, its completion and the journal round after it are committed in one
/// transaction: a run of steps that each take longer than the queue holds a completion for
/// its round (2 ms) costs one commit per step, not one for the row and one for the rest.
async fn a_step_costs_one_commit(url: String) {
    let c = builder(&url, Counts::default(), None)
        .handler(
            "nap",
            handler_fn(|_ctx, _: Value| async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok::<_, TaskError>(())
            }),
        )
        .start()
        .await
        .unwrap();
    let steps = 20;
    let naps = (0..steps).fold(Workflow::new("naps"), |wf, i| {
        wf.step(Step::task(format!("n{i}"), "nap").input(Input::Value(json!(i))))
    });
    c.workflows().register(naps).await.unwrap();
    let commits = || {
        c.store()
            .unwrap()
            .writer_stats()
            .commits
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = commits();
    let run = c.workflows().start("naps", json!({})).await.unwrap();
    let done = c.workflows().wait(run, WAIT).await.unwrap();
    assert_eq!(done.status, RunStatus::Completed, "{:?}", done.error);
    let took = commits() - before;
    println!("{took} commits for a run of {steps} steps");
    // The run's first row, one per step, and a few for the registry's heartbeats.
    assert!(took <= steps + 5, "{took} commits for {steps} steps");
    c.stop(true).await.unwrap();
}

/// Holds off every write to the journal of the store at a URL until released: a second
/// connection in a write transaction (SQLite), or holding the journal table's lock
/// (PostgreSQL).
enum WriteLock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl WriteLock {
    async fn take(url: &str) -> Self {
        if url.starts_with("sqlite") {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::raw_sql("BEGIN IMMEDIATE")
                .execute(&mut c)
                .await
                .unwrap();
            Self::Sqlite(c)
        } else {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::raw_sql("BEGIN; LOCK TABLE workflow_events IN EXCLUSIVE MODE")
                .execute(&mut c)
                .await
                .unwrap();
            Self::Postgres(c)
        }
    }

    async fn release(self) {
        let commit = sqlx::raw_sql("COMMIT");
        match self {
            Self::Sqlite(mut c) => commit.execute(&mut c).await.map(drop),
            Self::Postgres(mut c) => commit.execute(&mut c).await.map(drop),
        }
        .unwrap();
    }
}

/// A run with overlapped checkpoints queues the step after `a` while the round that
/// journals `a`'s outcome cannot commit; a run of the default mode starts it only after
/// that commit.
async fn overlapped_checkpoints_start_the_next_step_before_the_commit(url: String) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (probe_tx, mut probed) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let locked = Arc::new(AtomicBool::new(false));
    let (g, l) = (gate.clone(), locked.clone());
    let c = builder(&url, Counts::default(), None)
        .handler(
            "held",
            handler_fn(move |_ctx, _: Value| {
                let (started, gate) = (started_tx.clone(), g.clone());
                async move {
                    let _ = started.send(());
                    gate.acquire().await.unwrap().forget();
                    Ok::<_, TaskError>("a")
                }
            }),
        )
        .handler(
            "probe",
            handler_fn(move |_ctx, _: Value| {
                let (probe, locked) = (probe_tx.clone(), l.clone());
                async move {
                    let _ = probe.send(locked.load(Ordering::SeqCst));
                    Ok::<_, TaskError>("b")
                }
            }),
        )
        .start()
        .await
        .unwrap();
    // The definition's mode, or a run's own (which wins).
    let cases = [
        (Checkpoint::BeforeNext, None),
        (Checkpoint::Overlapped, None),
        (Checkpoint::BeforeNext, Some(Checkpoint::Overlapped)),
        (Checkpoint::Overlapped, Some(Checkpoint::BeforeNext)),
    ];
    for (defined, own) in cases {
        let mode = own.unwrap_or(defined);
        let name = format!("{defined:?}");
        let wf = Workflow::new(&name)
            .checkpoint(defined)
            .step(Step::task("a", "held").output_key("a"))
            .step(Step::task("b", "probe").output_key("b"));
        c.workflows().register(wf).await.unwrap();
        let options = own.map_or_else(RunOptions::new, |m| RunOptions::new().checkpoint(m));
        let run = c
            .workflows()
            .start_with(&name, json!({}), options)
            .await
            .unwrap();
        let name = format!("{name} run as {mode:?}");
        let seen = c.workflows().status(run).await.unwrap().checkpoint;
        assert_eq!(seen, Some(mode), "{name}");
        tokio::time::timeout(WAIT, started.recv()).await.unwrap();
        let lock = WriteLock::take(&url).await;
        locked.store(true, Ordering::SeqCst);
        gate.add_permits(1);
        if mode == Checkpoint::BeforeNext {
            // `b` must wait: give it time to start wrongly, then let the commit through.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // For an overlapped run, `b` starts while `a`'s round waits for the lock.
        let early = match mode {
            Checkpoint::Overlapped => tokio::time::timeout(WAIT, probed.recv()).await.ok(),
            _ => None,
        };
        locked.store(false, Ordering::SeqCst);
        lock.release().await;
        let ran_while_locked = match early {
            Some(seen) => seen.unwrap(),
            None => tokio::time::timeout(WAIT, probed.recv())
                .await
                .unwrap()
                .unwrap(),
        };
        assert_eq!(
            ran_while_locked,
            mode == Checkpoint::Overlapped,
            "{name}: did b run while a's outcome could not be committed?"
        );
        let done = c.workflows().wait(run, WAIT).await.unwrap();
        assert_eq!(
            done.status,
            RunStatus::Completed,
            "{name}: {:?}",
            done.error
        );
        assert_eq!(done.state["b"], json!("b"));
    }
    // It runs ahead of a store that cannot commit by a few rounds only (AHEAD_ROUNDS in
    // exec.rs, 4), so that a crash cannot make it run more again.
    let steps = 12;
    let wf = (0..steps).fold(
        Workflow::new("ahead")
            .checkpoint(Checkpoint::Overlapped)
            .step(Step::task("a", "held")),
        |wf, i| wf.step(Step::task(format!("p{i}"), "probe")),
    );
    c.workflows().register(wf).await.unwrap();
    let run = c.workflows().start("ahead", json!({})).await.unwrap();
    tokio::time::timeout(WAIT, started.recv()).await.unwrap();
    let lock = WriteLock::take(&url).await;
    locked.store(true, Ordering::SeqCst);
    gate.add_permits(1);
    // Time to run further ahead than it may.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut seen = Vec::new();
    while let Ok(while_locked) = probed.try_recv() {
        seen.push(while_locked);
    }
    let ahead = seen.len();
    assert!(
        (1..=4).contains(&ahead) && seen.iter().all(|l| *l),
        "{ahead} steps ran while nothing could be committed: {seen:?}"
    );
    locked.store(false, Ordering::SeqCst);
    lock.release().await;
    let done = c.workflows().wait(run, WAIT).await.unwrap();
    assert_eq!(done.status, RunStatus::Completed, "{:?}", done.error);
    while let Ok(while_locked) = probed.try_recv() {
        seen.push(while_locked);
    }
    assert_eq!(seen.len(), steps, "each step ran once: {seen:?}");
    c.stop(true).await.unwrap();
}

on_both!(
    overlapped_checkpoints_start_the_next_step_before_the_commit,
    a_step_costs_one_commit,
    child_runs_and_dynamic_steps_run_to_the_end,
    a_restart_finds_the_child_run_again,
    bulk_operations_and_cancelling_a_parent,
    every_pattern_runs_to_the_end,
    a_restart_resumes_without_running_a_completed_step_again,
    runs_pause_resume_cancel_and_retry,
    bad_definitions_are_refused_naming_the_step,
    listing_by_status_finds_older_runs_in_the_store,
);
