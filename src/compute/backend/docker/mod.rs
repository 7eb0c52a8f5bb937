//! Docker nodes through bollard: one client per node, to the local engine's socket
//! (`DOCKER_HOST` when it is a `unix://` path, else `/var/run/docker.sock`) or to
//! `http://host:port` for `docker+tcp://`. The client is made, and its API version agreed
//! with the engine, on first use, so a node can be added while its engine is down.
//!
//! - `docker://CONTAINER`: each command is an exec in that running container
//!   ([`exec`]); the container's own limits and network apply.
//! - `docker://image/IMAGE`: each command runs in a new container of the image ([`run`]),
//!   labelled `wrangle.compute=1` and `wrangle.node=<id>`, and always removed afterwards,
//!   also when the request is dropped (timeout, caller gone, proxy stopped). Such a
//!   container has **no network** (`network_mode = none`): commands sent by agents run
//!   sandboxed; a node that needs the network is an exec node on a container made for it.
//!   The node's capabilities limit it: `cpu` (cores, fractions allowed) becomes `NanoCpus`,
//!   `memory_gb` (GiB) becomes `Memory` in bytes; absent or zero means no limit. Images are
//!   never pulled: they must already be on the engine.
//!
//! Output reaches the sink as it arrives and is collected as well: each of stdout and
//! stderr keeps its first 16 MiB, the rest still goes to the sink but is not kept (a
//! warning is logged). A non-zero exit code is an answer, not an error.
//!
//! Errors: an engine that cannot be reached, a missing container or image, or a stopped
//! container are `Unavailable` (retryable on another node, and a fault of this node: a
//! node whose target is missing can run nothing, while another node may run the request);
//! a request the engine refuses (400, such as a program missing from the image) is
//! `Rejected`; engine failures (500) are `Remote`.

mod exec;
mod run;

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::Docker;
use futures_util::future::BoxFuture;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::Backend;
use crate::compute::endpoint::{DockerEngine, DockerTarget};
use crate::compute::node::ComputeNode;
use crate::compute::request::{
    ComputeError, ComputeErrorKind, ComputeRequest, ComputeResponse, StreamChunk, StreamSink,
};

/// Most of each of stdout and stderr kept in the answer.
const MAX_OUTPUT: usize = 16 << 20;
/// Longest time one call to the engine may take to answer (streams excepted).
const ENGINE_TIMEOUT_SECS: u64 = 120;

pub(crate) struct DockerBackend {
    engine: Arc<Engine>,
}

/// What a node's requests share: the client, what to run in, and the limits.
struct Engine {
    how: DockerEngine,
    /// Made and version-agreed on first success.
    client: tokio::sync::OnceCell<Docker>,
    node_id: String,
    target: DockerTarget,
    /// `NanoCpus` for image runs.
    nano_cpus: Option<i64>,
    /// `Memory` (bytes) for image runs.
    memory: Option<i64>,
}

impl DockerBackend {
    pub(crate) fn new(engine: &DockerEngine, target: &DockerTarget, node: &ComputeNode) -> Self {
        let (nano_cpus, memory) = limits(node.capabilities());
        Self {
            engine: Arc::new(Engine {
                how: engine.clone(),
                client: tokio::sync::OnceCell::new(),
                node_id: node.id().to_string(),
                target: target.clone(),
                nano_cpus,
                memory,
            }),
        }
    }
}

/// `cpu` cores as nano-CPUs and `memory_gb` GiB as bytes; zero means no limit.
fn limits(capabilities: &BTreeMap<String, f64>) -> (Option<i64>, Option<i64>) {
    let scaled = |key: &str, unit: f64| {
        capabilities
            .get(key)
            .map(|v| (v * unit).round())
            .filter(|v| *v >= 1.0)
            .map(|v| v.min(i64::MAX as f64) as i64)
    };
    (scaled("cpu", 1e9), scaled("memory_gb", (1u64 << 30) as f64))
}

