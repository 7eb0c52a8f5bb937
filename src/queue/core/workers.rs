//! Workers: attach and detach, credits, and leasing tasks to them.

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
        let session = self.workers.remove(worker).expect("session exists");
        let worker: Arc<str> = Arc::from(worker);
        self.save_worker(&worker, &session.caps, false);
        // Back in the order they were queued in, not the set's.
        let mut ids: Vec<TaskId> = session.leases.into_iter().collect();
        ids.sort_unstable_by_key(|id| self.tasks[id].seq);
        for id in ids {
            self.lose_lease(id, &worker, "worker stopped");
        }
        self.refresh_routable();
    }

    /// Gives a worker more credits (free slots).
    pub(crate) fn credit(&mut self, worker: &str, credits: u32) {
        if let Some(s) = self.workers.get_mut(worker) {
            s.credits = s.credits.saturating_add(credits);
        }
    }

    /// Sets a worker's credits to exactly `credits` (0 while it drains).
    pub(crate) fn set_credits(&mut self, worker: &str, credits: u32) {
        if let Some(s) = self.workers.get_mut(worker) {
            s.credits = credits;
        }
    }

    pub(super) fn refresh_routable(&mut self) {
        for class in &mut self.classes {
            class.routable = self.workers.values().any(|w| class.accepts(&w.caps));
        }
    }

    /// Leases queued tasks to workers with credits, best first. Workers with the most free
    /// credits are served first, which balances load without asking anyone.
    pub(crate) fn dispatch(&mut self, now: Instant) -> Vec<Delivery> {
        if self.queued_by_priority.iter().all(|&n| n == 0) {
            return Vec::new();
        }
        let mut order: Vec<(u32, Arc<str>)> = self
            .workers
            .iter()
            .filter(|(_, s)| s.credits > 0)
            .map(|(id, s)| (s.credits, id.clone()))
            .collect();
        order.sort_unstable_by_key(|w| std::cmp::Reverse(w.0));
        let mut deliveries = Vec::new();
        for (_, worker) in order {
            let matching: Vec<usize> = {
                let caps = &self.workers[&worker].caps;
                (0..self.classes.len())
                    .filter(|&c| self.classes[c].live > 0 && self.classes[c].accepts(caps))
                    .collect()
            };
            if matching.is_empty() {
                continue;
            }
            let mut leases = Vec::new();
            while self.workers[&worker].credits > 0 {
                let Some(id) = self.pop_best(&matching) else {
                    break;
                };
                leases.push(self.lease_to(id, &worker, now));
            }
            if !leases.is_empty() {
                deliveries.push(Delivery {
                    sink: self.workers[&worker].sink.clone(),
                    worker,
                    leases,
                });
            }
            if self.queued_by_priority.iter().all(|&n| n == 0) {
                break;
            }
        }
        deliveries
    }

    /// Pops the best live task among `classes`: highest priority, then oldest.
    pub(super) fn pop_best(&mut self, classes: &[usize]) -> Option<TaskId> {
        {
            let mut best: Option<(usize, Ready)> = None;
            for &c in classes {
                let heap = &mut self.classes[c].heap;
                // Drop stale heads (cancelled, or re-queued under a newer seq).
                while let Some(top) = heap.peek() {
                    let live = self
                        .tasks
                        .get(&top.id)
                        .is_some_and(|e| e.status == TaskStatus::Queued && e.seq == top.seq);
                    if live {
                        break;
                    }
                    heap.pop();
                }
                if let Some(top) = heap.peek() {
                    if best.as_ref().is_none_or(|(_, b)| top > b) {
                        best = Some((c, *top));
                    }
                }
            }
            let (c, top) = best?;
            self.classes[c].heap.pop();
            Some(top.id)
        }
    }

    pub(super) fn lease_to(&mut self, id: TaskId, worker: &Arc<str>, now: Instant) -> Lease {
        self.unready(id);
        let grace = self.config.lease_grace;
        let e = self.tasks.get_mut(&id).expect("task exists");
        let attempt = e.run().attempts.len() as u32 + 1;
        let deadline = e.options.timeout.map(|t| now + t + grace);
        e.status = TaskStatus::Running;
        let run = e.run_mut();
        run.lease = Some(LeaseHold {
            worker: worker.clone(),
            attempt,
            deadline,
        });
        run.attempts.push(Attempt {
            number: attempt,
            worker: worker.clone(),
            started_at: SystemTime::now(),
            finished_at: None,
            outcome: None,
            error: None,
        });
        if let Some(d) = deadline {
            self.deadlines.insert((d, id));
        }
        self.running += 1;
        let lease = Lease {
            task_id: id,
            attempt,
            task_type: e.task_type.clone(),
            payload: e.payload.clone(),
            timeout: e.options.timeout,
        };
        let session = self.workers.get_mut(worker).expect("worker exists");
        session.credits -= 1;
        session.leases.insert(id);
        self.save(id);
        self.save_attempt(id);
        lease
    }

    /// Ends a running task's lease, closing its attempt record.
    pub(super) fn release(
        &mut self,
        id: TaskId,
        outcome: &str,
        error: Option<String>,
    ) -> Option<Arc<str>> {
        let e = self.tasks.get_mut(&id)?;
        let run = e.run.as_deref_mut()?;
        let hold = run.lease.take()?;
        if let Some(a) = run.attempts.last_mut() {
            a.finished_at = Some(SystemTime::now());
            a.outcome = Some(outcome.to_string());
            a.error = error;
        }
        if let Some(d) = hold.deadline {
            self.deadlines.remove(&(d, id));
        }
        if let Some(s) = self.workers.get_mut(&hold.worker) {
            s.leases.remove(&id);
        }
        self.running -= 1;
        self.save_attempt(id);
        Some(hold.worker)
    }
}
