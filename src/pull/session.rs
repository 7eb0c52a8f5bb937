//! One pulling worker's session: the leases the queue sent it that it has not taken yet,
//! the ones it holds, the cancellations it has not heard of, and when it was last seen.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::task::{Lease, LeaseToken, TaskId};
use crate::worker::{Capabilities, LeaseSink, WorkerInfo, WorkerStatus};

/// The pool name pulling workers show under in `/workers`.
pub(super) const POOL: &str = "http";

/// One pulling worker, as the coordinator keeps it between its calls.
#[derive(Debug)]
pub(super) struct Session {
    /// Its id in the queue: `http:NAME`. Every pool and node worker's id holds a `/`, and a
    /// name may not, so a pulling worker can never take the place of one of them.
    pub(super) id: Arc<str>,
    /// Random per session: a worker that comes back after it was reaped is a new one, and
    /// its old leases' reports are refused.
    pub(super) incarnation: u64,
    pub(super) started: Instant,
    /// Wakes a waiting lease call when leases arrive.
    pub(super) arrived: Notify,
    /// One lease call at a time per worker: each one sets the worker's credits.
    pub(super) polling: tokio::sync::Mutex<()>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    caps: Capabilities,
    /// Leases the queue sent, not yet handed to the worker.
    inbox: VecDeque<Lease>,
    /// Leases handed to the worker and not reported yet.
    held: HashMap<TaskId, LeaseToken>,
    /// Tasks the worker holds that were cancelled, until it hears of them.
    cancelled: Vec<TaskId>,
    last_seen: Instant,
    /// The most tasks it asked for in one call: its slot count in `/workers`.
    max_tasks: u32,
    /// Gone: leases sent now are given back to the queue.
    closed: bool,
    completed: u64,
    failed: u64,
}

impl Session {
    pub(super) fn new(id: Arc<str>, caps: Capabilities, now: Instant) -> Self {
        Self {
            id,
            incarnation: rand::random(),
            started: now,
            arrived: Notify::new(),
            polling: tokio::sync::Mutex::new(()),
            state: Mutex::new(State {
                caps,
                inbox: VecDeque::new(),
                held: HashMap::new(),
                cancelled: Vec::new(),
                last_seen: now,
                max_tasks: 0,
                closed: false,
                completed: 0,
                failed: 0,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a call from the worker.
    pub(super) fn seen(&self, now: Instant) {
        self.state().last_seen = now;
    }

    /// How long since its last call; zero while a lease call of its waits.
    pub(super) fn silent(&self, now: Instant) -> Duration {
        if self.polling.try_lock().is_err() {
            return Duration::ZERO;
        }
        now.saturating_duration_since(self.state().last_seen)
    }

    pub(super) fn caps(&self) -> Capabilities {
        self.state().caps.clone()
    }

    /// Replaces what it serves; true when that changed.
    pub(super) fn set_caps(&self, caps: &Capabilities) -> bool {
        let mut s = self.state();
        let same = s.caps.task_types == caps.task_types && s.caps.labels == caps.labels;
        if !same {
            s.caps = caps.clone();
        }
        !same
    }

    /// Takes up to `max` of the leases waiting for the worker; they count as held from now.
    pub(super) fn take(&self, max: u32) -> Vec<Lease> {
        let mut s = self.state();
        s.max_tasks = s.max_tasks.max(max);
        let n = s.inbox.len().min(max as usize);
        let taken: Vec<Lease> = s.inbox.drain(..n).collect();
        for l in &taken {
            s.held.insert(l.task_id, l.token);
        }
        taken
    }

    /// The leases it holds now.
    pub(super) fn held(&self) -> Vec<(TaskId, LeaseToken)> {
        self.state().held.iter().map(|(id, t)| (*id, *t)).collect()
    }

    /// Records reports on these tasks. One that counted ends its lease; a refused one
    /// ends it only when it carried the token the worker holds (that lease is stale),
    /// not when it carried some other token.
    pub(super) fn reported(&self, done: &[(TaskId, LeaseToken, bool)], refused: &[TaskId]) {
        let mut s = self.state();
        for (id, token, ok) in done {
            if refused.contains(id) {
                if s.held.get(id) == Some(token) {
                    s.held.remove(id);
                }
                continue;
            }
            s.held.remove(id);
            if *ok {
                s.completed += 1;
            } else {
                s.failed += 1;
            }
        }
    }

    /// Drops leases the queue refused to extend: the worker holds them no more.
    pub(super) fn forget(&self, refused: &[TaskId]) {
        let mut s = self.state();
        for id in refused {
            s.held.remove(id);
        }
    }

    /// The cancellations the worker has not heard of yet.
    pub(super) fn take_cancelled(&self) -> Vec<TaskId> {
        std::mem::take(&mut self.state().cancelled)
    }

    /// Marks it gone: leases sent from now on go back to the queue.
    pub(super) fn close(&self) {
        let mut s = self.state();
        s.closed = true;
        s.inbox.clear();
        s.held.clear();
    }

    /// What `/workers` shows of it.
    pub(super) fn info(&self, now: Instant) -> WorkerInfo {
        let s = self.state();
        let busy = s.held.len() as u32;
        WorkerInfo {
            id: self.id.to_string(),
            pool: POOL.into(),
            status: if busy > 0 {
                WorkerStatus::Busy
            } else {
                WorkerStatus::Idle
            },
            current_tasks: busy,
            max_concurrent_tasks: s.max_tasks,
            total_completed: s.completed,
            total_failed: s.failed,
            uptime: now.saturating_duration_since(self.started),
            is_available: self.polling.try_lock().is_err(),
            labels: s.caps.labels.clone(),
            restarts: 0,
            mailbox_depth: s.inbox.len() as u64,
        }
    }

    /// (tasks held, slots) for the autoscaler.
    pub(super) fn load(&self) -> (u64, u64) {
        let s = self.state();
        (s.held.len() as u64, u64::from(s.max_tasks))
    }
}

/// Where the queue sends a pulling worker's leases: its session's inbox.
#[derive(Debug)]
pub(super) struct SessionSink(pub(super) Arc<Session>);

impl LeaseSink for SessionSink {
    fn deliver(&self, leases: Vec<Lease>) -> Result<(), Vec<Lease>> {
        {
            let mut s = self.0.state();
            if s.closed {
                return Err(leases);
            }
            s.inbox.extend(leases);
        }
        self.0.arrived.notify_one();
        Ok(())
    }

    fn cancel(&self, task_id: TaskId) {
        let mut s = self.0.state();
        // Not handed out yet: it never reaches the worker.
        s.inbox.retain(|l| l.task_id != task_id);
        if s.held.remove(&task_id).is_some() && s.cancelled.len() < super::MAX_TASKS as usize {
            s.cancelled.push(task_id);
        }
    }
}
