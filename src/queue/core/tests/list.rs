//! Listing: pages in creation order either way, filtered, with a cursor.

use super::*;
use crate::queue::TaskQuery;

fn page(h: &Harness, q: TaskQuery) -> Vec<TaskId> {
    h.core.list(&q).into_iter().map(|t| t.id).collect()
}

#[test]
fn pages_oldest_or_newest_first_with_a_cursor() {
    let mut h = Harness::with_defaults();
    let ids: Vec<TaskId> = (0..10).map(|_| h.submit(spec("t"))).collect();
    let oldest = TaskQuery {
        limit: 3,
        ..TaskQuery::default()
    };
    assert_eq!(page(&h, oldest.clone()), ids[..3]);
    let next = TaskQuery {
        after: Some(ids[2]),
        ..oldest
    };
    assert_eq!(page(&h, next), ids[3..6]);

    let newest = TaskQuery {
        limit: 3,
        newest_first: true,
        ..TaskQuery::default()
    };
    let want: Vec<TaskId> = ids.iter().rev().take(3).copied().collect();
    assert_eq!(page(&h, newest.clone()), want);
    let next = TaskQuery {
        after: Some(ids[7]),
        ..newest
    };
    let want: Vec<TaskId> = ids[4..7].iter().rev().copied().collect();
    assert_eq!(page(&h, next), want);

    let all = TaskQuery {
        limit: 100,
        newest_first: true,
        ..TaskQuery::default()
    };
    assert_eq!(page(&h, all).len(), 10);
    assert!(page(
        &h,
        TaskQuery {
            limit: 0,
            ..TaskQuery::default()
        }
    )
    .is_empty());
}

#[test]
fn filters_by_status_and_type() {
    let mut h = Harness::with_defaults();
    h.worker("w", &["t"], &[], 1);
    let a = h.submit(spec("t"));
    let other = h.submit(spec("u"));
    h.lease_one(a);
    let running = TaskQuery {
        status: Some(TaskStatus::Running),
        limit: 10,
        ..TaskQuery::default()
    };
    assert_eq!(page(&h, running), vec![a]);
    let of_u = TaskQuery {
        task_type: Some("u".into()),
        limit: 10,
        ..TaskQuery::default()
    };
    assert_eq!(page(&h, of_u), vec![other]);
}
