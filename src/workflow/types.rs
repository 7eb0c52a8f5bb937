//! Run ids, statuses and snapshots: what callers see of runs.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A workflow run's id (a UUID v7: runs sort by start time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub(crate) uuid::Uuid);

impl RunId {
    pub(crate) fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for RunId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.parse()?))
    }
}

/// Where a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Steps run as they become ready.
    Running,
    /// Running steps finish; no new step starts until it is resumed.
    Paused,
    /// Every step completed.
    Completed,
    /// A step failed for good (after its task's retries); the run can be retried from it.
    Failed,
    /// Cancelled; its running steps were cancelled.
    Cancelled,
    /// It cannot go on: the definition version it started with is no longer registered.
    Stopped,
}

impl RunStatus {
    /// Completed or cancelled: nothing will change it again. (Failed and stopped runs
    /// can be retried once their cause is fixed.)
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Cancelled)
    }

    /// Running or paused.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Running | Self::Paused)
    }

    /// The status as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Stopped => "stopped",
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "running" => Self::Running,
            "paused" => Self::Paused,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            "stopped" => Self::Stopped,
            other => return Err(format!("unknown run status {other:?}")),
        })
    }
}

/// Everything known about a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunSnapshot {
    /// The run.
    #[schema(value_type = String, format = Uuid)]
    pub id: RunId,
    /// Its workflow.
    pub workflow: String,
    /// The definition version it runs (and is pinned to).
    pub version: String,
    /// Where it is: running, paused, completed, failed, cancelled or stopped.
    #[schema(value_type = String)]
    pub status: RunStatus,
    /// Steps completed so far (each map item's stage counts as one).
    pub steps_completed: u64,
    /// Steps known so far, done or not: it grows as maps read their lists, loops iterate
    /// and dynamic steps add steps (an undecided condition counts its longer branch).
    pub steps_total: u64,
    /// Steps running now, by key, with the Unix ms they started.
    #[schema(value_type = Object)]
    pub steps_running: BTreeMap<String, i64>,
    /// The state: the input and every output written under a key.
    #[schema(value_type = Object)]
    pub state: BTreeMap<String, Value>,
    /// Why it failed or stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How many times it was retried from a failed step.
    pub retries: u32,
    /// Its checkpoint mode: its own (a run option) or its definition's. Not known for a
    /// finished run read back from the store alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "before_next")]
    pub checkpoint: Option<super::Checkpoint>,
    /// When its timeout fails it (Unix ms), if it was started with one; a retry counts
    /// it again from the retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<i64>,
    /// When it started (Unix ms).
    pub created_at_ms: i64,
    /// When it last changed (Unix ms).
    pub updated_at_ms: i64,
    /// When it completed, failed for good or was cancelled (Unix ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<i64>,
}
