//! [`Chat`]: a chat model on a compute node, OpenAI-compatible (`/v1/chat/completions`) or
//! Ollama (`/api/chat`), whole or streamed (each streamed piece becomes task progress).

use serde::{Deserialize, Serialize};
use wrangle::compute::{
    ComputeCluster, ComputeError, ComputeErrorKind, ComputeRequest, ComputeResponse, HttpRequest,
    StreamFormat,
};
use wrangle::{TaskContext, TaskError};

use crate::compute::{run, Placement};

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
