//! The node program: a pool of workers on this machine that joins a coordinator over the
//! network and pulls tasks from its queue. It runs the `wrangle-actors` handlers (`echo`,
//! `sleep`, `fail`); tasks that require labels only land on nodes that have them. If the
//! coordinator goes away the node keeps reconnecting; SIGTERM (or Ctrl-C) drains it: running
//! tasks finish, then it leaves.
//!
//! For failover, give it several coordinators' addresses (`--join A,B`, `WRANGLE_JOIN=A,B`,
//! or `join = ["A", "B"]` under `[node]`): it joins whichever accepts it (the leader; standbys
//! do not listen), and when that one dies, freezes or stops listening it moves on to the
//! next address by itself, at once; it backs off only after every address failed in a row.
//!
//! ```text
//! cargo run --release --example coordinator -- --cluster-listen 0.0.0.0:7450 --cookie s3cret
//! cargo run --release --example node -- --join 127.0.0.1:7450 --cookie-file cookie.txt --labels gpu=a100,region=eu --workers 4
//! cargo run --release --example node -- --join 10.0.0.5:7450,10.0.0.6:7450 --cookie-file cookie.txt   # failover
//! WRANGLE_COOKIE=s3cret cargo run --release --example node -- --join 127.0.0.1:7450
//! cargo run --release --example node -- --config wrangle.toml   # `cookie` and `[node]`
//! cargo run --release --example node -- --help
//! cargo run --release --example node --features otel -- --otel-endpoint http://127.0.0.1:4318
//! ```
//!
//! It reads the coordinator's settings file (`--config`, else `./wrangle.toml`): its `cookie`
//! and its `[node]` section; every setting is also a flag with a `WRANGLE_*` variable.
//!
//! `--cookie` shows in `ps` to every user of the machine: prefer `--cookie-file` or the
//! `WRANGLE_COOKIE` / `WRANGLE_COOKIE_FILE` environment variables. Without `--tls-ca` the
//! session is clear text: the cookie's challenge digest (a weak cookie can be guessed from
//! it offline) and every task and result after it can be read and altered on the path.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use wrangle::settings::cli::NodeArgs;
use wrangle::{HandlerRegistry, Node, NodeConfig};

#[path = "program/mod.rs"]
mod program;

use program::{complain, init_logging, say};

#[path = "node/journal.rs"]
mod journal;

/// wrangle node: workers on this machine that join a coordinator and run its tasks.
#[derive(Debug, Parser)]
#[command(name = "node", after_help = wrangle::settings::cli::PRECEDENCE)]
struct Cli {
    #[command(flatten)]
    node: NodeArgs,
    /// Also serve `journal` tasks (for tests): each run appends `TASK_ID ATTEMPT NODE [TAG]`
    /// to PATH, then waits for the payload's `hold_file` and sleeps its `ms`
    /// (examples/node/journal.rs).
    #[arg(long, value_name = "PATH")]
    journal: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli: Cli = wrangle::settings::cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            complain!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let config = cli.node.node_config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // The OTel exporter batches on the runtime: the log layers are built inside it.
    let telemetry = {
        let _inside = runtime.enter();
        init_logging(
            cli.node.log_format,
            #[cfg(feature = "otel")]
            cli.node.otel_endpoint.as_deref(),
            "wrangle-node",
        )?
    };
    let served = runtime.block_on(serve(config, cli.journal));
    program::finish(&runtime, telemetry);
    served
}

async fn serve(
    config: NodeConfig,
    journal: Option<PathBuf>,
) -> Result<(), Box<dyn std::error::Error>> {
    let handlers = HandlerRegistry::new();
    wrangle_actors::register_all(&handlers);
    if let Some(path) = journal {
        journal::register(&handlers, &path, &config.name)?;
    }
    let node = Node::join(config.clone(), handlers).await?;
    say!(
        "wrangle node {} joining {} with {} workers x {} slots, labels {:?}",
        node.name(),
        config.coordinators().collect::<Vec<_>>().join(","),
        config.workers,
        config.worker.max_concurrent_tasks,
        config.labels
    );
    wrangle::shutdown_signal().await;
    say!("stopping: letting running tasks finish (Ctrl-C again to stop at once)...");
    tokio::select! {
        r = node.stop(true) => r?,
        _ = tokio::signal::ctrl_c() => {
            complain!("stopped at once: the coordinator runs this node's tasks elsewhere");
            std::process::exit(130);
        }
    }
    say!("stopped");
    Ok(())
}
