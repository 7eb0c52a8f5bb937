//! Settings of the runnable programs, in layers, each overriding the one before: the
//! defaults, an optional TOML file, `WRANGLE_*` environment variables, command-line flags.
//!
//! This module owns the file layer ([`Settings::load`]), the checks (`validate`) and the
//! library's settings structs built from the result (`configs`); `cli` holds the programs'
//! command lines (clap), where every setting is a flag whose environment variable is its
//! `WRANGLE_*` name, and `secret` reads secrets from files.

pub mod cli;
mod compute;
mod configs;
mod node;
mod node_groups;
mod secret;
mod validate;

pub use compute::ComputeSettings;
pub use node::NodeSettings;
pub use node_groups::{LauncherSettings, NodeGroupSettings};
pub use secret::{read_secret_file, MAX_SECRET_BYTES};

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

use crate::api::{ApiConfig, ApiToken, RateLimit, ServeConfig};
use crate::coordinator::CoordinatorConfig;
use crate::error::Error;
use crate::store::Durability;

/// The `database_url` that keeps tasks in memory only.
pub const IN_MEMORY: &str = "memory";

/// Everything the coordinator program reads. Every field has a default; a file only lists
/// what it changes. Unknown keys are refused, so a typo is an error, not a silent default.
/// Every field is also a flag, its name in kebab case (`max_workers`: `--max-workers`),
/// whose environment variable each field names ([`cli::CoordinatorArgs`]).
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Where the HTTP server listens. Default `127.0.0.1:7700`. Env `WRANGLE_BIND`.
    pub bind: SocketAddr,
    /// Bearer token required by the API, with every scope. Must not be empty. Default none.
    /// Env `WRANGLE_TOKEN`.
    pub token: Option<String>,
    /// Tokens with their own scopes, in a file as
    /// `tokens = [{ token = "...", scopes = ["read", "submit"] }]`, in env as
    /// `read+submit=TOKEN,read=OTHER`. Scopes: `read`, `submit`, `work`, `operate`, `admin`.
    /// Default none. Env `WRANGLE_TOKENS`.
    pub tokens: Vec<ApiToken>,
    /// Lets the API listen beyond loopback (`0.0.0.0`, a LAN address) with no token, so
    /// anyone who reaches the port controls the coordinator. Default false: such a `bind` is
    /// refused. Env `WRANGLE_DANGEROUSLY_ALLOW_PUBLIC_WITHOUT_TOKEN`.
    pub dangerously_allow_public_without_token: bool,
    /// Largest request body in bytes. Default 2 MiB. Env `WRANGLE_MAX_BODY_BYTES`.
    pub max_body_bytes: usize,
    /// Requests per second per client (an IPv4 address or an IPv6 /64), bursts of twice as
    /// many; 0 turns the limit off. Default 50000. Env `WRANGLE_RATE_LIMIT`.
    pub rate_limit_per_second: f64,
    /// Most tasks in one submit. Default 10000. Env `WRANGLE_MAX_BATCH`.
    pub max_batch: usize,
    /// Most HTTP connections open at once. Default 32768. Env `WRANGLE_MAX_CONNECTIONS`.
    pub max_connections: usize,
    /// Time a client has to send a request's head (and finish the TLS handshake), in
    /// milliseconds. Default 10000. Env `WRANGLE_HEADER_READ_TIMEOUT_MS`.
    pub header_read_timeout_ms: u64,
    /// Time a request body has to arrive, in milliseconds. Default 30000.
    /// Env `WRANGLE_BODY_READ_TIMEOUT_MS`.
    pub body_read_timeout_ms: u64,
    /// Most `/events` and `/wait` streams one client holds open. Default 16384.
    /// Env `WRANGLE_MAX_STREAMS_PER_CLIENT`.
    pub max_streams_per_client: usize,
    /// An `/events` stream ends after this many seconds. Default 3600.
    /// Env `WRANGLE_MAX_EVENT_STREAM_SECS`.
    pub max_event_stream_secs: u64,
    /// Longest `/tasks/{id}/wait`, in seconds. Default 300. Env `WRANGLE_MAX_WAIT_SECS`.
    pub max_wait_secs: u64,
    /// PEM certificate chain and key: the API serves HTTPS; both or neither.
    /// Env `WRANGLE_TLS_CERT`, `WRANGLE_TLS_KEY`.
    pub tls_cert: Option<std::path::PathBuf>,
    /// See `tls_cert`.
    pub tls_key: Option<std::path::PathBuf>,
    /// Origins allowed by CORS (comma-separated in env). Default none.
    /// Env `WRANGLE_CORS_ORIGINS`.
    pub cors_origins: Vec<String>,
    /// Host names, besides IP addresses and `localhost`, that requests may name in `Host`
    /// (comma-separated in env; `.corp.example` allows every name under it); others get 421.
    /// Default none. Env `WRANGLE_ALLOWED_HOSTS`.
    pub allowed_hosts: Vec<String>,
    /// Fewest local workers. Default 2. Env `WRANGLE_MIN_WORKERS`.
    pub min_workers: usize,
    /// Most local workers. Default 8. Env `WRANGLE_MAX_WORKERS`.
    pub max_workers: usize,
    /// Tasks each worker runs at once. Default 16. Env `WRANGLE_MAX_CONCURRENT_TASKS`.
    pub max_concurrent_tasks: u32,
    /// Labels of the local workers (comma-separated in env). Env `WRANGLE_LABELS`.
    pub labels: Vec<String>,
    /// Whether the autoscaler runs. Default true. Env `WRANGLE_AUTO_SCALE`.
    pub auto_scale: bool,
    /// Waiting tasks per worker above which the pool grows. Default 10.
    /// Env `WRANGLE_SCALE_UP_THRESHOLD`.
    pub scale_up_threshold: f64,
    /// Waiting tasks per worker below which it shrinks. Default 2.
    /// Env `WRANGLE_SCALE_DOWN_THRESHOLD`.
    pub scale_down_threshold: f64,
    /// Least time between scaling changes, in seconds. Default 30.
    /// Env `WRANGLE_SCALE_COOLDOWN_SECS`.
    pub scale_cooldown_secs: u64,
    /// Timeout of tasks that set none, in seconds. Default 300.
    /// Env `WRANGLE_TASK_TIMEOUT_SECS`.
    pub task_timeout_secs: u64,
    /// Most tasks waiting at once. Default 1000000. Env `WRANGLE_MAX_QUEUE_SIZE`.
    pub max_queue_size: usize,
    /// Retries of tasks that set none. Default 3. Env `WRANGLE_DEFAULT_RETRIES`.
    pub default_retries: u32,
    /// A worker silent this long is replaced, in seconds. Default 30.
    /// Env `WRANGLE_WORKER_TIMEOUT_SECS`.
    pub worker_timeout_secs: u64,
    /// Where tasks are stored: `sqlite://PATH` (created on first start),
    /// `postgres://USER:PASSWORD@HOST:PORT/DB`, or `memory` for no store.
    /// Default `sqlite://wrangle.db`. Env `DATABASE_URL` or `WRANGLE_DATABASE_URL`.
    pub database_url: String,
    /// When a submit returns: `committed` (after the task is in the database) or
    /// `buffered` (at once; committed a few milliseconds later). Default `committed`.
    /// Env `WRANGLE_DURABILITY`.
    pub durability: Durability,
    /// Finished tasks are deleted from the store this many hours after they finished;
    /// 0 keeps them. Default 168 (7 days). Env `WRANGLE_RETENTION_HOURS`.
    pub retention_hours: u64,
    /// At most this many finished tasks are kept in the store; the oldest go first,
    /// whatever their age. 0 keeps any number. Default 1,000,000.
    /// Env `WRANGLE_RETENTION_MAX_TASKS`.
    pub retention_max_tasks: u64,
    /// The store's size bound in bytes (SQLite: the oldest finished tasks go and the file
    /// shrinks; PostgreSQL: a warning). 0 sets none. Default 8 GiB.
    /// Env `WRANGLE_RETENTION_MAX_BYTES`.
    pub retention_max_bytes: u64,
    /// How long the lease of a task without a timeout lasts unless its worker extends it,
    /// in seconds. Default 60. Env `WRANGLE_LEASE_TIME_SECS`.
    pub lease_time_secs: u64,
    /// Tasks waiting longer than this many seconds are served first, oldest first,
    /// whatever their priority; 0 (default) keeps priority strict.
    /// Env `WRANGLE_PRIORITY_AGING_SECS`.
    pub priority_aging_secs: u64,
    /// Load shedding: while more tasks than this are queued, new `low` tasks are refused
    /// (503 `overloaded` with `Retry-After`); higher priorities still enter. 0 (default)
    /// turns it off. Env `WRANGLE_SHED_LOW_ABOVE`.
    pub shed_low_above: usize,
    /// The same for `normal` tasks, at a mark at or above `shed_low_above`; `high` and
    /// `critical` are never shed. 0 (default) turns it off. Env `WRANGLE_SHED_NORMAL_ABOVE`.
    pub shed_normal_above: usize,
    /// The `Retry-After` a shed task is answered with, in seconds. Default 5.
    /// Env `WRANGLE_SHED_RETRY_AFTER_SECS`.
    pub shed_retry_after_secs: u64,
    /// PostgreSQL failover: the leader's lease lasts this many milliseconds without a
    /// renewal; a standby takes over once it lapses. Default 3000.
    /// Env `WRANGLE_LEADER_LEASE_MS`.
    pub leader_lease_ms: u64,
    /// PostgreSQL failover: the leader renews its lease (and standbys try for it) this
    /// often, in milliseconds; at most half the lease. Default 1000.
    /// Env `WRANGLE_LEADER_RENEW_MS`.
    pub leader_renew_ms: u64,
    /// PostgreSQL failover: the base URL other coordinators send clients to while this
    /// one leads (`http://10.0.0.5:7700`). Default: `bind` as an http(s) URL, unless it is
    /// `0.0.0.0` or `[::]`, which must be given. Env `WRANGLE_ADVERTISE_URL`.
    pub advertise_url: Option<String>,
    /// Where nodes join (`0.0.0.0:7450`); none (default) runs without a cluster.
    /// Env `WRANGLE_CLUSTER_LISTEN`.
    pub cluster_listen: Option<SocketAddr>,
    /// The secret nodes must present; required with `cluster_listen`.
    /// Env `WRANGLE_COOKIE`, or `WRANGLE_COOKIE_FILE` (a file holding it), which keep it
    /// out of `ps` where a `--cookie` flag would show.
    pub cookie: Option<String>,
    /// PEM certificate chain and key for TLS between nodes and the coordinator; both or
    /// neither. Env `WRANGLE_CLUSTER_TLS_CERT`, `WRANGLE_CLUSTER_TLS_KEY`.
    pub cluster_tls_cert: Option<std::path::PathBuf>,
    /// See `cluster_tls_cert`.
    pub cluster_tls_key: Option<std::path::PathBuf>,
    /// A node silent this long is given up and its tasks run elsewhere, in milliseconds;
    /// nodes heartbeat five times as often. Default 1500. Env `WRANGLE_NODE_TIMEOUT_MS`.
    pub node_timeout_ms: u64,
    /// Time a node's new connection has to pass TLS and the cookie challenge, in
    /// milliseconds. Default 5000. Env `WRANGLE_CLUSTER_HANDSHAKE_TIMEOUT_MS`.
    pub cluster_handshake_timeout_ms: u64,
    /// Node connections that may be handshaking at once; more are closed at once.
    /// Default 64. Env `WRANGLE_CLUSTER_MAX_PENDING_HANDSHAKES`.
    pub cluster_max_pending_handshakes: usize,
    /// `[compute]`: external compute nodes (the nodes themselves in the file only).
    pub compute: ComputeSettings,
    /// `[node]`: the node program's settings (the coordinator ignores them); the node
    /// program also reads `cookie` from the top level.
    pub node: NodeSettings,
    /// `[[node_groups]]`: nodes the coordinator launches and stops by itself (in the file
    /// only; needs `cluster_listen`).
    pub node_groups: Vec<NodeGroupSettings>,
}

