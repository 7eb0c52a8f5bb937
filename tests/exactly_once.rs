//! Exactly once at volume: 100,000 tasks submitted in batches to a multi-worker runtime,
//! each run by its handler exactly once and each outcome streamed back once, when nothing
//! fails.

#[path = "support/common.rs"]
mod common;

use std::collections::HashSet;

use wrangle::{TaskOutcome, TaskSpec};

use common::{counted_sleep, fixed_with_slots, handlers, secs, start, Runs};

const TASKS: usize = 100_000;
const BATCH: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_thousand_tasks_each_run_exactly_once() {
    let runs = Runs::default();
    let handlers = handlers();
    handlers.register("count", counted_sleep(runs.clone()));
    let c = start(fixed_with_slots(4, 16), handlers).await;

    let spec = TaskSpec::new("count", &serde_json::json!({ "ms": 0 })).unwrap();
    let mut ids = HashSet::with_capacity(TASKS);
    let mut streams = Vec::new();
    for _ in 0..TASKS / BATCH {
        let (submitted, rx) = c
            .queue()
            .submit_batch_streaming(vec![spec.clone(); BATCH])
            .await
            .unwrap();
        for s in submitted {
            assert!(!s.existing);
            assert!(ids.insert(s.id), "ids are unique");
        }
        streams.push(rx);
    }
    assert_eq!(ids.len(), TASKS);

    let mut answered = HashSet::with_capacity(TASKS);
    for mut rx in streams {
        for _ in 0..BATCH {
            let (id, outcome) = tokio::time::timeout(secs(60), rx.recv())
                .await
                .expect("outcomes keep coming")
                .expect("stream open until every task answered");
            assert!(
                matches!(outcome, TaskOutcome::Completed { .. }),
                "{outcome:?}"
            );
            assert!(ids.contains(&id), "answer for a task of this batch");
            assert!(answered.insert(id), "task {id} answered twice");
        }
    }
    assert_eq!(answered.len(), TASKS);

    let ran = runs.all();
    assert_eq!(ran.len(), TASKS, "every task ran");
    let repeated: Vec<_> = ran.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        repeated.is_empty(),
        "tasks run more than once: {repeated:?}"
    );

    let stats = c.get_stats().await.unwrap();
    assert_eq!(stats.queue.submitted, TASKS as u64);
    assert_eq!(stats.queue.completed, TASKS as u64);
    assert_eq!(
        (
            stats.queue.failed,
            stats.queue.retried,
            stats.queue.leases_lost
        ),
        (0, 0, 0)
    );
    assert_eq!((stats.queue.queue_size, stats.queue.running), (0, 0));
    assert_eq!(stats.workers.total_completed, TASKS as u64);
    let report = c.stop(true).await.unwrap();
    assert_eq!(report.unfinished, 0);
}
