//! Submits: all or nothing (full queue, invalid spec), idempotency keys, delays.

use super::*;

#[test]
fn a_batch_that_would_overfill_the_queue_is_refused_whole() {
    let mut h = Harness::new(QueueConfig {
        max_queue_size: 5,
        ..QueueConfig::default()
    });
    h.submit_batch((0..3).map(|_| spec("t")).collect()).unwrap();
    h.submit(spec("t").delay(Duration::from_secs(1))); // pending tasks count too
    let before = h.core.stats();
    assert_eq!(before.queue_size, 4);

    let batch = vec![
        spec("t").idempotency_key("k1"),
        spec("t").idempotency_key("k2"),
    ];
    assert_eq!(
        h.submit_batch(batch),
        Err(QueueError::Full {
            capacity: 5,
            waiting: 4,
            refused: 2
        })
    );
    assert_eq!(
        h.core.stats(),
        before,
        "nothing of the refused batch was accepted"
    );
    assert_eq!(h.core.tasks.len(), 4);

    // The refused batch left no trace: its keys are free, and one more task fits.
    let s = h
        .submit_batch(vec![spec("t").idempotency_key("k1")])
        .unwrap();
    assert!(!s[0].existing);
    assert!(matches!(
        h.submit_batch(vec![spec("t")]),
        Err(QueueError::Full { refused: 1, .. })
    ));

    // Running tasks do not count as waiting: leasing one makes room.
    h.worker("w", &["t"], &[], 1);
    assert_eq!(h.dispatch().len(), 1);
    h.submit(spec("t"));
    h.check();
}

#[test]
fn keys_already_known_do_not_count_against_the_size_limit() {
    let mut h = Harness::new(QueueConfig {
        max_queue_size: 2,
        ..QueueConfig::default()
    });
    let first = h.submit(spec("t").idempotency_key("a"));
    // Two new tasks would not fit, but one is a duplicate of a known key, one of the other
    // in the same batch: only one new task is made, and it fits.
    let batch = vec![
        spec("t").idempotency_key("a"),
        spec("t").idempotency_key("b"),
        spec("t").idempotency_key("b"),
    ];
    let s = h.submit_batch(batch).expect("one new task fits");
    assert_eq!(
        s[0],
        Submitted {
            id: first,
            existing: true
        }
    );
    assert!(!s[1].existing);
    assert_eq!(
        s[2],
        Submitted {
            id: s[1].id,
            existing: true
        }
    );
    assert_eq!(h.core.stats().queue_size, 2);
    h.check();
}

#[test]
fn an_invalid_spec_refuses_the_whole_batch_naming_its_index() {
    let mut h = Harness::with_defaults();
    let before = h.core.stats();

    let batch = vec![spec("t"), spec("t"), spec("  ")];
    match h.submit_batch(batch) {
        Err(QueueError::InvalidTask { index, reason }) => {
            assert_eq!(index, 2);
            assert!(reason.contains("task_type"), "{reason}");
        }
        other => panic!("expected InvalidTask, got {other:?}"),
    }

    let batch = vec![
        spec("t").idempotency_key("k"),
        spec("t").timeout(Duration::ZERO),
    ];
    match h.submit_batch(batch) {
        Err(QueueError::InvalidTask { index, reason }) => {
            assert_eq!(index, 1);
            assert!(reason.contains("timeout"), "{reason}");
        }
        other => panic!("expected InvalidTask, got {other:?}"),
    }

    assert_eq!(h.core.stats(), before);
    assert!(h.core.tasks.is_empty());
    let s = h
        .submit_batch(vec![spec("t").idempotency_key("k")])
        .unwrap();
    assert!(!s[0].existing, "the refused batch registered no key");
    h.check();
}

#[test]
fn an_idempotency_key_returns_the_existing_task() {
    let mut h = Harness::with_defaults();
    let id = h.submit(spec("t").idempotency_key("order-1"));
    let again = h
        .submit_batch(vec![spec("t").idempotency_key("order-1")])
        .unwrap();
    assert_eq!(again, vec![Submitted { id, existing: true }]);

    // Within one batch too, and next to tasks without a key.
    let batch = vec![
        spec("t").idempotency_key("order-2"),
        spec("t"),
        spec("t").idempotency_key("order-2"),
        spec("t").idempotency_key("order-1"),
    ];
    let s = h.submit_batch(batch).unwrap();
    assert!(!s[0].existing && !s[1].existing);
    assert_ne!(s[0].id, s[1].id);
    assert_eq!(
        s[2],
        Submitted {
            id: s[0].id,
            existing: true
        }
    );
    assert_eq!(s[3], Submitted { id, existing: true });

    let stats = h.core.stats();
    assert_eq!((stats.submitted, stats.queued), (3, 3));

    // The key still answers once the task has finished.
    h.worker("w", &["t"], &[], 10);
    h.dispatch();
    h.complete("w", id, 1);
    let again = h
        .submit_batch(vec![spec("t").idempotency_key("order-1")])
        .unwrap();
    assert_eq!(again, vec![Submitted { id, existing: true }]);
    h.check();
}

#[test]
fn a_delayed_task_is_pending_until_its_time() {
    let mut h = Harness::with_defaults();
    h.worker("w", &["t"], &[], 2);
    let id = h.submit(spec("t").delay(Duration::from_secs(5)));
    let now = h.submit(spec("t").delay(Duration::ZERO));
    assert_eq!(
        h.status(now),
        TaskStatus::Queued,
        "a zero delay is no delay"
    );
    assert_eq!(h.status(id), TaskStatus::Pending);
    assert_eq!(h.core.stats().pending, 1);
    assert_eq!(h.next_wake_in(), Some(Duration::from_secs(5)));

    assert_eq!(h.dispatch(), vec![("w".to_string(), now, 1)]);
    h.advance(Duration::from_secs(5) - ms(1));
    assert_eq!(h.status(id), TaskStatus::Pending);
    assert!(h.dispatch().is_empty());

    h.advance(ms(1));
    assert_eq!(h.status(id), TaskStatus::Queued);
    assert_eq!(h.core.stats().pending, 0);
    assert_eq!(h.lease_one(id), 1);
    h.check();
}

#[test]
fn a_payload_over_the_frame_limit_refuses_its_batch_naming_the_sizes() {
    let mut h = Harness::new(QueueConfig {
        max_payload_bytes: 1000,
        ..QueueConfig::default()
    });
    let fits = TaskSpec::new("t", &"x".repeat(998)).unwrap(); // 1000 bytes with its quotes
    let too_big = TaskSpec::new("t", &"x".repeat(999)).unwrap();
    match h.submit_batch(vec![fits.clone(), too_big]) {
        Err(QueueError::InvalidTask { index, reason }) => {
            assert_eq!(index, 1);
            assert!(reason.contains("1001 bytes"), "{reason}");
            assert!(reason.contains("1000-byte limit"), "{reason}");
        }
        other => panic!("expected InvalidTask, got {other:?}"),
    }
    assert!(h.core.tasks.is_empty());
    h.submit_batch(vec![fits]).unwrap();
}

#[test]
fn a_payload_limit_past_the_cluster_frame_is_refused() {
    let config = QueueConfig {
        max_payload_bytes: crate::queue::config::CLUSTER_FRAME_BYTES,
        ..QueueConfig::default()
    };
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("max_payload_bytes"), "{err}");
    assert!(QueueConfig::default().validate().is_ok());
}

/// A queued task's entry stays within 72 bytes (a million of them wait in memory).
#[test]
fn an_entry_is_small() {
    assert!(std::mem::size_of::<super::super::Entry>() <= 72);
}
