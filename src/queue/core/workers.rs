//! Workers: attach and detach, credits, leases' extensions and ends. Leasing tasks to
//! them is `dispatch.rs`.

use super::*;

impl Class {
    pub(super) fn accepts(&self, caps: &Capabilities) -> bool {
        caps.serves(&self.key.task_type) && caps.has_labels(&self.key.labels)
    }
}

impl QueueCore {
    /// A worker announces itself (or a new incarnation of itself) with what it can run and
    /// how many tasks it can take now.
    pub(crate) fn attach(
        &mut self,
        worker: Arc<str>,
        incarnation: u64,
        caps: Capabilities,
        credits: u32,
        sink: Arc<dyn LeaseSink>,
    ) {
        if let Some(old) = self.workers.get(&worker) {
            if old.incarnation != incarnation {
                let old_incarnation = old.incarnation;
                self.detach(&worker, old_incarnation);
            }
        }
        match self.workers.get_mut(&worker) {
            // The same incarnation announcing again (its handlers changed): leases already
            // on their way to it are not in its own count of free slots, so the queue keeps
            // its credit count rather than take the worker's.
            Some(_) => {
                self.unindex(&worker);
                let s = self.workers.get_mut(&worker).expect("looked up");
                s.routing = sink.routing();
                s.caps = caps;
                s.sink = sink;
                // What it serves may have changed: the tasks parked on it queue again, and
                // come back to it if it still takes them.
                let parked = std::mem::take(&mut s.parked);
                self.index(&worker);
                self.return_parked(parked);
            }
            None => {
                self.save_worker(&worker, &caps, true);
                self.turns += 1;
                self.workers.insert(
                    worker.clone(),
                    Session {
                        incarnation,
                        caps,
                        credits,
                        routing: sink.routing(),
                        sink,
                        leases: IdSet::default(),
                        turn: self.turns,
                        parked: BTreeSet::new(),
                    },
                );
                self.index(&worker);
            }
        }
        self.refresh_routable();
    }

    /// A worker is gone: every lease it held goes back to the queue at once.
    pub(crate) fn detach(&mut self, worker: &str, incarnation: u64) {
        let Some(s) = self.workers.get(worker) else {
            return;
        };
        if s.incarnation != incarnation {
            return;
        }
        let worker: Arc<str> = self
            .workers
            .get_key_value(worker)
            .expect("looked up")
            .0
            .clone();
        self.unindex(&worker);
        let session = self.workers.remove(&worker).expect("session exists");
        self.save_worker(&worker, &session.caps, false);
        // Its keys are free to bind again, and what waited for it waits no more.
        self.unbind(&worker, session.parked);
        // Back in the order they were queued in, not the set's.
        let mut ids: Vec<TaskId> = session.leases.into_iter().collect();
        ids.sort_unstable_by_key(|id| self.tasks[id].seq());
        for id in ids {
            self.lose_lease(id, &worker, "worker stopped");
        }
        self.refresh_routable();
    }

    /// Gives a worker more credits (free slots).
    pub(crate) fn credit(&mut self, worker: &str, credits: u32) {
        if let Some(s) = self.workers.get(worker) {
            let more = s.credits.saturating_add(credits);
            self.set_credits(worker, more);
        }
    }

    /// Sets a worker's credits to exactly `credits` (0 while it drains).
    pub(crate) fn set_credits(&mut self, worker: &str, credits: u32) {
        let Some((id, s)) = self.workers.get_key_value(worker) else {
            return;
        };
        let (id, old) = (id.clone(), s.credits);
        if old == credits {
            return;
        }
        self.unindex(&id);
        self.workers.get_mut(&id).expect("looked up").credits = credits;
        self.index(&id);
    }

    pub(super) fn refresh_routable(&mut self) {
        for class in &mut self.classes {
            class.routable = self.workers.values().any(|w| class.accepts(&w.caps));
        }
    }

    /// True when `worker` holds the lease of task `id` whose token is `token`.
    pub(super) fn holds(&self, worker: &str, id: TaskId, token: &LeaseToken) -> bool {
        self.holder(worker, id, token).is_some()
    }

