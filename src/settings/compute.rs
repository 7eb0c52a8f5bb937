//! The compute cluster's settings: `[compute]` in `wrangle.toml`, with its nodes as
//! `[[compute.nodes]]`.
//!
//! ```toml
//! [compute]
//! credentials_dir = "/etc/wrangle/credentials"
//!
//! [[compute.nodes]]
//! id = "gpu1"
//! endpoint = "http://10.0.0.5:11434"
//! labels = { gpu = "a100" }
//! max_concurrent = 4
//! credential = "gpu1-token"
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::compute::{ComputeConfig, ComputeNode, ComputeNodeSpec};
use crate::error::Error;

/// `[compute]`: external nodes the coordinator's handlers send work to.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComputeSettings {
    /// Nodes added at start; more can be added at run time (`POST /compute/nodes`).
    pub nodes: Vec<ComputeNodeSpec>,
    /// Where named credentials (SSH keys, tokens, kubeconfigs) are read from. Default: none.
    pub credentials_dir: Option<PathBuf>,
    /// SSH host keys are checked against this file. Default `~/.ssh/known_hosts`.
    pub known_hosts: Option<PathBuf>,
    /// Seconds between health checks of a healthy node. Default 10.
    pub health_interval_secs: f64,
    /// Failed checks in a row that make a node unhealthy. Default 3.
    pub unhealthy_after: u32,
}

impl Default for ComputeSettings {
    fn default() -> Self {
        let c = ComputeConfig::default();
        Self {
            nodes: Vec::new(),
            credentials_dir: None,
            known_hosts: None,
            health_interval_secs: c.health_interval.as_secs_f64(),
            unhealthy_after: c.unhealthy_after,
        }
    }
}

impl ComputeSettings {
    /// The cluster's config.
    pub fn config(&self) -> Result<ComputeConfig, Error> {
        let secs = self.health_interval_secs;
        if !secs.is_finite() || !(0.01..=86_400.0).contains(&secs) {
            return Err(Error::invalid(
                "compute.health_interval_secs",
                "must be from 0.01 to 86400",
            ));
        }
        let config = ComputeConfig {
            health_interval: Duration::from_secs_f64(secs),
            unhealthy_after: self.unhealthy_after,
            credentials_dir: self.credentials_dir.clone(),
            known_hosts: self.known_hosts.clone(),
            ..ComputeConfig::default()
        };
        config.validate()?;
        Ok(config)
    }

    /// The nodes, each checked; the error says which one and which field.
    pub fn nodes(&self) -> Result<Vec<ComputeNode>, Error> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                spec.clone().into_node().map_err(|e| {
                    Error::invalid("compute.nodes", format!("[{i}] (id `{}`): {e}", spec.id))
                })
            })
            .collect()
    }
}
