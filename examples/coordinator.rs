//! The coordinator program: a coordinator with an autoscaled local worker pool running the
//! `wrangle-actors` handlers (`echo`, `sleep`, `fail`), the HTTP API and the live dashboard.
//! Tasks are stored in `wrangle.db` (SQLite) unless told otherwise, so a restart picks up
//! where the last run stopped. Ctrl-C (or SIGTERM) stops it gracefully: queued and running
//! tasks finish first.
//!
//! ```text
//! cargo run --release --example coordinator
//! cargo run --release --example coordinator -- --bind 127.0.0.1:8080 --config wrangle.toml
//! DATABASE_URL=postgres://wrangle:secret@127.0.0.1/wrangle cargo run --release --example coordinator
//! cargo run --release --example coordinator -- --cluster-listen 0.0.0.0:7450 --cookie-file cookie.txt
//! cargo run --release --example coordinator -- --help
//! ```
//!
//! Secrets: `--cookie` and `--token` show in `ps` to every user of the machine; give the
//! cookie with `--cookie-file` or the `WRANGLE_COOKIE` / `WRANGLE_COOKIE_FILE` environment
//! variables instead (and the token with `WRANGLE_TOKEN`). Without TLS (`WRANGLE_CLUSTER_TLS_CERT`
//! and `_KEY`) the cookie is not sent as such, but its challenge digest is (a weak cookie can
//! be guessed from it offline), and every frame after the handshake (tasks, results, the
//! node's session key) crosses in clear text, open to reading and injection on the path.

use std::path::PathBuf;
use std::process::ExitCode;

use wrangle::compute::ComputeCluster;
use wrangle::settings::{Settings, ENV_VARS};
use wrangle::{Coordinator, HandlerRegistry};

const USAGE: &str = "\
wrangle coordinator: the task queue, an autoscaled worker pool, the HTTP API and dashboard.

USAGE:
    cargo run --release --example coordinator -- [OPTIONS]

OPTIONS:
    --config <PATH>   settings file (TOML); default ./wrangle.toml when present
    --bind <ADDR>     where the HTTP server listens; default 127.0.0.1:7700
    --token <TOKEN>   require this bearer token (every scope) on every route but /healthz
                      and the dashboard's login page; scoped tokens go in the file
                      (`tokens = [...]`) or WRANGLE_TOKENS; shows in `ps`: prefer
                      --token-file or WRANGLE_TOKEN
    --token-file <PATH>
                      read the token from this file (its trailing newline dropped)
    --dangerously-allow-public-without-token
                      let --bind name an address beyond loopback with no token: anyone who
                      reaches the port controls the coordinator (refused otherwise)
    --database-url <URL>
                      where tasks are stored: sqlite://PATH (created on first start),
                      postgres://USER:PASSWORD@HOST:PORT/DB, or `memory`;
                      default sqlite://wrangle.db (also DATABASE_URL)
    --cluster-listen <ADDR>
                      let nodes join here (for example 0.0.0.0:7450); off by default
    --cookie <SECRET> the secret nodes must present (required with --cluster-listen);
                      shows in `ps`: prefer --cookie-file or WRANGLE_COOKIE
    --cookie-file <PATH>
                      read the cookie from this file (its trailing newline dropped)
    --tls-cert <PEM>, --tls-key <PEM>
                      serve the API over HTTPS with this certificate chain and key
    -h, --help        print this help

