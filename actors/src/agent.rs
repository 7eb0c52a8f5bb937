//! A durable agent: a chat model that calls tools, run as a workflow so that every model
//! call and every tool call is a journaled step. A coordinator killed mid-conversation
//! resumes from its journal without repeating a completed call (only the one in flight
//! may run again, as any task may).
//!
//! The workflow ([`agent_workflow`]) is a loop around one dynamic step, `model`, of the
//! task type `agent_model` ([`AgentModel`]). Each turn it reads the run's state (the
//! agent's settings under `agent`, the opening messages under `messages`, the previous
//! turn under `turn` and the tools' results under `tool.TURN.N`), rebuilds the
//! conversation, asks the model, and answers an [`AgentTurn`]: the conversation so far,
//! the reply, the usage, and one task step per tool call (task type of the tool, the
//! call's arguments as input, output under `tool.TURN.N`). The loop ends when a turn calls
//! no tool (`turn.done`), or fails the run when `max_turns` pass without that.
//!
//! A tool call the agent cannot run (a tool it was not given, arguments that are not a
//! JSON object) runs no step: the model reads why in the tool's message and may try
//! again. A tool task that fails for good fails the run, naming the step.
//!
//! ```
//! use wrangle_actors::{agent_workflow, AgentRequest, AgentSpec, AgentTool, ChatMessage};
//!
//! let wf = agent_workflow("research", 8);
//! assert_eq!(wf.name(), "research");
//! let input = AgentRequest {
//!     agent: AgentSpec::new("gemma3").tool(AgentTool::new("fetch", "http_tool")),
//!     messages: vec![ChatMessage::new("user", "What is wrangle?")],
//! };
//! let state = serde_json::to_value(&input).unwrap();
//! assert_eq!(state["agent"]["tools"][0]["task_type"], "http_tool");
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use wrangle::workflow::{Condition, Op, Step, Workflow};
use wrangle::{TaskContext, TaskError, TaskOptions};

use crate::chat::{tool_name_ok, Chat, ChatApi, ChatInput, ChatMessage, ToolCall, ToolSpec, Usage};
use crate::compute::Placement;

/// The task type of the agent's model step.
pub const AGENT_MODEL: &str = "agent_model";
/// Most bytes of one tool result the model reads (more is cut, and it is told so).
pub const MAX_TOOL_RESULT: usize = 16 * 1024;

/// A tool the agent may call: offered to the model as `spec`, run as a task of `task_type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentTool {
    /// What the model sees.
    #[serde(flatten)]
    pub spec: ToolSpec,
    /// The registered task type that runs it; it receives the call's arguments.
    pub task_type: String,
    /// Options of its tasks (timeout, retries, labels, priority).
    #[serde(default)]
    pub options: TaskOptions,
}

impl AgentTool {
    /// The tool `name`, run by `task_type`, with no description and any object as
    /// arguments.
    pub fn new(name: impl Into<String>, task_type: impl Into<String>) -> Self {
        Self {
            spec: ToolSpec {
                name: name.into(),
                description: String::new(),
                parameters: json!({"type": "object"}),
            },
            task_type: task_type.into(),
            options: TaskOptions::default(),
        }
    }

    /// What it does, for the model.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.spec.description = text.into();
        self
    }

    /// The JSON Schema of its arguments.
    pub fn parameters(mut self, schema: Value) -> Self {
        self.spec.parameters = schema;
        self
    }
}

/// The agent's settings: the model it asks and the tools it may call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentSpec {
    /// Where the model runs.
    #[serde(flatten)]
    pub placement: Placement,
    /// The API the model's node speaks.
    #[serde(default)]
    pub api: ChatApi,
    /// The model.
    pub model: String,
    /// Its system prompt.
    #[serde(default)]
    pub system: Option<String>,
    /// The tools.
    #[serde(default)]
    pub tools: Vec<AgentTool>,
    /// OpenAI's `tool_choice` for every turn.
    #[serde(default)]
    pub tool_choice: Option<Value>,
    /// `tool_choice` for the first turn only (then `tool_choice`): make the model start
    /// with a tool, and still let it answer afterwards.
    #[serde(default)]
    pub first_tool_choice: Option<Value>,
    /// Most tokens per reply.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Stream each reply as task progress.
    #[serde(default)]
    pub stream: bool,
    /// Longest one model call may take, in milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

impl AgentSpec {
    /// An agent asking `model`, with no tools.
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            placement: Placement::default(),
            api: ChatApi::default(),
            model: model.into(),
            system: None,
            tools: Vec::new(),
            tool_choice: None,
            first_tool_choice: None,
            max_tokens: None,
            temperature: None,
            stream: false,
            timeout_ms: None,
        }
    }

    /// Adds a tool.
    pub fn tool(mut self, tool: AgentTool) -> Self {
        self.tools.push(tool);
        self
    }
}

