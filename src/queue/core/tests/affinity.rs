//! Affinity: tasks sharing an `affinity_key` run on the worker that took the first of them,
//! handed to it when it has a free slot and parked on it (up to `affinity_wait`) when it
//! has none; its death unbinds the key, which the next lease binds again.

use proptest::prelude::*;

use super::*;

fn keyed(key: &str) -> TaskSpec {
    spec("chat").affinity_key(key)
}

/// The worker that ran each of `ids` (its last attempt's).
fn ran_on(h: &Harness, ids: &[TaskId]) -> Vec<String> {
    ids.iter()
        .map(|id| h.snap(*id).attempts.last().expect("ran").worker.to_string())
        .collect()
}

/// Completes `id` on `worker` and gives the worker its slot back, as a real one does.
fn done(h: &mut Harness, worker: &str, id: TaskId) {
    let attempt = h.snap(id).attempts.len() as u32;
    h.complete(worker, id, attempt);
    h.core.credit(worker, 1);
}

/// Completes whatever each worker holds, leasing again, until nothing is left to run.
fn drain(h: &mut Harness) {
    loop {
        let leased = h.dispatch();
        let running: Vec<(String, TaskId)> = h
            .core
            .tasks
            .iter()
            .filter(|(_, e)| e.status() == TaskStatus::Running)
            .map(|(id, e)| (e.run().lease.as_ref().unwrap().worker.to_string(), *id))
            .collect();
        if leased.is_empty() && running.is_empty() {
            return;
        }
        for (worker, id) in running {
            done(h, &worker, id);
        }
        h.check();
    }
}

#[test]
fn tasks_sharing_a_key_all_run_on_the_worker_that_took_the_first() {
    let mut h = Harness::with_defaults();
    for w in ["a", "b", "c"] {
        h.worker(w, &["chat"], &[], 2);
    }
    let turns: Vec<TaskId> = (0..6).map(|_| h.submit(keyed("conv-1"))).collect();
    let plain: Vec<TaskId> = (0..4).map(|_| h.submit(spec("chat"))).collect();

    // `a` (first by id among equals) takes two turns and binds the key; the other four
    // wait for it, while `b` and `c` take the plain tasks queued behind them.
    let first = h.dispatch();
    let to_a: Vec<TaskId> = first
        .iter()
        .filter(|(w, ..)| w == "a")
        .map(|l| l.1)
        .collect();
    assert_eq!(to_a, turns[..2].to_vec());
    let others: Vec<TaskId> = first
        .iter()
        .filter(|(w, ..)| w != "a")
        .map(|l| l.1)
        .collect();
    assert_eq!(
        others, plain,
        "the other workers are not held up by the key"
    );
    let stats = h.core.stats();
    assert_eq!((stats.affinity_keys, stats.affinity_waiting), (1, 4));
    assert_eq!(stats.queued, 4, "parked tasks are still queued");
    h.check();

    drain(&mut h);
    assert_eq!(ran_on(&h, &turns), vec!["a"; 6]);
    assert_eq!(h.core.stats().affinity_fallbacks, 0);
    h.check();
}

#[test]
fn a_bound_task_is_handed_to_its_free_worker_whoever_is_served() {
    let mut h = Harness::with_defaults();
    h.worker("a", &["chat"], &[], 2);
    let first = h.submit(keyed("k"));
    assert_eq!(h.dispatch(), vec![("a".to_string(), first, 1)]);
    // `b` has far more free slots, so least-loaded serves it first: the task still goes
    // to `a`, which has one left.
    h.worker("b", &["chat"], &[], 8);
    let second = h.submit(keyed("k"));
    assert_eq!(h.dispatch(), vec![("a".to_string(), second, 1)]);
    // Another key is no one's yet: least-loaded picks `b`, which binds it.
    let other = h.submit(keyed("other"));
    assert_eq!(h.dispatch(), vec![("b".to_string(), other, 1)]);
    assert_eq!(h.core.stats().affinity_keys, 2);
    h.check();
}

