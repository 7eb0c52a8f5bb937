//! Property tests of the run state machine under an adversarial engine: random step
//! graphs ([`gen`], dynamic steps included) driven by a simulated engine and queue ([`sim`]) that completes steps
//! in a random order, fails some, fires timers, pauses, resumes, retries failed runs,
//! delivers outcomes twice and crashes at random points (rebuilding the run from its
//! journal). Every case must end in a completed or failed run whose journal matches the
//! steps that ran, and whose replay gives the live run.

mod gen;
mod sim;

use std::collections::{BTreeMap, HashSet};

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::Value;

use super::def::Step;
use super::journal::{DONE, FAILED, RETRY};
use super::RunStatus;
use gen::output;
use sim::Sim;

/// Most operations one case drives after its script, to finish the run: reaching it is a
/// livelock.
const MAX_SETTLE: usize = 5_000;

/// What the simulated world does next.
#[derive(Clone, Debug)]
enum Op {
    /// The queue delivers the outcome of a task in flight (picked modulo their number),
    /// failed if the flag is set and its outcome is not yet decided.
    Deliver(usize, bool),
    /// A timer fires.
    Fire(usize),
    /// The engine commits its round.
    Commit,
    /// The engine crashes and recovers from the store.
    Crash,
    Pause,
    Resume,
    /// A failed run is retried (within the case's budget).
    Retry,
    /// An outcome delivered before arrives again.
    Duplicate(usize),
}

fn script() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        10 => (any::<usize>(), prop::bool::weighted(0.12)).prop_map(|(i, f)| Op::Deliver(i, f)),
        2 => any::<usize>().prop_map(Op::Fire),
        4 => Just(Op::Commit),
        1 => Just(Op::Crash),
        1 => Just(Op::Pause),
        1 => Just(Op::Resume),
        1 => Just(Op::Retry),
        1 => any::<usize>().prop_map(Op::Duplicate),
    ];
    prop::collection::vec(op, 0..80)
}

fn play(sim: &mut Sim, op: &Op) -> Result<(), TestCaseError> {
    match *op {
        Op::Deliver(pick, fail) => sim.deliver(pick, fail),
        Op::Fire(pick) => sim.fire(pick),
        Op::Commit => sim.commit(),
        Op::Crash => sim.crash(),
        Op::Pause => {
            sim.pause();
            Ok(())
        }
        Op::Resume => {
            sim.resume();
            Ok(())
        }
        Op::Retry => sim.retry().map(drop),
        Op::Duplicate(pick) => sim.duplicate(pick),
    }
}

/// Finishes the run the plain way: commit, resume, deliver (done unless decided), fire,
/// retry while the budget lasts. Says whether anything was left to do.
fn settle_once(sim: &mut Sim) -> Result<bool, TestCaseError> {
    if sim.core.status == RunStatus::Paused {
        sim.resume();
        return Ok(true);
    }
    if sim.has_work() {
        sim.commit()?;
        sim.deliver(0, false)?;
        sim.fire(0)?;
        return Ok(true);
    }
    sim.retry()
}

/// The journal's outcomes are the ones the engine accepted, one per step execution, in
/// order; its sequence numbers run 1, 2, 3...
fn check_journal(sim: &Sim) -> Result<(), TestCaseError> {
    for (i, row) in sim.journal.iter().enumerate() {
        prop_assert_eq!(row.seq, i as i64 + 1, "journal sequence has a gap");
    }
    let outcomes: Vec<(String, &str)> = sim
        .journal
        .iter()
        .filter(|r| r.kind == DONE || r.kind == FAILED)
        .map(|r| (r.step.clone(), r.kind.as_str()))
        .collect();
    let reported: Vec<(String, &str)> = sim.reported.iter().map(|(k, s)| (k.clone(), *s)).collect();
    prop_assert_eq!(outcomes, reported);
    let mut generation = 0;
    let mut seen = HashSet::new();
    for r in &sim.journal {
        if r.kind == RETRY {
            generation += 1;
        } else if r.kind == DONE || r.kind == FAILED {
            prop_assert!(
                seen.insert((generation, r.step.clone())),
                "{} ended twice in generation {}",
                r.step,
                generation
            );
        }
    }
    Ok(())
}

