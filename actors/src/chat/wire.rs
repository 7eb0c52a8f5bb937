//! The two chat APIs on the wire: the request body of `/v1/chat/completions` (OpenAI,
//! llama.cpp, vLLM) and `/api/chat` (Ollama), and the answers read back, whole or as
//! streamed events: the text, the tool calls (OpenAI streams them in fragments by index),
//! the finish reason and the token usage.

use serde_json::{json, Map, Value};
use wrangle::compute::{ComputeError, ComputeErrorKind, HttpRequest, StreamFormat};

use super::{ChatApi, ChatInput, ChatMessage, ToolCall, Usage};

/// The request for `input` (its system prompt first, then its messages).
pub(super) fn request(input: &ChatInput) -> HttpRequest {
    let mut messages = Vec::with_capacity(input.messages.len() + 1);
    if let Some(system) = &input.system {
        messages.push(json!({"role": "system", "content": system}));
    }
    messages.extend(input.messages.iter().map(|m| message(input.api, m)));
    let mut body = json!({
        "model": input.model,
        "messages": messages,
        "stream": input.stream,
    });
    if !input.tools.is_empty() {
        let tools: Vec<Value> = input
            .tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                }})
            })
            .collect();
        body["tools"] = tools.into();
    }
    match input.api {
        ChatApi::Openai => {
            if let Some(n) = input.max_tokens {
                body["max_tokens"] = n.into();
            }
            if let Some(t) = input.temperature {
                body["temperature"] = t.into();
            }
            if let Some(choice) = &input.tool_choice {
                body["tool_choice"] = choice.clone();
            }
            if input.stream {
                // Servers that know it send the usage in a last event; others ignore it.
                body["stream_options"] = json!({"include_usage": true});
            }
            let r = HttpRequest::post("/v1/chat/completions", body);
            if input.stream {
                r.streaming(StreamFormat::Sse)
            } else {
                r
            }
        }
        ChatApi::Ollama => {
            let mut options = Map::new();
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

/// One message as the API writes it: OpenAI carries a tool call's arguments as a JSON
/// string and names the call a tool message answers; Ollama carries them as an object.
fn message(api: ChatApi, m: &ChatMessage) -> Value {
    let mut v = json!({"role": m.role, "content": m.content});
    if !m.tool_calls.is_empty() {
        let calls: Vec<Value> = m
            .tool_calls
            .iter()
            .map(|c| match api {
                ChatApi::Openai => json!({"id": c.id, "type": "function", "function": {
                    "name": c.name, "arguments": c.arguments.to_string(),
                }}),
                ChatApi::Ollama => json!({"function": {"name": c.name, "arguments": c.arguments}}),
            })
            .collect();
        v["tool_calls"] = calls.into();
    }
    if api == ChatApi::Openai {
        if let Some(id) = &m.tool_call_id {
            v["tool_call_id"] = id.clone().into();
        }
    }
    if let Some(name) = &m.name {
        v["name"] = name.clone().into();
    }
    v
}

/// A reply read from the wire.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Reply {
    pub(super) content: String,
    pub(super) finish_reason: Option<String>,
    pub(super) tool_calls: Vec<ToolCall>,
    pub(super) usage: Option<Usage>,
}

pub(super) fn protocol(what: impl std::fmt::Display) -> ComputeError {
    ComputeError {
        kind: ComputeErrorKind::Protocol,
        message: format!("chat answer: {what}"),
        retry_after: None,
    }
}

/// A whole (not streamed) answer.
pub(super) fn read_whole(api: ChatApi, body: &[u8]) -> Result<Reply, ComputeError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| protocol(format!("not JSON: {e}")))?;
    let mut reply = Reply::default();
    let (message, reason) = match api {
        ChatApi::Openai => {
            let choice = v
                .pointer("/choices/0")
                .ok_or_else(|| protocol("no choices"))?;
            (choice.get("message"), choice.get("finish_reason"))
        }
        ChatApi::Ollama => (v.get("message"), v.get("done_reason")),
    };
    let message = message.ok_or_else(|| protocol("no message"))?;
    match message.get("content") {
        Some(Value::String(s)) => reply.content = s.clone(),
        Some(Value::Null) | None if message.get("tool_calls").is_some() => {}
        _ => return Err(protocol("no message content")),
    }
    reply.finish_reason = reason.and_then(Value::as_str).map(str::to_string);
    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
        let mut assembler = Calls::default();
        for (i, call) in calls.iter().enumerate() {
            assembler.add(api, i, call)?;
        }
        reply.tool_calls = assembler.finish()?;
    }
    reply.usage = usage(api, &v);
    Ok(reply)
}

