//! The worker registry through the public API: its filters by status and by labels (a
//! worker matches when it has every label asked for, in any order), its order by id,
//! heartbeats that refresh a remote worker's snapshot, silence measured on tokio's paused
//! clock; and the same filters over the live workers a coordinator's pools register.

#[path = "support/common.rs"]
mod common;

use std::time::Duration;

use serde_json::json;
use wrangle::{
    CoordinatorConfig, HandlerRegistry, PoolConfig, TaskSpec, WorkerConfig, WorkerInfo,
    WorkerRegistry, WorkerStatus,
};

use common::{eventually, handlers, secs, start};

/// A snapshot of a worker outside this process, as a node would send it.
fn info(id: &str, status: WorkerStatus, labels: &[&str]) -> WorkerInfo {
    WorkerInfo {
        id: id.into(),
        pool: id.split('/').next().unwrap_or_default().into(),
        status,
        current_tasks: u32::from(status == WorkerStatus::Busy),
        max_concurrent_tasks: 4,
        total_completed: 0,
        total_failed: 0,
        uptime: Duration::ZERO,
        is_available: status == WorkerStatus::Idle,
        labels: labels.iter().map(|l| l.to_string()).collect(),
        restarts: 0,
        mailbox_depth: 0,
    }
}

/// Worker settings with `labels`.
fn labelled(labels: &[&str]) -> WorkerConfig {
    WorkerConfig {
        labels: labels.iter().map(|l| l.to_string()).collect(),
        ..WorkerConfig::default()
    }
}

fn ids(workers: Vec<WorkerInfo>) -> Vec<String> {
    workers.into_iter().map(|w| w.id).collect()
}

/// Four workers, registered out of order.
fn four() -> WorkerRegistry {
    let r = WorkerRegistry::new();
    r.register(info("n/d", WorkerStatus::Idle, &["eu"]));
    r.register(info("n/b", WorkerStatus::Busy, &["gpu", "eu"]));
    r.register(info("n/a", WorkerStatus::Idle, &["gpu"]));
    r.register(info("n/c", WorkerStatus::Draining, &[]));
    r
}

#[test]
fn filters_by_status_in_id_order() {
    let r = four();
    assert_eq!(r.len(), 4);
    assert_eq!(ids(r.get_workers(None, &[])), ["n/a", "n/b", "n/c", "n/d"]);
    assert_eq!(
        ids(r.get_workers(Some(WorkerStatus::Idle), &[])),
        ["n/a", "n/d"]
    );
    assert_eq!(ids(r.get_workers(Some(WorkerStatus::Busy), &[])), ["n/b"]);
    assert_eq!(
        ids(r.get_workers(Some(WorkerStatus::Draining), &[])),
        ["n/c"]
    );
    assert!(r.get_workers(Some(WorkerStatus::Stopped), &[]).is_empty());
    assert!(r.get_workers(Some(WorkerStatus::Error), &[]).is_empty());
}

#[test]
fn a_label_filter_needs_every_label_in_any_order() {
    let r = four();
    assert_eq!(ids(r.get_workers(None, &["gpu"])), ["n/a", "n/b"]);
    assert_eq!(ids(r.get_workers(None, &["eu"])), ["n/b", "n/d"]);
    assert_eq!(ids(r.get_workers(None, &["gpu", "eu"])), ["n/b"]);
    assert_eq!(ids(r.get_workers(None, &["eu", "gpu"])), ["n/b"]);
    assert!(r.get_workers(None, &["tpu"]).is_empty());
    assert!(r.get_workers(None, &["gpu", "tpu"]).is_empty());
    // Labels are matched whole: no prefixes, no case folding.
    assert!(r.get_workers(None, &["gp"]).is_empty());
    assert!(r.get_workers(None, &["GPU"]).is_empty());
    // Status and labels together: both must hold.
    assert_eq!(
        ids(r.get_workers(Some(WorkerStatus::Idle), &["eu"])),
        ["n/d"]
    );
    assert_eq!(
        ids(r.get_workers(Some(WorkerStatus::Busy), &["gpu"])),
        ["n/b"]
    );
    assert!(r
        .get_workers(Some(WorkerStatus::Idle), &["gpu", "eu"])
        .is_empty());
}

