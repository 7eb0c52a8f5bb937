//! Failover on PostgreSQL: several coordinator programs share one database; one leads
//! (runs the queue, the cluster listener and the API), the others stand by and take over
//! when the leader's lease lapses.
//!
//! A [`Failover`] is one coordinator program's part in it. It serves the program's HTTP
//! port in either role ([`Failover::router`]): while standing by it answers `/healthz`,
//! `/readyz` (503, `"role": "standby"`), `/failover` and `/stats` itself and redirects
//! every other request to the leader (307 with its address; 503 `no_leader` with
//! `Retry-After` while none is known); while leading it serves the router of the
//! coordinator it leads with. The program's loop:
//!
//! ```text
//! loop {
//!     failover.wait_to_lead(&stop)          // standby: try for the lease every renewal
//!     coordinator = build on the same store  // recovers every unfinished task and run
//!     failover.lead(api::router(coordinator))
//!     select {
//!         reason = failover.lost() => { failover.step_down(reason); coordinator.stop(false) }
//!         stop => { coordinator.stop(true); break }
//!     }
//! }
//! ```
//!
//! The lease and fencing are the store's ([`crate::store`]: `leader.rs`, `leadership.rs`):
//! a leadership has an epoch larger than every one before it, every write transaction of
//! the leader checks it first, and a leader whose lease was taken (it froze, or lost the
//! database) finds every later write refused and steps down here.

mod standby;
mod status;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use axum::Router;
use tokio_util::sync::CancellationToken;

pub use status::{CoordinatorMember, FailoverStatus, SteppedDown};

use crate::api::ApiToken;
use crate::error::Error;
use crate::store::Store;

/// One coordinator program's part in failover. Cloning shares it.
#[derive(Clone)]
pub struct Failover {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// The API's tokens: the standby's own routes need them as the leader's do.
    tokens: Arc<[ApiToken]>,
    /// The API's settings and its own rate limiter, for the standby's own routes (the
    /// leader's router checks its requests itself).
    api: Arc<crate::api::ApiConfig>,
    limiter: crate::api::rate_limit::SharedLimiter,
    /// The router of the coordinator this program leads with, while it leads.
    leading: RwLock<Option<Router>>,
    /// Where the leader serves HTTP, as last read from the lease (never this program).
    leader_url: RwLock<Option<String>>,
    stepped_down: Mutex<Option<(Instant, String)>>,
    /// Leaderships this program took.
    takeovers: AtomicU64,
}

impl std::fmt::Debug for Failover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Failover")
            .field("name", &self.inner.store.holder())
            .field("role", &self.role())
            .finish()
    }
}

