//! Routing and load through the HTTP API, driven with `tower::ServiceExt::oneshot`: an
//! `affinity_key` given at submit (one task or a batch) keeps its tasks on one worker and
//! is stored with them, a bad one is refused naming the field, and the OpenAPI document
//! describes it.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use wrangle::api::{router, ApiConfig};
use wrangle::{
    handler_fn, Coordinator, CoordinatorConfig, HandlerRegistry, TaskContext, TaskError,
};

/// A coordinator with `workers` workers (no autoscaling), whose `whoami` handler answers
/// with its worker's id.
async fn coordinator(workers: usize, config: CoordinatorConfig) -> Coordinator {
    let handlers = HandlerRegistry::new();
    handlers.register(
        "whoami",
        handler_fn(|ctx: TaskContext, _: Value| async move {
            Ok::<_, TaskError>(ctx.worker().to_string())
        }),
    );
    let config = CoordinatorConfig {
        min_workers: workers,
        max_workers: workers,
        auto_scale: false,
        ..config
    };
    Coordinator::start(config, handlers).await.unwrap()
}

async fn call(app: &Router, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
    let (status, _, value) = call_with_headers(app, method, uri, body).await;
    (status, value)
}

async fn call_with_headers(
    app: &Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let body = body
        .map(|b| Body::from(b.to_string()))
        .unwrap_or_else(Body::empty);
    let res = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, headers, value)
}

/// The worker each task ran on, waiting for each.
async fn ran_on(app: &Router, ids: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for id in ids {
        let (s, v) = call(app, "GET", &format!("/tasks/{id}/wait?timeout=10s"), None).await;
        assert_eq!(
            (s, &v["status"]),
            (StatusCode::OK, &json!("completed")),
            "{v}"
        );
        assert_eq!(
            v["options"]["affinity_key"], "conv-7",
            "stored with the task"
        );
        out.push(v["result"].as_str().unwrap().to_string());
    }
    out
}

fn ids_of(v: &Value) -> Vec<String> {
    v["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_affinity_key_given_over_http_keeps_its_tasks_on_one_worker() {
    let c = coordinator(3, CoordinatorConfig::default()).await;
    let app = router(c.clone(), ApiConfig::default());

    let one = json!({"task_type": "whoami", "affinity_key": "conv-7"});
    let (s, v) = call(&app, "POST", "/tasks", Some(one)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let mut ids = ids_of(&v);
    let batch: Vec<Value> = (0..12)
        .map(|_| json!({"task_type": "whoami", "affinity_key": "conv-7"}))
        .collect();
    let (s, v) = call(&app, "POST", "/tasks", Some(json!({ "tasks": batch }))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    ids.extend(ids_of(&v));
    let workers = ran_on(&app, &ids).await;
    assert!(workers.iter().all(|w| *w == workers[0]), "{workers:?}");

    // Refused before anything is queued, naming the field as the client wrote it.
    let before = c.get_stats().await.unwrap().queue.submitted;
    let long = "k".repeat(257);
    let bad = json!({"tasks": [
        {"task_type": "whoami", "affinity_key": "fine"},
        {"task_type": "whoami", "affinity_key": long},
    ]});
    let (s, v) = call(&app, "POST", "/tasks", Some(bad)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["field"], "tasks[1].affinity_key");
    let empty = json!({"task_type": "whoami", "affinity_key": ""});
    let (s, v) = call(&app, "POST", "/tasks", Some(empty)).await;
    assert_eq!(
        (s, &v["error"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("affinity_key"))
    );
    assert_eq!(c.get_stats().await.unwrap().queue.submitted, before);

    let (_, doc) = call(&app, "GET", "/openapi.json", None).await;
    let key = &doc["components"]["schemas"]["TaskRequest"]["properties"]["affinity_key"];
    assert_eq!(key["maxLength"], 256, "{key}");
    let stats = &doc["components"]["schemas"]["QueueStats"]["properties"];
    assert!(stats["affinity_waiting"].is_object(), "{stats}");
    c.stop(false).await.unwrap();
}
