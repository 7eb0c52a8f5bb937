//! Settings of the runnable programs: an optional TOML file, then `WRANGLE_*` environment
//! variables, then command-line flags, each overriding the one before.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::api::{ApiConfig, ApiToken, RateLimit, Scope, ServeConfig, TlsFiles};
use crate::cluster::ClusterConfig;
use crate::coordinator::CoordinatorConfig;
use crate::error::Error;
use crate::store::{Durability, StoreConfig};

/// The `database_url` that keeps tasks in memory only.
pub const IN_MEMORY: &str = "memory";

/// Everything the coordinator program reads. Every field has a default; a file only lists
/// what it changes. Unknown keys are refused, so a typo is an error, not a silent default.
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
            .field("cluster_listen", &self.cluster_listen)
            .field("cookie", &self.cookie.as_ref().map(|_| "<redacted>"))
            .field("cluster_tls_cert", &self.cluster_tls_cert)
            .field("cluster_tls_key", &self.cluster_tls_key)
            .field("node_timeout_ms", &self.node_timeout_ms)
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
            cluster_listen: None,
            cookie: None,
            cluster_tls_cert: None,
            cluster_tls_key: None,
            node_timeout_ms: 1_500,
            cluster_handshake_timeout_ms: 5_000,
            cluster_max_pending_handshakes: 64,
        }
    }
}

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
    /// Reads `file` when given (an error if it is missing), else `./wrangle.toml` when it
    /// exists, then applies `WRANGLE_*` variables (and `DATABASE_URL`) from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, Error> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let from_env = env
            .iter()
            .find(|(k, _)| k == "WRANGLE_CONFIG")
            .map(|(_, v)| Path::new(v).to_path_buf());
        let path = file.map(Path::to_path_buf).or(from_env);
        let mut settings = match path {
            Some(p) => Self::from_file(&p)?,
            None if Path::new("wrangle.toml").exists() => {
                Self::from_file(Path::new("wrangle.toml"))?
            }
            None => Self::default(),
        };
        // `WRANGLE_DATABASE_URL` goes last, so it wins over the generic `DATABASE_URL`.
        let (own_url, others): (Vec<_>, Vec<_>) =
            env.iter().partition(|(k, _)| k == "WRANGLE_DATABASE_URL");
        for (key, value) in others.into_iter().chain(own_url) {
            settings.apply_env(key, value)?;
        }
        settings.validate()?;
        Ok(settings)
    }

    fn from_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::invalid("config", format!("cannot read {}: {e}", path.display()))
        })?;
        toml::from_str(&text)
            .map_err(|e| Error::invalid("config", format!("{}: {e}", path.display())))
    }

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

    /// Checks every setting by building the configs from it.
    pub fn validate(&self) -> Result<(), Error> {
        self.validate_api_access()?;
        if self.task_timeout_secs == 0 {
            return Err(Error::invalid("task_timeout_secs", "must be at least 1"));
        }
        if !(self.rate_limit_per_second >= 0.0 && self.rate_limit_per_second.is_finite()) {
            return Err(Error::invalid(
                "rate_limit_per_second",
                "must be a number >= 0",
            ));
        }
        if self.cluster_listen.is_some() && self.cookie.is_none() {
            return Err(Error::invalid(
                "cookie",
                "required when cluster_listen is set (nodes must present it)",
            ));
        }
        if self.cluster_tls_cert.is_some() != self.cluster_tls_key.is_some() {
            return Err(Error::invalid(
                "cluster_tls_cert",
                "cluster_tls_cert and cluster_tls_key go together",
            ));
        }
        self.coordinator_config().validate()
    }

    /// No empty token, no token without scopes, and no listener beyond loopback without a
    /// token unless `dangerously_allow_public_without_token` says so.
    fn validate_api_access(&self) -> Result<(), Error> {
        if self.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(Error::invalid(
                "token",
                "is empty; set a secret, or remove the setting to run without a token",
            ));
        }
        for (i, t) in self.tokens.iter().enumerate() {
            if t.token.trim().is_empty() {
                return Err(Error::invalid(
                    "tokens",
                    format!("tokens[{i}].token is empty"),
                ));
            }
            if t.scopes.is_empty() {
                return Err(Error::invalid(
                    "tokens",
                    format!(
                        "tokens[{i}].scopes is empty; give read, submit, work, operate or admin"
                    ),
                ));
            }
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(Error::invalid(
                "tls_cert",
                "tls_cert and tls_key go together",
            ));
        }
        for (name, zero) in [
            ("max_batch", self.max_batch == 0),
            ("max_connections", self.max_connections == 0),
            ("header_read_timeout_ms", self.header_read_timeout_ms == 0),
            ("body_read_timeout_ms", self.body_read_timeout_ms == 0),
            ("max_streams_per_client", self.max_streams_per_client == 0),
            ("max_event_stream_secs", self.max_event_stream_secs == 0),
            ("max_wait_secs", self.max_wait_secs == 0),
        ] {
            if zero {
                return Err(Error::invalid(name, "must be at least 1"));
            }
        }
        let open = self.token.is_none() && self.tokens.is_empty();
        if open && !self.bind.ip().is_loopback() && !self.dangerously_allow_public_without_token {
            return Err(Error::invalid(
                "token",
                format!(
                    "the API would listen on {} (beyond this machine) with no token: set a \
                     token (--token, WRANGLE_TOKEN), bind 127.0.0.1, or pass \
                     --dangerously-allow-public-without-token",
                    self.bind
                ),
            ));
        }
        Ok(())
    }

    /// Whether the API is reachable beyond this machine with no token (allowed only by
    /// `dangerously_allow_public_without_token`); programs say so loudly.
    pub fn is_public_without_token(&self) -> bool {
        self.token.is_none() && self.tokens.is_empty() && !self.bind.ip().is_loopback()
    }

    /// The coordinator's settings.
    pub fn coordinator_config(&self) -> CoordinatorConfig {
        let mut c = CoordinatorConfig {
            min_workers: self.min_workers,
            max_workers: self.max_workers,
            auto_scale: self.auto_scale,
            scale_up_threshold: self.scale_up_threshold,
            scale_down_threshold: self.scale_down_threshold,
            scale_cooldown: Duration::from_secs(self.scale_cooldown_secs),
            worker_timeout: Duration::from_secs(self.worker_timeout_secs),
            ..CoordinatorConfig::default()
        };
        c.worker.max_concurrent_tasks = self.max_concurrent_tasks;
        c.worker.labels = self.labels.clone();
        c.worker.task_timeout = Some(Duration::from_secs(self.task_timeout_secs));
        c.queue.max_queue_size = self.max_queue_size;
        c.queue.default_retries = self.default_retries;
        c.queue.lease_time = Duration::from_secs(self.lease_time_secs);
        c.queue.priority_aging =
            (self.priority_aging_secs > 0).then(|| Duration::from_secs(self.priority_aging_secs));
        c.store = self.store_config();
        c.cluster = self.cluster_listen.map(|listen| {
            let mut cluster = ClusterConfig::new(listen, self.cookie.clone().unwrap_or_default());
            cluster.node_timeout = Duration::from_millis(self.node_timeout_ms);
            cluster.heartbeat_interval = (cluster.node_timeout / 5).max(Duration::from_millis(10));
            cluster.handshake_timeout = Duration::from_millis(self.cluster_handshake_timeout_ms);
            cluster.max_pending_handshakes = self.cluster_max_pending_handshakes;
            cluster.tls = self
                .cluster_tls_cert
                .clone()
                .zip(self.cluster_tls_key.clone())
                .map(|(cert, key)| crate::TlsFiles { cert, key });
            cluster
        });
        c
    }

    /// The store's settings; `None` for `memory`.
    pub fn store_config(&self) -> Option<StoreConfig> {
        let url = self.database_url.trim();
        if url.is_empty() || url == IN_MEMORY {
            return None;
        }
        let mut store = StoreConfig::new(url);
        store.durability = self.durability;
        store.retention = (self.retention_hours > 0)
            .then(|| Duration::from_secs(self.retention_hours.saturating_mul(3600)));
        store.retention_max_tasks =
            (self.retention_max_tasks > 0).then_some(self.retention_max_tasks);
        store.retention_max_bytes =
            (self.retention_max_bytes > 0).then_some(self.retention_max_bytes);
        Some(store)
    }

    /// The HTTP server's connection settings: limits and TLS.
    pub fn serve_config(&self) -> ServeConfig {
        ServeConfig {
            max_connections: self.max_connections,
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            tls: self
                .tls_cert
                .clone()
                .zip(self.tls_key.clone())
                .map(|(cert, key)| TlsFiles { cert, key }),
        }
    }

    /// The HTTP server's settings.
    pub fn api_config(&self) -> ApiConfig {
        ApiConfig {
            token: self.token.clone(),
            tokens: self.tokens.clone(),
            max_body_bytes: self.max_body_bytes,
            rate_limit: (self.rate_limit_per_second > 0.0).then_some(RateLimit {
                per_second: self.rate_limit_per_second,
                burst: self.rate_limit_per_second * 2.0,
            }),
            cors_origins: self.cors_origins.clone(),
            allowed_hosts: self.allowed_hosts.clone(),
            max_batch: self.max_batch,
            body_read_timeout: Duration::from_millis(self.body_read_timeout_ms),
            max_streams_per_client: self.max_streams_per_client,
            max_event_stream: Duration::from_secs(self.max_event_stream_secs),
            max_wait: Duration::from_secs(self.max_wait_secs),
            ..ApiConfig::default()
        }
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

/// Longest secret [`read_secret_file`] reads.
pub const MAX_SECRET_BYTES: u64 = 4096;

/// Reads a secret (a cookie, a token) from the file at `path`, without its trailing
/// newline, so that it need not be passed as a flag (flags show in `ps`). An unreadable,
/// empty or larger than [`MAX_SECRET_BYTES`] file is an error naming `field`.
pub fn read_secret_file(field: &'static str, path: &std::path::Path) -> Result<String, Error> {
    let bad = |why: String| Error::invalid(field, format!("{}: {why}", path.display()));
    let len = std::fs::metadata(path)
        .map_err(|e| bad(e.to_string()))?
        .len();
    if len > MAX_SECRET_BYTES {
        return Err(bad(format!(
            "{len} bytes; a secret file holds at most {MAX_SECRET_BYTES}"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err(bad("the file is empty".into()));
    }
    Ok(secret.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_comes_from_a_file_without_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cookie");
        std::fs::write(&path, "s3cret\n").unwrap();
        let s = Settings::load(
            None,
            env(&[("WRANGLE_COOKIE_FILE", path.to_str().unwrap())]),
        )
        .unwrap();
        assert_eq!(s.cookie.as_deref(), Some("s3cret"));
        let s =
            Settings::load(None, env(&[("WRANGLE_TOKEN_FILE", path.to_str().unwrap())])).unwrap();
        assert_eq!(s.token.as_deref(), Some("s3cret"));
        std::fs::write(&path, "\n").unwrap();
        let err = Settings::load(
            None,
            env(&[("WRANGLE_COOKIE_FILE", path.to_str().unwrap())]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("WRANGLE_COOKIE_FILE") && err.contains("empty"),
            "{err}"
        );
        std::fs::write(&path, "x".repeat(5000)).unwrap();
        let err = read_secret_file("cookie_file", &path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cookie_file") && err.contains("5000 bytes"),
            "{err}"
        );
        let missing = dir.path().join("missing");
        let err = read_secret_file("cookie_file", &missing)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cookie_file"), "{err}");
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn file_then_env_override() {
        let dir = std::env::temp_dir().join(format!("wrangle-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.toml");
        std::fs::write(
            &path,
            "min_workers = 3\nmax_workers = 6\nlabels = [\"gpu\"]\n",
        )
        .unwrap();
        let s = Settings::load(
            Some(&path),
            env(&[("WRANGLE_MAX_WORKERS", "9"), ("HOME", "/x")]),
        )
        .unwrap();
        assert_eq!((s.min_workers, s.max_workers), (3, 9));
        assert_eq!(s.labels, vec!["gpu".to_string()]);
        std::fs::write(&path, "min_wrokers = 3\n").unwrap();
        let err = Settings::load(Some(&path), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("min_wrokers"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn leases_aging_retention_and_handshake_bounds_reach_their_configs() {
        let s = Settings::load(
            None,
            env(&[
                ("WRANGLE_LEASE_TIME_SECS", "5"),
                ("WRANGLE_PRIORITY_AGING_SECS", "30"),
                ("WRANGLE_RETENTION_MAX_TASKS", "0"),
                ("WRANGLE_RETENTION_MAX_BYTES", "2000000"),
            ]),
        )
        .unwrap();
        let c = s.coordinator_config();
        assert_eq!(c.queue.lease_time, Duration::from_secs(5));
        let cluster = Settings::load(
            None,
            env(&[
                ("WRANGLE_CLUSTER_LISTEN", "127.0.0.1:7450"),
                ("WRANGLE_COOKIE", "c"),
                ("WRANGLE_CLUSTER_HANDSHAKE_TIMEOUT_MS", "750"),
                ("WRANGLE_CLUSTER_MAX_PENDING_HANDSHAKES", "3"),
            ]),
        )
        .unwrap()
        .coordinator_config()
        .cluster
        .unwrap();
        assert_eq!(cluster.handshake_timeout, Duration::from_millis(750));
        assert_eq!(cluster.max_pending_handshakes, 3);
        assert_eq!(c.queue.priority_aging, Some(Duration::from_secs(30)));
        let store = s.store_config().unwrap();
        assert_eq!(store.retention_max_tasks, None);
        assert_eq!(store.retention_max_bytes, Some(2_000_000));
        let defaults = Settings::default().coordinator_config();
        assert_eq!(defaults.queue.priority_aging, None);
        assert_eq!(defaults.queue.lease_time, Duration::from_secs(60));
        // A lease time the queue cannot work with is refused, naming it.
        let err = Settings::load(None, env(&[("WRANGLE_LEASE_TIME_SECS", "0")]))
            .and_then(|s| s.validate().map(|_| s))
            .unwrap_err()
            .to_string();
        assert!(err.contains("lease_time"), "{err}");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let s = Settings::load(
            None,
            env(&[
                ("WRANGLE_TOKEN", "t0ken-secret"),
                ("WRANGLE_COOKIE", "c00kie-secret"),
                ("DATABASE_URL", "postgres://app:pa55word@db:5432/w"),
                ("WRANGLE_CLUSTER_LISTEN", "127.0.0.1:7450"),
            ]),
        )
        .unwrap();
        let shown = format!("{s:?} {:?}", s.coordinator_config());
        for secret in ["t0ken-secret", "c00kie-secret", "pa55word"] {
            assert!(!shown.contains(secret), "{secret} shown in {shown}");
        }
        assert!(shown.contains("127.0.0.1:7450"), "{shown}");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = Settings::load(None, env(&[("WRANGLE_MIN_WORKERS", "many")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("WRANGLE_MIN_WORKERS"), "{err}");
        let err = Settings::load(None, env(&[("WRANGLE_MIN_WORKERS", "20")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("min_workers"), "{err}");
    }

    #[test]
    fn public_bind_without_token_is_refused_unless_dangerously_allowed() {
        let err = Settings::load(None, env(&[("WRANGLE_BIND", "0.0.0.0:7700")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("token") && err.contains("0.0.0.0:7700"),
            "{err}"
        );
        for with in [
            ("WRANGLE_TOKEN", "s3cret"),
            ("WRANGLE_TOKENS", "read=r3ader"),
            ("WRANGLE_DANGEROUSLY_ALLOW_PUBLIC_WITHOUT_TOKEN", "true"),
        ] {
            let s = Settings::load(None, env(&[("WRANGLE_BIND", "0.0.0.0:7700"), with])).unwrap();
            assert_eq!(
                s.is_public_without_token(),
                with.0.starts_with("WRANGLE_DANGER")
            );
        }
        let s = Settings::load(None, env(&[("WRANGLE_BIND", "[::1]:7700")])).unwrap();
        assert!(!s.is_public_without_token(), "loopback needs no token");
    }

    #[test]
    fn empty_tokens_are_configuration_errors() {
        for pairs in [
            &[("WRANGLE_TOKEN", "")][..],
            &[("WRANGLE_TOKEN", "  ")][..],
            &[("WRANGLE_TOKENS", "read=")][..],
            &[("WRANGLE_TOKENS", "=abc")][..],
            &[("WRANGLE_TOKENS", "reed=abc")][..],
        ] {
            let err = Settings::load(None, env(pairs));
            assert!(err.is_err(), "{pairs:?} was accepted");
        }
        let s =
            Settings::load(None, env(&[("WRANGLE_TOKENS", "read+submit=a=b, admin=c")])).unwrap();
        assert_eq!(s.tokens.len(), 2);
        assert_eq!(s.tokens[0].token, "a=b");
        assert_eq!(s.tokens[0].scopes.len(), 2);
        let toml_tokens: Settings =
            toml::from_str("tokens = [{ token = \"x\", scopes = [\"operate\"] }]").unwrap();
        assert_eq!(toml_tokens.tokens[0].scopes.len(), 1);
    }
}
