//! A command in a new container of the node's image: create (named, labelled, limited, no
//! network), attach, start, read, wait for the exit code, remove. A [`Removal`] guard
//! force-removes the container if the request is dropped on the way, so no container
//! outlives its request whatever ends it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

use super::{converse, engine_error, Engine, Output};
use crate::compute::request::{CommandRequest, ComputeError, ComputeResponse, StreamSink};

/// Label on every container an image node makes.
const LABEL_COMPUTE: &str = "wrangle.compute";
/// Label naming the node that made it.
const LABEL_NODE: &str = "wrangle.node";

pub(super) async fn run(
    engine: Arc<Engine>,
    image: String,
    command: CommandRequest,
    sink: Option<StreamSink>,
) -> Result<ComputeResponse, ComputeError> {
    let docker = engine.client().await?;
    let name = format!(
        "wrangle-{}-{}",
        engine.node_id,
        uuid::Uuid::now_v7().simple()
    );
    // Armed before the container exists: a request dropped while the engine creates it
    // still removes it, by name.
    let mut removal = Removal {
        docker: docker.clone(),
        name: name.clone(),
        created: false,
        armed: true,
    };
    let stdin = command.stdin.is_some();
    let mut argv = command.argv.into_iter();
    let program = argv.next().unwrap_or_default();
    let body = ContainerCreateBody {
        image: Some(image),
        // The program replaces the image's entrypoint, so argv means what it says.
        entrypoint: Some(vec![program]),
        cmd: Some(argv.collect()),
        labels: Some(HashMap::from([
            (LABEL_COMPUTE.to_string(), "1".to_string()),
            (LABEL_NODE.to_string(), engine.node_id.clone()),
        ])),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        attach_stdin: Some(stdin),
        open_stdin: Some(stdin),
        stdin_once: Some(stdin),
        tty: Some(false),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            nano_cpus: engine.nano_cpus,
            memory: engine.memory,
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    };
    let options = CreateContainerOptionsBuilder::new().name(&name).build();
    docker
        .create_container(Some(options), body)
        .await
        .map_err(engine_error)?;
    removal.created = true;
    let result = attach_start_wait(&docker, &name, command.stdin, sink, &engine.node_id).await;
    removal.now().await;
    result
}

async fn attach_start_wait(
    docker: &Docker,
    name: &str,
    stdin: Option<String>,
    sink: Option<StreamSink>,
    node_id: &str,
) -> Result<ComputeResponse, ComputeError> {
    // Attached before the start, so no output is missed.
    let attach = AttachContainerOptionsBuilder::new()
        .stream(true)
        .stdout(true)
        .stderr(true)
        .stdin(stdin.is_some())
        .build();
    let attached = docker
        .attach_container(name, Some(attach))
        .await
        .map_err(engine_error)?;
    docker
        .start_container(name, None)
        .await
        .map_err(engine_error)?;
    let mut out = Output::new(sink, node_id);
    converse(attached.output, attached.input, stdin, &mut out).await?;
    let wait = WaitContainerOptionsBuilder::new()
        .condition("not-running")
        .build();
    let exit_code = match docker.wait_container(name, Some(wait)).next().await {
        Some(Ok(r)) => r.status_code,
        // bollard reports a non-zero exit as an error; here it is an answer.
        Some(Err(DockerError::DockerContainerWaitError { code, .. })) => code,
        Some(Err(e)) => return Err(engine_error(e)),
        None => {
            return Err(ComputeError::protocol(
                "the engine ended the wait without an exit code",
            ))
        }
    };
    Ok(out.answer(Some(exit_code)))
}

/// Force-removes a container of an image run when dropped still armed.
struct Removal {
    docker: Docker,
    name: String,
    /// Whether the engine confirmed the creation.
    created: bool,
    armed: bool,
}

impl Removal {
    /// Removes the container now (the run ended); a failure is logged, not returned: the
    /// command's answer stands.
    async fn now(&mut self) {
        self.armed = false;
        if let Err(e) = remove(&self.docker, &self.name).await {
            tracing::warn!(container = %self.name, error = %e, "container not removed");
        }
    }
}

impl Drop for Removal {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(container = %self.name, "no runtime to remove the container with");
            return;
        };
        let (docker, name, created) = (self.docker.clone(), self.name.clone(), self.created);
        runtime.spawn(async move {
            // A creation still on its way may land after a first removal: try a few
            // times while the engine says there is no such container.
            let tries = if created { 1 } else { 5 };
            for attempt in 1..=tries {
                match remove(&docker, &name).await {
                    Err(DockerError::DockerResponseServerError {
                        status_code: 404, ..
                    }) if attempt < tries => tokio::time::sleep(Duration::from_millis(200)).await,
                    Err(DockerError::DockerResponseServerError {
                        status_code: 404, ..
                    }) => return,
                    Err(e) => {
                        tracing::warn!(container = %name, error = %e, "container not removed");
                        return;
                    }
                    Ok(()) => return,
                }
            }
        });
    }
}

async fn remove(docker: &Docker, name: &str) -> Result<(), DockerError> {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    docker.remove_container(name, Some(options)).await
}
