//! A worker actor against a recording uplink: deliveries of many attempts run on one task,
//! and what each attempt did comes back in the worker's reports.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorRef};
use tokio::sync::mpsc;

use super::*;
use crate::events::EventBus;
use crate::handler::{handler_fn, HandlerRegistry, TaskContext};
use crate::task::{Lease, LeaseToken, TaskId};

/// The uplink's side of the protocol, as the worker sent it.
#[derive(Debug)]
struct Recorder {
    calls: mpsc::UnboundedSender<WorkerCall>,
}

impl Uplink for Recorder {
    fn call(&self, call: WorkerCall) {
        let _ = self.calls.send(call);
    }
}

/// A started worker, its lease sink and what it reports.
struct Harness {
    worker: ActorRef<WorkerMsg>,
    handle: tokio::task::JoinHandle<()>,
    sink: Arc<dyn LeaseSink>,
    calls: mpsc::UnboundedReceiver<WorkerCall>,
    /// Outcomes reported so far, by task.
    seen: Vec<(TaskId, AttemptOutcome)>,
}

/// Counts the `slow` handlers that stopped: cancelled, or dropped unfinished.
struct Stopped(Arc<AtomicUsize>);

impl Drop for Stopped {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Handlers the tests use: `instant` (returns its input), `slow` (waits until cancelled),
/// `panic`, `fail` (permanent failure) and `sleep` (sleeps its input in ms).
fn handlers(cancelled: Arc<AtomicUsize>) -> HandlerRegistry {
    let registry = HandlerRegistry::new();
    registry.register(
        "instant",
        handler_fn(|_ctx: TaskContext, n: u64| async move { Ok(n) }),
    );
    registry.register(
        "slow",
        handler_fn(move |ctx: TaskContext, _: ()| {
            let stopped = Stopped(cancelled.clone());
            async move {
                let _stopped = stopped;
                ctx.cancelled().await;
                Ok(())
            }
        }),
    );
    registry.register(
        "panic",
        handler_fn(|_ctx: TaskContext, _: ()| async move {
            if true {
                panic!("boom");
            }
            Ok(())
        }),
    );
    registry.register(
        "fail",
        handler_fn(
            |_ctx: TaskContext, _: ()| async move { Err::<(), _>(TaskError::permanent("nope")) },
        ),
    );
    registry.register(
        "sleep",
        handler_fn(|_ctx: TaskContext, ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(ms)
        }),
    );
    registry
}

async fn start(registry: &HandlerRegistry, slots: u32) -> Harness {
    let (tx, mut calls) = mpsc::unbounded_channel();
    let config = WorkerConfig {
        max_concurrent_tasks: slots,
        heartbeat_interval: Duration::from_secs(3600),
        ..WorkerConfig::default()
    };
    let args = WorkerArgs {
        shared: Arc::new(WorkerShared::new("p/w-1".into(), "p".into(), config)),
        handlers: registry.snapshot(),
        queue: UplinkRef::new(Recorder { calls: tx }),
        registry: WorkerRegistry::new(),
        events: EventBus::default(),
    };
    let (worker, handle) = Actor::spawn(None, Worker, args).await.expect("spawns");
    let sink = match calls.recv().await.expect("attaches") {
        WorkerCall::Attach { sink, .. } => sink,
        _ => panic!("the first call is the attach"),
    };
    Harness {
        worker,
        handle: tokio::spawn(async move {
            let _ = handle.await;
        }),
        sink,
        calls,
        seen: Vec::new(),
    }
}

fn lease(task_type: &str, input: Payload, timeout: Option<Duration>) -> Lease {
    Lease {
        task_id: TaskId::new(),
        token: LeaseToken {
            epoch: 1,
            attempt: 1,
            nonce: 7,
        },
        task_type: task_type.into(),
        payload: input,
        timeout,
        lease_time: None,
        trace_id: crate::task::TraceId::random(),
    }
}

impl Harness {
    /// Waits until `n` outcomes have been reported in all, and checks that the credits
    /// handed back match them.
    async fn reported(&mut self, n: usize) {
        while self.seen.len() < n {
            let call = tokio::time::timeout(Duration::from_secs(10), self.calls.recv())
                .await
                .expect("reports within 10 s")
                .expect("uplink open");
            if let WorkerCall::Report {
                reports, credits, ..
            } = call
            {
                assert_eq!(
                    credits as usize,
                    reports.len(),
                    "one credit per ended attempt"
                );
                self.seen
                    .extend(reports.into_iter().map(|r| (r.task_id, r.outcome)));
            }
        }
        assert_eq!(self.seen.len(), n, "no attempt reported twice");
    }

    fn outcome(&self, id: TaskId) -> &AttemptOutcome {
        &self
            .seen
            .iter()
            .find(|(t, _)| *t == id)
            .expect("reported")
            .1
    }
}

