//! Fencing: a report counts only when it carries the token of the task's current lease,
//! from the worker holding it. Late, forged, pre-restart and duplicate reports are refused,
//! counted and never applied, successes included: a task finishes by its current attempt,
//! exactly once.

use proptest::prelude::*;

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
fn a_late_success_for_a_task_waiting_to_run_again_is_refused() {
    let (mut h, id, _) = expired_lease();
    h.complete("slow", id, 1);
    assert_eq!(h.status(id), TaskStatus::Queued);
    assert!(h.snap(id).result.is_none());
    assert!(h.outcomes(id).is_empty());
    let stats = h.core.stats();
    assert_eq!(
        (stats.completed, stats.queued, stats.stale_reports),
        (0, 1, 1)
    );

    // It runs again, and its new attempt finishes it.
    h.worker("fresh", &["t"], &[], 2);
    assert_eq!(h.dispatch(), vec![("fresh".to_string(), id, 2)]);
    h.complete("fresh", id, 2);
    assert_eq!(h.status(id), TaskStatus::Completed);
    assert_eq!(h.outcomes(id).len(), 1);
    h.check();
}

#[test]
fn a_late_success_for_a_task_pending_a_retry_is_refused() {
    let mut h = Harness::with_defaults();
    h.worker("w", &["t"], &[], 1);
    let id = h.submit(spec("t").retries(1));
    h.lease_one(id);
    h.fail("w", id, 1, TaskError::retryable("flaky"));
    assert_eq!(h.status(id), TaskStatus::Pending);
    h.complete("w", id, 1);
    assert_eq!(h.status(id), TaskStatus::Pending);
    assert_eq!(h.core.stats().pending, 1);
    assert_eq!(h.core.stats().stale_reports, 1);
    h.check();
}

#[test]
fn a_late_success_does_not_touch_the_attempt_running_elsewhere() {
    let (mut h, id, slow) = expired_lease();
    let other = h.worker("other", &["t"], &[], 1);
    assert_eq!(h.lease_one(id), 2);

    h.complete("slow", id, 1);
    assert_eq!(h.status(id), TaskStatus::Running);
    assert!(other.cancelled().is_empty(), "the running attempt goes on");
    assert_eq!(slow.cancelled(), vec![id], "only the expiry's cancel");

    // The running attempt's own result completes it, once.
    h.complete("other", id, 2);
    h.complete("other", id, 2);
    assert_eq!(h.status(id), TaskStatus::Completed);
    assert_eq!(h.core.stats().completed, 1);
    assert_eq!(h.outcomes(id).len(), 1);
    assert_eq!(h.core.stats().stale_reports, 2);
    let snap = h.snap(id);
    assert_eq!(snap.attempts[0].outcome.as_deref(), Some("lost"));
    assert_eq!(snap.attempts[1].outcome.as_deref(), Some("completed"));
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
    // The late failure and timeout are counted; the late "stopped" is the echo every
    // cancel or lost lease brings back, and changes nothing either way.
    assert_eq!(stats.stale_reports, 2);
    h.check();
}

#[test]
fn a_report_from_a_worker_that_does_not_hold_the_lease_is_refused() {
    let mut h = Harness::with_defaults();
    h.worker("holder", &["t"], &[], 1);
    h.worker("stranger", &["t"], &[], 0);
    let id = h.submit(spec("t").retries(0));
    h.lease_one(id);
    // The stranger even knows the holder's token: the lease is bound to its holder.
    let token = h.token("holder", id, 1);
    h.report_with(
        "stranger",
        id,
        token,
        AttemptOutcome::Failed(TaskError::permanent("not mine")),
    );
    h.complete("stranger", id, 1);
    assert_eq!(h.status(id), TaskStatus::Running);
    // A report for an attempt number the holder does not hold is refused as well.
    h.fail("holder", id, 7, TaskError::permanent("wrong attempt"));
    assert_eq!(h.status(id), TaskStatus::Running);
    assert_eq!(h.core.stats().stale_reports, 3);
    h.complete("holder", id, 1);
    assert_eq!(h.status(id), TaskStatus::Completed);
    h.check();
}

