//! `echo`, `sleep` and `fail` through a real coordinator: what the root crate's tests and
//! benchmarks rely on them to do.

use std::time::Duration;

use serde_json::{json, Value};
use wrangle::{Coordinator, EventKind, TaskSpec, TaskStatus};

async fn coordinator() -> Coordinator {
    let handlers = wrangle::HandlerRegistry::new();
    wrangle_actors::register_all(&handlers);
    Coordinator::builder()
        .handlers(handlers)
        .start()
        .await
        .expect("coordinator starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_returns_its_input() {
    let c = coordinator().await;
    let input = json!({"a": [1, 2, {"b": null}], "s": "ü"});
    let out: Value = c
        .submit_async(TaskSpec::new("echo", &input).unwrap())
        .await
        .unwrap()
        .result(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(out, input);
    c.stop(true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleep_reports_ten_steps_of_progress_and_stops_when_cancelled() {
    let c = coordinator().await;
    let mut events = c.events().subscribe();
    let task = c
        .submit_async(TaskSpec::new("sleep", &json!({"ms": 50})).unwrap())
        .await
        .unwrap();
    let id = task.id;
    let slept: u64 = task.result(Duration::from_secs(10)).await.unwrap();
    assert_eq!(slept, 50);
    let mut steps = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let EventKind::TaskProgress {
            id: of, fraction, ..
        } = &e.kind
        {
            if *of == id {
                steps.push(*fraction);
            }
        }
    }
    assert_eq!(steps.len(), 10, "{steps:?}");
    assert!((steps[9] - 1.0).abs() < f32::EPSILON);

    let long = c
        .submit_async(TaskSpec::new("sleep", &json!({"ms": 600_000})).unwrap())
        .await
        .unwrap();
    let id = long.id;
    loop {
        if c.get_task(id).await.unwrap().status == TaskStatus::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    c.cancel_task(id).await.unwrap();
    let e = long
        .result::<u64>(Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("cancel"), "{e}");
    c.stop(true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_fails_as_asked_and_recovers_on_the_attempt_named() {
    let c = coordinator().await;
    let run = |input: Value, retries: u32| {
        let c = c.clone();
        async move {
            c.submit_async(TaskSpec::new("fail", &input).unwrap().retries(retries))
                .await
                .unwrap()
                .result::<u32>(Duration::from_secs(30))
                .await
        }
    };
    let e = run(json!({"mode": "permanent", "message": "nope"}), 3)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
    let attempt = run(json!({"succeed_on_attempt": 3}), 5).await.unwrap();
    assert_eq!(attempt, 3);
    let e = run(json!({"mode": "retryable"}), 1).await.unwrap_err();
    assert!(e.to_string().contains("failed on purpose"), "{e}");
    c.stop(true).await.unwrap();
}
