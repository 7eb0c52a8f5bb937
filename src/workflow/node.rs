//! A run's steps at run time: a tree shaped like the definition, driven after each event.
//!
//! Driving is a pure function of the state and of the events applied so far, in order: the
//! same events replayed from the journal rebuild the same tree, the same state and the same
//! choices (conditions, loop exits, which map items are in flight), so nothing but step
//! outcomes and timer deadlines needs to be journaled.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::cond::Condition;
use super::def::{ChildStep, DynamicStep, Input, InputFn, Step, TaskStep};
use crate::task::TaskOptions;

mod map;
use map::MapNode;

/// How a step ended, as the journal keeps it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum StepResult {
    /// Its output.
    Done(Value),
    /// Why it failed.
    Failed(String),
}

/// Something the engine must do for a run.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Action {
    /// Run a task for the step `key`.
    Start {
        key: String,
        task_type: String,
        input: Value,
        options: TaskOptions,
    },
    /// Wake the step `key` at `due_ms` (Unix ms); `new` when the deadline is not yet
    /// journaled.
    Timer { key: String, due_ms: i64, new: bool },
    /// Run the workflow `workflow` as a child for the step `key`.
    Child {
        key: String,
        workflow: String,
        input: Value,
    },
}

impl Action {
    /// The step it is for.
    pub(crate) fn key(&self) -> &str {
        match self {
            Self::Start { key, .. } | Self::Timer { key, .. } | Self::Child { key, .. } => key,
        }
    }
}

/// What driving a node found.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Progress {
    Running,
    Done,
    /// The step `key` failed with this error.
    Failed(String, String),
}

/// What a drive works with: the state, the event being applied and where actions go.
pub(crate) struct Ctx<'a> {
    pub(crate) state: &'a mut BTreeMap<String, Value>,
    pub(crate) fns: &'a HashMap<String, InputFn>,
    /// The event being applied: taken by the node it belongs to.
    pub(crate) event: Option<(String, StepResult)>,
    /// Timer deadlines already journaled, by step key.
    pub(crate) timers: &'a HashMap<String, i64>,
    pub(crate) now_ms: i64,
    pub(crate) actions: Vec<Action>,
}

impl Ctx<'_> {
    /// Takes the event if it is for `key`.
    fn take(&mut self, key: &str) -> Option<StepResult> {
        match &self.event {
            Some((k, _)) if k == key => self.event.take().map(|(_, r)| r),
            _ => None,
        }
    }

    fn input(&self, input: &Input) -> Value {
        match input {
            Input::State => Value::Object(self.state.clone().into_iter().collect()),
            Input::Key(k) => self.state.get(k).cloned().unwrap_or(Value::Null),
            Input::Keys(keys) => Value::Object(
                keys.iter()
                    .map(|k| (k.clone(), self.state.get(k).cloned().unwrap_or(Value::Null)))
                    .collect(),
            ),
            Input::Value(v) => v.clone(),
            Input::Fn(name) => self.fns.get(name).map_or(Value::Null, |f| f(self.state)),
        }
    }

    fn start(&mut self, key: String, task_type: &str, input: Value, options: &TaskOptions) {
        self.actions.push(Action::Start {
            key,
            task_type: task_type.to_string(),
            input,
            options: options.clone(),
        });
    }
}

/// Where a single step is.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Slot {
    Idle,
    Started,
    Done,
    Failed(String),
}

/// One node of the tree.
#[derive(Debug)]
pub(crate) enum Node {
    Task {
        step: TaskStep,
        key: String,
        slot: Slot,
    },
    Seq {
        children: Vec<Node>,
        cursor: usize,
    },
    Par {
        children: Vec<Node>,
    },
    Map(Box<MapNode>),
    /// A task whose output adds steps, and those steps once it is done.
    Dynamic {
        step: DynamicStep,
        key: String,
        slot: Slot,
        added: Option<Box<Node>>,
    },
    Child {
        step: ChildStep,
        key: String,
        slot: Slot,
    },
    Sleep {
        key: String,
        duration_ms: u64,
        slot: Slot,
    },
    Cond {
        when: Condition,
        decided: Option<bool>,
        then: Box<Node>,
        otherwise: Box<Node>,
    },
    Loop {
        name: String,
        steps: Vec<Step>,
        until: Condition,
        max_iterations: u32,
        scope: String,
        iteration: u32,
        body: Box<Node>,
    },
}

impl Node {
    /// The tree of `steps` in order, their keys suffixed with `scope` (loop iterations).
    pub(crate) fn sequence(steps: &[Step], scope: &str) -> Self {
        Self::Seq {
            children: steps.iter().map(|s| Self::build(s, scope)).collect(),
            cursor: 0,
        }
    }

