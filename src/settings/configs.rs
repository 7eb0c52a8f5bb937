//! The library's settings structs, built from the programs' settings.

use std::time::Duration;

use super::{Settings, IN_MEMORY};
use crate::api::{ApiConfig, RateLimit, ServeConfig, TlsFiles};
use crate::cluster::ClusterConfig;
use crate::coordinator::CoordinatorConfig;
use crate::store::StoreConfig;

impl Settings {
    /// The coordinator's settings.
    pub fn coordinator_config(&self) -> CoordinatorConfig {
        let mut c = CoordinatorConfig {
            min_workers: self.min_workers,
            max_workers: self.max_workers,
            auto_scale: self.auto_scale,
            scale_up_threshold: self.scale_up_threshold,
            scale_down_threshold: self.scale_down_threshold,
            scale_cooldown: Duration::from_secs(self.scale_cooldown_secs),
            worker_timeout: Duration::from_secs(self.worker_timeout_secs),
            ..CoordinatorConfig::default()
        };
        c.worker.max_concurrent_tasks = self.max_concurrent_tasks;
        c.worker.labels = self.labels.clone();
        c.worker.task_timeout = Some(Duration::from_secs(self.task_timeout_secs));
        c.queue.max_queue_size = self.max_queue_size;
        c.queue.default_retries = self.default_retries;
        c.queue.lease_time = Duration::from_secs(self.lease_time_secs);
        c.queue.priority_aging =
            (self.priority_aging_secs > 0).then(|| Duration::from_secs(self.priority_aging_secs));
        c.queue.shed_low_above = (self.shed_low_above > 0).then_some(self.shed_low_above);
        c.queue.shed_normal_above = (self.shed_normal_above > 0).then_some(self.shed_normal_above);
        c.queue.shed_retry_after = Duration::from_secs(self.shed_retry_after_secs);
        c.store = self.store_config();
        c.cluster = self.cluster_listen.map(|listen| {
            let mut cluster = ClusterConfig::new(listen, self.cookie.clone().unwrap_or_default());
            cluster.node_timeout = Duration::from_millis(self.node_timeout_ms);
            cluster.heartbeat_interval = (cluster.node_timeout / 5).max(Duration::from_millis(10));
            cluster.handshake_timeout = Duration::from_millis(self.cluster_handshake_timeout_ms);
            cluster.max_pending_handshakes = self.cluster_max_pending_handshakes;
            cluster.tls = self
                .cluster_tls_cert
                .clone()
                .zip(self.cluster_tls_key.clone())
                .map(|(cert, key)| crate::TlsFiles { cert, key });
            cluster
        });
        c
    }

    /// The store's settings; `None` for `memory`.
    pub fn store_config(&self) -> Option<StoreConfig> {
        let url = self.database_url.trim();
        if url.is_empty() || url == IN_MEMORY {
            return None;
        }
        let mut store = StoreConfig::new(url);
        store.durability = self.durability;
        store.retention = (self.retention_hours > 0)
            .then(|| Duration::from_secs(self.retention_hours.saturating_mul(3600)));
        store.retention_max_tasks =
            (self.retention_max_tasks > 0).then_some(self.retention_max_tasks);
        store.retention_max_bytes =
            (self.retention_max_bytes > 0).then_some(self.retention_max_bytes);
        store.leader_lease = Duration::from_millis(self.leader_lease_ms);
        store.leader_renew = Duration::from_millis(self.leader_renew_ms);
        Some(store)
    }

    /// True when tasks are stored in PostgreSQL: the coordinator program then runs with
    /// failover (a standby until it takes the leader lease).
    pub fn is_postgres(&self) -> bool {
        let url = self.database_url.trim();
        url.starts_with("postgres://") || url.starts_with("postgresql://")
    }

    /// The base URL this coordinator gives standbys to redirect clients to:
    /// `advertise_url`, else `bind` (`None` when `bind` is an unspecified address).
    pub fn advertised_url(&self) -> Option<String> {
        if let Some(url) = &self.advertise_url {
            return Some(url.trim_end_matches('/').to_string());
        }
        if self.bind.ip().is_unspecified() {
            return None;
        }
        let scheme = if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        Some(format!("{scheme}://{}", self.bind))
    }

    /// The HTTP server's connection settings: limits and TLS.
    pub fn serve_config(&self) -> ServeConfig {
        ServeConfig {
            max_connections: self.max_connections,
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            tls: self
                .tls_cert
                .clone()
                .zip(self.tls_key.clone())
                .map(|(cert, key)| TlsFiles { cert, key }),
        }
    }

    /// The HTTP server's settings.
    pub fn api_config(&self) -> ApiConfig {
        ApiConfig {
            token: self.token.clone(),
            tokens: self.tokens.clone(),
            max_body_bytes: self.max_body_bytes,
            rate_limit: (self.rate_limit_per_second > 0.0).then_some(RateLimit {
                per_second: self.rate_limit_per_second,
                burst: self.rate_limit_per_second * 2.0,
            }),
            cors_origins: self.cors_origins.clone(),
            allowed_hosts: self.allowed_hosts.clone(),
            max_batch: self.max_batch,
            body_read_timeout: Duration::from_millis(self.body_read_timeout_ms),
            max_streams_per_client: self.max_streams_per_client,
            max_event_stream: Duration::from_secs(self.max_event_stream_secs),
            max_wait: Duration::from_secs(self.max_wait_secs),
            ..ApiConfig::default()
        }
    }
}
