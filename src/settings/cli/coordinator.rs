//! The coordinator program's command line: every field of [`Settings`] as a flag, each
//! with its `WRANGLE_*` environment variable, in groups as `--help` shows them.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser};

use super::secret::{Cookie, Secret, SecretArgs, Token};
use super::{set, set_list, PRECEDENCE};
use crate::api::{ApiToken, Scope};
use crate::error::Error;
use crate::settings::Settings;
use crate::store::Durability;

/// wrangle coordinator: the task queue, an autoscaled worker pool, the HTTP API and the
/// dashboard.
#[derive(Clone, Debug, Default, Parser)]
#[command(name = "coordinator", after_help = PRECEDENCE)]
pub struct CoordinatorArgs {
    /// The settings file (TOML). Default ./wrangle.toml when present.
    #[arg(long, env = "WRANGLE_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Check the settings, print them (secrets hidden) and exit without starting.
    #[arg(long)]
    pub check: bool,
    /// How log lines are written: `text` for people, `json` (one object per line, with the
    /// current span's fields, such as a task's `trace_id`) for log collectors.
    #[arg(long, env = "WRANGLE_LOG_FORMAT", value_enum, default_value_t = super::LogFormat::Text)]
    pub log_format: super::LogFormat,
    /// Export spans (each task's `task` span in the task's trace id) to this OpenTelemetry
    /// collector over OTLP/HTTP, such as `http://127.0.0.1:4318`. Only with the `otel` feature.
    #[cfg(feature = "otel")]
    #[arg(long, env = "WRANGLE_OTEL_ENDPOINT", value_name = "URL")]
    pub otel_endpoint: Option<String>,
    /// The HTTP API.
    #[command(flatten, next_help_heading = "HTTP API")]
    pub api: ApiArgs,
    /// The local workers and the queue.
    #[command(flatten, next_help_heading = "Workers and queue")]
    pub workers: WorkerArgs,
    /// The task store.
    #[command(flatten, next_help_heading = "Store")]
    pub store: StoreArgs,
    /// Nodes joining over the network.
    #[command(flatten, next_help_heading = "Cluster")]
    pub cluster: ClusterArgs,
    /// External compute nodes (the nodes themselves are listed in the settings file).
    #[command(flatten, next_help_heading = "Compute nodes")]
    pub compute: ComputeArgs,
}

