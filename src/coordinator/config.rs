//! The coordinator's settings.

use std::time::Duration;

use crate::error::Error;
use crate::pool::PoolConfig;
use crate::queue::QueueConfig;
use crate::store::StoreConfig;
use crate::supervision::RestartBudget;
use crate::worker::WorkerConfig;

/// Settings of a [`Coordinator`](super::Coordinator).
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// Fewest local workers. Default 2.
    pub min_workers: usize,
    /// Most local workers. Default 10.
    pub max_workers: usize,
    /// Scale up when waiting tasks per worker exceed this. Default 10.
    pub scale_up_threshold: f64,
    /// Scale down (one worker at a time) when waiting tasks per worker fall below this and
    /// a worker's worth of slots is idle. Default 2.
    pub scale_down_threshold: f64,
    /// How often silent workers are looked for. Default 10 s.
    pub health_check_interval: Duration,
    /// A worker silent this long is killed and replaced. Default 30 s.
    pub worker_timeout: Duration,
    /// Whether the autoscaler runs. Default true.
    pub auto_scale: bool,
    /// Least time between two scaling changes. Default 30 s.
    pub scale_cooldown: Duration,
    /// How often the autoscaler looks. Default 1 s.
    pub autoscale_interval: Duration,
    /// How long a graceful stop waits for queued and running tasks. Default 30 s.
    pub shutdown_timeout: Duration,
    /// The local pool's name. Default `local`.
    pub pool_name: String,
    /// Every local worker's settings.
    pub worker: WorkerConfig,
    /// The queue's settings.
    pub queue: QueueConfig,
    /// Restarts allowed to the pool (for its workers) and to the coordinator (for its pool).
    pub restart_budget: RestartBudget,
    /// Where tasks are stored; `None` keeps them in memory only. Default `None`; the
    /// coordinator example stores in `sqlite://wrangle.db` unless told otherwise.
    pub store: Option<StoreConfig>,
    /// Where nodes join over the network; `None` (default) runs without a cluster.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// The workflow engine's settings.
    pub workflows: crate::workflow::WorkflowConfig,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            min_workers: 2,
            max_workers: 10,
            scale_up_threshold: 10.0,
            scale_down_threshold: 2.0,
            health_check_interval: Duration::from_secs(10),
            worker_timeout: Duration::from_secs(30),
            auto_scale: true,
            scale_cooldown: Duration::from_secs(30),
            autoscale_interval: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(30),
            pool_name: "local".into(),
            worker: WorkerConfig::default(),
            queue: QueueConfig::default(),
            restart_budget: RestartBudget::default(),
            store: None,
            cluster: None,
            workflows: crate::workflow::WorkflowConfig::default(),
        }
    }
}

impl CoordinatorConfig {
    /// Checks every setting; the error names the first bad one. The local pool's settings
    /// (bounds, worker settings, restart budget) are checked as the pool checks them.
    pub fn validate(&self) -> Result<(), Error> {
        self.pool_config().validate()?;
        let finite_non_negative = |v: f64| v.is_finite() && v >= 0.0;
        if !finite_non_negative(self.scale_up_threshold) {
            return Err(Error::invalid(
                "scale_up_threshold",
                "must be a number >= 0",
            ));
        }
        if !finite_non_negative(self.scale_down_threshold) {
            return Err(Error::invalid(
                "scale_down_threshold",
                "must be a number >= 0",
            ));
        }
        if self.scale_down_threshold > self.scale_up_threshold {
            return Err(Error::invalid(
                "scale_down_threshold",
                "must not exceed scale_up_threshold",
            ));
        }
        for (field, d) in [
            ("health_check_interval", self.health_check_interval),
            ("worker_timeout", self.worker_timeout),
            ("autoscale_interval", self.autoscale_interval),
        ] {
            if d.is_zero() {
                return Err(Error::invalid(field, "must be greater than zero"));
            }
        }
        if self.worker_timeout <= self.worker.heartbeat_interval {
            return Err(Error::invalid(
                "worker_timeout",
                "must be longer than worker.heartbeat_interval",
            ));
        }
        self.queue.validate()?;
        if let Some(store) = &self.store {
            store.validate()?;
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        Ok(())
    }

    /// The local pool's settings.
    pub(crate) fn pool_config(&self) -> PoolConfig {
        PoolConfig {
            name: self.pool_name.clone(),
            min_workers: self.min_workers,
            max_workers: self.max_workers,
            worker: self.worker.clone(),
            restart_budget: self.restart_budget,
            ..PoolConfig::default()
        }
    }
}
