//! Security tests, the http boundary: input bounds (task options, batch size, durations,
//! query strings), and refused requests leaving the durable store untouched.

use axum::http::StatusCode;
use serde_json::json;
use wrangle::api::{router, ApiConfig};

use super::{bearer, coordinator, scoped, send, submitted, JSON, TASK};
use crate::common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_options_past_their_maximums_get_400_naming_the_field() {
    let c = coordinator().await;
    let app = router(c.clone(), ApiConfig::default());
    let cases = [
        (json!({"task_type": "echo", "retries": u32::MAX}), "retries"),
        (json!({"task_type": "echo", "retries": 101}), "retries"),
        (
            json!({"task_type": "echo", "delay_ms": 1u64 << 63}),
            "delay_ms",
        ),
        (
            json!({"task_type": "echo", "delay_ms": u64::MAX}),
            "delay_ms",
        ),
        (
            json!({"task_type": "echo", "timeout_ms": u64::MAX}),
            "timeout_ms",
        ),
        (
            json!([{"task_type": "echo"}, {"task_type": "echo"}, {"task_type": "echo", "retries": 1000}]),
            "[2].retries",
        ),
        (
            json!({"tasks": [{"task_type": "echo"}, {"task_type": "echo", "delay_ms": u64::MAX}]}),
            "tasks[1].delay_ms",
        ),
    ];
    for (body, field) in cases {
        let (s, v, _) = send(&app, "POST", "/tasks", &[JSON], &body.to_string()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(v["error"]["field"], field, "{body}");
    }
    assert_eq!(
        submitted(&c).await,
        0,
        "nothing of a refused batch was queued"
    );
    let at_max = json!({"task_type": "echo", "retries": 100, "delay_ms": 31_536_000_000u64,
                        "timeout_ms": 2_592_000_000u64});
    let (s, _, _) = send(&app, "POST", "/tasks", &[JSON], &at_max.to_string()).await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "the documented maximums themselves are accepted"
    );
    c.stop(false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_past_its_limit_is_refused_before_the_rest_is_parsed() {
    let c = coordinator().await;
    let app = router(
        c.clone(),
        ApiConfig {
            max_batch: 10,
            ..ApiConfig::default()
        },
    );
    // Eleven tasks, then bytes that are not JSON: the count stops the parse first.
    let eleven = [r#"{"task_type": "echo"}"#; 11].join(",");
    for body in [
        format!("[{eleven}, this is not json"),
        format!(r#"{{"tasks": [{eleven}]}}"#),
        format!("[{eleven}]"),
    ] {
        let (s, v, _) = send(&app, "POST", "/tasks", &[JSON], &body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(v["error"]["field"], "tasks", "{v}");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 10"));
    }
    let ten = [r#"{"task_type": "echo"}"#; 10].join(",");
    let (s, _, _) = send(&app, "POST", "/tasks", &[JSON], &format!("[{ten}]")).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(submitted(&c).await, 10);
    c.stop(false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_durations_that_overflow_are_400() {
    let c = coordinator().await;
    let app = router(c.clone(), ApiConfig::default());
    let (_, v, _) = send(&app, "POST", "/tasks", &[JSON], TASK).await;
    let id = v["tasks"][0]["id"].as_str().unwrap().to_string();
    for timeout in [
        "999999999999999999m",
        "18446744073709551615m",
        "99999999999999999999ms",
    ] {
        let (s, v, _) = send(
            &app,
            "GET",
            &format!("/tasks/{id}/wait?timeout={timeout}"),
            &[],
            "",
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{timeout}");
        assert_eq!(v["error"]["field"], "timeout");
    }
    // A query string that does not parse is answered in JSON like every other error.
    for uri in [
        "/tasks?limit=1&limit=2".to_string(),
        format!("/tasks/{id}/wait?timeout=1&timeout=2"),
    ] {
        let (s, v, h) = send(&app, "GET", &uri, &[], "").await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(h["content-type"], "application/json", "{uri}");
        assert_eq!(v["error"]["field"], "query");
    }
    c.stop(false).await.unwrap();
}

/// Every kind of refused request, then one accepted: the store holds exactly the one.
async fn refused_requests_store_nothing(url: &str) {
    let config = wrangle::CoordinatorConfig {
        store: Some(wrangle::StoreConfig::new(url)),
        ..common::fixed(1)
    };
    let c = common::start(config, common::handlers()).await;
    let app = router(c.clone(), scoped());
    let submit = bearer("subm1t");
    let submit = (submit.0, submit.1.as_str());
    let reader = bearer("r3ader");
    let refused: [(&[(&str, &str)], &str); 6] = [
        (&[submit, ("content-type", "text/plain")], TASK),
        (&[submit, JSON, ("host", "attacker.example")], TASK),
        (&[submit, JSON, ("origin", "https://evil.example")], TASK),
        (&[(reader.0, &reader.1), JSON], TASK),
        (&[JSON], TASK),
        (
            &[submit, JSON],
            r#"[{"task_type": "echo"}, {"task_type": "echo", "retries": 4294967295}]"#,
        ),
    ];
    for (headers, body) in refused {
        let (s, _, _) = send(&app, "POST", "/tasks", headers, body).await;
        assert!(s.is_client_error(), "{headers:?}: {s}");
    }
    let (s, _, _) = send(&app, "POST", "/tasks", &[submit, JSON], TASK).await;
    assert_eq!(s, StatusCode::CREATED);
    c.stop(true).await.unwrap();
    assert_eq!(
        crate::databases::count(url, "SELECT COUNT(*) FROM tasks").await,
        1,
        "only the accepted task reached {url}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_store_nothing_in_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    refused_requests_store_nothing(&crate::databases::sqlite_url(dir.path(), "refused")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_store_nothing_in_postgres() {
    let Some(url) = crate::databases::fresh_postgres("http_refused").await else {
        return;
    };
    refused_requests_store_nothing(&url).await;
    crate::databases::drop_postgres(&url).await;
}
