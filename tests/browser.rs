//! The dashboard in a real browser: headless Chromium driven through chromedriver loads the
//! page served by a running coordinator that requires a token, logs in through the page's
//! form (a wrong token first), submits a task through the form, and sees it reach
//! `completed` in the task list without a reload; then checks a narrow window.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Without them the
//! test says so and passes, except under `CI=true`, where it fails.

#[path = "support/databases.rs"]
#[allow(dead_code)]
mod databases;
#[path = "support/net.rs"]
mod net;
#[path = "support/webdriver.rs"]
mod webdriver;

use std::time::Duration;

use futures_util::future::BoxFuture;
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

    // This coordinator launches no nodes, and the node groups panel says so.
    b.wait_for(
        "const empty = document.getElementById('node-groups-empty'); \
         return !empty.hidden && empty.textContent === 'No node groups.' && \
         document.getElementById('node-groups-table').hidden",
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

/// A launcher whose every launch fails, with an error that holds markup: the page must show
/// it as text.
struct Refusing;

const REFUSAL: &str = "no capacity <img src=x onerror=\"window.__injected = true\">";

impl wrangle::launch::Launcher for Refusing {
    fn kind(&self) -> &'static str {
        "test"
    }

    fn launch(
        &self,
        _node: wrangle::launch::NodeLaunch,
    ) -> BoxFuture<'_, Result<String, wrangle::launch::LaunchError>> {
        Box::pin(async { Err(wrangle::launch::LaunchError::new("test", REFUSAL)) })
    }

    fn terminate(
        &self,
        _id: String,
        _grace: Duration,
    ) -> BoxFuture<'_, Result<(), wrangle::launch::LaunchError>> {
        Box::pin(async { Ok(()) })
    }

    fn list(
        &self,
        _group: String,
    ) -> BoxFuture<'_, Result<Vec<wrangle::launch::Resource>, wrangle::launch::LaunchError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_node_groups_and_their_decisions_beside_the_pools() {
    let Some(b) = browser(1280, 800).await else {
        return;
    };
    let handlers = HandlerRegistry::new();
    wrangle_actors::register_all(&handlers);
    let listen = format!("127.0.0.1:{}", net::free_port()).parse().unwrap();
    let config = CoordinatorConfig {
        min_workers: 1,
        max_workers: 4,
        auto_scale: false,
        cluster: Some(wrangle::ClusterConfig::new(listen, "dashboard-test")),
        autoscale_interval: Duration::from_millis(100),
        ..CoordinatorConfig::default()
    };
    // Below min_nodes: one launch at the first tick, refused, then a minute of backoff.
    let group = wrangle::launch::NodeGroupConfig {
        task_types: vec!["infer".into()],
        min_nodes: 1,
        max_nodes: 3,
        launch_backoff: Duration::from_secs(60),
        ..wrangle::launch::NodeGroupConfig::new("gpu")
    };
    let coordinator = Coordinator::builder()
        .config(config)
        .handlers(handlers)
        .node_group(group, std::sync::Arc::new(Refusing))
        .start()
        .await
        .unwrap();
    coordinator.scale(2).await.unwrap();
    let app = wrangle::api::router(coordinator.clone(), wrangle::api::ApiConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(wrangle::api::serve(listener, app, std::future::pending()));
    b.goto(&url).await;
    let wait = Duration::from_secs(20);

    // The group's row: no node, its bounds, its backoff, its error as text, its counters.
    let row = "document.querySelector('#node-groups tr[data-group=gpu]')";
    b.wait_for(
        &format!(
            "const r = {row}; return r !== null && !document.getElementById('node-groups-table').hidden \
             && document.getElementById('node-groups-empty').hidden \
             && r.textContent.includes('launched 1, failed 1 (never joined 0)')"
        ),
        wait,
    )
    .await;
    let cells = b
        .eval(&format!("return [...{row}.cells].map(c => c.textContent)"))
        .await;
    let cells: Vec<String> = serde_json::from_value(cells).unwrap();
    assert_eq!(cells[0], "gpu");
    assert_eq!(cells[1], "test");
    assert_eq!(cells[2], "none", "{cells:?}");
    assert_eq!(cells[3], "1 / 3");
    assert!(cells[5].contains("1 failed in a row"), "{cells:?}");
    assert_eq!(cells[6], format!("test launcher: {REFUSAL}"));
    assert_eq!(
        b.eval(&format!(
            "return {row}.querySelector('img') === null && window.__injected === undefined"
        ))
        .await,
        json!(true),
        "the launcher's error became markup"
    );
    // The decisions list holds the pool's change and the group's launch and failure.
    b.wait_for(
        "const items = [...document.querySelectorAll('#decisions li')]; \
         return items.some(li => li.dataset.kind === 'pool' && li.textContent.includes('1 → 2 workers')) \
         && items.some(li => li.dataset.kind === 'node' && li.textContent.includes('gpu: launch_failed'))",
        wait,
    )
    .await;
    b.eval("document.getElementById('node-groups-panel').scrollIntoView(); return true")
        .await;
    b.screenshot(&screenshot_path("node-groups")).await;
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

/// Failover on PostgreSQL: the leader's dashboard lists the coordinators sharing its
/// database, the leader and a standby (here a `Failover` in this process that never takes
/// over while the leader renews), and the epoch of the last takeover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_the_leader_and_its_standby() {
    let Some(url) = databases::fresh_postgres("dashboard_failover").await else {
        return;
    };
    let Some(b) = browser(1280, 800).await else {
        return;
    };
    let handlers = HandlerRegistry::new();
    wrangle_actors::register_all(&handlers);
    let config = CoordinatorConfig {
        min_workers: 1,
        max_workers: 1,
        store: Some(wrangle::StoreConfig::new(&url)),
        ..CoordinatorConfig::default()
    };
    let coordinator = Coordinator::start(config, handlers).await.unwrap();
    let app = wrangle::api::router(coordinator.clone(), wrangle::api::ApiConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let page = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(wrangle::api::serve(listener, app, std::future::pending()));
    let standby_store = wrangle::Store::open(wrangle::StoreConfig::new(&url))
        .await
        .unwrap();
    let standby = wrangle::failover::Failover::new(
        standby_store,
        Some("http://127.0.0.1:9".into()),
        &wrangle::api::ApiConfig::default(),
    )
    .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let standing_by = {
        let (standby, stop) = (standby.clone(), stop.clone());
        tokio::spawn(async move { standby.wait_to_lead(&stop).await })
    };
    b.goto(&page).await;
    b.wait_for(
        "const rows = [...document.querySelectorAll('#coordinators tbody tr')]; \
         return !document.getElementById('failover-panel').hidden && rows.length === 2 \
         && rows.some(r => r.cells[1].textContent === 'leader' && r.cells[0].textContent.endsWith('(this one)')) \
         && rows.some(r => r.cells[1].textContent === 'standby' && r.cells[2].textContent === 'http://127.0.0.1:9')",
        Duration::from_secs(20),
    )
    .await;
    let summary = b
        .eval("return document.getElementById('failover-summary').textContent")
        .await;
    let summary = summary.as_str().unwrap();
    assert!(
        summary.starts_with("leader coordinator-") && summary.contains("(epoch 1)"),
        "{summary}"
    );
    let header = b
        .eval("return document.getElementById('store').textContent")
        .await;
    assert!(
        header.as_str().unwrap().ends_with("(leader, epoch 1)"),
        "the header says this coordinator leads: {header}"
    );
    b.eval("document.getElementById('failover-panel').scrollIntoView(); return true")
        .await;
    b.screenshot(&screenshot_path("failover")).await;
    stop.cancel();
    assert_eq!(standing_by.await.unwrap(), None, "the standby never led");
    standby.leave().await;
    coordinator.stop(false).await.unwrap();
    databases::drop_postgres(&url).await;
}
