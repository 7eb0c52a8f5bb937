//! Routing and load through the HTTP API, driven with `tower::ServiceExt::oneshot`: an
//! `affinity_key` given at submit (one task or a batch) keeps its tasks on one worker and
//! is stored with them, a bad one is refused naming the field, and the OpenAPI document
//! describes it. Under load shedding, low tasks are refused with 503 and `Retry-After`
//! (a batch keeps its other tasks), higher ones still enter, and what was accepted runs.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use wrangle::api::{router, ApiConfig};
use wrangle::{
    handler_fn, Coordinator, CoordinatorConfig, HandlerRegistry, QueueConfig, TaskContext,
    TaskError, WorkerConfig,
};

/// A coordinator with `workers` workers (no autoscaling), whose `whoami` handler answers
/// with its worker's id, once `gate` is open when there is one.
async fn coordinator_gated(
    workers: usize,
    config: CoordinatorConfig,
    gate: Option<tokio::sync::watch::Receiver<bool>>,
) -> Coordinator {
    let handlers = HandlerRegistry::new();
    handlers.register(
        "whoami",
        handler_fn(move |ctx: TaskContext, _: Value| {
            let gate = gate.clone();
            async move {
                if let Some(mut gate) = gate {
                    gate.wait_for(|open| *open).await.expect("gate kept");
                }
                Ok::<_, TaskError>(ctx.worker().to_string())
            }
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

/// [`coordinator_gated`] with no gate.
async fn coordinator(workers: usize, config: CoordinatorConfig) -> Coordinator {
    coordinator_gated(workers, config, None).await
}

/// Polls `cond` every 10 ms until it holds; panics naming `what` after 10 s.
async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_mark_low_tasks_get_503_with_retry_after_and_high_ones_still_enter() {
    let (open, gate) = tokio::sync::watch::channel(false);
    let config = CoordinatorConfig {
        queue: QueueConfig {
            shed_low_above: Some(3),
            shed_retry_after: std::time::Duration::from_secs(7),
            ..QueueConfig::default()
        },
        worker: WorkerConfig {
            max_concurrent_tasks: 1,
            ..WorkerConfig::default()
        },
        ..CoordinatorConfig::default()
    };
    let c = coordinator_gated(1, config, Some(gate)).await;
    let app = router(c.clone(), ApiConfig::default());
    let task = |priority: &str| json!({"task_type": "whoami", "priority": priority});

    // One task holds the only slot; four wait behind it: over the mark of three.
    let mut accepted = Vec::new();
    for _ in 0..5 {
        let (s, v) = call(&app, "POST", "/tasks", Some(task("high"))).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        accepted.extend(ids_of(&v));
    }
    eventually("one running and four queued", || async {
        let q = c.get_stats().await.unwrap().queue;
        q.running == 1 && q.queued == 4
    })
    .await;

    // A low task: refused, with the reason and when to come back.
    let (s, headers, v) = call_with_headers(&app, "POST", "/tasks", Some(task("low"))).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(headers["retry-after"], "7");
    assert_eq!(v["error"]["code"], "overloaded");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("shed_low_above"), "{message}");
    // A high one enters.
    let (s, v) = call(&app, "POST", "/tasks", Some(task("high"))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    accepted.extend(ids_of(&v));
    // A batch keeps its high task and names the low ones it lost.
    let batch = json!({"tasks": [task("low"), task("critical"), task("low")]});
    let (s, headers, v) = call_with_headers(&app, "POST", "/tasks", Some(batch)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(headers["retry-after"], "7");
    assert_eq!(v["tasks"].as_array().unwrap().len(), 1, "{v}");
    let refused: Vec<u64> = v["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(refused, vec![0, 2], "{v}");
    assert_eq!(v["refused"][0]["code"], "overloaded");
    assert_eq!(v["refused"][0]["retry_after_secs"], 7);
    accepted.extend(ids_of(&v));

    // Everything accepted is still there; nothing refused was made.
    let (_, stats) = call(&app, "GET", "/stats", None).await;
    let q = &stats["queue"];
    assert_eq!((&q["queued"], &q["running"]), (&json!(6), &json!(1)), "{q}");
    assert_eq!(q["submitted"], 7);
    assert_eq!(q["shedding"], true);
    assert_eq!(q["shedding_up_to"], "low");
    assert_eq!(q["shed"]["low"], 3);
    let (_, metrics) = call(&app, "GET", "/metrics", None).await;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains("wrangle_tasks_shed_total{priority=\"low\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains("wrangle_tasks_shed_total{priority=\"high\"} 0"));

    // The workers free up: every accepted task runs, and low work enters again.
    open.send(true).unwrap();
    for id in &accepted {
        let (s, v) = call(&app, "GET", &format!("/tasks/{id}/wait?timeout=10s"), None).await;
        assert_eq!(
            (s, &v["status"]),
            (StatusCode::OK, &json!("completed")),
            "{v}"
        );
    }
    let (s, v) = call(&app, "POST", "/tasks", Some(task("low"))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (_, stats) = call(&app, "GET", "/stats", None).await;
    assert_eq!(stats["queue"]["shedding"], false);
    c.stop(false).await.unwrap();
}
