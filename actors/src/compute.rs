//! Handlers that send work to a [`ComputeCluster`]: [`HttpCall`] (any HTTP API),
//! [`RemoteCommand`] (a program on an SSH machine, a container or a pod) and [`Chat`] (an
//! OpenAI-compatible or Ollama chat model). Each holds the cluster it sends to, picks the
//! least-loaded healthy node matching the task's `labels` and `requirements` (or the node
//! it names), turns streamed output into task progress, and maps failures into retryable
//! or permanent task errors, so the queue stays the one place that retries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use wrangle::compute::{
    CommandRequest, ComputeCluster, ComputeError, ComputeErrorKind, ComputeNodeRef, ComputeRequest,
    ComputeResponse, HttpRequest, Selector, StreamChunk, StreamFormat,
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
    fn pick(&self, cluster: &ComputeCluster) -> Result<ComputeNodeRef, TaskError> {
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
async fn run(
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

/// The API a chat model speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatApi {
    /// `POST /v1/chat/completions` (OpenAI, llama.cpp, vLLM, …).
    #[default]
    Openai,
    /// `POST /api/chat` (Ollama).
    Ollama,
}

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// Input of [`Chat`].
#[derive(Clone, Debug, Deserialize)]
pub struct ChatInput {
    /// Where to run it.
    #[serde(flatten)]
    pub placement: Placement,
    /// Which API the node speaks. Default `openai`.
    #[serde(default)]
    pub api: ChatApi,
    /// The model name.
    pub model: String,
    /// The conversation so far.
    pub messages: Vec<ChatMessage>,
    /// Most tokens to generate.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Stream tokens as progress. Default false.
    #[serde(default)]
    pub stream: bool,
}

/// What [`Chat`] returns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatOutput {
    /// The node that answered.
    pub node: String,
    /// The reply.
    pub content: String,
    /// Why generation stopped, when the server says.
    pub finish_reason: Option<String>,
}

/// Asks a chat model on a compute node (`chat`).
#[derive(Clone, Debug)]
pub struct Chat {
    cluster: ComputeCluster,
}

impl Chat {
    /// A handler sending to `cluster`.
    pub fn new(cluster: ComputeCluster) -> Self {
        Self { cluster }
    }
}

impl wrangle::TaskHandler for Chat {
    type Input = ChatInput;
    type Output = ChatOutput;

    async fn handle(&self, ctx: TaskContext, input: ChatInput) -> Result<ChatOutput, TaskError> {
        if input.messages.is_empty() {
            return Err(TaskError::permanent(
                "messages: at least one message is needed",
            ));
        }
        let node = input.placement.pick(&self.cluster)?;
        let request = chat_request(&input);
        let answer = run(&ctx, &node, ComputeRequest::Http(request), input.stream).await?;
        let (content, finish_reason) = read_chat(input.api, &answer)?;
        Ok(ChatOutput {
            node: node.id().to_string(),
            content,
            finish_reason,
        })
    }
}

fn chat_request(input: &ChatInput) -> HttpRequest {
    let mut body = serde_json::json!({
        "model": input.model,
        "messages": input.messages,
        "stream": input.stream,
    });
    match input.api {
        ChatApi::Openai => {
            if let Some(n) = input.max_tokens {
                body["max_tokens"] = n.into();
            }
            if let Some(t) = input.temperature {
                body["temperature"] = t.into();
            }
            let r = HttpRequest::post("/v1/chat/completions", body);
            if input.stream {
                r.streaming(StreamFormat::Sse)
            } else {
                r
            }
        }
        ChatApi::Ollama => {
            let mut options = serde_json::Map::new();
            if let Some(n) = input.max_tokens {
                options.insert("num_predict".into(), n.into());
            }
            if let Some(t) = input.temperature {
                options.insert("temperature".into(), t.into());
            }
            body["options"] = options.into();
            let r = HttpRequest::post("/api/chat", body);
            if input.stream {
                r.streaming(StreamFormat::Ndjson)
            } else {
                r
            }
        }
    }
}

/// The reply text and finish reason from a whole answer or from its streamed events.
fn read_chat(
    api: ChatApi,
    answer: &ComputeResponse,
) -> Result<(String, Option<String>), TaskError> {
    let ComputeResponse::Http { body, events, .. } = answer else {
        return Err(TaskError::permanent(
            "the node answered with a command result",
        ));
    };
    let protocol = |what: &str| {
        TaskError::from(ComputeError {
            kind: ComputeErrorKind::Protocol,
            message: format!("chat answer: {what}"),
            retry_after: None,
        })
    };
    let text = |v: &serde_json::Value, path: &[&str]| -> Option<String> {
        let mut v = v;
        for p in path {
            v = match p.parse::<usize>() {
                Ok(i) => v.get(i)?,
                Err(_) => v.get(p)?,
            };
        }
        v.as_str().map(str::to_string)
    };
    let (content_path, reason_path): (&[&str], &[&str]) = match (api, events.is_empty()) {
        (ChatApi::Openai, true) => (
            &["choices", "0", "message", "content"],
            &["choices", "0", "finish_reason"],
        ),
        (ChatApi::Openai, false) => (
            &["choices", "0", "delta", "content"],
            &["choices", "0", "finish_reason"],
        ),
        (ChatApi::Ollama, _) => (&["message", "content"], &["done_reason"]),
    };
    if events.is_empty() {
        let v: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| protocol(&format!("not JSON: {e}")))?;
        let content = text(&v, content_path).ok_or_else(|| protocol("no message content"))?;
        return Ok((content, text(&v, reason_path)));
    }
    let mut content = String::new();
    let mut reason = None;
    for event in events {
        let v: serde_json::Value =
            serde_json::from_str(event).map_err(|e| protocol(&format!("event not JSON: {e}")))?;
        if let Some(piece) = text(&v, content_path) {
            content.push_str(&piece);
        }
        if let Some(r) = text(&v, reason_path) {
            reason = Some(r);
        }
    }
    Ok((content, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(body: &str, events: &[&str]) -> ComputeResponse {
        ComputeResponse::Http {
            status: 200,
            body: body.to_string().into_bytes().into(),
            events: events.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn chat_answers_are_read_whole_and_streamed_in_both_apis() {
        let whole = http(
            r#"{"choices":[{"message":{"content":"hi"},"finish_reason":"stop"}]}"#,
            &[],
        );
        assert_eq!(
            read_chat(ChatApi::Openai, &whole).unwrap(),
            ("hi".into(), Some("stop".into()))
        );
        let streamed = http(
            "",
            &[
                r#"{"choices":[{"delta":{"role":"assistant"}}]}"#,
                r#"{"choices":[{"delta":{"content":"he"}}]}"#,
                r#"{"choices":[{"delta":{"content":"llo"},"finish_reason":"length"}]}"#,
            ],
        );
        assert_eq!(
            read_chat(ChatApi::Openai, &streamed).unwrap(),
            ("hello".into(), Some("length".into()))
        );
        let ollama = http(
            "",
            &[
                r#"{"message":{"content":"a"}}"#,
                r#"{"message":{"content":"b"},"done":true,"done_reason":"stop"}"#,
            ],
        );
        assert_eq!(
            read_chat(ChatApi::Ollama, &ollama).unwrap(),
            ("ab".into(), Some("stop".into()))
        );
        let broken = read_chat(ChatApi::Openai, &http("{}", &[])).unwrap_err();
        assert!(
            broken.is_retryable() && broken.message().contains("no message content"),
            "{broken:?}"
        );
    }
}