impl std::fmt::Debug for Settings {
    /// Every field but secrets, which show as `<redacted>` (they must not reach a log).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("bind", &self.bind)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tokens", &self.tokens)
            .field(
                "dangerously_allow_public_without_token",
                &self.dangerously_allow_public_without_token,
            )
            .field("max_body_bytes", &self.max_body_bytes)
            .field("rate_limit_per_second", &self.rate_limit_per_second)
            .field("max_batch", &self.max_batch)
            .field("max_connections", &self.max_connections)
            .field("header_read_timeout_ms", &self.header_read_timeout_ms)
            .field("body_read_timeout_ms", &self.body_read_timeout_ms)
            .field("max_streams_per_client", &self.max_streams_per_client)
            .field("max_event_stream_secs", &self.max_event_stream_secs)
            .field("max_wait_secs", &self.max_wait_secs)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("cors_origins", &self.cors_origins)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("min_workers", &self.min_workers)
            .field("max_workers", &self.max_workers)
            .field("max_concurrent_tasks", &self.max_concurrent_tasks)
            .field("labels", &self.labels)
            .field("auto_scale", &self.auto_scale)
            .field("scale_up_threshold", &self.scale_up_threshold)
            .field("scale_down_threshold", &self.scale_down_threshold)
            .field("scale_cooldown_secs", &self.scale_cooldown_secs)
            .field("task_timeout_secs", &self.task_timeout_secs)
            .field("max_queue_size", &self.max_queue_size)
            .field("default_retries", &self.default_retries)
            .field("worker_timeout_secs", &self.worker_timeout_secs)
            .field(
                "database_url",
                &crate::store::redact_url(&self.database_url),
            )
            .field("durability", &self.durability)
            .field("retention_hours", &self.retention_hours)
            .field("retention_max_tasks", &self.retention_max_tasks)
            .field("retention_max_bytes", &self.retention_max_bytes)
            .field("lease_time_secs", &self.lease_time_secs)
            .field("priority_aging_secs", &self.priority_aging_secs)
            .field("shed_low_above", &self.shed_low_above)
            .field("shed_normal_above", &self.shed_normal_above)
            .field("shed_retry_after_secs", &self.shed_retry_after_secs)
            .field("leader_lease_ms", &self.leader_lease_ms)
            .field("leader_renew_ms", &self.leader_renew_ms)
            .field("advertise_url", &self.advertise_url)
            .field("cluster_listen", &self.cluster_listen)
            .field("cookie", &self.cookie.as_ref().map(|_| "<redacted>"))
            .field("cluster_tls_cert", &self.cluster_tls_cert)
            .field("cluster_tls_key", &self.cluster_tls_key)
            .field("node_timeout_ms", &self.node_timeout_ms)
            .field(
                "cluster_handshake_timeout_ms",
                &self.cluster_handshake_timeout_ms,
            )
            .field(
                "cluster_max_pending_handshakes",
                &self.cluster_max_pending_handshakes,
            )
            .field("compute", &self.compute)
            .field("node", &self.node)
            .field("node_groups", &self.node_groups)
            .finish()
    }
}

