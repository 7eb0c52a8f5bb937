//! The coordinator leader lease on PostgreSQL, and fencing: several coordinators share one
//! database, one of them leads (writes), the others stand by and take over when the
//! leader's lease lapses. SQLite keeps its single coordinator, held by the lock file beside
//! it ([`claim`](super::claim)).
//!
//! # The lease
//! One row, `coordinator_leader` (migration 5): the holder's name, the epoch it took the
//! lease with, `expires_at` and `renewed_at`. Every time is the database's clock
//! (`clock_timestamp()`), never a coordinator's, so coordinators whose clocks disagree
//! still agree on who leads. [`try_acquire`] takes the row when it is free (never held, or
//! [`release`]d) or lapsed; the leader calls [`renew`] well within the lease (by default a
//! 3 s lease renewed every 1 s) and stops leading the moment a renewal says `false` or
//! cannot reach the database before its lease would lapse.
//!
//! # The epoch
//! Taking the lease increments `coordinator_epoch` (the number [`claim`](super::claim)
//! increments at start, which worker leases and reports already carry) in the same
//! statement, and writes the new value into the lease row: every leadership has an epoch
//! larger than every one before it, and the rest of the store sees the same number.
//! [`renew`] and [`release`] act only while the row still holds the caller's epoch
//! (`WHERE epoch = $mine`), so a leader that lost the lease cannot extend or free the
//! next leader's.
//!
//! # Fencing
//! A lease alone cannot stop a leader that was frozen (SIGSTOP, a paused VM, a long
//! garbage pause) between a renewal and a write: it wakes up believing it leads. So every
//! write transaction of a leader calls [`fence`] with its epoch first; `fence` reads the
//! lease row `FOR KEY SHARE` and refuses with [`StoreError::Fenced`] when the row holds
//! another epoch, and the caller drops the transaction, so nothing of it commits. The row
//! lock makes the check hold until commit: [`try_acquire`] locks the row `FOR UPDATE`,
//! which waits for every fenced transaction in flight, so a takeover is ordered after each
//! write that passed the fence, and each write after a takeover sees the new epoch.
//! `FOR KEY SHARE` does not conflict with the leader's own renewals (a plain `UPDATE` of
//! non-key columns), so writes and renewals never wait for each other.
//!
//! A leader frozen in the middle of a write transaction keeps that lock, and a standby's
//! [`try_acquire`] waits for it (up to the lease, then answers `None` and is retried): the
//! writer's connections must set `idle_in_transaction_session_timeout` below the lease, so
//! that the server ends a frozen leader's transaction and the takeover proceeds.
//!
//! # What comes next (issue 17)
//! This module is the store's half only; nothing calls it yet. The next slice wires it:
//! the coordinator's standby mode (poll [`try_acquire`] every renewal interval, then reload
//! the queue from the store and serve as leader; renew on a timer and shut down on a lost
//! lease), [`fence`] at the start of the writer's transactions (measured against the
//! writer's benchmark, within 5%), lease duration and renewal interval in the settings,
//! [`current`] in `/stats`, nodes that follow the leader (re-register with whichever
//! coordinator holds the lease, their leases carrying its epoch), and clients that follow
//! it (retry on a standby's redirect or refusal).

use std::time::Duration;

use sqlx::{PgConnection, PgPool, Row};

use super::StoreError;

/// Proof that a coordinator took the leader lease: the epoch it took it with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Leadership {
    /// The holder's name, as written in the lease row.
    pub(crate) holder: String,
    /// The epoch of this leadership: larger than every one before it. Every write of this
    /// leader carries it to [`fence`].
    pub(crate) epoch: u64,
}

/// The lease row as it stands, for `/stats`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LeaderStatus {
    /// Who holds, or last held, the lease; `None` before anyone took it and after a
    /// [`release`].
    pub(crate) holder: Option<String>,
    /// The epoch of the latest leadership (0 before any).
    pub(crate) epoch: u64,
    /// How long until the lease lapses by the database's clock; zero when it has lapsed
    /// or is free.
    pub(crate) expires_in: Duration,
    /// Where the holder serves its HTTP API (standbys redirect clients there).
    pub(crate) http_url: Option<String>,
    /// How long ago the latest leadership began (the last takeover); `None` before any.
    pub(crate) acquired_ago: Option<Duration>,
    /// Who held the lease when it was taken; `None` when it was free (never held, or
    /// released by a clean stop).
    pub(crate) previous_holder: Option<String>,
}

/// A coordinator that said it is alive within the last few renewal intervals. (Its role is
/// the lease's to say, not its own row's, which is as old as its last renewal.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Member {
    /// Its holder name.
    pub(crate) holder: String,
    /// Where it serves HTTP.
    pub(crate) http_url: Option<String>,
    /// How long ago it said so.
    pub(crate) seen_ago: Duration,
}

