//! Random valid workflow definitions: nested sequences, parallel branches, maps (one or
//! two stages, concurrency 1 to 4, an optional reduce), conditions on state keys, loops of
//! 1 to 3 iterations, sleeps, steps added at run time and child workflows, over a few task
//! types, at most three levels deep.
//!
//! Steps are generated without names, then named `s0`, `s1`, ... in definition order
//! (names are unique), and every step that keeps its output writes it under its own key
//! `o0`, `o1`, ... A task's output is a function of its step key alone ([`output`]), so
//! conditions and loop exits that read `oN.n` choose the same way in every replay.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{json, Value};

use crate::task::TaskOptions;
use crate::workflow::cond::{Condition, Op};
use crate::workflow::def::{
    ChildStep, DynamicStep, Input, MapStep, Step, TaskStep, Workflow, WorkflowDef,
};
use crate::workflow::Checkpoint;

/// The task types steps run.
const TYPES: [&str; 3] = ["a", "b", "c"];
/// State keys holding the lists maps run over (1, 2 and 3 items).
const LISTS: [&str; 3] = ["l1", "l2", "l3"];
/// Keys conditions read: the input's, and outputs that may or may not exist.
const COND_KEYS: [&str; 8] = ["n", "flag", "o0.n", "o1.n", "o2.n", "o3.n", "o4.n", "o5.n"];
/// A loop's `until` with this key reads the first output of its own body (when it has
/// one), so that loops end by `until` as well as by their bound.
const BODY: &str = "@body";

/// The output of the step `key`: `{"key": key, "n": 0..4}`, the same on every delivery. A
/// dynamic step's (named `dN`, so its keys start with `d`) also lists `n` task steps
/// `x0`, `x1`, ... of type `a` to run next (their keys are `xI/KEY`), each writing its
/// output under `out-KEY-xI`.
pub(super) fn output(key: &str) -> Value {
    // FNV-1a: stable across runs and platforms, unlike the std hasher.
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let n = hash % 4;
    if key.starts_with('d') {
        let steps: Vec<Value> = (0..n)
            .map(|i| {
                json!({"kind": "task", "name": format!("x{i}"), "task_type": "a",
                    "output_key": format!("out-{key}-x{i}")})
            })
            .collect();
        return json!({"key": key, "n": n, "steps": steps});
    }
    json!({"key": key, "n": n})
}

/// A run's input: `n`, `flag` and the three lists.
pub(super) fn input() -> impl Strategy<Value = BTreeMap<String, Value>> {
    (0i64..4, any::<bool>()).prop_map(|(n, flag)| {
        let mut state = BTreeMap::new();
        state.insert("n".to_string(), json!(n));
        state.insert("flag".to_string(), json!(flag));
        for (i, list) in LISTS.iter().enumerate() {
            state.insert(list.to_string(), json!((1..=i + 1).collect::<Vec<_>>()));
        }
        state
    })
}

/// A workflow of 1 to 4 top-level steps, named and checked by `validate`.
pub(super) fn workflow() -> impl Strategy<Value = Workflow> {
    let checkpoint = prop_oneof![Just(Checkpoint::BeforeNext), Just(Checkpoint::Overlapped)];
    (prop::collection::vec(step(), 1..=4), checkpoint).prop_map(|(mut steps, checkpoint)| {
        let mut namer = Namer::default();
        for s in &mut steps {
            namer.name(s);
        }
        let wf = Workflow::from_def(WorkflowDef {
            name: "prop".into(),
            version: Some("v1".into()),
            description: String::new(),
            steps,
            checkpoint,
            timeout_ms: None,
        });
        if let Err(e) = crate::workflow::validate::validate(&wf, &|_| true) {
            panic!("generated an invalid definition ({e}): {:?}", wf.def);
        }
        wf
    })
}

fn step() -> impl Strategy<Value = Step> {
    leaf().prop_recursive(3, 16, 3, |inner| {
        let steps = prop::collection::vec(inner.clone(), 1..=3);
        prop_oneof![
            steps.clone().prop_map(|steps| Step::Sequence {
                name: String::new(),
                steps
            }),
            steps.clone().prop_map(|steps| Step::Parallel {
                name: String::new(),
                steps
            }),
            (
                condition(false),
                steps.clone(),
                prop::collection::vec(inner, 0..=2)
            )
                .prop_map(|(when, then, otherwise)| Step::Condition {
                    name: String::new(),
                    when,
                    then,
                    otherwise,
                }),
            (condition(true), steps, 1u32..=3).prop_map(|(until, steps, max_iterations)| {
                Step::Loop {
                    name: String::new(),
                    steps,
                    until,
                    max_iterations,
                }
            }),
        ]
    })
}