#[test]
fn a_fresh_snapshot_moves_a_worker_between_filters() {
    let r = four();
    r.heartbeat_with(info("n/a", WorkerStatus::Busy, &["gpu", "eu"]));
    assert_eq!(ids(r.get_workers(Some(WorkerStatus::Idle), &[])), ["n/d"]);
    assert_eq!(
        ids(r.get_workers(Some(WorkerStatus::Busy), &["eu"])),
        ["n/a", "n/b"]
    );
    assert_eq!(r.get("n/a").unwrap().status, WorkerStatus::Busy);
    // A snapshot of a worker not yet known registers it.
    r.heartbeat_with(info("n/e", WorkerStatus::Idle, &["gpu"]));
    assert_eq!(ids(r.get_workers(None, &["gpu"])), ["n/a", "n/b", "n/e"]);
    // Gone means gone from every filter.
    assert_eq!(r.unregister("n/b").unwrap().id, "n/b");
    assert!(r.get("n/b").is_none());
    assert!(
        !r.heartbeat("n/b"),
        "a heartbeat of an unknown worker is refused"
    );
    assert_eq!(ids(r.get_workers(None, &["eu"])), ["n/a", "n/d"]);
    assert_eq!(
        ids(r.get_workers(Some(WorkerStatus::Busy), &["gpu", "eu"])),
        ["n/a"]
    );
    assert_eq!(r.len(), 4);
}

#[tokio::test(start_paused = true)]
async fn silence_is_measured_from_the_last_heartbeat() {
    let r = WorkerRegistry::new();
    r.register(info("n/a", WorkerStatus::Idle, &[]));
    tokio::time::advance(secs(10)).await;
    r.register(info("n/b", WorkerStatus::Idle, &[]));
    tokio::time::advance(secs(2)).await;
    assert_eq!(r.silent_for(secs(5)), [("n/a".to_string(), secs(12))]);
    assert!(r.heartbeat("n/a"));
    assert!(r.silent_for(secs(5)).is_empty());
    tokio::time::advance(secs(4)).await;
    assert_eq!(r.silent_for(secs(5)), [("n/b".to_string(), secs(6))]);
    // Silent workers stay listed (the health check decides what to do about them).
    assert_eq!(r.get_workers(None, &[]).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_coordinators_workers_filter_by_their_pools_labels_and_live_status() {
    let config = CoordinatorConfig {
        min_workers: 2,
        max_workers: 2,
        auto_scale: false,
        worker: labelled(&["cpu"]),
        ..CoordinatorConfig::default()
    };
    let c = start(config, handlers()).await;
    let gpu = HandlerRegistry::new();
    wrangle_actors::register_all(&gpu);
    c.add_pool(
        PoolConfig {
            name: "gpu".into(),
            min_workers: 1,
            max_workers: 1,
            worker: labelled(&["gpu", "eu"]),
            ..PoolConfig::default()
        },
        gpu,
    )
    .await
    .unwrap();
    let r = c.registry();
    assert_eq!(
        ids(r.get_workers(None, &[])),
        ["gpu/w-1", "local/w-1", "local/w-2"]
    );
    assert_eq!(
        ids(r.get_workers(None, &["cpu"])),
        ["local/w-1", "local/w-2"]
    );
    assert_eq!(ids(r.get_workers(None, &["eu", "gpu"])), ["gpu/w-1"]);
    assert!(r.get_workers(None, &["cpu", "gpu"]).is_empty());
    assert_eq!(r.get_workers(Some(WorkerStatus::Idle), &[]).len(), 3);

    // A task that needs a gpu makes that worker busy; the filters read its live state.
    let spec = TaskSpec::new("sleep", &json!({ "ms": 2_000 }))
        .unwrap()
        .label("gpu");
    let task = c.submit_async(spec).await.unwrap();
    eventually("the gpu worker busy", secs(5), || async {
        ids(r.get_workers(Some(WorkerStatus::Busy), &[])) == ["gpu/w-1"]
    })
    .await;
    assert_eq!(
        ids(r.get_workers(Some(WorkerStatus::Idle), &[])),
        ["local/w-1", "local/w-2"]
    );
    assert!(r.get_workers(Some(WorkerStatus::Busy), &["cpu"]).is_empty());
    assert_eq!(c.get_workers().await.unwrap().len(), 3);
    task.wait(secs(10)).await.unwrap();
    eventually("every worker idle again", secs(5), || async {
        r.get_workers(Some(WorkerStatus::Idle), &[]).len() == 3
    })
    .await;
    c.stop(true).await.unwrap();
}
