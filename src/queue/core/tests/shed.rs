//! Load shedding: past `shed_low_above` queued tasks, new `Low` tasks are refused (and past
//! `shed_normal_above`, `Normal` ones); higher priorities still enter, nothing accepted is
//! dropped, and shedding ends as the backlog falls.

use super::*;
use crate::task::TaskPriority;

fn at(p: TaskPriority) -> TaskSpec {
    spec("t").priority(p)
}

fn shedding(low: Option<usize>, normal: Option<usize>) -> Harness {
    Harness::new(QueueConfig {
        shed_low_above: low,
        shed_normal_above: normal,
        shed_retry_after: Duration::from_secs(7),
        ..QueueConfig::default()
    })
}

/// Fills the queue with `n` queued `High` tasks (never shed).
fn fill(h: &mut Harness, n: usize) -> Vec<TaskId> {
    (0..n).map(|_| h.submit(at(TaskPriority::High))).collect()
}

#[test]
fn over_the_mark_low_tasks_are_refused_and_higher_ones_still_enter() {
    let mut h = shedding(Some(3), None);
    let held = fill(&mut h, 3);
    // Three queued is not over the mark of three: a low task enters.
    assert!(!h.core.stats().shedding);
    let low = h.submit(at(TaskPriority::Low));
    // Four is over it.
    let stats = h.core.stats();
    assert_eq!(stats.queued, 4);
    assert!(stats.shedding, "{stats:?}");
    assert_eq!(stats.shedding_up_to, Some(TaskPriority::Low));

    match h.submit_batch(vec![at(TaskPriority::Low)]) {
        Err(QueueError::Overloaded {
            priority,
            queued,
            mark,
            setting,
            refused,
            retry_after,
        }) => {
            assert_eq!(priority, TaskPriority::Low);
            assert_eq!(
                (queued, mark, setting, refused),
                (4, 3, "shed_low_above", 1)
            );
            assert_eq!(retry_after, Duration::from_secs(7));
        }
        other => panic!("{other:?}"),
    }
    for p in [
        TaskPriority::Normal,
        TaskPriority::High,
        TaskPriority::Critical,
    ] {
        h.submit(at(p));
    }
    let stats = h.core.stats();
    assert_eq!(stats.queued, 7, "nothing accepted was dropped");
    assert_eq!(stats.shed.low, 1);
    assert_eq!((stats.shed.normal, stats.shed.high), (0, 0));
    assert_eq!(stats.submitted, 7);
    for id in held.iter().chain([&low]) {
        assert_eq!(h.status(*id), TaskStatus::Queued);
    }
    h.check();
}

#[test]
fn a_whole_batch_is_refused_for_its_shed_tasks_and_counts_only_those() {
    let mut h = shedding(Some(1), None);
    fill(&mut h, 2);
    let batch = vec![
        at(TaskPriority::High),
        at(TaskPriority::Low),
        at(TaskPriority::Low),
    ];
    match h.submit_batch(batch) {
        Err(QueueError::Overloaded { refused, .. }) => assert_eq!(refused, 3, "all of it"),
        other => panic!("{other:?}"),
    }
    let stats = h.core.stats();
    assert_eq!(
        (stats.queued, stats.submitted),
        (2, 2),
        "none of it entered"
    );
    assert_eq!(
        (stats.shed.low, stats.shed.high),
        (2, 0),
        "the high task was refused with its batch, not shed"
    );
    h.check();
}

#[test]
fn submitted_each_only_the_shed_tasks_are_left_out() {
    let mut h = shedding(Some(2), None);
    fill(&mut h, 3);
    let batch = vec![
        at(TaskPriority::Low),
        at(TaskPriority::High),
        at(TaskPriority::Low),
        at(TaskPriority::Normal),
    ];
    let a = h.submit_as(batch, Admission::Each).unwrap();
    let (accepted, shed) = (a.submitted, a.shed);
    assert_eq!(accepted.len(), 2);
    assert_eq!(shed.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![0, 2]);
    for (_, e) in &shed {
        assert!(
            matches!(
                e,
                QueueError::Overloaded {
                    priority: TaskPriority::Low,
                    refused: 2,
                    ..
                }
            ),
            "{e:?}"
        );
    }
    let stats = h.core.stats();
    assert_eq!(stats.queued, 5);
    assert_eq!(stats.queued_by_priority.high, 4);
    assert_eq!(stats.queued_by_priority.normal, 1);
    assert_eq!(stats.shed.low, 2);
    for s in &accepted {
        assert_eq!(h.status(s.id), TaskStatus::Queued);
    }
    h.check();
}