#[test]
fn a_task_waits_for_its_busy_worker_only_up_to_affinity_wait() {
    let mut h = Harness::new(QueueConfig {
        affinity_wait: Duration::from_secs(2),
        ..QueueConfig::default()
    });
    h.worker("a", &["chat"], &[], 1);
    let first = h.submit(keyed("k"));
    assert_eq!(h.lease_one(first), 1);
    h.worker("b", &["chat"], &[], 1);

    let second = h.submit(keyed("k"));
    assert!(
        h.dispatch().is_empty(),
        "it waits for `a`, though `b` is free"
    );
    assert_eq!(h.core.stats().affinity_waiting, 1);
    assert_eq!(h.next_wake_in(), Some(Duration::from_secs(2)));
    h.advance(ms(1_999));
    assert!(h.dispatch().is_empty());
    h.check();

    // `a` stayed busy past the wait: the task goes to `b`; the key stays with `a`.
    h.advance(ms(1));
    assert_eq!(h.dispatch(), vec![("b".to_string(), second, 1)]);
    let stats = h.core.stats();
    assert_eq!((stats.affinity_fallbacks, stats.affinity_waiting), (1, 0));
    h.check();
    h.complete("b", second, 1);
    h.core.credit("b", 1);
    let third = h.submit(keyed("k"));
    assert!(h.dispatch().is_empty(), "still bound to `a`, which is busy");
    done(&mut h, "a", first);
    assert_eq!(h.dispatch(), vec![("a".to_string(), third, 1)]);
    h.check();
}

#[test]
fn with_no_wait_a_bound_task_goes_to_any_free_worker_when_its_own_is_busy() {
    let mut h = Harness::new(QueueConfig {
        affinity_wait: Duration::ZERO,
        ..QueueConfig::default()
    });
    h.worker("a", &["chat"], &[], 1);
    let first = h.submit(keyed("k"));
    assert_eq!(h.lease_one(first), 1);
    h.worker("b", &["chat"], &[], 1);
    let second = h.submit(keyed("k"));
    assert_eq!(h.dispatch(), vec![("b".to_string(), second, 1)]);
    assert_eq!(h.core.stats().affinity_waiting, 0);
    // The binding stayed with `a`: with a free slot there, the key's task goes to it.
    done(&mut h, "a", first);
    done(&mut h, "b", second);
    let third = h.submit(keyed("k"));
    assert_eq!(h.dispatch(), vec![("a".to_string(), third, 1)]);
    h.check();
}

#[test]
fn when_the_bound_worker_dies_its_tasks_move_together_and_the_key_binds_again() {
    let mut h = Harness::with_defaults();
    h.worker("a", &["chat"], &[], 1);
    let running = h.submit(keyed("k"));
    assert_eq!(h.lease_one(running), 1);
    h.worker("b", &["chat"], &[], 2);
    h.worker("c", &["chat"], &[], 2);
    let waiting: Vec<TaskId> = (0..2).map(|_| h.submit(keyed("k"))).collect();
    assert!(h.dispatch().is_empty(), "both wait for `a`");
    assert_eq!(h.core.stats().affinity_waiting, 2);
    h.check();

    // `a` dies: its running task and the two parked on it go back, the key is unbound,
    // and the next worker served binds it and takes the rest as they fit.
    h.detach("a", 1);
    let stats = h.core.stats();
    assert_eq!((stats.affinity_keys, stats.affinity_waiting), (0, 0));
    h.check();
    let leased = h.dispatch();
    assert_eq!(
        leased.iter().map(|l| l.0.as_str()).collect::<Vec<_>>(),
        vec!["b", "b"],
        "{leased:?}"
    );
    assert_eq!(h.core.stats().affinity_keys, 1, "bound again, to `b`");
    assert_eq!(
        h.core.stats().affinity_waiting,
        1,
        "the third waits for `b`, though `c` is free"
    );
    h.check();
    drain(&mut h);
    let mut all = waiting.clone();
    all.push(running);
    assert_eq!(ran_on(&h, &all), vec!["b"; 3]);
    assert_eq!(h.snap(running).attempts[0].worker.as_ref(), "a");
    h.check();
}

