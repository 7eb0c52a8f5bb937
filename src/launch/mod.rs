//! Node launchers: the coordinator starts, drains and stops whole wrangle nodes.
//!
//! A **node group** ([`NodeGroupConfig`]) names a [`Launcher`] (where its nodes run: a local
//! child process, a Docker container, a program over SSH, a Kubernetes pod), the labels and
//! task types its nodes provide, and its bounds. Each tick the [`NodeGroups`] actor reads
//! the queue's backlog per routing class and the gate's view of the nodes, asks the pure
//! planner ([`plan`]) what to do, and carries it out through the launcher:
//!
//! - **up** when tasks that only this group can serve wait (unroutable ones included), or
//!   the group is below `min_nodes`; a launched node that has not joined within
//!   `join_timeout` is terminated, and launch failures back off exponentially;
//! - **down** through `idle → draining → terminated`: a node with nothing leased or running
//!   for `idle_timeout` is drained (the gate gives it no new task), and terminated only once
//!   nothing is in flight on it. A node with work in flight is never terminated by the
//!   autoscaler: a drain that does not empty within `drain_timeout` is undone.
//! - **reconciled** against [`Launcher::list`]: a node the provider lost is forgotten (and
//!   replaced while the group needs it); a resource that carries this group's label but that
//!   the planner does not know is adopted if its node is online, else terminated after
//!   `join_timeout`. Nothing without the label is ever touched.
//!
//! Every decision is an event ([`ScalingEvent`]): on the event bus, kept for the API
//! (`GET /scale/history`), and written to the store's `scaling_events` table.
//!
//! - `config`: [`NodeGroupConfig`] and its checks.
//! - `plan`: the pure state machine of one group (unit and property tests, paused time).
//! - `actor`: the actor that ticks, calls the launchers and records events; [`NodeGroups`]
//!   is its handle.
//! - `observe`: what a tick reads from the gate's nodes and the queue's backlog.
//! - `status`: what the API shows of a group ([`GroupStatus`]).
//! - `process`: [`ProcessLauncher`], nodes as local child processes.
//! - `docker`: [`DockerLauncher`], nodes as containers.
//! - `ssh`: [`SshLauncher`], nodes started over SSH on a compute cluster's hosts.
//! - `kubernetes`: [`KubernetesLauncher`], nodes as pods, the cookie in a Secret.

mod actor;
mod config;
mod docker;
mod kubernetes;
mod observe;
mod plan;
mod process;
mod ssh;
mod status;

pub use crate::scaling::ScalingEvent;
pub use actor::NodeGroups;
pub(crate) use actor::{ServedElsewhere, Start};
pub use config::NodeGroupConfig;
pub use docker::DockerLauncher;
pub use kubernetes::KubernetesLauncher;
pub use plan::{Counts, MemberState};
pub use process::ProcessLauncher;
pub use ssh::SshLauncher;
pub use status::{GroupStatus, MemberStatus};

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::BoxFuture;

/// The provider label every launched resource carries (`wrangle.group=<group>`), where the
/// provider has labels (Docker, Kubernetes); a process launcher tags its children's
/// environment with it instead.
pub const GROUP_LABEL: &str = "wrangle.group";
/// The provider label naming the node a resource runs (`wrangle.node=<name>`).
pub const NODE_LABEL: &str = "wrangle.node";

/// What a launcher is asked to start: one node program that joins the coordinator.
///
/// The node program reads everything from its environment (the same `WRANGLE_*` variables
/// as its flags): a launcher passes [`NodeLaunch::env`] through as it is. The cookie is in
/// it: a launcher must not put it on a command line or in a URL.
#[derive(Clone)]
pub struct NodeLaunch {
    /// The node's name (`GROUP-XXXXXXXX`): it joins under it, and the planner finds it by it.
    pub name: String,
    /// The group it belongs to.
    pub group: String,
    /// The node program's environment: `WRANGLE_JOIN`, `WRANGLE_COOKIE`,
    /// `WRANGLE_NODE_NAME`, `WRANGLE_LABELS`, plus the group's own settings.
    pub env: BTreeMap<String, String>,
    /// Labels for the provider's resource: [`GROUP_LABEL`] and [`NODE_LABEL`].
    pub resource_labels: BTreeMap<String, String>,
}