#[test]
fn a_report_with_a_guessed_nonce_is_refused() {
    let mut h = Harness::with_defaults();
    h.worker("w", &["t"], &[], 1);
    let id = h.submit(spec("t"));
    h.lease_one(id);
    let real = h.token("w", id, 1);
    let guess = LeaseToken {
        nonce: real.nonce ^ 1,
        ..real
    };
    h.report_with(
        "w",
        id,
        guess,
        AttemptOutcome::Completed(Payload::from(serde_json::json!("forged"))),
    );
    assert_eq!(h.status(id), TaskStatus::Running);
    h.report_with(
        "w",
        id,
        real,
        AttemptOutcome::Completed(Payload::from(serde_json::json!("real"))),
    );
    assert_eq!(h.status(id), TaskStatus::Completed);
    assert_eq!(
        h.snap(id).result,
        Some(Payload::from(serde_json::json!("real")))
    );
    h.check();
}

#[test]
fn a_report_from_before_a_restart_is_refused() {
    // The same task, recovered by a coordinator with a newer epoch and leased again to a
    // worker of the same name and attempt number: only the new epoch's token counts.
    let mut h = Harness::with_defaults();
    h.core.set_epoch(1);
    h.worker("w", &["t"], &[], 1);
    let id = h.submit(spec("t"));
    h.lease_one(id);
    let before = h.token("w", id, 1);
    h.core.set_epoch(2);
    h.detach("w", 1);
    h.tokens.clear();
    h.worker_incarnation("w", 2, &["t"], &[], 1);
    assert_eq!(h.lease_one(id), 2);
    let stale = LeaseToken {
        attempt: 2,
        ..before
    };
    h.report_with(
        "w",
        id,
        stale,
        AttemptOutcome::Completed(Payload::from(serde_json::json!("old"))),
    );
    assert_eq!(h.status(id), TaskStatus::Running);
    assert_eq!(h.token("w", id, 2).epoch, 2);
    h.complete("w", id, 2);
    assert_eq!(h.status(id), TaskStatus::Completed);
    h.check();
}