#[tokio::test]
async fn many_instant_attempts_are_all_reported_once() {
    let registry = handlers(Arc::default());
    let mut h = start(&registry, 1000).await;
    let leases: Vec<Lease> = (0..1000u64)
        .map(|n| lease("instant", Payload::encode(&n).unwrap(), None))
        .collect();
    let ids: Vec<TaskId> = leases.iter().map(|l| l.task_id).collect();
    h.sink.deliver(leases).expect("delivered");
    h.reported(1000).await;
    for (n, id) in ids.iter().enumerate() {
        match h.outcome(*id) {
            AttemptOutcome::Completed(p) => assert_eq!(p.decode::<u64>().unwrap(), n as u64),
            other => panic!("task {n}: {other:?}"),
        }
    }
    h.worker.stop(None);
}

#[tokio::test]
async fn a_mix_of_instant_and_slow_attempts_ends_each_its_own_way() {
    let cancelled = Arc::new(AtomicUsize::new(0));
    let registry = handlers(cancelled.clone());
    let mut h = start(&registry, 16).await;
    let batch = vec![
        lease("instant", Payload::encode(&1u64).unwrap(), None),
        lease("sleep", Payload::encode(&20u64).unwrap(), None),
        lease("slow", Payload::null(), None),
        lease("panic", Payload::null(), None),
        lease("fail", Payload::null(), None),
        lease("slow", Payload::null(), Some(Duration::from_millis(30))),
        lease("missing", Payload::null(), None),
    ];
    let ids: Vec<TaskId> = batch.iter().map(|l| l.task_id).collect();
    h.sink.deliver(batch).expect("delivered");
    // All but the one waiting for cancellation end on their own.
    h.reported(6).await;
    assert!(matches!(h.outcome(ids[0]), AttemptOutcome::Completed(_)));
    assert!(matches!(h.outcome(ids[1]), AttemptOutcome::Completed(_)));
    match h.outcome(ids[3]) {
        AttemptOutcome::Failed(e) => assert!(e.message().contains("panicked: boom"), "{e:?}"),
        other => panic!("panic: {other:?}"),
    }
    match h.outcome(ids[4]) {
        AttemptOutcome::Failed(e) => assert_eq!(e.message(), "nope"),
        other => panic!("fail: {other:?}"),
    }
    assert!(matches!(
        h.outcome(ids[5]),
        AttemptOutcome::TimedOut(t) if *t == Duration::from_millis(30)
    ));
    match h.outcome(ids[6]) {
        AttemptOutcome::Failed(e) => assert!(e.message().contains("no handler"), "{e:?}"),
        other => panic!("missing: {other:?}"),
    }
    // The slow one runs until it is cancelled.
    h.sink.cancel(ids[2]);
    h.reported(7).await;
    assert!(matches!(h.outcome(ids[2]), AttemptOutcome::Cancelled));
    h.worker.stop(None);
}

#[tokio::test]
async fn an_attempt_cancelled_before_its_first_poll_never_runs() {
    let ran = Arc::new(Mutex::new(Vec::new()));
    let registry = handlers(Arc::default());
    let seen = ran.clone();
    registry.register(
        "record",
        handler_fn(move |ctx: TaskContext, _: ()| {
            seen.lock().unwrap().push(ctx.task_id());
            async move { Ok(()) }
        }),
    );
    let mut h = start(&registry, 8).await;
    // Both messages are in the worker's mailbox before it runs (this test's runtime has one
    // thread, and nothing awaits between the two sends), so it handles the cancel right
    // after the delivery and before the delivery's task gets to poll.
    let first = lease("record", Payload::null(), None);
    let second = lease("record", Payload::null(), None);
    let (a, b) = (first.task_id, second.task_id);
    h.sink.deliver(vec![first, second]).expect("delivered");
    h.sink.cancel(a);
    h.reported(2).await;
    assert!(matches!(h.outcome(a), AttemptOutcome::Cancelled));
    assert!(matches!(h.outcome(b), AttemptOutcome::Completed(_)));
    assert_eq!(
        *ran.lock().unwrap(),
        vec![b],
        "the cancelled handler never ran"
    );
    h.worker.stop(None);
}

#[tokio::test]
async fn a_worker_that_dies_mid_delivery_stops_its_attempts() {
    let cancelled = Arc::new(AtomicUsize::new(0));
    let registry = handlers(cancelled.clone());
    let mut h = start(&registry, 8).await;
    let batch = vec![
        lease("slow", Payload::null(), None),
        lease("instant", Payload::encode(&1u64).unwrap(), None),
        lease("slow", Payload::null(), None),
    ];
    h.sink.deliver(batch).expect("delivered");
    h.reported(1).await;
    h.worker.kill();
    h.handle.await.unwrap();
    // Nothing outlives the dead worker: both slow attempts stop.
    tokio::time::timeout(Duration::from_secs(10), async {
        while cancelled.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the slow attempts are cancelled");
    // And its sink refuses new leases, handing them back.
    let refused = h
        .sink
        .deliver(vec![lease("instant", Payload::null(), None)])
        .expect_err("the worker is gone");
    assert_eq!(refused.len(), 1);
}
