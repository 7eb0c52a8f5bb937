//! Workers outside the process that pull their tasks through calls: the worker protocol
//! that the HTTP API serves (`POST /workers/lease` and the rest), open to a worker in any
//! language.
//!
//! A pulling worker is one more worker of the queue's credit protocol. Its lease call sets
//! its credits to the tasks it asks for and waits (up to its `wait`) for the queue to send
//! them; the call then sets its credits back to zero, so the queue never leases it more
//! than it asked for. Each lease carries its fencing token, and every report, extension and
//! progress note must carry it back: a stale or forged one is refused. A worker silent for
//! longer than the coordinator's `worker_timeout` is dropped and its leases go back to the
//! queue; so do the leases of tasks without a timeout that it did not extend within the
//! queue's `lease_time`.
//!
//! ```no_run
//! # async fn run(coordinator: wrangle::Coordinator) -> Result<(), wrangle::Error> {
//! use std::time::Duration;
//! use wrangle::pull::LeaseRequest;
//!
//! let workers = coordinator.pull_workers();
//! let request = LeaseRequest::new("py-1", ["resize"]).max_tasks(8).wait(Duration::from_secs(20));
//! for lease in workers.lease(request).await? {
//!     let output = wrangle::Payload::null();
//!     workers.report("py-1", vec![(lease.task_id, lease.token, Ok(output))]).await?;
//! }
//! # Ok(())
//! # }
//! ```

mod session;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use tokio::time::Instant;

use self::session::{Session, SessionSink};
use crate::error::Error;
use crate::handler::TaskError;
use crate::queue::{QueueRef, WorkerCall};
use crate::task::{Lease, LeaseToken, Payload, TaskId};
use crate::worker::{AttemptOutcome, AttemptReport, Capabilities, WorkerInfo};

/// Most leases one call may ask for, and most reports or extensions in one call.
pub const MAX_TASKS: u32 = 1000;
/// Longest name of a pulling worker.
pub const MAX_NAME: usize = 64;
/// Most task types (and most labels) a pulling worker may declare.
pub const MAX_TYPES: usize = 64;
/// Longest progress message, in bytes.
pub const MAX_MESSAGE: usize = 4096;
/// Most pulling workers at once; past it a new one is refused until one leaves.
pub const MAX_WORKERS: usize = 10_000;

/// What a pulling worker's call got wrong, or why it cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PullError {
    /// A field of the call is invalid.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field, as the HTTP body names it.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// No pulling worker has this name (it never leased, left, or was dropped for silence).
    #[error("no pulling worker named `{0}`: lease first (it may have been dropped after its worker_timeout of silence)")]
    UnknownWorker(String),
    /// `MAX_WORKERS` pulling workers are attached.
    #[error("{0} pulling workers are attached; no more are taken until one leaves")]
    TooManyWorkers(usize),
}

impl PullError {
    fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// A lease call: who asks, what it runs, how many tasks it takes and how long it waits.
#[derive(Clone, Debug)]
pub struct LeaseRequest {
    /// The worker's name: 1 to 64 letters, digits, `.`, `_`, `-` or `:`. A name stands for
    /// one worker: calls under it continue its session.
    pub worker: String,
    /// The task types it runs (1 to 64).
    pub task_types: Vec<String>,
    /// Its labels (`gpu`, `region=eu`; at most 64).
    pub labels: Vec<String>,
    /// At most this many leases (1 to 1,000).
    pub max_tasks: u32,
    /// How long to wait for a first task when none is ready (cut to the server's most).
    pub wait: Duration,
}

impl LeaseRequest {
    /// One task, no wait.
    pub fn new<T: Into<String>>(
        worker: impl Into<String>,
        task_types: impl IntoIterator<Item = T>,
    ) -> Self {
        Self {
            worker: worker.into(),
            task_types: task_types.into_iter().map(Into::into).collect(),
            labels: Vec::new(),
            max_tasks: 1,
            wait: Duration::ZERO,
        }
    }

