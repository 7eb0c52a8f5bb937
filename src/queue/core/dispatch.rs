//! Dispatch: leasing queued tasks to the workers that asked for them (their credits), in
//! the order their pools' routing strategies give.
//!
//! - Least-loaded workers (the default) wait in `with_credits`, most free credits first;
//!   each one served takes as many tasks as it has credits for, best first, before the next
//!   is served. Tasks arriving one at a time so go to whoever is least busy.
//! - Round-robin workers wait in `rotation`, the one served longest ago first; each one
//!   served takes one task and goes back behind the others, so a burst of N tasks over k
//!   idle workers lands N/k on each, in turn.
//! - With workers of both kinds holding credits, a dispatch serves one of each in turn.
//!
//! Whichever worker is served, a task whose affinity key is bound to another worker goes
//! to that worker instead, at once or after waiting for it (see `affinity.rs`). A dispatch
//! costs what it leases, not the number of workers attached: the workers come from the two
//! indexes of those with credits.

use std::cmp::Reverse;

use super::affinity::Route;
use super::*;
use crate::task::Lease;

/// One dispatch's leases, one delivery per worker however many times it was served.
struct Round {
    deliveries: Vec<Delivery>,
    /// Each worker's place in `deliveries`.
    at: HashMap<Arc<str>, usize>,
    now: Instant,
    /// One wall-clock reading for every attempt this dispatch starts.
    wall: SystemTime,
}

impl Round {
    fn add(&mut self, worker: &Arc<str>, sink: &Arc<dyn LeaseSink>, leases: Vec<Lease>) {
        match self.at.get(worker) {
            Some(&i) => self.deliveries[i].leases.extend(leases),
            None => {
                self.at.insert(worker.clone(), self.deliveries.len());
                self.deliveries.push(Delivery {
                    worker: worker.clone(),
                    sink: sink.clone(),
                    leases,
                });
            }
        }
    }
}

impl QueueCore {
    /// Leases queued tasks to workers with credits (see the module's documentation).
    pub(crate) fn dispatch(&mut self, now: Instant) -> Vec<Delivery> {
        self.clock = self.clock.max(now);
        if !self.classes.iter().any(|c| c.live > 0 && c.routable) {
            // Nothing queued that any attached worker serves: no need to look at them.
            return Vec::new();
        }
        let mut round = Round {
            deliveries: Vec::new(),
            at: HashMap::new(),
            now,
            wall: SystemTime::now(),
        };
        // Workers with credits that can take none of the queued tasks, put back at the end.
        let mut passed = Vec::new();
        let mut matching = std::mem::take(&mut self.matching);
        let mut rotation_next = false;
        while self.queued_by_priority.iter().any(|&n| n > 0) {
            let from_rotation = match (self.with_credits.is_empty(), self.rotation.is_empty()) {
                (true, true) => break,
                (false, true) => false,
                (true, false) => true,
                (false, false) => {
                    rotation_next = !rotation_next;
                    rotation_next
                }
            };
            let worker = if from_rotation {
                self.rotation.pop_first().expect("not empty").1
            } else {
                self.with_credits.pop_first().expect("not empty").1
            };
            // The worker's session is looked up twice per visit, not twice per lease.
            let (credits, routing, mut parked) = {
                let session = &self.workers[&worker];
                matching.clear();
                matching.extend((0..self.classes.len()).filter(|&c| {
                    self.classes[c].live > 0 && self.classes[c].accepts(&session.caps)
                }));
                (session.credits, session.routing, !session.parked.is_empty())
            };
            if matching.is_empty() && !parked {
                passed.push(worker);
                continue;
            }
            let take = match routing {
                RoutingStrategy::LeastLoaded => credits as usize,
                RoutingStrategy::RoundRobin => 1,
            };
            let mut leases = Vec::new();
            while leases.len() < take {
                let Some((id, at)) = self.next_for(&worker, &matching, &mut parked, &mut round)
                else {
                    break;
                };
                leases.push(self.lease_to(id, at, &worker, now, round.wall));
            }
            let taken = leases.len();
            let session = self.workers.get_mut(&worker).expect("worker exists");
            session.credits -= taken as u32;
            session.leases.extend(leases.iter().map(|l| l.task_id));
            if taken > 0 {
                round.add(&worker, &session.sink, leases);
                if routing == RoutingStrategy::RoundRobin {
                    self.turns += 1;
                    session.turn = self.turns;
                }
            }
            if session.credits == 0 {
                continue;
            }
            if taken > 0 && routing == RoutingStrategy::RoundRobin {
                // Back in the rotation, behind the workers not served yet.
                self.rotation.insert((session.turn, worker));
            } else {
                // Out of tasks it can take: it keeps its place for the next dispatch.
                passed.push(worker);
            }
        }
        self.matching = matching;
        for worker in passed {
            self.index(&worker);
        }
        round.deliveries
    }

