//! Retries: exponential backoff with jitter while the budget lasts, then a dead letter;
//! `requeue` brings it back with a fresh budget; permanent errors never retry.

use super::*;

/// Fails the current attempt, checks the backoff chosen, and shows the task stays out of
/// reach until exactly then. Returns the backoff.
fn fail_and_check_backoff(
    h: &mut Harness,
    id: TaskId,
    attempt: u32,
    retry_number: u32,
) -> Duration {
    let failed_at = h.now;
    h.fail("w", id, attempt, TaskError::retryable("model server busy"));
    h.core.credit("w", 1);
    assert_eq!(h.status(id), TaskStatus::Pending);
    let delay = h.next_wake_in().expect("a retry is scheduled");

    // 100 ms doubled per retry already spent, scaled by a jitter factor in 0.5..=1.0.
    let full = ms(100) * 2u32.pow(retry_number);
    assert!(
        delay >= full / 2 && delay <= full,
        "retry {retry_number}: {delay:?} vs {full:?}"
    );
    let announced = h.count_events(|e| {
        matches!(e, EventKind::TaskRetried { id: i, delay_ms, attempt: a, .. }
            if *i == id && *a == attempt && *delay_ms == delay.as_millis() as u64)
    });
    assert_eq!(announced, 1, "one TaskRetried event with the delay");

    // Not runnable a millisecond early, even with a free worker.
    h.advance(delay - ms(1));
    assert!(h.dispatch().is_empty());
    assert_eq!(h.status(id), TaskStatus::Pending);
    h.advance(ms(1));
    assert_eq!(h.now, failed_at + delay);
    assert_eq!(h.status(id), TaskStatus::Queued);
    h.check();
    delay
}

#[test]
fn retries_back_off_exponentially_then_dead_letter_and_requeue_gives_a_fresh_budget() {
    let mut h = Harness::with_defaults();
    h.worker("w", &["flaky"], &[], 1);
    let id = h.submit(spec("flaky").retries(3));

    let mut previous = Duration::ZERO;
    for retry in 0..3 {
        let attempt = h.lease_one(id);
        assert_eq!(attempt, retry + 1);
        let delay = fail_and_check_backoff(&mut h, id, attempt, retry);
        // Ranges [50,100], [100,200], [200,400] ms: each at least the one before.
        assert!(
            delay >= previous,
            "backoff shrank: {previous:?} then {delay:?}"
        );
        previous = delay;
    }

    // The fourth failure spends the budget: failed for good, dead-lettered.
    assert_eq!(h.lease_one(id), 4);
    h.fail("w", id, 4, TaskError::retryable("model server busy"));
    h.core.credit("w", 1);
    assert_eq!(h.status(id), TaskStatus::Failed);
    assert_eq!(h.dead_ids(), vec![id]);
    assert_eq!(
        h.outcomes(id),
        vec![TaskOutcome::Failed {
            error: "model server busy".into()
        }]
    );
    let snap = h.snap(id);
    assert_eq!(snap.attempts.len(), 4);
    assert!(snap
        .attempts
        .iter()
        .all(|a| a.outcome.as_deref() == Some("failed")));
    assert!(snap.finished_at.is_some());
    let stats = h.core.stats();
    assert_eq!(
        (stats.retried, stats.failed, stats.dead_lettered),
        (3, 1, 1)
    );
    assert_eq!(h.core.next_wake(), None);
    h.check();

    // Re-queued: runnable at once, out of the dead letters, with three retries again.
    h.core.requeue(id).unwrap();
    assert_eq!(h.status(id), TaskStatus::Queued);
    assert!(h.dead_ids().is_empty());
    assert_eq!(h.core.stats().failed, 0);
    assert!(h.snap(id).finished_at.is_none());
    assert_eq!(h.lease_one(id), 5);
    fail_and_check_backoff(&mut h, id, 5, 0);
    assert_eq!(h.lease_one(id), 6);
    h.complete("w", id, 6);
    assert_eq!(h.status(id), TaskStatus::Completed);
    assert_eq!(h.core.stats().completed, 1);
    assert!(matches!(
        h.outcomes(id).last(),
        Some(TaskOutcome::Completed { .. })
    ));
    h.check();
}

