//! Checks a definition before anything of it runs, and names its version.

use std::collections::HashSet;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::def::{Input, Step, Workflow};
use super::WorkflowError;

/// Longest step or workflow name: it goes into step keys and idempotency keys.
pub const MAX_NAME_LEN: usize = 64;
/// Most steps one definition may declare (a map's items are not counted: they come from
/// the state at run time).
pub const MAX_STEPS: usize = 10_000;
/// Deepest nesting of sequences, branches and loops.
pub const MAX_DEPTH: usize = 32;
/// Most items of a map in flight at once.
pub const MAX_CONCURRENCY: u32 = 10_000;
/// Most iterations a loop may allow.
pub const MAX_ITERATIONS: u32 = 100_000;
/// Longest durable timer: 365 days.
pub const MAX_SLEEP: Duration = Duration::from_secs(365 * 24 * 3600);

/// Checks `wf`. `serves(task_type)` says whether something (this coordinator, an online
/// node, a launchable group) runs a task type. Errors name the step at fault.
pub(crate) fn validate(wf: &Workflow, serves: &dyn Fn(&str) -> bool) -> Result<(), WorkflowError> {
    let def = &wf.def;
    check_name(&def.name, &def.name)?;
    if let Some(v) = &def.version {
        if v.is_empty() || v.len() > MAX_NAME_LEN || v.chars().any(char::is_control) {
            return Err(WorkflowError::invalid(
                &def.name,
                format!("version must be 1 to {MAX_NAME_LEN} printable characters"),
            ));
        }
    }
    if let Some(ms) = def.timeout_ms {
        super::options::check_timeout("timeout_ms", std::time::Duration::from_millis(ms))?;
    }
    if def.steps.is_empty() {
        return Err(WorkflowError::invalid(
            &def.name,
            "a workflow needs at least one step",
        ));
    }
    let mut seen = HashSet::new();
    for step in &def.steps {
        check_step(wf, step, 1, &mut seen, serves)?;
    }
    Ok(())
}

fn check_name(step: &str, name: &str) -> Result<(), WorkflowError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(WorkflowError::invalid(
            step,
            format!("names are 1 to {MAX_NAME_LEN} characters of A-Z a-z 0-9 _ - ."),
        ))
    }
}

