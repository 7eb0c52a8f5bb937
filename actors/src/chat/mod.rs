//! [`Chat`]: a chat model on a compute node, OpenAI-compatible (`/v1/chat/completions`) or
//! Ollama (`/api/chat`), whole or streamed (each streamed piece of text becomes task
//! progress, so it reaches `/events` and the task's watchers as it is generated), with
//! tools the model may call, token usage and latency in the result, per-request timeouts,
//! and request and token rate limits per node and model.
//!
//! Every call is counted on the cluster by node and model (requests, failures, tokens,
//! latency: `wrangle_llm_*` in `/metrics`).
//!
//! Failures keep their verdict for the queue, the one retrier: a 429 or 503 is retryable
//! no earlier than the server's `Retry-After`; a 5xx, a timeout, a malformed answer or a
//! broken stream is retryable; a 4xx is permanent; so is bad input, naming the field.

mod limit;
mod wire;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;
use wrangle::compute::{
    ComputeCluster, ComputeError, ComputeErrorKind, ComputeNodeRef, ComputeRequest,
    ComputeResponse, ModelCall, StreamChunk,
};
use wrangle::{TaskContext, TaskError};

pub use limit::RateLimit;

use crate::compute::Placement;
use limit::Limiter;

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
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text (empty for an assistant message that only calls tools).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub content: String,
    /// The tools an assistant message calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The call a `tool` message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// The tool's name, on a `tool` message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    /// A message of `role` with `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            ..Self::default()
        }
    }
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// A tool the model asked to call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id (the server's, or `call_N`), quoted by the `tool` message answering it.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// Its arguments: the JSON the model wrote, or the text when it is not JSON.
    pub arguments: serde_json::Value,
}

/// A tool offered to the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// Its name: 1 to 64 characters of `A-Z a-z 0-9 _ -`.
    pub name: String,
    /// What it does, for the model.
    #[serde(default)]
    pub description: String,
    /// A JSON Schema of its arguments.
    #[serde(default = "any_object")]
    pub parameters: serde_json::Value,
}

fn any_object() -> serde_json::Value {
    serde_json::json!({"type": "object"})
}

/// Tokens a call used, as the server counted them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the prompt.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
}

impl Usage {
    /// Both together.
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }

    /// This and `other`, added.
    pub fn add(&mut self, other: Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
    }
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
    /// A system prompt, sent before the messages.
    #[serde(default)]
    pub system: Option<String>,
    /// The conversation so far.
    pub messages: Vec<ChatMessage>,
    /// Tools the model may call.
    #[serde(default)]
    pub tools: Vec<ToolSpec>,
    /// OpenAI's `tool_choice`, passed as given (`"auto"`, `"none"`, `"required"`, or
    /// `{"type": "function", "function": {"name": …}}`).
    #[serde(default)]
    pub tool_choice: Option<serde_json::Value>,
    /// Most tokens to generate.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Stream tokens as progress. Default false.
    #[serde(default)]
    pub stream: bool,
    /// Longest the model call may take, in milliseconds (the node's own timeout applies
    /// too); past it the call fails retryably.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// Most messages in one conversation.
pub const MAX_MESSAGES: usize = 1_000;
/// Most tools offered at once.
pub const MAX_TOOLS: usize = 64;

impl ChatInput {
    /// A conversation for `model`, everything else by default.
    pub fn new(model: impl Into<String>, messages: Vec<ChatMessage>) -> Self {
        Self {
            placement: Placement::default(),
            api: ChatApi::default(),
            model: model.into(),
            system: None,
            messages,
            tools: Vec::new(),
            tool_choice: None,
            max_tokens: None,
            temperature: None,
            stream: false,
            timeout_ms: None,
        }
    }

    /// Checks the bounds; the error names the field.
    pub fn validate(&self) -> Result<(), TaskError> {
        let bad = |field: &str, why: &str| Err(TaskError::permanent(format!("{field}: {why}")));
        if self.model.is_empty() || self.model.len() > 256 {
            return bad("model", "1 to 256 characters");
        }
        if self.messages.is_empty() || self.messages.len() > MAX_MESSAGES {
            return bad("messages", "1 to 1000 messages");
        }
        if self
            .messages
            .iter()
            .any(|m| !matches!(m.role.as_str(), "system" | "user" | "assistant" | "tool"))
        {
            return bad("messages.role", "one of system, user, assistant, tool");
        }
        if self.tools.len() > MAX_TOOLS {
            return bad("tools", "at most 64");
        }
        if self.tools.iter().any(|t| !tool_name_ok(&t.name)) {
            return bad("tools.name", "1 to 64 characters of A-Z a-z 0-9 _ -");
        }
        if self.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
            return bad("temperature", "between 0 and 2");
        }
        if self.timeout_ms == Some(0) {
            return bad("timeout_ms", "more than 0");
        }
        Ok(())
    }

    /// Tokens the call may use, estimated before it is sent (4 bytes a token, plus
    /// `max_tokens` or 256).
    fn estimated_tokens(&self) -> u64 {
        let text: usize = self.messages.iter().map(|m| m.content.len()).sum::<usize>()
            + self.system.as_ref().map_or(0, String::len);
        (text / 4) as u64 + u64::from(self.max_tokens.unwrap_or(256))
    }
}

pub(crate) fn tool_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

/// What [`Chat`] returns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatOutput {
    /// The node that answered.
    pub node: String,
    /// The model asked.
    pub model: String,
    /// The reply.
    pub content: String,
    /// Why generation stopped, when the server says.
    pub finish_reason: Option<String>,
    /// Tools the model asks to call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Tokens used, when the server says.
    pub usage: Option<Usage>,
    /// From sending the request to the whole answer, in milliseconds.
    pub latency_ms: u64,
    /// From sending the request to the first streamed text, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_token_ms: Option<u64>,
}