impl Engine {
    /// The node's client, made and version-agreed on first use (retried until it works).
    async fn client(&self) -> Result<Docker, ComputeError> {
        self.client
            .get_or_try_init(|| async { connect(&self.how).await.map_err(engine_error) })
            .await
            .cloned()
    }

    async fn health(&self) -> Result<(), String> {
        let docker = self.client().await.map_err(|e| e.message)?;
        docker.ping().await.map_err(|e| engine_error(e).message)?;
        match &self.target {
            DockerTarget::Container(name) => container_running(&docker, name).await,
            DockerTarget::Image(image) => match docker.inspect_image(image).await {
                Ok(_) => Ok(()),
                Err(e) => Err(engine_error(e).message),
            },
        }
    }
}

/// A client of engine `how`, its API version agreed with the engine (the compute nodes and
/// the node launcher both reach engines this way).
pub(crate) async fn connect(how: &DockerEngine) -> Result<Docker, DockerError> {
    let docker = match how {
        DockerEngine::Local => Docker::connect_with_local_defaults()
            .map(|d| d.with_timeout(Duration::from_secs(ENGINE_TIMEOUT_SECS))),
        DockerEngine::Tcp { host, port } => {
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.clone()
            };
            Docker::connect_with_http(
                &format!("http://{host}:{port}"),
                ENGINE_TIMEOUT_SECS,
                bollard::API_DEFAULT_VERSION,
            )
        }
    }?;
    docker.negotiate_version().await
}

/// `Ok` when container `name` exists and runs (not paused); else why not.
async fn container_running(docker: &Docker, name: &str) -> Result<(), String> {
    let info = docker
        .inspect_container(name, None)
        .await
        .map_err(|e| engine_error(e).message)?;
    let state = info.state.unwrap_or_default();
    if state.running == Some(true) && state.paused != Some(true) {
        return Ok(());
    }
    let status = state
        .status
        .map(|s| s.to_string())
        .unwrap_or_else(|| "not running".into());
    Err(format!("container {name} is {status}"))
}

impl Backend for DockerBackend {
    fn execute(
        &self,
        request: ComputeRequest,
        sink: Option<StreamSink>,
    ) -> BoxFuture<'static, Result<ComputeResponse, ComputeError>> {
        let ComputeRequest::Command(command) = request else {
            return Box::pin(async {
                Err(ComputeError::invalid(
                    "a Docker node runs commands, not HTTP requests",
                ))
            });
        };
        let engine = self.engine.clone();
        match &self.engine.target {
            DockerTarget::Container(c) => Box::pin(exec::exec(engine, c.clone(), command, sink)),
            DockerTarget::Image(i) => Box::pin(run::run(engine, i.clone(), command, sink)),
        }
    }

    fn health(&self, _timeout: Duration) -> BoxFuture<'static, Result<(), String>> {
        // The proxy bounds the check by its timeout.
        let engine = self.engine.clone();
        Box::pin(async move { engine.health().await })
    }
}

/// A bollard failure as a compute error (see the module's documentation).
fn engine_error(e: DockerError) -> ComputeError {
    use ComputeErrorKind as K;
    let kind = match &e {
        DockerError::DockerResponseServerError { status_code, .. } => match status_code {
            404 | 409 => K::Unavailable,
            s if *s >= 500 => K::Remote,
            _ => K::Rejected,
        },
        DockerError::RequestTimeoutError => K::Timeout,
        DockerError::JsonDataError { .. }
        | DockerError::JsonSerdeError { .. }
        | DockerError::DockerStreamError { .. }
        | DockerError::APIVersionParseError {} => K::Protocol,
        _ => K::Unavailable,
    };
    ComputeError::new(kind, message(&e))
}

/// What an engine failure says: the engine's own message, or the client's error and its
/// cause, after `docker engine: `.
pub(crate) fn message(e: &DockerError) -> String {
    let what = match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        _ => std::error::Error::source(e)
            .map(|s| format!("{e}: {s}"))
            .unwrap_or_else(|| e.to_string()),
    };
    format!("docker engine: {what}")
}