fn check_step(
    wf: &Workflow,
    step: &Step,
    depth: usize,
    seen: &mut HashSet<String>,
    serves: &dyn Fn(&str) -> bool,
) -> Result<(), WorkflowError> {
    let name = step.name();
    check_name(name, name)?;
    if !seen.insert(name.to_string()) {
        return Err(WorkflowError::invalid(
            name,
            "duplicate step name (names are unique in a workflow, so no step can refer back to another)",
        ));
    }
    if seen.len() > MAX_STEPS {
        return Err(WorkflowError::invalid(
            name,
            format!("more than {MAX_STEPS} steps"),
        ));
    }
    if depth > MAX_DEPTH {
        return Err(WorkflowError::invalid(
            name,
            format!("nested deeper than {MAX_DEPTH}"),
        ));
    }
    let bad = |reason: String| WorkflowError::invalid(name, reason);
    let task_type = |t: &str| {
        if serves(t) {
            Ok(())
        } else {
            Err(bad(format!(
                "task type {t:?} is served by no handler, online node or launchable group"
            )))
        }
    };
    let options = |o: &crate::task::TaskOptions| o.validate().map_err(|e| bad(e.to_string()));
    match step {
        Step::Task(t) => {
            task_type(&t.task_type)?;
            options(&t.options)?;
            check_input(wf, name, &t.input)?;
            check_key(name, t.output_key.as_deref())?;
        }
        Step::Map(m) => {
            if m.stages.is_empty() {
                return Err(bad("a map needs at least one stage".into()));
            }
            for t in m.stages.iter().chain(&m.reduce) {
                task_type(t)?;
            }
            if m.concurrency == 0 || m.concurrency > MAX_CONCURRENCY {
                return Err(bad(format!("concurrency must be 1 to {MAX_CONCURRENCY}")));
            }
            check_key(name, Some(&m.items))?;
            check_key(name, m.output_key.as_deref())?;
            options(&m.options)?;
        }
        Step::Dynamic(d) => {
            task_type(&d.task_type)?;
            options(&d.options)?;
            check_input(wf, name, &d.input)?;
            check_key(name, d.output_key.as_deref())?;
            if d.max_steps == 0 || d.max_steps as usize > MAX_STEPS {
                return Err(bad(format!("max_steps must be 1 to {MAX_STEPS}")));
            }
        }
        Step::Child(c) => {
            check_name(name, &c.workflow)?;
            if c.workflow == def_name(wf) {
                return Err(bad(
                    "a workflow cannot run itself as a child (its runs would nest without end)"
                        .into(),
                ));
            }
            check_input(wf, name, &c.input)?;
            check_key(name, c.output_key.as_deref())?;
        }
        Step::Sleep { duration_ms, .. } => {
            if Duration::from_millis(*duration_ms) > MAX_SLEEP {
                return Err(bad("a sleep lasts at most 365 days".into()));
            }
        }
        Step::Condition { when, .. } => when.check().map_err(bad)?,
        Step::Loop {
            until,
            max_iterations,
            steps,
            ..
        } => {
            until.check().map_err(bad)?;
            if *max_iterations == 0 || *max_iterations > MAX_ITERATIONS {
                return Err(bad(format!("max_iterations must be 1 to {MAX_ITERATIONS}")));
            }
            if steps.is_empty() {
                return Err(bad("a loop needs at least one step".into()));
            }
        }
        Step::Sequence { steps, .. } | Step::Parallel { steps, .. } => {
            if steps.is_empty() {
                return Err(bad("needs at least one step".into()));
            }
        }
    }
    for child in step.children() {
        check_step(wf, child, depth + 1, seen, serves)?;
    }
    Ok(())
}

fn def_name(wf: &Workflow) -> &str {
    &wf.def.name
}

/// Checks the steps a dynamic step's task returned (`value`, already its list) and reads
/// them: the same checks as a definition's, at most `max_steps` of them, nested ones
/// included, and no input functions. Task types are not checked here: one that nothing
/// serves fails its step when the queue refuses it, as the journal will say again on
/// replay.
pub(crate) fn added_steps(value: &serde_json::Value, max_steps: u32) -> Result<Vec<Step>, String> {
    let steps: Vec<Step> = serde_json::from_value(value.clone())
        .map_err(|e| format!("its output's steps do not parse: {e}"))?;
    let wf = Workflow::new("added");
    let mut seen = HashSet::new();
    for step in &steps {
        check_step(&wf, step, 1, &mut seen, &|_| true).map_err(|e| e.to_string())?;
    }
    if seen.len() > max_steps as usize {
        return Err(format!(
            "it added {} steps, more than its max_steps ({max_steps})",
            seen.len()
        ));
    }
    Ok(steps)
}

/// The workflows `steps` run as children.
pub(crate) fn child_workflows<'a>(
    steps: impl IntoIterator<Item = &'a Step>,
    out: &mut Vec<(String, String)>,
) {
    for s in steps {
        if let Step::Child(c) = s {
            out.push((c.name.clone(), c.workflow.clone()));
        }
        child_workflows(s.children(), out);
    }
}

fn check_key(step: &str, key: Option<&str>) -> Result<(), WorkflowError> {
    match key {
        Some(k) if k.is_empty() || k.len() > 256 => Err(WorkflowError::invalid(
            step,
            "state keys are 1 to 256 characters",
        )),
        _ => Ok(()),
    }
}

fn check_input(wf: &Workflow, step: &str, input: &Input) -> Result<(), WorkflowError> {
    match input {
        Input::Key(k) => check_key(step, Some(k)),
        Input::Keys(keys) => keys.iter().try_for_each(|k| check_key(step, Some(k))),
        Input::Fn(f) if !wf.fns.contains_key(f) => Err(WorkflowError::invalid(
            step,
            format!("input function {f:?} is not registered with this workflow (JSON definitions cannot name functions)"),
        )),
        Input::Fn(_) | Input::State | Input::Value(_) => Ok(()),
    }
}

