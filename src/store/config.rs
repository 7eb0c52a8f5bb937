//! Where and how tasks are stored: [`StoreConfig`] and [`Durability`].

use std::time::Duration;

use crate::error::Error;

/// When `submit` returns, relative to the database.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// `submit` returns once the task is committed: a crash after it loses nothing. The
    /// default.
    #[default]
    Committed,
    /// `submit` returns at once and the task is committed with the next group, a few
    /// milliseconds later; a crash in between loses those tasks.
    Buffered,
}

/// Where and how tasks are stored.
#[derive(Clone)]
pub struct StoreConfig {
    /// `sqlite://PATH` (the file is created on first use) or
    /// `postgres://USER:PASSWORD@HOST:PORT/DB`.
    pub url: String,
    /// When `submit` returns. Default [`Durability::Committed`].
    pub durability: Durability,
    /// Finished tasks older than this are deleted in the background; `None` keeps them.
    /// Dead letters are kept until re-queued. Default 7 days.
    pub retention: Option<Duration>,
    /// At most this many finished tasks are kept: beyond it the oldest finished go at the
    /// next prune, whatever their age (dead letters and unfinished tasks are never counted
    /// out). `None` keeps any number. Default 1,000,000 (about 730 MB of small tasks).
    pub retention_max_tasks: Option<u64>,
    /// The database's size bound in bytes. SQLite: past it the oldest finished tasks go
    /// until the file is back under 90 % of it, and the file shrinks (incremental vacuum).
    /// PostgreSQL does not shrink its files (freed space is reused), so there it is only
    /// measured and warned about and `retention_max_tasks` holds the size. Either way a
    /// warning is logged once the database passes 80 % of it. `None` sets no bound.
    /// Default 8 GiB.
    pub retention_max_bytes: Option<u64>,
    /// How often retention runs. Default 60 s.
    pub prune_interval: Duration,
    /// Commit as soon as this many tasks have pending changes, even while more arrive.
    /// Default 10,000.
    pub max_batch: usize,
    /// Database connections (one writes; the others serve reads). Default 4.
    pub max_connections: u32,
    /// How long to wait for a connection before reporting the database unreachable.
    /// Default 5 s.
    pub connect_timeout: Duration,
    /// SQLite only: fsync the log on every commit (`synchronous=FULL`), so a committed task
    /// survives a power cut, not only a crash. Group commit keeps this affordable.
    /// Default true.
    pub sqlite_fsync_every_commit: bool,
    /// The name this process registers its node under. Default `coordinator`.
    pub node: String,
    /// PostgreSQL only: how long the coordinator leader's lease lasts without a renewal.
    /// A standby takes over once it lapses, so this bounds the takeover time after the
    /// leader dies. Default 3 s.
    pub leader_lease: Duration,
    /// PostgreSQL only: how often the leader renews its lease (and every coordinator says
    /// it is alive; standbys try for the lease this often). At most half the lease.
    /// Default 1 s.
    pub leader_renew: Duration,
}

impl std::fmt::Debug for StoreConfig {
    /// Every field but secrets, which show as `<redacted>` (they must not reach a log).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &self.redacted_url())
            .field("durability", &self.durability)
            .field("retention", &self.retention)
            .field("retention_max_tasks", &self.retention_max_tasks)
            .field("retention_max_bytes", &self.retention_max_bytes)
            .field("prune_interval", &self.prune_interval)
            .field("max_batch", &self.max_batch)
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("sqlite_fsync_every_commit", &self.sqlite_fsync_every_commit)
            .field("node", &self.node)
            .field("leader_lease", &self.leader_lease)
            .field("leader_renew", &self.leader_renew)
            .finish()
    }
}

impl StoreConfig {
    /// A store at `url`, with the defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            durability: Durability::Committed,
            retention: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_max_tasks: Some(1_000_000),
            retention_max_bytes: Some(8 << 30),
            prune_interval: Duration::from_secs(60),
            max_batch: 10_000,
            max_connections: 4,
            connect_timeout: Duration::from_secs(5),
            sqlite_fsync_every_commit: true,
            node: "coordinator".into(),
            leader_lease: Duration::from_secs(3),
            leader_renew: Duration::from_secs(1),
        }
    }

    /// An embedded SQLite file at `path`.
    pub fn sqlite(path: impl AsRef<std::path::Path>) -> Self {
        Self::new(format!("sqlite://{}", path.as_ref().display()))
    }

    /// Checks every setting; the error names the first bad one.
    pub fn validate(&self) -> Result<(), Error> {
        if self.prune_interval.is_zero() {
            return Err(Error::invalid(
                "store.prune_interval",
                "must be greater than zero",
            ));
        }
        if self.retention_max_tasks == Some(0) {
            return Err(Error::invalid(
                "store.retention_max_tasks",
                "must be at least 1 (or unset, to keep any number)",
            ));
        }
        if self.retention_max_bytes.is_some_and(|b| b < 1 << 20) {
            return Err(Error::invalid(
                "store.retention_max_bytes",
                "must be at least 1 MiB (1048576) (or unset, for no bound)",
            ));
        }
        if self.max_batch == 0 {
            return Err(Error::invalid("store.max_batch", "must be at least 1"));
        }
        if self.max_connections < 2 {
            return Err(Error::invalid(
                "store.max_connections",
                "must be at least 2 (one writes, one reads)",
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(Error::invalid(
                "store.connect_timeout",
                "must be greater than zero",
            ));
        }
        if self.leader_renew < Duration::from_millis(50) {
            return Err(Error::invalid(
                "store.leader_renew",
                "must be at least 50 ms",
            ));
        }
        if self.leader_lease < self.leader_renew * 2 || self.leader_lease > Duration::from_secs(600)
        {
            return Err(Error::invalid(
                "store.leader_lease",
                "must be at least twice store.leader_renew (a renewal may be late once) and at \
                 most 600 s",
            ));
        }
        Ok(())
    }

    /// The URL with its password hidden, for messages.
    pub fn redacted_url(&self) -> String {
        super::db::redact(&self.url)
    }
}
