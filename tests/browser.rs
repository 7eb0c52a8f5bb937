//! The dashboard in a real browser: headless Chromium driven through chromedriver loads the
//! page served by a running coordinator that requires a token, logs in through the page's
//! form (a wrong token first), submits a task through the form, and sees it reach
//! `completed` in the task list without a reload; then checks a narrow window.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Without them the
//! test says so and passes, except under `CI=true`, where it fails.

#[path = "support/net.rs"]
mod net;
#[path = "support/webdriver.rs"]
mod webdriver;

use std::time::Duration;

use serde_json::json;
use webdriver::Browser;
use wrangle::{Coordinator, CoordinatorConfig, HandlerRegistry};

const TOKEN: &str = "dash-board s3cret;=%";

async fn serve(token: Option<&str>) -> (Coordinator, String) {
    let handlers = HandlerRegistry::new();
    wrangle_actors::register_all(&handlers);
    let config = CoordinatorConfig {
        min_workers: 2,
        max_workers: 4,
        ..CoordinatorConfig::default()
    };
    let coordinator = Coordinator::start(config, handlers).await.unwrap();
    let api = wrangle::api::ApiConfig {
        token: token.map(str::to_owned),
        ..wrangle::api::ApiConfig::default()
    };
    let app = wrangle::api::router(coordinator.clone(), api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
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
    std::env::temp_dir().join(format!("wrangle-dashboard-{name}.png"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_submits_a_task_and_shows_it_complete_live() {
    let Some(b) = browser(1280, 800).await else {
        return;
    };
    let (coordinator, url) = serve(Some(TOKEN)).await;
    b.goto(&url).await;
    let wait = Duration::from_secs(20);

    // A token is required: the page (public, with its assets) asks for it.
    b.wait_for(
        "return !document.getElementById('token-form').hidden && \
         document.getElementById('conn').textContent === 'log in'",
        wait,
    )
    .await;
    b.fill("#token", "not the token").await;
    b.click("#login-button").await;
    b.wait_for(
        "return document.getElementById('conn').textContent === 'wrong token'",
        wait,
    )
    .await;
    b.fill("#token", TOKEN).await;
    b.click("#login-button").await;

    // Live data arrives: workers listed, task types offered, the connection marked live.
    b.wait_for(
        "return document.querySelectorAll('#workers tbody tr').length === 2",
        wait,
    )
    .await;
    b.wait_for("return [...document.querySelectorAll('#submit-type option')].some(o => o.value === 'sleep')", wait)
        .await;
    // The nodes table lists the coordinator's own process as online.
    b.wait_for(
        "const r = document.querySelector('#nodes tbody tr[data-status=online]'); \
         return r !== null && r.textContent.includes('(coordinator)')",
        wait,
    )
    .await;
    b.wait_for(
        "return document.getElementById('conn').textContent === 'live'",
        wait,
    )
    .await;
    // This coordinator has no store, and the header says so.
    b.wait_for(
        "return document.getElementById('store').textContent === 'store: none (memory only)'",
        wait,
    )
    .await;

    // The secret is in no URL, no script-readable cookie, no storage.
    assert_eq!(
        b.eval(&format!(
            "return [location.href, document.cookie, JSON.stringify(localStorage)] \
             .some(s => s.includes({TOKEN:?}) || s.includes(encodeURIComponent({TOKEN:?})))"
        ))
        .await,
        json!(false)
    );

    // A worker pulling over HTTP shows in the workers table beside the local ones.
    coordinator
        .pull_workers()
        .lease(wrangle::pull::LeaseRequest::new("py-1", ["py.resize"]).max_tasks(4))
        .await
        .unwrap();
    b.wait_for(
        "return [...document.querySelectorAll('#workers tbody tr')].some(r => r.textContent.includes('http:py-1'))",
        wait,
    )
    .await;

    // Mark this page load; a reload would lose the mark.
    b.eval("window.__sameLoad = true; return true").await;
    b.eval("document.getElementById('submit-type').value = 'sleep'; return true")
        .await;
    b.fill("#submit-payload", r#"{"ms": 400}"#).await;
    b.click("#submit-button").await;

    let id = b
        .wait_for("return document.getElementById('submit-result').textContent.startsWith('submitted') && window.__selectedId", wait)
        .await;
    let id = id
        .as_str()
        .expect("the page exposes the submitted id")
        .to_string();
    let row = format!("document.querySelector('#task-list tr[data-id=\"{id}\"]')");
    b.wait_for(&format!("return {row} !== null"), wait).await;
    b.wait_for(
        &format!("return {row} && {row}.dataset.status === 'completed'"),
        wait,
    )
    .await;
    assert_eq!(
        b.eval("return window.__sameLoad === true").await,
        json!(true),
        "the page reloaded"
    );
    // The detail pane shows the result of the selected task.
    b.wait_for(
        "return document.getElementById('d-status').textContent === 'completed'",
        wait,
    )
    .await;
    assert_eq!(
        b.eval("return document.getElementById('d-result').textContent.trim()")
            .await,
        json!("400")
    );
    let task = coordinator.get_task(id.parse().unwrap()).await.unwrap();
    assert_eq!(task.status, wrangle::TaskStatus::Completed);
    b.screenshot(&screenshot_path("wide")).await;
    coordinator.stop(false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_fits_a_narrow_window() {
    let Some(b) = browser(400, 900).await else {
        return;
    };
    let (coordinator, url) = serve(None).await;
    b.goto(&url).await;
    b.wait_for(
        "return document.querySelectorAll('#workers tbody tr').length === 2",
        Duration::from_secs(20),
    )
    .await;
    let overflow = b
        .eval("return document.documentElement.scrollWidth - window.innerWidth")
        .await;
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "the page scrolls sideways by {overflow}px"
    );
    b.screenshot(&screenshot_path("narrow")).await;
    coordinator.stop(false).await.unwrap();
}
