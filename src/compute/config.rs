//! A compute cluster's settings: health checks, the circuit breaker, bounds and credentials.

use std::path::PathBuf;
use std::time::Duration;

/// The longest breaker window or cool-down.
const MAX_BREAKER_TIME: Duration = Duration::from_secs(86_400);

/// How a cluster's proxies check and trip, and where its backends find credentials.
///
/// Each node has a circuit breaker (see [`ComputeCluster`](super::ComputeCluster)): closed,
/// it opens after `unhealthy_after` failures in a row or a failure rate of
/// `breaker_failure_rate` over `breaker_window` (once that holds `breaker_min_requests`
/// requests); open, it refuses requests at once, retryably, for `breaker_open_for`, doubled
/// on each reopening up to `breaker_max_open_for`; half-open, it lets `breaker_probes`
/// requests through: a success closes it, a failure opens it again.
#[derive(Clone, Debug, PartialEq)]
pub struct ComputeConfig {
    /// Time between health checks of a healthy node. Default 10 s.
    pub health_interval: Duration,
    /// How long one check may take. Default 5 s.
    pub health_timeout: Duration,
    /// Failed checks or node faults (unreachable, timed out, HTTP 5xx) in a row that open
    /// the node's circuit breaker. Default 3.
    pub unhealthy_after: u32,
    /// The failed share of the requests in `breaker_window` that opens the breaker, from 0
    /// (exclusive) to 1. Default 0.5.
    pub breaker_failure_rate: f64,
    /// Requests `breaker_window` must hold before its failure rate counts. Default 20.
    pub breaker_min_requests: u32,
    /// How far back the failure rate looks. Default 60 s.
    pub breaker_window: Duration,
    /// How long an open breaker refuses requests before it lets a probe through. Default
    /// 10 s.
    pub breaker_open_for: Duration,
    /// The longest cool-down: each time a probe fails, the cool-down doubles up to this.
    /// Default 5 min.
    pub breaker_max_open_for: Duration,
    /// Probe requests a half-open breaker lets through at once. Default 1.
    pub breaker_probes: u32,
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
            breaker_failure_rate: 0.5,
            breaker_min_requests: 20,
            breaker_window: Duration::from_secs(60),
            breaker_open_for: Duration::from_secs(10),
            breaker_max_open_for: Duration::from_secs(300),
            breaker_probes: 1,
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
        let rate = self.breaker_failure_rate;
        if !rate.is_finite() || rate <= 0.0 || rate > 1.0 {
            return Err(Error::invalid(
                "breaker_failure_rate",
                "must be above 0 and at most 1",
            ));
        }
        if self.breaker_min_requests == 0 {
            return Err(Error::invalid("breaker_min_requests", "must be at least 1"));
        }
        for (field, d) in [
            ("breaker_window", self.breaker_window),
            ("breaker_open_for", self.breaker_open_for),
            ("breaker_max_open_for", self.breaker_max_open_for),
        ] {
            if d.is_zero() || d > MAX_BREAKER_TIME {
                return Err(Error::invalid(field, "must be from 1 ms to one day"));
            }
        }
        if self.breaker_max_open_for < self.breaker_open_for {
            return Err(Error::invalid(
                "breaker_max_open_for",
                "must be at least breaker_open_for",
            ));
        }
        if self.breaker_probes == 0 {
            return Err(Error::invalid("breaker_probes", "must be at least 1"));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_breaker_settings_are_named() {
        let field = |c: ComputeConfig| match c.validate().unwrap_err() {
            crate::Error::Invalid { field, .. } => field,
            e => panic!("{e}"),
        };
        let ok = ComputeConfig::default();
        assert!(ok.validate().is_ok());
        for (bad, name) in [
            (
                ComputeConfig {
                    breaker_failure_rate: 0.0,
                    ..ok.clone()
                },
                "breaker_failure_rate",
            ),
            (
                ComputeConfig {
                    breaker_failure_rate: f64::NAN,
                    ..ok.clone()
                },
                "breaker_failure_rate",
            ),
            (
                ComputeConfig {
                    breaker_failure_rate: 1.5,
                    ..ok.clone()
                },
                "breaker_failure_rate",
            ),
            (
                ComputeConfig {
                    breaker_min_requests: 0,
                    ..ok.clone()
                },
                "breaker_min_requests",
            ),
            (
                ComputeConfig {
                    breaker_window: Duration::ZERO,
                    ..ok.clone()
                },
                "breaker_window",
            ),
            (
                ComputeConfig {
                    breaker_open_for: Duration::MAX,
                    ..ok.clone()
                },
                "breaker_open_for",
            ),
            (
                ComputeConfig {
                    breaker_open_for: Duration::from_secs(60),
                    breaker_max_open_for: Duration::from_secs(30),
                    ..ok.clone()
                },
                "breaker_max_open_for",
            ),
            (
                ComputeConfig {
                    breaker_probes: 0,
                    ..ok.clone()
                },
                "breaker_probes",
            ),
            (
                ComputeConfig {
                    unhealthy_after: 0,
                    ..ok.clone()
                },
                "unhealthy_after",
            ),
        ] {
            assert_eq!(field(bad), name);
        }
    }
}