    fn build(step: &Step, scope: &str) -> Self {
        match step {
            Step::Task(t) => Self::Task {
                step: t.clone(),
                key: format!("{}{scope}", t.name),
                slot: Slot::Idle,
            },
            Step::Sequence { steps, .. } => Self::sequence(steps, scope),
            Step::Parallel { steps, .. } => Self::Par {
                children: steps.iter().map(|s| Self::build(s, scope)).collect(),
            },
            Step::Map(m) => Self::Map(Box::new(MapNode::new(m, scope))),
            Step::Dynamic(d) => Self::Dynamic {
                step: d.clone(),
                key: format!("{}{scope}", d.name),
                slot: Slot::Idle,
                added: None,
            },
            Step::Child(c) => Self::Child {
                step: c.clone(),
                key: format!("{}{scope}", c.name),
                slot: Slot::Idle,
            },
            Step::Sleep { name, duration_ms } => Self::Sleep {
                key: format!("{name}{scope}"),
                duration_ms: *duration_ms,
                slot: Slot::Idle,
            },
            Step::Condition {
                when,
                then,
                otherwise,
                ..
            } => Self::Cond {
                when: when.clone(),
                decided: None,
                then: Box::new(Self::sequence(then, scope)),
                otherwise: Box::new(Self::sequence(otherwise, scope)),
            },
            Step::Loop {
                name,
                steps,
                until,
                max_iterations,
            } => Self::Loop {
                name: name.clone(),
                steps: steps.clone(),
                until: until.clone(),
                max_iterations: *max_iterations,
                scope: scope.to_string(),
                iteration: 0,
                body: Box::new(Self::sequence(steps, &format!("{scope}@0"))),
            },
        }
    }

    /// Applies `ctx.event` if it is this subtree's, starts what can start, and says where
    /// the subtree is.
    pub(crate) fn drive(&mut self, ctx: &mut Ctx<'_>) -> Progress {
        match self {
            Self::Task { step, key, slot } => {
                let started = |ctx: &mut Ctx<'_>| {
                    let input = ctx.input(&step.input);
                    ctx.start(key.clone(), &step.task_type, input, &step.options);
                };
                drive_output(key, slot, step.output_key.as_ref(), ctx, started)
            }
            Self::Child { step, key, slot } => {
                let started = |ctx: &mut Ctx<'_>| {
                    let input = match ctx.input(&step.input) {
                        v @ Value::Object(_) => v,
                        other => serde_json::json!({ "input": other }),
                    };
                    ctx.actions.push(Action::Child {
                        key: key.clone(),
                        workflow: step.workflow.clone(),
                        input,
                    });
                };
                drive_output(key, slot, step.output_key.as_ref(), ctx, started)
            }
            Self::Dynamic {
                step,
                key,
                slot,
                added,
            } => {
                if added.is_none() {
                    let started = |ctx: &mut Ctx<'_>| {
                        let input = ctx.input(&step.input);
                        ctx.start(key.clone(), &step.task_type, input, &step.options);
                    };
                    let Some(output) = drive_slot(key, slot, ctx, started) else {
                        return slot_progress(key, slot);
                    };
                    let list = match &output {
                        Value::Array(_) => Some(&output),
                        Value::Object(o) => o.get("steps"),
                        Value::Null => None,
                        _ => {
                            let e = "its output is neither a list of steps nor an object";
                            *slot = Slot::Failed(e.into());
                            return Progress::Failed(key.clone(), e.into());
                        }
                    };
                    let steps = match list {
                        None | Some(Value::Null) => Vec::new(),
                        Some(list) => match super::validate::added_steps(list, step.max_steps) {
                            Ok(steps) => steps,
                            Err(e) => {
                                *slot = Slot::Failed(e.clone());
                                return Progress::Failed(key.clone(), e);
                            }
                        },
                    };
                    if let Some(k) = &step.output_key {
                        ctx.state.insert(k.clone(), output);
                    }
                    *added = Some(Box::new(Self::sequence(&steps, &format!("/{key}"))));
                }
                match added {
                    Some(node) => node.drive(ctx),
                    None => Progress::Done,
                }
            }
            Self::Seq { children, cursor } => loop {
                let Some(child) = children.get_mut(*cursor) else {
                    return Progress::Done;
                };
                match child.drive(ctx) {
                    Progress::Done => *cursor += 1,
                    other => return other,
                }
            },
            Self::Par { children } => {
                let mut all_done = true;
                let mut failed = None;
                for child in children {
                    match child.drive(ctx) {
                        Progress::Done => {}
                        Progress::Running => all_done = false,
                        f @ Progress::Failed(..) => {
                            all_done = false;
                            failed.get_or_insert(f);
                        }
                    }
                }
                match failed {
                    Some(f) => f,
                    None if all_done => Progress::Done,
                    None => Progress::Running,
                }
            }
            Self::Map(map) => map.drive(ctx),
            Self::Sleep {
                key,
                duration_ms,
                slot,
            } => match slot {
                Slot::Idle => {
                    let (due_ms, new) = match ctx.timers.get(key.as_str()) {
                        Some(due) => (*due, false),
                        None => (
                            ctx.now_ms
                                .saturating_add(i64::try_from(*duration_ms).unwrap_or(i64::MAX)),
                            true,
                        ),
                    };
                    ctx.actions.push(Action::Timer {
                        key: key.clone(),
                        due_ms,
                        new,
                    });
                    *slot = Slot::Started;
                    Progress::Running
                }
                Slot::Started => match ctx.take(key) {
                    Some(_) => {
                        *slot = Slot::Done;
                        Progress::Done
                    }
                    None => Progress::Running,
                },
                Slot::Done => Progress::Done,
                Slot::Failed(e) => Progress::Failed(key.clone(), e.clone()),
            },
            Self::Cond {
                when,
                decided,
                then,
                otherwise,
            } => {
                let holds = *decided.get_or_insert_with(|| when.holds(ctx.state));
                if holds {
                    then.drive(ctx)
                } else {
                    otherwise.drive(ctx)
                }
            }
            Self::Loop {
                name,
                steps,
                until,
                max_iterations,
                scope,
                iteration,
                body,
            } => loop {
                match body.drive(ctx) {
                    Progress::Done => {}
                    other => return other,
                }
                if until.holds(ctx.state) {
                    return Progress::Done;
                }
                if *iteration + 1 >= *max_iterations {
                    return Progress::Failed(
                        name.clone(),
                        format!("loop ended {max_iterations} iterations without `until` holding"),
                    );
                }
                *iteration += 1;
                **body = Self::sequence(steps, &format!("{scope}@{iteration}"));
            },
        }
    }

    /// Steps of this subtree not yet done, as far as the run knows now: a condition not yet
    /// decided counts its longer branch, a loop its current iteration, a map whose list is
    /// not read yet one item, a dynamic step only what it added so far.
    pub(crate) fn remaining(&self) -> u64 {
        let slot = |slot: &Slot| u64::from(!matches!(slot, Slot::Done));
        match self {
            Self::Task { slot: s, .. }
            | Self::Sleep { slot: s, .. }
            | Self::Child { slot: s, .. } => slot(s),
            Self::Dynamic { slot: s, added, .. } => {
                slot(s) + added.as_ref().map_or(0, |n| n.remaining())
            }
            Self::Seq { children, .. } | Self::Par { children } => {
                children.iter().map(Self::remaining).sum()
            }
            Self::Map(map) => map.remaining(),
            Self::Cond {
                decided,
                then,
                otherwise,
                ..
            } => match decided {
                Some(true) => then.remaining(),
                Some(false) => otherwise.remaining(),
                None => then.remaining().max(otherwise.remaining()),
            },
            Self::Loop { body, .. } => body.remaining(),
        }
    }

    /// Makes every step that failed or was in flight runnable again: a retry of the run,
    /// whose failure cancelled what was in flight.
    pub(crate) fn reset_unfinished(&mut self) {
        match self {
            Self::Task { slot, .. } | Self::Sleep { slot, .. } | Self::Child { slot, .. } => {
                if matches!(slot, Slot::Failed(_) | Slot::Started) {
                    *slot = Slot::Idle;
                }
            }
            Self::Dynamic { slot, added, .. } => match added {
                Some(node) => node.reset_unfinished(),
                None if matches!(slot, Slot::Failed(_) | Slot::Started) => *slot = Slot::Idle,
                None => {}
            },
            Self::Seq { children, .. } | Self::Par { children } => {
                children.iter_mut().for_each(Self::reset_unfinished)
            }
            Self::Map(map) => map.reset_unfinished(),
            Self::Cond {
                then, otherwise, ..
            } => {
                then.reset_unfinished();
                otherwise.reset_unfinished();
            }
            // A loop that ran out of iterations fails again: its body did not fail.
            Self::Loop { body, .. } => body.reset_unfinished(),
        }
    }
}

