//! The run state machine on its own: patterns, failures, retries, and replay of a journal
//! rebuilding the same run.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};

use super::cond::{Condition, Op};
use super::def::{Input, Step, Workflow};
use super::journal::{event_row, replay, Entry};
use super::node::{Action, StepResult};
use super::run::{RunCore, RunEvent};
use super::{RunId, RunStatus};
use crate::store::{WorkflowEventRow, WorkflowRunRow};

/// A run and its journal, driven by hand.
struct Harness {
    run: RunCore,
    journal: Vec<WorkflowEventRow>,
    /// Steps started and not yet ended: key → (task type, input).
    started: BTreeMap<String, (String, Value)>,
    now: i64,
}

impl Harness {
    fn new(wf: Workflow, input: Value) -> Self {
        let input: BTreeMap<String, Value> = serde_json::from_value(input).unwrap();
        let run = RunCore::new(RunId::new(), Arc::new(wf), "v1".into(), input, 1_000).new_row();
        let mut h = Self {
            run,
            journal: Vec::new(),
            started: BTreeMap::new(),
            now: 1_000,
        };
        let actions = h.run.start(h.now);
        h.take(actions);
        h
    }

    fn take(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Start {
                    key,
                    task_type,
                    input,
                    ..
                } => {
                    self.started.insert(key, (task_type, input));
                }
                Action::Timer { key, due_ms, new } => {
                    if new {
                        self.run.seq += 1;
                        self.journal.push(event_row(
                            self.run.id,
                            self.run.seq,
                            &Entry::Timer(key.clone(), due_ms),
                            self.now,
                        ));
                    }
                    self.started.insert(key, ("timer".into(), json!(due_ms)));
                }
                Action::Child {
                    key,
                    workflow,
                    input,
                } => {
                    self.started
                        .insert(key, (format!("child:{workflow}"), input));
                }
            }
        }
    }

    fn event(&mut self, event: RunEvent) {
        self.now += 1;
        self.run.seq += 1;
        self.journal.push(event_row(
            self.run.id,
            self.run.seq,
            &Entry::Event(event.clone()),
            self.now,
        ));
        if let RunEvent::Step(key, _) = &event {
            self.started.remove(key);
        }
        let actions = self.run.apply(event, self.now);
        if !self.run.status.is_active() {
            self.started.clear();
        }
        self.take(actions);
    }

    fn done(&mut self, key: &str, output: Value) {
        assert!(
            self.started.contains_key(key),
            "{key} not started: {:?}",
            self.started.keys()
        );
        self.event(RunEvent::Step(key.into(), StepResult::Done(output)));
    }

    fn fail(&mut self, key: &str, error: &str) {
        self.event(RunEvent::Step(key.into(), StepResult::Failed(error.into())));
    }

    fn keys(&self) -> Vec<&str> {
        self.started.keys().map(String::as_str).collect()
    }

    fn input_of(&self, key: &str) -> &Value {
        &self.started[key].1
    }

    /// The run rebuilt from its journal equals the live one.
    fn check_replay(&self) {
        let row = WorkflowRunRow {
            id: self.run.id.0,
            workflow: self.run.workflow.name().into(),
            version: "v1".into(),
            status: self.run.status.as_str().into(),
            input: self.run.input.clone(),
            generation: i64::from(self.run.generation),
            error: self.run.error.clone(),
            state: None,
            steps_done: 0,
            created_at_ms: 1_000,
            updated_at_ms: self.now,
            finished_at_ms: self.run.finished_at_ms,
        };
        let (rebuilt, again) = replay(&row, &self.journal, self.run.workflow.clone()).unwrap();
        assert_eq!(rebuilt.state, self.run.state);
        assert_eq!(rebuilt.status, self.run.status);
        assert_eq!(
            rebuilt.running.keys().collect::<Vec<_>>(),
            self.run.running.keys().collect::<Vec<_>>()
        );
        let again: Vec<String> = again.iter().map(|a| a.key().to_string()).collect();
        assert_eq!(again, self.keys());
    }
}

#[test]
fn a_sequence_passes_outputs_along() {
    let wf = Workflow::new("seq")
        .step(Step::task("a", "t").input_key("x").output_key("y"))
        .step(Step::task("b", "t").input_key("y").output_key("z"));
    let mut h = Harness::new(wf, json!({"x": 1}));
    assert_eq!(h.keys(), ["a"]);
    assert_eq!(h.input_of("a"), &json!(1));
    h.check_replay();
    h.done("a", json!(2));
    assert_eq!(h.keys(), ["b"]);
    assert_eq!(h.input_of("b"), &json!(2));
    h.check_replay();
    h.done("b", json!(3));
    assert_eq!(h.run.status, RunStatus::Completed);
    assert_eq!(h.run.state["z"], json!(3));
    assert_eq!(h.run.steps_completed, 2);
    h.check_replay();
}

