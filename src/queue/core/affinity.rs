//! Affinity: tasks that share an `affinity_key` run on one worker.
//!
//! It rides on the pull mechanism rather than beside it. Workers still ask for tasks with
//! their credits, and `dispatch` still serves them in their pool's order; what changes is
//! what happens to a task taken from the queue for worker `W` whose key is bound to another
//! worker `B`:
//!
//! - `B` has a free slot: the task is leased to `B` there and then (a hand-off), whoever
//!   was being served;
//! - `B` has none: the task is *parked* on `B` (taken out of its class lanes into `B`'s own
//!   short list) and `B` takes it, best first beside its class lanes, as soon as it has a
//!   slot. A parked task waits at most `affinity_wait`; then it is put back in its class
//!   lanes, released to any worker (the binding stays with `B`, which still holds the
//!   key's locality; the fallback is counted).
//!
//! A key is bound when a task carrying it is leased and the key has no binding (the first
//! of its tasks, or the first after its worker left or its binding was dropped to keep to
//! `max_affinity_keys`). When a worker detaches, its bindings go and its parked tasks
//! return to their lanes at once, so the next lease of each key binds it to a live worker.
//! A worker that cannot run a task's type or labels is no preference for it.

use std::cmp::Reverse;

use super::*;
use crate::queue::bindings::Bindings;
use crate::task::IdMap;

/// Affinity bindings and the tasks waiting for their bound worker.
pub(super) struct Affinity {
    /// Affinity key → worker.
    pub(super) bindings: Bindings,
    /// Tasks parked on their bound worker: exactly the live ones (a lease, a cancel or a
    /// release takes a task out).
    parked: IdMap<Parked>,
    /// Parked tasks by the time they stop waiting.
    until: Sorted<(Instant, TaskId)>,
    /// Tasks released from waiting, with the sequence number they were queued again under:
    /// they go to whichever worker takes them (until they are queued again for another
    /// reason, a retry, which gives them a new number).
    released: IdMap<u64>,
    /// Parked tasks released to any worker after waiting `affinity_wait`.
    pub(super) fallbacks: u64,
}

struct Parked {
    worker: Arc<str>,
    /// The sequence number it was parked under (its entry's, while it stays parked).
    seq: u64,
    /// When it stops waiting.
    until: Instant,
}

impl Affinity {
    pub(super) fn new(max_keys: usize) -> Self {
        Self {
            bindings: Bindings::new(max_keys),
            parked: IdMap::default(),
            until: Sorted::default(),
            released: IdMap::default(),
            fallbacks: 0,
        }
    }

    /// Takes `id` out of the parked tasks (its entry in its worker's list goes stale).
    pub(super) fn unpark(&mut self, id: TaskId) {
        if self.parked.is_empty() {
            return;
        }
        if let Some(p) = self.parked.remove(&id) {
            self.until.remove(&(p.until, id));
        }
    }

    /// Forgets `id` entirely (it left memory).
    pub(super) fn forget(&mut self, id: TaskId) {
        self.unpark(id);
        if !self.released.is_empty() {
            self.released.remove(&id);
        }
    }

    /// When the next parked task stops waiting.
    pub(super) fn next_release(&self) -> Option<Instant> {
        self.until.first().map(|x| x.0)
    }

    /// Tasks waiting for their bound worker now.
    pub(super) fn waiting(&self) -> usize {
        self.parked.len()
    }
}

/// Where a task taken from the queue for a worker goes.
pub(super) enum Route {
    /// To the worker being served.
    Here,
    /// To the worker its key is bound to, which has a free slot.
    Handoff(Arc<str>),
    /// Onto the list of the worker its key is bound to, which has none.
    Park(Arc<str>),
}

impl QueueCore {
    /// Where task `id` (in `at`), just taken from its class lanes for `worker`, goes.
    pub(super) fn route(&self, worker: &Arc<str>, id: TaskId, at: Slot) -> Route {
        let e = self.tasks.at(at);
        let Some(key) = e.options().affinity_key.as_deref() else {
            return Route::Here;
        };
        if self.affinity.released.get(&id) == Some(&e.seq()) {
            return Route::Here;
        }
        let Some(owner) = self.affinity.bindings.get(key) else {
            return Route::Here;
        };
        if owner == worker {
            return Route::Here;
        }
        let session = self
            .workers
            .get(owner)
            .expect("bindings name attached workers only");
        if !self.classes[e.class()].accepts(&session.caps) {
            return Route::Here;
        }
        if session.credits > 0 {
            Route::Handoff(owner.clone())
        } else if self.config.affinity_wait.is_zero() {
            Route::Here
        } else {
            Route::Park(owner.clone())
        }
    }

    /// Parks queued task `id` (in `at`, just taken from its class lanes) on `owner`, for at
    /// most `affinity_wait` from `now`. A new sequence number makes its lane entries stale.
    pub(super) fn park(&mut self, owner: Arc<str>, id: TaskId, at: Slot, now: Instant) {
        self.seq += 1;
        let seq = self.seq;
        let e = self.tasks.at_mut(at);
        e.set_seq(seq);
        let lane = e.priority.index();
        let until = now + self.config.affinity_wait;
        self.workers
            .get_mut(&owner)
            .expect("parked on an attached worker")
            .parked
            .insert((Reverse(lane), seq, id));
        self.affinity.until.insert((until, id));
        self.affinity.parked.insert(
            id,
            Parked {
                worker: owner,
                seq,
                until,
            },
        );
    }

