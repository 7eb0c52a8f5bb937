//! Reports for leases the worker no longer holds: a late success still counts if the task
//! has not finished since (the work was done); anything else is ignored.

use super::*;

/// A queue whose task `id` was leased to `slow` (attempt 1) and then taken back because the
/// lease expired; `slow` has no credits left.
fn expired_lease() -> (Harness, TaskId, Arc<TestSink>) {
    let mut h = Harness::new(QueueConfig {
        lease_grace: Duration::from_secs(1),
        ..QueueConfig::default()
    });
    let slow = h.worker("slow", &["t"], &[], 1);
    let id = h.submit(spec("t").timeout(Duration::from_secs(2)));
    assert_eq!(h.lease_one(id), 1);
    h.advance(Duration::from_secs(3));
    assert_eq!(h.status(id), TaskStatus::Queued);
    (h, id, slow)
}

#[test]
fn a_late_success_completes_a_task_waiting_to_run_again() {
    let (mut h, id, _) = expired_lease();
    h.complete("slow", id, 1);
    assert_eq!(h.status(id), TaskStatus::Completed);
    assert!(h.snap(id).result.is_some());
    assert!(matches!(
        &h.outcomes(id)[..],
        [TaskOutcome::Completed { .. }]
    ));
    let stats = h.core.stats();
    assert_eq!((stats.completed, stats.queued), (1, 0));

    // It is not leased again, though its old place in the queue is ahead of a newer task.
    let newer = h.submit(spec("t"));
    h.worker("fresh", &["t"], &[], 2);
    assert_eq!(h.dispatch(), vec![("fresh".to_string(), newer, 1)]);
    h.check();
}

#[test]
fn a_late_success_completes_a_task_pending_a_retry() {
    let mut h = Harness::with_defaults();
    h.worker("w", &["t"], &[], 1);
    let id = h.submit(spec("t").retries(1));
    h.lease_one(id);
    h.fail("w", id, 1, TaskError::retryable("flaky"));
    assert_eq!(h.status(id), TaskStatus::Pending);
    h.complete("w", id, 1);
    assert_eq!(h.status(id), TaskStatus::Completed);
    assert_eq!(h.core.next_wake(), None);
    assert_eq!(h.core.stats().pending, 0);
    h.check();
}

#[test]
fn a_late_success_supersedes_the_attempt_running_elsewhere() {
    let (mut h, id, slow) = expired_lease();
    let other = h.worker("other", &["t"], &[], 1);
    assert_eq!(h.lease_one(id), 2);

    h.complete("slow", id, 1);
    assert_eq!(h.status(id), TaskStatus::Completed);
    assert_eq!(other.cancelled(), vec![id], "the second attempt is stopped");
    assert_eq!(slow.cancelled(), vec![id], "only the expiry's cancel");
    let snap = h.snap(id);
    assert_eq!(snap.attempts[1].outcome.as_deref(), Some("superseded"));
    assert_eq!(h.core.stats().running, 0);

    // The second attempt's own result, arriving after, changes nothing.
    h.complete("other", id, 2);
    assert_eq!(h.core.stats().completed, 1);
    assert_eq!(h.outcomes(id).len(), 1);
    h.check();
}

#[test]
fn a_late_report_for_a_finished_task_is_ignored() {
    let mut h = Harness::with_defaults();
    h.worker("w", &["t"], &[], 1);
    let id = h.submit(spec("t"));
    h.lease_one(id);
    h.cancel(id).unwrap();
    h.complete("w", id, 1);
    assert_eq!(h.status(id), TaskStatus::Cancelled);
    assert!(h.snap(id).result.is_none());
    assert_eq!(h.core.stats().completed, 0);

    // A duplicate success for a completed task is not counted twice.
    h.core.credit("w", 1);
    let done = h.submit(spec("t"));
    h.lease_one(done);
    h.complete("w", done, 1);
    h.complete("w", done, 1);
    assert_eq!(h.core.stats().completed, 1);
    assert_eq!(h.outcomes(done).len(), 1);
    h.check();
}

#[test]
fn a_late_failure_or_timeout_is_ignored() {
    let (mut h, id, _) = expired_lease();
    h.fail("slow", id, 1, TaskError::permanent("too late"));
    h.report(
        "slow",
        id,
        1,
        AttemptOutcome::TimedOut(Duration::from_secs(2)),
    );
    h.report("slow", id, 1, AttemptOutcome::Cancelled);
    assert_eq!(h.status(id), TaskStatus::Queued);
    let stats = h.core.stats();
    assert_eq!((stats.failed, stats.timed_out, stats.retried), (0, 0, 0));
    assert_eq!(stats.leases_lost, 1);
    h.check();
}

#[test]
fn a_report_from_a_worker_that_does_not_hold_the_lease_is_stale() {
    let mut h = Harness::with_defaults();
    h.worker("holder", &["t"], &[], 1);
    h.worker("stranger", &["t"], &[], 0);
    let id = h.submit(spec("t").retries(0));
    h.lease_one(id);
    h.fail("stranger", id, 1, TaskError::permanent("not mine"));
    assert_eq!(h.status(id), TaskStatus::Running);
    // A report for an attempt number the holder does not hold is stale as well.
    h.fail("holder", id, 7, TaskError::permanent("wrong attempt"));
    assert_eq!(h.status(id), TaskStatus::Running);
    h.complete("holder", id, 1);
    assert_eq!(h.status(id), TaskStatus::Completed);
    h.check();
}
