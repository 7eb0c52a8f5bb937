//! What a workflow is: a named list of steps, the same graph whether it is built in Rust
//! with [`Workflow`] or sent as JSON over the API. The JSON form is the serde form of
//! [`WorkflowDef`]; a Rust definition may also name input functions, which JSON cannot carry.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::checkpoint::Checkpoint;
use super::cond::Condition;
use crate::task::TaskOptions;

/// A step's input, read from the run's state when the step starts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Input {
    /// The whole state, as an object (the default).
    #[default]
    State,
    /// The value under one key (`null` when the key is missing).
    Key(String),
    /// An object of these keys and their values.
    Keys(Vec<String>),
    /// This value, as written.
    Value(Value),
    /// The value a function registered with the Rust definition returns
    /// ([`Workflow::input_fn`]); JSON definitions cannot name one.
    Fn(String),
}

/// One task run as a step: queued, routed, retried and timed out like any task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskStep {
    /// The step's name, unique in the workflow.
    pub name: String,
    /// The registered task type that runs it.
    pub task_type: String,
    /// What the task receives.
    #[serde(default)]
    pub input: Input,
    /// The state key its output is written under (none: the output is kept in the journal
    /// only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_key: Option<String>,
    /// Priority, timeout, retries and labels of its task (its idempotency key is the
    /// engine's: one per run, step and retry of the run).
    #[serde(default)]
    pub options: TaskOptions,
}

/// A task type run over every item of a list in the state, with at most `concurrency`
/// items at once. With several `stages`, each item flows through them in order (a
/// pipeline: an item enters stage 2 as soon as its stage 1 is done). The outputs of the
/// last stage, in item order, go under `output_key`, or through `reduce` first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapStep {
    /// The step's name, unique in the workflow.
    pub name: String,
    /// The state key holding the list of items.
    pub items: String,
    /// The task types each item goes through, in order (at least one).
    pub stages: Vec<String>,
    /// Most items in flight at once (default 16).
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Where the list of outputs (or the reduced value) goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_key: Option<String>,
    /// A task type that receives the list of outputs and returns one value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reduce: Option<String>,
    /// Options of each item's tasks.
    #[serde(default)]
    pub options: TaskOptions,
}

fn default_concurrency() -> u32 {
    16
}

/// A task whose output adds steps at run time: it returns a list of steps (the JSON form
/// of [`Step`]), or an object whose `steps` field holds one, and they run next, in order,
/// as part of this step. An empty list (or an object without `steps`) adds nothing. The
/// whole output goes under `output_key` first, so the added steps can read it. Added
/// steps are checked like a definition's (names, bounds, conditions; input functions are
/// refused) and may not number more than `max_steps`, nested ones included; a bad list
/// fails the step, naming what is wrong. Their step keys are `NAME/KEY`, `KEY` being this
/// step's. Because the output is journaled, a recovered run rebuilds the same steps: this
/// is how an agent's model → tools → model loop runs durably (a loop around a dynamic
/// step whose output lists the tool calls).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamicStep {
    /// The step's name, unique in the workflow.
    pub name: String,
    /// The registered task type that says which steps follow.
    pub task_type: String,
    /// What the task receives.
    #[serde(default)]
    pub input: Input,
    /// The state key its output is written under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_key: Option<String>,
    /// Most steps it may add (default 100).
    #[serde(default = "default_max_steps")]
    pub max_steps: u32,
    /// Its task's options.
    #[serde(default)]
    pub options: TaskOptions,
}

fn default_max_steps() -> u32 {
    100
}

/// Another registered workflow run as one step: a child run, started with the newest
/// version of `workflow` (and pinned to it) on this step's input. The step is done when
/// the child completes, with the child's final state as its output; it fails when the
/// child fails, stops or is cancelled. Cancelling (or failing) the parent cancels its
/// children; a paused parent lets its children run on. The child's id follows from the
/// parent's, its retry generation and the step, so a recovered parent finds its child
/// again instead of starting a second one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChildStep {
    /// The step's name, unique in the workflow.
    pub name: String,
    /// The registered workflow to run.
    pub workflow: String,
    /// The child's input: an object (any other value goes under the key `input`).
    #[serde(default)]
    pub input: Input,
    /// The state key the child's final state is written under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_key: Option<String>,
}

/// A step of a workflow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Step {
    /// One task.
    Task(TaskStep),
    /// Steps one after another.
    Sequence {
        /// The step's name, unique in the workflow.
        name: String,
        /// Its steps, in order.
        steps: Vec<Step>,
    },
    /// Steps all at once; done when every one is (fan-out, fan-in).
    Parallel {
        /// The step's name, unique in the workflow.
        name: String,
        /// Its branches.
        steps: Vec<Step>,
    },
    /// A task type over a list (see [`MapStep`]).
    Map(MapStep),
    /// A task whose output adds the steps that follow (see [`DynamicStep`]).
    Dynamic(DynamicStep),
    /// A child workflow run (see [`ChildStep`]).
    Child(ChildStep),
    /// A durable timer: the run waits this long, across restarts.
    Sleep {
        /// The step's name, unique in the workflow.
        name: String,
        /// How long, in milliseconds.
        duration_ms: u64,
    },
    /// A choice on the state, made once and journaled.
    Condition {
        /// The step's name, unique in the workflow.
        name: String,
        /// The test (see [`Condition`]).
        when: Condition,
        /// Run when it holds.
        #[serde(default)]
        then: Vec<Step>,
        /// Run when it does not.
        #[serde(default, rename = "else")]
        otherwise: Vec<Step>,
    },
    /// Steps repeated until `until` holds after an iteration, at most `max_iterations`
    /// times (then the run fails, saying so).
    Loop {
        /// The step's name, unique in the workflow.
        name: String,
        /// The body.
        steps: Vec<Step>,
        /// Checked after each iteration.
        until: Condition,
        /// Required: a loop always has a bound.
        max_iterations: u32,
    },
}

