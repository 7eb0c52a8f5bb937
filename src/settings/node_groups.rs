//! Node groups in the settings file: `[[node_groups]]`, each with its `launcher`.
//!
//! ```toml
//! cluster_listen = "0.0.0.0:7450"
//!
//! [[node_groups]]
//! name = "gpu"
//! labels = ["gpu=a100"]
//! task_types = ["infer"]
//! min_nodes = 0
//! max_nodes = 4
//! idle_timeout_secs = 120
//! launcher = { kind = "docker", image = "wrangle-node:1", args = ["--workers", "2"] }
//!
//! [[node_groups]]
//! name = "cpu"
//! task_types = ["echo"]
//! launcher = { kind = "process", program = "/usr/local/bin/wrangle-node", log_dir = "/var/log/wrangle" }
//!
//! [[node_groups]]
//! name = "lab"
//! task_types = ["sleep"]
//! join = "10.0.0.1:7450"   # where the lab's machines reach the coordinator
//! launcher = { kind = "ssh", hosts = ["lab1", "lab2"], program = "/opt/wrangle/node" }
//! ```
//!
//! Launchers: `process` (`program`, `args`, `log_dir`), `docker` (`image`, `args`,
//! `network`, `cpus`, `memory_mb`, `engine` as `host:port` for an engine over TCP) and `ssh`
//! (`hosts`: ids of `[[compute.nodes]]` with `ssh://` endpoints, `program`, `args`) and
//! `kubernetes` (`namespace`, `image`, `args`, `kubeconfig`, `service_account`,
//! `requests` and `limits` as `{ cpu = "500m", memory = "1Gi" }`). Times are in seconds
//! (fractions allowed).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::compute::{ComputeCluster, DockerEngine};
use crate::error::Error;
use crate::launch::{
    DockerLauncher, KubernetesLauncher, Launcher, NodeGroupConfig, ProcessLauncher, SshLauncher,
};

/// One `[[node_groups]]` entry: [`NodeGroupConfig`]'s fields (times as `_secs`) and the
/// launcher.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeGroupSettings {
    /// The group's name.
    pub name: String,
    /// Where its nodes run.
    pub launcher: LauncherSettings,
    /// Labels its nodes have.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Task types its nodes serve.
    #[serde(default)]
    pub task_types: Vec<String>,
    /// Fewest nodes. Default 0.
    pub min_nodes: Option<usize>,
    /// Most nodes. Default 4.
    pub max_nodes: Option<usize>,
    /// Task slots one node brings. Default 16.
    pub slots_per_node: Option<u64>,
    /// Waiting tasks per slot above which it grows. Default 1.
    pub scale_up_threshold: Option<f64>,
    /// Nodes launched in one step. Default 1.
    pub scale_up_step: Option<usize>,
    /// Idle time before a node is drained. Default 60.
    pub idle_timeout_secs: Option<f64>,
    /// Time a launched node has to join. Default 60.
    pub join_timeout_secs: Option<f64>,
    /// Time a drain has to empty its node. Default 300.
    pub drain_timeout_secs: Option<f64>,
    /// Time a stopped node has before it is killed. Default 30.
    pub stop_grace_secs: Option<f64>,
    /// Least time between two steps up. Default 10.
    pub scale_up_cooldown_secs: Option<f64>,
    /// Least time after a step up before a drain, and between drains. Default 30.
    pub scale_down_cooldown_secs: Option<f64>,
    /// First wait after a failed launch. Default 2.
    pub launch_backoff_secs: Option<f64>,
    /// Extra environment of the node program.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Address its nodes dial to join. Default: the cluster's listen address.
    pub join: Option<String>,
}

