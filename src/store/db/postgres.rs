//! PostgreSQL: named by `DATABASE_URL=postgres://...`, the same schema and statements as
//! SQLite.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::BeginWrite;
use crate::store::StoreConfig;

/// The connection options for a `postgres://` URL.
pub(super) fn options(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    PgConnectOptions::from_str(url)
}

/// The pool of `config.max_connections` connections.
pub(super) async fn pool(
    config: &StoreConfig,
    options: PgConnectOptions,
) -> Result<sqlx::PgPool, sqlx::Error> {
    // A leader frozen inside a write transaction keeps the lease row locked (see
    // `store::leader`): the server ends such a transaction before the lease lapses, so a
    // standby's takeover does not wait on it.
    let idle = config.leader_lease.saturating_sub(config.leader_renew);
    let options = options.options([(
        "idle_in_transaction_session_timeout",
        format!("{}", idle.as_millis().max(100)),
    )]);
    PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.connect_timeout)
        .connect_with(options)
        .await
}

impl BeginWrite for sqlx::PgPool {
    type Backend = sqlx::Postgres;

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.begin().await
    }

    async fn begin_fenced(
        &self,
        fence: Option<&super::Fence>,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        let mut tx = self.begin().await?;
        if let Some(fence) = fence {
            fence.pass(&mut tx).await?;
        }
        Ok(tx)
    }
}