/// SQLSTATE `lock_not_available`: `lock_timeout` ran out.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// Takes the lease when it is free or lapsed, in one statement: locks the row `FOR
/// UPDATE` (waiting for fenced writes in flight), increments `coordinator_epoch`, and
/// writes holder, epoch, expiry, the holder's HTTP address and the time of the take (the
/// previous holder kept for the dashboard). `$1` the holder, `$2` the lease in seconds,
/// `$3` the HTTP address.
const ACQUIRE: &str = "\
    WITH free AS ( \
        SELECT id FROM coordinator_leader \
         WHERE id = 1 AND (holder IS NULL OR expires_at <= clock_timestamp()) \
           FOR UPDATE \
    ), bumped AS ( \
        UPDATE coordinator_epoch SET epoch = epoch + 1 \
         WHERE id = 1 AND EXISTS (SELECT 1 FROM free) \
        RETURNING epoch \
    ) \
    UPDATE coordinator_leader AS l \
       SET holder = $1, epoch = bumped.epoch, renewed_at = clock_timestamp(), \
           expires_at = clock_timestamp() + make_interval(secs => $2), \
           http_url = $3, acquired_at = clock_timestamp(), previous_holder = l.holder \
      FROM bumped \
     WHERE l.id = 1 \
    RETURNING l.epoch";

/// Takes the leader lease for `holder` (serving HTTP at `http_url`) for `lease`, when
/// nobody holds it or the holder's lease has lapsed by the database's clock, and returns
/// the new [`Leadership`]; `None` when another holder's lease still runs.
///
/// The take is one statement, so two coordinators racing for a free lease cannot both
/// win; it increments `coordinator_epoch` and stores the new value in the lease row. It
/// waits for write transactions that passed [`fence`] to finish, up to `lease`; past
/// that it answers `None` (the caller tries again at its next interval).
pub(crate) async fn try_acquire(
    pool: &PgPool,
    holder: &str,
    http_url: Option<&str>,
    lease: Duration,
) -> Result<Option<Leadership>, StoreError> {
    let mut tx = pool.begin().await?;
    // Bounds the wait for a fenced transaction (`SET LOCAL`, bindable).
    let wait = format!("{}ms", lease.as_millis().max(1));
    sqlx::query("SELECT set_config('lock_timeout', $1, true)")
        .bind(wait)
        .execute(&mut *tx)
        .await?;
    let taken: Result<Option<i64>, sqlx::Error> = sqlx::query_scalar(ACQUIRE)
        .bind(holder)
        .bind(lease.as_secs_f64())
        .bind(http_url)
        .fetch_optional(&mut *tx)
        .await;
    let epoch = match taken {
        Ok(epoch) => epoch,
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(LOCK_NOT_AVAILABLE) => {
            return Ok(None)
        }
        Err(e) => return Err(e.into()),
    };
    tx.commit().await?;
    Ok(epoch.map(|epoch| Leadership {
        holder: holder.to_string(),
        epoch: epoch.max(0) as u64,
    }))
}

/// Extends `leadership`'s lease to `lease` from now (database clock). `true` while the
/// lease row still holds its epoch, even if the lease lapsed meanwhile and nobody took it
/// (nobody else can have written); `false` once another coordinator took the lease or it
/// was released: the caller is no longer the leader and must stop writing.
pub(crate) async fn renew<'e>(
    db: impl sqlx::PgExecutor<'e>,
    leadership: &Leadership,
    lease: Duration,
) -> Result<bool, StoreError> {
    let renewed = sqlx::query(
        "UPDATE coordinator_leader \
            SET renewed_at = clock_timestamp(), \
                expires_at = clock_timestamp() + make_interval(secs => $2) \
          WHERE id = 1 AND epoch = $1 AND holder IS NOT NULL",
    )
    .bind(leadership.epoch as i64)
    .bind(lease.as_secs_f64())
    .execute(db)
    .await?;
    Ok(renewed.rows_affected() == 1)
}

/// Gives the lease up (a clean shutdown), so a standby takes it at once instead of
/// waiting for it to lapse. `false` when it was no longer `leadership`'s. The epoch stays
/// in the row; the next [`try_acquire`] increments it.
pub(crate) async fn release(pool: &PgPool, leadership: &Leadership) -> Result<bool, StoreError> {
    let released = sqlx::query(
        "UPDATE coordinator_leader SET holder = NULL, expires_at = clock_timestamp() \
          WHERE id = 1 AND epoch = $1 AND holder IS NOT NULL",
    )
    .bind(leadership.epoch as i64)
    .execute(pool)
    .await?;
    Ok(released.rows_affected() == 1)
}

