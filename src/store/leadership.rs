//! The running half of failover on PostgreSQL: the [`Fence`] every write transaction of a
//! coordinator passes, the renewal of the leader lease, and what the store says of its role.
//! The statements are in [`leader`](super::leader); the coordinator program's standby loop
//! is [`crate::failover`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;

use super::leader::{self, Leadership};
use super::StoreError;

/// What a PostgreSQL store's write transactions pass first: nothing while the store is not
/// leading (a single coordinator that took no lease), the lease row's epoch check while it
/// leads, and a refusal without a round trip once its leadership was lost.
#[derive(Debug)]
pub(crate) struct Fence {
    /// The epoch writes carry; 0 while not fencing.
    epoch: AtomicU64,
    /// Why the leadership was lost, once it was; watched by the coordinator program.
    lost: watch::Sender<Option<String>>,
}

impl Fence {
    pub(crate) fn new() -> Self {
        Self {
            epoch: AtomicU64::new(0),
            lost: watch::Sender::new(None),
        }
    }

    /// From now on writes carry `epoch` (a leadership just taken).
    pub(crate) fn arm(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::SeqCst);
        self.lost.send_replace(None);
    }

    /// The epoch writes carry (0: not fencing).
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Ends the leadership: every later write is refused here, before the database.
    /// The first reason stays.
    pub(crate) fn trip(&self, reason: String) {
        self.lost.send_if_modified(|lost| {
            if lost.is_some() {
                return false;
            }
            tracing::error!(
                epoch = self.epoch(),
                %reason,
                "leadership lost: this coordinator may no longer write"
            );
            *lost = Some(reason);
            true
        });
    }

    /// Why the leadership was lost, if it was.
    pub(crate) fn lost(&self) -> Option<String> {
        self.lost.borrow().clone()
    }

    /// Changes of [`Fence::lost`].
    pub(crate) fn watch(&self) -> watch::Receiver<Option<String>> {
        self.lost.subscribe()
    }

    /// Lets the write transaction on `conn` go on, or refuses it (and trips, when the
    /// lease row holds another epoch). One single-row read per transaction while leading.
    pub(crate) async fn pass(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        if let Some(reason) = self.lost() {
            return Err(refused(&reason));
        }
        let epoch = self.epoch();
        if epoch == 0 {
            return Ok(());
        }
        match leader::check(conn, epoch).await? {
            None => Ok(()),
            Some(current) => {
                let reason = format!(
                    "fenced: coordinator epoch {current} leads now; this coordinator's epoch \
                     {epoch} may no longer write"
                );
                self.trip(reason.clone());
                Err(refused(&reason))
            }
        }
    }
}

/// How a refusal travels through the database code, whose functions return `sqlx::Error`;
/// [`refusal`] reads it back (into `StoreError::NotLeader`).
const REFUSED: &str = "write refused, not the leader: ";

fn refused(reason: &str) -> sqlx::Error {
    sqlx::Error::Protocol(format!("{REFUSED}{reason}"))
}

/// The reason of a write [`Fence::pass`] refused, if `e` is one.
pub(crate) fn refusal(e: &sqlx::Error) -> Option<&str> {
    match e {
        sqlx::Error::Protocol(message) => message.strip_prefix(REFUSED),
        _ => None,
    }
}

/// A store's part in failover, shared by its clones: who it is, and the leadership it took.
#[derive(Debug)]
pub(crate) struct Candidacy {
    /// The name written in the lease and member rows: unique per process.
    pub(crate) holder: String,
    /// Where this coordinator serves HTTP, for standbys to redirect to.
    pub(crate) http_url: Mutex<Option<String>>,
    /// The leadership taken and not yet handed to a claim.
    pub(crate) taken: Mutex<Option<Leadership>>,
}

impl Candidacy {
    pub(crate) fn new(node: &str) -> Self {
        Self {
            holder: format!("{node}-{}-{:04x}", std::process::id(), fastrand::u16(..)),
            http_url: Mutex::new(None),
            taken: Mutex::new(None),
        }
    }

