//! The coordinator supervises its cluster gate: a gate that dies is started again, and the
//! listener keeps serving. In-process (the gate is found through its process group).

use std::time::Duration;

use wrangle::{ClusterConfig, Coordinator, CoordinatorConfig};

#[path = "support/net.rs"]
mod net;

fn gates() -> Vec<ractor::ActorCell> {
    ractor::pg::get_members(&"wrangle.gate".to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gate_is_started_again() {
    let listen = format!("127.0.0.1:{}", net::free_port()).parse().unwrap();
    let coordinator = Coordinator::builder()
        .config(CoordinatorConfig {
            cluster: Some(ClusterConfig::new(listen, "gate-test")),
            ..CoordinatorConfig::default()
        })
        .start()
        .await
        .unwrap();
    let first = gates();
    assert_eq!(first.len(), 1, "one gate");
    first[0].kill();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = gates();
        if now.len() == 1 && now[0].get_id() != first[0].get_id() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no new gate: {now:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The new gate answers for the cluster (once the coordinator has put it in place: it
    // joins its process group as it starts, a moment before).
    let nodes = loop {
        match coordinator.nodes().await {
            Ok(nodes) => break nodes,
            Err(e) => assert!(std::time::Instant::now() < deadline, "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(nodes.is_empty());
    assert_eq!(
        coordinator
            .get_stats()
            .await
            .unwrap()
            .cluster
            .unwrap()
            .online,
        0
    );
    coordinator.stop(false).await.unwrap();
    assert!(gates().is_empty(), "the gate outlived its coordinator");
}