/// Drives a step that is one thing to start and one event to wait for: starts it when
/// idle, and gives its output when its event says it is done (a failure is kept in the
/// slot; [`slot_progress`] reports it).
fn drive_slot(
    key: &str,
    slot: &mut Slot,
    ctx: &mut Ctx<'_>,
    start: impl FnOnce(&mut Ctx<'_>),
) -> Option<Value> {
    match slot {
        Slot::Idle => {
            start(ctx);
            *slot = Slot::Started;
            None
        }
        Slot::Started => match ctx.take(key) {
            Some(StepResult::Done(output)) => {
                *slot = Slot::Done;
                Some(output)
            }
            Some(StepResult::Failed(e)) => {
                *slot = Slot::Failed(e);
                None
            }
            None => None,
        },
        Slot::Done | Slot::Failed(_) => None,
    }
}

/// [`drive_slot`] for a step whose output goes under `output_key`.
fn drive_output(
    key: &str,
    slot: &mut Slot,
    output_key: Option<&String>,
    ctx: &mut Ctx<'_>,
    start: impl FnOnce(&mut Ctx<'_>),
) -> Progress {
    match drive_slot(key, slot, ctx, start) {
        Some(output) => {
            if let Some(k) = output_key {
                ctx.state.insert(k.clone(), output);
            }
            Progress::Done
        }
        None => slot_progress(key, slot),
    }
}

/// Where a slot's step is, when [`drive_slot`] gave no output.
fn slot_progress(key: &str, slot: &Slot) -> Progress {
    match slot {
        Slot::Idle | Slot::Started => Progress::Running,
        Slot::Done => Progress::Done,
        Slot::Failed(e) => Progress::Failed(key.to_string(), e.clone()),
    }
}
