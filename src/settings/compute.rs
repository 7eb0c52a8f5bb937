//! The compute cluster's settings: `[compute]` in `wrangle.toml`, with its nodes as
//! `[[compute.nodes]]`.
//!
//! ```toml
//! [compute]
//! credentials_dir = "/etc/wrangle/credentials"
//! # The circuit breaker: open after 3 failures in a row or half the last minute's
//! # requests (20 at least) failed; refuse for 10 s, doubled on each failed probe up to 300 s.
//! unhealthy_after = 3
//! breaker_failure_rate = 0.5
//! breaker_min_requests = 20
//! breaker_window_secs = 60
//! breaker_open_secs = 10
//! breaker_max_open_secs = 300
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
    /// Failed checks or node faults in a row that open a node's circuit breaker. Default 3.
    pub unhealthy_after: u32,
    /// The failed share of the window's requests that opens the breaker (0 to 1). Default
    /// 0.5.
    pub breaker_failure_rate: f64,
    /// Requests the window must hold before its failure rate counts. Default 20.
    pub breaker_min_requests: u32,
    /// Seconds the failure rate looks back. Default 60.
    pub breaker_window_secs: f64,
    /// Seconds an open breaker refuses requests before a probe. Default 10.
    pub breaker_open_secs: f64,
    /// The longest cool-down, in seconds (it doubles on each failed probe). Default 300.
    pub breaker_max_open_secs: f64,
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
            breaker_failure_rate: c.breaker_failure_rate,
            breaker_min_requests: c.breaker_min_requests,
            breaker_window_secs: c.breaker_window.as_secs_f64(),
            breaker_open_secs: c.breaker_open_for.as_secs_f64(),
            breaker_max_open_secs: c.breaker_max_open_for.as_secs_f64(),
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
        let seconds = |field: &'static str, secs: f64| {
            if secs.is_finite() && (0.001..=86_400.0).contains(&secs) {
                Ok(Duration::from_secs_f64(secs))
            } else {
                Err(Error::invalid(field, "must be from 0.001 to 86400"))
            }
        };
        let config = ComputeConfig {
            health_interval: Duration::from_secs_f64(secs),
            unhealthy_after: self.unhealthy_after,
            breaker_failure_rate: self.breaker_failure_rate,
            breaker_min_requests: self.breaker_min_requests,
            breaker_window: seconds("compute.breaker_window_secs", self.breaker_window_secs)?,
            breaker_open_for: seconds("compute.breaker_open_secs", self.breaker_open_secs)?,
            breaker_max_open_for: seconds(
                "compute.breaker_max_open_secs",
                self.breaker_max_open_secs,
            )?,
            credentials_dir: self.credentials_dir.clone(),
            known_hosts: self.known_hosts.clone(),
            ..ComputeConfig::default()
        };
        if config.breaker_max_open_for < config.breaker_open_for {
            return Err(Error::invalid(
                "compute.breaker_max_open_secs",
                "must be at least breaker_open_secs",
            ));
        }
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