impl CoordinatorArgs {
    /// The settings: the file (`--config`), then the environment and the flags, checked.
    pub fn settings(&self) -> Result<Settings, Error> {
        let mut settings = Settings::load(self.config.as_deref())?;
        self.apply(&mut settings)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Puts the environment's and the flags' values over `settings` (unchecked).
    pub fn apply(&self, settings: &mut Settings) -> Result<(), Error> {
        self.api.apply(settings)?;
        self.workers.apply(settings);
        self.store.apply(settings);
        self.cluster.apply(settings)?;
        self.compute.apply(settings);
        Ok(())
    }
}

/// The HTTP API's flags.
#[derive(Clone, Debug, Default, Args)]
pub struct ApiArgs {
    /// Where the HTTP server listens. Default 127.0.0.1:7700.
    #[arg(long, env = "WRANGLE_BIND", value_name = "ADDR")]
    pub bind: Option<SocketAddr>,
    /// The bearer token (with every scope).
    #[command(flatten)]
    pub token: SecretArgs<Token>,
    /// Tokens with their own scopes, `read+submit=TOKEN,read=OTHER` (scopes: read, submit,
    /// work, operate, admin). Default none. Shows in `ps`: prefer the environment or the file.
    #[arg(
        long,
        env = "WRANGLE_TOKENS",
        value_name = "SCOPES=TOKEN,...",
        hide_env_values = true
    )]
    pub tokens: Option<Secret>,
    /// Let --bind name an address beyond loopback with no token: anyone who reaches the
    /// port controls the coordinator (refused otherwise). Default false.
    #[arg(long, env = "WRANGLE_DANGEROUSLY_ALLOW_PUBLIC_WITHOUT_TOKEN", value_name = "BOOL",
        num_args = 0..=1, default_missing_value = "true")]
    pub dangerously_allow_public_without_token: Option<bool>,
    /// Largest request body, in bytes. Default 2097152 (2 MiB).
    #[arg(long, env = "WRANGLE_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Requests per second per client (an IPv4 address or an IPv6 /64), bursts of twice as
    /// many; 0 turns the limit off. Default 50000.
    #[arg(
        long,
        visible_alias = "rate-limit",
        env = "WRANGLE_RATE_LIMIT",
        value_name = "N"
    )]
    pub rate_limit_per_second: Option<f64>,
    /// Most tasks in one submit. Default 10000.
    #[arg(long, env = "WRANGLE_MAX_BATCH", value_name = "N")]
    pub max_batch: Option<usize>,
    /// Most HTTP connections open at once. Default 32768.
    #[arg(long, env = "WRANGLE_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Time a client has to send a request's head (and finish the TLS handshake), in
    /// milliseconds. Default 10000.
    #[arg(long, env = "WRANGLE_HEADER_READ_TIMEOUT_MS", value_name = "MS")]
    pub header_read_timeout_ms: Option<u64>,
    /// Time a request body has to arrive, in milliseconds. Default 30000.
    #[arg(long, env = "WRANGLE_BODY_READ_TIMEOUT_MS", value_name = "MS")]
    pub body_read_timeout_ms: Option<u64>,
    /// Most /events streams and waits one client holds open. Default 16384.
    #[arg(long, env = "WRANGLE_MAX_STREAMS_PER_CLIENT", value_name = "N")]
    pub max_streams_per_client: Option<usize>,
    /// An /events stream ends after this many seconds. Default 3600.
    #[arg(long, env = "WRANGLE_MAX_EVENT_STREAM_SECS", value_name = "SECS")]
    pub max_event_stream_secs: Option<u64>,
    /// Longest /tasks/{id}/wait, in seconds. Default 300.
    #[arg(long, env = "WRANGLE_MAX_WAIT_SECS", value_name = "SECS")]
    pub max_wait_secs: Option<u64>,
    /// PEM certificate chain: the API serves HTTPS (with --tls-key). Default none.
    #[arg(long, env = "WRANGLE_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "WRANGLE_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// Origins allowed by CORS, comma-separated. Default none.
    #[arg(
        long,
        env = "WRANGLE_CORS_ORIGINS",
        value_name = "ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Option<Vec<String>>,
    /// Host names, besides IP addresses and localhost, that requests may name in `Host`,
    /// comma-separated (`.corp.example` allows every name under it); others get 421.
    /// Default none.
    #[arg(
        long,
        env = "WRANGLE_ALLOWED_HOSTS",
        value_name = "HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Option<Vec<String>>,
}

impl ApiArgs {
    fn apply(&self, s: &mut Settings) -> Result<(), Error> {
        set(&mut s.bind, &self.bind);
        if let Some(token) = self.token.resolve()? {
            // Kept even when empty, so `validate` refuses it rather than running open.
            s.token = Some(token);
        }
        if let Some(tokens) = &self.tokens {
            s.tokens = parse_tokens(tokens.expose())?;
        }
        set(
            &mut s.dangerously_allow_public_without_token,
            &self.dangerously_allow_public_without_token,
        );
        set(&mut s.max_body_bytes, &self.max_body_bytes);
        set(&mut s.rate_limit_per_second, &self.rate_limit_per_second);
        set(&mut s.max_batch, &self.max_batch);
        set(&mut s.max_connections, &self.max_connections);
        set(&mut s.header_read_timeout_ms, &self.header_read_timeout_ms);
        set(&mut s.body_read_timeout_ms, &self.body_read_timeout_ms);
        set(&mut s.max_streams_per_client, &self.max_streams_per_client);
        set(&mut s.max_event_stream_secs, &self.max_event_stream_secs);
        set(&mut s.max_wait_secs, &self.max_wait_secs);
        if self.tls_cert.is_some() {
            s.tls_cert = self.tls_cert.clone();
        }
        if self.tls_key.is_some() {
            s.tls_key = self.tls_key.clone();
        }
        set_list(&mut s.cors_origins, &self.cors_origins);
        set_list(&mut s.allowed_hosts, &self.allowed_hosts);
        Ok(())
    }
}