    /// The best live task parked on `worker`: (lane, sequence number, id, slot); stale
    /// entries before it are dropped.
    pub(super) fn parked_front(&mut self, worker: &str) -> Option<(usize, u64, TaskId, Slot)> {
        let session = self.workers.get_mut(worker)?;
        while let Some(&(Reverse(lane), seq, id)) = session.parked.first() {
            let live = self.affinity.parked.get(&id).is_some_and(|p| p.seq == seq);
            if live {
                return Some((lane, seq, id, self.tasks.slot_of(&id)));
            }
            session.parked.pop_first();
        }
        None
    }

    /// Takes the front of `worker`'s parked list (after [`Self::parked_front`] found it
    /// live); the lease that follows takes it out of the parked tasks.
    pub(super) fn pop_parked(&mut self, worker: &str) {
        if let Some(s) = self.workers.get_mut(worker) {
            s.parked.pop_first();
        }
    }

    /// Task `id` (in `at`) is leased to `worker`: it no longer waits, and its key, if it
    /// has no binding, is bound to `worker` (a binding to this worker counts as used).
    pub(super) fn bind_on_lease(&mut self, worker: &Arc<str>, id: TaskId, at: Slot) {
        self.affinity.unpark(id);
        let Some(key) = self.tasks.at(at).options().affinity_key.as_deref() else {
            return;
        };
        if !self.affinity.released.is_empty() {
            self.affinity.released.remove(&id);
        }
        // Bound to another worker (the task was released after waiting for it, that worker
        // cannot run it, or `affinity_wait` is zero and it was busy): the key stays there.
        if self
            .affinity
            .bindings
            .get(key)
            .is_none_or(|owner| owner == worker)
        {
            self.affinity.bindings.bind(key, worker);
        }
    }

    /// Puts queued task `id` back in its class lanes under a new sequence number (it was
    /// parked); returns that number.
    fn relane(&mut self, id: TaskId) -> u64 {
        self.seq += 1;
        let seq = self.seq;
        let e = self.tasks.get_mut(&id).expect("task exists");
        e.set_seq(seq);
        let priority = e.priority;
        let class = &mut self.classes[e.class()];
        class.lanes[priority.index()].push_back((seq, id));
        if self.config.priority_aging.is_some() {
            class
                .arrivals
                .push_back((self.clock, Ready { priority, seq, id }));
        }
        seq
    }

    /// Releases to any worker the parked tasks whose wait ended by `now`.
    pub(super) fn release_parked(&mut self, now: Instant) {
        while let Some(&(until, id)) = self.affinity.until.first() {
            if until > now {
                break;
            }
            self.affinity.until.pop_first();
            let p = self
                .affinity
                .parked
                .remove(&id)
                .expect("one wait per parked task");
            if let Some(s) = self.workers.get_mut(&p.worker) {
                let lane = self.tasks[&id].priority.index();
                s.parked.remove(&(Reverse(lane), p.seq, id));
            }
            let seq = self.relane(id);
            self.affinity.released.insert(id, seq);
            self.affinity.fallbacks += 1;
            tracing::debug!(task_id = %id, worker = %p.worker, "stopped waiting for its bound worker");
        }
    }

    /// `worker` left: its keys are unbound and the tasks parked on it (its list, taken out
    /// of its session) go back to their lanes.
    pub(super) fn unbind(
        &mut self,
        worker: &Arc<str>,
        parked: BTreeSet<(Reverse<usize>, u64, TaskId)>,
    ) {
        self.affinity.bindings.unbind_worker(worker);
        self.return_parked(parked);
    }

    /// The live tasks of a worker's parked list go back to their lanes, in the order they
    /// were parked.
    pub(super) fn return_parked(&mut self, parked: BTreeSet<(Reverse<usize>, u64, TaskId)>) {
        let mut ids: Vec<(u64, TaskId)> = parked
            .into_iter()
            .filter(|&(_, seq, id)| self.affinity.parked.get(&id).is_some_and(|p| p.seq == seq))
            .map(|(_, seq, id)| (seq, id))
            .collect();
        ids.sort_unstable();
        for (_, id) in ids {
            self.affinity.unpark(id);
            self.relane(id);
        }
    }

    /// Checks the affinity bookkeeping against the tasks and workers (for tests).
    #[cfg(test)]
    pub(super) fn check_affinity(&self) {
        for (key, worker) in self.affinity.bindings.iter() {
            assert!(
                self.workers.contains_key(worker),
                "key {key} bound to {worker}, which is not attached"
            );
        }
        assert!(self.affinity.bindings.len() <= self.config.max_affinity_keys);
        assert_eq!(self.affinity.parked.len(), self.affinity.until.len());
        for (id, p) in &self.affinity.parked {
            let e = &self.tasks[id];
            assert_eq!(e.status(), TaskStatus::Queued, "parked task {id} is queued");
            assert_eq!(e.seq(), p.seq, "parked task {id} under its parked seq");
            assert!(self.affinity.until.contains(&(p.until, *id)));
            let s = &self.workers[&p.worker];
            assert!(
                s.parked
                    .contains(&(Reverse(e.priority.index()), p.seq, *id)),
                "parked task {id} on its worker's list"
            );
        }
    }
}
