//! Timeouts and lease deadlines: a reported timeout retries while the budget lasts, then
//! ends as `Timeout`; a lease with no report is taken back after the task's timeout plus
//! `lease_grace`, or, for a task without a timeout, after `lease_time` unless its worker
//! extends it.

use super::*;

#[test]
fn reported_timeouts_retry_then_end_as_timeout_and_dead_letter() {
    let mut h = Harness::with_defaults();
    h.worker("w", &["slow"], &[], 1);
    let limit = Duration::from_secs(10);
    let id = h.submit(spec("slow").timeout(limit).retries(1));

    assert_eq!(h.lease_one(id), 1);
    h.report("w", id, 1, AttemptOutcome::TimedOut(limit));
    h.core.credit("w", 1);
    assert_eq!(h.status(id), TaskStatus::Pending, "one retry left");
    assert_eq!(h.core.stats().retried, 1);
    let delay = h.next_wake_in().unwrap();
    assert!(delay >= ms(50) && delay <= ms(100), "{delay:?}");
    h.advance(delay);

    assert_eq!(h.lease_one(id), 2);
    h.report("w", id, 2, AttemptOutcome::TimedOut(limit));
    assert_eq!(h.status(id), TaskStatus::Timeout);
    assert_eq!(h.outcomes(id), vec![TaskOutcome::Timeout]);
    assert_eq!(h.dead_ids(), vec![id]);
    let snap = h.snap(id);
    assert!(snap
        .attempts
        .iter()
        .all(|a| a.outcome.as_deref() == Some("timeout")));
    assert!(snap.error.unwrap().contains("timed out"));
    let stats = h.core.stats();
    assert_eq!((stats.timed_out, stats.failed, stats.retried), (1, 0, 1));
    assert_eq!(h.core.next_wake(), None);
    h.check();

    // A timed-out task can be re-queued like a failed one.
    h.core.requeue(id).unwrap();
    assert_eq!(h.core.stats().timed_out, 0);
    assert_eq!(h.status(id), TaskStatus::Queued);
    h.check();
}

#[test]
fn a_silent_lease_is_taken_back_after_timeout_plus_grace() {
    let mut h = Harness::new(QueueConfig {
        lease_grace: Duration::from_secs(5),
        ..QueueConfig::default()
    });
    let sink = h.worker("w", &["slow"], &[], 1);
    let id = h.submit(spec("slow").timeout(Duration::from_secs(10)).retries(0));
    assert_eq!(h.lease_one(id), 1);
    assert_eq!(h.next_wake_in(), Some(Duration::from_secs(15)));

    // The worker never reports. Up to the deadline the lease stands.
    h.advance(Duration::from_secs(15) - ms(1));
    assert_eq!(h.status(id), TaskStatus::Running);
    assert!(sink.cancelled().is_empty());

    h.advance(ms(1));
    assert_eq!(h.status(id), TaskStatus::Queued, "re-queued, not failed");
    assert_eq!(
        sink.cancelled(),
        vec![id],
        "the silent worker is told to stop"
    );
    let snap = h.snap(id);
    assert_eq!(snap.attempts.len(), 1);
    assert_eq!(snap.attempts[0].outcome.as_deref(), Some("lost"));
    let stats = h.core.stats();
    assert_eq!((stats.leases_lost, stats.running, stats.retried), (1, 0, 0));
    assert_eq!(
        h.count_events(
            |e| matches!(e, EventKind::LeaseLost { id: i, worker } if *i == id && &**worker == "w")
        ),
        1
    );
    assert_eq!(h.core.next_wake(), None);
    h.check();

    // A lost lease spends no retry: with retries(0) it still runs again.
    h.core.credit("w", 1);
    assert_eq!(h.lease_one(id), 2);
    h.complete("w", id, 2);
    assert_eq!(h.status(id), TaskStatus::Completed);
    h.check();
}

#[test]
fn a_lease_without_a_timeout_expires_unless_its_worker_extends_it() {
    let lease_time = Duration::from_secs(30);
    let mut h = Harness::new(QueueConfig {
        lease_time,
        ..QueueConfig::default()
    });
    let w = h.worker("w", &["t"], &[], 2);
    let kept = h.submit(spec("t"));
    let dropped = h.submit(spec("t"));
    assert_eq!(h.dispatch().len(), 2);
    assert_eq!(h.next_wake_in(), Some(lease_time));

    // The worker extends one lease twice; a stranger's extend of the other is refused.
    for _ in 0..2 {
        h.advance(Duration::from_secs(20));
        let token = h.token("w", kept, 1);
        h.core.extend("w", &[(kept, token)], h.now);
    }
    let token = h.token("w", dropped, 1);
    h.core.extend("stranger", &[(dropped, token)], h.now);
    assert_eq!(h.core.stats().stale_reports, 1);

    // 40 s in: the one never extended was taken back at 30 s; the other runs on.
    assert_eq!(h.status(dropped), TaskStatus::Queued);
    assert_eq!(w.cancelled(), vec![dropped]);
    assert_eq!(h.status(kept), TaskStatus::Running);
    h.advance(Duration::from_secs(29));
    assert_eq!(h.status(kept), TaskStatus::Running);
    h.advance(Duration::from_secs(2));
    assert_eq!(h.status(kept), TaskStatus::Queued);
    assert_eq!(h.snap(kept).attempts[0].outcome.as_deref(), Some("lost"));
    h.check();
}

#[test]
fn a_lease_with_a_timeout_is_bounded_by_it_and_not_extended() {
    let mut h = Harness::new(QueueConfig {
        lease_grace: Duration::from_secs(1),
        ..QueueConfig::default()
    });
    h.worker("w", &["t"], &[], 1);
    let id = h.submit(spec("t").timeout(Duration::from_secs(2)));
    h.lease_one(id);
    let token = h.token("w", id, 1);
    h.core.extend("w", &[(id, token)], h.now);
    h.advance(Duration::from_millis(2_999));
    assert_eq!(h.status(id), TaskStatus::Running);
    h.advance(Duration::from_millis(2));
    assert_eq!(h.status(id), TaskStatus::Queued);
    h.check();
}
