//! Across machines: node processes join a coordinator over ractor_cluster, and their workers
//! pull from the coordinator's queue with the same credit protocol as local workers.
//!
//! - `gate`: the coordinator's side: the [`Cluster`] handle (node server, accept loop), and
//!   the gate actor (registry of nodes, liveness, leases over the network).
//! - `node`: the node's side: the [`Node`] handle, [`NodeConfig`], and the agent that stands
//!   in for the queue for the node's workers and reconnects.
//! - `wire`: the codec for every message that crosses machines (postcard, one module).
//! - `net`: node servers, TLS, connecting, session events.
//! - `admission`: wrangle's accept loop: limits on connections still handshaking.
//! - `config`: the coordinator's [`ClusterConfig`] and [`TlsFiles`].
//! - `stats`: the cluster's counters ([`ClusterStats`]) and the remote nodes' load.
//!
//! ractor_cluster gives authenticated sessions and process groups across them; it has no
//! liveness timeout and no reconnect. Both are here: each side gives the other up after
//! `node_timeout` of silence (the coordinator then hands the node's leases out again), and
//! a node whose coordinator went away connects again with backoff.

mod admission;
mod config;
mod gate;
mod net;
mod node;
mod stats;
mod wire;

pub use self::config::{ClusterConfig, TlsFiles};
pub use self::gate::{NodeStatus, RemoteNode};
pub use self::node::{LinkStatus, Node, NodeConfig};
pub use self::stats::ClusterStats;

pub(crate) use self::gate::Cluster;
pub(crate) use self::stats::RemoteLoadCell;
