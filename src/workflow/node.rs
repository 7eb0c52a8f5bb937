//! A run's steps at run time: a tree shaped like the definition, driven after each event.
//!
//! Driving is a pure function of the state and of the events applied so far, in order: the
//! same events replayed from the journal rebuild the same tree, the same state and the same
//! choices (conditions, loop exits, which map items are in flight), so nothing but step
//! outcomes and timer deadlines needs to be journaled.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::cond::Condition;
use super::def::{Input, InputFn, MapStep, Step, TaskStep};
use crate::task::TaskOptions;

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

/// A map's items in flight and done.
#[derive(Debug)]
pub(crate) struct MapNode {
    step: MapStep,
    /// Step keys of its items are `{prefix}[{item}].{stage}`.
    prefix: String,
    /// Read from the state when the map starts.
    items: Option<Vec<Value>>,
    /// The last stage's output per item.
    outputs: Vec<Option<Value>>,
    /// The next item to start.
    next: usize,
    in_flight: usize,
    done: usize,
    /// The item, stage and input of a failed item task, started again by a retry.
    failed: Option<(usize, usize, Value, String)>,
    /// Inputs of item tasks waiting to start (after a retry).
    restart: Vec<(usize, usize, Value)>,
    /// The last stage's input of each item in flight, kept for a retry.
    inputs: HashMap<(usize, usize), Value>,
    reduce: Slot,
    finished: bool,
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
            Step::Map(m) => Self::Map(Box::new(MapNode {
                step: m.clone(),
                prefix: format!("{}{scope}", m.name),
                items: None,
                outputs: Vec::new(),
                next: 0,
                in_flight: 0,
                done: 0,
                failed: None,
                restart: Vec::new(),
                inputs: HashMap::new(),
                reduce: Slot::Idle,
                finished: false,
            })),
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
            Self::Task { step, key, slot } => drive_task(step, key, slot, ctx),
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

