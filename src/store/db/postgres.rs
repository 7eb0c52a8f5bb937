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
}