#[test]
fn a_bound_worker_that_cannot_run_the_task_is_no_preference() {
    let mut h = Harness::with_defaults();
    h.worker("chat-only", &["chat"], &[], 1);
    let turn = h.submit(keyed("k"));
    assert_eq!(h.lease_one(turn), 1);
    h.worker("embedder", &["embed"], &[], 1);
    let embed = h.submit(spec("embed").affinity_key("k"));
    assert_eq!(h.dispatch(), vec![("embedder".to_string(), embed, 1)]);
    assert_eq!(h.core.stats().affinity_waiting, 0);
    h.check();
}

#[test]
fn a_cancelled_task_stops_waiting_and_a_new_incarnation_unbinds() {
    let mut h = Harness::with_defaults();
    h.worker("a", &["chat"], &[], 1);
    h.worker("b", &["chat"], &[], 1);
    let first = h.submit(keyed("k"));
    assert_eq!(h.dispatch(), vec![("a".to_string(), first, 1)]);
    let parked = h.submit(keyed("k"));
    let also = h.submit(keyed("k"));
    assert!(h.dispatch().is_empty());
    assert_eq!(h.core.stats().affinity_waiting, 2);
    h.cancel(parked).unwrap();
    assert_eq!(h.core.stats().affinity_waiting, 1);
    h.check();

    // `a` restarts (a new incarnation): its old self's keys and waiting tasks are freed,
    // and its leased task returns to the queue.
    h.worker_incarnation("a", 2, &["chat"], &[], 1);
    assert_eq!(h.core.stats().affinity_waiting, 0);
    h.check();
    // The new `a` takes the one that waited longest and binds the key; the other waits
    // for it rather than go to `b`.
    assert_eq!(h.dispatch(), vec![("a".to_string(), also, 1)]);
    assert_eq!(h.status(parked), TaskStatus::Cancelled);
    assert_eq!(h.core.stats().affinity_waiting, 1);
    done(&mut h, "a", also);
    assert_eq!(h.dispatch(), vec![("a".to_string(), first, 2)]);
    h.check();
}

#[test]
fn bindings_are_bounded_least_recently_used_first_out() {
    let mut h = Harness::new(QueueConfig {
        max_affinity_keys: 2,
        ..QueueConfig::default()
    });
    h.worker("w", &["chat"], &[], 1);
    for key in ["a", "b", "c"] {
        let id = h.submit(keyed(key));
        assert_eq!(h.lease_one(id), 1);
        done(&mut h, "w", id);
    }
    let stats = h.core.stats();
    assert_eq!((stats.affinity_keys, stats.affinity_evicted), (2, 1));
    h.check();
}