/// Where a group's nodes run (`kind` picks one).
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LauncherSettings {
    /// Child processes of the coordinator.
    Process {
        /// The node program.
        program: PathBuf,
        /// Its arguments.
        #[serde(default)]
        args: Vec<String>,
        /// Each node's output goes to `LOG_DIR/NODE.log`. Default: discarded.
        log_dir: Option<PathBuf>,
    },
    /// Docker containers.
    Docker {
        /// The image (never pulled; its entrypoint is the node program).
        image: String,
        /// The entrypoint's arguments.
        #[serde(default)]
        args: Vec<String>,
        /// The containers' network. Default `host`.
        network: Option<String>,
        /// CPU cores per container (fractions allowed). Default: no limit.
        cpus: Option<f64>,
        /// Memory per container, in MiB. Default: no limit.
        memory_mb: Option<u64>,
        /// `host:port` of an engine over TCP. Default: this machine's engine.
        engine: Option<String>,
    },
    /// The node program started over SSH on compute nodes.
    Ssh {
        /// Ids of `[[compute.nodes]]` (SSH endpoints) to start nodes on.
        hosts: Vec<String>,
        /// The node program's path on the hosts.
        program: String,
        /// Its arguments.
        #[serde(default)]
        args: Vec<String>,
    },
    /// Kubernetes pods, one per node.
    Kubernetes {
        /// The pods' namespace. Default `default`.
        namespace: Option<String>,
        /// The image (its entrypoint is the node program).
        image: String,
        /// The entrypoint's arguments.
        #[serde(default)]
        args: Vec<String>,
        /// A kubeconfig file. Default: as `kubectl` finds one (`KUBECONFIG`,
        /// `~/.kube/config`, or the in-cluster service account).
        kubeconfig: Option<PathBuf>,
        /// The pods' service account. Default: none, and no API token mounted.
        service_account: Option<String>,
        /// CPU and memory requested per pod, as Kubernetes quantities (`"500m"`, `"1Gi"`).
        requests: Option<Resources>,
        /// CPU and memory limits per pod.
        limits: Option<Resources>,
    },
}

/// CPU and memory as Kubernetes quantities.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU (`"2"`, `"500m"`).
    pub cpu: String,
    /// Memory (`"512Mi"`, `"4Gi"`).
    pub memory: String,
}

impl NodeGroupSettings {
    /// The group's config, checked; errors name `node_groups.FIELD`.
    pub fn config(&self) -> Result<NodeGroupConfig, Error> {
        let d = NodeGroupConfig::default();
        let secs = |field: &'static str, v: Option<f64>, default: Duration| match v {
            None => Ok(default),
            Some(s) if s.is_finite() && (0.0..=86_400.0 * 30.0).contains(&s) => {
                Ok(Duration::from_secs_f64(s))
            }
            Some(_) => Err(Error::invalid(
                field,
                "must be a number of seconds from 0 to 2592000",
            )),
        };
        let config = NodeGroupConfig {
            name: self.name.clone(),
            labels: self.labels.clone(),
            task_types: self.task_types.clone(),
            min_nodes: self.min_nodes.unwrap_or(d.min_nodes),
            max_nodes: self.max_nodes.unwrap_or(d.max_nodes),
            slots_per_node: self.slots_per_node.unwrap_or(d.slots_per_node),
            scale_up_threshold: self.scale_up_threshold.unwrap_or(d.scale_up_threshold),
            scale_up_step: self.scale_up_step.unwrap_or(d.scale_up_step),
            idle_timeout: secs(
                "node_groups.idle_timeout_secs",
                self.idle_timeout_secs,
                d.idle_timeout,
            )?,
            join_timeout: secs(
                "node_groups.join_timeout_secs",
                self.join_timeout_secs,
                d.join_timeout,
            )?,
            drain_timeout: secs(
                "node_groups.drain_timeout_secs",
                self.drain_timeout_secs,
                d.drain_timeout,
            )?,
            stop_grace: secs(
                "node_groups.stop_grace_secs",
                self.stop_grace_secs,
                d.stop_grace,
            )?,
            scale_up_cooldown: secs(
                "node_groups.scale_up_cooldown_secs",
                self.scale_up_cooldown_secs,
                d.scale_up_cooldown,
            )?,
            scale_down_cooldown: secs(
                "node_groups.scale_down_cooldown_secs",
                self.scale_down_cooldown_secs,
                d.scale_down_cooldown,
            )?,
            launch_backoff: secs(
                "node_groups.launch_backoff_secs",
                self.launch_backoff_secs,
                d.launch_backoff,
            )?,
            env: self.env.clone(),
            join: self.join.clone(),
        };
        config.validate()?;
        self.launcher.check()?;
        Ok(config)
    }

    /// The group's config and its launcher; `compute` holds the SSH launcher's hosts.
    pub fn build(
        &self,
        compute: &ComputeCluster,
    ) -> Result<(NodeGroupConfig, Arc<dyn Launcher>), Error> {
        let config = self.config()?;
        let launcher: Arc<dyn Launcher> = match &self.launcher {
            LauncherSettings::Process {
                program,
                args,
                log_dir,
            } => {
                let mut l = ProcessLauncher::new(program, args.clone());
                if let Some(dir) = log_dir {
                    l = l.log_dir(dir);
                }
                Arc::new(l)
            }
            LauncherSettings::Docker {
                image,
                args,
                network,
                cpus,
                memory_mb,
                engine,
            } => {
                let mut l = DockerLauncher::new(image, args.clone()).limits(
                    cpus.unwrap_or(0.0),
                    memory_mb.unwrap_or(0).saturating_mul(1 << 20),
                );
                if let Some(n) = network {
                    l = l.network(n);
                }
                if let Some(e) = engine {
                    l = l.engine(tcp_engine(e)?);
                }
                Arc::new(l)
            }
            LauncherSettings::Ssh {
                hosts,
                program,
                args,
            } => {
                if let Some(h) = hosts.iter().find(|h| compute.node(h).is_none()) {
                    return Err(Error::invalid(
                        "node_groups.launcher.hosts",
                        format!("{h:?} is not one of [[compute.nodes]]"),
                    ));
                }
                Arc::new(SshLauncher::new(
                    compute.clone(),
                    hosts.clone(),
                    program,
                    args.clone(),
                ))
            }
            LauncherSettings::Kubernetes {
                namespace,
                image,
                args,
                kubeconfig,
                service_account,
                requests,
                limits,
            } => {
                let mut l = KubernetesLauncher::new(
                    namespace.as_deref().unwrap_or("default"),
                    image,
                    args.clone(),
                );
                if let Some(path) = kubeconfig {
                    l = l.kubeconfig(path);
                }
                if let Some(account) = service_account {
                    l = l.service_account(account);
                }
                if let Some(r) = requests {
                    l = l.requests(&r.cpu, &r.memory);
                }
                if let Some(r) = limits {
                    l = l.limits(&r.cpu, &r.memory);
                }
                Arc::new(l)
            }
        };
        Ok((config, launcher))
    }
}

