//! A small research agent: a chat model that may fetch web pages (from an allowlist of
//! hosts) and run a few local programs (from an allowlist), run as a durable workflow on
//! the embedded store. Each model call and each tool call is a journaled step: kill the
//! program mid-conversation and run the same command again, and the agent goes on from
//! its journal without asking the model again what it already answered. It prints the
//! conversation and the tokens it used.
//!
//! ```text
//! # the local model of the tests (llama.cpp's server on port 8080):
//! cargo run --release --example agent -- --base-url http://127.0.0.1:8080 --model gemma \
//!     --prompt "What day is it? Use the date tool." --tool-choice shell
//! # any OpenAI-compatible service; the key is read from the environment, never a flag:
//! OPENAI_API_KEY=... cargo run --release --example agent -- --base-url https://api.openai.com \
//!     --model gpt-4o-mini --allow-host en.wikipedia.org --prompt "Who wrote Dune?"
//! ```
//!
//! A run left unfinished in the store (the program was killed) is resumed rather than a
//! new one started; `--fresh` starts a new one anyway.

use std::io::Write;
use std::time::Duration;

use serde_json::{json, Value};
use wrangle::compute::{ComputeCluster, ComputeConfig, ComputeNode};
use wrangle::workflow::RunStatus;
use wrangle::{Coordinator, CoordinatorConfig, HandlerRegistry, RestartBudget, StoreConfig};
use wrangle_actors::{
    agent_workflow, register_agent, AgentRequest, AgentSpec, AgentTool, AgentTurn, Chat,
    ChatMessage, HttpTool, Shell,
};

/// agent: a research agent with a web fetch tool and a shell tool.
#[derive(Debug, clap::Parser)]
#[command(name = "agent")]
struct Args {
    /// The OpenAI-compatible server (its `/v1/chat/completions` is called).
    #[arg(
        long = "base-url",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    base_url: String,
    /// The model.
    #[arg(long, default_value = "gemma", value_name = "NAME")]
    model: String,
    /// The environment variable holding the API key (sent as a bearer token), if set.
    #[arg(
        long = "api-key-env",
        default_value = "OPENAI_API_KEY",
        value_name = "NAME"
    )]
    api_key_env: String,
    /// The question.
    #[arg(
        long,
        default_value = "What is the date today? Answer in one sentence."
    )]
    prompt: String,
    /// Most model turns before the run fails.
    #[arg(long = "max-turns", default_value_t = 8, value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..=100))]
    max_turns: u32,
    /// Hosts the fetch tool may reach (repeat the flag); none: no fetch tool.
    #[arg(long = "allow-host", value_name = "HOST")]
    allow_hosts: Vec<String>,
    /// Let the fetch tool reach loopback and private addresses (local testing only).
    #[arg(long = "allow-private-addresses")]
    allow_private: bool,
    /// Programs the shell tool may run (repeat the flag).
    #[arg(long = "allow-program", value_name = "NAME",
        default_values_t = ["date".to_string(), "uname".to_string(), "echo".to_string()])]
    allow_programs: Vec<String>,
    /// Make the model start with this tool (`fetch` or `shell`), or `auto`, `none`,
    /// `required`, on the first turn; later turns choose freely. Small local models call
    /// tools only when told to.
    #[arg(long = "tool-choice", value_name = "CHOICE")]
    tool_choice: Option<String>,
    /// Most tokens per reply.
    #[arg(long = "max-tokens", default_value_t = 256, value_name = "N")]
    max_tokens: u32,
    /// Print the reply as it is generated.
    #[arg(long)]
    stream: bool,
    /// sqlite://PATH or postgres://...
    #[arg(
        long = "database-url",
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "sqlite://agent.db",
        value_name = "URL"
    )]
    url: String,
    /// Start a new run even when an unfinished one is in the store.
    #[arg(long)]
    fresh: bool,
}

