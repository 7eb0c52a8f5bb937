//! The coordinator supervises its cluster gate: a gate that dies is started again, and the
//! listener keeps serving, and the restart is counted as the gate's. In-process (the gate is found through its process group).

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
    // The new gate joins its group in its `pre_start`, a moment before the coordinator
    // takes its handle: wait for both.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = gates();
        if now.len() == 1 && now[0].get_id() != first[0].get_id() {
            if let Ok(nodes) = coordinator.nodes().await {
                // The new gate answers for the cluster.
                assert!(nodes.is_empty());
                break;
            }
        }
        assert!(std::time::Instant::now() < deadline, "no new gate: {now:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = coordinator.get_stats().await.unwrap();
    assert_eq!(stats.cluster.unwrap().online, 0);
    // Counted as a gate restart, not a pool restart.
    assert_eq!((stats.gate_restarts, stats.pool_restarts), (1, 0));
    coordinator.stop(false).await.unwrap();
    assert!(gates().is_empty(), "the gate outlived its coordinator");
}
