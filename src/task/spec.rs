use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Payload, TaskPriority};
use crate::error::Error;

/// Per-task options. Every field is optional; unset ones take the queue's or the worker's
/// defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct TaskOptions {
    /// Priority (default `Normal`).
    pub priority: TaskPriority,
    /// How long one attempt may run (default: the worker's `task_timeout`).
    #[serde(with = "crate::util::opt_duration_ms", rename = "timeout_ms")]
    #[schema(value_type = Option<u64>)]
    pub timeout: Option<Duration>,
    /// How many times a failed or timed-out attempt is retried (default: the queue's
    /// `default_retries`, 3).
    pub retries: Option<u32>,
    /// Labels a worker must all have to take this task (`gpu` matches a worker labelled
    /// `gpu` or `gpu=<anything>`; `gpu=a100` matches only `gpu=a100`).
    pub labels: Vec<String>,
    /// Free-form metadata, stored and shown with the task.
    pub metadata: BTreeMap<String, String>,
    /// A submit whose key is already known returns the existing task instead of a new one.
    pub idempotency_key: Option<String>,
    /// Do not run before this much time has passed since submit.
    #[serde(with = "crate::util::opt_duration_ms", rename = "delay_ms")]
    #[schema(value_type = Option<u64>)]
    pub delay: Option<Duration>,
    /// The trace its spans and logs belong to (32 hex digits); the task's own id when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, pattern = "^[0-9a-f]{32}$")]
    pub trace_id: Option<super::TraceId>,
    /// Tasks with the same key run on one worker: the first of them leased binds the key to
    /// its worker, and the later ones go to that worker while it is attached (waiting for it
    /// up to the queue's `affinity_wait` when it is busy), else to whoever the pool's
    /// routing picks, which takes the binding over. At most
    /// [`MAX_AFFINITY_KEY_BYTES`](Self::MAX_AFFINITY_KEY_BYTES) bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256)]
    pub affinity_key: Option<String>,
}