/// A command's output as it is read: streamed to the sink, kept up to [`MAX_OUTPUT`].
struct Output {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    sink: Option<StreamSink>,
    node_id: String,
    warned: bool,
}

impl Output {
    fn new(sink: Option<StreamSink>, node_id: &str) -> Self {
        Self {
            stdout: Vec::new(),
            stderr: Vec::new(),
            sink,
            node_id: node_id.to_string(),
            warned: false,
        }
    }

    async fn push(&mut self, piece: LogOutput) {
        let (kept, chunk) = match piece {
            // A console is a TTY's merged output; no TTY is asked for, but keep it anyway.
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                (&mut self.stdout, StreamChunk::Stdout(message))
            }
            LogOutput::StdErr { message } => (&mut self.stderr, StreamChunk::Stderr(message)),
            LogOutput::StdIn { .. } => return,
        };
        let bytes = match &chunk {
            StreamChunk::Stdout(b) | StreamChunk::Stderr(b) => b,
            StreamChunk::Event(_) => unreachable!("only output chunks are made here"),
        };
        let room = MAX_OUTPUT - kept.len();
        kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
        if bytes.len() > room && !self.warned {
            self.warned = true;
            tracing::warn!(
                node = %self.node_id,
                "command output over 16 MiB: the rest is streamed but not kept"
            );
        }
        if let Some(sink) = &self.sink {
            // A reader that went away stops getting output; the answer still comes.
            if sink.send(chunk).await.is_err() {
                self.sink = None;
            }
        }
    }

    fn answer(self, exit_code: Option<i64>) -> ComputeResponse {
        ComputeResponse::Command {
            exit_code,
            stdout: String::from_utf8_lossy(&self.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&self.stderr).into_owned(),
        }
    }
}

type Input = Pin<Box<dyn AsyncWrite + Send>>;

/// Writes `stdin` (then closes it) while reading `output` to its end, so neither side
/// waits on the other.
async fn converse(
    output: impl Stream<Item = Result<LogOutput, DockerError>>,
    mut input: Input,
    stdin: Option<String>,
    out: &mut Output,
) -> Result<(), ComputeError> {
    let feed = async move {
        if let Some(text) = stdin {
            // A program that exits without reading its input is not an error.
            let _ = input.write_all(text.as_bytes()).await;
            let _ = input.shutdown().await;
        }
        // Without stdin the connection stays whole until the output ends.
        input
    };
    let read = async {
        let mut output = std::pin::pin!(output);
        while let Some(piece) = output.next().await {
            out.push(piece.map_err(engine_error)?).await;
        }
        Ok(())
    };
    let (_input, read) = futures_util::future::join(feed, read).await;
    read
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_become_nano_cpus_and_bytes() {
        let caps: BTreeMap<String, f64> = [("cpu".to_string(), 0.5), ("memory_gb".into(), 0.25)]
            .into_iter()
            .collect();
        assert_eq!(limits(&caps), (Some(500_000_000), Some(256 << 20)));
        let none: BTreeMap<String, f64> = [("cpu".to_string(), 0.0)].into_iter().collect();
        assert_eq!(limits(&none), (None, None));
    }

    #[test]
    fn engine_statuses_map_to_what_a_retry_can_fix() {
        let status = |status_code| {
            engine_error(DockerError::DockerResponseServerError {
                status_code,
                message: "No such container: x".into(),
            })
        };
        assert_eq!(status(404).kind, ComputeErrorKind::Unavailable);
        assert!(status(404).message.contains("No such container: x"));
        assert_eq!(status(409).kind, ComputeErrorKind::Unavailable);
        assert_eq!(status(400).kind, ComputeErrorKind::Rejected);
        assert_eq!(status(500).kind, ComputeErrorKind::Remote);
        let gone = engine_error(DockerError::SocketNotFoundError("/nowhere.sock".into()));
        assert_eq!(gone.kind, ComputeErrorKind::Unavailable);
        assert!(gone.is_retryable());
    }
}
