//! Which stored tasks hold which idempotency keys.

use std::collections::HashMap;

use sqlx::{QueryBuilder, Row};

use super::{chunks, Db};
use crate::store::text;
use crate::task::TaskId;

impl Db {
    /// The tasks already holding these idempotency keys.
    pub(crate) async fn find_keys(
        &self,
        keys: &[&str],
    ) -> Result<HashMap<String, TaskId>, sqlx::Error> {
        let mut found = HashMap::new();
        for chunk in chunks(keys) {
            on_pool!(self, |pool, DB| {
                let mut qb = QueryBuilder::<DB>::new(
                    "SELECT idempotency_key, id FROM tasks WHERE idempotency_key IN (",
                );
                let mut list = qb.separated(", ");
                for k in chunk {
                    list.push_bind(text::without_nul(k));
                }
                qb.push(")");
                for row in qb.build().fetch_all(pool).await? {
                    let key: String = row.try_get(0)?;
                    let id: uuid::Uuid = row.try_get(1)?;
                    // Answer under the key asked for, which may hold a NUL stored as U+FFFD.
                    let asked = chunk.iter().find(|k| text::without_nul(k) == key);
                    found.insert(asked.map_or(key, |k| k.to_string()), TaskId::from_uuid(id));
                }
            })
        }
        Ok(found)
    }
}