    /// At most `n` leases.
    pub fn max_tasks(mut self, n: u32) -> Self {
        self.max_tasks = n;
        self
    }

    /// Waits up to `wait` for a first task.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// With these labels.
    pub fn labels<T: Into<String>>(mut self, labels: impl IntoIterator<Item = T>) -> Self {
        self.labels = labels.into_iter().map(Into::into).collect();
        self
    }

    fn check(&self) -> Result<Capabilities, PullError> {
        check_name(&self.worker)?;
        if self.task_types.is_empty() || self.task_types.len() > MAX_TYPES {
            return Err(PullError::invalid(
                "task_types",
                format!("give 1 to {MAX_TYPES} task types"),
            ));
        }
        for t in &self.task_types {
            check_word("task_types", t)?;
        }
        if self.labels.len() > MAX_TYPES {
            return Err(PullError::invalid(
                "labels",
                format!("at most {MAX_TYPES} labels"),
            ));
        }
        for l in &self.labels {
            check_word("labels", l)?;
        }
        if self.max_tasks == 0 || self.max_tasks > MAX_TASKS {
            return Err(PullError::invalid(
                "max_tasks",
                format!("must be 1 to {MAX_TASKS}, got {}", self.max_tasks),
            ));
        }
        Ok(Capabilities {
            task_types: self.task_types.iter().map(|t| t.as_str().into()).collect(),
            labels: self.labels.clone(),
        })
    }
}

fn check_name(name: &str) -> Result<(), PullError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
    if ok {
        Ok(())
    } else {
        Err(PullError::invalid(
            "worker",
            format!("must be 1 to {MAX_NAME} letters, digits, `.`, `_`, `-` or `:`"),
        ))
    }
}

/// A task type or label: 1 to [`MAX_NAME`] * 2 printable characters, no spaces.
fn check_word(field: &'static str, s: &str) -> Result<(), PullError> {
    if s.is_empty()
        || s.len() > 2 * MAX_NAME
        || s.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(PullError::invalid(
            field,
            format!(
                "`{}` must be 1 to {} characters without spaces",
                s.escape_debug(),
                2 * MAX_NAME
            ),
        ));
    }
    Ok(())
}

/// What a heartbeat answers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Heartbeat {
    /// Leases the worker named that are not its current ones (expired, taken back, or
    /// never its own): stop their attempts, their reports will be refused.
    pub refused: Vec<TaskId>,
    /// Tasks it holds that were cancelled since its last call: stop them.
    pub cancelled: Vec<TaskId>,
}

/// The coordinator's side of every pulling worker. Cloning shares it.
#[derive(Clone, Debug)]
pub struct PullWorkers {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    queue: QueueRef,
    /// Past this silence a worker is dropped and its leases go back to the queue.
    worker_timeout: Duration,
    sessions: RwLock<HashMap<String, Arc<Session>>>,
}

impl PullWorkers {
    /// The pulling workers of `queue`, dropped after `worker_timeout` of silence.
    pub(crate) fn start(queue: QueueRef, worker_timeout: Duration) -> Self {
        let inner = Arc::new(Inner {
            queue,
            worker_timeout,
            sessions: RwLock::default(),
        });
        tokio::spawn(reap(Arc::downgrade(&inner)));
        Self { inner }
    }