#[test]
fn parallel_branches_fan_in_before_the_next_step() {
    let wf = Workflow::new("par")
        .parallel(
            "p",
            [
                Step::task("a", "t").output_key("a"),
                Step::task("b", "t").output_key("b"),
            ],
        )
        .step(Step::task("c", "t").input(Input::Keys(vec!["a".into(), "b".into()])));
    let mut h = Harness::new(wf, json!({}));
    assert_eq!(h.keys(), ["a", "b"]);
    h.done("b", json!("B"));
    assert_eq!(h.keys(), ["a"]);
    h.check_replay();
    h.done("a", json!("A"));
    assert_eq!(h.keys(), ["c"]);
    assert_eq!(h.input_of("c"), &json!({"a": "A", "b": "B"}));
    h.check_replay();
}

#[test]
fn a_map_keeps_its_concurrency_and_the_item_order() {
    let wf = Workflow::new("map").step(
        Step::map("m", "items", "t")
            .concurrency(2)
            .then("u")
            .output_key("out"),
    );
    let mut h = Harness::new(wf, json!({"items": [10, 20, 30]}));
    assert_eq!(h.keys(), ["m[0].0", "m[1].0"]);
    h.done("m[1].0", json!(21));
    // Item 1 goes on to stage 1; item 2 waits for a free slot.
    assert_eq!(h.keys(), ["m[0].0", "m[1].1"]);
    assert_eq!(h.input_of("m[1].1"), &json!(21));
    h.done("m[1].1", json!(22));
    assert_eq!(h.keys(), ["m[0].0", "m[2].0"]);
    h.check_replay();
    h.done("m[2].0", json!(31));
    h.done("m[2].1", json!(32));
    h.done("m[0].0", json!(11));
    h.done("m[0].1", json!(12));
    assert_eq!(h.run.status, RunStatus::Completed);
    assert_eq!(h.run.state["out"], json!([12, 22, 32]));
    h.check_replay();
}

#[test]
fn a_map_reduces_and_an_empty_one_ends_at_once() {
    let wf = Workflow::new("mr")
        .step(
            Step::map("m", "items", "t")
                .reduce("sum")
                .output_key("total"),
        )
        .step(Step::map("e", "none", "t").output_key("empty"));
    let mut h = Harness::new(wf, json!({"items": [1, 2], "none": []}));
    h.done("m[0].0", json!(1));
    h.done("m[1].0", json!(2));
    assert_eq!(h.keys(), ["m.reduce"]);
    assert_eq!(h.input_of("m.reduce"), &json!([1, 2]));
    h.done("m.reduce", json!(3));
    assert_eq!(h.run.status, RunStatus::Completed);
    assert_eq!(h.run.state["total"], json!(3));
    assert_eq!(h.run.state["empty"], json!([]));
    h.check_replay();
}

#[test]
fn a_map_reads_each_item_as_it_starts_and_fails_if_its_list_changes() {
    // A branch beside the map writes the map's list while items wait for a slot.
    let wf = Workflow::new("race").parallel(
        "p",
        [
            Step::from(Step::map("m", "items", "t").concurrency(1)),
            Step::from(Step::task("w", "t").output_key("items")),
        ],
    );
    let mut h = Harness::new(wf, json!({"items": [10, 20, 30]}));
    assert_eq!(h.keys(), ["m[0].0", "w"]);
    assert_eq!(h.input_of("m[0].0"), &json!(10));
    h.done("m[0].0", json!(11));
    assert_eq!(h.input_of("m[1].0"), &json!(20));
    h.done("w", json!([1]));
    h.done("m[1].0", json!(21));
    assert_eq!(h.run.status, RunStatus::Failed);
    let e = h.run.error.clone().unwrap();
    assert!(
        e.contains("\"items\" changed while the map ran over it"),
        "{e}"
    );
    h.check_replay();
}

#[test]
fn a_map_over_something_else_fails_naming_it() {
    let wf = Workflow::new("bad").step(Step::map("m", "items", "t"));
    let h = Harness::new(wf, json!({"items": {"a": 1}}));
    assert_eq!(h.run.status, RunStatus::Failed);
    let e = h.run.error.clone().unwrap();
    assert!(e.contains("\"items\" holds an object, not a list"), "{e}");
}

