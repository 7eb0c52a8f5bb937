//! The codec: every message that crosses machines is encoded here, once, with postcard.
//!
//! A frame is `(WIRE_VERSION, sender name, session key, body)`. The sender's name comes first
//! so that a body that does not decode (a peer on another version, a corrupted frame) can
//! still be blamed on someone: decoding never fails, it yields a `Malformed` message that the
//! receiver counts and logs with the peer's name.
//!
//! The name is a claim, not an identity: ractor_cluster hands a frame to its actor without
//! saying which session it came on. The session key is what binds a frame to a session: the
//! gate draws one at random for each registration and sends it only over the session the node
//! was registered on (in `Welcome`); the node puts it in every frame after that, and the gate
//! refuses frames whose key is not the one of the node they name.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::pool::PoolStats;
use crate::task::{Lease, LeaseToken, TaskId};
use crate::worker::WorkerInfo;
use crate::worker::{AttemptReport, Capabilities};

/// Bumped whenever a wire type changes shape.
pub(crate) const WIRE_VERSION: u8 = 5;

/// The secret that binds a node's frames to the session it was registered on (128 random
/// bits from the operating system).
pub(crate) type SessionKey = u128;

/// The key of a frame sent before any welcome (a hello).
pub(crate) const NO_KEY: SessionKey = 0;

/// A fresh session key, from the operating system's random source.
pub(crate) fn new_session_key() -> SessionKey {
    let mut bytes = [0u8; 16];
    // Without an OS random source, a key guessed would let one node speak for another:
    // fall back to a clock-seeded value only in that (unheard-of) case, loudly.
    if let Err(e) = getrandom::fill(&mut bytes) {
        tracing::error!(error = %e, "no OS random source for session keys");
        return fastrand::u128(1..) ^ std::time::UNIX_EPOCH.elapsed().map_or(0, |d| d.as_nanos());
    }
    SessionKey::from_le_bytes(bytes).max(1)
}

/// A decoded frame.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Frame<B> {
    /// The name the sender claims.
    pub(crate) from: String,
    /// The session key it carries ([`NO_KEY`] before a welcome).
    pub(crate) key: SessionKey,
    /// What it says.
    pub(crate) body: B,
}

/// Encodes a frame. Wire types are plain data: encoding cannot fail short of running out of
/// memory, which a panic reports as well as anything could.
pub(crate) fn encode<B: Serialize>(from: &str, key: SessionKey, body: &B) -> Vec<u8> {
    postcard::to_stdvec(&(WIRE_VERSION, from, key, body)).expect("wire types always encode")
}

/// Decodes a frame into its sender, key and body, or says what was wrong with it (naming
/// the sender when at least that much was readable). Never panics, whatever the bytes.
pub(crate) fn decode<B: DeserializeOwned>(bytes: &[u8]) -> Result<Frame<B>, BadFrame> {
    let bad = |from: Option<String>, reason: String| BadFrame { from, reason };
    let (version, rest) = postcard::take_from_bytes::<u8>(bytes)
        .map_err(|e| bad(None, format!("empty or truncated frame: {e}")))?;
    let (from, rest) = postcard::take_from_bytes::<String>(rest)
        .map_err(|e| bad(None, format!("unreadable sender name: {e}")))?;
    if version != WIRE_VERSION {
        return Err(bad(
            Some(from),
            format!("wire version {version}, expected {WIRE_VERSION}"),
        ));
    }
    let (key, rest) = match postcard::take_from_bytes::<SessionKey>(rest) {
        Ok(read) => read,
        Err(e) => return Err(bad(Some(from), format!("unreadable session key: {e}"))),
    };
    match postcard::from_bytes::<B>(rest) {
        Ok(body) => Ok(Frame { from, key, body }),
        Err(e) => Err(bad(Some(from), format!("undecodable body: {e}"))),
    }
}

/// Payload bytes one frame carries at most when it batches several tasks; a single task
/// whose payload is bigger travels alone (payloads are limited at submit to
/// `QueueConfig::max_payload_bytes`, under one frame). ractor_cluster drops the session of a
/// peer that sends a frame over its limit (16 MiB), so batches are cut to stay far below it.
pub(crate) const BATCH_BYTES: usize = 4 * 1024 * 1024;