impl Step {
    /// A task step running `task_type` on the whole state, its output kept in the journal.
    pub fn task(name: impl Into<String>, task_type: impl Into<String>) -> TaskStep {
        TaskStep {
            name: name.into(),
            task_type: task_type.into(),
            input: Input::State,
            output_key: None,
            options: TaskOptions::default(),
        }
    }

    /// A map step running `task_type` over the list under `items`.
    pub fn map(
        name: impl Into<String>,
        items: impl Into<String>,
        task_type: impl Into<String>,
    ) -> MapStep {
        MapStep {
            name: name.into(),
            items: items.into(),
            stages: vec![task_type.into()],
            concurrency: default_concurrency(),
            output_key: None,
            reduce: None,
            options: TaskOptions::default(),
        }
    }

    /// The step's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Task(t) => &t.name,
            Self::Map(m) => &m.name,
            Self::Dynamic(d) => &d.name,
            Self::Child(c) => &c.name,
            Self::Sequence { name, .. }
            | Self::Parallel { name, .. }
            | Self::Sleep { name, .. }
            | Self::Condition { name, .. }
            | Self::Loop { name, .. } => name,
        }
    }

    /// The steps directly inside this one.
    pub(crate) fn children(&self) -> Vec<&Step> {
        match self {
            Self::Sequence { steps, .. }
            | Self::Parallel { steps, .. }
            | Self::Loop { steps, .. } => steps.iter().collect(),
            Self::Condition {
                then, otherwise, ..
            } => then.iter().chain(otherwise).collect(),
            Self::Task(_)
            | Self::Map(_)
            | Self::Sleep { .. }
            | Self::Dynamic(_)
            | Self::Child(_) => Vec::new(),
        }
    }

    /// A dynamic step: a task of `task_type` whose output lists the steps that follow.
    pub fn dynamic(name: impl Into<String>, task_type: impl Into<String>) -> DynamicStep {
        DynamicStep {
            name: name.into(),
            task_type: task_type.into(),
            input: Input::State,
            output_key: None,
            max_steps: default_max_steps(),
            options: TaskOptions::default(),
        }
    }

    /// A child run of the registered workflow `workflow`, on the whole state.
    pub fn child(name: impl Into<String>, workflow: impl Into<String>) -> ChildStep {
        ChildStep {
            name: name.into(),
            workflow: workflow.into(),
            input: Input::State,
            output_key: None,
        }
    }
}

impl TaskStep {
    /// Reads its input from `input`.
    pub fn input(mut self, input: Input) -> Self {
        self.input = input;
        self
    }

    /// Reads its input from the state key `key`.
    pub fn input_key(self, key: impl Into<String>) -> Self {
        self.input(Input::Key(key.into()))
    }

    /// Writes its output under `key`.
    pub fn output_key(mut self, key: impl Into<String>) -> Self {
        self.output_key = Some(key.into());
        self
    }

    /// Its task's options.
    pub fn options(mut self, options: TaskOptions) -> Self {
        self.options = options;
        self
    }
}

impl From<TaskStep> for Step {
    fn from(step: TaskStep) -> Self {
        Self::Task(step)
    }
}

impl MapStep {
    /// At most `n` items in flight.
    pub fn concurrency(mut self, n: u32) -> Self {
        self.concurrency = n;
        self
    }

    /// Sends each item's output on through `task_type` (a pipeline stage).
    pub fn then(mut self, task_type: impl Into<String>) -> Self {
        self.stages.push(task_type.into());
        self
    }

    /// Reduces the outputs with `task_type`.
    pub fn reduce(mut self, task_type: impl Into<String>) -> Self {
        self.reduce = Some(task_type.into());
        self
    }

    /// Writes the outputs (or the reduced value) under `key`.
    pub fn output_key(mut self, key: impl Into<String>) -> Self {
        self.output_key = Some(key.into());
        self
    }

    /// Each item task's options.
    pub fn options(mut self, options: TaskOptions) -> Self {
        self.options = options;
        self
    }
}

impl From<MapStep> for Step {
    fn from(step: MapStep) -> Self {
        Self::Map(step)
    }
}

impl DynamicStep {
    /// Reads its input from `input`.
    pub fn input(mut self, input: Input) -> Self {
        self.input = input;
        self
    }

