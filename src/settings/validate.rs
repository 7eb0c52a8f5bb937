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
        self.validate_failover()?;
        self.validate_node_groups()?;
        self.coordinator_config().validate()
    }

    /// The leader lease's timing, and an advertised URL standbys can redirect to.
    fn validate_failover(&self) -> Result<(), Error> {
        if self.leader_renew_ms < 50 {
            return Err(Error::invalid("leader_renew_ms", "must be at least 50"));
        }
        if self.leader_lease_ms < self.leader_renew_ms.saturating_mul(2)
            || self.leader_lease_ms > 600_000
        {
            return Err(Error::invalid(
                "leader_lease_ms",
                "must be at least twice leader_renew_ms (a renewal may be late once) and at \
                 most 600000",
            ));
        }
        if let Some(url) = &self.advertise_url {
            let ok = url
                .parse::<axum::http::Uri>()
                .ok()
                .filter(|u| matches!(u.scheme_str(), Some("http" | "https")))
                .and_then(|u| u.authority().map(|a| !a.as_str().contains('@')))
                .unwrap_or(false);
            if !ok || url.len() > 2048 {
                return Err(Error::invalid(
                    "advertise_url",
                    "must be an http:// or https:// base URL without credentials \
                     (http://10.0.0.5:7700)",
                ));
            }
        }
        if self.is_postgres() && self.advertised_url().is_none() {
            return Err(Error::invalid(
                "advertise_url",
                "required on PostgreSQL when bind is 0.0.0.0 or [::]: the address other \
                 coordinators send clients to while this one leads",
            ));
        }
        Ok(())
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
