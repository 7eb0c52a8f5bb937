//! The node groups' scaling events ([`ScalingEvent`]): appended as they happen, read back
//! for `GET /scale/history` after a restart.

use super::{Store, StoreError};
use crate::scaling::ScalingEvent;

impl Store {
    /// Appends `events` in one transaction of their own.
    pub(crate) async fn record_scaling_events(
        &self,
        events: &[ScalingEvent],
    ) -> Result<(), StoreError> {
        Ok(self.db.record_scaling_events(events).await?)
    }

    /// The newest `limit` scaling events, oldest first.
    pub async fn scaling_events(&self, limit: usize) -> Result<Vec<ScalingEvent>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Ok(self.db.scaling_events(limit).await?)
    }
}