#[test]
fn an_affinity_key_survives_in_the_snapshot_and_bad_ones_are_refused_naming_it() {
    let mut h = Harness::with_defaults();
    let id = h.submit(keyed("conv-9"));
    assert_eq!(h.snap(id).options.affinity_key.as_deref(), Some("conv-9"));
    let long = "k".repeat(crate::task::TaskOptions::MAX_AFFINITY_KEY_BYTES + 1);
    match h.submit_batch(vec![spec("chat"), keyed(&long)]) {
        Err(QueueError::InvalidTask { index: 1, reason }) => {
            assert!(reason.contains("affinity_key"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    h.check();
}

/// One step against a queue with keyed tasks, for the property test below.
#[derive(Clone, Debug)]
enum Step {
    /// Submit a task with key `k` (none for `k == 2`).
    Submit(usize),
    /// Lease what can be leased.
    Dispatch,
    /// Worker `w` finishes its oldest running task and takes a slot back.
    Finish(usize),
    /// Cancel the `n`-th task submitted.
    Cancel(usize),
    /// Worker `w` dies and comes back as a new incarnation.
    Bounce(usize),
    /// Time passes, never as long as `affinity_wait`.
    Advance(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..3usize).prop_map(Step::Submit),
        3 => Just(Step::Dispatch),
        3 => (0..3usize).prop_map(Step::Finish),
        1 => (0..40usize).prop_map(Step::Cancel),
        1 => (0..3usize).prop_map(Step::Bounce),
        1 => (1..30_000u64).prop_map(Step::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// With workers of both strategies coming and going: every task of a key is leased to
    /// the worker its key is bound to at that moment (so, while that worker lives, to one
    /// worker); the bookkeeping holds after every step; and once the steps end, every task
    /// not cancelled runs to completion.
    #[test]
    fn keyed_tasks_follow_their_binding_and_none_is_lost(
        steps in proptest::collection::vec(step(), 1..80)
    ) {
        // Leases outlast the test: a lease taken back from a live worker leaves it without
        // those credits (its report would bring them back), which this test does not model.
        // Nor does it model the guard against a task that keeps losing its worker (dead-
        // lettered after `max_lease_losses`): a task may be leased to bouncing workers more
        // often than the default 5 in one run of steps.
        let mut h = Harness::new(QueueConfig {
            affinity_wait: Duration::from_secs(3600),
            lease_time: Duration::from_secs(24 * 3600),
            max_lease_losses: u32::MAX,
            ..QueueConfig::default()
        });
        let names = ["a", "b", "c"];
        let mut incarnation = [1u64; 3];
        let attach = |h: &mut Harness, w: usize, inc: u64| {
            let sink = TestSink {
                routing: if w == 2 { RoutingStrategy::RoundRobin } else { RoutingStrategy::LeastLoaded },
                ..TestSink::default()
            };
            h.attach_sink(names[w], inc, &["chat"], &[], 2, sink);
        };
        for w in 0..3 {
            attach(&mut h, w, 1);
        }
        let keys = ["k0", "k1"];
        let mut ids = Vec::new();
        let mut cancelled = std::collections::HashSet::new();
        for s in steps {
            match s {
                Step::Submit(k) => ids.push(h.submit(match keys.get(k) {
                    Some(key) => keyed(key),
                    None => spec("chat"),
                })),
                Step::Dispatch => {
                    for (w, id, _) in h.dispatch() {
                        if let Some(key) = h.snap(id).options.affinity_key {
                            let bound = h.core.affinity.bindings.get(&key).map(|b| b.to_string());
                            prop_assert_eq!(bound, Some(w), "{} leased away from its key's worker", id);
                        }
                    }
                }
                Step::Finish(w) => {
                    let oldest = h.core.tasks.iter()
                        .filter(|(_, e)| e.run().lease.as_ref().is_some_and(|l| &*l.worker == names[w]))
                        .map(|(id, _)| *id)
                        .min();
                    if let Some(id) = oldest {
                        done(&mut h, names[w], id);
                    }
                }
                Step::Cancel(n) => {
                    if let Some(&id) = ids.get(n) {
                        let holder = h.core.tasks[&id].run().lease.as_ref().map(|l| l.worker.clone());
                        if h.cancel(id).is_ok() {
                            cancelled.insert(id);
                        }
                        // The worker stops the attempt and takes its slot back.
                        if let Some(w) = holder {
                            h.core.credit(&w, 1);
                        }
                    }
                }
                Step::Bounce(w) => {
                    h.detach(names[w], incarnation[w]);
                    incarnation[w] += 1;
                    attach(&mut h, w, incarnation[w]);
                }
                Step::Advance(n) => h.advance(ms(n)),
            }
            h.check();
        }
        drain(&mut h);
        prop_assert_eq!(h.core.stats().affinity_fallbacks, 0);
        for id in ids {
            let want = if cancelled.contains(&id) { TaskStatus::Cancelled } else { TaskStatus::Completed };
            prop_assert_eq!(h.status(id), want);
        }
    }
}
