//! Retention: only the newest `max_finished_tasks` finished tasks are kept, dead letters
//! stay while they are in the dead-letter list, and nothing is kept forever.

use super::*;

fn finish_one(h: &mut Harness) -> TaskId {
    let id = h.submit(spec("t"));
    h.lease_one(id);
    h.complete("w", id, 1);
    h.core.credit("w", 1);
    id
}

fn dead_letter_one(h: &mut Harness) -> TaskId {
    let id = h.submit(spec("t"));
    h.lease_one(id);
    h.fail("w", id, 1, TaskError::permanent("broken"));
    h.core.credit("w", 1);
    id
}

#[test]
fn old_finished_tasks_are_pruned_but_dead_letters_kept() {
    let mut h = Harness::new(QueueConfig {
        max_finished_tasks: 2,
        ..QueueConfig::default()
    });
    h.worker("w", &["t"], &[], 1);
    let dead = dead_letter_one(&mut h);
    let a = finish_one(&mut h);
    let b = finish_one(&mut h);
    let c = finish_one(&mut h);
    let cancelled = h.submit(spec("t"));
    h.cancel(cancelled).unwrap();

    assert!(h.core.snapshot(a).is_none(), "oldest completed pruned");
    assert!(h.core.snapshot(b).is_none());
    assert!(h.core.snapshot(c).is_some());
    assert!(h.core.snapshot(cancelled).is_some());
    assert_eq!(h.cancel(a), Err(QueueError::NotFound(a)));

    assert_eq!(
        h.status(dead),
        TaskStatus::Failed,
        "dead letters outlive retention"
    );
    assert_eq!(h.dead_ids(), vec![dead]);
    assert_eq!(h.core.stats().completed, 3, "counters are not pruned");

    // Once re-queued and finished, it is an ordinary finished task again.
    h.core.requeue(dead).unwrap();
    h.lease_one(dead);
    h.complete("w", dead, 2);
    h.core.credit("w", 1);
    finish_one(&mut h);
    finish_one(&mut h);
    assert!(h.core.snapshot(dead).is_none());
    h.check();
}

#[test]
fn a_pruned_task_frees_its_idempotency_key() {
    let mut h = Harness::new(QueueConfig {
        max_finished_tasks: 1,
        ..QueueConfig::default()
    });
    h.worker("w", &["t"], &[], 1);
    let first = h.submit(spec("t").idempotency_key("k"));
    h.lease_one(first);
    h.complete("w", first, 1);
    h.core.credit("w", 1);
    finish_one(&mut h);
    assert!(h.core.snapshot(first).is_none());
    let s = h
        .submit_batch(vec![spec("t").idempotency_key("k")])
        .unwrap();
    assert!(!s[0].existing);
    assert_ne!(s[0].id, first);
    h.check();
}

#[test]
fn the_dead_letter_list_drops_its_oldest_when_full() {
    let mut h = Harness::new(QueueConfig {
        max_dead_letters: 2,
        ..QueueConfig::default()
    });
    h.worker("w", &["t"], &[], 1);
    let d: Vec<TaskId> = (0..3).map(|_| dead_letter_one(&mut h)).collect();
    assert_eq!(h.dead_ids(), vec![d[1], d[2]]);
    assert_eq!(h.core.stats().dead_lettered, 2);
    assert!(matches!(
        h.core.requeue(d[0]),
        Err(QueueError::NotDeadLettered { .. })
    ));
    h.check();
}

/// A dead letter that retention skipped (it was in the dead-letter list then) and that later
/// falls out of a full dead-letter list must still be pruned some time: otherwise every such
/// task stays in memory for good.
#[test]
fn a_task_dropped_from_the_dead_letters_is_pruned_later() {
    let mut h = Harness::new(QueueConfig {
        max_finished_tasks: 1,
        max_dead_letters: 1,
        ..QueueConfig::default()
    });
    h.worker("w", &["t"], &[], 1);
    let old = dead_letter_one(&mut h);
    finish_one(&mut h); // retention passes `old` by: it is a dead letter
    dead_letter_one(&mut h); // `old` leaves the full dead-letter list
    assert_eq!(h.dead_ids().len(), 1);
    for _ in 0..3 {
        finish_one(&mut h);
    }
    assert!(h.core.snapshot(old).is_none(), "kept forever");
    assert!(h.core.tasks.len() <= 2, "{} tasks kept", h.core.tasks.len());
    h.check();
}

