//! A map step at run time: items read from the state, at most `concurrency` in flight,
//! each through its stages in order, then the outputs (or their reduction) into the state.
//!
//! The list is not copied: each item is read from the state when it starts (driving is a
//! pure function of the journal, so a replay reads the same item). Outputs are kept only
//! when something takes them (an output key or a reduction), so beside the state a map
//! holds what is in flight.

use std::collections::HashMap;

use serde_json::Value;

use super::{Ctx, Progress, Slot, StepResult};
use crate::workflow::def::MapStep;

/// A map's items in flight and done.
#[derive(Debug)]
pub(crate) struct MapNode {
    step: MapStep,
    /// Step keys of its items are `{prefix}[{item}].{stage}`.
    prefix: String,
    /// The list's length, read from the state when the map starts.
    len: Option<usize>,
    /// The last stage's output per item, when an output key or a reduction takes them.
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

impl MapNode {
    pub(super) fn new(step: &MapStep, scope: &str) -> Self {
        Self {
            step: step.clone(),
            prefix: format!("{}{scope}", step.name),
            len: None,
            outputs: Vec::new(),
            next: 0,
            in_flight: 0,
            done: 0,
            failed: None,
            restart: Vec::new(),
            inputs: HashMap::new(),
            reduce: Slot::Idle,
            finished: false,
        }
    }
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

    /// Item stages and the reduction not yet done.
    pub(super) fn remaining(&self) -> u64 {
        if self.finished {
            return 0;
        }
        let stages = self.step.stages.len() as u64;
        let reduce = u64::from(self.step.reduce.is_some());
        let Some(len) = self.len else {
            return stages + reduce;
        };
        let unstarted = (len - self.next) as u64 * stages;
        let left = |stage: usize| stages - stage as u64;
        let in_flight = self.inputs.keys().map(|(_, s)| left(*s)).sum::<u64>()
            + self.restart.iter().map(|(_, s, _)| left(*s)).sum::<u64>()
            + self.failed.as_ref().map_or(0, |(_, s, _, _)| left(*s));
        unstarted + in_flight + reduce
    }

    pub(super) fn reset_unfinished(&mut self) {
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

    pub(super) fn drive(&mut self, ctx: &mut Ctx<'_>) -> Progress {
        if self.finished {
            return Progress::Done;
        }
        let keeps_outputs = self.step.output_key.is_some() || self.step.reduce.is_some();
        let items = match self.len {
            Some(len) => len,
            None => match ctx.state.get(&self.step.items) {
                Some(Value::Array(list)) => {
                    if keeps_outputs {
                        self.outputs = vec![None; list.len()];
                    }
                    self.len = Some(list.len());
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
                            if keeps_outputs {
                                self.outputs[item] = Some(out);
                            }
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
            let input = match ctx.state.get(&self.step.items) {
                Some(Value::Array(list)) if list.len() == items => list[item].clone(),
                _ => {
                    return Progress::Failed(
                        self.prefix.clone(),
                        format!(
                            "state key {:?} changed while the map ran over it",
                            self.step.items
                        ),
                    )
                }
            };
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
        // The outputs are in the state (or reduced): free them.
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
