//! The dashboard's workflows view in a real browser: headless Chromium, driven through
//! chromedriver, logs in to a coordinator that requires a token, starts a run from the
//! view's form (bad JSON and a refused input first), sees it running with its step running,
//! pauses it (the page and the Rust API agree), resumes it, and, once the test releases the
//! step, sees it `completed` without a reload; a refused action shows the API's message, a
//! failed run offers Retry, and API text holding HTML (`<img ...>`) shows literally, creating
//! no element. A second test checks a narrow window.
//!
//! The step blocks on a watch channel the test opens: no sleep decides an outcome; the test
//! polls the page for each condition with a deadline. Needs Debian's `chromium` and
//! `chromium-driver`; without them the test says so and passes, except under `CI=true`,
//! where it fails.

#[path = "support/net.rs"]
mod net;
#[path = "support/webdriver.rs"]
mod webdriver;

use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;
use webdriver::Browser;
use wrangle::prelude::*;
use wrangle::workflow::{Checkpoint, RunId, RunStatus, Step, Workflow};

const TOKEN: &str = "w0rkflow dash;=%";
/// Text that would run script if the page inserted it as HTML.
const XSS: &str = "<img src=x onerror=alert(1)>";
/// How long the page gets to show each condition.
const WAIT: Duration = Duration::from_secs(20);

/// A coordinator serving the API (and the dashboard) on a loopback port, with two
/// workflows: `gated`, whose one step `hold` runs until `open` is set, and `boom`, whose one
/// step fails for good with an error holding [`XSS`].
async fn serve(token: Option<&str>, open: watch::Receiver<bool>) -> (Coordinator, String) {
    let coordinator = Coordinator::builder()
        .config(CoordinatorConfig {
            min_workers: 2,
            max_workers: 2,
            auto_scale: false,
            ..CoordinatorConfig::default()
        })
        .handler(
            "gate",
            handler_fn(move |ctx: TaskContext, input: Value| {
                let mut open = open.clone();
                async move {
                    tokio::select! {
                        opened = open.wait_for(|o| *o) => {
                            opened.map_err(|_| TaskError::permanent("the test ended"))?;
                            Ok(input)
                        }
                        () = ctx.cancelled() => Err(TaskError::permanent("cancelled")),
                    }
                }
            }),
        )
        .handler(
            "explode",
            handler_fn(|_ctx: TaskContext, _: Value| async move {
                Err::<Value, _>(TaskError::permanent(format!("bad row {XSS}")))
            }),
        )
        .workflow(Workflow::new("gated").step(Step::task("hold", "gate").output_key("held")))
        .workflow(
            Workflow::new("boom")
                .checkpoint(Checkpoint::Overlapped)
                .step(Step::task("explode", "explode")),
        )
        .start()
        .await
        .expect("the coordinator starts");
    let api = wrangle::api::ApiConfig {
        token: token.map(str::to_owned),
        ..wrangle::api::ApiConfig::default()
    };
    let app = wrangle::api::router(coordinator.clone(), api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("address"));
    tokio::spawn(wrangle::api::serve(listener, app, std::future::pending()));
    (coordinator, url)
}

async fn browser(width: u32, height: u32) -> Option<Browser> {
    match Browser::start(width, height).await {
        Ok(b) => Some(b),
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("the browser test must run in CI: {why}")
        }
        Err(why) => {
            eprintln!("browser test not run: {why}");
            None
        }
    }
}

fn screenshot_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("wrangle-dashboard-workflows-{name}.png"))
}

/// A script expression for the runs table's row of `id`.
fn row(id: &str) -> String {
    format!("document.querySelector('#wf-runs tr[data-id=\"{id}\"]')")
}

/// Which of the four action buttons the detail pane shows, in order.
async fn buttons(b: &Browser) -> Value {
    b.eval(
        "return ['pause', 'resume', 'cancel', 'retry'] \
         .filter(a => !document.getElementById('wf-' + a).hidden)",
    )
    .await
}

/// Starts a run of `name` through the page's form with `input`, returning its id.
async fn start_from_form(b: &Browser, name: &str, input: &str) -> String {
    b.eval("window.__wfStarted = null; return true").await;
    b.eval(&format!(
        "document.getElementById('wf-start-name').value = {name:?}; return true"
    ))
    .await;
    b.fill("#wf-start-input", input).await;
    b.click("#wf-start-button").await;
    let id = b.wait_for("return window.__wfStarted", WAIT).await;
    id.as_str()
        .expect("the page exposes the run id")
        .to_string()
}