#[test]
fn a_requeued_task_that_finishes_again_keeps_its_full_retention() {
    let mut h = Harness::new(QueueConfig {
        max_finished_tasks: 3,
        ..QueueConfig::default()
    });
    h.worker("w", &["t"], &[], 1);
    // It finishes (dead-lettered: listed once), is re-queued, then finishes again.
    let twice = dead_letter_one(&mut h);
    h.core.requeue(twice).unwrap();
    h.lease_one(twice);
    h.complete("w", twice, 2);
    h.core.credit("w", 1);
    // Two newer tasks finish: with room for three, the twice-finished task must stay,
    // although its first listing is now the oldest.
    finish_one(&mut h);
    finish_one(&mut h);
    assert!(
        h.core.snapshot(twice).is_some(),
        "pruned by its stale first listing"
    );
    h.check();
}

/// A payload of about `n` bytes.
fn sized(task_type: &str, n: usize) -> TaskSpec {
    TaskSpec::from_payload(task_type, Payload::from(serde_json::json!("x".repeat(n))))
}

#[test]
fn the_queue_refuses_a_batch_past_its_byte_bound_whole() {
    let mut h = Harness::new(QueueConfig {
        max_queue_bytes: 10_000,
        ..QueueConfig::default()
    });
    h.submit(sized("t", 6_000));
    let refused = h.submit_batch(vec![sized("t", 100), sized("t", 4_000)]);
    assert!(
        matches!(
            refused,
            Err(QueueError::FullBytes {
                capacity: 10_000,
                ..
            })
        ),
        "{refused:?}"
    );
    assert_eq!(
        h.core.stats().queue_size,
        1,
        "nothing of the refused batch was taken"
    );
    // Finished tasks free their share.
    h.worker("w", &["t"], &[], 1);
    let leased = h.dispatch();
    h.complete("w", leased[0].1, 1);
    h.submit_batch(vec![sized("t", 100), sized("t", 4_000)])
        .expect("room again");
    h.check();
}

#[test]
fn finished_tasks_and_dead_letters_are_bounded_in_bytes_too() {
    let mut h = Harness::new(QueueConfig {
        max_finished_bytes: 20_000,
        max_dead_letter_bytes: 20_000,
        ..QueueConfig::default()
    });
    h.worker("w", &["ok", "bad"], &[], 100);
    let ok: Vec<TaskId> = (0..10).map(|_| h.submit(sized("ok", 5_000))).collect();
    let bad: Vec<TaskId> = (0..10)
        .map(|_| h.submit(sized("bad", 5_000).retries(0)))
        .collect();
    assert_eq!(h.dispatch().len(), 20);
    for &id in &ok {
        h.complete("w", id, 1);
    }
    // About 5.5 KB each: three fit under 20,000 bytes.
    let kept: Vec<TaskId> = ok
        .iter()
        .copied()
        .filter(|id| h.core.snapshot(*id).is_some())
        .collect();
    assert_eq!(kept, ok[7..].to_vec(), "the newest finished tasks are kept");
    for &id in &bad {
        h.fail("w", id, 1, TaskError::permanent("no"));
    }
    assert_eq!(
        h.dead_ids(),
        bad[7..].to_vec(),
        "the newest dead letters are kept"
    );
    assert!(h.core.finished_bytes <= 20_000 && h.core.dead_bytes <= 20_000);
    h.check();
}

#[test]
fn re_running_dead_letters_leaves_no_stale_entry_that_evicts_others_early() {
    // One task dead-lettered and re-queued many times leaves an old retention entry each
    // time; they must not count against max_finished_tasks.
    let mut h = Harness::new(QueueConfig {
        max_finished_tasks: 3,
        ..QueueConfig::default()
    });
    h.worker("w", &["t"], &[], 1);
    let kept: Vec<TaskId> = (0..2).map(|_| finish_one(&mut h)).collect();
    let poison = h.submit(spec("t").retries(0));
    for attempt in 1..=2_000 {
        assert_eq!(h.lease_one(poison), attempt);
        h.fail("w", poison, attempt, TaskError::permanent("no"));
        h.core.credit("w", 1);
        h.core.requeue(poison).unwrap();
    }
    assert_eq!(h.lease_one(poison), 2_001);
    h.complete("w", poison, 2_001);
    assert!(
        h.core.finished.len() < 1_100,
        "{} stale entries kept",
        h.core.finished.len()
    );
    // Three finished tasks, within the bound of three: all kept.
    for id in kept.iter().chain([&poison]) {
        assert!(h.core.snapshot(*id).is_some(), "{id} was evicted early");
    }
    h.check();
}