impl Failover {
    /// A standby on `store` (PostgreSQL), serving HTTP at `http_url` (what standbys
    /// redirect clients to once this one leads), checking requests to its own routes
    /// against `api`'s tokens.
    pub fn new(
        store: Store,
        http_url: Option<String>,
        api: &crate::api::ApiConfig,
    ) -> Result<Self, Error> {
        if store.backend() != "postgres" {
            return Err(Error::invalid(
                "store.url",
                "failover needs PostgreSQL: an SQLite file has one coordinator",
            ));
        }
        store.set_http_url(http_url);
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                tokens: api.every_token(),
                api: Arc::new(api.clone()),
                limiter: api.limiter(),
                leading: RwLock::new(None),
                leader_url: RwLock::new(None),
                stepped_down: Mutex::new(None),
                takeovers: AtomicU64::new(0),
            }),
        })
    }

    /// The store it leads with.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// This coordinator's name in the lease (unique per process).
    pub fn name(&self) -> &str {
        self.inner.store.holder()
    }

    /// `leader`, `deposed` (lost the lease, not yet stepped down) or `standby`.
    pub fn role(&self) -> &'static str {
        if self.leading().is_none() {
            "standby"
        } else if self.inner.store.role() == "deposed" {
            "deposed"
        } else {
            "leader"
        }
    }

    /// Leaderships this program took since it started.
    pub fn takeovers(&self) -> u64 {
        self.inner.takeovers.load(Ordering::Relaxed)
    }

    /// Stands by until this program takes the leader lease (answering its new epoch), or
    /// `stop` is cancelled (`None`). Every renewal interval it says it is alive, tries for
    /// the lease, and reads where the leader serves (for the redirects).
    pub async fn wait_to_lead(&self, stop: &CancellationToken) -> Option<u64> {
        let store = &self.inner.store;
        let every = store.config().leader_renew;
        let mut told_leader: Option<String> = None;
        loop {
            if let Err(e) = store.standby_heartbeat().await {
                tracing::debug!(error = %e, "standby heartbeat not written");
            }
            match store.try_lead().await {
                Ok(Some(epoch)) => {
                    self.inner.takeovers.fetch_add(1, Ordering::Relaxed);
                    *self
                        .inner
                        .leader_url
                        .write()
                        .unwrap_or_else(|e| e.into_inner()) = None;
                    tracing::info!(epoch, name = self.name(), "took the leader lease");
                    return Some(epoch);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot try for the leader lease"),
            }
            let leader = self.refresh_leader().await;
            if leader != told_leader {
                match &leader {
                    Some(url) => {
                        tracing::info!(leader = %url, "standing by; the leader serves at this address")
                    }
                    None => tracing::info!("standing by; no leader known"),
                }
                told_leader = leader;
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return None,
            }
        }
    }

    /// Reads the lease: the leader's address when another coordinator holds a running
    /// lease and gave an `http(s)` address other than this one's (a program restarted on
    /// its old address finds its dead self's lease until it lapses: a redirect there would
    /// come back here).
    async fn refresh_leader(&self) -> Option<String> {
        let mine = self.inner.store.http_url();
        // The lease alone: the member list is for `/failover`, not for every poll.
        let url = match self.inner.store.lease().await {
            Ok(lease) => lease
                .http_url
                .filter(|_| !lease.expires_in.is_zero())
                .filter(|_| lease.holder.as_deref() != Some(self.name()))
                .filter(|u| Some(u) != mine.as_ref())
                .filter(|u| standby::usable_base(u)),
            Err(_) => None,
        };
        *self
            .inner
            .leader_url
            .write()
            .unwrap_or_else(|e| e.into_inner()) = url.clone();
        url
    }

    /// From now on the HTTP port serves `app`: the router of the coordinator this
    /// program leads with.
    pub fn lead(&self, app: Router) {
        *self
            .inner
            .leading
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(app);
    }

    /// Resolves once this program's leadership is lost (a write fenced by a newer epoch,
    /// the lease taken, or not renewed for a whole lease), with the reason.
    pub async fn lost(&self) -> String {
        let Some(mut watch) = self.inner.store.leadership_watch() else {
            return std::future::pending().await;
        };
        loop {
            if let Some(reason) = watch.borrow_and_update().clone() {
                return reason;
            }
            if watch.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Back to standing by after a lost leadership: the HTTP port serves the standby's
    /// answers again, and `/failover` and `/stats` say why it stepped down.
    pub fn step_down(&self, reason: String) {
        tracing::error!(%reason, name = self.name(), "stepping down to standby");
        *self
            .inner
            .leading
            .write()
            .unwrap_or_else(|e| e.into_inner()) = None;
        *self
            .inner
            .stepped_down
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), reason));
    }

    /// A leadership taken by [`Failover::wait_to_lead`] that no coordinator took up (it
    /// failed to start): released, so another standby leads.
    pub async fn abdicate(&self) {
        self.inner.store.abdicate().await;
    }

    /// Leaves the member list (a clean stop).
    pub async fn leave(&self) {
        self.inner.store.leave_members().await;
    }

    /// What `GET /failover` answers.
    pub async fn status(&self) -> Result<FailoverStatus, Error> {
        let stepped_down = self
            .inner
            .stepped_down
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(at, reason)| SteppedDown {
                reason: reason.clone(),
                ago_ms: u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX),
            });
        FailoverStatus::read(Some(&self.inner.store), self.role(), stepped_down).await
    }

    fn leading(&self) -> Option<Router> {
        self.inner
            .leading
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn leader_url(&self) -> Option<String> {
        self.inner
            .leader_url
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
