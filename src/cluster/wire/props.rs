//! Property tests of the codec: every body round-trips with its sender and key, and no
//! bytes whatever (random, or a valid frame cut short or with bytes flipped) make the
//! decoder panic; they decode or are described as bad.

use std::collections::HashSet;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::worker::Capabilities;

fn name() -> impl Strategy<Value = String> {
    ".{0,24}"
}

fn worker() -> impl Strategy<Value = Arc<str>> {
    name().prop_map(|s| Arc::from(s.as_str()))
}

fn hello() -> impl Strategy<Value = Hello> {
    (
        any::<u64>(),
        prop::collection::vec(name(), 0..4),
        prop::collection::vec(name(), 0..4),
        name(),
        name(),
        any::<u32>(),
    )
        .prop_map(
            |(instance, labels, task_types, address, version, capacity)| Hello {
                instance,
                labels,
                task_types,
                address,
                version,
                capacity,
            },
        )
}

fn up() -> impl Strategy<Value = Up> {
    prop_oneof![
        (
            worker(),
            any::<u64>(),
            // A set's order is not kept; one type keeps the bytes comparable.
            prop::collection::vec(name(), 0..2),
            prop::collection::vec(name(), 0..3),
            (any::<u32>(), any::<u32>()),
        )
            .prop_map(|(worker, incarnation, types, labels, (credits, slots))| {
                Up::Attach {
                    worker,
                    incarnation,
                    caps: Capabilities {
                        task_types: types
                            .iter()
                            .map(|t| Arc::from(t.as_str()))
                            .collect::<HashSet<_>>(),
                        labels,
                    },
                    credits,
                    slots,
                }
            }),
        (worker(), any::<u64>()).prop_map(|(worker, incarnation)| Up::Detach {
            worker,
            incarnation
        }),
        (worker(), any::<u32>()).prop_map(|(worker, credits)| Up::Credits { worker, credits }),
        (worker(), any::<u32>()).prop_map(|(worker, credits)| Up::Report {
            worker,
            reports: Vec::new(),
            credits,
        }),
        (
            worker(),
            any::<(u128, u64, u32, u64)>(),
            any::<f32>(),
            name()
        )
            .prop_map(|(worker, (id, epoch, attempt, nonce), fraction, message)| {
                Up::Progress {
                    worker,
                    task_id: crate::task::TaskId::from_uuid(uuid::Uuid::from_u128(id)),
                    token: LeaseToken {
                        epoch,
                        attempt,
                        nonce,
                    },
                    fraction,
                    message,
                }
            }),
    ]
}

fn from_node() -> impl Strategy<Value = FromNode> {
    prop_oneof![
        hello().prop_map(FromNode::Hello),
        (any::<u64>(), prop::collection::vec(up(), 0..6))
            .prop_map(|(seq, items)| FromNode::Up { seq, items }),
        (any::<u64>(), any::<u64>()).prop_map(|(agent_mailbox, bad_frames)| {
            FromNode::Heartbeat(NodeLoad {
                agent_mailbox,
                bad_frames,
                ..NodeLoad::default()
            })
        }),
        Just(FromNode::Leave),
    ]
}

fn from_gate() -> impl Strategy<Value = FromGate> {
    prop_oneof![
        (any::<u64>(), any::<u64>(), any::<u128>()).prop_map(|(heartbeat_ms, timeout_ms, key)| {
            FromGate::Welcome {
                heartbeat_ms,
                timeout_ms,
                key,
            }
        }),
        (name(), any::<u64>()).prop_map(|(reason, retry_after_ms)| FromGate::Refused {
            reason,
            retry_after_ms
        }),
        worker().prop_map(|worker| FromGate::Leases {
            worker,
            leases: Vec::new()
        }),
        (worker(), any::<u128>()).prop_map(|(worker, id)| FromGate::Cancel {
            worker,
            task_id: crate::task::TaskId::from_uuid(uuid::Uuid::from_u128(id)),
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(up_to, backlog)| FromGate::Ack { up_to, backlog }),
        Just(FromGate::Rejoin),
        Just(FromGate::Farewell),
    ]
}

/// A frame decodes back to what was encoded: encoding it again gives the same bytes.
fn round_trips<B: Serialize + DeserializeOwned>(from: &str, key: SessionKey, body: &B) {
    let bytes = encode(from, key, body);
    let back = decode::<B>(&bytes).unwrap();
    assert_eq!(back.from, from);
    assert_eq!(back.key, key);
    assert_eq!(encode(&back.from, back.key, &back.body), bytes);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_node_frame_round_trips(from in name(), key in any::<u128>(), body in from_node()) {
        round_trips(&from, key, &body);
    }

    #[test]
    fn every_gate_frame_round_trips(from in name(), key in any::<u128>(), body in from_gate()) {
        round_trips(&from, key, &body);
    }

    #[test]
    fn random_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode::<FromNode>(&bytes);
        let _ = decode::<FromGate>(&bytes);
        let _ = decode::<FromNode>(&[&[WIRE_VERSION][..], &bytes].concat());
    }

    #[test]
    fn damaged_frames_decode_or_are_described(
        body in from_node(),
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let mut bytes = encode("n1", 7, &body);
        for (at, x) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x;
        }
        let keep = cut.index(bytes.len() + 1);
        match decode::<FromNode>(&bytes[..keep]) {
            Ok(_) => {}
            Err(bad) => prop_assert!(!bad.reason.is_empty()),
        }
    }
}
