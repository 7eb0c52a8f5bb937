//! [`StoreError`]: what the store refuses, and why.

/// What the store refuses, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The URL is not one the store understands.
    #[error("bad database url {url}: {reason}")]
    BadUrl {
        /// The URL, password hidden.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// No connection could be made.
    #[error("cannot reach the database at {url}: {reason}")]
    Unreachable {
        /// The URL, password hidden.
        url: String,
        /// The driver's error.
        reason: String,
    },
    /// A schema migration failed; the database is left at the version before it.
    #[error("migration {version} failed: {reason}")]
    Migration {
        /// The migration.
        version: i64,
        /// The database's error.
        reason: String,
    },
    /// The database was migrated by a newer wrangle.
    #[error("database schema is at version {found}, newer than this build knows ({known})")]
    SchemaTooNew {
        /// The database's version.
        found: i64,
        /// The newest this build has.
        known: i64,
    },
    /// Another queue journals into this database already (one per database).
    #[error(
        "the database at {url} is in use by another wrangle coordinator (one queue per \
         database; stop the other, or give this one its own database)"
    )]
    InUse {
        /// The URL, password hidden.
        url: String,
    },
    /// A coordinator's write carried the epoch of a leader lease that another coordinator
    /// has since taken (PostgreSQL failover): the write was refused and rolled back. The
    /// coordinator that gets this is no longer the leader and must stop writing.
    #[error(
        "fenced: a newer coordinator leader (epoch {current}) holds the database; this \
         coordinator's epoch {epoch} may no longer write"
    )]
    Fenced {
        /// The epoch the refused write carried.
        epoch: u64,
        /// The epoch of the leader holding the database now.
        current: u64,
    },
    /// The write was refused before it reached the database: this coordinator's
    /// leadership ended (another coordinator took the lease, or the lease could not be
    /// renewed). Nothing of it was written.
    #[error("write refused, not the leader ({reason})")]
    NotLeader {
        /// Why the leadership ended.
        reason: String,
    },
    /// A read or write failed while running.
    #[error("{0}")]
    Unavailable(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match super::leadership::refusal(&e) {
            Some(reason) => Self::NotLeader {
                reason: reason.to_string(),
            },
            None => Self::Unavailable(format!("database unavailable: {e}")),
        }
    }
}