impl TaskOptions {
    /// Most retries a task may ask for: 100. More would keep a failing task cycling for
    /// days; a larger budget is a re-queue away.
    pub const MAX_RETRIES: u32 = 100;
    /// Longest `timeout` of one attempt: 30 days (deadlines past it overflow clocks).
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);
    /// Longest `delay` before a first run: 365 days (a delay of 2^63 ms and more would wrap
    /// to "now" once stored as a signed timestamp).
    pub const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);
    /// Longest `affinity_key`: 256 bytes (the queue keeps a map of the keys it has bound).
    pub const MAX_AFFINITY_KEY_BYTES: usize = 256;

    /// Checks the options for values no task can run with, and for values past the
    /// documented maximums ([`Self::MAX_RETRIES`], [`Self::MAX_TIMEOUT`],
    /// [`Self::MAX_DELAY`]).
    pub fn validate(&self) -> Result<(), Error> {
        if self.timeout == Some(Duration::ZERO) {
            return Err(Error::invalid("timeout", "must be greater than zero"));
        }
        if self.timeout.is_some_and(|t| t > Self::MAX_TIMEOUT) {
            return Err(Error::invalid(
                "timeout",
                format!("at most {} ms (30 days)", Self::MAX_TIMEOUT.as_millis()),
            ));
        }
        if self.retries.is_some_and(|r| r > Self::MAX_RETRIES) {
            return Err(Error::invalid(
                "retries",
                format!("at most {}", Self::MAX_RETRIES),
            ));
        }
        if self.delay.is_some_and(|d| d > Self::MAX_DELAY) {
            return Err(Error::invalid(
                "delay",
                format!("at most {} ms (365 days)", Self::MAX_DELAY.as_millis()),
            ));
        }
        if let Some(label) = self.labels.iter().find(|l| l.trim().is_empty()) {
            return Err(Error::invalid(
                "labels",
                format!("label `{label}` is empty; expected `name` or `name=value`"),
            ));
        }
        if self.idempotency_key.as_deref() == Some("") {
            return Err(Error::invalid(
                "idempotency_key",
                "must not be empty when given",
            ));
        }
        if let Some(key) = &self.affinity_key {
            if key.is_empty() {
                return Err(Error::invalid(
                    "affinity_key",
                    "must not be empty when given",
                ));
            }
            if key.len() > Self::MAX_AFFINITY_KEY_BYTES {
                return Err(Error::invalid(
                    "affinity_key",
                    format!(
                        "is {} bytes; at most {}",
                        key.len(),
                        Self::MAX_AFFINITY_KEY_BYTES
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A task to submit: its type, its input and its options.
///
/// ```
/// use std::time::Duration;
/// use wrangle::{TaskPriority, TaskSpec};
///
/// let spec = TaskSpec::new("summarize", &serde_json::json!({"text": "..."}))
///     .unwrap()
///     .priority(TaskPriority::High)
///     .timeout(Duration::from_secs(60))
///     .retries(2)
///     .label("gpu");
/// assert_eq!(spec.task_type(), "summarize");
/// ```
#[derive(Clone, Debug)]
pub struct TaskSpec {
    pub(crate) task_type: Arc<str>,
    pub(crate) payload: Payload,
    pub(crate) options: TaskOptions,
}

impl TaskSpec {
    /// A task of `task_type` whose input is `input` serialized to JSON.
    pub fn new<T: Serialize + ?Sized>(
        task_type: impl Into<Arc<str>>,
        input: &T,
    ) -> Result<Self, Error> {
        let payload =
            Payload::encode(input).map_err(|e| Error::invalid("payload", e.to_string()))?;
        Ok(Self::from_payload(task_type, payload))
    }

    /// A task whose input is already a payload.
    pub fn from_payload(task_type: impl Into<Arc<str>>, payload: Payload) -> Self {
        Self {
            task_type: task_type.into(),
            payload,
            options: TaskOptions::default(),
        }
    }

    /// Replaces all options at once.
    pub fn with_options(mut self, options: TaskOptions) -> Self {
        self.options = options;
        self
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: TaskPriority) -> Self {
        self.options.priority = priority;
        self
    }

    /// Sets how long one attempt may run.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }

    /// Sets how many retries a failing task gets.
    pub fn retries(mut self, retries: u32) -> Self {
        self.options.retries = Some(retries);
        self
    }

    /// Adds a label the worker must have.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.options.labels.push(label.into());
        self
    }

    /// Adds a metadata entry.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.metadata.insert(key.into(), value.into());
        self
    }

    /// Puts the task in this trace (its spans and logs carry the id); by default a task's
    /// trace id is its own id.
    pub fn trace_id(mut self, trace: super::TraceId) -> Self {
        self.options.trace_id = Some(trace);
        self
    }

    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.options.idempotency_key = Some(key.into());
        self
    }

    /// Keeps this task on the worker that took the first task with the same key (see
    /// [`TaskOptions::affinity_key`]).
    ///
    /// ```
    /// use wrangle::TaskSpec;
    ///
    /// let turn = TaskSpec::new("chat", &"hello").unwrap().affinity_key("conversation-42");
    /// assert_eq!(turn.options().affinity_key.as_deref(), Some("conversation-42"));
    /// ```
    pub fn affinity_key(mut self, key: impl Into<String>) -> Self {
        self.options.affinity_key = Some(key.into());
        self
    }

    /// Delays the first run.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.options.delay = Some(delay);
        self
    }

    /// The task type.
    pub fn task_type(&self) -> &str {
        &self.task_type
    }

    /// The input.
    pub fn payload(&self) -> &Payload {
        &self.payload
    }

    /// The options.
    pub fn options(&self) -> &TaskOptions {
        &self.options
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.task_type.trim().is_empty() {
            return Err(Error::invalid("task_type", "must not be empty"));
        }
        self.options.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_past_their_maximums_are_refused_and_name_the_field() {
        let at_max = TaskOptions {
            timeout: Some(TaskOptions::MAX_TIMEOUT),
            retries: Some(TaskOptions::MAX_RETRIES),
            delay: Some(TaskOptions::MAX_DELAY),
            affinity_key: Some("k".repeat(TaskOptions::MAX_AFFINITY_KEY_BYTES)),
            ..TaskOptions::default()
        };
        at_max.validate().unwrap();
        let cases = [
            (
                "timeout",
                TaskOptions {
                    timeout: Some(Duration::from_millis(u64::MAX)),
                    ..TaskOptions::default()
                },
            ),
            (
                "retries",
                TaskOptions {
                    retries: Some(u32::MAX),
                    ..TaskOptions::default()
                },
            ),
            (
                "delay",
                TaskOptions {
                    delay: Some(Duration::from_millis(1 << 63)),
                    ..TaskOptions::default()
                },
            ),
            (
                "affinity_key",
                TaskOptions {
                    affinity_key: Some("k".repeat(TaskOptions::MAX_AFFINITY_KEY_BYTES + 1)),
                    ..TaskOptions::default()
                },
            ),
            (
                "affinity_key",
                TaskOptions {
                    affinity_key: Some(String::new()),
                    ..TaskOptions::default()
                },
            ),
        ];
        for (field, options) in cases {
            match options.validate() {
                Err(Error::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }
}
