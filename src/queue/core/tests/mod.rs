//! Tests of the queue's rules, driven through `QueueCore` alone: fake workers are test sinks,
//! time is an `Instant` the test moves by hand, and nothing sleeps.
//!
//! Every test ends (and the property tests check after every step) with [`Harness::check`],
//! which recounts the queue's bookkeeping from the tasks themselves.

mod affinity;
mod cancel;
mod list;
mod ordering;
mod retention;
mod retry;
mod round_robin;
mod routing;
mod shed;
mod stale;
mod submit;
mod timeout;
mod workers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::{Admission, AttemptOutcome, AttemptReport, LeaseSink, QueueCore};
use crate::events::EventKind;
use crate::handler::TaskError;
use crate::queue::{QueueConfig, QueueError, Submitted};
use crate::task::{
    Lease, LeaseToken, Payload, TaskId, TaskOutcome, TaskSnapshot, TaskSpec, TaskStatus,
};
use crate::worker::{Capabilities, RoutingStrategy};

/// A fake worker's end of the queue: records what it was handed and told to stop.
#[derive(Debug, Default)]
struct TestSink {
    leases: Mutex<Vec<Lease>>,
    cancelled: Mutex<Vec<TaskId>>,
    /// Its pool's routing, as a local worker's sink reports it.
    routing: RoutingStrategy,
}

impl TestSink {
    fn cancelled(&self) -> Vec<TaskId> {
        self.cancelled.lock().unwrap().clone()
    }

    fn leased(&self) -> Vec<(TaskId, u32)> {
        let leases = self.leases.lock().unwrap();
        leases.iter().map(|l| (l.task_id, l.attempt())).collect()
    }
}

impl LeaseSink for TestSink {
    fn deliver(&self, leases: Vec<Lease>) -> Result<(), Vec<Lease>> {
        self.leases.lock().unwrap().extend(leases);
        Ok(())
    }

    fn cancel(&self, task_id: TaskId) {
        self.cancelled.lock().unwrap().push(task_id);
    }

    fn routing(&self) -> RoutingStrategy {
        self.routing
    }
}

/// A queue core plus a clock and the fake workers attached to it. Plays the part of the
/// queue actor: hands deliveries and cancels to the sinks after each step.
struct Harness {
    core: QueueCore,
    now: Instant,
    sinks: HashMap<String, Arc<TestSink>>,
    /// The token of every lease handed out, by worker, task and attempt: what an honest
    /// worker reports with.
    tokens: HashMap<(String, TaskId, u32), LeaseToken>,
}

impl Harness {
    fn new(config: QueueConfig) -> Self {
        let mut core = QueueCore::new(config);
        core.out.events_on = true;
        Self {
            core,
            now: Instant::now(),
            sinks: HashMap::new(),
            tokens: HashMap::new(),
        }
    }

    fn with_defaults() -> Self {
        Self::new(QueueConfig::default())
    }

    /// Attaches worker `name` (incarnation 1) serving `types`, with `labels` and `credits`.
    fn worker(
        &mut self,
        name: &str,
        types: &[&str],
        labels: &[&str],
        credits: u32,
    ) -> Arc<TestSink> {
        self.worker_incarnation(name, 1, types, labels, credits)
    }

    fn worker_incarnation(
        &mut self,
        name: &str,
        incarnation: u64,
        types: &[&str],
        labels: &[&str],
        credits: u32,
    ) -> Arc<TestSink> {
        self.attach_sink(
            name,
            incarnation,
            types,
            labels,
            credits,
            TestSink::default(),
        )
    }

    /// Attaches worker `name` (incarnation 1) of a round-robin pool, serving `types`.
    fn rr_worker(&mut self, name: &str, types: &[&str], credits: u32) -> Arc<TestSink> {
        let sink = TestSink {
            routing: RoutingStrategy::RoundRobin,
            ..TestSink::default()
        };
        self.attach_sink(name, 1, types, &[], credits, sink)
    }

