//! Round robin, a pool's choice: its workers take one task each in turn, served longest ago
//! first; least-loaded (the default) fills the freest worker first.

use super::*;

/// Per worker, the tasks a dispatch gave it, in the order it got them.
fn by_worker(leased: &[(String, TaskId, u32)]) -> HashMap<String, Vec<TaskId>> {
    let mut out: HashMap<String, Vec<TaskId>> = HashMap::new();
    for (w, id, _) in leased {
        out.entry(w.clone()).or_default().push(*id);
    }
    out
}

#[test]
fn round_robin_spreads_a_burst_evenly_in_turn() {
    let mut h = Harness::with_defaults();
    for w in ["r1", "r2", "r3"] {
        h.rr_worker(w, &["t"], 4);
    }
    let ids: Vec<TaskId> = (0..6).map(|_| h.submit(spec("t"))).collect();
    let leased = h.dispatch();
    assert_eq!(leased.len(), 6);
    let got = by_worker(&leased);
    assert_eq!(got["r1"], vec![ids[0], ids[3]]);
    assert_eq!(got["r2"], vec![ids[1], ids[4]]);
    assert_eq!(got["r3"], vec![ids[2], ids[5]]);
    assert_eq!(h.core.stats().free_credits, 6);
    h.check();
}

#[test]
fn least_loaded_stays_the_default_and_fills_the_freest_worker_first() {
    let mut h = Harness::with_defaults();
    for w in ["a", "b", "c"] {
        h.worker(w, &["t"], &[], 4);
    }
    let ids: Vec<TaskId> = (0..6).map(|_| h.submit(spec("t"))).collect();
    let got = by_worker(&h.dispatch());
    assert_eq!(got["a"], ids[..4].to_vec());
    assert_eq!(got["b"], ids[4..].to_vec());
    assert!(!got.contains_key("c"));
    h.check();
}

#[test]
fn round_robin_keeps_its_turn_across_dispatches_whatever_the_free_slots() {
    let mut h = Harness::with_defaults();
    // Uneven slots: least-loaded would send the first five tasks to r1.
    h.rr_worker("r1", &["t"], 8);
    h.rr_worker("r2", &["t"], 4);
    h.rr_worker("r3", &["t"], 4);
    let mut order = Vec::new();
    for _ in 0..7 {
        let id = h.submit(spec("t"));
        let leased = h.dispatch();
        assert_eq!(leased.len(), 1);
        assert_eq!(leased[0].1, id);
        order.push(leased[0].0.clone());
        h.check();
    }
    assert_eq!(order, ["r1", "r2", "r3", "r1", "r2", "r3", "r1"]);
}

#[test]
fn a_full_worker_is_skipped_and_rejoins_the_rotation_behind_the_others() {
    let mut h = Harness::with_defaults();
    h.rr_worker("r1", &["t"], 1);
    h.rr_worker("r2", &["t"], 2);
    h.rr_worker("r3", &["t"], 2);
    let ids: Vec<TaskId> = (0..5).map(|_| h.submit(spec("t"))).collect();
    let got = by_worker(&h.dispatch());
    // r1 has one slot: it takes the first task and is out of the turn after that.
    assert_eq!(got["r1"], vec![ids[0]]);
    assert_eq!(got["r2"], vec![ids[1], ids[3]]);
    assert_eq!(got["r3"], vec![ids[2], ids[4]]);
    h.check();
    // r1 finishes: with a slot again, it is next, having been served before the others.
    h.complete("r1", ids[0], 1);
    h.core.credit("r1", 1);
    h.complete("r3", ids[2], 1);
    h.core.credit("r3", 1);
    let next = h.submit(spec("t"));
    assert_eq!(h.dispatch(), vec![("r1".to_string(), next, 1)]);
    let after = h.submit(spec("t"));
    assert_eq!(h.dispatch(), vec![("r3".to_string(), after, 1)]);
    h.check();
}

#[test]
fn pools_of_both_strategies_on_one_queue_are_served_in_turn() {
    let mut h = Harness::with_defaults();
    h.worker("ll", &["t"], &[], 2);
    h.rr_worker("r1", &["t"], 2);
    h.rr_worker("r2", &["t"], 2);
    let ids: Vec<TaskId> = (0..6).map(|_| h.submit(spec("t"))).collect();
    let got = by_worker(&h.dispatch());
    // One visit of each order in turn: r1 takes one, `ll` fills up, then r2, r1, r2.
    assert_eq!(got["r1"], vec![ids[0], ids[4]]);
    assert_eq!(got["ll"], vec![ids[1], ids[2]]);
    assert_eq!(got["r2"], vec![ids[3], ids[5]]);
    h.check();
}

#[test]
fn affinity_holds_under_round_robin() {
    let mut h = Harness::with_defaults();
    for w in ["r1", "r2", "r3"] {
        h.rr_worker(w, &["t"], 4);
    }
    let keyed: Vec<TaskId> = (0..3)
        .map(|_| h.submit(spec("t").affinity_key("k")))
        .collect();
    let plain: Vec<TaskId> = (0..3).map(|_| h.submit(spec("t"))).collect();
    let got = by_worker(&h.dispatch());
    // r1 binds the key on its first turn; r2 and r3 hand it the key's tasks when they
    // meet them, and take the plain ones in turn.
    assert_eq!(got["r1"], vec![keyed[0], keyed[1], keyed[2], plain[2]]);
    assert_eq!(got["r2"], vec![plain[0]]);
    assert_eq!(got["r3"], vec![plain[1]]);
    h.check();
}
