//! wrangle inside your own axum application: the application keeps its routes (`/run`
//! answers with an agent task's result, `/health` is its own), and mounts wrangle's API,
//! dashboard and event stream under `/wrangle`. The coordinator starts with the
//! application and stops gracefully with it (Ctrl-C or SIGTERM).
//!
//! ```text
//! cargo run --example embed                        # http://127.0.0.1:8080/run, http://127.0.0.1:8080/wrangle/
//! cargo run --example embed -- 127.0.0.1:9000
//! curl -s -d '{"text": "hello"}' -H 'content-type: application/json' http://127.0.0.1:8080/run
//! ```
//!
//! Set `WRANGLE_TOKEN` to require a token on wrangle's routes (the application's own routes
//! are yours to protect).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use wrangle::prelude::*;

#[derive(Deserialize)]
struct Prompt {
    text: String,
}

#[derive(Serialize, Deserialize)]
struct Answer {
    words: usize,
    shout: String,
}

/// The agent's work: any async code, run on a supervised worker.
async fn agent_task(_ctx: TaskContext, prompt: String) -> Result<Answer, TaskError> {
    Ok(Answer {
        words: prompt.split_whitespace().count(),
        shout: prompt.to_uppercase(),
    })
}

/// The application's endpoint: one task, its result in the answer.
async fn run(
    State(coordinator): State<Coordinator>,
    Json(prompt): Json<Prompt>,
) -> Result<Json<Answer>, (StatusCode, String)> {
    let spec = TaskSpec::new("agent_task", &prompt.text)
        .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?
        .timeout(Duration::from_secs(30));
    let handle = coordinator
        .submit_async(spec)
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let answer = handle
        .result(Duration::from_secs(30))
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, e.to_string()))?;
    Ok(Json(answer))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let bind = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let coordinator = Coordinator::builder()
        .config(CoordinatorConfig {
            min_workers: 2,
            max_workers: 8,
            ..CoordinatorConfig::default()
        })
        .handler("agent_task", handler_fn(agent_task))
        .start()
        .await?;

    let api = wrangle::api::ApiConfig {
        token: std::env::var("WRANGLE_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
        ..wrangle::api::ApiConfig::default()
    };
    let app = Router::new()
        .route("/run", post(run))
        .route("/health", get(|| async { "ok" }))
        .with_state(coordinator.clone())
        // `nest_service`: wrangle's router sees its own paths (`/tasks`), which its token
        // scopes and dashboard rely on.
        .nest_service("/wrangle", wrangle::api::router(coordinator.clone(), api));

    let listener = tokio::net::TcpListener::bind(&bind).await?;
    println!(
        "listening on http://{0}/run; wrangle's dashboard at http://{0}/wrangle/",
        listener.local_addr()?
    );
    // wrangle's server: connection caps, header timeouts, WebSockets, graceful shutdown.
    wrangle::api::serve(listener, app, wrangle::shutdown_signal()).await?;
    let report = coordinator.stop(true).await?;
    println!("stopped: {report:?}");
    Ok(())
}