    fn attach_sink(
        &mut self,
        name: &str,
        incarnation: u64,
        types: &[&str],
        labels: &[&str],
        credits: u32,
        sink: TestSink,
    ) -> Arc<TestSink> {
        let sink = Arc::new(sink);
        let caps = Capabilities {
            task_types: types.iter().map(|t| Arc::from(*t)).collect(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
        };
        self.core
            .attach(Arc::from(name), incarnation, caps, credits, sink.clone());
        self.sinks.insert(name.to_string(), sink.clone());
        self.flush();
        sink
    }

    fn submit(&mut self, spec: TaskSpec) -> TaskId {
        let s = self.submit_batch(vec![spec]).expect("accepted");
        assert!(!s[0].existing);
        s[0].id
    }

    fn submit_batch(&mut self, specs: Vec<TaskSpec>) -> Result<Vec<Submitted>, QueueError> {
        self.core.submit(specs, self.now)
    }

    /// Submits a batch as `admission` says load shedding treats it: the tasks accepted,
    /// and the positions of those shed with why.
    fn submit_as(
        &mut self,
        specs: Vec<TaskSpec>,
        admission: Admission,
    ) -> Result<super::submit::Admitted, QueueError> {
        self.core
            .submit_known(specs, &HashMap::new(), self.now, admission)
    }

    /// Leases what can be leased now; returns (worker, task, attempt) in dispatch order.
    fn dispatch(&mut self) -> Vec<(String, TaskId, u32)> {
        let mut out = Vec::new();
        for d in self.core.dispatch(self.now) {
            for l in &d.leases {
                let key = (d.worker.to_string(), l.task_id, l.attempt());
                self.tokens.insert(key, l.token);
                out.push((d.worker.to_string(), l.task_id, l.attempt()));
            }
            d.sink.deliver(d.leases).expect("test sinks accept");
        }
        self.flush();
        out
    }

    /// Leases exactly one task and returns its attempt number.
    fn lease_one(&mut self, id: TaskId) -> u32 {
        let leased = self.dispatch();
        assert_eq!(leased.len(), 1, "expected one lease, got {leased:?}");
        assert_eq!(leased[0].1, id);
        leased[0].2
    }

    /// Reports as worker `worker` would for its lease of `id`'s attempt `attempt`: with the
    /// token it was handed, or, for a lease it never had, with a token it made up.
    fn report(&mut self, worker: &str, id: TaskId, attempt: u32, outcome: AttemptOutcome) {
        let token = self.token(worker, id, attempt);
        self.report_with(worker, id, token, outcome);
    }

    /// The token `worker` was handed for `id`'s attempt `attempt`, or a guess at one.
    fn token(&self, worker: &str, id: TaskId, attempt: u32) -> LeaseToken {
        let key = (worker.to_string(), id, attempt);
        self.tokens.get(&key).copied().unwrap_or(LeaseToken {
            epoch: self.core.epoch,
            attempt,
            nonce: fastrand::u64(..),
        })
    }

    fn report_with(
        &mut self,
        worker: &str,
        id: TaskId,
        token: LeaseToken,
        outcome: AttemptOutcome,
    ) {
        let r = AttemptReport {
            task_id: id,
            token,
            outcome,
        };
        self.core.report(worker, vec![r], self.now);
        self.flush();
    }

    fn complete(&mut self, worker: &str, id: TaskId, attempt: u32) {
        let result = Payload::from(serde_json::json!({ "done": attempt }));
        self.report(worker, id, attempt, AttemptOutcome::Completed(result));
    }

    fn fail(&mut self, worker: &str, id: TaskId, attempt: u32, err: TaskError) {
        self.report(worker, id, attempt, AttemptOutcome::Failed(err));
    }

    fn cancel(&mut self, id: TaskId) -> Result<TaskStatus, QueueError> {
        let r = self.core.cancel(id);
        self.flush();
        r
    }

    fn detach(&mut self, worker: &str, incarnation: u64) {
        self.core.detach(worker, incarnation);
        self.flush();
    }

    /// Moves the clock on and lets the queue act on it.
    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.core.tick(self.now);
        self.flush();
    }

    /// Delivers the cancels the core asked for, as the actor does.
    fn flush(&mut self) {
        for (sink, id) in self.core.out.cancels.drain(..) {
            sink.cancel(id);
        }
    }

    fn snap(&self, id: TaskId) -> TaskSnapshot {
        self.core.snapshot(id).expect("task is known")
    }

    fn status(&self, id: TaskId) -> TaskStatus {
        self.snap(id).status
    }

    /// Final outcomes announced for `id`, in order.
    fn outcomes(&self, id: TaskId) -> Vec<TaskOutcome> {
        let finished = &self.core.out.finished;
        finished
            .iter()
            .filter(|(i, _)| *i == id)
            .map(|(_, o)| o.clone())
            .collect()
    }

    fn dead_ids(&self) -> Vec<TaskId> {
        self.core
            .dead_letters(usize::MAX)
            .iter()
            .map(|s| s.id)
            .collect()
    }

    /// How long until the queue next needs a tick, from now.
    fn next_wake_in(&self) -> Option<Duration> {
        self.core.next_wake().map(|at| at - self.now)
    }

    fn count_events(&self, pred: impl Fn(&EventKind) -> bool) -> usize {
        self.core.out.events.iter().filter(|e| pred(e)).count()
    }