/// The local workers' and the queue's flags.
#[derive(Clone, Debug, Default, Args)]
pub struct WorkerArgs {
    /// Fewest local workers. Default 2.
    #[arg(long, env = "WRANGLE_MIN_WORKERS", value_name = "N")]
    pub min_workers: Option<usize>,
    /// Most local workers. Default 8.
    #[arg(long, env = "WRANGLE_MAX_WORKERS", value_name = "N")]
    pub max_workers: Option<usize>,
    /// Tasks each worker runs at once. Default 16.
    #[arg(long, env = "WRANGLE_MAX_CONCURRENT_TASKS", value_name = "N")]
    pub max_concurrent_tasks: Option<u32>,
    /// Labels of the local workers, comma-separated (`gpu=a100,region=eu`). Default none.
    #[arg(
        long,
        env = "WRANGLE_LABELS",
        value_name = "LABELS",
        value_delimiter = ','
    )]
    pub labels: Option<Vec<String>>,
    /// Whether the autoscaler runs. Default true.
    #[arg(long, env = "WRANGLE_AUTO_SCALE", value_name = "BOOL")]
    pub auto_scale: Option<bool>,
    /// Waiting tasks per worker above which the pool grows. Default 10.
    #[arg(long, env = "WRANGLE_SCALE_UP_THRESHOLD", value_name = "TASKS")]
    pub scale_up_threshold: Option<f64>,
    /// Waiting tasks per worker below which it shrinks. Default 2.
    #[arg(long, env = "WRANGLE_SCALE_DOWN_THRESHOLD", value_name = "TASKS")]
    pub scale_down_threshold: Option<f64>,
    /// Least time between scaling changes, in seconds. Default 30.
    #[arg(long, env = "WRANGLE_SCALE_COOLDOWN_SECS", value_name = "SECS")]
    pub scale_cooldown_secs: Option<u64>,
    /// Timeout of tasks that set none, in seconds. Default 300.
    #[arg(long, env = "WRANGLE_TASK_TIMEOUT_SECS", value_name = "SECS")]
    pub task_timeout_secs: Option<u64>,
    /// Most tasks waiting at once. Default 1000000.
    #[arg(long, env = "WRANGLE_MAX_QUEUE_SIZE", value_name = "N")]
    pub max_queue_size: Option<usize>,
    /// Retries of tasks that set none. Default 3.
    #[arg(long, env = "WRANGLE_DEFAULT_RETRIES", value_name = "N")]
    pub default_retries: Option<u32>,
    /// A worker silent this long is replaced, in seconds. Default 30.
    #[arg(long, env = "WRANGLE_WORKER_TIMEOUT_SECS", value_name = "SECS")]
    pub worker_timeout_secs: Option<u64>,
    /// How long the lease of a task without a timeout lasts unless its worker extends it,
    /// in seconds. Default 60.
    #[arg(long, env = "WRANGLE_LEASE_TIME_SECS", value_name = "SECS")]
    pub lease_time_secs: Option<u64>,
    /// Tasks waiting longer than this are served first, oldest first, whatever their
    /// priority, in seconds; 0 keeps priority strict. Default 0.
    #[arg(long, env = "WRANGLE_PRIORITY_AGING_SECS", value_name = "SECS")]
    pub priority_aging_secs: Option<u64>,
    /// Load shedding: while more tasks than this are queued, new low tasks are refused
    /// (503 with Retry-After); 0 turns it off. Default 0.
    #[arg(long, env = "WRANGLE_SHED_LOW_ABOVE", value_name = "N")]
    pub shed_low_above: Option<usize>,
    /// The same for normal tasks, at a mark at or above --shed-low-above; 0 turns it off.
    /// Default 0.
    #[arg(long, env = "WRANGLE_SHED_NORMAL_ABOVE", value_name = "N")]
    pub shed_normal_above: Option<usize>,
    /// The Retry-After a shed task is answered with, in seconds. Default 5.
    #[arg(long, env = "WRANGLE_SHED_RETRY_AFTER_SECS", value_name = "SECS")]
    pub shed_retry_after_secs: Option<u64>,
}

