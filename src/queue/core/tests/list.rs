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

/// Every status's page, with and without a type filter, either way, equals the answer a
/// scan over every task gives, on a queue where most tasks do not match.
#[test]
fn pages_past_many_tasks_that_do_not_match() {
    let mut h = Harness::with_defaults();
    h.worker("w", &["t"], &[], 1000);
    let mut all = Vec::new();
    // 600 tasks of type t, then a few of type u, queued between many that run or finish.
    for _ in 0..600 {
        all.push(h.submit(spec("t")));
    }
    let u: Vec<TaskId> = (0..5).map(|_| h.submit(spec("u"))).collect();
    all.extend(&u);
    for _ in 0..300 {
        all.push(h.submit(spec("t")));
    }
    // Run the oldest 500, complete 200 of them, cancel 100 queued ones.
    let leased = h.dispatch();
    assert_eq!(leased.len(), 900);
    for (_, id, attempt) in leased.iter().take(200) {
        h.complete("w", *id, *attempt);
    }
    for (_, id, _) in leased.iter().skip(800) {
        h.cancel(*id).expect("running");
    }
    for _ in 0..50 {
        all.push(h.submit(spec("t")));
    }
    h.check();
    let status_of = |h: &Harness, id: &TaskId| h.core.snapshot(*id).expect("kept").status;
    let type_of = |h: &Harness, id: &TaskId| h.core.snapshot(*id).expect("kept").task_type;
    for status in [None, Some(TaskStatus::Running), Some(TaskStatus::Queued)]
        .into_iter()
        .chain(TaskStatus::ALL.map(Some))
    {
        for task_type in [None, Some("u".to_string()), Some("t".to_string())] {
            for newest_first in [false, true] {
                let mut want: Vec<TaskId> = all
                    .iter()
                    .filter(|id| status.is_none_or(|s| status_of(&h, id) == s))
                    .filter(|id| task_type.as_deref().is_none_or(|t| type_of(&h, id) == t))
                    .copied()
                    .collect();
                if newest_first {
                    want.reverse();
                }
                // Walk every page with the cursor; the pages make up the whole answer.
                let mut got = Vec::new();
                let mut after = None;
                loop {
                    let q = TaskQuery {
                        status,
                        task_type: task_type.clone(),
                        after,
                        limit: 7,
                        newest_first,
                    };
                    let p = page(&h, q);
                    assert!(p.len() <= 7);
                    if p.is_empty() {
                        break;
                    }
                    after = p.last().copied();
                    got.extend(p);
                }
                assert_eq!(
                    got, want,
                    "{status:?} {task_type:?} newest first: {newest_first}"
                );
            }
        }
    }
    // A page after the cursor of the last matching task is empty, however many follow.
    let q = TaskQuery {
        task_type: Some("u".into()),
        after: Some(u[4]),
        limit: 10,
        ..TaskQuery::default()
    };
    assert!(page(&h, q).is_empty());
}