    /// Recounts the core's bookkeeping from its tasks and panics on any mismatch.
    fn check(&self) {
        let c = &self.core;
        let mut by_priority = [0usize; 4];
        let mut class_live = vec![0usize; c.classes.len()];
        let mut class_tasks = vec![0usize; c.classes.len()];
        c.tasks.check();
        for (_, e) in c.tasks.iter() {
            class_tasks[e.class()] += 1;
        }
        let counted: Vec<usize> = c.classes.iter().map(|k| k.tasks).collect();
        assert_eq!(class_tasks, counted, "tasks per class");
        for (slot, class) in c.classes.iter().enumerate() {
            let indexed = c.class_index.get(&class.key) == Some(&slot);
            assert_eq!(
                indexed,
                class.tasks > 0,
                "class {slot} indexed iff it has tasks"
            );
            assert_eq!(
                c.free_classes.contains(&slot),
                class.tasks == 0,
                "free slot {slot}"
            );
        }
        let (mut running, mut pending) = (0, 0);
        for (id, e) in c.tasks.iter() {
            match e.status() {
                TaskStatus::Queued => {
                    by_priority[e.priority.index()] += 1;
                    class_live[e.class()] += 1;
                    assert!(e.run().lease.is_none(), "queued task {id} holds a lease");
                }
                TaskStatus::Pending => {
                    pending += 1;
                    let at = e.ready_at().expect("pending task has a ready time");
                    assert!(
                        c.delayed.contains(&(at, *id)),
                        "pending {id} not in delayed"
                    );
                }
                TaskStatus::Running => {
                    running += 1;
                    let lease = e.run().lease.as_ref().expect("running task has a lease");
                    let session = &c.workers[&lease.worker];
                    assert!(session.leases.contains(id), "{id} missing from its session");
                    assert!(c.deadlines.contains(&(lease.deadline, *id)));
                }
                _ => assert!(e.run().lease.is_none(), "finished task {id} holds a lease"),
            }
        }
        assert_eq!(by_priority, c.queued_by_priority, "queued by priority");
        let live: Vec<usize> = c.classes.iter().map(|k| k.live).collect();
        assert_eq!(class_live, live, "live tasks per class");
        assert_eq!(running, c.running, "running");
        assert_eq!(pending, c.delayed.len(), "delayed entries");
        assert_eq!(c.deadlines.len(), running, "one deadline per lease");
        for (_, id) in c.deadlines.after(None) {
            assert_eq!(
                c.tasks[&id].status(),
                TaskStatus::Running,
                "deadline of {id}"
            );
        }
        let with_credits: std::collections::BTreeSet<_> = c
            .workers
            .iter()
            .filter(|(_, s)| s.credits > 0 && s.routing == RoutingStrategy::LeastLoaded)
            .map(|(id, s)| (std::cmp::Reverse(s.credits), id.clone()))
            .collect();
        assert_eq!(
            with_credits, c.with_credits,
            "index of workers with credits"
        );
        let rotation: std::collections::BTreeSet<_> = c
            .workers
            .iter()
            .filter(|(_, s)| s.credits > 0 && s.routing == RoutingStrategy::RoundRobin)
            .map(|(id, s)| (s.turn, id.clone()))
            .collect();
        assert_eq!(rotation, c.rotation, "rotation of round-robin workers");
        c.check_affinity();
        for session in c.workers.values() {
            for id in &session.leases {
                assert_eq!(c.tasks[id].status(), TaskStatus::Running, "lease of {id}");
            }
        }
        for (seq, id) in &c.dead {
            let e = &c.tasks[id];
            assert_eq!(e.run().dead_seq, Some(*seq), "dead-letter seq of {id}");
            assert!(matches!(
                e.status(),
                TaskStatus::Failed | TaskStatus::Timeout
            ));
        }
        let (mut live, mut finished, mut dead) = (0u64, 0u64, 0u64);
        let mut finished_count = 0;
        for e in c.tasks.iter().map(|(_, e)| e) {
            match (e.status().is_finished(), e.run().dead_seq.is_some()) {
                (false, _) => live += e.payload.len() as u64,
                (true, true) => dead += e.bytes(),
                (true, false) => {
                    finished += e.bytes();
                    finished_count += 1;
                }
            }
        }
        assert_eq!(finished_count, c.finished_count, "finished tasks kept");
        assert!(
            finished_count <= c.config.max_finished_tasks,
            "retention bound"
        );
        assert_eq!(
            (live, finished, dead),
            (c.live_bytes, c.finished_bytes, c.dead_bytes),
            "bytes held (live, finished, dead)"
        );
        let stats = c.stats();
        assert_eq!(stats.queue_size, stats.queued + stats.pending);
        assert_eq!(stats.dead_lettered, c.dead.len());
    }
}

/// A task of `task_type` with a null payload and default options.
fn spec(task_type: &str) -> TaskSpec {
    TaskSpec::from_payload(task_type, Payload::null())
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