    pub(crate) fn http_url(&self) -> Option<String> {
        self.http_url
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Renews `leadership`'s lease every `every` until it is lost, tripping `fence` when a
/// renewal is refused (another coordinator took the lease) or none succeeded for a whole
/// `lease` since the last one was sent (the lease may have lapsed and been taken). Says
/// each time, too, that this coordinator is alive and leads (the member row).
///
/// It renews on a connection of its own, not the store's pool: the writer and the
/// readers may hold every pooled connection for a while (a recovery, a burst of
/// commits), and a renewal queued behind them would let the lease lapse under a healthy
/// leader.
pub(crate) fn renew_until_lost(
    pool: PgPool,
    leadership: Leadership,
    http_url: Option<String>,
    fence: Arc<Fence>,
    lease: Duration,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let options = pool.connect_options();
        let mut conn: Option<PgConnection> = None;
        let mut last_sent = Instant::now();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if fence.lost().is_some() {
                return;
            }
            let sent = Instant::now();
            // The renewal may take until the lease, as last renewed, would lapse.
            let left = lease.saturating_sub(last_sent.elapsed());
            let renewed = tokio::time::timeout(left, async {
                if conn.is_none() {
                    conn = Some(<PgConnection as sqlx::Connection>::connect_with(&options).await?);
                }
                let c = conn.as_mut().expect("connected just above");
                let renewed = leader::renew(&mut *c, &leadership, lease).await?;
                if renewed {
                    let _ = leader::heartbeat(
                        &mut *c,
                        &leadership.holder,
                        http_url.as_deref(),
                        "leader",
                    )
                    .await;
                }
                Ok::<bool, StoreError>(renewed)
            })
            .await;
            match renewed {
                Ok(Ok(true)) => last_sent = sent,
                Ok(Ok(false)) => {
                    fence.trip("another coordinator took the leader lease".into());
                    return;
                }
                Ok(Err(e)) => {
                    conn = None;
                    if last_sent.elapsed() >= lease {
                        fence.trip(format!(
                            "the leader lease could not be renewed for {lease:?}: {e}"
                        ));
                        return;
                    }
                    tracing::warn!(error = %e, "leader lease renewal failed; retrying");
                }
                Err(_) => {
                    fence.trip(format!(
                        "the leader lease could not be renewed for {lease:?}: the database did \
                         not answer"
                    ));
                    return;
                }
            }
        }
    })
}

impl super::Store {
    /// This coordinator's name in the lease and member rows (unique per process).
    pub(crate) fn holder(&self) -> &str {
        &self.candidacy.holder
    }

    /// Where this coordinator serves HTTP: written with the lease it takes, so standbys
    /// can send clients there.
    pub(crate) fn set_http_url(&self, url: Option<String>) {
        *self
            .candidacy
            .http_url
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = url;
    }

    /// Where this coordinator serves HTTP, as given to [`Self::set_http_url`].
    pub(crate) fn http_url(&self) -> Option<String> {
        self.candidacy.http_url()
    }

    fn pg(&self) -> Result<(&PgPool, &Arc<Fence>), crate::Error> {
        match &self.db {
            super::db::Db::Postgres(pool, fence) => Ok((pool, fence)),
            super::db::Db::Sqlite(..) => Err(crate::Error::invalid(
                "store.url",
                "failover needs PostgreSQL: an SQLite file has one coordinator",
            )),
        }
    }

    /// Takes the leader lease if it is free or lapsed, and keeps it for this store's
    /// queue to claim (the coordinator built next on this store leads with it). Answers
    /// the new epoch, or `None` while another coordinator leads.
    pub(crate) async fn try_lead(&self) -> Result<Option<u64>, crate::Error> {
        let (pool, _) = self.pg()?;
        let mut taken = self
            .candidacy
            .taken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if taken.is_none() {
            let http_url = self.candidacy.http_url();
            taken = leader::try_acquire(
                pool,
                self.holder(),
                http_url.as_deref(),
                self.config.leader_lease,
            )
            .await?;
        }
        let Some(leadership) = taken else {
            return Ok(None);
        };
        let epoch = leadership.epoch;
        *self
            .candidacy
            .taken
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(leadership);
        Ok(Some(epoch))
    }

    /// Lets go of a lease taken by [`Store::try_lead`] that no coordinator claimed (the
    /// coordinator failed to start).
    pub(crate) async fn abdicate(&self) {
        let taken = self
            .candidacy
            .taken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let (Some(leadership), Ok((pool, _))) = (taken, self.pg()) {
            let _ = leader::release(pool, &leadership).await;
        }
    }

    /// Says this coordinator is alive as a standby (the dashboard's list).
    pub(crate) async fn standby_heartbeat(&self) -> Result<(), crate::Error> {
        let (pool, _) = self.pg()?;
        let http_url = self.candidacy.http_url();
        leader::heartbeat(pool, self.holder(), http_url.as_deref(), "standby").await?;
        Ok(())
    }

    /// Forgets this coordinator's member row (a clean stop).
    pub(crate) async fn leave_members(&self) {
        if let Ok((pool, _)) = self.pg() {
            let _ = leader::leave(pool, self.holder()).await;
        }
    }

    /// The lease row as it stands.
    pub(crate) async fn lease(&self) -> Result<leader::LeaderStatus, crate::Error> {
        let (pool, _) = self.pg()?;
        Ok(leader::current(pool).await?)
    }

    /// The lease row and the coordinators seen within three leases.
    pub(crate) async fn failover_facts(
        &self,
    ) -> Result<(leader::LeaderStatus, Vec<leader::Member>), crate::Error> {
        let status = self.lease().await?;
        let (pool, _) = self.pg()?;
        let members = leader::members(pool, self.config.leader_lease * 3).await?;
        Ok((status, members))
    }

    /// Why this store's leadership was lost, as it changes (PostgreSQL only).
    pub(crate) fn leadership_watch(&self) -> Option<watch::Receiver<Option<String>>> {
        self.db.fence().map(|f| f.watch())
    }

    /// `single`, `leader` or `deposed` (see [`super::StoreStats::role`]).
    pub(crate) fn role(&self) -> &'static str {
        match self.db.fence() {
            Some(fence) if fence.lost().is_some() => "deposed",
            Some(fence) if fence.epoch() != 0 => "leader",
            _ => "single",
        }
    }
}
