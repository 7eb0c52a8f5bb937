use std::time::Duration;

use wrangle::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke() {
    let handlers = wrangle::HandlerRegistry::new();
    wrangle_actors::register_all(&handlers);
    let c = Coordinator::start(CoordinatorConfig::default(), handlers)
        .await
        .unwrap();
    let out = c
        .submit("echo", &serde_json::json!({"a": 1}))
        .await
        .unwrap();
    assert_eq!(out.to_value(), serde_json::json!({"a": 1}));
    let specs: Vec<_> = (0..10_000)
        .map(|i| TaskSpec::new("echo", &i).unwrap())
        .collect();
    let (ids, mut rx) = c.queue().submit_batch_streaming(specs).await.unwrap();
    let mut n = 0;
    while n < ids.len() {
        let (_, o) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(o, TaskOutcome::Completed { .. }));
        n += 1;
    }
    let stats = c.get_stats().await.unwrap();
    println!("{stats:#?}");
    c.stop(true).await.unwrap();
}