/// Waits until the run's row and the detail pane both show `status`.
async fn shows_status(b: &Browser, id: &str, status: &str) {
    let row = row(id);
    b.wait_for(
        &format!("return {row} !== null && {row}.dataset.status === {status:?}"),
        WAIT,
    )
    .await;
    b.wait_for(
        &format!(
            "return document.getElementById('wf-d-id').textContent === {id:?} && \
             document.getElementById('wf-d-status').textContent === {status:?}"
        ),
        WAIT,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_starts_pauses_resumes_and_shows_a_run_complete_live() {
    let Some(b) = browser(1280, 900).await else {
        return;
    };
    let (open, opened) = watch::channel(false);
    let (coordinator, url) = serve(Some(TOKEN), opened).await;
    b.goto(&url).await;

    // Log in through the page; the workflows view then lists what is registered.
    b.wait_for("return !document.getElementById('token-form').hidden", WAIT)
        .await;
    b.fill("#token", TOKEN).await;
    b.click("#login-button").await;
    b.wait_for(
        "return document.querySelector('#wf-defs tr[data-name=\"gated\"]') !== null && \
         [...document.querySelectorAll('#wf-start-name option')].some(o => o.value === 'boom')",
        WAIT,
    )
    .await;
    // Each workflow's checkpoint mode is shown.
    b.wait_for(
        "return document.querySelector('#wf-defs tr[data-name=\"boom\"] .checkpoint').textContent === 'overlapped' && \
         document.querySelector('#wf-defs tr[data-name=\"gated\"] .checkpoint').textContent === 'before next step'",
        WAIT,
    )
    .await;
    b.eval("window.__sameLoad = true; return true").await;

    // The input is checked as JSON in the page; what the API refuses, the page says.
    b.eval("document.getElementById('wf-start-name').value = 'gated'; return true")
        .await;
    b.fill("#wf-start-input", "{not json").await;
    b.click("#wf-start-button").await;
    b.wait_for(
        "return document.getElementById('wf-start-result').textContent \
         .startsWith('input is not valid JSON')",
        WAIT,
    )
    .await;
    b.fill("#wf-start-input", "[1]").await;
    b.click("#wf-start-button").await;
    b.wait_for(
        "return document.getElementById('wf-start-result').textContent \
         .includes(\"a run's input is a JSON object\")",
        WAIT,
    )
    .await;
    // A run's own options go with it; a bad one is refused by name.
    b.fill("#wf-start-input", "{}").await;
    b.fill("#wf-start-timeout", "soon").await;
    b.click("#wf-start-button").await;
    b.wait_for(
        "return document.getElementById('wf-start-result').textContent          .includes('is not a duration')",
        WAIT,
    )
    .await;
    b.fill("#wf-start-timeout", "10m").await;
    b.eval("document.getElementById('wf-start-checkpoint').value = 'overlapped'; return true")
        .await;
    assert!(
        coordinator
            .workflows()
            .list(None, 10)
            .await
            .expect("list")
            .is_empty(),
        "a refused input started no run"
    );

    // A run whose state holds HTML: listed as running, its step running, the text literal.
    let input = json!({ "note": XSS }).to_string();
    let id = start_from_form(&b, "gated", &input).await;
    let run: RunId = id.parse().expect("a run id");
    shows_status(&b, &id, "running").await;
    let run_row = row(&id);
    b.wait_for(
        &format!(
            "return {run_row}.querySelector('.running-steps').textContent === 'hold' && \
             document.querySelector('#wf-d-running li[data-step=\"hold\"]') !== null"
        ),
        WAIT,
    )
    .await;
    let state = b
        .eval("return document.getElementById('wf-d-state').textContent")
        .await;
    assert!(
        state.as_str().is_some_and(|s| s.contains(XSS)),
        "the state shows the text as it is: {state}"
    );
    assert_eq!(
        b.eval(
            "return document.querySelectorAll('img').length + \
             document.getElementById('wf-d-state').children.length"
        )
        .await,
        json!(0),
        "API text created elements"
    );
    assert_eq!(buttons(&b).await, json!(["pause", "cancel"]));
    // It runs with the options the form gave it, and the detail says so.
    let started = coordinator.workflows().status(run).await.expect("status");
    assert_eq!(started.checkpoint, Some(Checkpoint::Overlapped));
    assert_eq!(started.deadline_ms, Some(started.created_at_ms + 600_000));
    b.wait_for(
        "return document.getElementById('wf-d-checkpoint').textContent === 'overlapped' &&          document.getElementById('wf-d-deadline').textContent !== 'none'",
        WAIT,
    )
    .await;

    // Pause: the page and the Rust API both say paused; the step is still running.
    b.click("#wf-pause").await;
    shows_status(&b, &id, "paused").await;
    let paused = coordinator.workflows().status(run).await.expect("status");
    assert_eq!(paused.status, RunStatus::Paused);
    assert!(paused.steps_running.contains_key("hold"), "{paused:?}");
    assert_eq!(buttons(&b).await, json!(["resume", "cancel"]));
    // Steps done out of those known: none of the one step yet.
    b.wait_for(
        "return document.getElementById('wf-d-steps').textContent === '0 / 1'",
        WAIT,
    )
    .await;

    // Resume, then release the step: the page sees the run complete, without a reload.
    b.click("#wf-resume").await;
    shows_status(&b, &id, "running").await;
    assert_eq!(
        coordinator
            .workflows()
            .status(run)
            .await
            .expect("status")
            .status,
        RunStatus::Running
    );
    open.send(true).expect("the handler listens");
    shows_status(&b, &id, "completed").await;
    b.wait_for(
        "return document.getElementById('wf-d-steps').textContent === '1' && \
         document.getElementById('wf-d-running').textContent === 'none'",
        WAIT,
    )
    .await;
    assert_eq!(buttons(&b).await, json!([]));
    // The view heard the run's story on the event stream, resuming included.
    let short = &id[id.len() - 12..];
    for status in ["started", "paused", "resumed", "completed"] {
        b.wait_for(
            &format!(
                "return [...document.querySelectorAll('#events li')] \
                 .some(li => li.textContent.endsWith('workflow_run gated {short} {status}'))"
            ),
            WAIT,
        )
        .await;
    }
    assert_eq!(
        b.eval("return window.__sameLoad === true").await,
        json!(true),
        "the page reloaded"
    );
    assert_eq!(
        coordinator
            .workflows()
            .status(run)
            .await
            .expect("status")
            .status,
        RunStatus::Completed
    );

    // An action the run's status does not allow is refused, and the page says why.
    b.eval("document.getElementById('wf-pause').click(); return true")
        .await;
    b.wait_for(
        "return document.getElementById('wf-action-result').textContent \
         .startsWith('pause refused: ') && \
         document.getElementById('wf-action-result').textContent.includes('cannot pause')",
        WAIT,
    )
    .await;

    // A failed run: its error (holding HTML) shows literally, and Retry is offered.
    let failed = start_from_form(&b, "boom", "{}").await;
    shows_status(&b, &failed, "failed").await;
    let failed_row = row(&failed);
    let error = b
        .eval(&format!(
            "return {failed_row}.querySelector('td.error').textContent"
        ))
        .await;
    assert!(
        error.as_str().is_some_and(|s| s.contains(XSS)),
        "the error shows as text: {error}"
    );
    b.wait_for(
        &format!("return document.getElementById('wf-d-error').textContent.includes({XSS:?})"),
        WAIT,
    )
    .await;
    assert_eq!(
        b.eval("return document.querySelectorAll('img').length")
            .await,
        json!(0)
    );
    assert_eq!(buttons(&b).await, json!(["retry"]));

    // The status filter lists only the runs in that status.
    b.eval(
        "const f = document.getElementById('wf-filter'); f.value = 'completed'; \
         f.dispatchEvent(new Event('change')); return true",
    )
    .await;
    b.wait_for(
        &format!(
            "const rows = [...document.querySelectorAll('#wf-runs tbody tr')]; \
             return rows.length === 1 && rows[0].dataset.id === {id:?}"
        ),
        WAIT,
    )
    .await;
    b.eval("document.getElementById('workflows').scrollIntoView(); return true")
        .await;
    b.screenshot(&screenshot_path("wide")).await;
    coordinator.stop(false).await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_view_fits_a_narrow_window() {
    let Some(b) = browser(400, 900).await else {
        return;
    };
    let (open, opened) = watch::channel(false);
    let (coordinator, url) = serve(None, opened).await;
    let run = coordinator
        .workflows()
        .start("gated", json!({ "note": "a long note ".repeat(40) }))
        .await
        .expect("start");
    b.goto(&url).await;
    let run_row = row(&run.to_string());
    b.wait_for(&format!("return {run_row} !== null"), WAIT)
        .await;
    b.click(&format!("#wf-runs tr[data-id=\"{run}\"]")).await;
    b.wait_for(
        &format!("return document.getElementById('wf-d-id').textContent === '{run}'"),
        WAIT,
    )
    .await;
    let overflow = b
        .eval("return document.documentElement.scrollWidth - window.innerWidth")
        .await;
    assert!(
        overflow.as_i64().is_some_and(|o| o <= 0),
        "the page scrolls sideways by {overflow}px"
    );
    b.eval("document.getElementById('wf-detail').scrollIntoView(); return true")
        .await;
    b.screenshot(&screenshot_path("narrow")).await;
    open.send(true).expect("the handler listens");
    coordinator.stop(false).await.expect("stop");
}
