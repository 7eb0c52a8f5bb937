//! The task model: ids, priorities, statuses, options and payloads, and the queries and
//! submit answers that name tasks.

mod lease;
mod payload;
mod query;
mod spec;
mod trace;

pub use lease::{Lease, LeaseToken, LeaseTokenError};
pub use payload::Payload;
pub use query::{Submitted, TaskQuery};
pub use spec::{TaskOptions, TaskSpec};
pub use trace::{TraceId, TraceIdError};

pub(crate) type IdSet = std::collections::HashSet<TaskId, std::hash::BuildHasherDefault<IdHasher>>;

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// A task's identity. Ids are UUIDv7: they sort by creation time and are unique across
/// processes and restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(uuid::Uuid);

/// The UUID's byte order, compared as one 128-bit number: the queue keeps its ordered sets
/// (tasks by status, deadlines) keyed by id, and two integer comparisons are far cheaper
/// there than a 16-byte lexicographic one (ids of one millisecond share their first bytes).
impl Ord for TaskId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.as_u128().cmp(&other.0.as_u128())
    }
}

impl PartialOrd for TaskId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Hashes as one `u64` folded from the id's 128 bits (of which 74 are random), so maps
/// keyed by task id can use [`IdHasher`] instead of SipHash.
impl std::hash::Hash for TaskId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let v = self.0.as_u128();
        state.write_u64((v as u64) ^ ((v >> 64) as u64));
    }
}

/// A hasher for keys that are already random `u64`s (task ids): one multiply, no SipHash.
/// Task ids are made by the queue, never chosen by clients, so hash flooding is not a risk.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ *b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A `HashMap` keyed by task id.
pub(crate) type IdMap<V> =
    std::collections::HashMap<TaskId, V, std::hash::BuildHasherDefault<IdHasher>>;

impl TaskId {
    /// A new id, later than every id this process made before.
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }

    pub(crate) fn from_uuid(id: uuid::Uuid) -> Self {
        Self(id)
    }

    /// The millisecond the id was made in, from its UUIDv7 timestamp (the Unix epoch for
    /// an id that carries none).
    pub(crate) fn created_at(&self) -> SystemTime {
        self.0.get_timestamp().map_or(SystemTime::UNIX_EPOCH, |ts| {
            let (secs, nanos) = ts.to_unix();
            SystemTime::UNIX_EPOCH + std::time::Duration::new(secs, nanos)
        })
    }
}

impl Default for TaskId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for TaskId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(Self)
    }
}

/// How urgent a task is. Higher runs first; within one priority, first in, first out.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum TaskPriority {
    /// Background work (0).
    Low,
    /// The default (5).
    #[default]
    Normal,
    /// Ahead of normal work (10).
    High,
    /// Ahead of everything (20).
    Critical,
}

impl TaskPriority {
    /// Every priority, lowest first.
    pub const ALL: [TaskPriority; 4] = [Self::Low, Self::Normal, Self::High, Self::Critical];

    /// The numeric level: 0, 5, 10 or 20.
    pub fn level(self) -> u8 {
        match self {
            Self::Low => 0,
            Self::Normal => 5,
            Self::High => 10,
            Self::Critical => 20,
        }
    }