/// A streamed answer, from its events in order and what followed the last whole event
/// (`rest`). A stream that ends mid-event, or before the model said it finished (OpenAI's
/// `finish_reason`, Ollama's `done`), was cut short.
pub(super) fn read_stream(
    api: ChatApi,
    events: &[String],
    rest: &[u8],
) -> Result<Reply, ComputeError> {
    if !rest.iter().all(u8::is_ascii_whitespace) {
        return Err(protocol("the stream was cut mid-event"));
    }
    let mut finished = false;
    let mut reply = Reply::default();
    let mut calls = Calls::default();
    for event in events {
        let v: Value =
            serde_json::from_str(event).map_err(|e| protocol(format!("event not JSON: {e}")))?;
        if let Some(piece) = piece(api, &v) {
            reply.content.push_str(piece);
        }
        let (reason, deltas) = match api {
            ChatApi::Openai => (
                v.pointer("/choices/0/finish_reason"),
                v.pointer("/choices/0/delta/tool_calls"),
            ),
            ChatApi::Ollama => (v.get("done_reason"), v.pointer("/message/tool_calls")),
        };
        if let Some(r) = reason.and_then(Value::as_str) {
            reply.finish_reason = Some(r.to_string());
            finished = true;
        }
        if api == ChatApi::Ollama && v.get("done").and_then(Value::as_bool) == Some(true) {
            finished = true;
        }
        if let Some(deltas) = deltas.and_then(Value::as_array) {
            for (i, d) in deltas.iter().enumerate() {
                let index = match api {
                    ChatApi::Openai => d.get("index").and_then(Value::as_u64).unwrap_or(i as u64),
                    // Ollama sends each call whole: one after another.
                    ChatApi::Ollama => calls.calls.len() as u64,
                };
                calls.add(api, index as usize, d)?;
            }
        }
        if let Some(u) = usage(api, &v) {
            reply.usage = Some(u);
        }
    }
    if events.is_empty() {
        return Err(protocol("the stream ended before any event"));
    }
    if !finished {
        return Err(protocol("the stream ended before the model finished"));
    }
    reply.tool_calls = calls.finish()?;
    Ok(reply)
}

/// The text a streamed event adds, if any.
pub(super) fn piece(api: ChatApi, v: &Value) -> Option<&str> {
    match api {
        ChatApi::Openai => v.pointer("/choices/0/delta/content"),
        ChatApi::Ollama => v.pointer("/message/content"),
    }
    .and_then(Value::as_str)
    .filter(|s| !s.is_empty())
}

fn usage(api: ChatApi, v: &Value) -> Option<Usage> {
    let n = |key: &str| v.pointer(key).and_then(Value::as_u64);
    let (prompt, completion) = match api {
        ChatApi::Openai => (
            n("/usage/prompt_tokens")?,
            n("/usage/completion_tokens").unwrap_or(0),
        ),
        ChatApi::Ollama => (n("/prompt_eval_count")?, n("/eval_count").unwrap_or(0)),
    };
    Some(Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
    })
}

/// Tool calls being assembled: OpenAI streams a call's id and name first, then its
/// arguments as string fragments, all under the call's index.
#[derive(Default)]
struct Calls {
    calls: Vec<(String, String, String, Option<Value>)>,
}