fn leaf() -> impl Strategy<Value = Step> {
    let task_type = prop::sample::select(&TYPES[..]);
    let input = prop_oneof![
        Just(Input::State),
        Just(Input::Key("n".into())),
        Just(Input::Keys(vec!["n".into(), "o0".into()])),
        Just(Input::Value(json!({"fixed": 7}))),
    ];
    let task = (task_type.clone(), input, any::<bool>()).prop_map(|(t, input, keep)| {
        Step::Task(TaskStep {
            name: String::new(),
            task_type: t.into(),
            input,
            output_key: keep.then(String::new),
            options: TaskOptions::default(),
        })
    });
    let map = (
        prop::sample::select(&LISTS[..]),
        prop::collection::vec(task_type.clone(), 1..=2),
        1u32..=4,
        prop::option::of(task_type),
        any::<bool>(),
    )
        .prop_map(|(items, stages, concurrency, reduce, keep)| {
            Step::Map(MapStep {
                name: String::new(),
                items: items.into(),
                stages: stages.into_iter().map(String::from).collect(),
                concurrency,
                output_key: keep.then(String::new),
                reduce: reduce.map(String::from),
                options: TaskOptions::default(),
            })
        });
    let sleep = (0u64..500).prop_map(|duration_ms| Step::Sleep {
        name: String::new(),
        duration_ms,
    });
    let dynamic = any::<bool>().prop_map(|keep| {
        Step::Dynamic(DynamicStep {
            name: String::new(),
            task_type: "d".into(),
            input: Input::State,
            output_key: keep.then(String::new),
            max_steps: 100,
            options: TaskOptions::default(),
        })
    });
    let child = (any::<bool>(), any::<bool>()).prop_map(|(whole, keep)| {
        Step::Child(ChildStep {
            name: String::new(),
            workflow: "kid".into(),
            input: if whole {
                Input::State
            } else {
                Input::Keys(vec!["n".into()])
            },
            output_key: keep.then(String::new),
        })
    });
    prop_oneof![4 => task, 2 => map, 1 => sleep, 1 => dynamic, 1 => child]
}

/// A test on a state key; `body` lets the key be the loop body's first output.
fn condition(body: bool) -> impl Strategy<Value = Condition> {
    let key = prop::sample::select(&COND_KEYS[..]).prop_map(String::from);
    let key = if body {
        prop_oneof![key, Just(BODY.to_string())].boxed()
    } else {
        key.boxed()
    };
    let op = prop::sample::select(
        &[
            Op::Eq,
            Op::Ne,
            Op::Gt,
            Op::Ge,
            Op::Lt,
            Op::Le,
            Op::Exists,
            Op::Truthy,
        ][..],
    );
    (key, op, 0i64..4).prop_map(|(key, op, v)| {
        let value = (!matches!(op, Op::Exists | Op::Truthy)).then(|| json!(v));
        Condition::new(key, op, value)
    })
}

/// Gives steps their names and output keys, in definition order.
#[derive(Default)]
struct Namer {
    steps: usize,
    outputs: usize,
}

impl Namer {
    fn output(&mut self, key: &mut Option<String>) {
        if key.is_some() {
            *key = Some(format!("o{}", self.outputs));
            self.outputs += 1;
        }
    }

    fn name(&mut self, step: &mut Step) {
        let name = format!("s{}", self.steps);
        self.steps += 1;
        match step {
            Step::Task(t) => {
                t.name = name;
                self.output(&mut t.output_key);
            }
            Step::Map(m) => {
                m.name = name;
                self.output(&mut m.output_key);
            }
            Step::Sleep { name: n, .. } => *n = name,
            // Named `dN`: its outputs list steps (see [`output`]).
            Step::Dynamic(d) => {
                d.name = format!("d{}", self.steps - 1);
                self.output(&mut d.output_key);
            }
            Step::Child(c) => {
                c.name = name;
                self.output(&mut c.output_key);
            }
            Step::Sequence { name: n, steps } | Step::Parallel { name: n, steps } => {
                *n = name;
                steps.iter_mut().for_each(|s| self.name(s));
            }
            Step::Condition {
                name: n,
                then,
                otherwise,
                ..
            } => {
                *n = name;
                then.iter_mut().chain(otherwise).for_each(|s| self.name(s));
            }
            Step::Loop {
                name: n,
                steps,
                until,
                ..
            } => {
                *n = name;
                steps.iter_mut().for_each(|s| self.name(s));
                if until.key == BODY {
                    until.key = first_output(steps.iter()).map_or("n".into(), |o| format!("{o}.n"));
                }
            }
        }
    }
}

fn first_output<'a>(steps: impl IntoIterator<Item = &'a Step>) -> Option<String> {
    steps.into_iter().find_map(|s| match s {
        Step::Task(t) => t.output_key.clone(),
        Step::Map(m) => m.output_key.clone(),
        other => first_output(other.children()),
    })
}