impl WorkerArgs {
    fn apply(&self, s: &mut Settings) {
        set(&mut s.min_workers, &self.min_workers);
        set(&mut s.max_workers, &self.max_workers);
        set(&mut s.max_concurrent_tasks, &self.max_concurrent_tasks);
        set_list(&mut s.labels, &self.labels);
        set(&mut s.auto_scale, &self.auto_scale);
        set(&mut s.scale_up_threshold, &self.scale_up_threshold);
        set(&mut s.scale_down_threshold, &self.scale_down_threshold);
        set(&mut s.scale_cooldown_secs, &self.scale_cooldown_secs);
        set(&mut s.task_timeout_secs, &self.task_timeout_secs);
        set(&mut s.max_queue_size, &self.max_queue_size);
        set(&mut s.default_retries, &self.default_retries);
        set(&mut s.worker_timeout_secs, &self.worker_timeout_secs);
        set(&mut s.lease_time_secs, &self.lease_time_secs);
        set(&mut s.priority_aging_secs, &self.priority_aging_secs);
        set(&mut s.shed_low_above, &self.shed_low_above);
        set(&mut s.shed_normal_above, &self.shed_normal_above);
        set(&mut s.shed_retry_after_secs, &self.shed_retry_after_secs);
    }
}

/// The task store's flags.
#[derive(Clone, Debug, Default, Args)]
pub struct StoreArgs {
    /// Where tasks are stored: sqlite://PATH (created on first start),
    /// postgres://USER:PASSWORD@HOST:PORT/DB, or `memory` for none. Default
    /// sqlite://wrangle.db. DATABASE_URL is read when WRANGLE_DATABASE_URL is not set.
    #[arg(
        long,
        env = "WRANGLE_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<Secret>,
    /// `DATABASE_URL`, the name other tools use: below `--database-url` and
    /// `WRANGLE_DATABASE_URL`.
    #[arg(long = "generic-database-url", env = "DATABASE_URL", hide = true)]
    pub generic_database_url: Option<Secret>,
    /// When a submit returns: `committed` (after the task is in the database) or `buffered`
    /// (at once; committed a few milliseconds later). Default committed.
    #[arg(long, env = "WRANGLE_DURABILITY", value_name = "WHEN",
        value_parser = PossibleValuesParser::new(["committed", "buffered"])
            .map(|s| if s == "buffered" { Durability::Buffered } else { Durability::Committed }))]
    pub durability: Option<Durability>,
    /// Finished tasks are deleted this many hours after they finished; 0 keeps them.
    /// Default 168 (7 days).
    #[arg(long, env = "WRANGLE_RETENTION_HOURS", value_name = "HOURS")]
    pub retention_hours: Option<u64>,
    /// At most this many finished tasks are kept, the oldest going first; 0 keeps any
    /// number. Default 1000000.
    #[arg(long, env = "WRANGLE_RETENTION_MAX_TASKS", value_name = "N")]
    pub retention_max_tasks: Option<u64>,
    /// The store's size bound in bytes (SQLite: the oldest finished tasks go and the file
    /// shrinks; PostgreSQL: a warning); 0 sets none. Default 8589934592 (8 GiB).
    #[arg(long, env = "WRANGLE_RETENTION_MAX_BYTES", value_name = "BYTES")]
    pub retention_max_bytes: Option<u64>,
    /// PostgreSQL failover: the leader's lease, in milliseconds; a standby takes over
    /// once it lapses. Default 3000.
    #[arg(long, env = "WRANGLE_LEADER_LEASE_MS", value_name = "MS")]
    pub leader_lease_ms: Option<u64>,
    /// PostgreSQL failover: how often the leader renews its lease and standbys try for
    /// it, in milliseconds; at most half the lease. Default 1000.
    #[arg(long, env = "WRANGLE_LEADER_RENEW_MS", value_name = "MS")]
    pub leader_renew_ms: Option<u64>,
    /// PostgreSQL failover: the base URL standbys send clients to while this coordinator
    /// leads (http://10.0.0.5:7700). Default: --bind, unless it is 0.0.0.0 or [::].
    #[arg(long, env = "WRANGLE_ADVERTISE_URL", value_name = "URL")]
    pub advertise_url: Option<String>,
}

