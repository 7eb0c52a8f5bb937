//! A node process's settings: [`NodeConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cluster::config::validate_common;
use crate::error::Error;
use crate::worker::WorkerConfig;

/// Settings of a node process.
#[derive(Clone, PartialEq)]
pub struct NodeConfig {
    /// The coordinator's cluster address, `host:port`: the first one the node tries.
    pub coordinator: String,
    /// Further coordinator addresses, for failover: the node tries `coordinator` and these
    /// in turn, joins whichever accepts it, and moves on to the next one by itself when the
    /// coordinator it is on dies, freezes or stops listening. At most 15 (16 in all), no
    /// address twice. Default none.
    pub also_join: Vec<String>,
    /// The shared secret (the coordinator's cookie).
    pub cookie: String,
    /// This node's name, unique in the cluster; its workers are `name/w-N`. Default
    /// `node-<random>`.
    pub name: String,
    /// Labels its workers carry (`gpu=a100`, `region=eu`).
    pub labels: Vec<String>,
    /// Workers in its pool (its fewest, when it scales). Default 4.
    pub workers: usize,
    /// Most workers: the node's own autoscaler grows the pool up to this many from its
    /// share of the coordinator's backlog (sent with each heartbeat's answer) and its
    /// workers' mailbox depths, and shrinks it back to `workers` when idle. `None` (the
    /// default) keeps the pool at `workers`.
    pub max_workers: Option<usize>,
    /// Least time between two changes of the pool's size. Default 10 s.
    pub scale_cooldown: Duration,
    /// Settings of each worker (slots, timeouts). Its `labels` are replaced by the node's.
    pub worker: WorkerConfig,
    /// Where the node's own server listens. Default `127.0.0.1:0` (it only connects out).
    pub listen: SocketAddr,
    /// The CA certificate (PEM) to trust when the coordinator uses TLS; `None` connects in
    /// clear text.
    pub tls_ca: Option<PathBuf>,
    /// The name the coordinator's certificate is for. Default: the host of the address
    /// being tried (`coordinator` or one of `also_join`).
    pub tls_server_name: Option<String>,
    /// Heartbeat period until the coordinator sets its own. Default 1 s.
    pub heartbeat_interval: Duration,
    /// First reconnect delay. Default 200 ms.
    pub reconnect_min: Duration,
    /// Longest reconnect delay. Default 5 s.
    pub reconnect_max: Duration,
}

impl std::fmt::Debug for NodeConfig {
    /// Every field but secrets, which show as `<redacted>` (they must not reach a log).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("coordinator", &self.coordinator)
            .field("also_join", &self.also_join)
            .field("cookie", &"<redacted>")
            .field("name", &self.name)
            .field("labels", &self.labels)
            .field("workers", &self.workers)
            .field("max_workers", &self.max_workers)
            .field("scale_cooldown", &self.scale_cooldown)
            .field("worker", &self.worker)
            .field("listen", &self.listen)
            .field("tls_ca", &self.tls_ca)
            .field("tls_server_name", &self.tls_server_name)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .finish()
    }
}

impl NodeConfig {
    /// The most coordinator addresses a node is given (`coordinator` and `also_join`).
    pub const MAX_COORDINATORS: usize = 16;

    /// A node joining `coordinator` with `cookie`, and the defaults.
    pub fn new(coordinator: impl Into<String>, cookie: impl Into<String>) -> Self {
        Self {
            coordinator: coordinator.into(),
            also_join: Vec::new(),
            cookie: cookie.into(),
            name: format!("node-{:06x}", fastrand::u32(..0x100_0000)),
            labels: Vec::new(),
            workers: 4,
            max_workers: None,
            scale_cooldown: Duration::from_secs(10),
            worker: WorkerConfig::default(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls_ca: None,
            tls_server_name: None,
            heartbeat_interval: Duration::from_secs(1),
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(5),
        }
    }

    /// Adds a coordinator address to try in turn with the others (failover).
    ///
    /// ```
    /// let config = wrangle::NodeConfig::new("10.0.0.5:7450", "secret").also_join("10.0.0.6:7450");
    /// assert_eq!(config.coordinators().collect::<Vec<_>>(), ["10.0.0.5:7450", "10.0.0.6:7450"]);
    /// ```
    pub fn also_join(mut self, address: impl Into<String>) -> Self {
        self.also_join.push(address.into());
        self
    }

    /// Every coordinator address, in the order the node tries them: `coordinator`, then
    /// `also_join`.
    pub fn coordinators(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.coordinator.as_str()).chain(self.also_join.iter().map(String::as_str))
    }

    /// Checks for values a node cannot run with.
    pub fn validate(&self) -> Result<(), Error> {
        validate_common(&self.cookie, &self.name, self.heartbeat_interval)?;
        check_address("coordinator", &self.coordinator)?;
        for address in &self.also_join {
            check_address("also_join", address)?;
        }
        if self.also_join.len() >= Self::MAX_COORDINATORS {
            return Err(Error::invalid(
                "also_join",
                format!(
                    "{} coordinator addresses; at most {} in all",
                    self.also_join.len() + 1,
                    Self::MAX_COORDINATORS
                ),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(twice) = self.coordinators().find(|a| !seen.insert(*a)) {
            return Err(Error::invalid(
                "also_join",
                format!("`{twice}` is listed twice"),
            ));
        }
        if self.workers == 0 {
            return Err(Error::invalid("workers", "must be at least 1"));
        }
        if self
            .max_workers
            .is_some_and(|m| m < self.workers || m > 10_000)
        {
            return Err(Error::invalid(
                "max_workers",
                "must be from workers to 10000",
            ));
        }
        if self.reconnect_min.is_zero() || self.reconnect_max < self.reconnect_min {
            return Err(Error::invalid(
                "reconnect_min",
                "must be greater than zero and at most reconnect_max",
            ));
        }
        let worker = WorkerConfig {
            labels: self.labels.clone(),
            ..self.worker.clone()
        };
        worker.validate()
    }
}

/// Checks that `address` is `host:port`; the error names `field`.
fn check_address(field: &'static str, address: &str) -> Result<(), Error> {
    if address.is_empty() {
        return Err(Error::invalid(
            field,
            "an empty address; expected `host:port`",
        ));
    }
    if address
        .rsplit_once(':')
        .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
    {
        return Err(Error::invalid(
            field,
            format!("`{address}` is not `host:port`"),
        ));
    }
    Ok(())
}