    /// The slot of task `id` when `worker` holds its lease under `token`.
    pub(super) fn holder(&self, worker: &str, id: TaskId, token: &LeaseToken) -> Option<Slot> {
        let at = self.tasks.find(&id)?;
        let held = self
            .tasks
            .at(at)
            .run()
            .lease
            .as_ref()
            .is_some_and(|l| l.token == *token && &*l.worker == worker);
        held.then_some(at)
    }

    /// Counts and logs a report or extend whose token is not the current lease's.
    pub(super) fn refuse_stale(
        &mut self,
        worker: &str,
        id: TaskId,
        token: &LeaseToken,
        what: &str,
    ) {
        self.counters.stale_reports += 1;
        tracing::warn!(
            task_id = %id,
            worker,
            epoch = token.epoch,
            attempt = token.attempt,
            what,
            "refused a report that does not answer the current lease"
        );
    }

    /// A running attempt's progress, from a node's worker: published as `TaskProgress`
    /// when `worker` holds the task's current lease under `token`; otherwise (a late
    /// report of an attempt whose lease was handed out again, or a worker that never held
    /// it) dropped and counted.
    pub(crate) fn progress(
        &mut self,
        worker: &str,
        id: TaskId,
        token: &LeaseToken,
        fraction: f32,
        message: String,
    ) {
        if !self.holds(worker, id, token) {
            self.counters.stale_progress += 1;
            tracing::debug!(
                task_id = %id,
                worker,
                attempt = token.attempt,
                "dropped progress that does not answer the current lease"
            );
            return;
        }
        self.out.event(|| EventKind::TaskProgress {
            id,
            fraction,
            message,
        });
    }

    /// Extends the leases `worker` holds on tasks without a timeout to `lease_time` from
    /// now. Leases it does not hold (stale tokens) are refused and counted; leases of tasks
    /// with a timeout are bounded by it and stay as they are. Returns the refused tasks.
    pub(crate) fn extend(
        &mut self,
        worker: &str,
        leases: &[(TaskId, LeaseToken)],
        now: Instant,
    ) -> Vec<TaskId> {
        let lease_time = self.config.lease_time;
        let mut refused = Vec::new();
        for &(id, token) in leases {
            if !self.holds(worker, id, &token) {
                self.refuse_stale(worker, id, &token, "extend");
                refused.push(id);
                continue;
            }
            let e = self.tasks.get_mut(&id).expect("held");
            if e.options().timeout.is_some() {
                continue;
            }
            let hold = e.run_mut().lease.as_mut().expect("held");
            let old = hold.deadline;
            hold.deadline = now + lease_time;
            let new = hold.deadline;
            self.deadlines.remove(&(old, id));
            self.deadlines.insert((new, id));
        }
        refused
    }

    /// Ends a running task's lease, closing its attempt record.
    pub(super) fn release(
        &mut self,
        id: TaskId,
        outcome: &'static str,
        error: Option<String>,
    ) -> Option<Arc<str>> {
        let at = self.tasks.find(&id)?;
        let worker = self.end_lease(id, at, outcome, error, SystemTime::now())?;
        if let Some(s) = self.workers.get_mut(&worker) {
            s.leases.remove(&id);
        }
        Some(worker)
    }

    /// [`release`](Self::release) for the task in `at`, its attempt closed at `wall`,
    /// but for the worker's session: the caller takes the task out of its leases.
    pub(super) fn end_lease(
        &mut self,
        id: TaskId,
        at: Slot,
        outcome: &'static str,
        error: Option<String>,
        wall: SystemTime,
    ) -> Option<Arc<str>> {
        let run = self.tasks.at_mut(at).run.as_deref_mut()?;
        let hold = run.lease.take()?;
        if let Some(a) = run.attempts.last_mut() {
            a.finished_at = Some(wall);
            a.outcome = Some(outcome.into());
            a.error = error;
        }
        self.deadlines.remove(&(hold.deadline, id));
        self.running -= 1;
        self.save_attempt(id);
        Some(hold.worker)
    }
}