fn tool_choice(choice: Option<&str>) -> Option<Value> {
    match choice? {
        c @ ("auto" | "none" | "required") => Some(json!(c)),
        name => Some(json!({"type": "function", "function": {"name": name}})),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Args = wrangle::settings::cli::parse();

    // The model's server, as a compute node; its key (if any) goes to a private file the
    // HTTP backend reads, so it is in no URL, flag or log.
    let keys = tempfile::tempdir()?;
    let mut node = ComputeNode::new("llm", &args.base_url)?
        .max_concurrent(4)
        .timeout(Duration::from_secs(300));
    if let Some(key) = std::env::var(&args.api_key_env)
        .ok()
        .filter(|k| !k.is_empty())
    {
        let path = keys.path().join("api-key");
        write_private(&path, &key)?;
        node = node.credential("api-key");
    }
    let compute = ComputeCluster::start_with(
        "agent",
        ComputeConfig {
            credentials_dir: Some(keys.path().to_path_buf()),
            ..ComputeConfig::default()
        },
        RestartBudget::default(),
    )
    .await?;
    compute.add_node(node).await?;

    let handlers = HandlerRegistry::new();
    register_agent(&handlers, Chat::new(compute.clone()));
    let mut spec = AgentSpec::new(&args.model);
    spec.system = Some(
        "You are a careful research assistant. Use the tools when they help; \
         answer briefly and say where facts came from."
            .into(),
    );
    spec.max_tokens = Some(args.max_tokens);
    spec.stream = args.stream;
    spec.first_tool_choice = tool_choice(args.tool_choice.as_deref());
    if !args.allow_hosts.is_empty() {
        let mut fetch = HttpTool::builder()
            .allow_private_addresses(args.allow_private)
            .max_response_bytes(256 * 1024);
        for host in &args.allow_hosts {
            fetch = fetch.allow_host(host);
        }
        handlers.register("fetch", fetch.build()?);
        spec = spec.tool(
            AgentTool::new("fetch", "fetch")
                .description(format!(
                    "HTTP GET a URL on one of these hosts: {}",
                    args.allow_hosts.join(", ")
                ))
                .parameters(json!({
                    "type": "object",
                    "properties": {"url": {"type": "string"}},
                    "required": ["url"],
                })),
        );
    }
    handlers.register(
        "shell",
        Shell {
            allowed_programs: Some(args.allow_programs.clone()),
            default_timeout: Duration::from_secs(10),
            max_output_bytes: 64 * 1024,
            ..Shell::default()
        },
    );
    spec = spec.tool(
        AgentTool::new("shell", "shell")
            .description(format!(
                "Run one of these programs: {} (no shell; arguments as a list)",
                args.allow_programs.join(", ")
            ))
            .parameters(json!({
                "type": "object",
                "properties": {
                    "program": {"type": "string", "enum": args.allow_programs},
                    "args": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["program"],
            })),
    );

    let coordinator = Coordinator::builder()
        .config(CoordinatorConfig {
            store: Some(StoreConfig::new(&args.url)),
            ..CoordinatorConfig::default()
        })
        .handlers(handlers)
        .compute(compute)
        .workflow(agent_workflow("agent", args.max_turns))
        .start()
        .await?;
    let flows = coordinator.workflows();
    let unfinished = flows
        .list(Some(RunStatus::Running), 1)
        .await?
        .into_iter()
        .find(|r| r.workflow == "agent");
    let run = match unfinished {
        Some(run) if !args.fresh => {
            println!(
                "resuming run {} ({} steps done)",
                run.id, run.steps_completed
            );
            run.id
        }
        _ => {
            let request = AgentRequest {
                agent: spec,
                messages: vec![ChatMessage::new("user", &args.prompt)],
            };
            flows
                .start("agent", serde_json::to_value(&request)?)
                .await?
        }
    };
    if args.stream {
        // The reply's pieces arrive as the progress of the model step's task.
        let mut events = coordinator.events().subscribe();
        tokio::spawn(async move {
            while let Ok(event) = events.recv().await {
                if let wrangle::EventKind::TaskProgress { message, .. } = &event.kind {
                    print!("{message}");
                    let _ = std::io::stdout().flush();
                }
            }
        });
    }
    let done = flows.wait(run, Duration::from_secs(3600)).await?;
    if let Some(turn) = done.state.get("turn") {
        let turn: AgentTurn = serde_json::from_value(turn.clone())?;
        print_conversation(&turn);
    }
    coordinator.stop(true).await?;
    if done.status == RunStatus::Completed {
        Ok(())
    } else {
        Err(format!(
            "run ended {}: {}",
            done.status,
            done.error.unwrap_or_default()
        )
        .into())
    }
}

fn print_conversation(turn: &AgentTurn) {
    println!();
    for m in &turn.messages {
        let text = m.content.trim();
        match m.role.as_str() {
            "tool" => println!(
                "[tool {}] {}",
                m.name.as_deref().unwrap_or("?"),
                text.chars().take(300).collect::<String>()
            ),
            role => {
                if !text.is_empty() {
                    println!("[{role}] {text}");
                }
                for c in &m.tool_calls {
                    println!("[{role} calls {}] {}", c.name, c.arguments);
                }
            }
        }
    }
    println!(
        "usage: {} turns, {} prompt tokens, {} completion tokens",
        turn.turn + 1,
        turn.total_usage.prompt_tokens,
        turn.total_usage.completion_tokens
    );
}

#[cfg(unix)]
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}
