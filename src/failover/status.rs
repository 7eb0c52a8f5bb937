//! What `GET /failover` answers: who leads, who stands by, the last takeover.

use std::time::Duration;

use crate::store::Store;

/// The coordinators sharing a PostgreSQL database, as one of them sees them.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct FailoverStatus {
    /// This coordinator's role: `single` (SQLite, or no failover), `leader`, `standby`,
    /// or `deposed` (it led, another coordinator took over; it is stepping down).
    pub role: String,
    /// This coordinator's name in the lease (unique per process); empty when single.
    pub name: String,
    /// The epoch of the latest leadership (0 before any).
    pub epoch: u64,
    /// Who holds the lease (or last held it, until a standby takes it).
    pub leader: Option<String>,
    /// Where the leader serves HTTP: standbys redirect clients there.
    pub leader_url: Option<String>,
    /// Milliseconds until the lease lapses without a renewal (0: lapsed or free).
    pub lease_expires_in_ms: u64,
    /// Milliseconds since the current leadership began (the last takeover).
    pub last_takeover_ago_ms: Option<u64>,
    /// Who held the lease when it was last taken; `None` when it was free (released by
    /// a clean stop, or never held).
    pub previous_leader: Option<String>,
    /// Every coordinator seen alive recently, leader and standbys.
    pub coordinators: Vec<CoordinatorMember>,
    /// When and why this coordinator last stepped down from leading, if it did.
    pub stepped_down: Option<SteppedDown>,
}

/// One coordinator sharing the database.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct CoordinatorMember {
    /// Its name in the lease.
    pub name: String,
    /// Where it serves HTTP.
    pub url: Option<String>,
    /// `leader` if it holds the lease now, else `standby` (the lease decides: a member's own
    /// word is as old as its last renewal).
    pub role: String,
    /// Milliseconds since it last said it was alive.
    pub seen_ago_ms: u64,
}

/// A step down: the leadership this coordinator lost, and why.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct SteppedDown {
    /// Why (fenced by a newer epoch, the lease taken, the database unreachable).
    pub reason: String,
    /// Milliseconds ago.
    pub ago_ms: u64,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl FailoverStatus {
    /// A coordinator without failover (no store, SQLite, or an in-memory database).
    pub(crate) fn single() -> Self {
        Self {
            role: "single".into(),
            name: String::new(),
            epoch: 0,
            leader: None,
            leader_url: None,
            lease_expires_in_ms: 0,
            last_takeover_ago_ms: None,
            previous_leader: None,
            coordinators: Vec::new(),
            stepped_down: None,
        }
    }

    /// What `store` (PostgreSQL) reads of the lease and the members, for a coordinator in
    /// `role`; a single coordinator's status for any other store.
    pub(crate) async fn read(
        store: Option<&Store>,
        role: &str,
        stepped_down: Option<SteppedDown>,
    ) -> Result<Self, crate::Error> {
        let Some(store) = store.filter(|s| s.backend() == "postgres") else {
            return Ok(Self::single());
        };
        let (lease, members) = store.failover_facts().await?;
        let leader = lease.holder.clone().filter(|_| !lease.expires_in.is_zero());
        let leads = |name: &str| leader.as_deref() == Some(name);
        Ok(Self {
            role: role.to_string(),
            name: store.holder().to_string(),
            epoch: lease.epoch,
            leader: lease.holder,
            leader_url: lease.http_url,
            lease_expires_in_ms: ms(lease.expires_in),
            last_takeover_ago_ms: lease.acquired_ago.map(ms),
            previous_leader: lease.previous_holder,
            coordinators: members
                .into_iter()
                .map(|m| CoordinatorMember {
                    role: if leads(&m.holder) {
                        "leader"
                    } else {
                        "standby"
                    }
                    .into(),
                    name: m.holder,
                    url: m.http_url,
                    seen_ago_ms: ms(m.seen_ago),
                })
                .collect(),
            stepped_down,
        })
    }
}
