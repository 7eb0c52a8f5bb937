//! The store's counters: the writer's live [`WriterStats`], and the [`StoreStats`] that
//! `GET /stats` shows.

use std::sync::atomic::{AtomicBool, AtomicU64};

/// The store as `GET /stats` shows it.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct StoreStats {
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// Its URL, password hidden.
    pub url: String,
    /// `committed` or `buffered`.
    pub durability: String,
    /// False from a failed commit until the next one succeeds (submits are refused meanwhile).
    pub healthy: bool,
    /// Transactions committed.
    pub commits: u64,
    /// Commits that failed.
    pub failures: u64,
    /// Finished tasks deleted by retention.
    pub pruned: u64,
    /// Rows the database refused for good and the writer left out (see
    /// [`WriterStats::rejected_rows`]).
    pub rejected_rows: u64,
    /// The database's size in bytes (SQLite: pages × page size; PostgreSQL:
    /// `pg_database_size`), measured at each prune interval; 0 until first measured.
    pub database_bytes: u64,
    /// Free bytes on the disk holding an SQLite file, measured with `database_bytes`;
    /// `None` for PostgreSQL, or before the first measure.
    pub disk_free_bytes: Option<u64>,
    /// `single` (SQLite, or PostgreSQL before this coordinator took the leader lease),
    /// `leader` (it holds the lease; failover), or `deposed` (another coordinator took
    /// the lease: this one may no longer write and steps down).
    pub role: String,
    /// The coordinator epoch this store writes with.
    pub epoch: u64,
    /// Why the leadership was lost, once it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost: Option<String>,
}

/// The writer's counters, read by `/metrics` and the benchmarks.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Transactions committed.
    pub commits: AtomicU64,
    /// Task rows written (inserts and updates).
    pub task_rows: AtomicU64,
    /// Commits that failed.
    pub failures: AtomicU64,
    /// Finished tasks deleted by retention.
    pub pruned: AtomicU64,
    /// Rows the database refused for good (a value no retry makes storable): each was left
    /// out of its batch so the rest could commit, and its task recorded failed with the
    /// reason where even that could be stored. Exported as
    /// `wrangle_store_rejected_rows_total`.
    pub rejected_rows: AtomicU64,
    /// The database's size in bytes at the last prune interval.
    pub database_bytes: AtomicU64,
    /// Free bytes on the SQLite file's disk at the last prune interval (`u64::MAX` when
    /// not known).
    pub disk_free_bytes: AtomicU64,
    /// False from a failed commit until the next one succeeds.
    pub healthy: AtomicBool,
    /// How long each write transaction of the writer took, from its first statement to its
    /// commit (`wrangle_store_commit_seconds`).
    pub commit_latency: crate::metrics::Histogram,
}
