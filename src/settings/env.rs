//! The `WRANGLE_*` environment variables: which there are, and how each sets a setting.

use super::{read_secret_file, Settings};
use crate::api::{ApiToken, Scope};
use crate::error::Error;
use crate::store::Durability;

/// The environment variables read, with the setting each one sets.
pub const ENV_VARS: &[(&str, &str)] = &[
    (
        "WRANGLE_CONFIG",
        "path of the TOML settings file (default ./wrangle.toml if present)",
    ),
    ("WRANGLE_BIND", "bind"),
    ("WRANGLE_TOKEN", "token"),
    ("WRANGLE_TOKEN_FILE", "token, read from this file"),
    ("WRANGLE_TOKENS", "tokens (`read+submit=TOKEN,read=OTHER`)"),
    (
        "WRANGLE_DANGEROUSLY_ALLOW_PUBLIC_WITHOUT_TOKEN",
        "dangerously_allow_public_without_token",
    ),
    ("WRANGLE_MAX_BODY_BYTES", "max_body_bytes"),
    ("WRANGLE_RATE_LIMIT", "rate_limit_per_second"),
    ("WRANGLE_MAX_BATCH", "max_batch"),
    ("WRANGLE_MAX_CONNECTIONS", "max_connections"),
    ("WRANGLE_HEADER_READ_TIMEOUT_MS", "header_read_timeout_ms"),
    ("WRANGLE_BODY_READ_TIMEOUT_MS", "body_read_timeout_ms"),
    ("WRANGLE_MAX_STREAMS_PER_CLIENT", "max_streams_per_client"),
    ("WRANGLE_MAX_EVENT_STREAM_SECS", "max_event_stream_secs"),
    ("WRANGLE_MAX_WAIT_SECS", "max_wait_secs"),
    ("WRANGLE_TLS_CERT", "tls_cert"),
    ("WRANGLE_TLS_KEY", "tls_key"),
    ("WRANGLE_CORS_ORIGINS", "cors_origins"),
    ("WRANGLE_ALLOWED_HOSTS", "allowed_hosts"),
    ("WRANGLE_MIN_WORKERS", "min_workers"),
    ("WRANGLE_MAX_WORKERS", "max_workers"),
    ("WRANGLE_MAX_CONCURRENT_TASKS", "max_concurrent_tasks"),
    ("WRANGLE_LABELS", "labels"),
    ("WRANGLE_AUTO_SCALE", "auto_scale"),
    ("WRANGLE_SCALE_UP_THRESHOLD", "scale_up_threshold"),
    ("WRANGLE_SCALE_DOWN_THRESHOLD", "scale_down_threshold"),
    ("WRANGLE_SCALE_COOLDOWN_SECS", "scale_cooldown_secs"),
    ("WRANGLE_TASK_TIMEOUT_SECS", "task_timeout_secs"),
    ("WRANGLE_MAX_QUEUE_SIZE", "max_queue_size"),
    ("WRANGLE_DEFAULT_RETRIES", "default_retries"),
    ("WRANGLE_WORKER_TIMEOUT_SECS", "worker_timeout_secs"),
    ("DATABASE_URL", "database_url"),
    (
        "WRANGLE_DATABASE_URL",
        "database_url (wins over DATABASE_URL)",
    ),
    ("WRANGLE_DURABILITY", "durability"),
    ("WRANGLE_RETENTION_HOURS", "retention_hours"),
    ("WRANGLE_RETENTION_MAX_TASKS", "retention_max_tasks"),
    ("WRANGLE_RETENTION_MAX_BYTES", "retention_max_bytes"),
    ("WRANGLE_LEASE_TIME_SECS", "lease_time_secs"),
    ("WRANGLE_PRIORITY_AGING_SECS", "priority_aging_secs"),
    ("WRANGLE_CLUSTER_LISTEN", "cluster_listen"),
    ("WRANGLE_COOKIE", "cookie"),
    ("WRANGLE_COOKIE_FILE", "cookie, read from this file"),
    ("WRANGLE_CLUSTER_TLS_CERT", "cluster_tls_cert"),
    ("WRANGLE_CLUSTER_TLS_KEY", "cluster_tls_key"),
    ("WRANGLE_NODE_TIMEOUT_MS", "node_timeout_ms"),
    (
        "WRANGLE_CLUSTER_HANDSHAKE_TIMEOUT_MS",
        "cluster_handshake_timeout_ms",
    ),
    (
        "WRANGLE_CLUSTER_MAX_PENDING_HANDSHAKES",
        "cluster_max_pending_handshakes",
    ),
];

