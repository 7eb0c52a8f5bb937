//! The [`ComputeCluster`] handle: nodes added, removed, listed, checked and selected, each
//! behind a supervised [`NodeProxy`](super::proxy) actor.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use ractor::{Actor, ActorRef};
use tokio::sync::oneshot;

use super::config::ComputeConfig;
use super::node::{ComputeNode, ComputeNodeInfo, Selector};
use super::proxy::ProxyMsg;
use super::request::{ComputeError, ComputeErrorKind, ComputeRequest, ComputeResponse, StreamSink};
use super::state::NodeShared;
use super::supervisor::{ComputeSupervisor, SupMsg};
use crate::error::Error;
use crate::supervision::RestartBudget;

/// Most nodes in one cluster.
const MAX_NODES: usize = 10_000;

/// A set of external compute nodes. Cloning the handle is cheap; every clone is the same
/// cluster.
///
/// ```
/// use wrangle::compute::{ComputeCluster, ComputeNode, Selector};
///
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() -> Result<(), wrangle::Error> {
/// let cluster = ComputeCluster::start("inference").await?;
/// cluster.add_node(ComputeNode::new("gpu1", "http://127.0.0.1:11434")?).await?;
/// cluster
///     .add_node(ComputeNode::new("gpu2", "http://127.0.0.1:11435")?.label("gpu", "a100"))
///     .await?;
///
/// let available = cluster.get_available_nodes();
/// assert_eq!(available.len(), 2);
/// let node = cluster.select_node(&Selector::new().label("gpu", "a100")).unwrap();
/// assert_eq!(node.id(), "gpu2");
/// for node in cluster.list_nodes() {
///     println!("{} ({}) - {}", node.id, node.backend, node.endpoint);
/// }
///
/// // Nothing listens on these ports here: the checks fail.
/// let health = cluster.health_check().await;
/// assert_eq!(health.get("gpu1"), Some(&false));
/// cluster.remove_node("gpu1").await?;
/// assert_eq!(cluster.list_nodes().len(), 1);
/// cluster.stop().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ComputeCluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ComputeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComputeCluster")
            .field("name", &self.inner.name)
            .field("nodes", &self.inner.nodes.read().expect("nodes").len())
            .finish()
    }
}

struct Inner {
    name: String,
    config: ComputeConfig,
    nodes: RwLock<BTreeMap<String, Arc<NodeShared>>>,
    supervisor: ActorRef<SupMsg>,
    /// What model calls through its nodes cost, as chat handlers report them.
    models: super::usage::ModelUsage,
}

impl ComputeCluster {
    /// Starts an empty cluster with the default proxy settings.
    pub async fn start(name: impl Into<String>) -> Result<Self, Error> {
        Self::start_with(name, ComputeConfig::default(), RestartBudget::default()).await
    }

