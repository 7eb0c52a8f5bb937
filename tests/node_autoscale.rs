//! A node's own pool scales: the node program runs with `--workers 1 --max-workers 4`;
//! while the coordinator (in this test's process) holds tasks only that node can serve, the
//! gate sends the node its share of them with each heartbeat's answer and the node grows
//! its pool; once the work is done it shrinks back to one worker.

use std::time::{Duration, Instant};

use wrangle::{ClusterConfig, Coordinator, CoordinatorConfig, TaskSpec};

#[path = "support/net.rs"]
mod net;
#[path = "support/programs.rs"]
mod programs;

async fn workers_of(c: &Coordinator, node: &str) -> Option<(usize, u64)> {
    c.nodes()
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.name == node)
        .map(|n| (n.pool.worker_count - n.pool.draining, n.backlog))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_pool_grows_with_its_share_of_the_backlog_and_shrinks_when_idle() {
    let port = net::free_port();
    let config = CoordinatorConfig {
        cluster: Some(ClusterConfig::new(
            format!("127.0.0.1:{port}").parse().unwrap(),
            "node-autoscale-test",
        )),
        ..CoordinatorConfig::default()
    };
    let c = Coordinator::builder().config(config).start().await.unwrap();
    let child = std::process::Command::new(programs::example_binary("node"))
        .args([
            "--join",
            &format!("127.0.0.1:{port}"),
            "--name",
            "elastic",
            "--labels",
            "gpu",
            "--workers",
            "1",
            "--max-workers",
            "4",
            "--slots",
            "2",
            "--scale-cooldown-ms",
            "300",
            "--heartbeat-ms",
            "100",
        ])
        .env("WRANGLE_COOKIE", "node-autoscale-test")
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let _node = programs::Program(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    // Joined, and its first heartbeat says its one worker runs.
    while workers_of(&c, "elastic").await.map(|w| w.0) != Some(1) {
        assert!(
            Instant::now() < deadline,
            "the node never joined with one worker"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 80 tasks of 150 ms that only this node serves: 2 slots would take 6 s.
    let mut handles = Vec::new();
    for _ in 0..80 {
        let spec = TaskSpec::new("sleep", &serde_json::json!({ "ms": 150 }))
            .unwrap()
            .label("gpu");
        handles.push(c.submit_async(spec).await.unwrap());
    }
    let (mut most, mut share_seen) = (1, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while most < 4 {
        let (workers, share) = workers_of(&c, "elastic").await.unwrap();
        most = most.max(workers);
        share_seen = share_seen.max(share);
        let last = handles.last().unwrap().id;
        let done = c.get_task(last).await.unwrap().status == wrangle::TaskStatus::Completed;
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        share_seen > 0,
        "the gate sent the node a share of the backlog"
    );
    assert!(most > 1, "the node's pool grew (most {most} workers)");
    for h in handles {
        let slept: u64 = h.result(Duration::from_secs(60)).await.unwrap();
        assert_eq!(slept, 150);
    }
    // Idle: back to its fewest, one worker at a time.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (workers, share) = workers_of(&c, "elastic").await.unwrap();
        if workers == 1 {
            assert_eq!(share, 0, "nothing waits");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pool did not shrink ({workers} workers)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.stop(false).await.unwrap();
}
