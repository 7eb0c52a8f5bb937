//! The coordinator's side of the cluster as the coordinator holds it: the node server,
//! wrangle's accept loop in front of it, and the gate, which the coordinator starts again
//! when it fails.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;

use super::nodes::RemoteNode;
use super::{Gate, GateArgs, GateMsg, RemoteTypes};
use crate::cluster::stats::{ClusterCounters, ClusterStats, RemoteLoadCell};
use crate::cluster::{admission, net, ClusterConfig};
use crate::error::Error;
use crate::events::EventBus;
use crate::queue::QueueRef;

/// The coordinator's side of the cluster: its node server and its gate.
#[derive(Clone, Debug)]
pub(crate) struct Cluster {
    /// The node server the nodes' sessions run on.
    server: ActorRef<ractor_cluster::NodeServerMessage>,
    /// Replaced when the coordinator restarts a failed gate.
    gate: Arc<std::sync::RwLock<ActorRef<GateMsg>>>,
    /// What a new gate is started with.
    spec: Arc<GateSpec>,
    /// Session-closed notices for the gate, while the cluster runs.
    _events: Arc<net::SessionEvents>,
    /// wrangle's accept loop in front of the node server.
    accept: Arc<AbortOnDrop>,
    /// The listener's address.
    addr: SocketAddr,
}

/// A task aborted when the last handle to it goes.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Everything a gate is started with, kept to start it again.
#[derive(Debug)]
struct GateSpec {
    config: ClusterConfig,
    queue: QueueRef,
    events: EventBus,
    load: RemoteLoadCell,
    remote_types: RemoteTypes,
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
        let addr = listener.local_addr().map_err(|e| {
            Error::invalid(
                "cluster.listen",
                format!("cannot read the bound address: {e}"),
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
            addr,
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

    /// Drains node `node` (`on`: it gets no new task) or undoes it.
    pub(crate) async fn drain(&self, node: &str, on: bool) -> Result<(), Error> {
        let node = node.to_string();
        ractor::call_t!(
            self.gate(),
            |reply| GateMsg::Drain { node, on, reply },
            5_000
        )
        .map_err(|e| Error::invalid("cluster", format!("gate unavailable: {e}")))?
        .map_err(|e| Error::invalid("node", e))
    }

    /// The cookie nodes present (for the nodes a launcher starts).
    pub(crate) fn cookie(&self) -> &str {
        &self.spec.config.cookie
    }

    /// Where nodes join: the listener's address (its port chosen when it was 0).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
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
