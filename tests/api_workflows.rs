//! The workflow routes, driven with `tower::ServiceExt::oneshot`: a JSON definition
//! registered, refused definitions naming the step, a run started, waited on, listed,
//! cancelled and retried, and the scopes each route needs.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use wrangle::api::{router, ApiConfig, ApiToken, Scope};
use wrangle::prelude::*;

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

/// A workflow of one step that hangs until it is cancelled.
fn stuck() -> Value {
    json!({"name": "stuck", "steps": [{"kind": "task", "name": "h", "task_type": "hang"}]})
}

/// Waits for the run `id` to end; its snapshot.
async fn wait_end(app: &Router, id: &str) -> Value {
    let uri = format!("/workflows/runs/{id}/wait?timeout=20s");
    let (status, run) = call(app, "GET", &uri, None, ADMIN).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    run
}

/// Registers a JSON definition, which must be accepted.
async fn register(app: &Router, def: Value) {
    let (status, body) = call(app, "POST", "/workflows", Some(def), ADMIN).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

async fn app() -> (Router, Coordinator) {
    let c = Coordinator::builder()
        .config(CoordinatorConfig {
            min_workers: 2,
            max_workers: 2,
            auto_scale: false,
            ..CoordinatorConfig::default()
        })
        .handler(
            "add",
            handler_fn(|_ctx, n: i64| async move { Ok::<_, TaskError>(n + 1) }),
        )
        .handler(
            "hang",
            handler_fn(|ctx: TaskContext, _: Value| async move {
                ctx.cancelled().await;
                Err::<Value, _>(TaskError::permanent("cancelled"))
            }),
        )
        .start()
        .await
        .unwrap();
    let config = ApiConfig {
        token: Some("admin-t0ken".into()),
        tokens: vec![
            ApiToken::new("reader-t0ken", [Scope::Read]),
            ApiToken::new("submitter-t0ken", [Scope::Read, Scope::Submit]),
        ],
        ..ApiConfig::default()
    };
    (router(c.clone(), config), c)
}

const ADMIN: &str = "admin-t0ken";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_workflow_runs_over_http() {
    let (app, c) = app().await;
    let mut events = c.events().subscribe();
    let def = json!({
        "name": "bump",
        "version": "v1",
        "checkpoint": "overlapped",
        "steps": [
            {"kind": "task", "name": "one", "task_type": "add", "input": {"key": "n"}, "output_key": "n"},
            {"kind": "map", "name": "each", "items": "list", "stages": ["add"], "output_key": "list"},
            {"kind": "condition", "name": "check", "when": {"key": "n", "op": "eq", "value": 2},
             "then": [{"kind": "task", "name": "two", "task_type": "add", "input": {"key": "n"}, "output_key": "n"}]}
        ]
    });
    // Registering needs `operate`; a submitter cannot.
    let (status, _) = call(
        &app,
        "POST",
        "/workflows",
        Some(def.clone()),
        "submitter-t0ken",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = call(&app, "POST", "/workflows", Some(def), ADMIN).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["version"], "v1");
    let (status, body) = call(&app, "GET", "/workflows", None, "reader-t0ken").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body[0]["name"], "bump");
    assert_eq!(body[0]["definition"]["checkpoint"], "overlapped");

    let (status, run) = call(
        &app,
        "POST",
        "/workflows/bump/runs",
        Some(json!({"n": 1, "list": [1, 2]})),
        "submitter-t0ken",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let id = run["id"].as_str().unwrap().to_string();
    let (status, done) = call(
        &app,
        "GET",
        &format!("/workflows/runs/{id}/wait?timeout=20s"),
        None,
        "reader-t0ken",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["status"], "completed");
    assert_eq!(done["state"]["n"], 3);
    assert_eq!(done["state"]["list"], json!([2, 3]));
    // The run's story is on the event stream: started, four steps, completed.
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        match &e.kind {
            wrangle::EventKind::WorkflowRun { status, .. } => seen.push(status.to_string()),
            wrangle::EventKind::WorkflowStep { step, status, .. } => {
                seen.push(format!("{step}:{status}"))
            }
            _ => {}
        }
    }
    assert_eq!(
        seen.first().map(String::as_str),
        Some("started"),
        "{seen:?}"
    );
    assert_eq!(
        seen.last().map(String::as_str),
        Some("completed"),
        "{seen:?}"
    );
    assert!(
        seen.contains(&"each[1].0:completed".to_string()),
        "{seen:?}"
    );
    assert_eq!(seen.len(), 6, "{seen:?}");
    let (status, list) = call(
        &app,
        "GET",
        "/workflows/runs?status=completed",
        None,
        "reader-t0ken",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (status, metrics) = call(&app, "GET", "/metrics", None, "reader-t0ken").await;
    assert_eq!(status, StatusCode::OK);
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains("wrangle_workflow_runs_total{event=\"completed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wrangle_workflow_steps_total{status=\"completed\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wrangle_workflow_runs_active 0"),
        "{metrics}"
    );
    c.stop(true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_workflows_and_runs_get_clear_errors() {
    let (app, c) = app().await;
    let cases = [
        (
            json!({"name": "w", "steps": [{"kind": "task", "name": "a", "task_type": "nope"}]}),
            "steps.a",
            "nope",
        ),
        (
            json!({"name": "w", "steps": [
            {"kind": "task", "name": "a", "task_type": "add"},
            {"kind": "task", "name": "a", "task_type": "add"}]}),
            "steps.a",
            "duplicate",
        ),
        (
            json!({"name": "w", "steps": [{"kind": "loop", "name": "l", "max_iterations": 0,
            "until": {"key": "k", "op": "truthy"}, "steps": [{"kind": "task", "name": "b", "task_type": "add"}]}]}),
            "steps.l",
            "max_iterations",
        ),
        (
            json!({"name": "w", "steps": [{"kind": "condition", "name": "c", "when": {"key": "k", "op": "lt"}}]}),
            "steps.c",
            "needs a value",
        ),
        (
            json!({"name": "w", "steps": [{"kind": "teleport", "name": "t"}]}),
            "steps[0]",
            "teleport",
        ),
        (
            json!({"name": "w", "timeout_ms": 0,
                "steps": [{"kind": "task", "name": "a", "task_type": "add"}]}),
            "timeout_ms",
            "1 ms",
        ),
        (
            json!({"name": "w", "checkpoint": "never",
                "steps": [{"kind": "task", "name": "a", "task_type": "add"}]}),
            "checkpoint",
            "overlapped",
        ),
    ];
    for (def, field, words) in cases {
        let (status, body) = call(&app, "POST", "/workflows", Some(def), ADMIN).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let text = body.to_string();
        assert!(text.contains(field) && text.contains(words), "{text}");
    }
    assert!(
        c.workflows().definitions().await.unwrap().is_empty(),
        "nothing registered"
    );
    let (status, _) = call(&app, "POST", "/workflows/none/runs", Some(json!({})), ADMIN).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&app, "GET", "/workflows/runs/not-a-uuid", None, ADMIN).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(
        &app,
        "GET",
        "/workflows/runs/0190b6f2-0000-7000-8000-000000000000",
        None,
        ADMIN,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    c.stop(true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_cancelled_and_conflicts_answered_409() {
    let (app, c) = app().await;
    register(&app, stuck()).await;
    let (_, run) = call(&app, "POST", "/workflows/stuck/runs", None, ADMIN).await;
    let id = run["id"].as_str().unwrap().to_string();
    let (status, still) = call(
        &app,
        "GET",
        &format!("/workflows/runs/{id}/wait?timeout=100ms"),
        None,
        ADMIN,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(still["status"], "running");
    // Cancelling needs `operate`.
    let cancel = format!("/workflows/runs/{id}/cancel");
    assert_eq!(
        call(&app, "POST", &cancel, None, "submitter-t0ken").await.0,
        StatusCode::FORBIDDEN
    );
    let (status, body) = call(&app, "POST", &cancel, None, ADMIN).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "cancelled");
    let (status, body) = call(
        &app,
        "POST",
        &format!("/workflows/runs/{id}/resume"),
        None,
        ADMIN,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _) = call(
        &app,
        "POST",
        &format!("/workflows/runs/{id}/explode"),
        None,
        ADMIN,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    c.stop(true).await.unwrap();
}

/// A run's own options ride in the query: its checkpoint mode and a timeout for the whole
/// run, past which it fails and its steps are cancelled. Bad values are refused by name,
/// and start nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_take_a_checkpoint_mode_and_a_timeout_in_the_query() {
    let (app, c) = app().await;
    register(&app, stuck()).await;
    for (query, field) in [
        ("checkpoint=never", "checkpoint"),
        ("timeout=5x", "timeout"),
        ("timeout=0ms", "timeout"),
        ("timeout=9000h", "timeout"),
        ("timeout=99999999999999999999", "timeout"),
    ] {
        let uri = format!("/workflows/stuck/runs?{query}");
        let (status, body) = call(&app, "POST", &uri, None, ADMIN).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(body.to_string().contains(field), "{query}: {body}");
    }
    let (_, runs) = call(&app, "GET", "/workflows/runs", None, ADMIN).await;
    assert_eq!(runs.as_array().unwrap().len(), 0, "nothing started: {runs}");

    let uri = "/workflows/stuck/runs?checkpoint=overlapped&timeout=300ms";
    let (status, run) = call(&app, "POST", uri, None, ADMIN).await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    assert_eq!(run["checkpoint"], "overlapped");
    let created = run["created_at_ms"].as_i64().unwrap();
    assert_eq!(run["deadline_ms"].as_i64(), Some(created + 300), "{run}");
    let id = run["id"].as_str().unwrap();
    let ended = wait_end(&app, id).await;
    assert_eq!(ended["status"], "failed");
    assert!(
        ended["error"].as_str().unwrap().contains("timed out"),
        "{ended}"
    );
    assert!(ended["finished_at_ms"].as_i64().unwrap() >= created + 300);
    let (_, metrics) = call(&app, "GET", "/metrics", None, ADMIN).await;
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    assert!(
        metrics.contains("wrangle_workflow_runs_total{event=\"timed_out\"} 1"),
        "{metrics}"
    );
    // A definition's timeout holds for runs without one of their own.
    let def = json!({"name": "bounded", "timeout_ms": 250,
        "steps": [{"kind": "task", "name": "h", "task_type": "hang"}]});
    register(&app, def).await;
    let (_, bounded) = call(&app, "POST", "/workflows/bounded/runs", None, ADMIN).await;
    let created = bounded["created_at_ms"].as_i64().unwrap();
    assert_eq!(
        bounded["deadline_ms"].as_i64(),
        Some(created + 250),
        "{bounded}"
    );
    let id = bounded["id"].as_str().unwrap();
    assert_eq!(wait_end(&app, id).await["status"], "failed");
    // Without options the run has its definition's mode and no deadline.
    let (_, plain) = call(&app, "POST", "/workflows/stuck/runs", None, ADMIN).await;
    assert_eq!(plain["checkpoint"], "before_next");
    assert!(plain.get("deadline_ms").is_none(), "{plain}");
    let cancel = format!("/workflows/runs/{}/cancel", plain["id"].as_str().unwrap());
    assert_eq!(
        call(&app, "POST", &cancel, None, ADMIN).await.0,
        StatusCode::OK
    );
    c.stop(true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_actions_take_every_matching_run() {
    let (app, c) = app().await;
    for name in ["stuck", "other"] {
        let def =
            json!({"name": name, "steps": [{"kind": "task", "name": "h", "task_type": "hang"}]});
        assert_eq!(
            call(&app, "POST", "/workflows", Some(def), ADMIN).await.0,
            StatusCode::CREATED
        );
    }
    for name in ["stuck", "stuck", "stuck", "other"] {
        let uri = format!("/workflows/{name}/runs");
        assert_eq!(
            call(&app, "POST", &uri, None, ADMIN).await.0,
            StatusCode::CREATED
        );
    }
    let filter = json!({"workflow": "stuck", "status": "running"});
    let uri = "/workflows/runs/bulk/pause";
    assert_eq!(
        call(&app, "POST", uri, Some(filter.clone()), "submitter-t0ken")
            .await
            .0,
        StatusCode::FORBIDDEN,
        "bulk actions need `operate`"
    );
    let (status, body) = call(&app, "POST", uri, Some(filter), ADMIN).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["matched"].clone(), body["changed"].clone()),
        (json!(3), json!(3))
    );
    let (_, paused) = call(&app, "GET", "/workflows/runs?status=paused", None, ADMIN).await;
    assert_eq!(paused.as_array().unwrap().len(), 3, "{paused}");
    // `{}` takes every active run: the three paused ones and the other one.
    let (status, body) = call(
        &app,
        "POST",
        "/workflows/runs/bulk/cancel",
        Some(json!({})),
        ADMIN,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["changed"], json!(4), "{body}");
    // Bad filters name their field; an unknown action is a 404.
    let (status, body) = call(
        &app,
        "POST",
        "/workflows/runs/bulk/cancel",
        Some(json!({"status": "sleeping"})),
        ADMIN,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.to_string().contains("status"), "{body}");
    let long = "w".repeat(65);
    let (status, body) = call(
        &app,
        "POST",
        "/workflows/runs/bulk/cancel",
        Some(json!({"workflow": long})),
        ADMIN,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.to_string().contains("workflow"), "{body}");
    let (status, _) = call(
        &app,
        "POST",
        "/workflows/runs/bulk/explode",
        Some(json!({})),
        ADMIN,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    c.stop(true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_definitions_carry_child_and_dynamic_steps() {
    let (app, c) = app().await;
    let kid = json!({"name": "kid", "steps": [
        {"kind": "task", "name": "inc", "task_type": "add", "input": {"key": "n"}, "output_key": "n"}
    ]});
    register(&app, kid).await;
    // The dynamic step's task returns the steps to run: here `add` returns a number, which
    // is not a list of steps, so the run fails naming the step.
    let parent = json!({"name": "parent", "steps": [
        {"kind": "child", "name": "sub", "workflow": "kid", "output_key": "kid"},
        {"kind": "dynamic", "name": "plan", "task_type": "add", "input": {"value": 1}, "max_steps": 5}
    ]});
    let (status, body) = call(&app, "POST", "/workflows", Some(parent), ADMIN).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, run) = call(
        &app,
        "POST",
        "/workflows/parent/runs",
        Some(json!({"n": 1})),
        ADMIN,
    )
    .await;
    let id = run["id"].as_str().unwrap().to_string();
    let done = wait_end(&app, &id).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["state"]["kid"], json!({"n": 2}), "{done}");
    let error = done["error"].as_str().unwrap();
    assert!(
        error.contains("step plan") && error.contains("neither a list"),
        "{error}"
    );
    // A child naming an unregistered workflow, or a bad max_steps, is refused naming the step.
    for (bad, step) in [
        (
            json!({"kind": "child", "name": "lost", "workflow": "nowhere"}),
            "lost",
        ),
        (
            json!({"kind": "dynamic", "name": "big", "task_type": "add", "max_steps": 0}),
            "big",
        ),
        (
            json!({"kind": "child", "name": "me", "workflow": "selfish"}),
            "me",
        ),
    ] {
        let def = json!({"name": "selfish", "steps": [bad]});
        let (status, body) = call(&app, "POST", "/workflows", Some(def), ADMIN).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body.to_string().contains(&format!("steps.{step}")),
            "{body}"
        );
    }
    c.stop(true).await.unwrap();
}
