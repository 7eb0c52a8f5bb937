//! A compute cluster's settings: health checks, the breaker, bounds and credentials.

use std::path::PathBuf;
use std::time::Duration;

/// How a cluster's proxies check and trip, and where its backends find credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComputeConfig {
    /// Time between health checks of a healthy node. Default 10 s.
    pub health_interval: Duration,
    /// How long one check may take. Default 5 s.
    pub health_timeout: Duration,
    /// Failed checks (or requests failing for the node's sake) in a row that make a node
    /// unhealthy. Default 3.
    pub unhealthy_after: u32,
    /// Longest time between checks of a failing node. Default 60 s.
    pub max_backoff: Duration,
    /// Requests that may wait for a slot on one node; more are refused as busy (retryable).
    /// Default 10,000.
    pub max_waiting: usize,
    /// The directory credentials are read from, by the name a node gives
    /// ([`ComputeNode::credential`](super::ComputeNode::credential)): SSH private keys,
    /// bearer tokens, kubeconfigs. A name is a file name in it, never a path. Default:
    /// none (nodes that name a credential are refused).
    pub credentials_dir: Option<PathBuf>,
    /// The known_hosts file SSH host keys are checked against (unknown or changed keys are
    /// refused). Default: `~/.ssh/known_hosts`.
    pub known_hosts: Option<PathBuf>,
}

impl Default for ComputeConfig {
    fn default() -> Self {
        Self {
            health_interval: Duration::from_secs(10),
            health_timeout: Duration::from_secs(5),
            unhealthy_after: 3,
            max_backoff: Duration::from_secs(60),
            max_waiting: 10_000,
            credentials_dir: None,
            known_hosts: None,
        }
    }
}

impl ComputeConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), crate::Error> {
        use crate::Error;
        if self.health_interval.is_zero() {
            return Err(Error::invalid(
                "health_interval",
                "must be greater than zero",
            ));
        }
        if self.health_timeout.is_zero() {
            return Err(Error::invalid(
                "health_timeout",
                "must be greater than zero",
            ));
        }
        if self.unhealthy_after == 0 {
            return Err(Error::invalid("unhealthy_after", "must be at least 1"));
        }
        if self.max_waiting == 0 {
            return Err(Error::invalid("max_waiting", "must be at least 1"));
        }
        Ok(())
    }

    /// The file of credential `name`, which must exist in `credentials_dir`; the error
    /// names the field and never echoes the file's content.
    pub(crate) fn credential_path(&self, name: &str) -> Result<PathBuf, crate::Error> {
        use crate::Error;
        let Some(dir) = &self.credentials_dir else {
            return Err(Error::invalid(
                "credential",
                format!("`{name}` named, but the cluster has no credentials_dir"),
            ));
        };
        // Names are checked to be plain file names when the node is validated.
        let path = dir.join(name);
        if !path.is_file() {
            return Err(Error::invalid(
                "credential",
                format!("no credential file `{name}` in {}", dir.display()),
            ));
        }
        Ok(path)
    }
}