impl std::fmt::Debug for NodeLaunch {
    /// Every field but the environment's values, which may hold the cookie.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeLaunch")
            .field("name", &self.name)
            .field("group", &self.group)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("resource_labels", &self.resource_labels)
            .finish()
    }
}

/// A resource a provider runs, as [`Launcher::list`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    /// The provider's id for it (a pid, a container id, a pod name, `host:pid`).
    pub id: String,
    /// The node it runs, from its [`NODE_LABEL`].
    pub node: String,
}

/// Why a launcher call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{launcher} launcher: {reason}")]
pub struct LaunchError {
    /// Which kind of launcher (`process`, `docker`, `ssh`, `kubernetes`).
    pub launcher: &'static str,
    /// What went wrong, without secrets.
    pub reason: String,
}

impl LaunchError {
    /// An error of launcher `launcher`.
    pub fn new(launcher: &'static str, reason: impl Into<String>) -> Self {
        Self {
            launcher,
            reason: reason.into(),
        }
    }
}

/// Where a group's nodes run: something that can start a node program, stop it, and say
/// what it runs. Implementations: [`ProcessLauncher`] here; Docker, SSH and Kubernetes
/// beside it.
///
/// Calls may take seconds (an image starting, an SSH login); the planner never waits on
/// them in its tick, and bounds each by its group's `join_timeout`.
pub trait Launcher: Send + Sync + 'static {
    /// Which kind (`process`, `docker`, `ssh`, `kubernetes`), for messages and events.
    fn kind(&self) -> &'static str;

    /// Starts one node program; answers the provider's id for it once it is started (not
    /// once the node joined: the planner watches for that).
    fn launch(&self, node: NodeLaunch) -> BoxFuture<'_, Result<String, LaunchError>>;

    /// Stops resource `id`: asks it to stop (SIGTERM, `docker stop`, a pod's deletion with
    /// a grace period), and forces it after `grace`. Answers once it is gone; a resource
    /// that is already gone is not an error.
    fn terminate(&self, id: String, grace: Duration) -> BoxFuture<'_, Result<(), LaunchError>>;

    /// The resources of group `group` the provider runs now: only those that carry the
    /// group's [`GROUP_LABEL`] (or were started by this launcher, for local processes).
    fn list(&self, group: String) -> BoxFuture<'_, Result<Vec<Resource>, LaunchError>>;
}

impl std::fmt::Debug for dyn Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Launcher({})", self.kind())
    }
}

/// A new node's name in group `group`: the group's name and eight random hex digits.
pub(crate) fn node_name(group: &str) -> String {
    format!("{group}-{:08x}", fastrand::u32(..))
}

/// The environment and resource labels of a new node of group `group`.
pub(crate) fn launch_request(
    group: &NodeGroupConfig,
    join: &str,
    cookie: &str,
    name: String,
) -> NodeLaunch {
    let mut env = group.env.clone();
    env.insert("WRANGLE_JOIN".into(), join.to_string());
    env.insert("WRANGLE_COOKIE".into(), cookie.to_string());
    env.insert("WRANGLE_NODE_NAME".into(), name.clone());
    if !group.labels.is_empty() {
        env.insert("WRANGLE_LABELS".into(), group.labels.join(","));
    }
    let resource_labels = BTreeMap::from([
        (GROUP_LABEL.to_string(), group.name.clone()),
        (NODE_LABEL.to_string(), name.clone()),
    ]);
    NodeLaunch {
        name,
        group: group.name.clone(),
        env,
        resource_labels,
    }
}
