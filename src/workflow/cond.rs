//! The one expression form of conditions and loop exits: a state value, an operator and
//! (for comparisons) a value. `{"key": "review.score", "op": "gt", "value": 0.8}` reads
//! `state["review"]["score"]`; `{"key": "done", "op": "truthy"}` needs no value. Dotted
//! keys walk objects; a missing key reads as `null`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How a state value is tested.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Equal to `value` (JSON equality; numbers compare as numbers).
    Eq,
    /// Not equal to `value`.
    Ne,
    /// Greater than `value` (numbers, or strings by their bytes).
    Gt,
    /// Greater than or equal to `value`.
    Ge,
    /// Less than `value`.
    Lt,
    /// Less than or equal to `value`.
    Le,
    /// The key is present and not `null`.
    Exists,
    /// Not `null`, `false`, `0`, `""`, `[]` or `{}`.
    Truthy,
    /// An array or string containing `value` (a string `value` in a string: a substring).
    Contains,
}

/// A test on the run's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// The state key, dotted to reach inside objects.
    pub key: String,
    /// The operator.
    pub op: Op,
    /// The value compared with (required by every operator but `exists` and `truthy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

impl Condition {
    /// `key op value`.
    pub fn new(key: impl Into<String>, op: Op, value: impl Into<Option<Value>>) -> Self {
        Self {
            key: key.into(),
            op,
            value: value.into(),
        }
    }

    /// Why this condition cannot be evaluated, if it cannot.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.key.is_empty() || self.key.split('.').any(str::is_empty) {
            return Err(format!("key {:?} has an empty part", self.key));
        }
        let needs_value = !matches!(self.op, Op::Exists | Op::Truthy);
        match (needs_value, &self.value) {
            (true, None) => Err(format!("operator {:?} needs a value", self.op)),
            (false, Some(_)) => Err(format!("operator {:?} takes no value", self.op)),
            _ => Ok(()),
        }
    }

    /// Whether it holds on `state`.
    pub(crate) fn holds(&self, state: &BTreeMap<String, Value>) -> bool {
        let mut parts = self.key.split('.');
        let first = parts.next().unwrap_or_default();
        let mut current = state.get(first);
        for part in parts {
            current = current.and_then(|v| v.get(part));
        }
        let found = current.unwrap_or(&Value::Null);
        let value = self.value.as_ref().unwrap_or(&Value::Null);
        use std::cmp::Ordering::*;
        match self.op {
            Op::Eq => equal(found, value),
            Op::Ne => !equal(found, value),
            Op::Gt => order(found, value) == Some(Greater),
            Op::Ge => matches!(order(found, value), Some(Greater | Equal)),
            Op::Lt => order(found, value) == Some(Less),
            Op::Le => matches!(order(found, value), Some(Less | Equal)),
            Op::Exists => !found.is_null(),
            Op::Truthy => truthy(found),
            Op::Contains => match (found, value) {
                (Value::Array(items), v) => items.iter().any(|i| equal(i, v)),
                (Value::String(s), Value::String(sub)) => s.contains(sub.as_str()),
                _ => false,
            },
        }
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn order(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state(v: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn operators_read_dotted_keys() {
        let s = state(json!({"review": {"score": 0.9, "tags": ["ok"]}, "n": 3, "name": "ada"}));
        let holds = |key: &str, op, v: Option<Value>| Condition::new(key, op, v).holds(&s);
        assert!(holds("review.score", Op::Gt, Some(json!(0.8))));
        assert!(!holds("review.score", Op::Lt, Some(json!(0.8))));
        assert!(holds("n", Op::Eq, Some(json!(3.0))));
        assert!(holds("n", Op::Ge, Some(json!(3))));
        assert!(holds("name", Op::Contains, Some(json!("da"))));
        assert!(holds("review.tags", Op::Contains, Some(json!("ok"))));
        assert!(holds("review", Op::Exists, None));
        assert!(!holds("review.missing", Op::Exists, None));
        assert!(!holds("missing.deeper", Op::Truthy, None));
        assert!(holds("name", Op::Ne, Some(json!("bob"))));
        // Incomparable values never order.
        assert!(!holds("name", Op::Gt, Some(json!(1))));
        assert!(!holds("name", Op::Le, Some(json!(1))));
    }

    #[test]
    fn check_names_what_is_wrong() {
        assert!(Condition::new("a..b", Op::Truthy, None)
            .check()
            .unwrap_err()
            .contains("empty part"));
        assert!(Condition::new("a", Op::Gt, None)
            .check()
            .unwrap_err()
            .contains("needs a value"));
        assert!(Condition::new("a", Op::Exists, Some(json!(1)))
            .check()
            .unwrap_err()
            .contains("takes no value"));
        assert!(Condition::new("a", Op::Eq, Some(json!(1))).check().is_ok());
    }
}
