//! Workers: attach and detach, credits, and leasing tasks to them.

use std::cmp::Reverse;

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
            Some(s) => {
                s.caps = caps;
                s.sink = sink;
            }
            None => {
                self.save_worker(&worker, &caps, true);
                if credits > 0 {
                    self.with_credits.insert((Reverse(credits), worker.clone()));
                }
                self.workers.insert(
                    worker,
                    Session {
                        incarnation,
                        caps,
                        credits,
                        sink,
                        leases: IdSet::default(),
                    },
                );
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
        let (worker, session) = self.workers.remove_entry(worker).expect("session exists");
        if session.credits > 0 {
            self.with_credits
                .remove(&(Reverse(session.credits), worker.clone()));
        }
        self.save_worker(&worker, &session.caps, false);
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
        if old > 0 {
            self.with_credits.remove(&(Reverse(old), id.clone()));
        }
        if credits > 0 {
            self.with_credits.insert((Reverse(credits), id.clone()));
        }
        self.workers.get_mut(&id).expect("looked up").credits = credits;
    }

    pub(super) fn refresh_routable(&mut self) {
        for class in &mut self.classes {
            class.routable = self.workers.values().any(|w| class.accepts(&w.caps));
        }
    }

    /// Leases queued tasks to workers with credits, best first. Workers with the most free
    /// credits are served first, which balances load without asking anyone. The workers
    /// come from the index of those with credits, so a dispatch costs what it leases, not
    /// the number of workers attached.
    pub(crate) fn dispatch(&mut self, now: Instant) -> Vec<Delivery> {
        self.clock = self.clock.max(now);
        let mut deliveries = Vec::new();
        if !self.classes.iter().any(|c| c.live > 0 && c.routable) {
            // Nothing queued that any attached worker serves: no need to look at them.
            return deliveries;
        }
        // One wall-clock reading for every attempt this dispatch starts.
        let wall = SystemTime::now();
        // Workers with credits that serve none of the queued tasks, put back at the end.
        let mut passed = Vec::new();
        let mut matching = std::mem::take(&mut self.matching);
        while self.queued_by_priority.iter().any(|&n| n > 0) {
            let Some((_, worker)) = self.with_credits.pop_first() else {
                break;
            };
            // The worker's session is looked up twice per dispatch, not twice per lease.
            let credits = {
                let session = &self.workers[&worker];
                matching.clear();
                matching.extend((0..self.classes.len()).filter(|&c| {
                    self.classes[c].live > 0 && self.classes[c].accepts(&session.caps)
                }));
                session.credits
            };
            if matching.is_empty() {
                passed.push(worker);
                continue;
            }
            let mut leases = Vec::new();
            while leases.len() < credits as usize {
                let Some((id, at)) = self
                    .pop_aged(&matching)
                    .or_else(|| self.pop_best(&matching))
                else {
                    break;
                };
                leases.push(self.lease_to(id, at, &worker, now, wall));
            }
            let session = self.workers.get_mut(&worker).expect("worker exists");
            session.credits -= leases.len() as u32;
            session.leases.extend(leases.iter().map(|l| l.task_id));
            if session.credits > 0 {
                // Out of tasks it can take: it keeps its place for the next dispatch.
                passed.push(worker.clone());
            }
            if !leases.is_empty() {
                deliveries.push(Delivery {
                    sink: session.sink.clone(),
                    worker,
                    leases,
                });
            }
        }
        self.matching = matching;
        for worker in passed {
            let credits = self.workers[&worker].credits;
            self.with_credits.insert((Reverse(credits), worker));
        }
        deliveries
    }

    /// With priority aging on: the oldest live task among `classes` that has waited past
    /// `priority_aging`, taken out of the queue; `None` when none has.
    fn pop_aged(&mut self, classes: &[usize]) -> Option<(TaskId, Slot)> {
        let age = self.config.priority_aging?;
        let mut oldest: Option<(usize, Ready)> = None;
        for &c in classes {
            let arrivals = &mut self.classes[c].arrivals;
            while let Some(&(at, r)) = arrivals.front() {
                let live = self
                    .tasks
                    .get(&r.id)
                    .is_some_and(|e| e.status() == TaskStatus::Queued && e.seq() == r.seq);
                if live {
                    if at + age <= self.clock && oldest.is_none_or(|(_, o)| r.seq < o.seq) {
                        oldest = Some((c, r));
                    }
                    break;
                }
                arrivals.pop_front();
            }
        }
        let (c, r) = oldest?;
        // Its heap entry goes stale once the task runs, and is skipped there.
        self.classes[c].arrivals.pop_front();
        Some((r.id, self.tasks.slot_of(&r.id)))
    }

    /// Takes the best live task among `classes`: highest priority, then oldest.
    pub(super) fn pop_best(&mut self, classes: &[usize]) -> Option<(TaskId, Slot)> {
        // (class, lane, seq, slot) of the best front seen so far.
        let mut best: Option<(usize, usize, u64, Slot)> = None;
        for &c in classes {
            // Lanes above the best's priority only: a lower one cannot beat it.
            let floor = best.map_or(0, |(_, lane, _, _)| lane);
            for lane in (floor..TaskPriority::ALL.len()).rev() {
                let Some((seq, at)) = self.live_front(c, lane) else {
                    continue;
                };
                if best.is_none_or(|(_, bl, bs, _)| lane > bl || (lane == bl && seq < bs)) {
                    best = Some((c, lane, seq, at));
                }
                break;
            }
        }
        let (c, lane, _, at) = best?;
        self.classes[c].lanes[lane]
            .pop_front()
            .map(|(_, id)| (id, at))
    }

    /// The sequence number and slot of the first live task in one lane of class `c`, after
    /// dropping the stale entries before it (cancelled tasks, or tasks re-queued under a
    /// newer seq).
    fn live_front(&mut self, c: usize, lane: usize) -> Option<(u64, Slot)> {
        let fifo = &mut self.classes[c].lanes[lane];
        while let Some(&(seq, id)) = fifo.front() {
            if let Some(at) = self.tasks.find(&id) {
                let e = self.tasks.at(at);
                if e.status() == TaskStatus::Queued && e.seq() == seq {
                    return Some((seq, at));
                }
            }
            fifo.pop_front();
        }
        None
    }

    /// Leases the queued task `id` (in `at`) to `worker`, starting its attempt at `wall`.
    /// The caller takes the credit and records the lease in the worker's session.
    fn lease_to(
        &mut self,
        id: TaskId,
        at: Slot,
        worker: &Arc<str>,
        now: Instant,
        wall: SystemTime,
    ) -> Lease {
        self.unready_at(at);
        let nonce = rand::RngCore::next_u64(&mut self.nonces);
        let (epoch, grace, lease_time) =
            (self.epoch, self.config.lease_grace, self.config.lease_time);
        let e = self.tasks.set_status_at(at, id, TaskStatus::Running);
        let task_type = self.classes[e.class()].key.task_type.clone();
        let token = LeaseToken {
            epoch,
            attempt: e.run().attempts.len() as u32 + 1,
            nonce,
        };
        // A task with a timeout is bounded by it; one without holds its lease for
        // `lease_time` at a time, extended only by its worker's explicit extend.
        let deadline = now + e.options().timeout.map_or(lease_time, |t| t + grace);
        let run = e.run_mut();
        run.lease = Some(LeaseHold {
            worker: worker.clone(),
            token,
            deadline,
        });
        run.attempts.push(Attempt {
            number: token.attempt,
            worker: worker.clone(),
            started_at: wall,
            finished_at: None,
            outcome: None,
            error: None,
        });
        self.deadlines.insert((deadline, id));
        self.running += 1;
        let lease = Lease {
            task_id: id,
            token,
            task_type,
            payload: e.payload.clone(),
            timeout: e.options().timeout,
            lease_time: e.options().timeout.is_none().then_some(lease_time),
            trace_id: e.options().trace_id.unwrap_or(id.into()),
        };
        self.save(id);
        self.save_attempt(id);
        lease
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