#[test]
fn conditions_choose_once_and_loops_stop_at_until_or_their_bound() {
    let wf = Workflow::new("c")
        .step(Step::Condition {
            name: "big".into(),
            when: Condition::new("n", Op::Gt, Some(json!(10))),
            then: vec![Step::task("yes", "t").into()],
            otherwise: vec![Step::task("no", "t").into()],
        })
        .step(Step::Loop {
            name: "l".into(),
            steps: vec![Step::task("inc", "t").output_key("count").into()],
            until: Condition::new("count", Op::Ge, Some(json!(2))),
            max_iterations: 3,
        });
    let mut h = Harness::new(wf.clone(), json!({"n": 5}));
    assert_eq!(h.keys(), ["no"]);
    h.done("no", json!(null));
    assert_eq!(h.keys(), ["inc@0"]);
    h.done("inc@0", json!(1));
    assert_eq!(h.keys(), ["inc@1"]);
    h.check_replay();
    h.done("inc@1", json!(2));
    assert_eq!(h.run.status, RunStatus::Completed);
    h.check_replay();

    let mut h = Harness::new(wf, json!({"n": 50}));
    h.done("yes", json!(null));
    for i in 0..3 {
        h.done(&format!("inc@{i}"), json!(0));
    }
    assert_eq!(h.run.status, RunStatus::Failed);
    assert!(h.run.error.as_deref().unwrap().contains("3 iterations"));
}

#[test]
fn a_failed_run_retries_only_what_did_not_complete() {
    let wf = Workflow::new("r")
        .step(Step::task("a", "t").output_key("a"))
        .parallel("p", [Step::task("b", "t"), Step::task("c", "t")])
        .step(Step::map("m", "a", "t").concurrency(1));
    let mut h = Harness::new(wf, json!({}));
    h.done("a", json!([1, 2]));
    h.done("b", json!(null));
    h.fail("c", "boom");
    assert_eq!(h.run.status, RunStatus::Failed);
    assert_eq!(h.run.error.as_deref(), Some("step c: boom"));
    h.check_replay();
    h.event(RunEvent::Retry);
    assert_eq!(h.run.generation, 1);
    assert_eq!(h.keys(), ["c"]);
    h.check_replay();
    h.done("c", json!(null));
    h.done("m[0].0", json!(null));
    h.fail("m[1].0", "again");
    h.event(RunEvent::Retry);
    assert_eq!(h.keys(), ["m[1].0"]);
    assert_eq!(h.input_of("m[1].0"), &json!(2));
    h.done("m[1].0", json!(null));
    assert_eq!(h.run.status, RunStatus::Completed);
    h.check_replay();
}

#[test]
fn a_timer_keeps_its_deadline_through_replay() {
    let wf = Workflow::new("s")
        .sleep("wait", std::time::Duration::from_secs(60))
        .step(Step::task("after", "t"));
    let mut h = Harness::new(wf, json!({}));
    assert_eq!(h.keys(), ["wait"]);
    assert_eq!(h.input_of("wait"), &json!(61_000));
    h.check_replay();
    let (rebuilt, again) = replay(
        &WorkflowRunRow {
            id: h.run.id.0,
            workflow: "s".into(),
            version: "v1".into(),
            status: "running".into(),
            input: Some("{}".into()),
            generation: 0,
            error: None,
            state: None,
            steps_done: 0,
            created_at_ms: 1_000,
            updated_at_ms: 1_000,
            finished_at_ms: None,
        },
        &h.journal,
        h.run.workflow.clone(),
    )
    .unwrap();
    assert_eq!(rebuilt.timers["wait"], 61_000);
    assert_eq!(
        again,
        vec![Action::Timer {
            key: "wait".into(),
            due_ms: 61_000,
            new: false
        }]
    );
    h.done("wait", Value::Null);
    assert_eq!(h.keys(), ["after"]);
}

