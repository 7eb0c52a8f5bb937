//! Across machines: node processes join a coordinator over ractor_cluster, and their workers
//! pull from the coordinator's queue with the same credit protocol as local workers.
//!
//! - `wire`: the codec for every message that crosses machines (postcard, one module).
//! - `gate`: the coordinator's side (registry of nodes, liveness, leases over the network).
//! - `agent`: the node's side (stands in for the queue for the node's workers; reconnects).
//! - `net`: node servers, TLS, connecting, session events.
//!
//! ractor_cluster gives authenticated sessions and process groups across them; it has no
//! liveness timeout and no reconnect. Both are here: each side gives the other up after
//! `node_timeout` of silence (the coordinator then hands the node's leases out again), and
//! a node whose coordinator went away connects again with backoff.

mod admission;
mod agent;
mod gate;
mod net;
mod wire;

pub use agent::LinkStatus;
pub use gate::RemoteNode;

pub(crate) use agent::AgentMsg;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};

use self::agent::{Agent, AgentArgs};
use self::gate::{Gate, GateArgs, GateMsg};
use crate::error::Error;
use crate::events::EventBus;
use crate::handler::HandlerRegistry;
use crate::pool::{PoolArgs, PoolConfig, PoolRef};
use crate::queue::QueueRef;
use crate::worker::{Uplink, UplinkRef, WorkerCall, WorkerConfig};

/// Where a node stands with the coordinator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Registered and heartbeating: its workers take tasks.
    Online,
    /// Given up (connection closed or silent past the timeout); its tasks went back to the
    /// queue. It becomes online again when it re-joins.
    Lost,
    /// Left on purpose.
    Left,
}

/// TLS for the coordinator's listener: a PEM certificate chain and its private key.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The coordinator's listener for nodes.
#[derive(Clone, PartialEq)]
pub struct ClusterConfig {
    /// Where to listen (`0.0.0.0:7450` for every interface). No default: joining is opt-in.
    pub listen: SocketAddr,
    /// The shared secret nodes must present (ractor_cluster's magic cookie).
    pub cookie: String,
    /// The coordinator's node name. Default `coordinator`.
    pub name: String,
    /// TLS for node sessions; `None` (default) leaves them in clear text.
    pub tls: Option<TlsFiles>,
    /// How often nodes heartbeat. Default 300 ms.
    pub heartbeat_interval: Duration,
    /// Silence after which a node is given up and its tasks go elsewhere. Default 1.5 s,
    /// so a frozen or cut-off node's tasks run elsewhere within 2 s; raise it on networks
    /// that stall for longer (a node given up by mistake re-joins, and its tasks in flight
    /// run twice).
    pub node_timeout: Duration,
    /// Joins per node per minute past which its re-joins are refused for a while (a
    /// flapping node). Default 10.
    pub max_joins_per_minute: usize,
    /// Time a new connection has to pass the cookie challenge (the TLS handshake
    /// included) before it is closed. Default 5 s.
    pub handshake_timeout: Duration,
    /// Connections that may be handshaking at once; more are closed at once. Default 64.
    pub max_pending_handshakes: usize,
}

impl std::fmt::Debug for ClusterConfig {
    /// Every field but secrets, which show as `<redacted>` (they must not reach a log).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("listen", &self.listen)
            .field("cookie", &"<redacted>")
            .field("name", &self.name)
            .field("tls", &self.tls)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("node_timeout", &self.node_timeout)
            .field("max_joins_per_minute", &self.max_joins_per_minute)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_pending_handshakes", &self.max_pending_handshakes)
            .finish()
    }
}

impl ClusterConfig {
    /// A listener on `listen` with `cookie` and the defaults.
    pub fn new(listen: SocketAddr, cookie: impl Into<String>) -> Self {
        Self {
            listen,
            cookie: cookie.into(),
            name: "coordinator".into(),
            tls: None,
            heartbeat_interval: Duration::from_millis(300),
            node_timeout: Duration::from_millis(1500),
            max_joins_per_minute: 10,
            handshake_timeout: Duration::from_secs(5),
            max_pending_handshakes: 64,
        }
    }