    /// Makes every step that failed or was in flight runnable again: a retry of the run,
    /// whose failure cancelled what was in flight.
    pub(crate) fn reset_unfinished(&mut self) {
        match self {
            Self::Task { slot, .. } | Self::Sleep { slot, .. } => {
                if matches!(slot, Slot::Failed(_) | Slot::Started) {
                    *slot = Slot::Idle;
                }
            }
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

fn drive_task(step: &TaskStep, key: &str, slot: &mut Slot, ctx: &mut Ctx<'_>) -> Progress {
    match slot {
        Slot::Idle => {
            let input = ctx.input(&step.input);
            ctx.start(key.to_string(), &step.task_type, input, &step.options);
            *slot = Slot::Started;
            Progress::Running
        }
        Slot::Started => match ctx.take(key) {
            Some(StepResult::Done(output)) => {
                if let Some(k) = &step.output_key {
                    ctx.state.insert(k.clone(), output);
                }
                *slot = Slot::Done;
                Progress::Done
            }
            Some(StepResult::Failed(e)) => {
                *slot = Slot::Failed(e.clone());
                Progress::Failed(key.to_string(), e)
            }
            None => Progress::Running,
        },
        Slot::Done => Progress::Done,
        Slot::Failed(e) => Progress::Failed(key.to_string(), e.clone()),
    }
}

impl MapNode {
    fn item_key(&self, item: usize, stage: usize) -> String {
        format!("{}[{item}].{stage}", self.prefix)
    }

    /// The item and stage of one of this map's item keys.
    fn parse(&self, key: &str) -> Option<(usize, usize)> {
        let rest = key.strip_prefix(self.prefix.as_str())?.strip_prefix('[')?;
        let (item, stage) = rest.split_once("].")?;
        Some((item.parse().ok()?, stage.parse().ok()?))
    }

    fn start(&mut self, ctx: &mut Ctx<'_>, item: usize, stage: usize, input: Value) {
        let key = self.item_key(item, stage);
        self.inputs.insert((item, stage), input.clone());
        ctx.start(key, &self.step.stages[stage], input, &self.step.options);
    }

    fn reset_unfinished(&mut self) {
        let mut again: Vec<(usize, usize, Value)> = self
            .inputs
            .drain()
            .map(|((item, stage), input)| (item, stage, input))
            .collect();
        again.extend(
            self.failed
                .take()
                .map(|(item, stage, input, _)| (item, stage, input)),
        );
        again.sort_by_key(|(item, stage, _)| (*item, *stage));
        self.restart.extend(again);
        self.in_flight = 0;
        if matches!(self.reduce, Slot::Failed(_) | Slot::Started) {
            self.reduce = Slot::Idle;
        }
    }

    fn drive(&mut self, ctx: &mut Ctx<'_>) -> Progress {
        if self.finished {
            return Progress::Done;
        }
        let items = match &self.items {
            Some(items) => items.len(),
            None => match ctx.state.get(&self.step.items) {
                Some(Value::Array(list)) => {
                    self.outputs = vec![None; list.len()];
                    self.items = Some(list.clone());
                    list.len()
                }
                other => {
                    let found = other.map_or("nothing", json_kind);
                    return Progress::Failed(
                        self.prefix.clone(),
                        format!("state key {:?} holds {found}, not a list", self.step.items),
                    );
                }
            },
        };
        let reduce_key = format!("{}.reduce", self.prefix);
        let event_key = ctx.event.as_ref().map(|(k, _)| k.clone());
        if let Some(key) = event_key {
            if let Some((item, stage)) = self.parse(&key) {
                if item < items && stage < self.step.stages.len() {
                    let result = ctx.take(&key).expect("the event is this key's");
                    let input = self.inputs.remove(&(item, stage));
                    match result {
                        StepResult::Done(out) if stage + 1 < self.step.stages.len() => {
                            self.start(ctx, item, stage + 1, out)
                        }
                        StepResult::Done(out) => {
                            self.outputs[item] = Some(out);
                            self.in_flight -= 1;
                            self.done += 1;
                        }
                        StepResult::Failed(e) => {
                            self.in_flight -= 1;
                            let input = input.unwrap_or(Value::Null);
                            self.failed = Some((item, stage, input, e));
                        }
                    }
                }
            }
        }
        if let Some((item, stage, _, e)) = &self.failed {
            return Progress::Failed(self.item_key(*item, *stage), e.clone());
        }
        for (item, stage, input) in std::mem::take(&mut self.restart) {
            self.in_flight += 1;
            self.start(ctx, item, stage, input);
        }
        let limit = self.step.concurrency as usize;
        while self.in_flight < limit && self.next < items {
            let item = self.next;
            let input = self.items.as_ref().expect("read above")[item].clone();
            self.next += 1;
            self.in_flight += 1;
            self.start(ctx, item, 0, input);
        }
        if self.done < items {
            return Progress::Running;
        }
        let outputs = || {
            Value::Array(
                self.outputs
                    .iter()
                    .map(|o| o.clone().unwrap_or(Value::Null))
                    .collect(),
            )
        };
        let value = match &self.step.reduce {
            None => outputs(),
            Some(task_type) => match &self.reduce {
                Slot::Idle => {
                    let input = outputs();
                    ctx.start(reduce_key, task_type, input, &self.step.options);
                    self.reduce = Slot::Started;
                    return Progress::Running;
                }
                Slot::Started => match ctx.take(&reduce_key) {
                    Some(StepResult::Done(v)) => v,
                    Some(StepResult::Failed(e)) => {
                        self.reduce = Slot::Failed(e.clone());
                        return Progress::Failed(reduce_key, e);
                    }
                    None => return Progress::Running,
                },
                Slot::Failed(e) => return Progress::Failed(reduce_key, e.clone()),
                Slot::Done => Value::Null,
            },
        };
        if let Some(k) = &self.step.output_key {
            ctx.state.insert(k.clone(), value);
        }
        self.reduce = Slot::Done;
        self.finished = true;
        // The items and outputs are in the state (or reduced): free them.
        self.items = Some(Vec::new());
        self.outputs = Vec::new();
        Progress::Done
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