    /// Starts an empty cluster whose proxies check and trip by `config`, each restarted
    /// within `budget`.
    pub async fn start_with(
        name: impl Into<String>,
        config: ComputeConfig,
        budget: RestartBudget,
    ) -> Result<Self, Error> {
        config.validate()?;
        budget.validate()?;
        let (supervisor, _) = Actor::spawn(None, ComputeSupervisor, budget)
            .await
            .map_err(|e| Error::spawn("compute supervisor", e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                name: name.into(),
                config,
                nodes: RwLock::new(BTreeMap::new()),
                supervisor,
                models: Default::default(),
            }),
        })
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Adds a node and starts its proxy. Fails, naming the field, on a node that does not
    /// validate, an id already in the cluster, or an endpoint whose backend cannot start.
    pub async fn add_node(&self, node: ComputeNode) -> Result<(), Error> {
        node.validate()?;
        // The backend's client is built here first, so its error reaches the caller whole.
        super::backend::connect(&node, &self.inner.config)?;
        let id = node.id().to_string();
        let shared = Arc::new(NodeShared::new(node, self.inner.config.clone()));
        {
            let mut nodes = self.inner.nodes.write().expect("nodes");
            if nodes.contains_key(&id) {
                return Err(Error::invalid(
                    "node_id",
                    format!("`{id}` is already in cluster {}", self.inner.name),
                ));
            }
            if nodes.len() >= MAX_NODES {
                return Err(Error::invalid(
                    "node_id",
                    "the cluster holds 10000 nodes already",
                ));
            }
            nodes.insert(id.clone(), shared.clone());
        }
        let (tx, rx) = oneshot::channel();
        let started = match self
            .inner
            .supervisor
            .send_message(SupMsg::Start(shared, tx))
        {
            Ok(()) => rx
                .await
                .unwrap_or_else(|_| Err("compute supervisor stopped".into())),
            Err(_) => Err("compute supervisor stopped".into()),
        };
        if let Err(reason) = started {
            self.inner.nodes.write().expect("nodes").remove(&id);
            return Err(Error::Spawn {
                actor: "compute node proxy",
                reason,
            });
        }
        Ok(())
    }

    /// Removes a node: it takes nothing new, finishes what it runs and what waits for it,
    /// then its proxy stops. Fails on an unknown id.
    pub async fn remove_node(&self, id: &str) -> Result<(), Error> {
        let shared = self
            .inner
            .nodes
            .read()
            .expect("nodes")
            .get(id)
            .cloned()
            .ok_or_else(|| Error::invalid("node_id", format!("no node `{id}` in the cluster")))?;
        shared
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        // Every slot, taken after those running and waiting (the semaphore is fair): the
        // node's work is done.
        if let Ok(all) = shared
            .slots
            .acquire_many(shared.node.concurrency() as u32)
            .await
        {
            all.forget();
        }
        shared.slots.close();
        if let Some(proxy) = shared.proxy.read().expect("proxy").clone() {
            proxy.stop(Some("drained".into()));
        }
        self.inner.nodes.write().expect("nodes").remove(id);
        let _ = self
            .inner
            .supervisor
            .send_message(SupMsg::Forget(id.to_string()));
        Ok(())
    }

    /// Every node with its request latency histogram, by id (for the metrics endpoint).
    /// Counts one model call on node `node` (requests, failures, tokens, latency by node
    /// and model, shown by `/metrics` as `wrangle_llm_*`). Chat handlers call it.
    pub fn record_model_call(&self, node: &str, model: &str, call: super::ModelCall) {
        self.inner.models.record(node, model, call);
    }

    /// The model calls counted so far: `(node, model, counters)`, by node then model.
    pub fn model_usage(&self) -> Vec<(String, String, super::ModelCounters)> {
        self.inner.models.read()
    }

    pub(crate) fn with_latency(
        &self,
        mut f: impl FnMut(&ComputeNodeInfo, &crate::metrics::Histogram),
    ) {
        let nodes = self.inner.nodes.read().expect("nodes");
        for n in nodes.values() {
            f(&n.info(), &n.latency);
        }
    }

    /// True when the cluster has nodes and every one's circuit breaker is open: nothing
    /// can be served now (the coordinator then sheds new low-priority work).
    pub fn all_open(&self) -> bool {
        let nodes = self.inner.nodes.read().expect("nodes");
        !nodes.is_empty()
            && nodes
                .values()
                .all(|n| n.info().breaker.state == super::BreakerState::Open)
    }

    /// Every node, by id.
    pub fn list_nodes(&self) -> Vec<ComputeNodeInfo> {
        let nodes = self.inner.nodes.read().expect("nodes");
        nodes.values().map(|n| n.info()).collect()
    }

    /// The nodes that may receive work now: not being removed, with a circuit breaker that
    /// lets a request through (closed, or half-open with a probe to spare).
    pub fn get_available_nodes(&self) -> Vec<ComputeNodeInfo> {
        let nodes = self.inner.nodes.read().expect("nodes");
        nodes
            .values()
            .filter(|n| n.available())
            .map(|n| n.info())
            .collect()
    }

    /// One node by id.
    pub fn node(&self, id: &str) -> Option<ComputeNodeRef> {
        let nodes = self.inner.nodes.read().expect("nodes");
        nodes.get(id).map(|shared| ComputeNodeRef {
            shared: shared.clone(),
        })
    }

    /// The least-loaded available node that matches `selector` (work per slot, ties by
    /// id), or `None`. A node whose circuit breaker is open is skipped, so work goes to
    /// another node with the same labels.
    pub fn select_node(&self, selector: &Selector) -> Option<ComputeNodeRef> {
        let nodes = self.inner.nodes.read().expect("nodes");
        nodes
            .values()
            .filter(|n| n.available() && selector.matches(&n.node))
            .min_by(|a, b| a.load().total_cmp(&b.load()))
            .map(|shared| ComputeNodeRef {
                shared: shared.clone(),
            })
    }

    /// Checks every node now; answers whether each passed. A failed check counts towards
    /// the node's circuit breaker, which opens after `unhealthy_after` failures in a row
    /// (see [`ComputeConfig`]); a passing one ends the row, and half-opens a breaker that
    /// was open because the node failed its checks.
    pub async fn health_check(&self) -> BTreeMap<String, bool> {
        let nodes: Vec<Arc<NodeShared>> = self
            .inner
            .nodes
            .read()
            .expect("nodes")
            .values()
            .cloned()
            .collect();
        let checks = nodes.into_iter().map(|shared| async move {
            let healthy = match shared.mailbox() {
                Some(mailbox) => {
                    let (tx, rx) = oneshot::channel();
                    match mailbox.send(ProxyMsg::CheckNow(tx)) {
                        Ok(()) => rx.await.unwrap_or(false),
                        Err(_) => false,
                    }
                }
                None => false,
            };
            (shared.node.id().to_string(), healthy)
        });
        futures_util::future::join_all(checks)
            .await
            .into_iter()
            .collect()
    }

    /// Runs `request` on the least-loaded available node matching `selector`.
    pub async fn execute(
        &self,
        selector: &Selector,
        request: ComputeRequest,
    ) -> Result<ComputeResponse, ComputeError> {
        self.pick(selector)?.execute(request).await
    }

    /// Like [`execute`](Self::execute), with streamed output sent to `sink` as it comes.
    pub async fn execute_streaming(
        &self,
        selector: &Selector,
        request: ComputeRequest,
        sink: StreamSink,
    ) -> Result<ComputeResponse, ComputeError> {
        self.pick(selector)?.execute_streaming(request, sink).await
    }

    fn pick(&self, selector: &Selector) -> Result<ComputeNodeRef, ComputeError> {
        self.select_node(selector).ok_or_else(|| {
            ComputeError::new(
                ComputeErrorKind::NoNode,
                format!(
                    "no available node in cluster {} matches labels {:?} and requirements {:?}",
                    self.inner.name, selector.labels, selector.requirements
                ),
            )
        })
    }

    /// Stops every proxy (running requests fail as unavailable) and the supervisor.
    pub async fn stop(&self) {
        self.inner.nodes.write().expect("nodes").clear();
        let _ = self.inner.supervisor.stop_and_wait(None, None).await;
    }
}

