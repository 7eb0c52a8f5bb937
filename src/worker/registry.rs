use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use super::{WorkerInfo, WorkerShared, WorkerStatus};

#[derive(Debug)]
struct Entry {
    info: WorkerInfo,
    last_heartbeat: Instant,
    /// Live counters for workers in this process; remote ones only send snapshots.
    live: Option<Arc<WorkerShared>>,
}

/// Every worker the coordinator knows, with its last heartbeat. Shared and lock-free to
/// read (a `DashMap`), so the API and the health check never wait on an actor.
#[derive(Clone, Debug, Default)]
pub struct WorkerRegistry {
    map: Arc<DashMap<Arc<str>, Entry>>,
}

impl WorkerRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a worker, counting now as its last heartbeat.
    pub fn register(&self, info: WorkerInfo) {
        self.map.insert(
            info.id.as_str().into(),
            Entry {
                info,
                last_heartbeat: Instant::now(),
                live: None,
            },
        );
    }

    pub(crate) fn register_local(&self, shared: Arc<WorkerShared>) {
        self.map.insert(
            shared.id.clone(),
            Entry {
                info: shared.info(),
                last_heartbeat: Instant::now(),
                live: Some(shared),
            },
        );
    }

    /// Records a heartbeat; returns false for an unknown worker.
    pub fn heartbeat(&self, id: &str) -> bool {
        match self.map.get_mut(id) {
            Some(mut e) => {
                e.last_heartbeat = Instant::now();
                if let Some(live) = &e.live {
                    e.info = live.info();
                }
                true
            }
            None => false,
        }
    }

    /// Records a heartbeat with a fresh snapshot (for workers outside this process).
    pub fn heartbeat_with(&self, info: WorkerInfo) {
        match self.map.get_mut(info.id.as_str()) {
            Some(mut e) => {
                e.last_heartbeat = Instant::now();
                e.info = info;
            }
            None => self.register(info),
        }
    }

    /// Removes a worker.
    pub fn unregister(&self, id: &str) -> Option<WorkerInfo> {
        self.map.remove(id).map(|(_, e)| e.info)
    }

    /// Workers with `status` (any when `None`) that have every label in `labels`, by id.
    pub fn get_workers(&self, status: Option<WorkerStatus>, labels: &[&str]) -> Vec<WorkerInfo> {
        let mut out: Vec<WorkerInfo> = self
            .map
            .iter()
            .map(|e| match &e.live {
                Some(live) => live.info(),
                None => e.info.clone(),
            })
            .filter(|i| status.is_none_or(|s| i.status == s))
            .filter(|i| labels.iter().all(|l| i.labels.iter().any(|have| have == l)))
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// One worker.
    pub fn get(&self, id: &str) -> Option<WorkerInfo> {
        self.map.get(id).map(|e| match &e.live {
            Some(live) => live.info(),
            None => e.info.clone(),
        })
    }

    /// Workers whose last heartbeat is older than `timeout`, with how long they have been
    /// silent.
    pub fn silent_for(&self, timeout: Duration) -> Vec<(String, Duration)> {
        self.silent_incarnations(timeout)
            .into_iter()
            .map(|(id, silent, _)| (id, silent))
            .collect()
    }

    /// Like [`silent_for`](Self::silent_for), with each local worker's incarnation.
    pub(crate) fn silent_incarnations(
        &self,
        timeout: Duration,
    ) -> Vec<(String, Duration, Option<u64>)> {
        let now = Instant::now();
        self.map
            .iter()
            .filter_map(|e| {
                let silent = now.saturating_duration_since(e.last_heartbeat);
                let incarnation = e.live.as_ref().map(|l| l.incarnation);
                (silent > timeout).then(|| (e.key().to_string(), silent, incarnation))
            })
            .collect()
    }

    /// How many workers are registered.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when none are.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
