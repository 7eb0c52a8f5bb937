//! The compute routes (`/compute/nodes`), the compute metrics (a node's circuit breaker
//! among them) and the `admin` scope they need, driven with `tower::ServiceExt::oneshot` against a coordinator whose compute cluster
//! has a real HTTP node (an axum server on 127.0.0.1).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use wrangle::api::{router, ApiConfig, ApiToken, Scope};
use wrangle::compute::ComputeCluster;
use wrangle::{Coordinator, CoordinatorConfig, HandlerRegistry};

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
    token: &str,
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"));
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

async fn node_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/", axum::routing::get(|| async { "up" }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn app() -> (Router, Coordinator) {
    app_with(ComputeCluster::start("api").await.unwrap()).await
}

/// The router of a coordinator whose compute cluster is `compute`.
async fn app_with(compute: ComputeCluster) -> (Router, Coordinator) {
    let c = Coordinator::builder()
        .config(CoordinatorConfig {
            min_workers: 1,
            max_workers: 1,
            auto_scale: false,
            ..CoordinatorConfig::default()
        })
        .handlers(HandlerRegistry::new())
        .compute(compute)
        .start()
        .await
        .unwrap();
    let config = ApiConfig {
        tokens: vec![
            ApiToken::new("admin-t0ken", Scope::ALL),
            ApiToken::new("reader-t0ken", [Scope::Read]),
        ],
        ..ApiConfig::default()
    };
    (router(c.clone(), config), c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compute_nodes_are_added_listed_measured_and_removed_by_an_admin() {
    let (app, c) = app().await;
    let url = node_server().await;
    let spec = json!({
        "id": "gpu1", "endpoint": url, "labels": {"gpu": "a100"},
        "capabilities": {"memory_gb": 80}, "max_concurrent": 2,
    });
    let (status, added) = call(
        &app,
        "POST",
        "/compute/nodes",
        Some(spec.clone()),
        "admin-t0ken",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    assert_eq!(added["id"], "gpu1");
    assert_eq!(added["backend"], "http");
    assert_eq!(added["labels"]["gpu"], "a100");
    assert_eq!(added["health"]["healthy"], true);

    let (status, listed) = call(&app, "GET", "/compute/nodes", None, "admin-t0ken").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["max_concurrent"], 2);

    let (status, metrics) = call(&app, "GET", "/metrics", None, "admin-t0ken").await;
    assert_eq!(status, StatusCode::OK);
    let text = metrics.as_str().unwrap();
    for line in [
        "wrangle_compute_healthy{node=\"gpu1\"} 1",
        "wrangle_compute_in_flight{node=\"gpu1\"} 0",
        "wrangle_compute_request_seconds_count{node=\"gpu1\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in /metrics");
    }

    // Only an admin may see or change compute nodes; a 403 names the scope.
    let (status, body) = call(&app, "GET", "/compute/nodes", None, "reader-t0ken").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.to_string().contains("admin"), "{body}");
    let (status, _) = call(&app, "DELETE", "/compute/nodes/gpu1", None, "reader-t0ken").await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, _) = call(&app, "DELETE", "/compute/nodes/gpu1", None, "admin-t0ken").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, listed) = call(&app, "GET", "/compute/nodes", None, "admin-t0ken").await;
    assert_eq!(listed, json!([]));
    let (status, _) = call(&app, "DELETE", "/compute/nodes/gpu1", None, "admin-t0ken").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    c.stop(true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_compute_nodes_are_refused_naming_the_field_and_change_nothing() {
    let (app, c) = app().await;
    let url = node_server().await;
    let ok = json!({"id": "n1", "endpoint": url});
    assert_eq!(
        call(
            &app,
            "POST",
            "/compute/nodes",
            Some(ok.clone()),
            "admin-t0ken"
        )
        .await
        .0,
        StatusCode::CREATED
    );
    let cases = [
        (ok.clone(), "node_id"),
        (json!({"id": "n2", "endpoint": "gopher://x"}), "endpoint"),
        (json!({"id": "n2", "endpoint": "ssh://h:22"}), "endpoint"),
        (json!({"id": "../n2", "endpoint": url}), "node_id"),
        (
            json!({"id": "n2", "endpoint": url, "max_concurrent": 0}),
            "max_concurrent",
        ),
        (
            json!({"id": "n2", "endpoint": url, "timeout_secs": -1}),
            "timeout_secs",
        ),
        (
            json!({"id": "n2", "endpoint": url, "credential": "/etc/shadow"}),
            "credential",
        ),
        (
            json!({"id": "n2", "endpoint": url, "colour": "red"}),
            "colour",
        ),
        (
            json!({"id": "n2", "endpoint": url, "max_concurrent": "many"}),
            "max_concurrent",
        ),
        (json!({"endpoint": url}), "body"),
    ];
    for (body, field) in cases {
        let (status, answer) = call(
            &app,
            "POST",
            "/compute/nodes",
            Some(body.clone()),
            "admin-t0ken",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
    let (_, listed) = call(&app, "GET", "/compute/nodes", None, "admin-t0ken").await;
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["n1"],
        "nothing bad was added, nothing accepted was lost"
    );
    c.stop(true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_shows_in_the_listing_and_the_metrics() {
    // A node whose work fails with 500s: three in a row open its breaker.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = Router::new()
        .route("/", axum::routing::get(|| async { "up" }))
        .route(
            "/work",
            axum::routing::get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "overloaded") }),
        );
    tokio::spawn(async move { axum::serve(listener, server).await.unwrap() });
    let compute = ComputeCluster::start("api").await.unwrap();
    compute
        .add_node(wrangle::compute::ComputeNode::new("gpu1", &url).unwrap())
        .await
        .unwrap();
    let (app, c) = app_with(compute.clone()).await;
    let (_, listed) = call(&app, "GET", "/compute/nodes", None, "admin-t0ken").await;
    assert_eq!(listed[0]["breaker"]["state"], "closed", "{listed}");
    assert_eq!(listed[0]["breaker"]["trips"], 0);

    let node = compute.node("gpu1").unwrap();
    let work =
        || wrangle::compute::ComputeRequest::Http(wrangle::compute::HttpRequest::get("/work"));
    for _ in 0..3 {
        node.execute(work()).await.unwrap_err();
    }
    let refused = node.execute(work()).await.unwrap_err();
    assert!(refused.retry_after.is_some(), "{refused}");

    let (_, listed) = call(&app, "GET", "/compute/nodes", None, "admin-t0ken").await;
    let b = &listed[0]["breaker"];
    assert_eq!(b["state"], "open", "{listed}");
    assert_eq!(b["trips"], 1);
    assert_eq!(b["rejected"], 1);
    assert_eq!(b["reason"], "3 failures in a row");
    assert!(
        b["retry_at"].as_u64().unwrap() > b["opened_at"].as_u64().unwrap(),
        "{b}"
    );
    assert_eq!(listed[0]["health"]["healthy"], false);

    let (_, metrics) = call(&app, "GET", "/metrics", None, "admin-t0ken").await;
    let text = metrics.as_str().unwrap();
    for line in [
        "wrangle_compute_breaker_state{node=\"gpu1\"} 1",
        "wrangle_compute_breaker_trips_total{node=\"gpu1\"} 1",
        "wrangle_compute_breaker_rejected_total{node=\"gpu1\"} 1",
        "wrangle_compute_healthy{node=\"gpu1\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in /metrics");
    }
    let (_, doc) = call(&app, "GET", "/openapi.json", None, "admin-t0ken").await;
    let schemas = &doc["components"]["schemas"];
    assert!(
        schemas["BreakerInfo"]["properties"]["state"].is_object(),
        "the OpenAPI document describes the breaker"
    );
    c.stop(true).await.unwrap();
}