#[test]
fn backoff_is_capped_at_retry_max_delay() {
    let mut h = Harness::new(QueueConfig {
        retry_base_delay: ms(100),
        retry_max_delay: ms(250),
        ..QueueConfig::default()
    });
    h.worker("w", &["flaky"], &[], 1);
    let id = h.submit(spec("flaky").retries(10));
    for attempt in 1..=6 {
        assert_eq!(h.lease_one(id), attempt);
        h.fail("w", id, attempt, TaskError::retryable("busy"));
        h.core.credit("w", 1);
        let delay = h.next_wake_in().unwrap();
        assert!(delay <= ms(250), "attempt {attempt}: {delay:?}");
        h.advance(delay);
    }
    h.check();
}

#[test]
fn requeue_refuses_tasks_that_are_not_dead_letters() {
    let mut h = Harness::with_defaults();
    let id = h.submit(spec("t"));
    assert_eq!(
        h.core.requeue(id),
        Err(QueueError::NotDeadLettered {
            id,
            status: TaskStatus::Queued
        })
    );
    let unknown = TaskId::new();
    assert_eq!(h.core.requeue(unknown), Err(QueueError::NotFound(unknown)));
    h.check();
}

#[test]
fn a_permanent_error_fails_at_once_and_dead_letters() {
    let mut h = Harness::with_defaults();
    h.worker("w", &["parse"], &[], 1);
    let id = h.submit(spec("parse").retries(3));
    assert_eq!(h.lease_one(id), 1);
    h.fail("w", id, 1, TaskError::permanent("bad input"));
    h.core.credit("w", 1);

    assert_eq!(h.status(id), TaskStatus::Failed);
    assert_eq!(h.snap(id).error.as_deref(), Some("bad input"));
    assert_eq!(h.dead_ids(), vec![id]);
    assert_eq!(
        h.outcomes(id),
        vec![TaskOutcome::Failed {
            error: "bad input".into()
        }]
    );
    let stats = h.core.stats();
    assert_eq!((stats.retried, stats.failed), (0, 1));
    assert_eq!(h.core.next_wake(), None, "no retry scheduled");
    h.advance(Duration::from_secs(3600));
    assert!(h.dispatch().is_empty());
    assert_eq!(h.snap(id).attempts.len(), 1);
    assert_eq!(
        h.count_events(|e| matches!(e, EventKind::TaskDeadLettered { id: i, .. } if *i == id)),
        1
    );
    h.check();
}

#[test]
fn retries_default_to_the_queue_setting() {
    let mut h = Harness::new(QueueConfig {
        default_retries: 1,
        ..QueueConfig::default()
    });
    h.worker("w", &["t"], &[], 1);
    let id = h.submit(spec("t"));
    assert_eq!(h.lease_one(id), 1);
    h.fail("w", id, 1, TaskError::retryable("x"));
    h.core.credit("w", 1);
    assert_eq!(h.status(id), TaskStatus::Pending);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.lease_one(id), 2);
    h.fail("w", id, 2, TaskError::retryable("x"));
    assert_eq!(h.status(id), TaskStatus::Failed);
    h.check();
}

#[test]
fn a_retry_waits_for_the_retry_after_a_server_asked_for_but_no_longer_than_a_day() {
    let mut h = Harness::with_defaults();
    h.worker("w", &["chat"], &[], 1);
    let id = h.submit(spec("chat").retries(3));
    assert_eq!(h.lease_one(id), 1);
    let busy = TaskError::retryable("HTTP 429").with_retry_after(Duration::from_secs(30));
    h.fail("w", id, 1, busy);
    h.core.credit("w", 1);
    assert_eq!(
        h.next_wake_in(),
        Some(Duration::from_secs(30)),
        "not the 100 ms backoff"
    );
    h.advance(Duration::from_secs(30) - ms(1));
    assert!(
        h.dispatch().is_empty(),
        "not a millisecond before Retry-After"
    );
    h.advance(ms(1));
    assert_eq!(h.status(id), TaskStatus::Queued);

    // A shorter Retry-After than the backoff leaves the backoff; a huge one is capped.
    assert_eq!(h.lease_one(id), 2);
    h.fail(
        "w",
        id,
        2,
        TaskError::retryable("busy").with_retry_after(ms(1)),
    );
    h.core.credit("w", 1);
    let delay = h.next_wake_in().unwrap();
    assert!(
        delay >= ms(100) && delay <= ms(200),
        "the backoff of retry 2: {delay:?}"
    );
    h.advance(delay);
    assert_eq!(h.lease_one(id), 3);
    h.fail(
        "w",
        id,
        3,
        TaskError::retryable("busy").with_retry_after(Duration::from_secs(u64::MAX / 4)),
    );
    h.core.credit("w", 1);
    assert_eq!(h.next_wake_in(), Some(Duration::from_secs(86_400)));
    h.check();
}
