//! Workers coming and going: a detach (or a new incarnation) takes back every lease at
//! once, without spending retries, until a task has lost too many workers.

use super::*;

#[test]
fn detach_requeues_leases_at_once_without_spending_retries() {
    let mut h = Harness::with_defaults();
    h.worker("w", &["t"], &[], 2);
    let a = h.submit(spec("t").retries(1));
    let b = h.submit(spec("t").retries(1));
    assert_eq!(h.dispatch().len(), 2);

    // A detach from an incarnation that is not the current one changes nothing.
    h.detach("w", 0);
    assert_eq!(h.status(a), TaskStatus::Running);
    assert_eq!(h.core.stats().workers, 1);
    h.check();

    h.detach("w", 1);
    for id in [a, b] {
        assert_eq!(h.status(id), TaskStatus::Queued);
        let attempt = &h.snap(id).attempts[0];
        assert_eq!(attempt.outcome.as_deref(), Some("lost"));
        assert!(attempt.finished_at.is_some());
        assert_eq!(h.core.tasks[&id].run().retries_used, 0);
    }
    let stats = h.core.stats();
    assert_eq!((stats.leases_lost, stats.running, stats.queued), (2, 0, 2));
    assert_eq!(
        (stats.workers, stats.free_credits, stats.unroutable),
        (0, 0, 2)
    );
    assert_eq!(
        h.count_events(|e| matches!(e, EventKind::LeaseLost { worker, .. } if &**worker == "w")),
        2
    );
    h.check();

    // The retry is still there: a retryable failure on the next attempt is retried.
    h.worker("v", &["t"], &[], 1);
    assert_eq!(h.lease_one(a), 2);
    h.fail("v", a, 2, TaskError::retryable("x"));
    assert_eq!(h.status(a), TaskStatus::Pending);
    h.check();
}

#[test]
fn a_task_that_keeps_losing_its_worker_is_dead_lettered() {
    let mut h = Harness::new(QueueConfig {
        max_lease_losses: 2,
        ..QueueConfig::default()
    });
    let id = h.submit(spec("poison"));
    // It may lose its worker twice and be queued again; the third loss dead-letters it.
    for incarnation in 1..=3 {
        h.worker_incarnation("w", incarnation, &["poison"], &[], 1);
        assert_eq!(h.lease_one(id), incarnation as u32);
        h.detach("w", incarnation);
        h.check();
        if incarnation < 3 {
            assert_eq!(h.status(id), TaskStatus::Queued, "loss {incarnation}");
        }
    }
    assert_eq!(h.status(id), TaskStatus::Failed);
    assert_eq!(h.dead_ids(), vec![id]);
    let error = h.snap(id).error.unwrap();
    assert!(error.contains("lost its worker 3 times"), "{error}");
    assert!(matches!(&h.outcomes(id)[..], [TaskOutcome::Failed { .. }]));
    let stats = h.core.stats();
    assert_eq!((stats.leases_lost, stats.failed), (3, 1));

    // Re-queued, it gets its full allowance of losses back.
    h.core.requeue(id).unwrap();
    h.worker_incarnation("w", 4, &["poison"], &[], 1);
    h.lease_one(id);
    h.detach("w", 4);
    assert_eq!(h.status(id), TaskStatus::Queued);
    h.check();
}

#[test]
fn a_new_incarnation_takes_back_the_old_ones_leases() {
    let mut h = Harness::with_defaults();
    let old = h.worker_incarnation("w", 1, &["t"], &[], 1);
    let id = h.submit(spec("t"));
    assert_eq!(h.lease_one(id), 1);

    // The worker restarted: its old attempt is gone with the old actor.
    let new = h.worker_incarnation("w", 2, &["t"], &[], 1);
    assert_eq!(h.status(id), TaskStatus::Queued);
    assert_eq!(h.core.stats().leases_lost, 1);
    assert_eq!(h.core.stats().workers, 1);
    assert_eq!(h.lease_one(id), 2);
    assert_eq!(new.leased(), vec![(id, 2)]);
    assert_eq!(old.leased(), vec![(id, 1)]);

    // Old-incarnation detach arriving late is ignored.
    h.detach("w", 1);
    assert_eq!(h.status(id), TaskStatus::Running);
    h.complete("w", id, 2);
    assert_eq!(h.status(id), TaskStatus::Completed);
    h.check();
}

#[test]
fn a_worker_that_stops_an_attempt_itself_loses_the_lease() {
    let mut h = Harness::with_defaults();
    h.worker("w", &["t"], &[], 1);
    let id = h.submit(spec("t").retries(0));
    h.lease_one(id);
    h.report("w", id, 1, AttemptOutcome::Cancelled);
    assert_eq!(
        h.status(id),
        TaskStatus::Queued,
        "not cancelled: it runs again"
    );
    assert_eq!(h.core.stats().leases_lost, 1);
    assert_eq!(h.core.stats().cancelled, 0);
    h.check();
}

