//! Routing by task type and labels: a task no worker can take waits (shown as unroutable),
//! and runs as soon as a worker that can take it attaches.

use super::*;

#[test]
fn a_task_needing_a_label_waits_for_a_worker_with_it() {
    let mut h = Harness::with_defaults();
    let plain = h.worker("cpu", &["infer"], &["region=eu"], 4);
    let id = h.submit(spec("infer").label("gpu"));

    assert!(h.dispatch().is_empty());
    assert!(plain.leased().is_empty());
    assert_eq!(h.status(id), TaskStatus::Queued);
    assert!(h.snap(id).unroutable);
    assert_eq!(h.core.stats().unroutable, 1);

    // Waiting is not dropping: an hour later it is still there.
    h.advance(Duration::from_secs(3600));
    assert!(h.dispatch().is_empty());
    assert!(h.snap(id).unroutable);

    let gpu = h.worker("gpu", &["infer"], &["gpu=a100"], 1);
    assert!(
        !h.snap(id).unroutable,
        "routable as soon as a capable worker attaches"
    );
    assert_eq!(h.core.stats().unroutable, 0);
    assert_eq!(h.dispatch(), vec![("gpu".to_string(), id, 1)]);
    assert_eq!(gpu.leased(), vec![(id, 1)]);
    assert!(plain.leased().is_empty());
    assert!(!h.snap(id).unroutable);
    h.check();
}

#[test]
fn an_exact_label_value_is_required_when_given() {
    let mut h = Harness::with_defaults();
    h.worker("a100", &["infer"], &["gpu=a100"], 1);
    let id = h.submit(spec("infer").label("gpu=h100"));
    assert!(h.dispatch().is_empty());
    assert!(h.snap(id).unroutable);
    h.worker("h100", &["infer"], &["gpu=h100"], 1);
    assert_eq!(h.dispatch(), vec![("h100".to_string(), id, 1)]);
    h.check();
}

#[test]
fn an_unknown_task_type_waits_and_is_never_dropped() {
    let mut h = Harness::with_defaults();
    h.worker("w", &["known"], &[], 4);
    let known = h.submit(spec("known"));
    let mystery = h.submit(spec("mystery"));

    assert_eq!(h.dispatch(), vec![("w".to_string(), known, 1)]);
    assert_eq!(h.status(mystery), TaskStatus::Queued);
    assert!(h.snap(mystery).unroutable);
    assert!(!h.snap(known).unroutable);
    assert_eq!(h.core.stats().unroutable, 1);
    h.complete("w", known, 1);

    h.advance(Duration::from_secs(3600));
    assert!(h.dispatch().is_empty());
    assert_eq!(h.status(mystery), TaskStatus::Queued);

    h.worker("m", &["mystery"], &[], 1);
    assert_eq!(h.dispatch(), vec![("m".to_string(), mystery, 1)]);
    assert_eq!(h.core.stats().unroutable, 0);
    h.check();
}

#[test]
fn a_task_becomes_unroutable_again_when_its_only_worker_leaves() {
    let mut h = Harness::with_defaults();
    h.worker("gpu", &["infer"], &["gpu"], 0);
    let id = h.submit(spec("infer").label("gpu"));
    assert!(
        !h.snap(id).unroutable,
        "a capable worker without credits still counts"
    );
    assert_eq!(h.core.stats().unroutable, 0);

    h.detach("gpu", 1);
    assert!(h.snap(id).unroutable);
    assert_eq!(h.core.stats().unroutable, 1);
    h.check();
}

#[test]
fn a_worker_takes_only_the_classes_it_serves() {
    let mut h = Harness::with_defaults();
    let a = h.submit(spec("a"));
    let b = h.submit(spec("b"));
    let b_sink = h.worker("wb", &["b"], &[], 5);
    assert_eq!(h.dispatch(), vec![("wb".to_string(), b, 1)]);
    assert_eq!(b_sink.leased(), vec![(b, 1)]);
    assert_eq!(h.status(a), TaskStatus::Queued);
    h.check();
}

#[test]
fn routing_classes_are_retired_with_their_last_task() {
    // Label churn: every task asks for a label never seen before. Once the tasks have
    // finished and left memory, their classes go too, and new ones reuse the slots.
    let mut h = Harness::new(QueueConfig {
        max_finished_tasks: 4,
        ..QueueConfig::default()
    });
    let labels: Vec<String> = (0..50).map(|i| format!("rack-{i}")).collect();
    let labels: Vec<&str> = labels.iter().map(|l| l.as_str()).collect();
    h.worker("w", &["t"], &labels, 1);
    for round in 0..50u32 {
        let id = h.submit(spec("t").label(format!("rack-{round}")));
        assert_eq!(h.lease_one(id), 1);
        h.complete("w", id, 1);
        h.core.credit("w", 1);
    }
    assert!(
        h.core.classes.len() <= 6,
        "{} class slots for 5 tasks in memory",
        h.core.classes.len()
    );
    assert_eq!(h.core.class_index.len(), h.core.tasks.len());
    h.check();
}
