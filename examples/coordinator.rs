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
//! cargo run --release --example coordinator --features otel -- --otel-endpoint http://127.0.0.1:4318
//! ```
//!
//! On PostgreSQL it runs with failover: start it two or more times on one database and one
//! leads while the others stand by, taking over when the leader dies or freezes (see the
//! README, "Failover"; `wrangle::failover`). An SQLite file has one coordinator.
//!
//! Every setting is a flag with a `WRANGLE_*` environment variable, and a key of the
//! settings file (`wrangle.toml`); `--help` lists them ([`wrangle::settings::cli`]).
//!
//! Secrets: `--cookie` and `--token` show in `ps` to every user of the machine; give the
//! cookie with `--cookie-file` or the `WRANGLE_COOKIE` / `WRANGLE_COOKIE_FILE` environment
//! variables instead (and the token with `--token-file` or `WRANGLE_TOKEN`). Without TLS (`WRANGLE_CLUSTER_TLS_CERT`
//! and `_KEY`) the cookie is not sent as such, but its challenge digest is (a weak cookie can
//! be guessed from it offline), and every frame after the handshake (tasks, results, the
//! node's session key) crosses in clear text, open to reading and injection on the path.

use std::io::Write;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;
use wrangle::compute::ComputeCluster;
use wrangle::failover::Failover;
use wrangle::settings::cli::CoordinatorArgs;
use wrangle::settings::Settings;
use wrangle::{Coordinator, HandlerRegistry};

#[path = "program/mod.rs"]
mod program;

use program::{complain, init_logging, say};

fn main() -> ExitCode {
    // `--help` and bad flags end here, with clap's message (a closed stdout is no panic).
    let args: CoordinatorArgs = wrangle::settings::cli::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            complain!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: CoordinatorArgs) -> Result<(), Box<dyn std::error::Error>> {
    let settings = args.settings()?;
    if args.check {
        // Secrets show as `<redacted>`, a database password as `***`.
        let _ = writeln!(std::io::stdout(), "{settings:#?}");
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // The OTel exporter batches on the runtime: the log layers are built inside it.
    let telemetry = {
        let _inside = runtime.enter();
        init_logging(
            args.log_format,
            #[cfg(feature = "otel")]
            args.otel_endpoint.as_deref(),
            "wrangle-coordinator",
        )?
    };
    let served = runtime.block_on(serve(settings));
    program::finish(&runtime, telemetry);
    served
}

async fn serve(settings: Settings) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind(settings.bind)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.bind))?;
    if settings.is_postgres() {
        return serve_with_failover(settings, listener).await;
    }
    let coordinator = build(&settings, None).await?;
    match coordinator.store() {
        Some(store) => {
            let recovered = coordinator.queue().stats().await?.recovered;
            say!(
                "store: {} ({recovered} unfinished tasks recovered)",
                store.config().redacted_url()
            );
        }
        None => say!("store: none (tasks are kept in memory only)"),
    }
    announce(&settings, &listener)?;
    let app = wrangle::api::router(coordinator.clone(), settings.api_config());
    wrangle::api::serve_with(
        listener,
        app,
        settings.serve_config(),
        wrangle::shutdown_signal(),
    )
    .await?;
    stop_gracefully(&coordinator).await
}

/// The coordinator with its handlers, compute nodes, node groups and workflows; on
/// `store` when given (failover: the store this program leads with), else on the store
/// the settings name.
async fn build(
    settings: &Settings,
    store: Option<wrangle::Store>,
) -> Result<Coordinator, Box<dyn std::error::Error>> {
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
        say!("compute node {id} added");
    }
    wrangle_actors::register_compute(&handlers, &compute);
    let mut builder = Coordinator::builder()
        .config(settings.coordinator_config())
        .handlers(handlers);
    if let Some(store) = store {
        builder = builder.store(store);
    }
    // Nodes launched and stopped by the coordinator itself, from `[[node_groups]]`.
    for group in &settings.node_groups {
        let (config, launcher) = group.build(&compute)?;
        say!(
            "node group {}: {} nodes ({}..={})",
            config.name,
            launcher.kind(),
            config.min_nodes,
            config.max_nodes
        );
        builder = builder.node_group(config, launcher);
    }
    // Agents over HTTP: `POST /workflows/agent/runs` with `{"agent": {...}, "messages": [...]}`
    // (see wrangle_actors::AgentRequest); tools are any registered task types.
    builder = builder.workflow(wrangle_actors::agent_workflow("agent", 16));
    Ok(builder.compute(compute).start().await?)
}

/// Where the API, the dashboard and the cluster listen, and warnings about them.
fn announce(
    settings: &Settings,
    listener: &tokio::net::TcpListener,
) -> Result<(), Box<dyn std::error::Error>> {
    let addr = listener.local_addr()?;
    let scheme = if settings.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    say!("wrangle coordinator listening on {addr}");
    if settings.is_public_without_token() {
        complain!(
            "WARNING: the API listens on {addr}, beyond this machine, with NO TOKEN: anyone who \
             reaches this port can submit, cancel and scale (--dangerously-allow-public-without-token)"
        );
    }
    if let Some(listen) = settings.cluster_listen {
        say!(
            "nodes join at {listen}: cargo run --release --example node -- --join {listen} \
             --cookie-file <PATH>"
        );
    }
    // The token is never printed: the dashboard asks for it once and keeps it in a cookie.
    let login = if settings.token.is_some() || !settings.tokens.is_empty() {
        " (log in with your token)"
    } else {
        ""
    };
    say!("dashboard: {scheme}://{addr}/{login}");
    Ok(())
}