    /// Index into per-priority arrays, lowest first.
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The lowercase name (`"low"`, `"normal"`, `"high"`, `"critical"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Normal => "normal",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Accepted but not yet runnable (a delay or a retry backoff is pending).
    Pending,
    /// Runnable, waiting for a worker.
    Queued,
    /// Leased to a worker.
    Running,
    /// Finished with a result.
    Completed,
    /// Failed for good (retries spent or a permanent error); kept as a dead letter.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
    /// Ran past its timeout on the last allowed attempt; kept as a dead letter.
    Timeout,
}

impl TaskStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [TaskStatus; 7] = [
        Self::Pending,
        Self::Queued,
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
        Self::Timeout,
    ];

    /// True once the task will not change again (unless re-queued from the dead letters).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Cancelled | Self::Timeout
        )
    }

    /// The lowercase name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Timeout => "timeout",
        }
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown task status `{s}`, expected one of: pending, queued, running, \
                     completed, failed, cancelled, timeout"
                )
            })
    }
}

/// How a task ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum TaskOutcome {
    /// The handler returned a value.
    Completed {
        /// The handler's output, as JSON.
        result: Payload,
    },
    /// The handler failed on its last allowed attempt, or failed permanently.
    Failed {
        /// What went wrong, from the handler.
        error: String,
    },
    /// The task was cancelled.
    Cancelled,
    /// The last allowed attempt ran past the task's timeout.
    Timeout,
}

impl TaskOutcome {
    /// The status this outcome leaves the task in.
    pub fn status(&self) -> TaskStatus {
        match self {
            Self::Completed { .. } => TaskStatus::Completed,
            Self::Failed { .. } => TaskStatus::Failed,
            Self::Cancelled => TaskStatus::Cancelled,
            Self::Timeout => TaskStatus::Timeout,
        }
    }

    /// The result of a completed task, or [`Error::TaskFailed`](crate::Error::TaskFailed)
    /// naming task `id`, the status it ended in and why.
    pub fn into_result(self, id: TaskId) -> Result<Payload, crate::error::Error> {
        let (status, error) = match self {
            Self::Completed { result } => return Ok(result),
            Self::Failed { error } => (TaskStatus::Failed, error),
            Self::Cancelled => (TaskStatus::Cancelled, "cancelled".into()),
            Self::Timeout => (TaskStatus::Timeout, "timed out on its last attempt".into()),
        };
        Err(crate::error::Error::TaskFailed { id, status, error })
    }
}

/// One attempt at running a task.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    /// 1 for the first run, 2 for the first retry, ...
    pub number: u32,
    /// The worker that ran it.
    #[schema(value_type = String)]
    pub worker: std::sync::Arc<str>,
    /// When the worker took the lease (Unix ms in JSON).
    #[serde(with = "crate::util::system_time_ms", rename = "started_at_ms")]
    #[schema(value_type = u64)]
    pub started_at: SystemTime,
    /// When the attempt ended, absent while it runs (Unix ms in JSON).
    #[serde(with = "crate::util::opt_system_time_ms", rename = "finished_at_ms")]
    #[schema(value_type = Option<u64>)]
    pub finished_at: Option<SystemTime>,
    /// How it ended: `completed`, `failed`, `timeout`, `cancelled` or `lost` (worker died).
    /// The queue records one of these static words, so closing an attempt allocates
    /// nothing; an attempt read back from the store holds its own copy.
    #[schema(value_type = Option<String>)]
    pub outcome: Option<std::borrow::Cow<'static, str>>,
    /// The error, for a failed attempt.
    pub error: Option<String>,
}

/// Everything known about one task: what `get_task` returns.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskSnapshot {
    /// The task's id.
    #[schema(value_type = String, format = Uuid)]
    pub id: TaskId,
    /// The handler it runs.
    pub task_type: String,
    /// Its status now.
    pub status: TaskStatus,
    /// The options it was submitted with.
    pub options: TaskOptions,
    /// Its input.
    #[schema(value_type = Object)]
    pub payload: Payload,
    /// Its output, once completed.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Payload>,
    /// The last error, if an attempt failed.
    pub error: Option<String>,
    /// Every attempt so far, oldest first.
    pub attempts: Vec<Attempt>,
    /// When it was accepted (Unix ms in JSON).
    #[serde(with = "crate::util::system_time_ms", rename = "created_at_ms")]
    #[schema(value_type = u64)]
    pub created_at: SystemTime,
    /// When it finished (Unix ms in JSON).
    #[serde(with = "crate::util::opt_system_time_ms", rename = "finished_at_ms")]
    #[schema(value_type = Option<u64>)]
    pub finished_at: Option<SystemTime>,
    /// True while it waits in the queue with no worker able to take it (unknown task type or
    /// unmatched labels).
    pub unroutable: bool,
}