    /// Checks for values the listener cannot run with.
    pub fn validate(&self) -> Result<(), Error> {
        validate_common(&self.cookie, &self.name, self.heartbeat_interval)?;
        if self.node_timeout <= self.heartbeat_interval {
            return Err(Error::invalid(
                "cluster.node_timeout",
                "must be longer than the heartbeat interval",
            ));
        }
        if self.handshake_timeout.is_zero() {
            return Err(Error::invalid(
                "cluster.handshake_timeout",
                "must be greater than zero",
            ));
        }
        if self.max_pending_handshakes == 0 {
            return Err(Error::invalid(
                "cluster.max_pending_handshakes",
                "must be at least 1",
            ));
        }
        if self.max_joins_per_minute == 0 {
            return Err(Error::invalid(
                "cluster.max_joins_per_minute",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

fn validate_common(cookie: &str, name: &str, heartbeat: Duration) -> Result<(), Error> {
    if cookie.is_empty() {
        return Err(Error::invalid("cookie", "must not be empty"));
    }
    if name.is_empty() || name.contains(['/', '@']) || name.chars().any(char::is_whitespace) {
        return Err(Error::invalid(
            "name",
            format!("`{name}` must be non-empty, without `/`, `@` or spaces"),
        ));
    }
    if heartbeat.is_zero() {
        return Err(Error::invalid(
            "heartbeat_interval",
            "must be greater than zero",
        ));
    }
    Ok(())
}

/// The cluster's counters, as `/stats` and `/metrics` show them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ClusterStats {
    /// Nodes online now.
    pub online: u64,
    /// Joins accepted (first joins and re-joins).
    pub joins: u64,
    /// Times a node was given up (connection closed or silent).
    pub lost: u64,
    /// Joins refused (a flapping node, a name taken by the coordinator).
    pub refused: u64,
    /// Frames from peers that did not decode, dropped.
    pub bad_frames: u64,
    /// Connections closed before authenticating: over the limit of pending handshakes,
    /// or silent past the handshake timeout.
    pub handshakes_refused: u64,
    /// Frames refused because they named a node other than the one whose session they
    /// came on (a node speaking, reporting or leaving for another).
    pub forged_frames: u64,
    /// Times a node asked for credits past its workers' declared slots or its declared
    /// capacity, and got only those.
    pub credits_clamped: u64,
}

/// The counters behind [`ClusterStats`], written by the gate.
#[derive(Debug, Default)]
pub(crate) struct ClusterCounters {
    pub(crate) online: std::sync::atomic::AtomicU64,
    pub(crate) joins: std::sync::atomic::AtomicU64,
    pub(crate) lost: std::sync::atomic::AtomicU64,
    pub(crate) refused: std::sync::atomic::AtomicU64,
    pub(crate) bad_frames: std::sync::atomic::AtomicU64,
    pub(crate) handshakes_refused: std::sync::atomic::AtomicU64,
    pub(crate) forged_frames: std::sync::atomic::AtomicU64,
    pub(crate) credits_clamped: std::sync::atomic::AtomicU64,
}

impl ClusterCounters {
    pub(crate) fn bump(counter: &std::sync::atomic::AtomicU64) {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn snapshot(&self) -> ClusterStats {
        let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        ClusterStats {
            online: get(&self.online),
            joins: get(&self.joins),
            lost: get(&self.lost),
            refused: get(&self.refused),
            bad_frames: get(&self.bad_frames),
            handshakes_refused: get(&self.handshakes_refused),
            forged_frames: get(&self.forged_frames),
            credits_clamped: get(&self.credits_clamped),
        }
    }
}

/// The summed load of online nodes, as the autoscaler reads it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct RemoteLoad {
    pub(crate) workers: usize,
    pub(crate) busy_slots: u64,
    pub(crate) total_slots: u64,
    pub(crate) mailbox: u64,
}

/// Shared between the gate (which writes it on heartbeats) and the coordinator actor.
pub(crate) type RemoteLoadCell = Arc<std::sync::RwLock<RemoteLoad>>;

/// The coordinator's side of the cluster: its node server and its gate.
#[derive(Clone, Debug)]
pub(crate) struct Cluster {
    server: ActorRef<ractor_cluster::NodeServerMessage>,
    /// Replaced when the coordinator restarts a failed gate.
    gate: Arc<std::sync::RwLock<ActorRef<GateMsg>>>,
    /// What a new gate is started with.
    spec: Arc<GateSpec>,
    _events: Arc<net::SessionEvents>,
    /// wrangle's accept loop in front of the node server.
    accept: Arc<AbortOnDrop>,
}

/// A task aborted when the last handle to it goes.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::fmt::Debug for net::SessionEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionEvents")
    }
}

/// Everything a gate is started with, kept to start it again.
#[derive(Debug)]
struct GateSpec {
    config: ClusterConfig,
    queue: QueueRef,
    events: EventBus,
    load: RemoteLoadCell,
    remote_types: gate::RemoteTypes,
    counters: Arc<ClusterCounters>,
    server: ActorRef<ractor_cluster::NodeServerMessage>,
    /// The listener's authenticated sessions, shared by every gate started.
    sessions: net::SessionTable,
}

impl GateSpec {
    async fn spawn(&self, supervisor: ractor::ActorCell) -> Result<ActorRef<GateMsg>, Error> {
        let c = &self.config;
        let args = GateArgs {
            name: c.name.as_str().into(),
            queue: self.queue.clone(),
            events: self.events.clone(),
            heartbeat: c.heartbeat_interval,
            timeout: c.node_timeout,
            max_joins_per_minute: c.max_joins_per_minute,
            server: Some(self.server.clone()),
            sessions: self.sessions.clone(),
            remote_types: self.remote_types.clone(),
            load: self.load.clone(),
            counters: self.counters.clone(),
        };
        let (gate, _) = ractor::Actor::spawn_linked(None, Gate, args, supervisor)
            .await
            .map_err(|e| Error::spawn("cluster gate", e))?;
        Ok(gate)
    }
}

impl Cluster {
    /// Starts listening for nodes; their workers attach to `queue`. The gate is a child
    /// of `supervisor` (the coordinator), which starts it again if it fails.
    pub(crate) async fn start(
        config: &ClusterConfig,
        queue: QueueRef,
        events: EventBus,
        load: RemoteLoadCell,
        supervisor: ractor::ActorCell,
    ) -> Result<Self, Error> {
        config.validate()?;
        let tls = match &config.tls {
            Some(files) => Some(net::tls_acceptor(&files.cert, &files.key)?),
            None => None,
        };
        // wrangle accepts on the address nodes join (see `admission`); ractor_cluster's own
        // listener gets an ephemeral loopback port, with the same TLS.
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| {
                Error::invalid(
                    "cluster.listen",
                    format!("cannot listen on {}: {e}", config.listen),
                )
            })?;
        let server = net::start_server(
            &config.name,
            SocketAddr::from(([127, 0, 0, 1], 0)),
            &config.cookie,
            tls.clone().map(ractor_cluster::IncomingEncryptionMode::Tls),
            ractor_cluster::DEFAULT_MAX_INBOUND_FRAME_SIZE,
        )
        .await?;
        let spec = Arc::new(GateSpec {
            config: config.clone(),
            queue,
            events,
            load,
            remote_types: Default::default(),
            counters: Default::default(),
            server: server.clone(),
            sessions: net::SessionTable::default(),
        });
        let gate = Arc::new(std::sync::RwLock::new(spec.spawn(supervisor).await?));
        let to_gate = gate.clone();
        let pending = admission::Pending::default();
        let watcher = net::SessionEvents::subscribe(
            &server,
            spec.sessions.clone(),
            pending.clone(),
            move |closed| {
                let gate = to_gate.read().unwrap_or_else(|e| e.into_inner()).clone();
                let _ = gate.cast(GateMsg::SessionClosed {
                    peer: closed.peer,
                    session: closed.session,
                    addr: closed.addr,
                    authenticated: closed.authenticated,
                });
            },
        );
        // The subscription is already in the server's mailbox: it is in place before any
        // connection accepted here reaches the server.
        let accept = admission::serve(
            listener,
            server.clone(),
            tls,
            admission::Limits {
                handshake_timeout: config.handshake_timeout,
                max_pending: config.max_pending_handshakes,
            },
            pending,
            spec.counters.clone(),
        );
        tracing::info!(listen = %config.listen, tls = config.tls.is_some(), "listening for nodes");
        Ok(Self {
            server,
            gate,
            spec,
            _events: Arc::new(watcher),
            accept: Arc::new(AbortOnDrop(accept)),
        })
    }

    /// The cluster's counters.
    pub(crate) fn stats(&self) -> ClusterStats {
        self.spec.counters.snapshot()
    }

    fn gate(&self) -> ActorRef<GateMsg> {
        self.gate.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// True when `actor` is this cluster's gate.
    pub(crate) fn is_gate(&self, actor: ractor::ActorId) -> bool {
        self.gate().get_id() == actor
    }

    /// Starts a new gate after the last one failed. Nodes are not lost: the new gate asks
    /// each node that speaks to it to say hello again.
    pub(crate) async fn restart_gate(&self, supervisor: ractor::ActorCell) -> Result<(), Error> {
        let gate = self.spec.spawn(supervisor).await?;
        *self.gate.write().unwrap_or_else(|e| e.into_inner()) = gate;
        Ok(())
    }

    /// Task types that online nodes serve.
    pub(crate) fn remote_types(&self) -> Vec<Arc<str>> {
        self.spec
            .remote_types
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// The nodes that have joined, with their state and load.
    pub(crate) async fn nodes(&self) -> Result<Vec<RemoteNode>, Error> {
        ractor::call_t!(self.gate(), GateMsg::Nodes, 5_000)
            .map_err(|e| Error::invalid("cluster", format!("gate unavailable: {e}")))
    }

    /// Stops the gate and the listener (nodes see the coordinator go and reconnect).
    pub(crate) async fn stop(&self) {
        let _ = self
            .gate()
            .stop_and_wait(None, Some(Duration::from_secs(2)))
            .await;
        self.accept.0.abort();
        self.server.stop(None);
    }
}

/// Settings of a node process.
#[derive(Clone, PartialEq)]
pub struct NodeConfig {
    /// The coordinator's cluster address, `host:port`.
    pub coordinator: String,
    /// The shared secret (the coordinator's cookie).
    pub cookie: String,
    /// This node's name, unique in the cluster; its workers are `name/w-N`. Default
    /// `node-<random>`.
    pub name: String,
    /// Labels its workers carry (`gpu=a100`, `region=eu`).
    pub labels: Vec<String>,
    /// Workers in its pool. Default 4.
    pub workers: usize,
    /// Settings of each worker (slots, timeouts). Its `labels` are replaced by the node's.
    pub worker: WorkerConfig,
    /// Where the node's own server listens. Default `127.0.0.1:0` (it only connects out).
    pub listen: SocketAddr,
    /// The CA certificate (PEM) to trust when the coordinator uses TLS; `None` connects in
    /// clear text.
    pub tls_ca: Option<PathBuf>,
    /// The name the coordinator's certificate is for. Default: the host of `coordinator`.
    pub tls_server_name: Option<String>,
    /// Heartbeat period until the coordinator sets its own. Default 1 s.
    pub heartbeat_interval: Duration,
    /// First reconnect delay. Default 200 ms.
    pub reconnect_min: Duration,
    /// Longest reconnect delay. Default 5 s.
    pub reconnect_max: Duration,
}

impl std::fmt::Debug for NodeConfig {
    /// Every field but secrets, which show as `<redacted>` (they must not reach a log).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("coordinator", &self.coordinator)
            .field("cookie", &"<redacted>")
            .field("name", &self.name)
            .field("labels", &self.labels)
            .field("workers", &self.workers)
            .field("worker", &self.worker)
            .field("listen", &self.listen)
            .field("tls_ca", &self.tls_ca)
            .field("tls_server_name", &self.tls_server_name)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .finish()
    }
}

impl NodeConfig {
    /// A node joining `coordinator` with `cookie`, and the defaults.
    pub fn new(coordinator: impl Into<String>, cookie: impl Into<String>) -> Self {
        Self {
            coordinator: coordinator.into(),
            cookie: cookie.into(),
            name: format!("node-{:06x}", fastrand::u32(..0x100_0000)),
            labels: Vec::new(),
            workers: 4,
            worker: WorkerConfig::default(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls_ca: None,
            tls_server_name: None,
            heartbeat_interval: Duration::from_secs(1),
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(5),
        }
    }

    /// Checks for values a node cannot run with.
    pub fn validate(&self) -> Result<(), Error> {
        validate_common(&self.cookie, &self.name, self.heartbeat_interval)?;
        if self
            .coordinator
            .rsplit_once(':')
            .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
        {
            return Err(Error::invalid(
                "coordinator",
                format!("`{}` is not `host:port`", self.coordinator),
            ));
        }
        if self.workers == 0 {
            return Err(Error::invalid("workers", "must be at least 1"));
        }
        if self.reconnect_min.is_zero() || self.reconnect_max < self.reconnect_min {
            return Err(Error::invalid(
                "reconnect_min",
                "must be greater than zero and at most reconnect_max",
            ));
        }
        let worker = WorkerConfig {
            labels: self.labels.clone(),
            ..self.worker.clone()
        };
        worker.validate()
    }
}

/// A running node: a pool of workers pulling from a coordinator's queue over the network.
///
/// ```no_run
/// use wrangle::{handler_fn, HandlerRegistry, Node, NodeConfig, TaskError};
///
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() -> Result<(), wrangle::Error> {
/// let handlers = HandlerRegistry::new();
/// handlers.register("shout", handler_fn(|_ctx, s: String| async move {
///     Ok::<_, TaskError>(s.to_uppercase())
/// }));
/// let mut config = NodeConfig::new("10.0.0.5:7450", "secret");
/// config.labels = vec!["gpu=a100".into()];
/// let node = Node::join(config, handlers).await?;
/// // ... until it is time to go:
/// node.stop(true).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Node {
    name: Arc<str>,
    agent: ActorRef<AgentMsg>,
    pool: PoolRef,
    server: ActorRef<ractor_cluster::NodeServerMessage>,
}

impl Node {
    /// Starts the node: its server, its agent (which connects to the coordinator and keeps
    /// reconnecting), and its pool of workers with `handlers`.
    pub async fn join(config: NodeConfig, handlers: HandlerRegistry) -> Result<Self, Error> {
        config.validate()?;
        let tls = match &config.tls_ca {
            Some(ca) => {
                let host = config
                    .tls_server_name
                    .clone()
                    .unwrap_or_else(|| host_of(&config.coordinator).to_string());
                let name = rustls_pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| Error::invalid("tls_server_name", format!("`{host}`: {e}")))?;
                Some((net::tls_connector(ca)?, name))
            }
            None => None,
        };
        let server = net::start_server(
            &config.name,
            config.listen,
            &config.cookie,
            None,
            ractor_cluster::DEFAULT_MAX_INBOUND_FRAME_SIZE,
        )
        .await?;
        let connector = net::Connector {
            server: server.clone(),
            address: config.coordinator.clone(),
            tls,
            timeout: Duration::from_secs(3),
        };
        let hello = wire::Hello {
            instance: fastrand::u64(..),
            labels: config.labels.clone(),
            task_types: handlers
                .task_types()
                .iter()
                .map(|t| t.to_string())
                .collect(),
            address: config.listen.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            capacity: (config.workers as u64 * u64::from(config.worker.max_concurrent_tasks))
                .min(u64::from(u32::MAX)) as u32,
        };
        let name: Arc<str> = config.name.as_str().into();
        let args = AgentArgs {
            name: name.clone(),
            hello,
            connector,
            heartbeat: config.heartbeat_interval,
            slots: config.worker.max_concurrent_tasks,
            reconnect_min: config.reconnect_min,
            reconnect_max: config.reconnect_max,
        };
        let (agent, _) = ractor::Actor::spawn(None, Agent, args)
            .await
            .map_err(|e| Error::spawn("node agent", e))?;
        let pool_config = PoolConfig {
            name: config.name.clone(),
            min_workers: config.workers,
            max_workers: config.workers,
            worker: WorkerConfig {
                labels: config.labels.clone(),
                ..config.worker.clone()
            },
            ..PoolConfig::default()
        };
        let (pool, _) = PoolRef::spawn(
            PoolArgs {
                config: pool_config,
                handlers,
                queue: UplinkRef::new(AgentLink(agent.clone())),
                registry: Default::default(),
                events: Default::default(),
                depth: Default::default(),
            },
            None,
        )
        .await?;
        let _ = agent.cast(AgentMsg::Pool(pool.clone()));
        Ok(Self {
            name,
            agent,
            pool,
            server,
        })
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's pool.
    pub fn pool(&self) -> &PoolRef {
        &self.pool
    }

    /// The link to the coordinator.
    pub async fn status(&self) -> Result<LinkStatus, Error> {
        ractor::call_t!(self.agent, AgentMsg::Status, 5_000)
            .map_err(|e| Error::invalid("node", format!("agent unavailable: {e}")))
    }

    /// Leaves the cluster. Graceful: the workers take no new tasks and finish the running
    /// ones first, then the node tells the coordinator it is leaving. Otherwise running
    /// attempts are cancelled at once (the coordinator runs them elsewhere).
    pub async fn stop(&self, graceful: bool) -> Result<(), Error> {
        let stopped = self.pool.stop(graceful).await;
        let leave = |reply: RpcReplyPort<()>| AgentMsg::Leave(reply);
        let _ = ractor::call_t!(self.agent, leave, 2_000);
        let _ = self
            .agent
            .stop_and_wait(None, Some(Duration::from_secs(2)))
            .await;
        self.server.stop(None);
        stopped
    }
}

fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The node's workers' way to the coordinator's queue: through the agent.
#[derive(Clone, Debug)]
pub(crate) struct AgentLink(ActorRef<AgentMsg>);

impl Uplink for AgentLink {
    fn call(&self, call: WorkerCall) {
        let _ = self.0.cast(AgentMsg::Worker(call));
    }
}