impl StoreArgs {
    fn apply(&self, s: &mut Settings) {
        if let Some(url) = self
            .database_url
            .as_ref()
            .or(self.generic_database_url.as_ref())
        {
            s.database_url = url.expose().to_string();
        }
        set(&mut s.durability, &self.durability);
        set(&mut s.retention_hours, &self.retention_hours);
        set(&mut s.retention_max_tasks, &self.retention_max_tasks);
        set(&mut s.retention_max_bytes, &self.retention_max_bytes);
        set(&mut s.leader_lease_ms, &self.leader_lease_ms);
        set(&mut s.leader_renew_ms, &self.leader_renew_ms);
        if self.advertise_url.is_some() {
            s.advertise_url = self.advertise_url.clone();
        }
    }
}

/// The cluster's flags: where nodes join, and how.
#[derive(Clone, Debug, Default, Args)]
pub struct ClusterArgs {
    /// Let nodes join here (for example 0.0.0.0:7450). Default: off.
    #[arg(long, env = "WRANGLE_CLUSTER_LISTEN", value_name = "ADDR")]
    pub cluster_listen: Option<SocketAddr>,
    /// The cookie nodes must present; required with --cluster-listen.
    #[command(flatten)]
    pub cookie: SecretArgs<Cookie>,
    /// PEM certificate chain for TLS between nodes and the coordinator (with
    /// --cluster-tls-key). Without it, node sessions cross the network in clear text.
    #[arg(long, env = "WRANGLE_CLUSTER_TLS_CERT", value_name = "PEM")]
    pub cluster_tls_cert: Option<PathBuf>,
    /// PEM private key of --cluster-tls-cert.
    #[arg(long, env = "WRANGLE_CLUSTER_TLS_KEY", value_name = "PEM")]
    pub cluster_tls_key: Option<PathBuf>,
    /// A node silent this long is given up and its tasks run elsewhere, in milliseconds;
    /// nodes heartbeat five times as often. Default 1500.
    #[arg(long, env = "WRANGLE_NODE_TIMEOUT_MS", value_name = "MS")]
    pub node_timeout_ms: Option<u64>,
    /// Time a node's new connection has to pass TLS and the cookie challenge, in
    /// milliseconds. Default 5000.
    #[arg(long, env = "WRANGLE_CLUSTER_HANDSHAKE_TIMEOUT_MS", value_name = "MS")]
    pub cluster_handshake_timeout_ms: Option<u64>,
    /// Node connections that may be handshaking at once; more are closed at once.
    /// Default 64.
    #[arg(long, env = "WRANGLE_CLUSTER_MAX_PENDING_HANDSHAKES", value_name = "N")]
    pub cluster_max_pending_handshakes: Option<usize>,
}

impl ClusterArgs {
    fn apply(&self, s: &mut Settings) -> Result<(), Error> {
        if self.cluster_listen.is_some() {
            s.cluster_listen = self.cluster_listen;
        }
        if let Some(cookie) = self.cookie.resolve()? {
            // An empty cookie is no cookie: `validate` then asks for one if nodes may join.
            s.cookie = Some(cookie).filter(|c| !c.is_empty());
        }
        if self.cluster_tls_cert.is_some() {
            s.cluster_tls_cert = self.cluster_tls_cert.clone();
        }
        if self.cluster_tls_key.is_some() {
            s.cluster_tls_key = self.cluster_tls_key.clone();
        }
        set(&mut s.node_timeout_ms, &self.node_timeout_ms);
        set(
            &mut s.cluster_handshake_timeout_ms,
            &self.cluster_handshake_timeout_ms,
        );
        set(
            &mut s.cluster_max_pending_handshakes,
            &self.cluster_max_pending_handshakes,
        );
        Ok(())
    }
}