/// The outputs a completed run's state must hold, from the last `done` row of each step
/// that keeps its output: a task's output, a map's reduced value or its last stage's
/// outputs in item order.
fn expected_outputs(steps: &[Step], done: &[String], out: &mut BTreeMap<String, Value>) {
    let last = |name: &str, suffix: &str| {
        done.iter()
            .rev()
            .find(|k| base_name(k) == name && k.ends_with(suffix))
            .cloned()
    };
    for step in steps {
        match step {
            Step::Task(t) => {
                if let (Some(k), Some(key)) = (&t.output_key, last(&t.name, "")) {
                    out.insert(k.clone(), output(&key));
                }
            }
            // A child run's outcome, as the simulated engine delivers it.
            Step::Child(c) => {
                if let (Some(k), Some(key)) = (&c.output_key, last(&c.name, "")) {
                    out.insert(k.clone(), output(&key));
                }
            }
            Step::Dynamic(d) => {
                if let (Some(k), Some(key)) = (&d.output_key, last(&d.name, "")) {
                    out.insert(k.clone(), output(&key));
                }
                // Every execution's added steps ran and wrote their outputs.
                for key in done.iter().filter(|k| base_name(k) == d.name) {
                    let added = output(key)["steps"].as_array().map_or(0, Vec::len);
                    for i in 0..added {
                        out.insert(format!("out-{key}-x{i}"), output(&format!("x{i}/{key}")));
                    }
                }
            }
            Step::Map(m) => {
                let Some(k) = &m.output_key else { continue };
                if m.reduce.is_some() {
                    if let Some(key) = last(&m.name, ".reduce") {
                        out.insert(k.clone(), output(&key));
                    }
                } else if let Some(key) = last(&m.name, "") {
                    let prefix = &key[..key.find('[').expect("an item key")];
                    let count = out
                        .get(&m.items)
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len);
                    let items = (0..count)
                        .map(|i| output(&format!("{prefix}[{i}].{}", m.stages.len() - 1)))
                        .collect();
                    out.insert(k.clone(), Value::Array(items));
                }
            }
            other => {
                let children: Vec<Step> = other.children().into_iter().cloned().collect();
                expected_outputs(&children, done, out);
            }
        }
    }
}

/// The step name in a step key: before any loop scope (`@`), item (`[`) or `.reduce`.
fn base_name(key: &str) -> &str {
    key.split(['@', '[', '.']).next().unwrap_or(key)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any graph, any order of outcomes, failures, timers, pauses, retries, duplicates
    /// and crashes: the run ends completed or failed, its journal holds one outcome per
    /// step execution in the order they were accepted, no step done is started again,
    /// a completed run's state holds every output, and replaying the journal gives the
    /// live run.
    #[test]
    fn runs_end_and_their_journal_replays(
        wf in gen::workflow(),
        input in gen::input(),
        script in script(),
        max_retries in 0u32..=2,
    ) {
        let steps = wf.def.steps.clone();
        let inputs = input.clone();
        let mut sim = Sim::start(wf, input, max_retries)?;
        for op in &script {
            play(&mut sim, op)?;
        }
        let mut settled = false;
        for _ in 0..MAX_SETTLE {
            if !settle_once(&mut sim)? {
                settled = true;
                break;
            }
        }
        prop_assert!(settled, "no end after {} steps: a livelock", MAX_SETTLE);
        sim.commit()?;
        prop_assert!(
            matches!(sim.core.status, RunStatus::Completed | RunStatus::Failed),
            "the run stalled {:?} with nothing in flight", sim.core.status
        );
        check_journal(&sim)?;
        sim.check_replay()?;
        if sim.core.status == RunStatus::Completed {
            let done: Vec<String> = sim
                .journal
                .iter()
                .filter(|r| r.kind == DONE)
                .map(|r| r.step.clone())
                .collect();
            let mut expected = inputs;
            expected_outputs(&steps, &done, &mut expected);
            prop_assert_eq!(&sim.core.state, &expected);
        }
    }
}