    /// The next task for `worker`: the best among its `classes` and the tasks parked on it
    /// (`parked`: it may still have some). Tasks met on the way whose key is bound to
    /// another worker are leased to that worker (into `round`) or parked on it.
    fn next_for(
        &mut self,
        worker: &Arc<str>,
        classes: &[usize],
        parked: &mut bool,
        round: &mut Round,
    ) -> Option<(TaskId, Slot)> {
        loop {
            let (id, at) = match self.pop_aged(classes) {
                Some(found) => found,
                None => {
                    let mine = if *parked {
                        self.parked_front(worker)
                    } else {
                        None
                    };
                    *parked = mine.is_some();
                    let best = self.peek_best(classes);
                    match (mine, best) {
                        (None, None) => return None,
                        (Some((lane, seq, id, at)), best)
                            if best.is_none_or(|(_, bl, bs, _)| {
                                lane > bl || (lane == bl && seq < bs)
                            }) =>
                        {
                            // Parked on this worker already: its key is bound here.
                            self.pop_parked(worker);
                            return Some((id, at));
                        }
                        (_, Some((c, lane, _, at))) => {
                            let (_, id) = self.classes[c].lanes[lane]
                                .pop_front()
                                .expect("the front just read");
                            (id, at)
                        }
                        (_, None) => unreachable!("a parked front with no rival is taken"),
                    }
                }
            };
            match self.route(worker, id, at) {
                Route::Here => return Some((id, at)),
                Route::Handoff(owner) => self.hand_off(owner, id, at, round),
                Route::Park(owner) => self.park(owner, id, at, round.now),
            }
        }
    }

    /// Leases task `id` (in `at`) to `owner`, the worker its key is bound to, which has a
    /// free credit, in the middle of serving another worker.
    fn hand_off(&mut self, owner: Arc<str>, id: TaskId, at: Slot, round: &mut Round) {
        let indexed = self.unindex(&owner);
        let lease = self.lease_to(id, at, &owner, round.now, round.wall);
        let session = self
            .workers
            .get_mut(&owner)
            .expect("bound workers are attached");
        session.credits -= 1;
        session.leases.insert(id);
        round.add(&owner, &session.sink, vec![lease]);
        if indexed {
            self.index(&owner);
        }
    }

    /// Puts `worker` in its strategy's index of workers with credits, if it has any.
    pub(super) fn index(&mut self, worker: &Arc<str>) {
        let s = &self.workers[worker];
        if s.credits == 0 {
            return;
        }
        match s.routing {
            RoutingStrategy::LeastLoaded => {
                self.with_credits
                    .insert((Reverse(s.credits), worker.clone()));
            }
            RoutingStrategy::RoundRobin => {
                self.rotation.insert((s.turn, worker.clone()));
            }
        }
    }

    /// Takes `worker` out of its strategy's index; true when it was there.
    pub(super) fn unindex(&mut self, worker: &Arc<str>) -> bool {
        let s = &self.workers[worker];
        match s.routing {
            RoutingStrategy::LeastLoaded => self
                .with_credits
                .remove(&(Reverse(s.credits), worker.clone())),
            RoutingStrategy::RoundRobin => self.rotation.remove(&(s.turn, worker.clone())),
        }
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

    /// The best live task among `classes` (highest priority, then oldest), left in place:
    /// (class, lane, sequence number, slot).
    fn peek_best(&mut self, classes: &[usize]) -> Option<(usize, usize, u64, Slot)> {
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
        best
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
        self.bind_on_lease(worker, id, at);
        self.save(id);
        self.save_attempt(id);
        lease
    }
}
