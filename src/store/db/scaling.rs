//! The node groups' scaling events: appended in one statement per batch, read newest first.

use sqlx::Row;

use super::Db;
use crate::scaling::ScalingEvent;

const COLUMNS: &str = "at_ms, group_name, action, node, reason, waiting, nodes, in_flight, error";

impl Db {
    /// Appends `events`.
    pub(crate) async fn record_scaling_events(
        &self,
        events: &[ScalingEvent],
    ) -> Result<(), sqlx::Error> {
        use crate::store::text;
        if events.is_empty() {
            return Ok(());
        }
        let fence = self.fence().map(|f| &**f);
        on_pool!(self, |pool, DB| {
            let mut tx = super::BeginWrite::begin_fenced(pool, fence).await?;
            for chunk in super::chunks(events) {
                let mut qb = sqlx::QueryBuilder::<DB>::new(format!(
                    "INSERT INTO scaling_events ({COLUMNS}) "
                ));
                qb.push_values(chunk, |mut b, e| {
                    b.push_bind(crate::store::ms(e.at))
                        .push_bind(text::name(&e.group))
                        .push_bind(text::name(&e.action))
                        .push_bind(e.node.as_deref().map(text::name))
                        .push_bind(text::message(Some(&e.reason)).unwrap_or_default())
                        .push_bind(i64::try_from(e.waiting).unwrap_or(i64::MAX))
                        .push_bind(i64::try_from(e.nodes).unwrap_or(i64::MAX))
                        .push_bind(i64::try_from(e.in_flight).unwrap_or(i64::MAX))
                        .push_bind(text::message(e.error.as_deref()));
                });
                qb.build().execute(&mut *tx).await?;
            }
            tx.commit().await
        })
    }

    /// The newest `limit` events, oldest first.
    pub(crate) async fn scaling_events(
        &self,
        limit: i64,
    ) -> Result<Vec<ScalingEvent>, sqlx::Error> {
        on_pool!(self, |pool, _DB| {
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM scaling_events ORDER BY id DESC LIMIT $1"
            ))
            .bind(limit)
            .fetch_all(pool)
            .await?;
            let mut events = rows
                .iter()
                .map(|r| {
                    Ok(ScalingEvent {
                        at: std::time::UNIX_EPOCH
                            + std::time::Duration::from_millis(
                                r.try_get::<i64, _>(0)?.max(0) as u64
                            ),
                        group: r.try_get(1)?,
                        action: r.try_get(2)?,
                        node: r.try_get(3)?,
                        reason: r.try_get(4)?,
                        waiting: r.try_get::<i64, _>(5)?.max(0) as u64,
                        nodes: r.try_get::<i64, _>(6)?.max(0) as usize,
                        in_flight: r.try_get::<i64, _>(7)?.max(0) as u64,
                        error: r.try_get(8)?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?;
            events.reverse();
            Ok(events)
        })
    }
}