#[test]
fn dynamic_steps_run_after_their_task_and_replay_the_same() {
    let wf = Workflow::new("dyn")
        .step(Step::dynamic("plan", "planner").output_key("plan"))
        .step(Step::task("after", "t"));
    let mut h = Harness::new(wf, json!({}));
    assert_eq!(h.keys(), ["plan"]);
    // Known so far: the planner and the step after it.
    assert_eq!(h.run.snapshot().steps_total, 2);
    let plan = json!({"steps": [
        {"kind": "task", "name": "a", "task_type": "t", "output_key": "a"},
        {"kind": "parallel", "name": "p", "steps": [
            {"kind": "task", "name": "b", "task_type": "t", "input": {"key": "a"}},
            {"kind": "task", "name": "c", "task_type": "t"}
        ]}
    ], "note": "kept"});
    h.done("plan", plan.clone());
    assert_eq!(h.keys(), ["a/plan"]);
    assert_eq!(h.run.state["plan"], plan);
    assert_eq!(h.run.snapshot().steps_total, 5);
    h.check_replay();
    h.done("a/plan", json!("A"));
    assert_eq!(h.keys(), ["b/plan", "c/plan"]);
    assert_eq!(h.input_of("b/plan"), &json!("A"));
    h.check_replay();
    h.done("b/plan", json!(1));
    h.done("c/plan", json!(2));
    assert_eq!(h.keys(), ["after"]);
    h.done("after", json!(null));
    assert_eq!(h.run.status, RunStatus::Completed);
    assert_eq!(h.run.steps_completed, 5);
    assert_eq!(h.run.snapshot().steps_total, 5);
    h.check_replay();
}

#[test]
fn a_loop_around_a_dynamic_step_is_an_agent_loop() {
    let wf = Workflow::new("agent").step(Step::Loop {
        name: "turns".into(),
        steps: vec![Step::dynamic("model", "llm").output_key("reply").into()],
        until: Condition::new("reply.done", Op::Truthy, None),
        max_iterations: 5,
    });
    let mut h = Harness::new(wf, json!({"prompt": "hi"}));
    assert_eq!(h.keys(), ["model@0"]);
    let call = json!({"steps": [{"kind": "task", "name": "search", "task_type": "tool"}]});
    h.done("model@0", call);
    assert_eq!(h.keys(), ["search/model@0"]);
    h.check_replay();
    h.done("search/model@0", json!("found"));
    // The tool's turn is over: the model is asked again, in the next iteration.
    assert_eq!(h.keys(), ["model@1"]);
    h.check_replay();
    h.done("model@1", json!({"done": true, "text": "bye"}));
    assert_eq!(h.run.status, RunStatus::Completed);
    assert_eq!(h.run.state["reply"]["text"], json!("bye"));
    h.check_replay();
}

#[test]
fn bad_added_steps_fail_the_dynamic_step_and_a_retry_asks_again() {
    let wf = Workflow::new("dyn").step(Step::dynamic("plan", "planner").max_steps(2));
    let mut h = Harness::new(wf, json!({}));
    let dup = json!([
        {"kind": "task", "name": "a", "task_type": "t"},
        {"kind": "task", "name": "a", "task_type": "t"}
    ]);
    h.done("plan", dup);
    assert_eq!(h.run.status, RunStatus::Failed);
    let error = h.run.error.clone().unwrap();
    assert!(
        error.contains("step plan") && error.contains("duplicate"),
        "{error}"
    );
    h.check_replay();
    h.event(RunEvent::Retry);
    assert_eq!(h.keys(), ["plan"]);
    let three = json!({"steps": [
        {"kind": "task", "name": "a", "task_type": "t"},
        {"kind": "sequence", "name": "s", "steps": [{"kind": "task", "name": "b", "task_type": "t"}]}
    ]});
    h.done("plan", three);
    let error = h.run.error.clone().unwrap();
    assert!(
        error.contains("3 steps, more than its max_steps (2)"),
        "{error}"
    );
    h.event(RunEvent::Retry);
    h.done("plan", json!("not steps"));
    let error = h.run.error.clone().unwrap();
    assert!(error.contains("neither a list"), "{error}");
    h.check_replay();
}

#[test]
fn a_child_step_asks_for_its_run_and_takes_its_state() {
    let wf = Workflow::new("parent")
        .step(
            Step::child("sub", "kid")
                .input(Input::Key("n".into()))
                .output_key("kid"),
        )
        .step(Step::task("after", "t").input_key("kid"));
    let mut h = Harness::new(wf, json!({"n": 7}));
    assert_eq!(h.keys(), ["sub"]);
    // A value that is not an object goes under `input`.
    assert_eq!(
        h.started["sub"],
        ("child:kid".to_string(), json!({"input": 7}))
    );
    h.check_replay();
    h.done("sub", json!({"input": 7, "out": 8}));
    assert_eq!(h.input_of("after"), &json!({"input": 7, "out": 8}));
    h.check_replay();
}