Settings come from the file, then WRANGLE_* environment variables, then these flags.
The file uses the setting names below (for example `max_workers = 16`).
Without TLS, node sessions (every task and result) cross the network in clear text.
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
    let mut config: Option<PathBuf> = None;
    let mut bind = None;
    let mut token = None;
    let mut database_url = None;
    let mut cluster_listen = None;
    let mut cookie = None;
    let mut public_without_token = false;
    let mut tls_cert = None;
    let mut tls_key = None;
    let mut cookie_file = None;
    let mut token_file = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}\nENVIRONMENT:\n");
                for (var, setting) in ENV_VARS {
                    println!("    {var:<32} {setting}");
                }
                return Ok(());
            }
            "--config" => config = Some(value("--config")?.into()),
            "--bind" => bind = Some(value("--bind")?),
            "--token" => token = Some(value("--token")?),
            "--token-file" => token_file = Some(value("--token-file")?),
            "--database-url" => database_url = Some(value("--database-url")?),
            "--cluster-listen" => cluster_listen = Some(value("--cluster-listen")?),
            "--cookie" => cookie = Some(value("--cookie")?),
            "--dangerously-allow-public-without-token" => public_without_token = true,
            "--tls-cert" => tls_cert = Some(value("--tls-cert")?),
            "--tls-key" => tls_key = Some(value("--tls-key")?),
            "--cookie-file" => cookie_file = Some(value("--cookie-file")?),
            other => return Err(format!("unknown argument `{other}` (see --help)").into()),
        }
    }
    let mut settings = Settings::load(config.as_deref(), std::env::vars())?;
    if let Some(b) = bind {
        settings.apply_env("WRANGLE_BIND", &b)?;
    }
    if let Some(t) = token {
        settings.apply_env("WRANGLE_TOKEN", &t)?;
    }
    if let Some(url) = database_url {
        settings.apply_env("WRANGLE_DATABASE_URL", &url)?;
    }
    if let Some(listen) = cluster_listen {
        settings.apply_env("WRANGLE_CLUSTER_LISTEN", &listen)?;
    }
    if let Some(c) = cookie {
        settings.apply_env("WRANGLE_COOKIE", &c)?;
    }
    if let Some(path) = token_file {
        settings.apply_env("WRANGLE_TOKEN_FILE", &path)?;
    }
    if let Some(path) = cookie_file {
        settings.apply_env("WRANGLE_COOKIE_FILE", &path)?;
    }
    if let Some(path) = tls_cert {
        settings.apply_env("WRANGLE_TLS_CERT", &path)?;
    }
    if let Some(path) = tls_key {
        settings.apply_env("WRANGLE_TLS_KEY", &path)?;
    }
    if public_without_token {
        settings.dangerously_allow_public_without_token = true;
    }
    settings.validate()?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(settings))
}

async fn serve(settings: Settings) -> Result<(), Box<dyn std::error::Error>> {
    let handlers = HandlerRegistry::new();
    wrangle_actors::register_all(&handlers);
    // External compute nodes from `[[compute.nodes]]`; more can be added at run time
    // (`POST /compute/nodes`). Tasks reach them as `http_call`, `remote_command` and `chat`.
    let compute = ComputeCluster::start_with(
        "compute",
        settings.compute.config()?,
        wrangle::RestartBudget::default(),
    )
    .await?;
    for node in settings.compute.nodes()? {
        let id = node.id().to_string();
        compute.add_node(node).await?;
        println!("compute node {id} added");
    }
    wrangle_actors::register_compute(&handlers, &compute);
    let coordinator = Coordinator::builder()
        .config(settings.coordinator_config())
        .handlers(handlers)
        .compute(compute)
        .start()
        .await?;
    match coordinator.store() {
        Some(store) => {
            let recovered = coordinator.queue().stats().await?.recovered;
            println!(
                "store: {} ({recovered} unfinished tasks recovered)",
                store.config().redacted_url()
            );
        }
        None => println!("store: none (tasks are kept in memory only)"),
    }
    let listener = tokio::net::TcpListener::bind(settings.bind)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.bind))?;
    let addr = listener.local_addr()?;
    let scheme = if settings.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    println!("wrangle coordinator listening on {addr}");
    if settings.is_public_without_token() {
        eprintln!(
            "WARNING: the API listens on {addr}, beyond this machine, with NO TOKEN: anyone who \
             reaches this port can submit, cancel and scale (--dangerously-allow-public-without-token)"
        );
    }
    if let Some(listen) = settings.cluster_listen {
        println!(
            "nodes join at {listen}: cargo run --release --example node -- --join {listen} \
             --cookie <COOKIE>"
        );
    }
    // The token is never printed: the dashboard asks for it once and keeps it in a cookie.
    let login = if settings.token.is_some() || !settings.tokens.is_empty() {
        " (log in with your token)"
    } else {
        ""
    };
    println!("dashboard: {scheme}://{addr}/{login}");
    let app = wrangle::api::router(coordinator.clone(), settings.api_config());
    wrangle::api::serve_with(
        listener,
        app,
        settings.serve_config(),
        wrangle::shutdown_signal(),
    )
    .await?;
    println!("stopping: letting queued and running tasks finish (Ctrl-C again to stop at once)...");
    let progress = {
        let c = coordinator.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Ok(s) = c.queue().stats().await {
                    println!(
                        "stopping: {} waiting, {} running, {} completed",
                        s.queue_size, s.running, s.completed
                    );
                }
            }
        })
    };
    let report = tokio::select! {
        r = coordinator.stop(true) => r?,
        _ = tokio::signal::ctrl_c() => {
            let left = coordinator
                .queue()
                .stats()
                .await
                .map(|s| s.queue_size + s.running)
                .unwrap_or(0);
            eprintln!("stopped at once: {left} tasks unfinished were dropped");
            std::process::exit(130);
        }
    };
    progress.abort();
    println!(
        "stopped: {} tasks completed, {} unfinished",
        report.completed, report.unfinished
    );
    Ok(())
}