/// The lease as it stands: holder, epoch, and time left by the database's clock.
pub(crate) async fn current(pool: &PgPool) -> Result<LeaderStatus, StoreError> {
    let row = sqlx::query(
        "SELECT holder, epoch, \
                GREATEST(EXTRACT(EPOCH FROM expires_at - clock_timestamp()), 0)::float8, \
                http_url, \
                GREATEST(EXTRACT(EPOCH FROM clock_timestamp() - acquired_at), 0)::float8, \
                previous_holder \
           FROM coordinator_leader WHERE id = 1",
    )
    .fetch_one(pool)
    .await?;
    let left: f64 = row.try_get(2)?;
    let ago: Option<f64> = row.try_get(4)?;
    Ok(LeaderStatus {
        holder: row.try_get(0)?,
        epoch: row.try_get::<i64, _>(1)?.max(0) as u64,
        expires_in: Duration::try_from_secs_f64(left).unwrap_or(Duration::ZERO),
        http_url: row.try_get(3)?,
        acquired_ago: ago.and_then(|s| Duration::try_from_secs_f64(s).ok()),
        previous_holder: row.try_get(5)?,
    })
}

/// Says that `holder` is alive, serving HTTP at `http_url`, in `role` (`leader` or
/// `standby`): every coordinator calls it once per renewal interval. Not fenced: a
/// standby writes it too, and it is only shown.
pub(crate) async fn heartbeat<'e>(
    db: impl sqlx::PgExecutor<'e>,
    holder: &str,
    http_url: Option<&str>,
    role: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO coordinator_members (holder, http_url, role, seen_at) \
         VALUES ($1, $2, $3, clock_timestamp()) \
         ON CONFLICT (holder) DO UPDATE SET http_url = excluded.http_url, \
             role = excluded.role, seen_at = excluded.seen_at",
    )
    .bind(holder)
    .bind(http_url)
    .bind(role)
    .execute(db)
    .await?;
    Ok(())
}

/// Forgets `holder` (a clean stop); rows of coordinators that died are dropped by
/// [`members`] once they are an hour old.
pub(crate) async fn leave(pool: &PgPool, holder: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM coordinator_members WHERE holder = $1")
        .bind(holder)
        .execute(pool)
        .await?;
    Ok(())
}

/// The coordinators seen within `within`, by name (at most 100).
pub(crate) async fn members(pool: &PgPool, within: Duration) -> Result<Vec<Member>, StoreError> {
    sqlx::query(
        "DELETE FROM coordinator_members \
          WHERE seen_at < clock_timestamp() - make_interval(secs => 3600)",
    )
    .execute(pool)
    .await?;
    let rows = sqlx::query(
        "SELECT holder, http_url, \
                GREATEST(EXTRACT(EPOCH FROM clock_timestamp() - seen_at), 0)::float8 \
           FROM coordinator_members \
          WHERE seen_at >= clock_timestamp() - make_interval(secs => $1) \
          ORDER BY holder LIMIT 100",
    )
    .bind(within.as_secs_f64())
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let ago: f64 = row.try_get(2)?;
            Ok(Member {
                holder: row.try_get(0)?,
                http_url: row.try_get(1)?,
                seen_ago: Duration::try_from_secs_f64(ago).unwrap_or(Duration::ZERO),
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

/// Refuses the write transaction on `conn` with [`StoreError::Fenced`] unless the lease
/// row holds `epoch`; call it first in every write transaction of a leader, and drop the
/// transaction (rolling it back) when it refuses.
///
/// It locks the lease row `FOR KEY SHARE` until the transaction ends, so the answer holds
/// until commit: a takeover ([`try_acquire`], `FOR UPDATE`) waits for this transaction,
/// while the leader's renewals do not. One indexed single-row read per transaction.
#[cfg(test)]
pub(crate) async fn fence(conn: &mut PgConnection, epoch: u64) -> Result<(), StoreError> {
    match check(conn, epoch).await? {
        None => Ok(()),
        Some(current) => Err(StoreError::Fenced { epoch, current }),
    }
}

/// [`fence`]'s check: `None` when the lease row holds `epoch` (the row then locked until
/// the transaction ends), else the epoch it holds.
pub(crate) async fn check(conn: &mut PgConnection, epoch: u64) -> Result<Option<u64>, sqlx::Error> {
    let current: i64 =
        sqlx::query_scalar("SELECT epoch FROM coordinator_leader WHERE id = 1 FOR KEY SHARE")
            .fetch_one(conn)
            .await?;
    let current = current.max(0) as u64;
    Ok((current != epoch).then_some(current))
}

#[cfg(test)]
mod tests;
