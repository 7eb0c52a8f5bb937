//! Lease order: highest priority first, first in first out within a priority, across every
//! routing class a worker serves; cancelled tasks never leased, the rest leased exactly once.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::task::TaskPriority;

/// Task types and labels spread over three routing classes, all served by worker `w`.
const CLASSES: [(&str, Option<&str>); 3] = [("a", None), ("b", None), ("a", Some("x"))];

fn class_spec(priority: u8, class: usize) -> TaskSpec {
    let (task_type, label) = CLASSES[class];
    let s = spec(task_type).priority(TaskPriority::ALL[priority as usize]);
    match label {
        Some(l) => s.label(l),
        None => s,
    }
}

/// One worker with one credit: each dispatch leases at most one task, which it completes
/// at once and gets its credit back.
fn one_slot_queue() -> Harness {
    let mut h = Harness::with_defaults();
    h.worker("w", &["a", "b"], &["x=1"], 1);
    h
}

/// Leases the next task (if any), completes it and returns the credit.
fn lease_next(h: &mut Harness) -> Option<TaskId> {
    let leased = h.dispatch();
    assert!(leased.len() <= 1, "one credit, several leases: {leased:?}");
    let (_, id, attempt) = leased.into_iter().next()?;
    assert_eq!(attempt, 1);
    h.complete("w", id, attempt);
    h.core.credit("w", 1);
    Some(id)
}

/// The task a model of the queue says runs next: highest priority, then lowest submission
/// number.
fn best(waiting: &[(u8, usize, TaskId)]) -> Option<usize> {
    (0..waiting.len()).min_by_key(|&i| (std::cmp::Reverse(waiting[i].0), waiting[i].1))
}

/// Leases the next task and checks it is the one the model says; keeps the model in step.
fn lease_and_compare(h: &mut Harness, waiting: &mut Vec<(u8, usize, TaskId)>) -> Option<TaskId> {
    let got = lease_next(h);
    let want = best(waiting).map(|i| waiting.remove(i).2);
    assert_eq!(got, want, "leased the wrong task");
    got
}

type Batches = Vec<Vec<(u8, usize)>>;

fn batches() -> impl Strategy<Value = Batches> {
    prop::collection::vec(prop::collection::vec((0u8..4, 0usize..3), 1..8), 1..10)
}

#[derive(Clone, Debug)]
enum Op {
    Submit(Vec<(u8, usize)>),
    Lease,
    /// Cancels the n-th submitted task (modulo the count so far).
    Cancel(usize),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        3 => prop::collection::vec((0u8..4, 0usize..3), 1..6).prop_map(Op::Submit),
        3 => Just(Op::Lease),
        2 => any::<usize>().prop_map(Op::Cancel),
    ];
    prop::collection::vec(op, 1..60)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Everything submitted first (in random batches), then drained one lease at a time:
    /// the lease order is priority descending, submission order within a priority.
    #[test]
    fn leases_follow_priority_then_fifo(batches in batches()) {
        let mut h = one_slot_queue();
        let mut submitted = Vec::new();
        for batch in batches {
            let specs = batch.iter().map(|&(p, c)| class_spec(p, c)).collect();
            let ids = h.submit_batch(specs).expect("accepted");
            prop_assert_eq!(ids.len(), batch.len());
            for (s, &(p, _)) in ids.iter().zip(&batch) {
                submitted.push((p, s.id));
            }
        }
        let mut expected = submitted.clone();
        // A stable sort keeps submission order within a priority.
        expected.sort_by_key(|&(p, _)| std::cmp::Reverse(p));
        let expected: Vec<TaskId> = expected.into_iter().map(|(_, id)| id).collect();

        let mut leased = Vec::new();
        while let Some(id) = lease_next(&mut h) {
            leased.push(id);
            h.check();
        }
        prop_assert_eq!(leased, expected);
        let stats = h.core.stats();
        prop_assert_eq!(stats.completed as usize, submitted.len());
        prop_assert_eq!(stats.queue_size, 0);
    }

    /// Submits, leases and cancels interleaved: each lease is the best task still waiting,
    /// a cancelled task is never leased, and every task not cancelled is leased exactly once.
    #[test]
    fn cancelled_tasks_never_lease_and_the_rest_lease_once(ops in ops()) {
        let mut h = one_slot_queue();
        let mut all: Vec<TaskId> = Vec::new();
        let mut waiting: Vec<(u8, usize, TaskId)> = Vec::new();
        let mut cancelled: Vec<TaskId> = Vec::new();
        let mut leases: HashMap<TaskId, usize> = HashMap::new();

        for op in ops {
            match op {
                Op::Submit(batch) => {
                    let specs = batch.iter().map(|&(p, c)| class_spec(p, c)).collect();
                    let ids = h.submit_batch(specs).expect("accepted");
                    for (s, &(p, _)) in ids.iter().zip(&batch) {
                        waiting.push((p, all.len(), s.id));
                        all.push(s.id);
                    }
                }
                Op::Lease => {
                    if let Some(id) = lease_and_compare(&mut h, &mut waiting) {
                        *leases.entry(id).or_default() += 1;
                    }
                }
                Op::Cancel(n) if !all.is_empty() => {
                    let id = all[n % all.len()];
                    let result = h.cancel(id);
                    match waiting.iter().position(|w| w.2 == id) {
                        Some(i) => {
                            prop_assert_eq!(result, Ok(TaskStatus::Queued));
                            waiting.remove(i);
                            cancelled.push(id);
                        }
                        None => {
                            // Already ran to completion, or already cancelled.
                            let is_finished = matches!(
                                result,
                                Err(QueueError::AlreadyFinished { .. })
                            );
                            prop_assert!(is_finished, "{:?}", result);
                        }
                    }
                }
                Op::Cancel(_) => {}
            }
            h.check();
        }
        while let Some(id) = lease_and_compare(&mut h, &mut waiting) {
            *leases.entry(id).or_default() += 1;
        }
        h.check();

        for id in &cancelled {
            prop_assert!(!leases.contains_key(id), "cancelled task {} was leased", id);
            prop_assert_eq!(h.status(*id), TaskStatus::Cancelled);
        }
        for id in all.iter().filter(|id| !cancelled.contains(id)) {
            prop_assert_eq!(leases.get(id).copied(), Some(1), "task {}", id);
            prop_assert_eq!(h.status(*id), TaskStatus::Completed);
        }
        let stats = h.core.stats();
        prop_assert_eq!(stats.cancelled as usize, cancelled.len());
        prop_assert_eq!(stats.completed as usize, all.len() - cancelled.len());
        prop_assert_eq!(stats.queue_size, 0);
    }
}

