//! The HTTP router, driven with `tower::ServiceExt::oneshot` (no socket): every route's happy
//! path, and every kind of rejection (400 naming the field, 401, 404, 409, 413, 429), each
//! checked to leave the runtime's state unchanged.

#[path = "support/net.rs"]
mod net;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use futures_util::future::BoxFuture;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use wrangle::api::{router, ApiConfig, RateLimit};
use wrangle::{Coordinator, CoordinatorConfig, HandlerRegistry};

async fn coordinator() -> Coordinator {
    let handlers = HandlerRegistry::new();
    wrangle_actors::register_all(&handlers);
    let config = CoordinatorConfig {
        min_workers: 1,
        max_workers: 4,
        auto_scale: false,
        ..CoordinatorConfig::default()
    };
    Coordinator::start(config, handlers).await.unwrap()
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let body = body
        .map(|b| Body::from(b.to_string()))
        .unwrap_or_else(Body::empty);
    let res = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
}

async fn raw(app: &Router, method: &str, uri: &str, body: &'static str) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn submitted(c: &Coordinator) -> u64 {
    c.get_stats().await.unwrap().queue.submitted
}

fn field(v: &Value) -> &str {
    v["error"]["field"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_routes_happy_path() {
    let c = coordinator().await;
    let app = router(c.clone(), ApiConfig::default());

    let (s, v) = call(
        &app,
        "POST",
        "/tasks",
        Some(json!({"task_type": "echo", "payload": {"x": 1}})),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["tasks"][0]["id"].as_str().unwrap().to_string();

    let (s, v) = call(
        &app,
        "GET",
        &format!("/tasks/{id}/wait?timeout=5s"),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["result"], json!({"x": 1}));

    let (s, v) = call(&app, "GET", &format!("/tasks/{id}"), None, None).await;
    assert_eq!(
        (s, v["attempts"].as_array().unwrap().len()),
        (StatusCode::OK, 1)
    );

    // A batch, in the `{"tasks": [...]}` form, with priorities by name and by level.
    let batch = json!({"tasks": [
        {"type": "echo", "data": 1, "priority": "high"},
        {"type": "echo", "data": 2, "priority": 20, "labels": [], "metadata": {"k": "v"}},
    ]});
    let (s, v) = call(&app, "POST", "/tasks", Some(batch), None).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["tasks"].as_array().unwrap().len(), 2);

    let (s, v) = call(
        &app,
        "POST",
        "/tasks/submit",
        Some(json!({"task_type": "sleep", "payload": {"ms": 60000}})),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let long = v["tasks"][0]["id"].as_str().unwrap().to_string();

    // Wait that runs out answers 202 with the task as it is.
    let (s, v) = call(
        &app,
        "GET",
        &format!("/tasks/{long}/wait?timeout=50ms"),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert!(["queued", "running"].contains(&v["status"].as_str().unwrap()));

    let (s, v) = call(&app, "GET", "/tasks/in_progress", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == long.as_str()),
        "{v}"
    );

    let (s, v) = call(&app, "DELETE", &format!("/tasks/{long}"), None, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "cancelled");
    let (s, _) = call(&app, "DELETE", &format!("/tasks/{long}"), None, None).await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "cancelling a finished task conflicts"
    );

    // A dead letter, re-queued.
    let (_, v) = call(
        &app,
        "POST",
        "/tasks",
        Some(json!({"task_type": "fail", "payload": {"mode": "permanent"}})),
        None,
    )
    .await;
    let failed = v["tasks"][0]["id"].as_str().unwrap().to_string();
    let (_, v) = call(
        &app,
        "GET",
        &format!("/tasks/{failed}/wait?timeout=5s"),
        None,
        None,
    )
    .await;
    assert_eq!(v["status"], "failed");
    let (_, v) = call(&app, "GET", "/tasks/dead_letters", None, None).await;
    assert_eq!(v["tasks"][0]["id"], failed.as_str());
    let (s, v) = call(
        &app,
        "POST",
        &format!("/tasks/{failed}/requeue"),
        None,
        None,
    )
    .await;
    assert_eq!(
        (s, v["previous_status"].as_str()),
        (StatusCode::OK, Some("failed"))
    );
    let (s, _) = call(&app, "POST", &format!("/tasks/{id}/requeue"), None, None).await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "only dead letters can be re-queued"
    );

    // Lists: by status, by type, paged with a cursor.
    let (_, v) = call(
        &app,
        "GET",
        "/tasks?status=completed&type=echo&limit=2",
        None,
        None,
    )
    .await;
    let first = v["tasks"].as_array().unwrap();
    assert_eq!(first.len(), 2, "{v}");
    assert!(first
        .iter()
        .all(|t| t["status"] == "completed" && t["task_type"] == "echo"));
    let cursor = v["next_cursor"].as_str().unwrap();
    let (_, v) = call(
        &app,
        "GET",
        &format!("/tasks?status=completed&type=echo&limit=2&cursor={cursor}"),
        None,
        None,
    )
    .await;
    let second = v["tasks"].as_array().unwrap();
    assert!(!second.is_empty() && second.iter().all(|t| t["id"].as_str().unwrap() > cursor));
    // Newest first: the last task submitted leads, and the cursor pages backwards.
    let (_, v) = call(&app, "GET", "/tasks?order=desc&limit=1", None, None).await;
    assert_eq!(v["tasks"][0]["id"], failed.as_str(), "{v}");
    let cursor = v["next_cursor"].as_str().unwrap();
    let (_, v) = call(
        &app,
        "GET",
        &format!("/tasks?order=desc&limit=1&cursor={cursor}"),
        None,
        None,
    )
    .await;
    assert_eq!(v["tasks"][0]["id"], long.as_str(), "{v}");
    let (s, v) = call(&app, "GET", "/tasks?order=sideways", None, None).await;
    assert_eq!((s, field(&v)), (StatusCode::BAD_REQUEST, "order"));
    for route in ["/tasks/queued", "/tasks/results"] {
        let (s, v) = call(&app, "GET", route, None, None).await;
        assert_eq!(s, StatusCode::OK, "{route}");
        assert!(v["tasks"].is_array(), "{route}");
    }
    c.stop(false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_routes_happy_path() {
    let c = coordinator().await;
    let app = router(c.clone(), ApiConfig::default());
    // The pool's first worker is up and listed as soon as `start` returns.
    let (s, v) = call(&app, "GET", "/workers", None, None).await;
    assert_eq!((s, v.as_array().unwrap().len()), (StatusCode::OK, 1));
    for route in ["/nodes", "/agents/nodes"] {
        let (s, v) = call(&app, "GET", route, None, None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v[0]["workers"], 1);
        assert!(v[0]["task_types"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "echo"));
    }
    let (s, v) = call(&app, "POST", "/scale", Some(json!({"workers": 3})), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["from"].as_u64(), v["to"].as_u64(), v["reason"].as_str()),
        (Some(1), Some(3), Some("manual"))
    );
    let (_, v) = call(&app, "GET", "/scale/history", None, None).await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(
        (v[0]["kind"].as_str(), v[0]["to"].as_u64()),
        (Some("pool"), Some(3)),
        "a pool's decision, marked as one: {v}"
    );
    assert!(v[0]["pool"].is_string(), "{v}");
    let (s, v) = call(&app, "GET", "/stats", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["workers"]["worker_count"], 3);
    assert_eq!(v["running"], true);
    assert_eq!(
        v["store"],
        Value::Null,
        "this coordinator keeps tasks in memory"
    );
    let (s, v) = call(&app, "GET", "/healthz", None, None).await;
    assert_eq!((s, v), (StatusCode::OK, Value::String("ok".into())));
    let (s, _) = call(&app, "GET", "/readyz", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = call(&app, "GET", "/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    for path in [
        "/tasks",
        "/tasks/{id}",
        "/tasks/{id}/wait",
        "/scale",
        "/metrics",
        "/events",
    ] {
        assert!(v["paths"][path].is_object(), "openapi lacks {path}");
    }
    assert!(v["components"]["schemas"]["TaskSnapshot"].is_object());
    // A run may start without a body (an empty state), and the document says so.
    let start = &v["paths"]["/workflows/{name}/runs"]["post"]["requestBody"];
    assert_ne!(start["required"], true, "{start}");
    assert!(start["content"]["application/json"].is_object(), "{start}");
    let (s, v) = call(&app, "GET", "/", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v.as_str().unwrap().contains("<title>wrangle</title>"));
    let (s, _) = call(&app, "GET", "/assets/app.js", None, None).await;
    assert_eq!(s, StatusCode::OK);
    c.stop(false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text() {
    let c = coordinator().await;
    let app = router(c.clone(), ApiConfig::default());
    c.submit("echo", &1).await.unwrap();
    let (s, v) = call(&app, "GET", "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let text = v.as_str().unwrap();
    for line in [
        "wrangle_tasks_completed_total 1",
        "wrangle_task_latency_seconds_count 1",
        "wrangle_mailbox_depth{actor=\"queue\"}",
        "wrangle_workers{status=\"idle\"}",
        "wrangle_worker_restarts_total 0",
        "wrangle_pool_restarts_total 0",
        "wrangle_gate_restarts_total 0",
        "wrangle_throughput_tasks_per_second ",
    ] {
        assert!(text.contains(line), "metrics lack `{line}`:\n{text}");
    }
    for l in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let value = l.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "not a sample line: {l}");
    }
    c.stop(false).await.unwrap();
}

/// A launcher whose every launch fails, as a provider out of capacity would.
struct NoCapacity;

impl wrangle::launch::Launcher for NoCapacity {
    fn kind(&self) -> &'static str {
        "test"
    }

    fn launch(
        &self,
        _node: wrangle::launch::NodeLaunch,
    ) -> BoxFuture<'_, Result<String, wrangle::launch::LaunchError>> {
        Box::pin(async { Err(wrangle::launch::LaunchError::new("test", "no capacity")) })
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
async fn scale_history_and_metrics_show_node_group_decisions_beside_the_pools() {
    let handlers = HandlerRegistry::new();
    wrangle_actors::register_all(&handlers);
    let listen = format!("127.0.0.1:{}", net::free_port()).parse().unwrap();
    let config = CoordinatorConfig {
        min_workers: 1,
        max_workers: 4,
        auto_scale: false,
        cluster: Some(wrangle::ClusterConfig::new(listen, "history-test")),
        autoscale_interval: Duration::from_millis(100),
        ..CoordinatorConfig::default()
    };
    // One node below min_nodes: launched at the first tick, refused, then a minute of
    // backoff, so the group's history holds exactly `launch` and `launch_failed`.
    let group = wrangle::launch::NodeGroupConfig {
        task_types: vec!["infer".into()],
        min_nodes: 1,
        max_nodes: 2,
        launch_backoff: Duration::from_secs(60),
        ..wrangle::launch::NodeGroupConfig::new("gpu")
    };
    let c = Coordinator::builder()
        .config(config)
        .handlers(handlers)
        .node_group(group, std::sync::Arc::new(NoCapacity))
        .start()
        .await
        .unwrap();
    let groups = c.node_groups().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while groups.history().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no failed launch: {:?}",
            groups.history()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let app = router(c.clone(), ApiConfig::default());
    let (s, v) = call(&app, "POST", "/scale", Some(json!({"workers": 2})), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let (s, v) = call(&app, "GET", "/scale/history", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let entries = v.as_array().unwrap();
    let kinds: Vec<&str> = entries
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["node", "node", "pool"], "oldest first: {v}");
    let actions: Vec<&str> = entries[..2]
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["launch", "launch_failed"]);
    assert_eq!(entries[1]["group"], "gpu");
    assert!(
        entries[1]["error"]
            .as_str()
            .unwrap()
            .contains("no capacity"),
        "{v}"
    );
    assert_eq!(
        (entries[2]["from"].as_u64(), entries[2]["to"].as_u64()),
        (Some(1), Some(2))
    );
    let times: Vec<u64> = entries
        .iter()
        .map(|e| e["at_ms"].as_u64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    let (s, v) = call(&app, "GET", "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let text = v.as_str().unwrap();
    for line in [
        "wrangle_node_group_launches_total{group=\"gpu\"} 1",
        "wrangle_node_group_launch_failures_total{group=\"gpu\"} 1",
        "wrangle_node_group_never_joined_total{group=\"gpu\"} 0",
        "wrangle_node_group_terminations_total{group=\"gpu\"} 0",
        "wrangle_node_group_drains_total{group=\"gpu\"} 0",
        "wrangle_node_group_drain_seconds_count{group=\"gpu\"} 0",
        "wrangle_node_group_nodes{group=\"gpu\",state=\"launching\"} 0",
        "wrangle_node_group_nodes{group=\"gpu\",state=\"running\"} 0",
        "wrangle_node_group_failures_in_a_row{group=\"gpu\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "metrics lack `{line}`:\n{text}"
        );
    }
    let backoff: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("wrangle_node_group_backoff_seconds{group=\"gpu\"} "))
        .expect("a backoff gauge")
        .parse()
        .unwrap();
    assert!(backoff > 0.0 && backoff <= 60.0, "{backoff}");
    c.stop(false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_histograms_are_cumulative_and_count_the_last_bucket() {
    let c = coordinator().await;
    let app = router(c.clone(), ApiConfig::default());
    for i in 0..5 {
        c.submit("echo", &i).await.unwrap();
    }
    let req = Request::builder()
        .uri("/metrics")
        .body(Body::empty())
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    // Every histogram family the output declares: its buckets, in order, never decrease,
    // end at `+Inf`, and `_count` is that last bucket.
    let histograms: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" histogram"))
        .collect();
    assert!(
        histograms.contains(&"wrangle_task_latency_seconds"),
        "{text}"
    );
    for name in histograms {
        let bucket = format!("{name}_bucket{{le=\"");
        let buckets: Vec<(&str, u64)> = text
            .lines()
            .filter_map(|l| l.strip_prefix(&bucket))
            .map(|rest| {
                let (le, n) = rest.split_once("\"} ").unwrap();
                (le, n.parse().unwrap())
            })
            .collect();
        assert!(buckets.len() > 1, "{name} has no buckets:\n{text}");
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "{name} buckets are not cumulative: {buckets:?}"
        );
        let bounds: Vec<f64> = buckets.iter().map(|(le, _)| le.parse().unwrap()).collect();
        assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{name}: {bounds:?}");
        let (le, last) = *buckets.last().unwrap();
        assert_eq!(le, "+Inf", "{name}");
        let count = format!("{name}_count {last}");
        assert!(text.lines().any(|l| l == count), "{count} in\n{text}");
        assert!(text.lines().any(|l| l.starts_with(&format!("{name}_sum "))));
    }
    let latency_count = text
        .lines()
        .find_map(|l| l.strip_prefix("wrangle_task_latency_seconds_count "))
        .unwrap();
    assert_eq!(latency_count, "5", "{text}");
    c.stop(false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_name_the_field_and_change_nothing() {
    let c = coordinator().await;
    let app = router(
        c.clone(),
        ApiConfig {
            max_body_bytes: 4096,
            ..ApiConfig::default()
        },
    );
    c.submit("echo", &0).await.unwrap();
    let before = submitted(&c).await;

    let (s, v) = raw(&app, "POST", "/tasks", "{\"task_type\": \"echo\",").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(field(&v), "body");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("invalid JSON"));

    let cases = [
        (json!({"task_type": "nope"}), "task_type"),
        (json!({"payload": {}}), "task_type"),
        (
            json!({"task_type": "echo", "priority": "urgent"}),
            "priority",
        ),
        (
            json!({"task_type": "echo", "timeout_ms": "soon"}),
            "timeout_ms",
        ),
        (json!({"task_type": "echo", "colour": "red"}), "colour"),
        (
            json!([{"task_type": "echo"}, {"task_type": "echo", "retries": -1}]),
            "[1].retries",
        ),
        (
            json!({"tasks": [{"task_type": "echo"}, {"task_type": "echo", "timeout_ms": 0}]}),
            "tasks[1]",
        ),
        (json!({"tasks": "all of them"}), "tasks"),
        (json!([]), "tasks"),
        (json!(42), "body"),
    ];
    for (body, want) in cases {
        let (s, v) = call(&app, "POST", "/tasks", Some(body.clone()), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body} -> {v}");
        assert!(
            field(&v).contains(want),
            "{body}: field `{}` should name `{want}`: {v}",
            field(&v)
        );
        // The field names the place; a position inside the item would only confuse.
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.contains(" at line "), "{body}: {message}");
    }
    let (s, v) = call(&app, "GET", "/tasks?status=done", None, None).await;
    assert_eq!((s, field(&v)), (StatusCode::BAD_REQUEST, "status"));
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("completed"),
        "{v}"
    );
    let (s, v) = call(&app, "GET", "/tasks?limit=0", None, None).await;
    assert_eq!((s, field(&v)), (StatusCode::BAD_REQUEST, "limit"));
    let (s, v) = call(&app, "GET", "/tasks?cursor=abc", None, None).await;
    assert_eq!((s, field(&v)), (StatusCode::BAD_REQUEST, "cursor"));
    let (s, v) = call(&app, "GET", "/tasks/not-a-uuid", None, None).await;
    assert_eq!((s, field(&v)), (StatusCode::BAD_REQUEST, "id"));
    let (s, v) = call(
        &app,
        "GET",
        "/tasks/01a20372-a089-7364-a7b9-a795edf89252/wait?timeout=soon",
        None,
        None,
    )
    .await;
    assert_eq!((s, field(&v)), (StatusCode::BAD_REQUEST, "timeout"));
    let (s, v) = call(&app, "POST", "/scale", Some(json!({"workers": 99})), None).await;
    assert_eq!((s, field(&v)), (StatusCode::BAD_REQUEST, "target"));
    let (s, v) = call(
        &app,
        "POST",
        "/scale",
        Some(json!({"workers": "three"})),
        None,
    )
    .await;
    assert_eq!((s, field(&v)), (StatusCode::BAD_REQUEST, "workers"));

    // 404s.
    let unknown = "01a20372-a089-7364-a7b9-a795edf89252";
    for (method, uri) in [
        ("GET", format!("/tasks/{unknown}")),
        ("DELETE", format!("/tasks/{unknown}")),
        ("POST", format!("/tasks/{unknown}/requeue")),
        ("GET", format!("/tasks/{unknown}/wait")),
        ("GET", "/no/such/route".to_string()),
    ] {
        let (s, v) = call(&app, method, &uri, None, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{method} {uri}: {v}");
        assert_eq!(v["error"]["code"], "not_found");
    }

    // 413: a body over the limit.
    let big = json!({"task_type": "echo", "payload": "x".repeat(10_000)});
    let (s, v) = call(&app, "POST", "/tasks", Some(big), None).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(v["error"]["code"], "payload_too_large");

    assert_eq!(
        submitted(&c).await,
        before,
        "no rejected request may submit anything"
    );
    let stats = c.get_stats().await.unwrap();
    assert_eq!(
        stats.workers.worker_count, 1,
        "a rejected scale changes nothing"
    );
    c.stop(false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_required_everywhere_but_healthz() {
    let c = coordinator().await;
    let app = router(
        c.clone(),
        ApiConfig {
            token: Some("s3cret".into()),
            ..ApiConfig::default()
        },
    );
    let before = submitted(&c).await;
    for (method, uri) in [
        ("GET", "/stats"),
        ("GET", "/tasks"),
        ("POST", "/tasks"),
        ("GET", "/metrics"),
        ("GET", "/events"),
        ("GET", "/openapi.json"),
        ("POST", "/scale"),
        ("GET", "/workers"),
    ] {
        let (s, v) = call(&app, method, uri, Some(json!({"task_type": "echo"})), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {uri}");
        assert_eq!(v["error"]["code"], "unauthorized");
        let (s, _) = call(
            &app,
            method,
            uri,
            Some(json!({"task_type": "echo"})),
            Some("wrong"),
        )
        .await;
        assert_eq!(
            s,
            StatusCode::UNAUTHORIZED,
            "{method} {uri} with a wrong token"
        );
    }
    assert_eq!(submitted(&c).await, before);
    let (s, _) = call(&app, "GET", "/healthz", None, None).await;
    assert_eq!(s, StatusCode::OK);
    // Load balancers probe readiness without a token; it says the role.
    let (s, v) = call(&app, "GET", "/readyz", None, None).await;
    assert_eq!((s, &v["role"]), (StatusCode::OK, &json!("single")), "{v}");
    let (s, _) = call(&app, "GET", "/failover", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = call(&app, "GET", "/stats", None, Some("s3cret")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(&app, "GET", "/stats?access_token=s3cret", None, None).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "the secret never travels in a URL (browsers log in for a cookie)"
    );
    // The dashboard's page and assets are public: they hold no data.
    for uri in ["/", "/assets/app.js", "/assets/style.css"] {
        let (s, _) = call(&app, "GET", uri, None, None).await;
        assert_eq!(s, StatusCode::OK, "{uri}");
    }
    c.stop(false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_429() {
    let c = coordinator().await;
    let limit = RateLimit {
        per_second: 0.01,
        burst: 3.0,
    };
    let app = router(
        c.clone(),
        ApiConfig {
            rate_limit: Some(limit),
            ..ApiConfig::default()
        },
    );
    for _ in 0..3 {
        let (s, _) = call(&app, "GET", "/stats", None, None).await;
        assert_eq!(s, StatusCode::OK);
    }
    let before = submitted(&c).await;
    let (s, v) = call(
        &app,
        "POST",
        "/tasks",
        Some(json!({"task_type": "echo"})),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(v["error"]["code"], "rate_limited");
    assert_eq!(submitted(&c).await, before);
    c.stop(false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_is_503_and_accepts_nothing() {
    let handlers = HandlerRegistry::new();
    wrangle_actors::register_all(&handlers);
    let mut config = CoordinatorConfig {
        min_workers: 1,
        max_workers: 1,
        auto_scale: false,
        ..Default::default()
    };
    config.queue.max_queue_size = 3;
    // Labels no worker has keep the tasks waiting.
    let c = Coordinator::start(config, handlers).await.unwrap();
    let app = router(c.clone(), ApiConfig::default());
    let waiting = |n: usize| {
        json!((0..n)
            .map(|_| json!({"task_type": "echo", "labels": ["gpu"]}))
            .collect::<Vec<_>>())
    };
    let (s, _) = call(&app, "POST", "/tasks", Some(waiting(2)), None).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = call(&app, "POST", "/tasks", Some(waiting(2)), None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("queue full"));
    let stats = c.get_stats().await.unwrap();
    assert_eq!((stats.queue.submitted, stats.queue.unroutable), (2, 2));
    tokio::time::timeout(Duration::from_secs(5), c.stop(false))
        .await
        .unwrap()
        .unwrap();
}
