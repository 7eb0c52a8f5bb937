//! The node program: a pool of workers on this machine that joins a coordinator over the
//! network and pulls tasks from its queue. It runs the `wrangle-actors` handlers (`echo`,
//! `sleep`, `fail`); tasks that require labels only land on nodes that have them. If the
//! coordinator goes away the node keeps reconnecting; SIGTERM (or Ctrl-C) drains it: running
//! tasks finish, then it leaves.
//!
//! ```text
//! cargo run --release --example coordinator -- --cluster-listen 0.0.0.0:7450 --cookie s3cret
//! cargo run --release --example node -- --join 127.0.0.1:7450 --cookie-file cookie.txt --labels gpu=a100,region=eu --workers 4
//! WRANGLE_COOKIE=s3cret cargo run --release --example node -- --join 127.0.0.1:7450
//! cargo run --release --example node -- --help
//! ```
//!
//! `--cookie` shows in `ps` to every user of the machine: prefer `--cookie-file` or the
//! `WRANGLE_COOKIE` / `WRANGLE_COOKIE_FILE` environment variables. Without `--tls-ca` the
//! session is clear text: the cookie's challenge digest (a weak cookie can be guessed from
//! it offline) and every task and result after it can be read and altered on the path.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use wrangle::{HandlerRegistry, Node, NodeConfig};

#[path = "node/journal.rs"]
mod journal;

const USAGE: &str = "\
wrangle node: workers on this machine that join a coordinator and run its tasks.

USAGE:
    cargo run --release --example node -- --join HOST:PORT --cookie-file PATH [OPTIONS]

OPTIONS:
    --join <HOST:PORT>    the coordinator's cluster address (env WRANGLE_JOIN)
    --cookie <SECRET>     the coordinator's cookie (env WRANGLE_COOKIE); shows in `ps`:
                          prefer --cookie-file or the environment
    --cookie-file <PATH>  read the cookie from this file (env WRANGLE_COOKIE_FILE)
    --name <NAME>         this node's name, unique in the cluster; default node-<random>
                          (env WRANGLE_NODE_NAME)
    --labels <A,B=C>      labels tasks can require, comma-separated (env WRANGLE_LABELS)
    --workers <N>         workers in the pool; default 4
    --slots <N>           tasks each worker runs at once; default 4
    --tls-ca <PATH>       trust this CA (PEM) and talk TLS to the coordinator
    --tls-server-name <NAME>
                          the name on the coordinator's certificate; default the --join host
    --heartbeat-ms <MS>   heartbeat until the coordinator sets its own; default 1000
    --journal <PATH>      also serve `journal` tasks (for tests): each run appends
                          `TASK_ID ATTEMPT NODE [TAG]` to PATH, then waits for the
                          payload's `hold_file`, sleeps its `ms` (see examples/node/journal.rs)
    -h, --help            print this help
";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut join = env("WRANGLE_JOIN");
    let mut cookie = env("WRANGLE_COOKIE");
    let mut cookie_file = env("WRANGLE_COOKIE_FILE");
    let mut name = env("WRANGLE_NODE_NAME");
    let mut labels = env("WRANGLE_LABELS");
    let mut workers = 4usize;
    let mut slots = 4u32;
    let mut tls_ca: Option<PathBuf> = None;
    let mut tls_server_name = None;
    let mut heartbeat_ms = 1_000u64;
    let mut journal: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        let number = |name: &str, v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{name}: `{v}` is not a whole number"))
        };
        match arg.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(());
            }
            "--join" => join = Some(value("--join")?),
            "--cookie" => cookie = Some(value("--cookie")?),
            "--cookie-file" => cookie_file = Some(value("--cookie-file")?),
            "--name" => name = Some(value("--name")?),
            "--labels" => labels = Some(value("--labels")?),
            "--workers" => workers = number("--workers", value("--workers")?)? as usize,
            "--slots" => slots = number("--slots", value("--slots")?)? as u32,
            "--tls-ca" => tls_ca = Some(value("--tls-ca")?.into()),
            "--tls-server-name" => tls_server_name = Some(value("--tls-server-name")?),
            "--heartbeat-ms" => heartbeat_ms = number("--heartbeat-ms", value("--heartbeat-ms")?)?,
            "--journal" => journal = Some(value("--journal")?.into()),
            other => return Err(format!("unknown argument `{other}` (see --help)").into()),
        }
    }
    let join = join.ok_or("--join HOST:PORT is required (see --help)")?;
    if let Some(path) = cookie_file {
        cookie = Some(wrangle::settings::read_secret_file(
            "--cookie-file",
            path.as_ref(),
        )?);
    }
    let cookie = cookie.ok_or("--cookie-file or --cookie is required (see --help)")?;
    let mut config = NodeConfig::new(join, cookie);
    if let Some(n) = name {
        config.name = n;
    }
    config.labels = labels
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    config.workers = workers;
    config.worker.max_concurrent_tasks = slots;
    config.tls_ca = tls_ca;
    config.tls_server_name = tls_server_name;
    config.heartbeat_interval = Duration::from_millis(heartbeat_ms);
    config.validate()?;

    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(config, journal))
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
    println!(
        "wrangle node {} joining {} with {} workers x {} slots, labels {:?}",
        node.name(),
        config.coordinator,
        config.workers,
        config.worker.max_concurrent_tasks,
        config.labels
    );
    wrangle::shutdown_signal().await;
    println!("stopping: letting running tasks finish (Ctrl-C again to stop at once)...");
    tokio::select! {
        r = node.stop(true) => r?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("stopped at once: the coordinator runs this node's tasks elsewhere");
            std::process::exit(130);
        }
    }
    println!("stopped");
    Ok(())
}
