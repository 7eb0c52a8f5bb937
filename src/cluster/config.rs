//! The coordinator's cluster settings ([`ClusterConfig`], [`TlsFiles`]), and the checks
//! they share with a node's.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::error::Error;

/// TLS for the coordinator's listener: a PEM certificate chain and its private key.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The coordinator's listener for nodes.
#[derive(Clone, PartialEq)]
pub struct ClusterConfig {
    /// Where to listen (`0.0.0.0:7450` for every interface). No default: joining is opt-in.
    pub listen: SocketAddr,
    /// The shared secret nodes must present (ractor_cluster's magic cookie).
    pub cookie: String,
    /// The coordinator's node name. Default `coordinator`.
    pub name: String,
    /// TLS for node sessions; `None` (default) leaves them in clear text.
    pub tls: Option<TlsFiles>,
    /// How often nodes heartbeat. Default 300 ms.
    pub heartbeat_interval: Duration,
    /// Silence after which a node is given up and its tasks go elsewhere. Default 1.5 s,
    /// so a frozen or cut-off node's tasks run elsewhere within 2 s; raise it on networks
    /// that stall for longer (a node given up by mistake re-joins, and its tasks in flight
    /// run twice).
    pub node_timeout: Duration,
    /// Joins per node per minute past which its re-joins are refused for a while (a
    /// flapping node). Default 10.
    pub max_joins_per_minute: usize,
    /// Time a new connection has to pass the cookie challenge (the TLS handshake
    /// included) before it is closed. Default 5 s.
    pub handshake_timeout: Duration,
    /// Connections that may be handshaking at once; more are closed at once. Default 64.
    pub max_pending_handshakes: usize,
}

impl std::fmt::Debug for ClusterConfig {
    /// Every field but secrets, which show as `<redacted>` (they must not reach a log).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("listen", &self.listen)
            .field("cookie", &"<redacted>")
            .field("name", &self.name)
            .field("tls", &self.tls)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("node_timeout", &self.node_timeout)
            .field("max_joins_per_minute", &self.max_joins_per_minute)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_pending_handshakes", &self.max_pending_handshakes)
            .finish()
    }
}

impl ClusterConfig {
    /// A listener on `listen` with `cookie` and the defaults.
    pub fn new(listen: SocketAddr, cookie: impl Into<String>) -> Self {
        Self {
            listen,
            cookie: cookie.into(),
            name: "coordinator".into(),
            tls: None,
            heartbeat_interval: Duration::from_millis(300),
            node_timeout: Duration::from_millis(1500),
            max_joins_per_minute: 10,
            handshake_timeout: Duration::from_secs(5),
            max_pending_handshakes: 64,
        }
    }

    /// Checks for values the listener cannot run with.
    pub fn validate(&self) -> Result<(), Error> {
        validate_common(&self.cookie, &self.name, self.heartbeat_interval)?;
        if self.node_timeout <= self.heartbeat_interval {
            return Err(Error::invalid(
                "cluster.node_timeout",
                "must be longer than the heartbeat interval",
            ));
        }
        if self.handshake_timeout.is_zero() {
            return Err(Error::invalid(
                "cluster.handshake_timeout",
                "must be greater than zero",
            ));
        }
        if self.max_pending_handshakes == 0 {
            return Err(Error::invalid(
                "cluster.max_pending_handshakes",
                "must be at least 1",
            ));
        }
        if self.max_joins_per_minute == 0 {
            return Err(Error::invalid(
                "cluster.max_joins_per_minute",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Checks the settings every cluster process has: a cookie, a name fit for process groups
/// and worker ids, a heartbeat.
pub(super) fn validate_common(cookie: &str, name: &str, heartbeat: Duration) -> Result<(), Error> {
    if cookie.is_empty() {
        return Err(Error::invalid("cookie", "must not be empty"));
    }
    if name.is_empty() || name.contains(['/', '@']) || name.chars().any(char::is_whitespace) {
        return Err(Error::invalid(
            "name",
            format!("`{name}` must be non-empty, without `/`, `@` or spaces"),
        ));
    }
    if heartbeat.is_zero() {
        return Err(Error::invalid(
            "heartbeat_interval",
            "must be greater than zero",
        ));
    }
    Ok(())
}