impl ChatOutput {
    /// The reply as the assistant message that continues the conversation.
    pub fn message(&self) -> ChatMessage {
        ChatMessage {
            role: "assistant".into(),
            content: self.content.clone(),
            tool_calls: self.tool_calls.clone(),
            ..ChatMessage::default()
        }
    }
}

/// Asks a chat model on a compute node (`chat`).
#[derive(Clone, Debug)]
pub struct Chat {
    cluster: ComputeCluster,
    limiter: std::sync::Arc<Limiter>,
}

impl Chat {
    /// A handler sending to `cluster`, without rate limits.
    pub fn new(cluster: ComputeCluster) -> Self {
        Self {
            cluster,
            limiter: Default::default(),
        }
    }

    /// Limits calls per node and model (shared by every clone of this handler).
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.limiter = std::sync::Arc::new(Limiter::new(limit));
        self
    }

    /// Runs one call of `input` for the task of `ctx`: the work of the `chat` task type,
    /// for handlers (such as the agent's model step) that build the input themselves.
    pub async fn call(
        &self,
        ctx: &TaskContext,
        input: &ChatInput,
    ) -> Result<ChatOutput, TaskError> {
        input.validate()?;
        let node = input.placement.pick(&self.cluster)?;
        let estimate = input.estimated_tokens();
        if self.limiter.limited() {
            if let Err(wait) = self.limiter.take(node.id(), &input.model, estimate).await {
                return Err(TaskError::retryable(format!(
                    "rate limit of model {} on node {}: next turn in {wait:?}",
                    input.model,
                    node.id()
                ))
                .with_retry_after(wait));
            }
        }
        let request = ComputeRequest::Http(wire::request(input));
        let started = Instant::now();
        let mut first_token = None;
        let call = send(
            ctx,
            &node,
            request,
            input.stream,
            input.api,
            &mut first_token,
            started,
        );
        let answer = match input.timeout_ms.map(Duration::from_millis) {
            Some(limit) => tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
                Err(ComputeError {
                    kind: ComputeErrorKind::Timeout,
                    message: format!("model call took longer than timeout_ms ({limit:?})"),
                    retry_after: None,
                })
            }),
            None => call.await,
        };
        let latency = started.elapsed();
        let reply = answer.and_then(|a| match a {
            ComputeResponse::Http { body, events, .. } if events.is_empty() && !input.stream => {
                wire::read_whole(input.api, &body)
            }
            ComputeResponse::Http { events, body, .. } => {
                wire::read_stream(input.api, &events, &body)
            }
            ComputeResponse::Command { .. } => {
                Err(wire::protocol("the node answered with a command result"))
            }
        });
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                self.limiter.settle(node.id(), &input.model, estimate, 0);
                let failed = ModelCall {
                    latency,
                    ok: false,
                    ..ModelCall::default()
                };
                self.cluster
                    .record_model_call(node.id(), &input.model, failed);
                return Err(e.into());
            }
        };
        self.cluster.record_model_call(
            node.id(),
            &input.model,
            ModelCall {
                prompt_tokens: reply.usage.map(|u| u.prompt_tokens),
                completion_tokens: reply.usage.map(|u| u.completion_tokens),
                latency,
                ok: true,
            },
        );
        if let Some(u) = reply.usage {
            self.limiter
                .settle(node.id(), &input.model, estimate, u.total());
        }
        Ok(ChatOutput {
            node: node.id().to_string(),
            model: input.model.clone(),
            content: reply.content,
            finish_reason: reply.finish_reason,
            tool_calls: reply.tool_calls,
            usage: reply.usage,
            latency_ms: latency.as_millis() as u64,
            first_token_ms: first_token.map(|d: Duration| d.as_millis() as u64),
        })
    }
}

/// Sends `request`; a streamed answer's text goes out as progress piece by piece, and a
/// cancelled task drops the call (and with it the connection, which stops generation).
async fn send(
    ctx: &TaskContext,
    node: &ComputeNodeRef,
    request: ComputeRequest,
    streamed: bool,
    api: ChatApi,
    first_token: &mut Option<Duration>,
    started: Instant,
) -> Result<ComputeResponse, ComputeError> {
    let cancelled = || ComputeError {
        kind: ComputeErrorKind::Rejected,
        message: "cancelled".into(),
        retry_after: None,
    };
    if !streamed {
        return tokio::select! {
            r = node.execute(request) => r,
            () = ctx.cancelled() => Err(cancelled()),
        };
    }
    let (tx, mut rx) = mpsc::channel(64);
    let call = node.execute_streaming(request, tx);
    tokio::pin!(call);
    let mut on_event = |chunk: StreamChunk| {
        let StreamChunk::Event(event) = chunk else {
            return;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&event) else {
            return;
        };
        if let Some(piece) = wire::piece(api, &v) {
            first_token.get_or_insert_with(|| started.elapsed());
            // The length of a stream is not known ahead: the fraction stays 0.
            ctx.progress(0.0, piece);
        }
    };
    loop {
        tokio::select! {
            result = &mut call => {
                while let Ok(chunk) = rx.try_recv() {
                    on_event(chunk);
                }
                return result;
            }
            Some(chunk) = rx.recv() => on_event(chunk),
            () = ctx.cancelled() => return Err(cancelled()),
        }
    }
}

impl wrangle::TaskHandler for Chat {
    type Input = ChatInput;
    type Output = ChatOutput;

    async fn handle(&self, ctx: TaskContext, input: ChatInput) -> Result<ChatOutput, TaskError> {
        self.call(&ctx, &input).await
    }
}
