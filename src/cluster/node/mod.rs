//! The node's side of the cluster: a node process joins a coordinator (the first of its
//! coordinator addresses that accepts it, moving on to the next when it is lost), and its
//! workers pull from the coordinator's queue through the node's agent.
//!
//! - this file: the [`Node`] handle, which starts the node's server, agent and pool.
//! - `config`: [`NodeConfig`].
//! - `autoscale`: the node's own autoscaler (with `max_workers`).
//! - `agent`: the agent actor, its messages and its state.
//! - `link`: the agent's link to its coordinator (connect, hello, heartbeat, reconnect).
//! - `rotation`: which coordinator address the agent tries next, and the backoff between
//!   whole cycles through them.
//! - `relay`: the agent as its workers' uplink (`AgentLink`): their calls batched up to
//!   the gate, leases and cancellations down to them.
//! - `oversized`: results and messages too big for a frame, made to fit.
//! - `progress`: attempts' progress, at most 20 reports a second per task.

mod agent;
mod autoscale;
mod config;
mod link;
mod oversized;
mod progress;
mod relay;
mod rotation;

pub use self::config::NodeConfig;
pub use self::link::LinkStatus;

pub(crate) use self::agent::{agent_group, AgentMsg};

use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorRef, RpcReplyPort};

use self::agent::{Agent, AgentArgs};
use self::relay::AgentLink;
use super::{net, wire};
use crate::error::Error;
use crate::handler::HandlerRegistry;
use crate::pool::{PoolArgs, PoolConfig, PoolRef};
use crate::worker::{UplinkRef, WorkerConfig};

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
    /// The pool's autoscaler (with `max_workers`), stopped with the node.
    autoscaler: Option<Arc<AbortOnDrop>>,
}

/// A task aborted when the last handle to it is dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Node {
    /// Starts the node: its server, its agent (which connects to the coordinator and keeps
    /// reconnecting), and its pool of workers with `handlers`.
    pub async fn join(config: NodeConfig, handlers: HandlerRegistry) -> Result<Self, Error> {
        config.validate()?;
        // With TLS, each coordinator address's certificate is checked against
        // `tls_server_name`, or else the host of that address.
        let tls = match &config.tls_ca {
            Some(ca) => Some(net::tls_connector(ca)?),
            None => None,
        };
        let mut targets = Vec::new();
        for address in config.coordinators() {
            let tls = match &tls {
                Some(connector) => {
                    let host = config
                        .tls_server_name
                        .clone()
                        .unwrap_or_else(|| host_of(address).to_string());
                    let name = rustls_pki_types::ServerName::try_from(host.clone())
                        .map_err(|e| Error::invalid("tls_server_name", format!("`{host}`: {e}")))?;
                    Some((connector.clone(), name))
                }
                None => None,
            };
            targets.push((address.to_string(), tls));
        }
        let server = net::start_server(
            &config.name,
            config.listen,
            &config.cookie,
            None,
            ractor_cluster::DEFAULT_MAX_INBOUND_FRAME_SIZE,
        )
        .await?;
        let connectors = targets
            .into_iter()
            .map(|(address, tls)| net::Connector {
                server: server.clone(),
                address,
                tls,
                timeout: Duration::from_secs(3),
            })
            .collect();
        let max_workers = config.max_workers.unwrap_or(config.workers);
        let backlog = Arc::new(std::sync::atomic::AtomicU64::new(0));
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
            capacity: (max_workers as u64 * u64::from(config.worker.max_concurrent_tasks))
                .min(u64::from(u32::MAX)) as u32,
        };
        let name: Arc<str> = config.name.as_str().into();
        let args = AgentArgs {
            name: name.clone(),
            hello,
            connectors,
            heartbeat: config.heartbeat_interval,
            slots: config.worker.max_concurrent_tasks,
            reconnect_min: config.reconnect_min,
            reconnect_max: config.reconnect_max,
            backlog: backlog.clone(),
        };
        let (agent, _) = ractor::Actor::spawn(None, Agent, args)
            .await
            .map_err(|e| Error::spawn("node agent", e))?;
        let pool_config = PoolConfig {
            name: config.name.clone(),
            min_workers: config.workers,
            max_workers,
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
        let autoscaler = (max_workers > config.workers).then(|| {
            autoscale::spawn(
                pool.clone(),
                backlog,
                (config.workers, max_workers),
                config.worker.max_concurrent_tasks,
                config.scale_cooldown,
                config.heartbeat_interval.max(Duration::from_millis(200)),
            )
        });
        Ok(Self {
            name,
            agent,
            pool,
            server,
            autoscaler: autoscaler.map(|h| Arc::new(AbortOnDrop(h))),
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
        if let Some(scaler) = &self.autoscaler {
            scaler.0.abort();
        }
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

#[cfg(test)]
mod tests;