/// The definition's version: its explicit one, else the first 16 hex digits of the SHA-256
/// of its JSON (input functions count by name).
pub(crate) fn version_of(wf: &Workflow) -> String {
    if let Some(v) = &wf.def.version {
        return v.clone();
    }
    let json = serde_json::to_vec(&wf.def).unwrap_or_default();
    let digest = Sha256::digest(&json);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::cond::{Condition, Op};
    use crate::workflow::def::WorkflowDef;
    use serde_json::json;

    fn serves(t: &str) -> bool {
        t != "nobody"
    }

    fn json_wf(v: serde_json::Value) -> Result<(), WorkflowError> {
        let def: WorkflowDef = serde_json::from_value(v).expect("parses");
        validate(&Workflow::from_def(def), &serves)
    }

    fn step_of(e: WorkflowError) -> String {
        match e {
            WorkflowError::Invalid { step, .. } => step,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn bad_definitions_name_the_step() {
        let dup = json!({"name": "w", "steps": [
            {"kind": "task", "name": "a", "task_type": "t"},
            {"kind": "parallel", "name": "p", "steps": [{"kind": "task", "name": "a", "task_type": "t"}]}
        ]});
        assert_eq!(step_of(json_wf(dup).unwrap_err()), "a");
        let unserved =
            json!({"name": "w", "steps": [{"kind": "task", "name": "x", "task_type": "nobody"}]});
        assert_eq!(step_of(json_wf(unserved).unwrap_err()), "x");
        let unbounded = json!({"name": "w", "steps": [{"kind": "loop", "name": "l", "max_iterations": 0,
            "until": {"key": "done", "op": "truthy"}, "steps": [{"kind": "task", "name": "b", "task_type": "t"}]}]});
        assert_eq!(step_of(json_wf(unbounded).unwrap_err()), "l");
        let bad_cond = json!({"name": "w", "steps": [{"kind": "condition", "name": "c",
            "when": {"key": "x", "op": "gt"}, "then": [{"kind": "task", "name": "b", "task_type": "t"}]}]});
        let e = json_wf(bad_cond).unwrap_err();
        assert!(e.to_string().contains("needs a value"), "{e}");
        let func = json!({"name": "w", "steps": [{"kind": "task", "name": "f", "task_type": "t", "input": {"fn": "g"}}]});
        assert_eq!(step_of(json_wf(func).unwrap_err()), "f");
        let empty = json!({"name": "w", "steps": []});
        assert_eq!(step_of(json_wf(empty).unwrap_err()), "w");
        let bad_name =
            json!({"name": "w", "steps": [{"kind": "task", "name": "a b", "task_type": "t"}]});
        assert_eq!(step_of(json_wf(bad_name).unwrap_err()), "a b");
        // A loop with no bound does not parse at all.
        let no_bound: Result<WorkflowDef, _> =
            serde_json::from_value(json!({"name": "w", "steps": [
            {"kind": "loop", "name": "l", "until": {"key": "d", "op": "truthy"}, "steps": []}]}));
        assert!(no_bound.unwrap_err().to_string().contains("max_iterations"));
    }

    #[test]
    fn versions_follow_the_definition() {
        let a = Workflow::new("w").step(crate::workflow::Step::task("a", "t"));
        let b = Workflow::new("w").step(crate::workflow::Step::task("a", "u"));
        assert_eq!(version_of(&a), version_of(&a.clone()));
        assert_ne!(version_of(&a), version_of(&b));
        assert_eq!(version_of(&a.clone().version("v2")), "v2");
        assert!(validate(&a, &serves).is_ok());
        let cond = Workflow::new("w").step(crate::workflow::Step::Condition {
            name: "c".into(),
            when: Condition::new("x", Op::Truthy, None),
            then: vec![crate::workflow::Step::task("a", "t").into()],
            otherwise: vec![],
        });
        assert!(validate(&cond, &serves).is_ok());
    }
}
