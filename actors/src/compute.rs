//! Handlers that send work to a [`ComputeCluster`]: [`HttpCall`] (any HTTP API),
//! [`RemoteCommand`] (a program on an SSH machine, a container or a pod) and, in `chat`,
//! [`Chat`](crate::Chat) (an OpenAI-compatible or Ollama chat model). Each holds the cluster it sends to, picks the
//! least-loaded healthy node matching the task's `labels` and `requirements` (or the node
//! it names), turns streamed output into task progress, and maps failures into retryable
//! or permanent task errors, so the queue stays the one place that retries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use wrangle::compute::{
    CommandRequest, ComputeCluster, ComputeError, ComputeNodeRef, ComputeRequest, ComputeResponse,
    HttpRequest, Selector, StreamChunk,
};
use wrangle::{TaskContext, TaskError};

/// Which node a task runs on: one by id, or the least-loaded healthy one that carries
/// `labels` and has at least `requirements`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    /// A node id; when given, labels and requirements are not consulted.
    #[serde(default)]
    pub node: Option<String>,
    /// Labels the node must carry.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Capabilities the node must have at least this much of.
    #[serde(default)]
    pub requirements: BTreeMap<String, f64>,
}

impl Placement {
    pub(crate) fn pick(&self, cluster: &ComputeCluster) -> Result<ComputeNodeRef, TaskError> {
        if let Some(id) = &self.node {
            return cluster
                .node(id)
                .ok_or_else(|| TaskError::permanent(format!("node: no compute node `{id}`")));
        }
        let selector = Selector {
            labels: self.labels.clone(),
            requirements: self.requirements.clone(),
        };
        cluster.select_node(&selector).ok_or_else(|| {
            // Nodes come back and are added: worth a retry.
            TaskError::retryable(format!(
                "no available compute node matches labels {:?} and requirements {:?}",
                self.labels, self.requirements
            ))
        })
    }
}

/// Runs `request` on `node`, reporting each streamed piece as progress.
pub(crate) async fn run(
    ctx: &TaskContext,
    node: &ComputeNodeRef,
    request: ComputeRequest,
    streamed: bool,
) -> Result<ComputeResponse, ComputeError> {
    if !streamed {
        return node.execute(request).await;
    }
    let (tx, mut rx) = mpsc::channel(64);
    let call = node.execute_streaming(request, tx);
    tokio::pin!(call);
    let mut pieces = 0u64;
    loop {
        tokio::select! {
            result = &mut call => {
                while let Ok(chunk) = rx.try_recv() {
                    report(ctx, &mut pieces, chunk);
                }
                return result;
            }
            Some(chunk) = rx.recv() => report(ctx, &mut pieces, chunk),
        }
    }
}

fn report(ctx: &TaskContext, pieces: &mut u64, chunk: StreamChunk) {
    *pieces += 1;
    let text = match chunk {
        StreamChunk::Event(e) => e,
        StreamChunk::Stdout(b) => String::from_utf8_lossy(&b).into_owned(),
        StreamChunk::Stderr(b) => format!("stderr: {}", String::from_utf8_lossy(&b)),
    };
    // The length of a stream is not known ahead: the fraction stays 0 until the result.
    ctx.progress(0.0, text);
}

/// Input of [`HttpCall`].
#[derive(Clone, Debug, Deserialize)]
pub struct HttpCallInput {
    /// Where to run it.
    #[serde(flatten)]
    pub placement: Placement,
    /// The request.
    pub request: HttpRequest,
}

/// What [`HttpCall`] returns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HttpCallOutput {
    /// The node that answered.
    pub node: String,
    /// Its status.
    pub status: u16,
    /// The body: JSON when it parses, else text.
    pub body: serde_json::Value,
    /// A streamed answer's events.
    pub events: Vec<String>,
}

/// Calls an HTTP API on a compute node (`http_call`).
#[derive(Clone, Debug)]
pub struct HttpCall {
    cluster: ComputeCluster,
}

impl HttpCall {
    /// A handler sending to `cluster`.
    pub fn new(cluster: ComputeCluster) -> Self {
        Self { cluster }
    }
}

impl wrangle::TaskHandler for HttpCall {
    type Input = HttpCallInput;
    type Output = HttpCallOutput;

    async fn handle(
        &self,
        ctx: TaskContext,
        input: HttpCallInput,
    ) -> Result<HttpCallOutput, TaskError> {
        let node = input.placement.pick(&self.cluster)?;
        let streamed = input.request.stream.is_some();
        let answer = run(&ctx, &node, ComputeRequest::Http(input.request), streamed).await?;
        let ComputeResponse::Http {
            status,
            body,
            events,
        } = answer
        else {
            return Err(TaskError::permanent(
                "the node answered with a command result",
            ));
        };
        let body = serde_json::from_slice(&body).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&body).into_owned())
        });
        Ok(HttpCallOutput {
            node: node.id().to_string(),
            status,
            body,
            events,
        })
    }
}

/// Input of [`RemoteCommand`].
#[derive(Clone, Debug, Deserialize)]
pub struct RemoteCommandInput {
    /// Where to run it.
    #[serde(flatten)]
    pub placement: Placement,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Standard input.
    #[serde(default)]
    pub stdin: Option<String>,
    /// Fail the task (permanently) when the command exits non-zero. Default true.
    #[serde(default = "yes")]
    pub check: bool,
    /// Report output as progress while it runs. Default true.
    #[serde(default = "yes")]
    pub stream: bool,
}

fn yes() -> bool {
    true
}

/// What [`RemoteCommand`] returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteCommandOutput {
    /// The node it ran on.
    pub node: String,
    /// Its exit code (`None`: ended by a signal).
    pub exit_code: Option<i64>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs a command on an SSH machine, in a container or in a pod (`remote_command`).
#[derive(Clone, Debug)]
pub struct RemoteCommand {
    cluster: ComputeCluster,
}

impl RemoteCommand {
    /// A handler sending to `cluster`.
    pub fn new(cluster: ComputeCluster) -> Self {
        Self { cluster }
    }
}

impl wrangle::TaskHandler for RemoteCommand {
    type Input = RemoteCommandInput;
    type Output = RemoteCommandOutput;

    async fn handle(
        &self,
        ctx: TaskContext,
        input: RemoteCommandInput,
    ) -> Result<RemoteCommandOutput, TaskError> {
        let node = input.placement.pick(&self.cluster)?;
        let request = ComputeRequest::Command(CommandRequest {
            argv: input.argv,
            stdin: input.stdin,
        });
        let answer = run(&ctx, &node, request, input.stream).await?;
        let ComputeResponse::Command {
            exit_code,
            stdout,
            stderr,
        } = answer
        else {
            return Err(TaskError::permanent(
                "the node answered with an HTTP response",
            ));
        };
        if input.check && exit_code != Some(0) {
            let tail: String = stderr
                .chars()
                .rev()
                .take(500)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            return Err(TaskError::permanent(format!(
                "command on node {} exited with {}: {tail}",
                node.id(),
                exit_code.map_or("a signal".to_string(), |c| format!("code {c}")),
            )));
        }
        Ok(RemoteCommandOutput {
            node: node.id().to_string(),
            exit_code,
            stdout,
            stderr,
        })
    }
}
