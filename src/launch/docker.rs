//! Nodes as Docker containers (bollard), on this machine's engine or one over TCP.
//!
//! Each node is one container of the group's image, named `wrangle-NODE`, labelled
//! `wrangle.group=GROUP` and `wrangle.node=NODE`, with the node's settings in its
//! environment and the image's own entrypoint (the node program) given the launcher's
//! arguments. The network is the host's by default, so the node reaches the coordinator
//! at the address it listens on; another network needs the group's `join` address to be
//! one the container can reach. Images are never pulled: the engine must have the image.
//!
//! Terminating is `docker stop` with the grace period (SIGTERM, which the node program
//! answers by draining, then SIGKILL) followed by the container's removal. Listing reports
//! the group's created or running containers; one that exited is reported no more, its
//! last lines of output are logged, and it is removed, so no container of a group outlives
//! its node. Only containers with the group's label are ever listed or removed.
//!
//! The environment (and so the cluster cookie) is visible to whoever may inspect
//! containers on the engine: give that right only to those who may join the cluster.

use std::collections::HashMap;
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, ContainerSummaryStateEnum as State, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;

use super::{LaunchError, Launcher, NodeLaunch, Resource, GROUP_LABEL, NODE_LABEL};
use crate::compute::DockerEngine;

const KIND: &str = "docker";
/// Lines of an exited node's output logged before its container is removed.
const TAIL_LINES: &str = "20";

/// Starts nodes as containers of one image.
#[derive(Debug)]
pub struct DockerLauncher {
    engine: DockerEngine,
    image: String,
    args: Vec<String>,
    network: String,
    nano_cpus: Option<i64>,
    memory: Option<i64>,
    /// Made, and its API version agreed, on first success.
    client: tokio::sync::OnceCell<Docker>,
}

impl DockerLauncher {
    /// Containers of `image` on this machine's engine, its entrypoint given `args`, on the
    /// host's network.
    pub fn new(image: impl Into<String>, args: Vec<String>) -> Self {
        Self {
            engine: DockerEngine::Local,
            image: image.into(),
            args,
            network: "host".into(),
            nano_cpus: None,
            memory: None,
            client: tokio::sync::OnceCell::new(),
        }
    }

    /// Another engine (`DockerEngine::Tcp`).
    pub fn engine(mut self, engine: DockerEngine) -> Self {
        self.engine = engine;
        self
    }

    /// The containers' network (`host` by default; `bridge` or a network's name).
    pub fn network(mut self, network: impl Into<String>) -> Self {
        self.network = network.into();
        self
    }

    /// Limits each container to `cpus` cores (fractions allowed) and `memory_bytes`; zero
    /// means no limit.
    pub fn limits(mut self, cpus: f64, memory_bytes: u64) -> Self {
        self.nano_cpus = Some((cpus * 1e9).round() as i64).filter(|n| *n > 0);
        self.memory = i64::try_from(memory_bytes).ok().filter(|m| *m > 0);
        self
    }

    async fn client(&self) -> Result<&Docker, LaunchError> {
        self.client
            .get_or_try_init(|| async { crate::compute::docker_client(&self.engine).await })
            .await
            .map_err(failure)
    }

    fn body(&self, node: &NodeLaunch) -> ContainerCreateBody {
        ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: Some(self.args.clone()),
            env: Some(
                node.env
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .chain([format!("WRANGLE_GROUP={}", node.group)])
                    .collect(),
            ),
            labels: Some(
                node.resource_labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            attach_stdin: Some(false),
            open_stdin: Some(false),
            tty: Some(false),
            host_config: Some(HostConfig {
                network_mode: Some(self.network.clone()),
                nano_cpus: self.nano_cpus,
                memory: self.memory,
                // The node program is PID 1: an init forwards signals and reaps.
                init: Some(true),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        }
    }

    /// Logs the last lines an exited node wrote, then removes its container.
    async fn reap(&self, docker: &Docker, id: &str, node: &str, status: &str) {
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(TAIL_LINES)
            .build();
        let mut tail = String::new();
        let mut logs = docker.logs(id, Some(options));
        while let Some(Ok(piece)) = logs.next().await {
            tail.push_str(&String::from_utf8_lossy(&piece.into_bytes()));
        }
        tracing::warn!(%node, container = %id, %status, output = %tail.trim_end(), "node container exited: removed");
        if let Err(e) = remove(docker, id).await {
            tracing::warn!(%node, container = %id, error = %e, "exited node container not removed");
        }
    }
}

impl Launcher for DockerLauncher {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn launch(&self, node: NodeLaunch) -> BoxFuture<'_, Result<String, LaunchError>> {
        Box::pin(async move {
            let docker = self.client().await?;
            let name = format!("wrangle-{}", node.name);
            let options = CreateContainerOptionsBuilder::new().name(&name).build();
            let created = docker
                .create_container(Some(options), self.body(&node))
                .await
                .map_err(failure)?;
            if let Err(e) = docker.start_container(&created.id, None).await {
                // Not left behind half made.
                let _ = remove(docker, &created.id).await;
                return Err(failure(e));
            }
            tracing::info!(node = %node.name, container = %created.id, image = %self.image, "node container started");
            Ok(created.id)
        })
    }

    fn terminate(&self, id: String, grace: Duration) -> BoxFuture<'_, Result<(), LaunchError>> {
        Box::pin(async move {
            let docker = self.client().await?;
            let seconds = i32::try_from(grace.as_secs().max(1)).unwrap_or(i32::MAX);
            let stop = StopContainerOptionsBuilder::new().t(seconds).build();
            match docker.stop_container(&id, Some(stop)).await {
                // (304, already stopped, is a success;) 404: already gone.
                Ok(())
                | Err(DockerError::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(e) => return Err(failure(e)),
            }
            match remove(docker, &id).await {
                Ok(())
                | Err(DockerError::DockerResponseServerError {
                    status_code: 404, ..
                }) => Ok(()),
                Err(e) => Err(failure(e)),
            }
        })
    }

    fn list(&self, group: String) -> BoxFuture<'_, Result<Vec<Resource>, LaunchError>> {
        Box::pin(async move {
            let docker = self.client().await?;
            let filters = HashMap::from([("label", vec![format!("{GROUP_LABEL}={group}")])]);
            let options = ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build();
            let containers = docker
                .list_containers(Some(options))
                .await
                .map_err(failure)?;
            let mut running = Vec::new();
            for c in containers {
                let (Some(id), Some(labels)) = (c.id, c.labels) else {
                    continue;
                };
                // The engine filtered by label; checked again, as nothing else is touched.
                if labels.get(GROUP_LABEL) != Some(&group) {
                    continue;
                }
                let node = labels.get(NODE_LABEL).cloned().unwrap_or_default();
                match c.state {
                    Some(State::EXITED | State::DEAD) => {
                        let status = c.status.unwrap_or_default();
                        self.reap(docker, &id, &node, &status).await;
                    }
                    Some(State::REMOVING) => {}
                    _ => running.push(Resource { id, node }),
                }
            }
            Ok(running)
        })
    }
}

async fn remove(docker: &Docker, id: &str) -> Result<(), DockerError> {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    docker.remove_container(id, Some(options)).await
}

/// An engine's refusal or absence as a launch error (the engine's own message).
fn failure(e: DockerError) -> LaunchError {
    LaunchError::new(KIND, crate::compute::docker_message(&e))
}
