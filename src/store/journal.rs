//! The store as the queue's journal: the queue claims the database, reloads what was
//! unfinished, and hands every change to the writer actor started here. The store never
//! names the queue: the queue hands the writer an [`Unstored`] to hear what could not be
//! stored.

use std::sync::Arc;
use std::time::SystemTime;

use super::snapshot::outcome_of;
use super::{claim, retention, rows, writer};
use super::{Claim, Recovered, Store, StoreError, StoreMsg, Unstored};
use crate::error::Error;
use crate::mailbox::{Mailbox, MailboxDepth};
use crate::task::{TaskId, TaskOutcome};

impl Store {
    /// The outcome of a stored task that finished.
    pub(crate) async fn outcome(&self, id: TaskId) -> Result<Option<TaskOutcome>, Error> {
        Ok(self.get_task(id).await?.and_then(|t| outcome_of(&t)))
    }

    /// Claims the database for one queue (see [`Claim`]) and increments the coordinator
    /// epoch in the same transaction; [`Store::epoch`] answers the new value from then on.
    pub(crate) async fn claim(&self) -> Result<Claim, Error> {
        let (claim, epoch) = claim::claim(&self.config, &self.db, &self.candidacy).await?;
        self.epoch.store(epoch, std::sync::atomic::Ordering::SeqCst);
        tracing::info!(epoch, "database claimed");
        Ok(claim)
    }

    /// Loads every unfinished task and dead letter. Rows that no longer decode are marked
    /// failed in the database, with the reason, and left out.
    pub(crate) async fn load(&self) -> Result<Vec<Recovered>, Error> {
        let now = rows::ms(SystemTime::now());
        let (workers, nodes) = self.db.mark_gone(now).await.map_err(StoreError::from)?;
        if workers + nodes > 0 {
            tracing::info!(
                workers,
                nodes,
                "registry rows of the previous run marked lost"
            );
        }
        let rows = self.db.load_live().await.map_err(StoreError::from)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id = row.id;
            match row.decode() {
                Ok(r) => out.push(r),
                Err(reason) => {
                    let error = format!("stored task no longer decodes: {reason}");
                    tracing::error!(task_id = %id, %error, "task marked failed at recovery");
                    self.db
                        .fail_task(id, &error, now)
                        .await
                        .map_err(StoreError::from)?;
                }
            }
        }
        Ok(out)
    }

    /// Starts the writer actor, linked to `owner` (the queue), which hears through
    /// `unstored` of every task the writer could not store.
    pub(crate) async fn start_writer(
        &self,
        owner: ractor::ActorCell,
        unstored: Arc<dyn Unstored>,
    ) -> Result<Mailbox<StoreMsg>, Error> {
        let depth = MailboxDepth::default();
        let args = writer::WriterArgs {
            db: self.db.clone(),
            depth: depth.clone(),
            unstored,
            retention: retention::Retention {
                age: self.config.retention,
                max_tasks: self.config.retention_max_tasks,
                max_bytes: self.config.retention_max_bytes,
                path: claim::sqlite_file(&self.config.url),
            },
            prune_interval: self.config.prune_interval,
            max_batch: self.config.max_batch,
            stats: self.stats.clone(),
        };
        let (actor, _) = ractor::Actor::spawn_linked(None, writer::StoreWriter, args, owner)
            .await
            .map_err(|e| Error::Spawn {
                actor: "store writer",
                reason: e.to_string(),
            })?;
        Ok(Mailbox::new(actor, depth))
    }
}
