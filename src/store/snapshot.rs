//! Stored rows as the snapshots and outcomes the API and the queue show.

use std::time::SystemTime;

use super::rows::{self, Recovered};
use crate::task::{TaskOptions, TaskOutcome, TaskSnapshot, TaskStatus};

/// A recovered (or read) task as a snapshot.
fn snapshot(r: Recovered) -> TaskSnapshot {
    TaskSnapshot {
        id: r.id,
        task_type: r.task_type.to_string(),
        status: r.status,
        options: r.options,
        payload: r.payload,
        result: r.result,
        error: r.error,
        attempts: r.attempts,
        created_at: r.created_at,
        finished_at: r.finished_at,
        unroutable: false,
    }
}

/// The outcome of a finished snapshot; `None` while it is not finished.
pub(super) fn outcome_of(t: &TaskSnapshot) -> Option<TaskOutcome> {
    Some(match t.status {
        TaskStatus::Completed => TaskOutcome::Completed {
            result: t.result.clone().unwrap_or_else(crate::task::Payload::null),
        },
        TaskStatus::Failed => TaskOutcome::Failed {
            error: t.error.clone().unwrap_or_default(),
        },
        TaskStatus::Cancelled => TaskOutcome::Cancelled,
        TaskStatus::Timeout => TaskOutcome::Timeout,
        _ => return None,
    })
}

/// A stored row as a snapshot; one that no longer decodes shows as failed, with the reason.
pub(super) fn shown(row: rows::StoredTask) -> TaskSnapshot {
    let id = row.id;
    match row.decode() {
        Ok(r) => snapshot(r),
        Err(error) => TaskSnapshot {
            id,
            task_type: String::new(),
            status: TaskStatus::Failed,
            options: TaskOptions::default(),
            payload: crate::task::Payload::null(),
            result: None,
            error: Some(format!("stored task no longer decodes: {error}")),
            attempts: Vec::new(),
            created_at: SystemTime::UNIX_EPOCH,
            finished_at: None,
            unroutable: false,
        },
    }
}