/// The most a single result may weigh to cross the network: one frame less room for the
/// rest of its message.
pub(crate) const MAX_RESULT_BYTES: usize = crate::CLUSTER_FRAME_BYTES - 64 * 1024;

/// The most of a failure's message that crosses the network; longer ones are cut (a stack
/// trace or a tool's whole output gains nothing past this, and a message past a frame would
/// end the session every time the attempt is reported).
pub(crate) const MAX_ERROR_BYTES: usize = 64 * 1024;

/// The most of a progress message that crosses the network; longer ones are cut (on a
/// character boundary). Progress is a status line, not a channel for output.
pub(crate) const MAX_PROGRESS_BYTES: usize = 1024;

/// Cuts `message` to at most [`MAX_PROGRESS_BYTES`], on a character boundary.
pub(crate) fn cap_progress(message: &mut String) {
    if message.len() > MAX_PROGRESS_BYTES {
        let mut end = MAX_PROGRESS_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
}

/// A progress fraction as the coordinator publishes it: within 0.0..=1.0, NaN as 0.0.
pub(crate) fn clean_fraction(fraction: f32) -> f32 {
    if fraction.is_nan() {
        0.0
    } else {
        fraction.clamp(0.0, 1.0)
    }
}

/// Splits `items` into batches of at most [`BATCH_BYTES`] payload bytes (by `weight`), in
/// order; an item heavier than that goes alone.
pub(crate) fn batches<T>(items: Vec<T>, weight: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for item in items {
        let w = weight(&item);
        if !current.is_empty() && bytes + w > BATCH_BYTES {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += w;
        current.push(item);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Payload bytes a worker-side change carries (results of completed attempts).
pub(crate) fn up_weight(up: &Up) -> usize {
    match up {
        Up::Report { reports, .. } => reports.iter().map(report_weight).sum(),
        Up::Progress { message, .. } => message.len(),
        _ => 0,
    }
}

/// Payload bytes one finished attempt carries.
pub(crate) fn report_weight(r: &AttemptReport) -> usize {
    match &r.outcome {
        crate::worker::AttemptOutcome::Completed(p) => p.len(),
        crate::worker::AttemptOutcome::Failed(e) => e.message().len(),
        _ => 0,
    }
}

/// A frame that did not decode.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BadFrame {
    /// The sender, when its name was readable.
    pub(crate) from: Option<String>,
    /// What was wrong.
    pub(crate) reason: String,
}

/// What a node sends the coordinator.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum FromNode {
    /// First contact, or contact again after the coordinator forgot the node.
    Hello(Hello),
    /// Its workers' side of the credit protocol, batched.
    Up {
        /// Numbers the node's `Up` frames (from 1, never reused by one process): the gate
        /// acknowledges the last it applied, and the node sends the reports of frames not
        /// acknowledged again after its next welcome (a gate that died lost them).
        seq: u64,
        /// The changes.
        items: Vec<Up>,
    },
    /// Alive, with its pool's load.
    Heartbeat(NodeLoad),
    /// Leaving for good (graceful shutdown, after draining).
    Leave,
}

/// A node introducing itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Hello {
    /// Random per process: tells a restarted node from the same one saying hello again.
    pub(crate) instance: u64,
    /// Its labels (`gpu=a100`).
    pub(crate) labels: Vec<String>,
    /// Task types its workers have handlers for.
    pub(crate) task_types: Vec<String>,
    /// Where its node server listens (`host:port`).
    pub(crate) address: String,
    /// The wrangle version it runs.
    pub(crate) version: String,
    /// Task slots of all its workers together: what its workers may hold at most.
    pub(crate) capacity: u32,
}

/// One change on a node's worker side: the same four calls a local worker makes on the queue.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Up {
    /// A worker (or a new incarnation of it) offers capabilities and free slots.
    Attach {
        /// `node/w-N`.
        worker: Arc<str>,
        /// Which life of the worker.
        incarnation: u64,
        /// Its task types and labels.
        caps: Capabilities,
        /// Free slots.
        credits: u32,
        /// Its slots: what it may hold at most (free slots plus tasks running).
        slots: u32,
    },
    /// A worker is gone.
    Detach {
        /// `node/w-N`.
        worker: Arc<str>,
        /// Which life of it ended.
        incarnation: u64,
    },
    /// A worker's free slots, outright (0 while draining).
    Credits {
        /// `node/w-N`.
        worker: Arc<str>,
        /// Free slots.
        credits: u32,
    },
    /// Finished attempts and the slots they freed.
    Report {
        /// `node/w-N`.
        worker: Arc<str>,
        /// The attempts.
        reports: Vec<AttemptReport>,
        /// Slots freed.
        credits: u32,
    },
    /// A worker still runs these attempts: extend their leases.
    Extend {
        /// `node/w-N`.
        worker: Arc<str>,
        /// The tasks and the tokens of the leases they run under.
        leases: Vec<(TaskId, LeaseToken)>,
    },
    /// A running attempt's progress, published by the coordinator while the lease it names
    /// is the task's current one. The node sends at most one every 50 ms per task (the
    /// last one always), each message cut to [`MAX_PROGRESS_BYTES`]. Never sent again
    /// after a rejoin: progress is a snapshot, the next one replaces it.
    Progress {
        /// `node/w-N`.
        worker: Arc<str>,
        /// The task.
        task_id: TaskId,
        /// The lease the attempt runs under.
        token: LeaseToken,
        /// Fraction done, 0.0 to 1.0.
        fraction: f32,
        /// What it is doing.
        message: String,
    },
}

