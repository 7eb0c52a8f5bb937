//! Checking settings: access to the API, limits, the cluster's secrets, and every
//! library config built from them.

use super::Settings;
use crate::error::Error;

impl Settings {
    /// Checks every setting by building the configs from it.
    pub fn validate(&self) -> Result<(), Error> {
        self.validate_api_access()?;
        self.compute.config()?;
        self.compute.nodes()?;
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
        self.validate_node_groups()?;
        self.coordinator_config().validate()
    }

    /// Each group's settings, their names unique, a cluster for them to join, and SSH
    /// hosts that are compute nodes.
    fn validate_node_groups(&self) -> Result<(), Error> {
        if !self.node_groups.is_empty() && self.cluster_listen.is_none() {
            return Err(Error::invalid(
                "node_groups",
                "launched nodes join the cluster: set cluster_listen (and cookie)",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for g in &self.node_groups {
            g.config()?;
            if !names.insert(&g.name) {
                return Err(Error::invalid(
                    "node_groups.name",
                    format!("two node groups are named {:?}", g.name),
                ));
            }
            if let super::LauncherSettings::Ssh { hosts, .. } = &g.launcher {
                if let Some(h) = hosts
                    .iter()
                    .find(|h| !self.compute.nodes.iter().any(|n| &n.id == *h))
                {
                    return Err(Error::invalid(
                        "node_groups.launcher.hosts",
                        format!("{h:?} is not the id of one of [[compute.nodes]]"),
                    ));
                }
            }
        }
        Ok(())
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
}
