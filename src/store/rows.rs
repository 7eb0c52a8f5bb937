//! What the queue writes to the store, and what it reads back: plain rows, free of any
//! database type, so the queue core builds them without knowing the backend.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::task::{Attempt, Payload, TaskId, TaskOptions, TaskStatus};
use crate::util::system_time_ms;

/// Unix milliseconds, as stored.
pub(crate) fn ms(t: SystemTime) -> i64 {
    system_time_ms::to_ms(t) as i64
}

/// A stored time back as a `SystemTime` (times before 1970 come back as 1970).
pub(crate) fn time(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// A task as first written: what never changes after submit.
#[derive(Clone, Debug)]
pub(crate) struct NewTask {
    pub(crate) id: TaskId,
    pub(crate) task_type: Arc<str>,
    pub(crate) payload: Payload,
    /// The options as JSON (the same shape the HTTP API takes).
    pub(crate) options: String,
    pub(crate) priority: i64,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) created_at_ms: i64,
}

impl NewTask {
    pub(crate) fn new(
        id: TaskId,
        task_type: Arc<str>,
        payload: Payload,
        options: &TaskOptions,
        created_at: SystemTime,
    ) -> Self {
        Self {
            id,
            task_type,
            payload,
            options: serde_json::to_string(options).expect("task options serialize"),
            priority: i64::from(options.priority.level()),
            idempotency_key: options.idempotency_key.clone(),
            created_at_ms: ms(created_at),
        }
    }
}

/// What changes over a task's life. The latest one for a task wins.
#[derive(Clone, Debug)]
pub(crate) struct TaskState {
    pub(crate) id: TaskId,
    pub(crate) status: TaskStatus,
    pub(crate) retries_used: i64,
    pub(crate) lease_losses: i64,
    /// When a pending task becomes runnable.
    pub(crate) ready_at_ms: Option<i64>,
    pub(crate) finished_at_ms: Option<i64>,
    pub(crate) result: Option<Payload>,
    pub(crate) error: Option<String>,
    /// Its place in the dead-letter list, while it is there.
    pub(crate) dead_seq: Option<i64>,
}

/// One attempt, written when it starts and again when it ends.
#[derive(Clone, Debug)]
pub(crate) struct AttemptRow {
    pub(crate) task_id: TaskId,
    pub(crate) number: i64,
    pub(crate) worker: Arc<str>,
    pub(crate) node: Arc<str>,
    pub(crate) started_at_ms: i64,
    pub(crate) finished_at_ms: Option<i64>,
    pub(crate) outcome: Option<String>,
    pub(crate) error: Option<String>,
}

impl AttemptRow {
    pub(crate) fn new(task_id: TaskId, node: Arc<str>, a: &Attempt) -> Self {
        Self {
            task_id,
            number: i64::from(a.number),
            worker: a.worker.clone(),
            node,
            started_at_ms: ms(a.started_at),
            finished_at_ms: a.finished_at.map(ms),
            outcome: a.outcome.as_deref().map(str::to_string),
            error: a.error.clone(),
        }
    }

    pub(crate) fn into_attempt(self) -> Attempt {
        Attempt {
            number: self.number.clamp(0, i64::from(u32::MAX)) as u32,
            worker: self.worker,
            started_at: time(self.started_at_ms),
            finished_at: self.finished_at_ms.map(time),
            outcome: self.outcome.map(Into::into),
            error: self.error,
        }
    }
}

/// A worker's row in the registry.
#[derive(Clone, Debug)]
pub(crate) struct WorkerRow {
    pub(crate) id: Arc<str>,
    pub(crate) node: Arc<str>,
    /// Labels as a JSON array.
    pub(crate) labels: String,
    /// Task types as a JSON array.
    pub(crate) task_types: String,
    /// `active`, or `deregistered` once it is gone.
    pub(crate) status: &'static str,
    pub(crate) at_ms: i64,
}

/// A node's row in the registry.
#[derive(Clone, Debug)]
pub(crate) struct NodeRow {
    pub(crate) id: Arc<str>,
    pub(crate) address: Option<String>,
    /// Labels as a JSON array.
    pub(crate) labels: String,
    /// `active`, or `deregistered` once it is gone.
    pub(crate) status: &'static str,
    pub(crate) at_ms: i64,
}

/// One change for the store, as the queue makes it.
#[derive(Clone, Debug)]
pub(crate) enum StoreOp {
    Insert(NewTask),
    State(TaskState),
    Attempt(AttemptRow),
    Worker(WorkerRow),
    Node(NodeRow),
    /// Workers seen alive at this time.
    Heartbeat(Vec<Arc<str>>, i64),
}

/// A task read back from the store. Columns that may have stopped decoding are kept raw, so
/// one bad row is reported on its own instead of failing the whole load.
#[derive(Debug)]
pub(crate) struct StoredTask {
    pub(crate) id: TaskId,
    pub(crate) task_type: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) options: String,
    pub(crate) status: String,
    pub(crate) retries_used: i64,
    pub(crate) lease_losses: i64,
    pub(crate) created_at_ms: i64,
    pub(crate) ready_at_ms: Option<i64>,
    pub(crate) finished_at_ms: Option<i64>,
    pub(crate) result: Option<Vec<u8>>,
    pub(crate) error: Option<String>,
    pub(crate) dead_seq: Option<i64>,
    pub(crate) attempts: Vec<AttemptRow>,
}

/// A stored task, decoded.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) id: TaskId,
    pub(crate) task_type: Arc<str>,
    pub(crate) payload: Payload,
    pub(crate) options: TaskOptions,
    pub(crate) status: TaskStatus,
    pub(crate) retries_used: u32,
    pub(crate) lease_losses: u32,
    pub(crate) created_at: SystemTime,
    pub(crate) ready_at: Option<SystemTime>,
    pub(crate) finished_at: Option<SystemTime>,
    pub(crate) result: Option<Payload>,
    pub(crate) error: Option<String>,
    pub(crate) dead_seq: Option<i64>,
    pub(crate) attempts: Vec<Attempt>,
}

impl StoredTask {
    /// Decodes the row; the error names the column that no longer decodes.
    pub(crate) fn decode(self) -> Result<Recovered, String> {
        let payload = Payload::from_json_bytes(self.payload)
            .map_err(|e| format!("payload is not valid JSON: {e}"))?;
        let options: TaskOptions = serde_json::from_str(&self.options)
            .map_err(|e| format!("options do not decode: {e}"))?;
        let status: TaskStatus = self.status.parse().map_err(|e| format!("status: {e}"))?;
        let result = match self.result {
            Some(bytes) => Some(
                Payload::from_json_bytes(bytes)
                    .map_err(|e| format!("result is not valid JSON: {e}"))?,
            ),
            None => None,
        };
        let count = |n: i64| n.clamp(0, i64::from(u32::MAX)) as u32;
        Ok(Recovered {
            id: self.id,
            task_type: Arc::from(self.task_type),
            payload,
            options,
            status,
            retries_used: count(self.retries_used),
            lease_losses: count(self.lease_losses),
            created_at: time(self.created_at_ms),
            ready_at: self.ready_at_ms.map(time),
            finished_at: self.finished_at_ms.map(time),
            result,
            error: self.error,
            dead_seq: self.dead_seq,
            attempts: self
                .attempts
                .into_iter()
                .map(AttemptRow::into_attempt)
                .collect(),
        })
    }
}
