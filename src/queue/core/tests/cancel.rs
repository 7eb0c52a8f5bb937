//! Cancellation of queued, pending and running tasks, and what cannot be cancelled.

use super::*;

#[test]
fn a_queued_task_is_cancelled_at_once_and_never_leased() {
    let mut h = Harness::with_defaults();
    let id = h.submit(spec("t"));
    assert_eq!(h.cancel(id), Ok(TaskStatus::Queued));
    assert_eq!(h.status(id), TaskStatus::Cancelled);
    assert_eq!(h.outcomes(id), vec![TaskOutcome::Cancelled]);
    assert!(h.snap(id).finished_at.is_some());

    let sink = h.worker("w", &["t"], &[], 4);
    assert!(h.dispatch().is_empty());
    assert!(sink.leased().is_empty());
    let stats = h.core.stats();
    assert_eq!((stats.cancelled, stats.queued, stats.queue_size), (1, 0, 0));
    assert!(h.dead_ids().is_empty(), "a cancel is not a dead letter");
    assert_eq!(
        h.count_events(|e| matches!(e, EventKind::TaskCancelled { id: i } if *i == id)),
        1
    );
    h.check();
}

#[test]
fn a_pending_task_is_cancelled_and_its_delay_forgotten() {
    let mut h = Harness::with_defaults();
    h.worker("w", &["t"], &[], 1);
    let id = h.submit(spec("t").delay(Duration::from_secs(1)));
    assert_eq!(h.status(id), TaskStatus::Pending);
    assert_eq!(h.cancel(id), Ok(TaskStatus::Pending));
    assert_eq!(h.status(id), TaskStatus::Cancelled);
    assert_eq!(h.core.next_wake(), None);
    assert_eq!(h.core.stats().pending, 0);

    h.advance(Duration::from_secs(2));
    assert!(h.dispatch().is_empty());
    assert_eq!(h.status(id), TaskStatus::Cancelled);
    h.check();
}

#[test]
fn a_task_pending_a_retry_can_be_cancelled() {
    let mut h = Harness::with_defaults();
    h.worker("w", &["t"], &[], 1);
    let id = h.submit(spec("t").retries(2));
    h.lease_one(id);
    h.fail("w", id, 1, TaskError::retryable("x"));
    h.core.credit("w", 1);
    assert_eq!(h.cancel(id), Ok(TaskStatus::Pending));
    h.advance(Duration::from_secs(10));
    assert!(h.dispatch().is_empty());
    assert_eq!(h.status(id), TaskStatus::Cancelled);
    h.check();
}

#[test]
fn a_running_task_is_cancelled_its_worker_told_and_late_reports_ignored() {
    let mut h = Harness::with_defaults();
    let sink = h.worker("w", &["t"], &[], 1);
    let id = h.submit(spec("t").timeout(Duration::from_secs(30)));
    assert_eq!(h.lease_one(id), 1);

    assert_eq!(h.cancel(id), Ok(TaskStatus::Running));
    assert_eq!(h.status(id), TaskStatus::Cancelled);
    assert_eq!(sink.cancelled(), vec![id]);
    assert_eq!(h.outcomes(id), vec![TaskOutcome::Cancelled]);
    let snap = h.snap(id);
    assert_eq!(snap.attempts[0].outcome.as_deref(), Some("cancelled"));
    assert_eq!(h.core.stats().running, 0);
    assert_eq!(
        h.core.next_wake(),
        None,
        "the lease deadline went with the lease"
    );

    // The worker stops the attempt and says so; later it even claims a result. Neither
    // changes the task, and neither counts as a lost lease.
    h.report("w", id, 1, AttemptOutcome::Cancelled);
    h.complete("w", id, 1);
    assert_eq!(h.status(id), TaskStatus::Cancelled);
    assert!(h.snap(id).result.is_none());
    let stats = h.core.stats();
    assert_eq!(
        (stats.completed, stats.leases_lost, stats.cancelled),
        (0, 0, 1)
    );
    assert_eq!(h.outcomes(id).len(), 1);

    // The slot comes back as usual and takes the next task.
    h.core.credit("w", 1);
    let next = h.submit(spec("t"));
    assert_eq!(h.lease_one(next), 1);
    h.complete("w", next, 1);
    assert_eq!(h.status(next), TaskStatus::Completed);
    h.check();
}

#[test]
fn finished_and_unknown_tasks_cannot_be_cancelled() {
    let mut h = Harness::with_defaults();
    h.worker("w", &["t"], &[], 1);
    let done = h.submit(spec("t"));
    h.lease_one(done);
    h.complete("w", done, 1);
    assert_eq!(
        h.cancel(done),
        Err(QueueError::AlreadyFinished {
            id: done,
            status: TaskStatus::Completed
        })
    );

    let cancelled = h.submit(spec("t"));
    h.cancel(cancelled).unwrap();
    assert_eq!(
        h.cancel(cancelled),
        Err(QueueError::AlreadyFinished {
            id: cancelled,
            status: TaskStatus::Cancelled
        })
    );

    let unknown = TaskId::new();
    assert_eq!(h.cancel(unknown), Err(QueueError::NotFound(unknown)));
    assert_eq!(h.core.stats().cancelled, 1);
    h.check();
}