/// Most tool calls one reply may ask for.
const MAX_CALLS: usize = 64;

impl Calls {
    fn add(&mut self, api: ChatApi, index: usize, v: &Value) -> Result<(), ComputeError> {
        if index >= MAX_CALLS {
            return Err(protocol(format!("more than {MAX_CALLS} tool calls")));
        }
        while self.calls.len() <= index {
            self.calls.push(Default::default());
        }
        let call = &mut self.calls[index];
        if let Some(id) = v.get("id").and_then(Value::as_str) {
            call.0 = id.to_string();
        }
        let f = v.get("function").unwrap_or(&Value::Null);
        if let Some(name) = f.get("name").and_then(Value::as_str) {
            call.1.push_str(name);
        }
        match (api, f.get("arguments")) {
            (_, Some(Value::String(fragment))) => call.2.push_str(fragment),
            (ChatApi::Ollama, Some(args)) => call.3 = Some(args.clone()),
            _ => {}
        }
        Ok(())
    }

    fn finish(self) -> Result<Vec<ToolCall>, ComputeError> {
        self.calls
            .into_iter()
            .enumerate()
            .map(|(i, (id, name, text, object))| {
                if name.is_empty() {
                    return Err(protocol(format!("tool call {i} has no function name")));
                }
                let arguments = match object {
                    Some(v) => v,
                    None if text.trim().is_empty() => Value::Object(Map::new()),
                    // Arguments that are not JSON go to the tool runner as they are: it
                    // tells the model, rather than failing the whole turn.
                    None => serde_json::from_str(&text).unwrap_or(Value::String(text)),
                };
                let id = if id.is_empty() {
                    format!("call_{i}")
                } else {
                    id
                };
                Ok(ToolCall {
                    id,
                    name,
                    arguments,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_answers_are_read_in_both_apis() {
        let openai = br#"{"choices":[{"message":{"content":"hi"},"finish_reason":"stop"}],
            "usage":{"prompt_tokens":7,"completion_tokens":2}}"#;
        let r = read_whole(ChatApi::Openai, openai).unwrap();
        assert_eq!(
            (r.content.as_str(), r.finish_reason.as_deref()),
            ("hi", Some("stop"))
        );
        assert_eq!(
            r.usage,
            Some(Usage {
                prompt_tokens: 7,
                completion_tokens: 2
            })
        );
        let ollama = br#"{"message":{"role":"assistant","content":"yo","tool_calls":[
            {"function":{"name":"add","arguments":{"a":1}}}]},"done_reason":"stop",
            "prompt_eval_count":5,"eval_count":3}"#;
        let r = read_whole(ChatApi::Ollama, ollama).unwrap();
        assert_eq!(r.content, "yo");
        assert_eq!(
            r.tool_calls,
            [ToolCall {
                id: "call_0".into(),
                name: "add".into(),
                arguments: json!({"a": 1})
            }]
        );
        assert_eq!(
            r.usage,
            Some(Usage {
                prompt_tokens: 5,
                completion_tokens: 3
            })
        );
    }

    #[test]
    fn tool_calls_with_null_content_are_read_and_their_arguments_parsed() {
        let body = br#"{"choices":[{"message":{"content":null,"tool_calls":[
            {"id":"c1","type":"function","function":{"name":"search","arguments":"{\"q\":\"rust\"}"}},
            {"id":"c2","type":"function","function":{"name":"noargs","arguments":""}},
            {"id":"c3","type":"function","function":{"name":"bad","arguments":"{oops"}}]},
            "finish_reason":"tool_calls"}]}"#;
        let r = read_whole(ChatApi::Openai, body).unwrap();
        assert_eq!(r.content, "");
        assert_eq!(r.tool_calls.len(), 3);
        assert_eq!(r.tool_calls[0].arguments, json!({"q": "rust"}));
        assert_eq!(r.tool_calls[1].arguments, json!({}));
        assert_eq!(r.tool_calls[2].arguments, json!("{oops"));
    }

    #[test]
    fn streamed_answers_join_text_and_tool_call_fragments_by_index() {
        let events: Vec<String> = [
            r#"{"choices":[{"delta":{"role":"assistant"}}]}"#,
            r#"{"choices":[{"delta":{"content":"he"}}]}"#,
            r#"{"choices":[{"delta":{"content":"llo"}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"get","arguments":"{\"u"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":1,"id":"b","function":{"name":"put","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"rl\":1}"}}]},"finish_reason":"tool_calls"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
        ]
        .map(String::from)
        .into();
        let r = read_stream(ChatApi::Openai, &events, b"").unwrap();
        assert_eq!(r.content, "hello");
        assert_eq!(r.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(
            r.tool_calls,
            [
                ToolCall {
                    id: "a".into(),
                    name: "get".into(),
                    arguments: json!({"url": 1})
                },
                ToolCall {
                    id: "b".into(),
                    name: "put".into(),
                    arguments: json!({})
                },
            ]
        );
        assert_eq!(
            r.usage,
            Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 4
            })
        );
    }

    #[test]
    fn broken_answers_are_protocol_errors() {
        for body in [&b"{}"[..], b"not json", br#"{"choices":[{"message":{}}]}"#] {
            let e = read_whole(ChatApi::Openai, body).unwrap_err();
            assert_eq!(e.kind, ComputeErrorKind::Protocol, "{e}");
        }
        let e = read_stream(ChatApi::Openai, &["{cut".to_string()], b"").unwrap_err();
        assert!(e.message.contains("event not JSON"), "{e}");
        let e = read_stream(ChatApi::Openai, &[], b"").unwrap_err();
        assert!(e.message.contains("before any event"), "{e}");
        let started = [r#"{"choices":[{"delta":{"content":"he"}}]}"#.to_string()];
        let e = read_stream(ChatApi::Openai, &started, b"data: {\"cho").unwrap_err();
        assert!(e.message.contains("cut mid-event"), "{e}");
        let e = read_stream(ChatApi::Openai, &started, b"\n").unwrap_err();
        assert!(e.message.contains("before the model finished"), "{e}");
        let ollama = [r#"{"message":{"content":"a"},"done":true}"#.to_string()];
        assert_eq!(
            read_stream(ChatApi::Ollama, &ollama, b"").unwrap().content,
            "a"
        );
        let nameless = [r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]},"finish_reason":"tool_calls"}]}"#.to_string()];
        let e = read_stream(ChatApi::Openai, &nameless, b"").unwrap_err();
        assert!(e.message.contains("no function name"), "{e}");
    }

    #[test]
    fn requests_carry_the_system_prompt_tools_and_tool_messages() {
        let input: ChatInput = serde_json::from_value(json!({
            "model": "m", "system": "be brief", "stream": true, "tool_choice": "auto",
            "tools": [{"name": "add", "description": "adds", "parameters": {"type": "object"}}],
            "messages": [
                {"role": "user", "content": "1+1"},
                {"role": "assistant", "content": "", "tool_calls": [{"id": "c", "name": "add", "arguments": {"a": 1}}]},
                {"role": "tool", "content": "2", "tool_call_id": "c"}
            ]
        }))
        .unwrap();
        let r = request(&input);
        assert_eq!(r.path, "/v1/chat/completions");
        let body = r.body.unwrap();
        assert_eq!(
            body["messages"][0],
            json!({"role": "system", "content": "be brief"})
        );
        assert_eq!(
            body["messages"][2]["tool_calls"][0]["function"]["arguments"],
            json!(r#"{"a":1}"#)
        );
        assert_eq!(body["messages"][3]["tool_call_id"], json!("c"));
        assert_eq!(body["tools"][0]["function"]["name"], json!("add"));
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
        assert_eq!(body["tool_choice"], json!("auto"));
    }
}
