//! Durable state: tasks, attempts, results and the worker and node registry, in an embedded
//! SQLite file or in PostgreSQL.
//!
//! The queue stays the authority while it runs (every decision is made in memory); the store
//! is its journal. Changes reach the database through one writer actor that commits them in
//! groups ([`writer`]), and on start the queue reloads every unfinished task from it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), wrangle::Error> {
//! use wrangle::{Store, StoreConfig};
//!
//! // An embedded file, created on first use; or `StoreConfig::new("postgres://...")`.
//! let store = Store::open(StoreConfig::sqlite("wrangle.db")).await?;
//! println!("{} store, counts: {:?}", store.backend(), store.task_counts().await?);
//! # Ok(()) }
//! ```

mod batch;
mod claim;
mod commit;
mod config;
mod db;
mod dropped;
mod error;
mod handle;
mod journal;
mod leader;
mod leadership;
mod migrate;
mod pending;
mod retention;
mod rows;
mod scaling;
mod snapshot;
mod split;
mod stats;
mod text;
mod workflows;
mod writer;

pub use config::{Durability, StoreConfig};
pub use error::StoreError;
pub use handle::{migrate, Store};
pub use migrate::MigrationReport;
pub use stats::{StoreStats, WriterStats};

pub(crate) use batch::{BatchStored, SubmitBatch, Unstored};
pub(crate) use claim::Claim;
pub(crate) use db::redact as redact_url;
pub(crate) use rows::{ms, AttemptRow, NewTask, NodeRow, Recovered, StoreOp, TaskState, WorkerRow};
pub(crate) use workflows::{JournalWrite, WorkflowBatch, WorkflowEventRow, WorkflowRunRow};
pub(crate) use writer::StoreMsg;