impl LauncherSettings {
    /// Checks what can be checked without starting anything.
    fn check(&self) -> Result<(), Error> {
        let bad = |field: &'static str, why: &str| Err(Error::invalid(field, why.to_string()));
        match self {
            Self::Process { program, .. } if program.as_os_str().is_empty() => {
                bad("node_groups.launcher.program", "must not be empty")
            }
            Self::Docker { image, .. } if image.trim().is_empty() => {
                bad("node_groups.launcher.image", "must not be empty")
            }
            Self::Docker { cpus: Some(c), .. } if !(c.is_finite() && *c >= 0.0) => {
                bad("node_groups.launcher.cpus", "must be a number >= 0")
            }
            Self::Docker {
                engine: Some(e), ..
            } => tcp_engine(e).map(|_| ()),
            Self::Ssh { hosts, .. } if hosts.is_empty() => {
                bad("node_groups.launcher.hosts", "name at least one")
            }
            Self::Ssh { program, .. } if program.trim().is_empty() => {
                bad("node_groups.launcher.program", "must not be empty")
            }
            Self::Kubernetes { image, .. } if image.trim().is_empty() => {
                bad("node_groups.launcher.image", "must not be empty")
            }
            Self::Kubernetes {
                namespace: Some(ns),
                ..
            } if !crate::compute::dns_label(ns) => bad(
                "node_groups.launcher.namespace",
                "a DNS label: lowercase letters, digits and '-', at most 63",
            ),
            _ => Ok(()),
        }
    }
}

fn tcp_engine(e: &str) -> Result<DockerEngine, Error> {
    let parsed = e
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
        .filter(|(host, port)| !host.is_empty() && *port > 0);
    match parsed {
        Some((host, port)) => Ok(DockerEngine::Tcp {
            host: host.trim_matches(['[', ']']).to_string(),
            port,
        }),
        None => Err(Error::invalid(
            "node_groups.launcher.engine",
            "must be host:port",
        )),
    }
}