/// One step of a worker's life against the queue, for the property test below.
#[derive(Clone, Debug)]
enum Step {
    /// Lease what can be leased.
    Dispatch,
    /// Worker `w` reports success for the `n`-th lease it was ever handed.
    Complete { w: usize, n: usize },
    /// Worker `w` reports a retryable failure for its `n`-th lease.
    Fail { w: usize, n: usize },
    /// Worker `w` reports success for task `t`'s attempt `a` with a token it made up.
    Forge { w: usize, t: usize, a: u32 },
    /// Time passes (lease deadlines and retry delays come due).
    Advance(u64),
    /// The coordinator restarts: a newer epoch, every worker re-attaches.
    Restart,
    /// Worker `w` dies and comes back as a new incarnation.
    Bounce(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::Dispatch),
        4 => (0..3usize, 0..12usize).prop_map(|(w, n)| Step::Complete { w, n }),
        1 => (0..3usize, 0..12usize).prop_map(|(w, n)| Step::Fail { w, n }),
        1 => (0..3usize, 0..4usize, 1..4u32).prop_map(|(w, t, a)| Step::Forge { w, t, a }),
        2 => (1..40_000u64).prop_map(Step::Advance),
        1 => Just(Step::Restart),
        1 => (0..3usize).prop_map(Step::Bounce),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any interleaving of leases, honest and late reports, forgeries, expiries and
    /// restarts completes each task at most once, and only by a report carrying the token
    /// of the lease it ran under at that moment.
    #[test]
    fn every_task_is_completed_at_most_once_and_only_by_its_current_lease(
        steps in proptest::collection::vec(step(), 1..80)
    ) {
        let mut h = Harness::new(QueueConfig {
            lease_time: Duration::from_secs(10),
            lease_grace: Duration::from_secs(1),
            retry_base_delay: Duration::from_millis(10),
            ..QueueConfig::default()
        });
        let names = ["a", "b", "c"];
        let mut incarnation = [1u64; 3];
        for n in names {
            h.worker(n, &["t"], &[], 2);
        }
        let ids: Vec<TaskId> = (0..4)
            .map(|i| h.submit(if i % 2 == 0 { spec("t") } else { spec("t").timeout(ms(5_000)) }.retries(2)))
            .collect();
        // Every lease each worker was handed, in order.
        let mut handed: Vec<Vec<(TaskId, LeaseToken)>> = vec![Vec::new(); 3];
        let mut epoch = 0;
        for s in steps {
            match s {
                Step::Dispatch => {
                    for d in h.core.dispatch(h.now) {
                        let w = names.iter().position(|n| **n == *d.worker).unwrap();
                        handed[w].extend(d.leases.iter().map(|l| (l.task_id, l.token)));
                    }
                }
                Step::Complete { w, n } | Step::Fail { w, n } => {
                    let Some(&(id, token)) = handed[w].get(n) else { continue };
                    let current = h.core.tasks[&id].run().lease.as_ref()
                        .is_some_and(|l| l.token == token && &*l.worker == names[w]);
                    let before = h.core.stats();
                    let outcome = if matches!(s, Step::Complete { .. }) {
                        AttemptOutcome::Completed(Payload::from(serde_json::json!(token.attempt)))
                    } else {
                        AttemptOutcome::Failed(TaskError::retryable("flaky"))
                    };
                    h.report_with(names[w], id, token, outcome);
                    let after = h.core.stats();
                    prop_assert_eq!(after.stale_reports - before.stale_reports, u64::from(!current));
                    if !current {
                        prop_assert_eq!(after.completed, before.completed);
                        prop_assert_eq!(after.failed, before.failed);
                        prop_assert_eq!(after.retried, before.retried);
                    }
                }
                Step::Forge { w, t, a } => {
                    let before = h.core.stats();
                    let token = LeaseToken { epoch: h.core.epoch, attempt: a, nonce: fastrand::u64(..) };
                    h.report_with(names[w], ids[t], token, AttemptOutcome::Completed(Payload::null()));
                    let after = h.core.stats();
                    prop_assert_eq!(after.completed, before.completed);
                    prop_assert_eq!(after.stale_reports, before.stale_reports + 1);
                }
                Step::Advance(ms_) => h.advance(ms(ms_)),
                Step::Restart => {
                    epoch += 1;
                    h.core.set_epoch(epoch);
                    for (i, n) in names.iter().enumerate() {
                        h.detach(n, incarnation[i]);
                        incarnation[i] += 1;
                        h.worker_incarnation(n, incarnation[i], &["t"], &[], 2);
                    }
                }
                Step::Bounce(w) => {
                    h.detach(names[w], incarnation[w]);
                    incarnation[w] += 1;
                    h.worker_incarnation(names[w], incarnation[w], &["t"], &[], 2);
                }
            }
            h.check();
        }
        for id in &ids {
            let done = h.outcomes(*id).iter().filter(|o| matches!(o, TaskOutcome::Completed { .. })).count();
            prop_assert!(done <= 1, "task completed {} times", done);
            let snap = h.snap(*id);
            let completed_attempts = snap.attempts.iter().filter(|a| a.outcome.as_deref() == Some("completed")).count();
            prop_assert_eq!(completed_attempts, done);
            if snap.status == TaskStatus::Completed {
                // The result is the one its last attempt reported.
                let last = snap.attempts.last().unwrap().number;
                prop_assert_eq!(snap.result, Some(Payload::from(serde_json::json!(last))));
            }
        }
    }
}