#[test]
fn a_batch_is_weighed_in_order_so_it_cannot_carry_the_queue_far_past_the_mark() {
    let mut h = shedding(Some(3), None);
    let batch = (0..6).map(|_| at(TaskPriority::Low)).collect();
    let a = h.submit_as(batch, Admission::Each).unwrap();
    let (accepted, shed) = (a.submitted, a.shed);
    // Admitted at 0, 1, 2 and 3 queued; refused at 4.
    assert_eq!(accepted.len(), 4);
    assert_eq!(shed.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![4, 5]);
    h.check();
}

#[test]
fn normal_work_has_its_own_higher_mark_and_high_work_none() {
    let mut h = shedding(Some(2), Some(4));
    fill(&mut h, 3);
    assert_eq!(h.core.stats().shedding_up_to, Some(TaskPriority::Low));
    h.submit(at(TaskPriority::Normal));
    h.submit(at(TaskPriority::Normal));
    // Five queued: over both marks.
    assert_eq!(h.core.stats().shedding_up_to, Some(TaskPriority::Normal));
    match h.submit_batch(vec![at(TaskPriority::Normal)]) {
        Err(QueueError::Overloaded {
            priority: TaskPriority::Normal,
            setting: "shed_normal_above",
            mark: 4,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(h.submit_batch(vec![at(TaskPriority::Low)]).is_err());
    for _ in 0..10 {
        h.submit(at(TaskPriority::Critical));
    }
    let stats = h.core.stats();
    assert_eq!((stats.shed.low, stats.shed.normal), (1, 1));
    assert_eq!(stats.queued, 15);
    h.check();
}

#[test]
fn delayed_tasks_known_keys_and_workflow_steps_are_not_shed() {
    let mut h = shedding(Some(1), None);
    // Delayed tasks are not queued: they do not count, in the queue or in a batch.
    let later: Vec<TaskSpec> = (0..5)
        .map(|_| at(TaskPriority::Low).delay(ms(60_000)))
        .collect();
    let a = h.submit_as(later, Admission::Each).unwrap();
    let (accepted, shed) = (a.submitted, a.shed);
    assert_eq!((accepted.len(), shed.len()), (5, 0));
    let keyed = h.submit(at(TaskPriority::High).idempotency_key("k"));
    fill(&mut h, 2);
    assert!(h.core.stats().shedding);
    // A key already known makes no new task: it is answered, whatever its priority.
    let again = h
        .submit_batch(vec![at(TaskPriority::Low).idempotency_key("k")])
        .unwrap();
    assert_eq!(
        again[0],
        Submitted {
            id: keyed,
            existing: true
        }
    );
    // Steps of a workflow run already accepted enter regardless.
    let steps = h
        .submit_as(vec![at(TaskPriority::Low)], Admission::Exempt)
        .unwrap();
    assert_eq!((steps.submitted.len(), steps.shed.len()), (1, 0));
    assert_eq!(h.core.stats().shed.low, 0);
    h.check();
}

#[test]
fn shedding_ends_as_workers_take_the_backlog_down() {
    let mut h = shedding(Some(2), None);
    fill(&mut h, 3);
    assert!(h.submit_batch(vec![at(TaskPriority::Low)]).is_err());
    h.worker("w", &["t"], &[], 1);
    assert_eq!(h.dispatch().len(), 1);
    // Two queued, running ones do not count: low work enters again.
    let stats = h.core.stats();
    assert_eq!((stats.queued, stats.running, stats.shedding), (2, 1, false));
    h.submit(at(TaskPriority::Low));
    h.check();
}

#[test]
fn while_every_compute_node_is_open_circuited_low_tasks_are_shed_whatever_the_backlog() {
    // No marks set, an empty queue: only the degraded signal sheds.
    let mut h = shedding(None, None);
    h.core.set_degraded(true);
    assert_eq!(h.core.stats().shedding_up_to, Some(TaskPriority::Low));
    match h.submit_batch(vec![at(TaskPriority::Low)]) {
        Err(QueueError::Overloaded {
            setting, queued, ..
        }) => {
            assert_eq!(queued, 0);
            assert!(setting.contains("circuit breaker is open"), "{setting}");
        }
        other => panic!("{other:?}"),
    }
    for p in [
        TaskPriority::Normal,
        TaskPriority::High,
        TaskPriority::Critical,
    ] {
        h.submit(at(p));
    }
    // The backends are back: low work enters again.
    h.core.set_degraded(false);
    assert!(!h.core.stats().shedding);
    h.submit(at(TaskPriority::Low));
    assert_eq!(h.core.stats().queued, 4);
}