impl Settings {
    /// Applies one `WRANGLE_*` variable; other variables are ignored.
    pub fn apply_env(&mut self, key: &str, value: &str) -> Result<(), Error> {
        fn parse<T: std::str::FromStr>(key: &'static str, value: &str) -> Result<T, Error> {
            value
                .trim()
                .parse()
                .map_err(|_| Error::invalid(key, format!("`{value}` is not a valid value")))
        }
        fn list(value: &str) -> Vec<String> {
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        }
        match key {
            "WRANGLE_BIND" => self.bind = parse("WRANGLE_BIND", value)?,
            // Kept even when empty, so `validate` refuses it rather than running open.
            "WRANGLE_TOKEN" => self.token = Some(value.to_string()),
            "WRANGLE_TOKEN_FILE" => {
                self.token = Some(read_secret_file("WRANGLE_TOKEN_FILE", value.as_ref())?)
            }
            "WRANGLE_TOKENS" => self.tokens = parse_tokens(value)?,
            "WRANGLE_DANGEROUSLY_ALLOW_PUBLIC_WITHOUT_TOKEN" => {
                self.dangerously_allow_public_without_token =
                    parse("WRANGLE_DANGEROUSLY_ALLOW_PUBLIC_WITHOUT_TOKEN", value)?
            }
            "WRANGLE_MAX_BODY_BYTES" => {
                self.max_body_bytes = parse("WRANGLE_MAX_BODY_BYTES", value)?
            }
            "WRANGLE_RATE_LIMIT" => {
                self.rate_limit_per_second = parse("WRANGLE_RATE_LIMIT", value)?
            }
            "WRANGLE_MAX_BATCH" => self.max_batch = parse("WRANGLE_MAX_BATCH", value)?,
            "WRANGLE_MAX_CONNECTIONS" => {
                self.max_connections = parse("WRANGLE_MAX_CONNECTIONS", value)?
            }
            "WRANGLE_HEADER_READ_TIMEOUT_MS" => {
                self.header_read_timeout_ms = parse("WRANGLE_HEADER_READ_TIMEOUT_MS", value)?
            }
            "WRANGLE_BODY_READ_TIMEOUT_MS" => {
                self.body_read_timeout_ms = parse("WRANGLE_BODY_READ_TIMEOUT_MS", value)?
            }
            "WRANGLE_MAX_STREAMS_PER_CLIENT" => {
                self.max_streams_per_client = parse("WRANGLE_MAX_STREAMS_PER_CLIENT", value)?
            }
            "WRANGLE_MAX_EVENT_STREAM_SECS" => {
                self.max_event_stream_secs = parse("WRANGLE_MAX_EVENT_STREAM_SECS", value)?
            }
            "WRANGLE_MAX_WAIT_SECS" => self.max_wait_secs = parse("WRANGLE_MAX_WAIT_SECS", value)?,
            "WRANGLE_TLS_CERT" => self.tls_cert = Some(value.into()),
            "WRANGLE_TLS_KEY" => self.tls_key = Some(value.into()),
            "WRANGLE_CORS_ORIGINS" => self.cors_origins = list(value),
            "WRANGLE_ALLOWED_HOSTS" => self.allowed_hosts = list(value),
            "WRANGLE_MIN_WORKERS" => self.min_workers = parse("WRANGLE_MIN_WORKERS", value)?,
            "WRANGLE_MAX_WORKERS" => self.max_workers = parse("WRANGLE_MAX_WORKERS", value)?,
            "WRANGLE_MAX_CONCURRENT_TASKS" => {
                self.max_concurrent_tasks = parse("WRANGLE_MAX_CONCURRENT_TASKS", value)?
            }
            "WRANGLE_LABELS" => self.labels = list(value),
            "WRANGLE_AUTO_SCALE" => self.auto_scale = parse("WRANGLE_AUTO_SCALE", value)?,
            "WRANGLE_SCALE_UP_THRESHOLD" => {
                self.scale_up_threshold = parse("WRANGLE_SCALE_UP_THRESHOLD", value)?
            }
            "WRANGLE_SCALE_DOWN_THRESHOLD" => {
                self.scale_down_threshold = parse("WRANGLE_SCALE_DOWN_THRESHOLD", value)?
            }
            "WRANGLE_SCALE_COOLDOWN_SECS" => {
                self.scale_cooldown_secs = parse("WRANGLE_SCALE_COOLDOWN_SECS", value)?
            }
            "WRANGLE_TASK_TIMEOUT_SECS" => {
                self.task_timeout_secs = parse("WRANGLE_TASK_TIMEOUT_SECS", value)?
            }
            "WRANGLE_MAX_QUEUE_SIZE" => {
                self.max_queue_size = parse("WRANGLE_MAX_QUEUE_SIZE", value)?
            }
            "WRANGLE_DEFAULT_RETRIES" => {
                self.default_retries = parse("WRANGLE_DEFAULT_RETRIES", value)?
            }
            "WRANGLE_WORKER_TIMEOUT_SECS" => {
                self.worker_timeout_secs = parse("WRANGLE_WORKER_TIMEOUT_SECS", value)?
            }
            "DATABASE_URL" | "WRANGLE_DATABASE_URL" => self.database_url = value.to_string(),
            "WRANGLE_DURABILITY" => {
                self.durability = match value {
                    "committed" => Durability::Committed,
                    "buffered" => Durability::Buffered,
                    _ => {
                        return Err(Error::invalid(
                            "WRANGLE_DURABILITY",
                            format!("`{value}` is not `committed` or `buffered`"),
                        ))
                    }
                }
            }
            "WRANGLE_RETENTION_HOURS" => {
                self.retention_hours = parse("WRANGLE_RETENTION_HOURS", value)?
            }
            "WRANGLE_RETENTION_MAX_TASKS" => {
                self.retention_max_tasks = parse("WRANGLE_RETENTION_MAX_TASKS", value)?
            }
            "WRANGLE_RETENTION_MAX_BYTES" => {
                self.retention_max_bytes = parse("WRANGLE_RETENTION_MAX_BYTES", value)?
            }
            "WRANGLE_LEASE_TIME_SECS" => {
                self.lease_time_secs = parse("WRANGLE_LEASE_TIME_SECS", value)?
            }
            "WRANGLE_PRIORITY_AGING_SECS" => {
                self.priority_aging_secs = parse("WRANGLE_PRIORITY_AGING_SECS", value)?
            }
            "WRANGLE_CLUSTER_LISTEN" => {
                self.cluster_listen = Some(parse("WRANGLE_CLUSTER_LISTEN", value)?)
            }
            "WRANGLE_COOKIE" => self.cookie = Some(value.to_string()).filter(|c| !c.is_empty()),
            "WRANGLE_COOKIE_FILE" => {
                self.cookie = Some(read_secret_file("WRANGLE_COOKIE_FILE", value.as_ref())?)
            }
            "WRANGLE_CLUSTER_TLS_CERT" => self.cluster_tls_cert = Some(value.into()),
            "WRANGLE_CLUSTER_TLS_KEY" => self.cluster_tls_key = Some(value.into()),
            "WRANGLE_NODE_TIMEOUT_MS" => {
                self.node_timeout_ms = parse("WRANGLE_NODE_TIMEOUT_MS", value)?
            }
            "WRANGLE_CLUSTER_HANDSHAKE_TIMEOUT_MS" => {
                self.cluster_handshake_timeout_ms =
                    parse("WRANGLE_CLUSTER_HANDSHAKE_TIMEOUT_MS", value)?
            }
            "WRANGLE_CLUSTER_MAX_PENDING_HANDSHAKES" => {
                self.cluster_max_pending_handshakes =
                    parse("WRANGLE_CLUSTER_MAX_PENDING_HANDSHAKES", value)?
            }
            _ => {}
        }
        Ok(())
    }
}

/// Parses `read+submit=TOKEN,read=OTHER`: scopes joined by `+`, then `=` and the token.
fn parse_tokens(value: &str) -> Result<Vec<ApiToken>, Error> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
        .map(|(i, entry)| {
            let (scopes, token) = entry.split_once('=').ok_or_else(|| {
                Error::invalid(
                    "WRANGLE_TOKENS",
                    format!("entry {i} is not `scope+scope=TOKEN`"),
                )
            })?;
            let scopes = scopes
                .split('+')
                .map(|s| s.parse::<Scope>())
                .collect::<Result<_, _>>()
                .map_err(|e| Error::invalid("WRANGLE_TOKENS", format!("entry {i}: {e}")))?;
            Ok(ApiToken {
                token: token.to_string(),
                scopes,
            })
        })
        .collect()
}