    /// Reads its input from the state key `key`.
    pub fn input_key(self, key: impl Into<String>) -> Self {
        self.input(Input::Key(key.into()))
    }

    /// Writes its output under `key`.
    pub fn output_key(mut self, key: impl Into<String>) -> Self {
        self.output_key = Some(key.into());
        self
    }

    /// Adds at most `n` steps.
    pub fn max_steps(mut self, n: u32) -> Self {
        self.max_steps = n;
        self
    }

    /// Its task's options.
    pub fn options(mut self, options: TaskOptions) -> Self {
        self.options = options;
        self
    }
}

impl From<DynamicStep> for Step {
    fn from(step: DynamicStep) -> Self {
        Self::Dynamic(step)
    }
}

impl ChildStep {
    /// The child's input.
    pub fn input(mut self, input: Input) -> Self {
        self.input = input;
        self
    }

    /// Writes the child's final state under `key`.
    pub fn output_key(mut self, key: impl Into<String>) -> Self {
        self.output_key = Some(key.into());
        self
    }
}

impl From<ChildStep> for Step {
    fn from(step: ChildStep) -> Self {
        Self::Child(step)
    }
}

/// The serializable part of a workflow: what is stored with each version and what the
/// API takes as JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowDef {
    /// The workflow's name.
    pub name: String,
    /// An explicit version; without one the version is a hash of the definition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// A description for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The steps, run in order.
    pub steps: Vec<Step>,
    /// When a step's outcome must be durable ([`Checkpoint`]).
    #[serde(default, skip_serializing_if = "Checkpoint::is_default")]
    pub checkpoint: Checkpoint,
    /// How long a run may take (ms, up to a year) before it fails as timed out; a run's
    /// own timeout ([`RunOptions`](super::RunOptions)) replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// A function computing a step's input from the run's state.
pub type InputFn = Arc<dyn Fn(&BTreeMap<String, Value>) -> Value + Send + Sync>;

/// A workflow built in Rust: its definition plus the input functions it names.
///
/// ```
/// use wrangle::workflow::{Input, Step, Workflow};
///
/// let wf = Workflow::new("data-pipeline")
///     .step(Step::task("extract", "extract").input_key("source").output_key("data"))
///     .parallel("analyses", [
///         Step::task("sentiment", "sentiment").input_key("data").output_key("sentiment"),
///         Step::task("entities", "entities").input_key("data").output_key("entities"),
///     ])
///     .step(Step::task("load", "load").input(Input::Keys(vec![
///         "sentiment".into(), "entities".into(),
///     ])));
/// assert_eq!(wf.definition().steps.len(), 3);
/// ```
#[derive(Clone)]
pub struct Workflow {
    pub(crate) def: WorkflowDef,
    pub(crate) fns: HashMap<String, InputFn>,
}

impl fmt::Debug for Workflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workflow")
            .field("def", &self.def)
            .field("fns", &self.fns.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Workflow {
    /// An empty workflow called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self::from_def(WorkflowDef {
            name: name.into(),
            version: None,
            description: String::new(),
            steps: Vec::new(),
            checkpoint: Checkpoint::default(),
            timeout_ms: None,
        })
    }

    /// A workflow from its JSON-able definition (no input functions).
    pub fn from_def(def: WorkflowDef) -> Self {
        Self {
            def,
            fns: HashMap::new(),
        }
    }

    /// Pins the version (otherwise a hash of the definition).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.def.version = Some(version.into());
        self
    }

    /// A description for people.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.def.description = text.into();
        self
    }

    /// When each step's outcome must be durable ([`Checkpoint::BeforeNext`] by default).
    pub fn checkpoint(mut self, checkpoint: Checkpoint) -> Self {
        self.def.checkpoint = checkpoint;
        self
    }

    /// Fails a run that has not ended `timeout` after it started (or was retried), unless
    /// the run was started with a timeout of its own.
    pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
        self.def.timeout_ms = Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// Appends a step.
    pub fn step(mut self, step: impl Into<Step>) -> Self {
        self.def.steps.push(step.into());
        self
    }

    /// Appends steps that run at once; the run goes on when all are done.
    pub fn parallel(
        self,
        name: impl Into<String>,
        steps: impl IntoIterator<Item = impl Into<Step>>,
    ) -> Self {
        self.step(Step::Parallel {
            name: name.into(),
            steps: steps.into_iter().map(Into::into).collect(),
        })
    }

    /// Appends a durable timer.
    pub fn sleep(self, name: impl Into<String>, duration: std::time::Duration) -> Self {
        self.step(Step::Sleep {
            name: name.into(),
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Registers `f` as the input function `name`, for steps whose input is
    /// `Input::Fn(name)`. It reads the state and must not have side effects: it runs again
    /// when a run recovers.
    pub fn input_fn(
        mut self,
        name: impl Into<String>,
        f: impl Fn(&BTreeMap<String, Value>) -> Value + Send + Sync + 'static,
    ) -> Self {
        self.fns.insert(name.into(), Arc::new(f));
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.def.name
    }

    /// Its serializable definition.
    pub fn definition(&self) -> &WorkflowDef {
        &self.def
    }
}
