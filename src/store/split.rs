//! A batch the database refuses for a reason no retry can cure.
//!
//! Group commit puts thousands of changes in one transaction, so one value the database
//! will never take (a constraint a row breaks, a value out of range or too big) would fail
//! every retry of the batch and stop the store for good. Instead the writer tells curable
//! errors (connection lost, serialization, lock or busy, IO: retried with backoff) from
//! incurable ones, and on an incurable one bisects the batch: halves are written on their
//! own until each refused piece is one task (with its attempts), one submit (its tasks stay
//! together), or one registry row. Everything else is committed; the refused pieces are
//! reported by [`Split`] so the writer can refuse their submits, record their tasks failed
//! with the reason, and tell the queue which tasks it could not store.

use std::sync::Arc;

use super::db::{Db, KeyTaken};
use super::pending::Batch;
use crate::task::TaskId;

/// True when retrying the same rows cannot succeed: the database refused the data itself.
///
/// PostgreSQL: SQLSTATE classes 22 (data exception), 23 (integrity constraint violation)
/// except 23505 (a unique key taken by a commit that raced this one: the next try looks the
/// holder up), and 54 (program limit exceeded). SQLite: `SQLITE_TOOBIG`,
/// `SQLITE_CONSTRAINT` (except unique and primary key, as above, and a trigger's
/// `RAISE(ABORT)`, which like PostgreSQL's plain `RAISE EXCEPTION` (P0001) an operator
/// uses to hold writes for a while) and `SQLITE_MISMATCH`.
/// A value the driver cannot encode is incurable too. Everything else (I/O, a lost
/// connection, serialization failures, locks, a server going away) is worth a retry.
pub(crate) fn incurable(db: &Db, e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Encode(_) => true,
        sqlx::Error::Database(err) => {
            let Some(code) = err.code() else {
                return false;
            };
            match db {
                Db::Postgres(..) => {
                    code != "23505"
                        && (code.starts_with("22")
                            || code.starts_with("23")
                            || code.starts_with("54"))
                }
                Db::Sqlite(..) => {
                    const TOOBIG: i64 = 18;
                    const CONSTRAINT: i64 = 19;
                    const MISMATCH: i64 = 20;
                    const CONSTRAINT_PRIMARYKEY: i64 = 1555;
                    const CONSTRAINT_TRIGGER: i64 = 1811;
                    const CONSTRAINT_UNIQUE: i64 = 2067;
                    let Ok(code) = code.parse::<i64>() else {
                        return false;
                    };
                    match code & 0xff {
                        TOOBIG | MISMATCH => true,
                        CONSTRAINT => !matches!(
                            code,
                            CONSTRAINT_PRIMARYKEY | CONSTRAINT_UNIQUE | CONSTRAINT_TRIGGER
                        ),
                        _ => false,
                    }
                }
            }
        }
        _ => false,
    }
}

/// What a batch can be cut into: the rows of one key stay in one transaction.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    /// A task's row and its attempts.
    Task(TaskId),
    /// A worker's registry row.
    Worker(Arc<str>),
    /// A node's registry row.
    Node(Arc<str>),
    /// One heartbeat statement (its index in the batch).
    Heartbeat(usize),
    /// The workflow journal's rows, all or none.
    Journal,
}

/// Keys that go together: the tasks of one submit, or a single key.
pub(crate) type Unit = Vec<Key>;

/// The outcome of writing a refused batch piece by piece.
#[derive(Debug, Default)]
pub(crate) struct Split {
    /// Tasks left out because another task holds their idempotency key.
    pub(crate) taken: Vec<KeyTaken>,
    /// Units the database refused, each with its reason.
    pub(crate) refused: Vec<(Unit, String)>,
    /// Transactions committed on the way.
    pub(crate) commits: u64,
}

/// Writes `units` (in order) in as few transactions as the database allows: a piece that
/// is refused incurably is cut in two until the refused units stand alone. `batch_of`
/// builds the rows of some units. Stops at the first curable error and returns it; the
/// pieces written before it stay committed (writing them again is harmless: every write
/// is an upsert).
pub(crate) async fn write_split(
    db: &Db,
    units: Vec<Unit>,
    batch_of: impl Fn(&[Unit]) -> Batch,
) -> Result<Split, (Split, sqlx::Error)> {
    let mut out = Split::default();
    // A stack of pieces, the next to write on top; the oldest rows go first, so a task's
    // idempotency key goes to the oldest task as in a whole batch.
    let mut todo: Vec<Vec<Unit>> = vec![units];
    while let Some(mut piece) = todo.pop() {
        if piece.is_empty() {
            continue;
        }
        match db.write(&batch_of(&piece)).await {
            Ok(taken) => {
                out.commits += 1;
                out.taken.extend(taken);
            }
            Err(e) if !incurable(db, &e) => return Err((out, e)),
            Err(e) if piece.len() == 1 => {
                let unit = piece.pop().expect("one unit");
                tracing::error!(error = %e, keys = ?unit, "rows refused by the database");
                out.refused.push((unit, e.to_string()));
            }
            Err(_) => {
                let second = piece.split_off(piece.len() / 2);
                todo.push(second);
                todo.push(piece);
            }
        }
    }
    Ok(out)
}