/// What an agent run starts from: its state's `agent` and `messages`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentRequest {
    /// The settings.
    pub agent: AgentSpec,
    /// The opening messages (usually one from the user).
    pub messages: Vec<ChatMessage>,
}

/// One turn of the agent: what the model step answers, kept under `turn` in the state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentTurn {
    /// Which turn (0 first).
    pub turn: u32,
    /// The conversation, this turn's reply included.
    pub messages: Vec<ChatMessage>,
    /// The reply's text.
    pub reply: String,
    /// The tools it called.
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    /// Why calls could not run, by their place in `tool_calls`.
    #[serde(default)]
    pub refused: Map<String, Value>,
    /// True when it called no tool: the agent's answer.
    pub done: bool,
    /// This turn's tokens.
    pub usage: Usage,
    /// Every turn's tokens so far.
    pub total_usage: Usage,
    /// How long the model took, in milliseconds.
    pub latency_ms: u64,
    /// The node that answered.
    pub node: String,
    /// The steps that run the calls (the dynamic step's contract).
    pub steps: Vec<Value>,
}

/// The agent workflow `name`: turns of the model and its tools, at most `max_turns`.
pub fn agent_workflow(name: impl Into<String>, max_turns: u32) -> Workflow {
    Workflow::new(name).step(Step::Loop {
        name: "turns".into(),
        steps: vec![Step::dynamic("model", AGENT_MODEL)
            .output_key("turn")
            .max_steps(crate::chat::MAX_TOOLS as u32)
            .into()],
        until: Condition::new("turn.done", Op::Truthy, None),
        max_iterations: max_turns,
    })
}

/// The agent's model step (`agent_model`): one turn of the conversation.
#[derive(Clone, Debug)]
pub struct AgentModel {
    chat: Chat,
}

impl AgentModel {
    /// Asks models through `chat` (its cluster and rate limits).
    pub fn new(chat: Chat) -> Self {
        Self { chat }
    }
}

fn state_field<T: for<'de> Deserialize<'de>>(
    state: &Value,
    key: &str,
) -> Result<Option<T>, TaskError> {
    match state.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| TaskError::permanent(format!("state.{key}: {e}"))),
    }
}

/// A tool result as the model reads it: text as it is, anything else as JSON, cut at
/// [`MAX_TOOL_RESULT`].
fn result_text(v: &Value) -> String {
    let mut text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.len() > MAX_TOOL_RESULT {
        let mut end = MAX_TOOL_RESULT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(" [cut: the result was longer]");
    }
    text
}

/// The conversation the next turn sends: the last turn's, followed by one tool message
/// per call it made (its result from the state, or why it could not run).
pub(crate) fn conversation(
    state: &Value,
    opening: Vec<ChatMessage>,
    last: Option<&AgentTurn>,
) -> Vec<ChatMessage> {
    let Some(last) = last else {
        return opening;
    };
    let mut messages = last.messages.clone();
    for (i, call) in last.tool_calls.iter().enumerate() {
        let content = match last.refused.get(&i.to_string()) {
            Some(why) => format!("error: {}", result_text(why)),
            None => result_text(
                state
                    .get(format!("tool.{}.{i}", last.turn))
                    .unwrap_or(&Value::Null),
            ),
        };
        messages.push(ChatMessage {
            role: "tool".into(),
            content,
            tool_call_id: Some(call.id.clone()),
            name: Some(call.name.clone()),
            ..ChatMessage::default()
        });
    }
    messages
}

/// The steps running `calls` of turn `turn`, and the calls refused (by index).
pub(crate) fn tool_steps(
    spec: &AgentSpec,
    turn: u32,
    calls: &[ToolCall],
) -> (Vec<Value>, Map<String, Value>) {
    let mut steps = Vec::new();
    let mut refused = Map::new();
    for (i, call) in calls.iter().enumerate() {
        let Some(tool) = spec.tools.iter().find(|t| t.spec.name == call.name) else {
            let known: Vec<&str> = spec.tools.iter().map(|t| t.spec.name.as_str()).collect();
            refused.insert(
                i.to_string(),
                format!("no tool `{}` (tools: {})", call.name, known.join(", ")).into(),
            );
            continue;
        };
        if !call.arguments.is_object() {
            refused.insert(
                i.to_string(),
                format!("the arguments of `{}` must be a JSON object", call.name).into(),
            );
            continue;
        }
        steps.push(json!({
            "kind": "task",
            "name": format!("tool-{turn}-{i}-{}", call.name),
            "task_type": tool.task_type,
            "input": {"value": call.arguments},
            "output_key": format!("tool.{turn}.{i}"),
            "options": tool.options,
        }));
    }
    (steps, refused)
}

impl wrangle::TaskHandler for AgentModel {
    type Input = Value;
    type Output = AgentTurn;

