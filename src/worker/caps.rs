//! What a worker offers the queue: the task types it has handlers for, and its labels.

use std::collections::HashSet;
use std::sync::Arc;

/// What a worker offers: the task types it has handlers for, and its labels.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Capabilities {
    /// Task types with a handler.
    pub task_types: HashSet<Arc<str>>,
    /// Labels (`gpu`, `region=eu`).
    pub labels: Vec<String>,
}

impl Capabilities {
    /// True when the worker has a handler for `task_type`.
    pub fn serves(&self, task_type: &str) -> bool {
        self.task_types.contains(task_type)
    }

    /// True when every required label is met: `name` is met by `name` or `name=<any>`,
    /// `name=value` only by itself.
    pub fn has_labels(&self, required: &[String]) -> bool {
        labels_meet(&self.labels, required)
    }
}

/// True when labels `have` meet every label in `required`: `name` is met by `name` or
/// `name=<any>`, `name=value` only by itself. The one rule for workers, nodes and node
/// groups alike.
pub(crate) fn labels_meet(have: &[String], required: &[String]) -> bool {
    required.iter().all(|need| {
        have.iter().any(|have| {
            have == need
                || (!need.contains('=') && have.split_once('=').is_some_and(|(k, _)| k == need))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(labels: &[&str]) -> Capabilities {
        Capabilities {
            task_types: HashSet::new(),
            labels: labels.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn bare_label_matches_any_value_but_valued_label_must_be_exact() {
        let w = caps(&["gpu=a100", "region=eu"]);
        assert!(w.has_labels(&["gpu".into()]));
        assert!(w.has_labels(&["gpu=a100".into(), "region".into()]));
        assert!(!w.has_labels(&["gpu=h100".into()]));
        assert!(!w.has_labels(&["fast".into()]));
        assert!(caps(&[]).has_labels(&[]));
        assert!(!caps(&["gpu"]).has_labels(&["gpu=a100".into()]));
    }
}