/// A retried task goes behind the tasks of its priority that were already waiting.
#[test]
fn a_retried_task_goes_behind_its_priority() {
    let mut h = one_slot_queue();
    let first = h.submit(spec("a").retries(1));
    let second = h.submit(spec("a"));
    let urgent_later = h.submit(spec("a").priority(TaskPriority::High));
    assert_eq!(h.lease_one(urgent_later), 1);
    h.complete("w", urgent_later, 1);
    h.core.credit("w", 1);
    assert_eq!(h.lease_one(first), 1);
    h.fail("w", first, 1, TaskError::retryable("flaky"));
    h.core.credit("w", 1);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.lease_one(second), 1);
    h.complete("w", second, 1);
    h.core.credit("w", 1);
    assert_eq!(h.lease_one(first), 2);
    h.check();
}

/// A stream of `High` tasks, one leased per step, with one `Low` task waiting among them:
/// the step at which the `Low` one is leased, if it is within `steps`.
fn low_served_at(aging: Option<Duration>, steps: usize) -> Option<usize> {
    let mut h = Harness::new(QueueConfig {
        priority_aging: aging,
        ..QueueConfig::default()
    });
    h.worker("w", &["t"], &[], 0);
    let low = h.submit(spec("t").priority(TaskPriority::Low));
    for _ in 0..3 {
        h.submit(spec("t").priority(TaskPriority::High));
    }
    for step in 0..steps {
        h.advance(Duration::from_secs(1));
        h.submit(spec("t").priority(TaskPriority::High));
        h.core.credit("w", 1);
        let leased = h.dispatch();
        assert_eq!(leased.len(), 1);
        let (_, id, _) = leased[0];
        h.complete("w", id, 1);
        h.check();
        if id == low {
            return Some(step);
        }
    }
    None
}

#[test]
fn strict_priority_starves_low_and_aging_cures_it() {
    assert_eq!(low_served_at(None, 100), None, "strict: Low waits for ever");
    // With aging at 10 s, the Low task goes first once it has waited 10 s.
    assert_eq!(low_served_at(Some(Duration::from_secs(10)), 100), Some(9));
}

#[test]
fn aged_tasks_go_oldest_first_and_younger_ones_keep_priority_order() {
    let mut h = Harness::new(QueueConfig {
        priority_aging: Some(Duration::from_secs(5)),
        ..QueueConfig::default()
    });
    h.worker("w", &["t"], &[], 0);
    let old_low = h.submit(spec("t").priority(TaskPriority::Low));
    let old_normal = h.submit(spec("t"));
    h.advance(Duration::from_secs(6));
    let young_low = h.submit(spec("t").priority(TaskPriority::Low));
    let young_high = h.submit(spec("t").priority(TaskPriority::High));
    h.core.credit("w", 4);
    let order: Vec<TaskId> = h.dispatch().into_iter().map(|(_, id, _)| id).collect();
    assert_eq!(order, vec![old_low, old_normal, young_high, young_low]);
    h.check();
}