/// One node of a cluster.
#[derive(Clone)]
pub struct ComputeNodeRef {
    shared: Arc<NodeShared>,
}

impl std::fmt::Debug for ComputeNodeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ComputeNodeRef")
            .field(&self.shared.node.id())
            .finish()
    }
}

impl ComputeNodeRef {
    /// Its id.
    pub fn id(&self) -> &str {
        self.shared.node.id()
    }

    /// What the cluster knows of it now.
    pub fn info(&self) -> ComputeNodeInfo {
        self.shared.info()
    }

    /// Runs a request on this node, waiting for a slot if all are taken.
    pub async fn execute(&self, request: ComputeRequest) -> Result<ComputeResponse, ComputeError> {
        self.send(request, None).await
    }

    /// Like [`execute`](Self::execute), with streamed output sent to `sink` as it comes.
    pub async fn execute_streaming(
        &self,
        request: ComputeRequest,
        sink: StreamSink,
    ) -> Result<ComputeResponse, ComputeError> {
        self.send(request, Some(sink)).await
    }

    async fn send(
        &self,
        request: ComputeRequest,
        sink: Option<StreamSink>,
    ) -> Result<ComputeResponse, ComputeError> {
        self.shared.execute(request, sink).await
    }

    /// Moves the node's breaker clock on by `d`: a cool-down ends without waiting for it.
    #[cfg(test)]
    pub(crate) fn pass_time(&self, d: std::time::Duration) {
        *self.shared.skew.lock().expect("skew") += d;
    }

    #[cfg(test)]
    pub(crate) fn crash(&self) {
        if let Some(m) = self.shared.mailbox() {
            let _ = m.send(ProxyMsg::Crash);
        }
    }
}
