//! Ready-made agent actors for wrangle, written only against its public API: the proof that
//! users extend wrangle by writing handlers of their own.
//!
//! - [`Echo`] returns its input.
//! - [`Sleep`] waits, reporting progress, and honours cancellation.
//! - [`Fail`] fails on purpose: retryably, permanently, or by panicking.
//! - [`Shell`] (Unix) runs a local program: no shell interpolation unless asked for, a
//!   cleared environment but for an allowlist, a time limit, capped output, and its whole
//!   process group stopped on a timeout or cancellation.
//! - [`HttpTool`] sends a GET or POST to a host on its allowlist: every redirect and every
//!   connection's address checked (no loopback, private, link-local or metadata address,
//!   whatever DNS answers), capped sizes, a time limit, a JSON or text result.
//!
//! [`register_all`] adds them under their usual task types (`echo`, `sleep`, `fail`,
//! `shell`).
//!
//! With a [`ComputeCluster`](wrangle::compute::ComputeCluster), [`HttpCall`],
//! [`RemoteCommand`] and [`Chat`] send work to external nodes; [`register_compute`] adds
//! them as `http_call`, `remote_command` and `chat` (and the agent's `agent_model`).
//!
//! An agent ([`agent_workflow`], [`AgentModel`]) is a chat model that calls tools, run as a
//! durable workflow: each model call and each tool call is a journaled step, so a run
//! survives its coordinator's death without repeating completed calls. [`register_agent`]
//! adds its model step as `agent_model`.

mod agent;
mod chat;
mod compute;
mod http_tool;
#[cfg(unix)]
mod shell;

pub use agent::{
    agent_workflow, AgentModel, AgentRequest, AgentSpec, AgentTool, AgentTurn, AGENT_MODEL,
    MAX_TOOL_RESULT,
};
pub use chat::{
    Chat, ChatApi, ChatInput, ChatMessage, ChatOutput, RateLimit, ToolCall, ToolSpec, Usage,
    MAX_MESSAGES, MAX_TOOLS,
};
pub use compute::{
    HttpCall, HttpCallInput, HttpCallOutput, Placement, RemoteCommand, RemoteCommandInput,
    RemoteCommandOutput,
};
pub use http_tool::{
    HttpBody, HttpMethod, HttpTool, HttpToolBuilder, HttpToolConfigError, HttpToolInput,
    HttpToolOutput,
};
#[cfg(unix)]
pub use shell::{Shell, ShellInput, ShellOutput};

use std::time::Duration;

use serde::Deserialize;
use wrangle::{HandlerRegistry, TaskContext, TaskError, TaskHandler};

/// Returns its input unchanged (any JSON). The no-op task of benchmarks.
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

impl TaskHandler for Echo {
    type Input = serde_json::Value;
    type Output = serde_json::Value;

    async fn handle(
        &self,
        _ctx: TaskContext,
        input: serde_json::Value,
    ) -> Result<serde_json::Value, TaskError> {
        Ok(input)
    }
}

/// Input of [`Sleep`].
#[derive(Clone, Copy, Debug, Deserialize)]
pub struct SleepInput {
    /// How long to sleep, in milliseconds.
    pub ms: u64,
}

/// Sleeps for `ms` milliseconds in ten steps, reporting progress after each, and stops
/// early when cancelled. Returns the milliseconds slept.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sleep;

impl TaskHandler for Sleep {
    type Input = SleepInput;
    type Output = u64;

    async fn handle(&self, ctx: TaskContext, input: SleepInput) -> Result<u64, TaskError> {
        let step = Duration::from_millis(input.ms) / 10;
        for i in 1..=10u32 {
            tokio::select! {
                _ = ctx.cancelled() => return Err(TaskError::permanent("cancelled")),
                _ = tokio::time::sleep(step) => {}
            }
            ctx.progress(
                i as f32 / 10.0,
                format!("slept {} ms", (step * i).as_millis()),
            );
        }
        Ok(input.ms)
    }
}

/// How [`Fail`] fails.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// A retryable error.
    #[default]
    Retryable,
    /// A permanent error (no retry).
    Permanent,
    /// A panic inside the handler.
    Panic,
}

/// Input of [`Fail`].
#[derive(Clone, Debug, Default, Deserialize)]
pub struct FailInput {
    /// How to fail. Default `retryable`.
    #[serde(default)]
    pub mode: FailMode,
    /// Succeed from this attempt on (1-based); never when absent.
    #[serde(default)]
    pub succeed_on_attempt: Option<u32>,
    /// The error message. Default `failed on purpose`.
    #[serde(default)]
    pub message: Option<String>,
}

/// Fails on purpose, for tests and drills; with `succeed_on_attempt` it recovers after some
/// retries and returns the attempt number it succeeded on.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fail;

impl TaskHandler for Fail {
    type Input = FailInput;
    type Output = u32;

    async fn handle(&self, ctx: TaskContext, input: FailInput) -> Result<u32, TaskError> {
        if input.succeed_on_attempt.is_some_and(|n| ctx.attempt() >= n) {
            return Ok(ctx.attempt());
        }
        let message = input
            .message
            .unwrap_or_else(|| "failed on purpose".to_string());
        match input.mode {
            FailMode::Retryable => Err(TaskError::retryable(message)),
            FailMode::Permanent => Err(TaskError::permanent(message)),
            FailMode::Panic => panic!("{message}"),
        }
    }
}

/// Registers [`Echo`], [`Sleep`] and [`Fail`] as `echo`, `sleep` and `fail`.
///
/// [`Shell`] is not among them: it runs programs on the machine for whoever may submit
/// tasks, so a program registers it on purpose ([`register_shell`]).
pub fn register_all(handlers: &HandlerRegistry) {
    handlers.register("echo", Echo);
    handlers.register("sleep", Sleep);
    handlers.register("fail", Fail);
}

/// Registers [`Shell`] with its defaults as `shell`: every holder of a token that may
/// submit tasks can then run programs on this machine (within its allowlisted
/// environment, timeouts and output caps). Register it only where that is intended.
#[cfg(unix)]
pub fn register_shell(handlers: &HandlerRegistry) {
    handlers.register("shell", Shell::default());
}

/// Registers `tool` as `http_tool`: every holder of a token that may submit tasks can then
/// make requests from this machine to the hosts on its allowlist. Like [`register_shell`],
/// it is not in [`register_all`]; register it only where that is intended.
pub fn register_http_tool(handlers: &HandlerRegistry, tool: HttpTool) {
    handlers.register("http_tool", tool);
}

/// Registers [`HttpCall`], [`RemoteCommand`] and [`Chat`], each sending to `cluster`, as
/// `http_call`, `remote_command` and `chat`, and the agent's model step ([`AgentModel`])
/// as `agent_model` (register [`agent_workflow`] too, to run agents).
pub fn register_compute(handlers: &HandlerRegistry, cluster: &wrangle::compute::ComputeCluster) {
    handlers.register("http_call", HttpCall::new(cluster.clone()));
    handlers.register("remote_command", RemoteCommand::new(cluster.clone()));
    let chat = Chat::new(cluster.clone());
    handlers.register("chat", chat.clone());
    register_agent(handlers, chat);
}

/// Registers the agent's model step ([`AgentModel`]) as `agent_model`, asking models
/// through `chat`. Register the workflow itself with
/// `coordinator.workflows().register(agent_workflow(name, max_turns))`, and the tools'
/// task types as usual.
pub fn register_agent(handlers: &HandlerRegistry, chat: Chat) {
    handlers.register(AGENT_MODEL, AgentModel::new(chat));
}