#[test]
fn credits_bound_what_a_worker_is_given() {
    let mut h = Harness::with_defaults();
    h.worker("w", &["t"], &[], 2);
    let ids: Vec<TaskId> = (0..5).map(|_| h.submit(spec("t"))).collect();
    assert_eq!(h.dispatch().len(), 2);
    assert!(h.dispatch().is_empty(), "no credits left");
    assert_eq!(h.core.stats().free_credits, 0);

    // Draining: credits set to zero stay zero.
    h.core.credit("w", 3);
    h.core.set_credits("w", 0);
    assert!(h.dispatch().is_empty());
    h.core.set_credits("w", 1);
    assert_eq!(h.dispatch(), vec![("w".to_string(), ids[2], 1)]);
    h.check();
}

#[test]
fn the_worker_with_most_free_credits_is_served_first() {
    let mut h = Harness::with_defaults();
    h.worker("small", &["t"], &[], 1);
    h.worker("big", &["t"], &[], 3);
    for _ in 0..3 {
        h.submit(spec("t"));
    }
    let leased = h.dispatch();
    assert_eq!(leased.len(), 3);
    assert!(leased.iter().all(|(w, _, _)| w == "big"), "{leased:?}");
    h.check();
}

#[test]
fn leases_taken_back_from_a_worker_keep_their_queue_order() {
    let mut h = Harness::with_defaults();
    h.worker("w", &["t"], &[], 16);
    let ids: Vec<TaskId> = (0..16).map(|_| h.submit(spec("t"))).collect();
    assert_eq!(h.dispatch().len(), 16);
    h.detach("w", 1);

    h.worker("v", &["t"], &[], 16);
    let again: Vec<TaskId> = h.dispatch().into_iter().map(|(_, id, _)| id).collect();
    assert_eq!(again, ids, "first in, first out after a lost worker too");
    h.check();
}

#[test]
fn re_announcing_the_same_incarnation_keeps_the_queues_credit_count() {
    let mut h = Harness::with_defaults();
    h.worker("w", &["t"], &[], 2);
    for _ in 0..4 {
        h.submit(spec("t"));
    }
    assert_eq!(h.dispatch().len(), 2, "two slots, two leases");
    // The worker has not received them yet and re-announces (its handlers changed) with
    // what it believes are two free slots: the queue must not lease two more.
    h.worker_incarnation("w", 1, &["t", "u"], &[], 2);
    assert!(
        h.dispatch().is_empty(),
        "over-delivered past the worker's slots"
    );
    // A new incarnation starts fresh, and takes the old one's tasks back.
    h.worker_incarnation("w", 2, &["t"], &[], 2);
    assert_eq!(h.dispatch().len(), 2);
    h.check();
}

#[test]
fn a_worker_passed_over_for_want_of_tasks_keeps_its_credits_and_its_place() {
    let mut h = Harness::with_defaults();
    h.worker("gpu", &["infer"], &[], 8);
    h.worker("cpu", &["echo"], &[], 2);
    let echoes: Vec<TaskId> = (0..3).map(|_| h.submit(spec("echo"))).collect();
    let first = h.dispatch();
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(first.iter().all(|(w, _, _)| w == "cpu"), "{first:?}");
    // The gpu worker was looked at first (most credits) and served nothing: it keeps all 8.
    assert_eq!(h.core.stats().free_credits, 8);
    h.check();

    let infer = h.submit(spec("infer"));
    assert_eq!(h.dispatch(), vec![("gpu".to_string(), infer, 1)]);
    h.check();

    // A completion frees a cpu slot, and the third echo takes it.
    h.core.credit("cpu", 1);
    h.complete("cpu", echoes[0], 1);
    assert_eq!(h.dispatch(), vec![("cpu".to_string(), echoes[2], 1)]);
    assert_eq!(h.core.stats().free_credits, 7);
    h.check();
}

#[test]
fn every_worker_with_credits_is_served_when_there_are_many() {
    let mut h = Harness::with_defaults();
    for i in 0..200 {
        h.worker(&format!("w{i:03}"), &["t"], &[], 1 + (i % 3));
    }
    let total: u32 = (0..200).map(|i| 1 + (i % 3)).sum();
    for _ in 0..total + 5 {
        h.submit(spec("t"));
    }
    let leased = h.dispatch();
    assert_eq!(leased.len() as u32, total, "every free slot filled");
    let mut per: std::collections::HashMap<String, u32> = Default::default();
    for (w, _, _) in &leased {
        *per.entry(w.clone()).or_default() += 1;
    }
    assert_eq!(per.len(), 200);
    assert_eq!(h.core.stats().free_credits, 0);
    assert!(h.dispatch().is_empty(), "no credits left anywhere");
    h.check();
}