/// A node's load, sent with each heartbeat: what the autoscaler and the API read.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct NodeLoad {
    /// Its pool's counters (mailbox depths and busy slots included).
    pub(crate) pool: PoolStats,
    /// Its workers.
    pub(crate) workers: Vec<WorkerInfo>,
    /// Messages waiting in the node agent's mailbox.
    pub(crate) agent_mailbox: u64,
    /// Frames from the coordinator that did not decode.
    pub(crate) bad_frames: u64,
}

/// What the coordinator sends a node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum FromGate {
    /// The node is registered: heartbeat this often; silence this long means lost.
    Welcome {
        /// Heartbeat period, ms.
        heartbeat_ms: u64,
        /// Silence after which each side gives the other up, ms.
        timeout_ms: u64,
        /// The key the node puts in every frame from now on; sent only over the session
        /// the node is registered on.
        key: SessionKey,
    },
    /// The node may not join now.
    Refused {
        /// Why.
        reason: String,
        /// When to try again, ms.
        retry_after_ms: u64,
    },
    /// Leases for one of its workers.
    Leases {
        /// `node/w-N`.
        worker: Arc<str>,
        /// The leases.
        leases: Vec<Lease>,
    },
    /// Stop one attempt.
    Cancel {
        /// `node/w-N`.
        worker: Arc<str>,
        /// The task.
        task_id: TaskId,
    },
    /// Answer to a heartbeat.
    Ack {
        /// The last `Up` frame of the node's the gate applied.
        up_to: u64,
        /// This node's share of the tasks waiting that it can serve (its task types and
        /// labels), split among the online nodes that serve them by their capacity: what
        /// its own pool's autoscaler reads as backlog.
        backlog: u64,
    },
    /// The coordinator does not know this node (it restarted, or gave the node up):
    /// say hello again.
    Rejoin,
    /// The node's leave was recorded: it may close its session.
    Farewell,
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Payload;
    use crate::worker::AttemptOutcome;

    #[test]
    fn a_frame_round_trips_with_its_sender() {
        let lease = Lease {
            task_id: TaskId::new(),
            token: LeaseToken {
                epoch: 1,
                attempt: 2,
                nonce: 42,
            },
            task_type: "echo".into(),
            payload: Payload::encode(&serde_json::json!({"x": [1, 2]})).unwrap(),
            timeout: Some(std::time::Duration::from_millis(1500)),
            lease_time: None,
            trace_id: crate::task::TraceId::random(),
        };
        let body = FromGate::Leases {
            worker: "n1/w-1".into(),
            leases: vec![lease.clone()],
        };
        let frame = decode::<FromGate>(&encode("coordinator", 42, &body)).unwrap();
        assert_eq!(frame.from, "coordinator");
        assert_eq!(frame.key, 42);
        let back = frame.body;
        let FromGate::Leases { worker, leases } = back else {
            panic!("decoded {back:?}");
        };
        assert_eq!(&*worker, "n1/w-1");
        assert_eq!(leases[0].task_id, lease.task_id);
        assert_eq!(leases[0].payload, lease.payload);
        assert_eq!(leases[0].timeout, lease.timeout);

        let up = FromNode::Up {
            seq: 1,
            items: vec![Up::Report {
                worker: "n1/w-1".into(),
                reports: vec![AttemptReport {
                    task_id: lease.task_id,
                    token: lease.token,
                    outcome: AttemptOutcome::Failed(crate::TaskError::permanent("no")),
                }],
                credits: 1,
            }],
        };
        let back = decode::<FromNode>(&encode("n1", u128::MAX, &up))
            .unwrap()
            .body;
        let FromNode::Up { items, .. } = back else {
            panic!("decoded {back:?}");
        };
        let Up::Report { reports, .. } = &items[0] else {
            panic!("decoded {items:?}");
        };
        let AttemptOutcome::Failed(e) = &reports[0].outcome else {
            panic!("decoded {reports:?}");
        };
        assert_eq!(e.message(), "no");
        assert!(!e.is_retryable());
    }

    #[test]
    fn progress_messages_are_cut_on_a_character_boundary() {
        let mut short = "half way".to_string();
        cap_progress(&mut short);
        assert_eq!(short, "half way");
        // 'é' is two bytes: 1023 of 'a' then 'é' straddles the limit.
        let mut long = format!("{}é{}", "a".repeat(MAX_PROGRESS_BYTES - 1), "b".repeat(50));
        cap_progress(&mut long);
        assert_eq!(long, "a".repeat(MAX_PROGRESS_BYTES - 1));
        let mut exact = "€".repeat(MAX_PROGRESS_BYTES); // 3 bytes each
        cap_progress(&mut exact);
        assert!(exact.len() <= MAX_PROGRESS_BYTES && exact.len() > MAX_PROGRESS_BYTES - 3);
        assert_eq!(clean_fraction(f32::NAN), 0.0);
        assert_eq!(clean_fraction(7.0), 1.0);
        assert_eq!(clean_fraction(-1.0), 0.0);
    }

    #[test]
    fn batches_stay_under_the_budget_and_heavy_items_go_alone() {
        let mb = 1024 * 1024;
        let sizes = vec![mb, mb, mb, mb, 6 * mb, mb, 0, 0];
        let cut = batches(sizes, |s| *s);
        assert_eq!(
            cut,
            vec![vec![mb, mb, mb, mb], vec![6 * mb], vec![mb, 0, 0]]
        );
        assert!(batches(Vec::<usize>::new(), |s| *s).is_empty());
    }

    #[test]
    fn bad_frames_are_described_and_blamed_when_possible() {
        let empty = decode::<FromNode>(&[]).unwrap_err();
        assert_eq!(empty.from, None);
        assert!(empty.reason.contains("truncated"), "{}", empty.reason);

        let mut garbage = encode("n7", NO_KEY, &FromNode::Leave);
        garbage.truncate(garbage.len() - 1);
        garbage.extend_from_slice(&[0xff, 0xff, 0xff]);
        let bad = decode::<FromNode>(&garbage).unwrap_err();
        assert_eq!(bad.from.as_deref(), Some("n7"));
        assert!(bad.reason.contains("undecodable body"), "{}", bad.reason);

        let mut future = encode("n8", NO_KEY, &FromNode::Leave);
        future[0] = WIRE_VERSION + 1;
        let bad = decode::<FromNode>(&future).unwrap_err();
        assert_eq!(bad.from.as_deref(), Some("n8"));
        assert!(bad.reason.contains("wire version"), "{}", bad.reason);
    }
}