    async fn handle(&self, ctx: TaskContext, state: Value) -> Result<AgentTurn, TaskError> {
        let spec: AgentSpec = state_field(&state, "agent")?
            .ok_or_else(|| TaskError::permanent("state.agent: the agent's settings are missing"))?;
        if let Some(t) = spec.tools.iter().find(|t| !tool_name_ok(&t.spec.name)) {
            return Err(TaskError::permanent(format!(
                "agent.tools.name: `{}` is not 1 to 64 characters of A-Z a-z 0-9 _ -",
                t.spec.name
            )));
        }
        let opening: Vec<ChatMessage> = state_field(&state, "messages")?.unwrap_or_default();
        let last: Option<AgentTurn> = state_field(&state, "turn")?;
        let messages = conversation(&state, opening, last.as_ref());
        let tool_choice = match (&last, &spec.first_tool_choice) {
            (None, Some(first)) => Some(first.clone()),
            _ => spec.tool_choice.clone(),
        };
        let input = ChatInput {
            placement: spec.placement.clone(),
            api: spec.api,
            model: spec.model.clone(),
            system: spec.system.clone(),
            messages,
            tools: spec.tools.iter().map(|t| t.spec.clone()).collect(),
            tool_choice,
            max_tokens: spec.max_tokens,
            temperature: spec.temperature,
            stream: spec.stream,
            timeout_ms: spec.timeout_ms,
        };
        let out = self.chat.call(&ctx, &input).await?;
        let turn = last.as_ref().map_or(0, |t| t.turn + 1);
        let usage = out.usage.unwrap_or_default();
        let mut total_usage = last.as_ref().map_or_else(Usage::default, |t| t.total_usage);
        total_usage.add(usage);
        let (steps, refused) = tool_steps(&spec, turn, &out.tool_calls);
        let mut messages = input.messages;
        messages.push(out.message());
        Ok(AgentTurn {
            turn,
            done: out.tool_calls.is_empty(),
            reply: out.content,
            tool_calls: out.tool_calls,
            refused,
            messages,
            usage,
            total_usage,
            latency_ms: out.latency_ms,
            node: out.node,
            steps,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str, name: &str, args: Value) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: args,
        }
    }

    #[test]
    fn tool_calls_become_steps_and_bad_ones_are_refused_for_the_model() {
        let spec = AgentSpec::new("m")
            .tool(AgentTool::new("fetch", "http_tool"))
            .tool(AgentTool::new("run", "shell"));
        let calls = [
            call("a", "fetch", json!({"url": "http://x"})),
            call("b", "launch_missiles", json!({})),
            call("c", "run", json!("not an object")),
            call("d", "run", json!({"program": "ls"})),
        ];
        let (steps, refused) = tool_steps(&spec, 3, &calls);
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0]["name"], "tool-3-0-fetch");
        assert_eq!(steps[0]["task_type"], "http_tool");
        assert_eq!(steps[0]["input"], json!({"value": {"url": "http://x"}}));
        assert_eq!(steps[0]["output_key"], "tool.3.0");
        assert_eq!(steps[1]["output_key"], "tool.3.3");
        assert!(refused["1"]
            .as_str()
            .unwrap()
            .contains("no tool `launch_missiles`"));
        assert!(refused["2"].as_str().unwrap().contains("JSON object"));
        // The steps are what a dynamic step may add.
        let parsed: Vec<Step> = serde_json::from_value(Value::Array(steps)).unwrap();
        assert_eq!(parsed.len(), 2);
    }

    #[test]
    fn the_next_turn_reads_each_call_result_in_order() {
        let last = AgentTurn {
            turn: 2,
            messages: vec![
                ChatMessage::new("user", "hi"),
                ChatMessage {
                    role: "assistant".into(),
                    tool_calls: vec![call("a", "fetch", json!({})), call("b", "nope", json!({}))],
                    ..ChatMessage::default()
                },
            ],
            reply: String::new(),
            tool_calls: vec![call("a", "fetch", json!({})), call("b", "nope", json!({}))],
            refused: [("1".to_string(), json!("no tool `nope`"))]
                .into_iter()
                .collect(),
            done: false,
            usage: Usage::default(),
            total_usage: Usage::default(),
            latency_ms: 0,
            node: "n".into(),
            steps: vec![],
        };
        let big = "x".repeat(MAX_TOOL_RESULT + 10);
        let state = json!({"tool.2.0": {"status": 200, "body": big}});
        let m = conversation(&state, vec![], Some(&last));
        assert_eq!(m.len(), 4);
        assert_eq!(
            (m[2].role.as_str(), m[2].tool_call_id.as_deref()),
            ("tool", Some("a"))
        );
        assert!(m[2].content.starts_with("{\"body\":\"xxx"));
        assert!(m[2].content.ends_with("[cut: the result was longer]"));
        assert_eq!(m[3].content, "error: no tool `nope`");
        // The first turn sends the opening messages.
        let opening = vec![ChatMessage::new("user", "hi")];
        assert_eq!(conversation(&json!({}), opening.clone(), None), opening);
    }
}