    fn session(&self, name: &str) -> Result<Arc<Session>, PullError> {
        check_name(name)?;
        let session = self
            .inner
            .sessions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| PullError::UnknownWorker(name.into()))?;
        session.seen(Instant::now());
        Ok(session)
    }

    /// The named worker's session, attached to the queue with `caps` (again, when they
    /// changed).
    fn attach(&self, name: &str, caps: Capabilities) -> Result<Arc<Session>, PullError> {
        let now = Instant::now();
        let mut sessions = self
            .inner
            .sessions
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(s) = sessions.get(name) {
            s.seen(now);
            if s.set_caps(&caps) {
                self.attach_call(s, caps);
            }
            return Ok(s.clone());
        }
        if sessions.len() >= MAX_WORKERS {
            return Err(PullError::TooManyWorkers(sessions.len()));
        }
        let session = Arc::new(Session::new(
            format!("http:{name}").into(),
            caps.clone(),
            now,
        ));
        self.attach_call(&session, caps);
        sessions.insert(name.into(), session.clone());
        tracing::info!(worker = %session.id, "pulling worker attached");
        Ok(session)
    }

    fn attach_call(&self, session: &Arc<Session>, caps: Capabilities) {
        self.inner.queue.worker_call(WorkerCall::Attach {
            worker: session.id.clone(),
            incarnation: session.incarnation,
            caps,
            credits: 0,
            sink: Arc::new(SessionSink(session.clone())),
        });
    }

    /// Leases up to `max_tasks` tasks, waiting up to `wait` for the first when none is
    /// ready; an empty list when none came. The first call under a name attaches that
    /// worker.
    pub async fn lease(&self, request: LeaseRequest) -> Result<Vec<Lease>, Error> {
        let caps = request.check()?;
        let session = self.attach(&request.worker, caps)?;
        let deadline = Instant::now() + request.wait;
        // A second call of the same worker waits for the first to end, within its own wait.
        let Ok(_polling) = tokio::time::timeout_at(deadline, session.polling.lock()).await else {
            return Ok(Vec::new());
        };
        let mut leases = session.take(request.max_tasks);
        if leases.is_empty() {
            let worker = session.id.clone();
            // Answered once what could be leased now is in the inbox.
            self.inner
                .queue
                .pull(worker.clone(), request.max_tasks)
                .await?;
            leases = session.take(request.max_tasks);
            while leases.is_empty() {
                if tokio::time::timeout_at(deadline, session.arrived.notified())
                    .await
                    .is_err()
                {
                    break;
                }
                leases = session.take(request.max_tasks);
            }
            // Leases sent before this lands wait in the inbox for the next call.
            self.inner
                .queue
                .worker_call(WorkerCall::SetCredits { worker, credits: 0 });
        }
        session.seen(Instant::now());
        Ok(leases)
    }

    /// Reports finished attempts: each one's output, or its error (a retryable error
    /// retries while the task has retries left; a permanent one fails it). Returns the
    /// tasks whose reports were refused: their token is not the current lease's (it
    /// expired and the task was handed out again, the task was cancelled, or it never was
    /// this worker's).
    pub async fn report(
        &self,
        worker: &str,
        reports: Vec<(TaskId, LeaseToken, Result<Payload, TaskError>)>,
    ) -> Result<Vec<TaskId>, Error> {
        if reports.len() > MAX_TASKS as usize {
            return Err(
                PullError::invalid("reports", format!("at most {MAX_TASKS} per call")).into(),
            );
        }
        let session = self.session(worker)?;
        let done: Vec<(TaskId, LeaseToken, bool)> = reports
            .iter()
            .map(|(id, token, r)| (*id, *token, r.is_ok()))
            .collect();
        let reports = reports
            .into_iter()
            .map(|(task_id, token, result)| AttemptReport {
                task_id,
                token,
                outcome: match result {
                    Ok(output) => AttemptOutcome::Completed(output),
                    Err(e) => AttemptOutcome::Failed(e),
                },
            })
            .collect();
        let refused = self
            .inner
            .queue
            .worker_call_checked(WorkerCall::Report {
                worker: session.id.clone(),
                reports,
                credits: 0,
            })
            .await?;
        session.reported(&done, &refused);
        Ok(refused)
    }

    /// The worker is alive and still runs these attempts (all it holds when `None`): the
    /// leases of tasks without a timeout last another `lease_time`. Answers which leases
    /// were refused and which tasks were cancelled.
    pub async fn heartbeat(
        &self,
        worker: &str,
        leases: Option<Vec<(TaskId, LeaseToken)>>,
    ) -> Result<Heartbeat, Error> {
        let session = self.session(worker)?;
        let leases = leases.unwrap_or_else(|| session.held());
        if leases.len() > MAX_TASKS as usize {
            return Err(
                PullError::invalid("leases", format!("at most {MAX_TASKS} per call")).into(),
            );
        }
        let refused = if leases.is_empty() {
            Vec::new()
        } else {
            self.inner
                .queue
                .worker_call_checked(WorkerCall::Extend {
                    worker: session.id.clone(),
                    leases,
                })
                .await?
        };
        session.forget(&refused);
        Ok(Heartbeat {
            refused,
            cancelled: session.take_cancelled(),
        })
    }

    /// A running attempt's progress (a fraction from 0 to 1 and a message), published on
    /// the event stream while `token` is the task's current lease.
    pub fn progress(
        &self,
        worker: &str,
        task_id: TaskId,
        token: LeaseToken,
        fraction: f32,
        message: String,
    ) -> Result<(), PullError> {
        let session = self.session(worker)?;
        if !(0.0..=1.0).contains(&fraction) {
            return Err(PullError::invalid("fraction", "must be from 0 to 1"));
        }
        if message.len() > MAX_MESSAGE {
            return Err(PullError::invalid(
                "message",
                format!("at most {MAX_MESSAGE} bytes"),
            ));
        }
        self.inner.queue.worker_call(WorkerCall::Progress {
            worker: session.id.clone(),
            task_id,
            token,
            fraction,
            message,
        });
        Ok(())
    }

    /// The worker stops: every lease it holds goes back to the queue now. Returns how
    /// many it held.
    pub fn leave(&self, worker: &str) -> Result<usize, PullError> {
        check_name(worker)?;
        let session = self
            .inner
            .sessions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(worker)
            .ok_or_else(|| PullError::UnknownWorker(worker.into()))?;
        let held = session.held().len();
        self.inner.drop_session(&session, "left");
        Ok(held)
    }

    /// Every pulling worker, as `/workers` shows it, by id.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        let now = Instant::now();
        let mut all: Vec<WorkerInfo> = self.inner.all().iter().map(|s| s.info(now)).collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// The task types pulling workers serve now (submits of these types are accepted).
    pub fn task_types(&self) -> BTreeSet<Arc<str>> {
        self.inner
            .all()
            .iter()
            .flat_map(|s| s.caps().task_types)
            .collect()
    }

    /// True when a pulling worker serves `task_type`.
    pub fn serves(&self, task_type: &str) -> bool {
        self.inner.all().iter().any(|s| s.caps().serves(task_type))
    }

    /// (workers, tasks held, slots), for the autoscaler: pulling workers take their share
    /// of the backlog like remote nodes' workers.
    pub(crate) fn load(&self) -> (usize, u64, u64) {
        let all = self.inner.all();
        let (busy, slots) = all
            .iter()
            .map(|s| s.load())
            .fold((0, 0), |(b, t), (x, y)| (b + x, t + y));
        (all.len(), busy, slots)
    }
}

impl Inner {
    fn all(&self) -> Vec<Arc<Session>> {
        self.sessions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn drop_session(&self, session: &Session, why: &str) {
        session.close();
        self.queue.worker_call(WorkerCall::Detach {
            worker: session.id.clone(),
            incarnation: session.incarnation,
        });
        tracing::info!(worker = %session.id, why, "pulling worker detached; its leases went back to the queue");
    }
}

/// Drops workers silent past the timeout, until the workers' handle is gone.
async fn reap(inner: Weak<Inner>) {
    let every = match inner.upgrade() {
        Some(i) => (i.worker_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5)),
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let now = Instant::now();
        let silent: Vec<(String, Arc<Session>)> = {
            let mut sessions = inner.sessions.write().unwrap_or_else(|e| e.into_inner());
            let names: Vec<String> = sessions
                .iter()
                .filter(|(_, s)| s.silent(now) > inner.worker_timeout)
                .map(|(n, _)| n.clone())
                .collect();
            names
                .into_iter()
                .filter_map(|n| sessions.remove(&n).map(|s| (n, s)))
                .collect()
        };
        for (_, session) in silent {
            inner.drop_session(&session, "silent past worker_timeout");
        }
    }
}