/// The compute cluster's flags (`[compute]` in the file, where its nodes are listed).
#[derive(Clone, Debug, Default, Args)]
pub struct ComputeArgs {
    /// Where named credentials (SSH keys, tokens, kubeconfigs) are read from. Default none.
    #[arg(long, env = "WRANGLE_COMPUTE_CREDENTIALS_DIR", value_name = "DIR")]
    pub compute_credentials_dir: Option<PathBuf>,
    /// SSH host keys are checked against this file. Default ~/.ssh/known_hosts.
    #[arg(long, env = "WRANGLE_COMPUTE_KNOWN_HOSTS", value_name = "PATH")]
    pub compute_known_hosts: Option<PathBuf>,
    /// Seconds between health checks of a healthy compute node. Default 10.
    #[arg(
        long,
        env = "WRANGLE_COMPUTE_HEALTH_INTERVAL_SECS",
        value_name = "SECS"
    )]
    pub compute_health_interval_secs: Option<f64>,
    /// Failed checks or node faults in a row that open a compute node's circuit breaker.
    /// Default 3.
    #[arg(long, env = "WRANGLE_COMPUTE_UNHEALTHY_AFTER", value_name = "N")]
    pub compute_unhealthy_after: Option<u32>,
    /// The failed share of recent requests that opens a compute node's breaker. Default 0.5.
    #[arg(
        long,
        env = "WRANGLE_COMPUTE_BREAKER_FAILURE_RATE",
        value_name = "RATE"
    )]
    pub compute_breaker_failure_rate: Option<f64>,
    /// Requests the breaker's window must hold before its failure rate counts. Default 20.
    #[arg(long, env = "WRANGLE_COMPUTE_BREAKER_MIN_REQUESTS", value_name = "N")]
    pub compute_breaker_min_requests: Option<u32>,
    /// Seconds the breaker's failure rate looks back. Default 60.
    #[arg(long, env = "WRANGLE_COMPUTE_BREAKER_WINDOW_SECS", value_name = "SECS")]
    pub compute_breaker_window_secs: Option<f64>,
    /// Seconds an open breaker refuses requests before a probe. Default 10.
    #[arg(long, env = "WRANGLE_COMPUTE_BREAKER_OPEN_SECS", value_name = "SECS")]
    pub compute_breaker_open_secs: Option<f64>,
    /// The longest cool-down of a breaker, in seconds. Default 300.
    #[arg(
        long,
        env = "WRANGLE_COMPUTE_BREAKER_MAX_OPEN_SECS",
        value_name = "SECS"
    )]
    pub compute_breaker_max_open_secs: Option<f64>,
}

impl ComputeArgs {
    fn apply(&self, s: &mut Settings) {
        if self.compute_credentials_dir.is_some() {
            s.compute.credentials_dir = self.compute_credentials_dir.clone();
        }
        if self.compute_known_hosts.is_some() {
            s.compute.known_hosts = self.compute_known_hosts.clone();
        }
        set(
            &mut s.compute.health_interval_secs,
            &self.compute_health_interval_secs,
        );
        set(
            &mut s.compute.unhealthy_after,
            &self.compute_unhealthy_after,
        );
        let c = &mut s.compute;
        set(
            &mut c.breaker_failure_rate,
            &self.compute_breaker_failure_rate,
        );
        set(
            &mut c.breaker_min_requests,
            &self.compute_breaker_min_requests,
        );
        set(
            &mut c.breaker_window_secs,
            &self.compute_breaker_window_secs,
        );
        set(&mut c.breaker_open_secs, &self.compute_breaker_open_secs);
        set(
            &mut c.breaker_max_open_secs,
            &self.compute_breaker_max_open_secs,
        );
    }
}

/// Parses `read+submit=TOKEN,read=OTHER`: scopes joined by `+`, then `=` and the token.
/// Errors name the entry by its place, never by its token.
fn parse_tokens(value: &str) -> Result<Vec<ApiToken>, Error> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
        .map(|(i, entry)| {
            let (scopes, token) = entry.split_once('=').ok_or_else(|| {
                Error::invalid("tokens", format!("entry {i} is not `scope+scope=TOKEN`"))
            })?;
            let scopes = scopes
                .split('+')
                .map(|s| s.parse::<Scope>())
                .collect::<Result<_, _>>()
                .map_err(|e| Error::invalid("tokens", format!("entry {i}: {e}")))?;
            Ok(ApiToken {
                token: token.to_string(),
                scopes,
            })
        })
        .collect()
}