/// PostgreSQL: several coordinator programs share the database; this one stands by until
/// it takes the leader lease, then builds its coordinator on the same store (recovering
/// every unfinished task and workflow run) and leads until it stops or loses the lease,
/// when it steps down to standby again. Its HTTP port serves either role (see
/// `wrangle::failover`); its cluster listener opens only while it leads, so nodes given
/// every coordinator's address join the leader.
async fn serve_with_failover(
    settings: Settings,
    listener: tokio::net::TcpListener,
) -> Result<(), Box<dyn std::error::Error>> {
    let config = settings
        .store_config()
        .ok_or("failover needs a PostgreSQL store")?;
    let store = wrangle::Store::open(config).await?;
    let api_config = settings.api_config();
    let failover = Failover::new(store.clone(), settings.advertised_url(), &api_config)?;
    announce(&settings, &listener)?;
    say!(
        "failover: {} stands by on {} (lease {} ms, renewed every {} ms)",
        failover.name(),
        store.config().redacted_url(),
        settings.leader_lease_ms,
        settings.leader_renew_ms
    );
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            wrangle::shutdown_signal().await;
            stop.cancel();
        }
    });
    let server = tokio::spawn(wrangle::api::serve_with(
        listener,
        failover.router(),
        settings.serve_config(),
        stop.clone().cancelled_owned(),
    ));
    let result = lead_while_possible(&settings, &failover, &api_config, &stop).await;
    stop.cancel();
    failover.leave().await;
    server.await??;
    result
}

/// How long a deposed coordinator has to stop before the program exits instead.
const STEP_DOWN_LIMIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Stands by, leads, steps down, stands by again, until `stop`.
async fn lead_while_possible(
    settings: &Settings,
    failover: &Failover,
    api_config: &wrangle::api::ApiConfig,
    stop: &CancellationToken,
) -> Result<(), Box<dyn std::error::Error>> {
    while let Some(epoch) = failover.wait_to_lead(stop).await {
        let coordinator = match build(settings, Some(failover.store().clone())).await {
            Ok(c) => c,
            // The lease went to another standby while this one was starting: stand by.
            Err(e) if lease_lost(e.as_ref()) => {
                complain!("the leader lease was lost while starting: {e}; standing by again");
                continue;
            }
            Err(e) => {
                failover.abdicate().await;
                return Err(e);
            }
        };
        let recovered = coordinator.queue().stats().await?.recovered;
        say!("leading (epoch {epoch}): {recovered} unfinished tasks recovered");
        failover.lead(wrangle::api::router(
            coordinator.clone(),
            api_config.clone(),
        ));
        tokio::select! {
            reason = failover.lost() => {
                complain!("lost the leadership: {reason}; stepping down to standby");
                failover.step_down(reason);
                // Nothing more of it can be written: running tasks are cancelled and left
                // to the new leader, which recovers them from the store.
                let stopped =
                    tokio::time::timeout(STEP_DOWN_LIMIT, coordinator.stop(false)).await;
                match stopped {
                    Ok(Ok(_)) => say!("standing by again"),
                    Ok(Err(e)) => {
                        complain!("the deposed coordinator stopped with an error: {e}");
                        say!("standing by again");
                    }
                    Err(_) => {
                        // Its actors still hold their names: a clean restart is the way back.
                        complain!(
                            "the deposed coordinator did not stop within {STEP_DOWN_LIMIT:?}; \
                             exiting (restart this program to stand by again)"
                        );
                        std::process::exit(3);
                    }
                }
            }
            _ = stop.cancelled() => {
                return stop_gracefully(&coordinator).await;
            }
        }
    }
    Ok(())
}

/// True when starting failed because another coordinator holds the leader lease (the
/// error crosses the coordinator's actors as text: `StoreError::InUse`'s message).
fn lease_lost(e: &(dyn std::error::Error + 'static)) -> bool {
    e.to_string()
        .contains("in use by another wrangle coordinator")
}

/// Lets queued and running tasks finish, with progress; a second Ctrl-C stops at once.
async fn stop_gracefully(coordinator: &Coordinator) -> Result<(), Box<dyn std::error::Error>> {
    say!("stopping: letting queued and running tasks finish (Ctrl-C again to stop at once)...");
    let progress = {
        let c = coordinator.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Ok(s) = c.queue().stats().await {
                    say!(
                        "stopping: {} waiting, {} running, {} completed",
                        s.queue_size,
                        s.running,
                        s.completed
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
            complain!("stopped at once: {left} tasks unfinished were dropped");
            std::process::exit(130);
        }
    };
    progress.abort();
    say!(
        "stopped: {} tasks completed, {} unfinished",
        report.completed,
        report.unfinished
    );
    Ok(())
}