impl Default for Settings {
    fn default() -> Self {
        let c = CoordinatorConfig::default();
        let api = ApiConfig::default();
        let serve = ServeConfig::default();
        Self {
            bind: ([127, 0, 0, 1], 7700).into(),
            token: None,
            tokens: Vec::new(),
            dangerously_allow_public_without_token: false,
            max_body_bytes: 2 * 1024 * 1024,
            rate_limit_per_second: RateLimit::default().per_second,
            max_batch: api.max_batch,
            max_connections: serve.max_connections,
            header_read_timeout_ms: serve.header_read_timeout.as_millis() as u64,
            body_read_timeout_ms: api.body_read_timeout.as_millis() as u64,
            max_streams_per_client: api.max_streams_per_client,
            max_event_stream_secs: api.max_event_stream.as_secs(),
            max_wait_secs: api.max_wait.as_secs(),
            tls_cert: None,
            tls_key: None,
            cors_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            min_workers: 2,
            max_workers: 8,
            max_concurrent_tasks: 16,
            labels: Vec::new(),
            auto_scale: true,
            scale_up_threshold: c.scale_up_threshold,
            scale_down_threshold: c.scale_down_threshold,
            scale_cooldown_secs: c.scale_cooldown.as_secs(),
            task_timeout_secs: 300,
            max_queue_size: c.queue.max_queue_size,
            default_retries: c.queue.default_retries,
            worker_timeout_secs: c.worker_timeout.as_secs(),
            database_url: "sqlite://wrangle.db".into(),
            durability: Durability::Committed,
            retention_hours: 7 * 24,
            retention_max_tasks: 1_000_000,
            retention_max_bytes: 8 << 30,
            lease_time_secs: c.queue.lease_time.as_secs(),
            priority_aging_secs: 0,
            shed_low_above: 0,
            shed_normal_above: 0,
            shed_retry_after_secs: c.queue.shed_retry_after.as_secs(),
            leader_lease_ms: 3_000,
            leader_renew_ms: 1_000,
            advertise_url: None,
            cluster_listen: None,
            cookie: None,
            cluster_tls_cert: None,
            cluster_tls_key: None,
            node_timeout_ms: 1_500,
            cluster_handshake_timeout_ms: 5_000,
            cluster_max_pending_handshakes: 64,
            compute: ComputeSettings::default(),
            node: NodeSettings::default(),
            node_groups: Vec::new(),
        }
    }
}

impl Settings {
    /// The file layer: reads `file` when given (an error if it is missing), else
    /// `./wrangle.toml` when it exists, else the defaults. Nothing is checked yet: the
    /// environment and flags go on top (`cli`), then [`Settings::validate`].
    pub fn load(file: Option<&Path>) -> Result<Self, Error> {
        match file {
            Some(path) => Self::from_file(path),
            None if Path::new(DEFAULT_FILE).exists() => Self::from_file(Path::new(DEFAULT_FILE)),
            None => Ok(Self::default()),
        }
    }

    /// Reads the TOML file at `path`; unknown keys are refused.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::invalid("config", format!("cannot read {}: {e}", path.display()))
        })?;
        toml::from_str(&text)
            .map_err(|e| Error::invalid("config", format!("{}: {e}", path.display())))
    }
}

/// The settings file read when none is named, if it exists: `wrangle.toml` in the
/// working directory.
pub const DEFAULT_FILE: &str = "wrangle.toml";

#[cfg(test)]
mod tests;
