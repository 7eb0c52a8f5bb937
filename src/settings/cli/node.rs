//! The node program's command line: `[node]` of the settings file as flags, each with its
//! environment variable, and the cluster's cookie.

use std::path::PathBuf;

use clap::Parser;

use super::secret::{Cookie, SecretArgs};
use super::{set, set_list, PRECEDENCE};
use crate::cluster::NodeConfig;
use crate::error::Error;
use crate::settings::Settings;

/// wrangle node: workers on this machine that join a coordinator and run its tasks.
#[derive(Clone, Debug, Default, Parser)]
#[command(name = "node", after_help = PRECEDENCE)]
pub struct NodeArgs {
    /// The settings file (TOML), the coordinator's: the node reads `cookie` and `[node]`.
    /// Default ./wrangle.toml when present.
    #[arg(long, env = "WRANGLE_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// How log lines are written: `text`, or `json` (one object per line).
    #[arg(long, env = "WRANGLE_LOG_FORMAT", value_enum, default_value_t = super::LogFormat::Text)]
    pub log_format: super::LogFormat,
    /// Export spans (each task's `task` span in the task's trace id) to this OpenTelemetry
    /// collector over OTLP/HTTP, such as `http://127.0.0.1:4318`. Only with the `otel` feature.
    #[cfg(feature = "otel")]
    #[arg(long, env = "WRANGLE_OTEL_ENDPOINT", value_name = "URL")]
    pub otel_endpoint: Option<String>,
    /// The coordinator's cluster address. Required. For failover, several coordinators'
    /// addresses, comma-separated (at most 16): the node joins whichever accepts it and moves
    /// on to the next by itself when it loses it.
    #[arg(long, env = "WRANGLE_JOIN", value_name = "HOST:PORT[,HOST:PORT...]")]
    pub join: Option<String>,
    /// The coordinator's cookie. Required.
    #[command(flatten)]
    pub cookie: SecretArgs<Cookie>,
    /// This node's name, unique in the cluster. Default node-<random>.
    #[arg(long, env = "WRANGLE_NODE_NAME", value_name = "NAME")]
    pub name: Option<String>,
    /// Labels tasks can require, comma-separated (`gpu=a100,region=eu`). Default none.
    #[arg(
        long,
        env = "WRANGLE_LABELS",
        value_name = "LABELS",
        value_delimiter = ','
    )]
    pub labels: Option<Vec<String>>,
    /// Workers in the pool. Default 4.
    #[arg(long, env = "WRANGLE_NODE_WORKERS", value_name = "N")]
    pub workers: Option<usize>,
    /// Most workers: the pool grows from --workers up to this many while the coordinator
    /// holds tasks this node can serve (and shrinks back when idle). Default: --workers
    /// (a fixed pool).
    #[arg(long, env = "WRANGLE_NODE_MAX_WORKERS", value_name = "N")]
    pub max_workers: Option<usize>,
    /// Least time between two changes of the pool's size, in milliseconds. Default 10000.
    #[arg(long, env = "WRANGLE_NODE_SCALE_COOLDOWN_MS", value_name = "MS")]
    pub scale_cooldown_ms: Option<u64>,
    /// Tasks each worker runs at once. Default 4.
    #[arg(long, env = "WRANGLE_NODE_SLOTS", value_name = "N")]
    pub slots: Option<u32>,
    /// Trust this CA (PEM) and talk TLS to the coordinator. Default: clear text, where the
    /// cookie's challenge digest and every task can be read and altered on the path.
    #[arg(long, env = "WRANGLE_NODE_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// The name on the coordinator's certificate. Default the --join host (of each address
    /// in turn, with several).
    #[arg(long, env = "WRANGLE_NODE_TLS_SERVER_NAME", value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// Heartbeat period until the coordinator sets its own, in milliseconds. Default 1000.
    #[arg(long, env = "WRANGLE_NODE_HEARTBEAT_MS", value_name = "MS")]
    pub heartbeat_ms: Option<u64>,
}

impl NodeArgs {
    /// The node's config: the file's `cookie` and `[node]` (`--config`), then the
    /// environment and the flags, checked.
    pub fn node_config(&self) -> Result<NodeConfig, Error> {
        let settings = Settings::load(self.config.as_deref())?;
        let mut node = settings.node;
        set(&mut node.join, &self.join.clone().map(Some));
        set(&mut node.name, &self.name.clone().map(Some));
        set_list(&mut node.labels, &self.labels);
        set(&mut node.workers, &self.workers);
        set(&mut node.max_workers, &self.max_workers.map(Some));
        set(&mut node.scale_cooldown_ms, &self.scale_cooldown_ms);
        set(&mut node.slots, &self.slots);
        set(&mut node.tls_ca, &self.tls_ca.clone().map(Some));
        set(
            &mut node.tls_server_name,
            &self.tls_server_name.clone().map(Some),
        );
        set(&mut node.heartbeat_ms, &self.heartbeat_ms);
        let cookie = self.cookie.resolve()?.or(settings.cookie);
        node.node_config(cookie)
    }
}
