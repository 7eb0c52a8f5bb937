//! The node program's settings: `[node]` in `wrangle.toml`, beside the coordinator's.
//!
//! ```toml
//! cookie = "s3cret"            # shared with the coordinator (better: WRANGLE_COOKIE_FILE)
//!
//! [node]
//! join = "10.0.0.5:7450"      # or several, for failover: ["10.0.0.5:7450", "10.0.0.6:7450"]
//! labels = ["gpu=a100", "region=eu"]
//! workers = 4
//! max_workers = 16             # grows with the coordinator's backlog; default: fixed
//! slots = 4
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::cluster::NodeConfig;
use crate::error::Error;

/// `[node]`: what the node program reads from the settings file. Every field has a
/// default; each is also a flag of the node program (`--join`, `--workers`, ...).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSettings {
    /// The coordinator's cluster address, `host:port`. Required (here or as a flag). For
    /// failover, several coordinators' addresses (at most 16), comma-separated or (in the
    /// file) an array of strings: the node joins whichever accepts it (the leader) and
    /// moves on to the next by itself when it loses it.
    #[serde(deserialize_with = "one_or_many")]
    pub join: Option<String>,
    /// This node's name, unique in the cluster. Default `node-<random>`.
    pub name: Option<String>,
    /// Labels tasks can require (`gpu=a100`). Default none.
    pub labels: Vec<String>,
    /// Workers in the node's pool (its fewest, when it scales). Default 4.
    pub workers: usize,
    /// Most workers: the pool grows up to this many while the coordinator holds tasks the
    /// node can serve, and shrinks back to `workers` when idle. Default none (fixed).
    pub max_workers: Option<usize>,
    /// Least time between two changes of the pool's size, in milliseconds. Default 10000.
    pub scale_cooldown_ms: u64,
    /// Tasks each worker runs at once. Default 4.
    pub slots: u32,
    /// The CA certificate (PEM) to trust: the node talks TLS to the coordinator. Default
    /// none (clear text).
    pub tls_ca: Option<PathBuf>,
    /// The name on the coordinator's certificate. Default: the host of `join`.
    pub tls_server_name: Option<String>,
    /// Heartbeat period until the coordinator sets its own, in milliseconds. Default 1000.
    pub heartbeat_ms: u64,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            join: None,
            name: None,
            labels: Vec::new(),
            workers: 4,
            max_workers: None,
            scale_cooldown_ms: 10_000,
            slots: 4,
            tls_ca: None,
            tls_server_name: None,
            heartbeat_ms: 1_000,
        }
    }
}

impl NodeSettings {
    /// The node's config with `cookie`, checked. `join` and the cookie are required.
    pub fn node_config(&self, cookie: Option<String>) -> Result<NodeConfig, Error> {
        let join = self.join.clone().ok_or_else(|| {
            Error::invalid(
                "join",
                "the coordinator's address is required: --join HOST:PORT, WRANGLE_JOIN, or \
                 `join` under [node] in the settings file",
            )
        })?;
        let cookie = cookie.filter(|c| !c.is_empty()).ok_or_else(|| {
            Error::invalid(
                "cookie",
                "required: --cookie-file PATH, WRANGLE_COOKIE_FILE, WRANGLE_COOKIE, or \
                 `cookie` in the settings file",
            )
        })?;
        let mut addresses = join.split(',').map(str::trim);
        let first = addresses.next().unwrap_or_default().to_string();
        let mut config = NodeConfig::new(first, cookie);
        config.also_join = addresses.map(String::from).collect();
        if let Some(name) = &self.name {
            config.name = name.clone();
        }
        config.labels = self.labels.clone();
        config.workers = self.workers;
        config.max_workers = self.max_workers;
        config.scale_cooldown = Duration::from_millis(self.scale_cooldown_ms);
        config.worker.max_concurrent_tasks = self.slots;
        config.tls_ca = self.tls_ca.clone();
        config.tls_server_name = self.tls_server_name.clone();
        config.heartbeat_interval = Duration::from_millis(self.heartbeat_ms);
        config.validate().map_err(|e| match e {
            // The addresses came from `join`: the error names it.
            Error::Invalid {
                field: "coordinator" | "also_join",
                reason,
            } => Error::Invalid {
                field: "join",
                reason,
            },
            e => e,
        })?;
        Ok(config)
    }
}

/// `join` in the file: one string (addresses separated by commas), or an array of them,
/// kept as one comma-separated string like the flag's.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct Join;
    impl<'de> serde::de::Visitor<'de> for Join {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a `host:port` string, or an array of them")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<String, A::Error> {
            let mut all = Vec::<String>::new();
            while let Some(address) = seq.next_element()? {
                all.push(address);
            }
            Ok(all.join(","))
        }
    }
    d.deserialize_any(Join).map(Some)
}
