//! The HTTP face: a REST API over the coordinator, server-sent events, Prometheus metrics,
//! an OpenAPI document, and the live dashboard, all served by one axum router.
//!
//! ```no_run
//! # async fn run(coordinator: wrangle::Coordinator) -> std::io::Result<()> {
//! let app = wrangle::api::router(coordinator, wrangle::api::ApiConfig::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7700").await?;
//! wrangle::api::serve(listener, app, std::future::pending()).await
//! # }
//! ```

pub(crate) mod auth;
mod batch;
mod cluster;
mod compute;
mod dashboard;
pub(crate) mod error;
pub(crate) mod guard;
mod openapi_status;
mod prometheus;
pub(crate) mod rate_limit;
mod serve;
mod stream;
mod streams;
mod tasks;
mod tls;
mod waits;
mod work;
mod workflows;

pub use auth::{ApiToken, Scope};
pub use rate_limit::RateLimit;
pub use serve::{serve, serve_with, ServeConfig, TlsFiles};

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::OpenApi;

use crate::coordinator::Coordinator;
use error::ApiError;
use openapi_status::CommonResponses;
use rate_limit::{RateLimiter, SharedLimiter};

/// Settings of the HTTP server. Its `Debug` form hides the tokens.
#[derive(Clone)]
pub struct ApiConfig {
    /// A token with every scope. When this or `tokens` is set, every route but `/healthz`,
    /// `/login`, `/logout` and the dashboard's page and assets needs
    /// `Authorization: Bearer <token>` (or the cookie `POST /login` sets). An empty token
    /// never matches. Default none.
    pub token: Option<String>,
    /// Tokens with their own scopes (`read`, `submit`, `work`, `operate`, `admin`); a
    /// request whose token lacks its route's scope is answered 403. Default none.
    pub tokens: Vec<ApiToken>,
    /// Largest request body, in bytes. Default 2 MiB.
    pub max_body_bytes: usize,
    /// Most tasks in one submit. Default 10,000.
    pub max_batch: usize,
    /// Per-client rate limit (a client is an IPv4 address or an IPv6 /64); `None` turns it
    /// off. Default 50,000 requests/s, bursts of 100,000.
    pub rate_limit: Option<RateLimit>,
    /// A request body must arrive within this (slow-body clients). Default 30 s.
    pub body_read_timeout: Duration,
    /// Most `/events` and `/tasks/{id}/wait` streams one client (IPv4 address or IPv6 /64)
    /// holds open at once; past it, 429. Default 16,384.
    pub max_streams_per_client: usize,
    /// An `/events` stream ends after this long (browsers reconnect by themselves).
    /// Default 1 hour.
    pub max_event_stream: Duration,
    /// Longest `/tasks/{id}/wait?timeout=`; longer asks are cut to it. Default 5 minutes.
    pub max_wait: Duration,
    /// Origins allowed to call the API from a browser on another origin. Default none
    /// (CORS off). A request whose `Origin` is neither one of these nor the server's own is
    /// answered 403.
    pub cors_origins: Vec<String>,
    /// Host names (besides IP addresses and `localhost`) a request's `Host` may name, for
    /// example `wrangle.internal`; `.corp.example` allows every name under it. A request for
    /// any other name is answered 421, which defeats DNS rebinding. Default none.
    pub allowed_hosts: Vec<String>,
    /// The name this node shows in `/nodes`. Default the host name.
    pub node_name: String,
}

impl ApiConfig {
    /// `token` (with every scope) and `tokens`, together: what requests are checked against.
    pub(crate) fn every_token(&self) -> Arc<[ApiToken]> {
        self.token
            .iter()
            .map(ApiToken::full)
            .chain(self.tokens.iter().cloned())
            .collect()
    }

    /// A rate limiter of its own for `rate_limit`, if one is set.
    pub(crate) fn limiter(&self) -> SharedLimiter {
        self.rate_limit.map(|l| Arc::new(RateLimiter::new(l)))
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            token: None,
            tokens: Vec::new(),
            max_body_bytes: 2 * 1024 * 1024,
            max_batch: 10_000,
            rate_limit: Some(RateLimit::default()),
            body_read_timeout: Duration::from_secs(30),
            max_streams_per_client: 16_384,
            max_event_stream: Duration::from_secs(3600),
            max_wait: Duration::from_secs(300),
            cors_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            node_name: std::env::var("HOSTNAME").unwrap_or_else(|_| "coordinator".into()),
        }
    }
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tokens", &self.tokens)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_batch", &self.max_batch)
            .field("rate_limit", &self.rate_limit)
            .field("body_read_timeout", &self.body_read_timeout)
            .field("max_streams_per_client", &self.max_streams_per_client)
            .field("max_event_stream", &self.max_event_stream)
            .field("max_wait", &self.max_wait)
            .field("cors_origins", &self.cors_origins)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("node_name", &self.node_name)
            .finish()
    }
}

/// What every handler sees: one `Arc`, so the clone each middleware layer and handler
/// takes per request is one reference count, not a copy of every handle.
#[derive(Clone, Debug)]
pub(crate) struct ApiState(Arc<ApiShared>);

impl std::ops::Deref for ApiState {
    type Target = ApiShared;

    fn deref(&self) -> &ApiShared {
        &self.0
    }
}

/// The state behind [`ApiState`].
#[derive(Debug)]
pub(crate) struct ApiShared {
    pub(crate) coordinator: Coordinator,
    pub(crate) config: Arc<ApiConfig>,
    pub(crate) limiter: SharedLimiter,
    pub(crate) node_name: String,
    /// `token` (with every scope) and `tokens`, together.
    pub(crate) tokens: Arc<[ApiToken]>,
    /// Open streams by client.
    pub(crate) streams: Arc<streams::StreamSlots>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "wrangle", description = "Submit, watch and manage tasks on a wrangle coordinator."),
    paths(
        tasks::submit, tasks::submit_compat, tasks::list, tasks::get, tasks::wait, tasks::cancel,
        tasks::requeue, tasks::queued, tasks::in_progress, tasks::results, tasks::dead_letters,
        cluster::nodes, cluster::agents_nodes, cluster::workers, cluster::scale,
        cluster::scale_history, cluster::scale_groups, cluster::stats, cluster::healthz, cluster::readyz, cluster::failover,
        stream::events, stream::events_ws, prometheus::metrics, auth::login, auth::logout,
        compute::list, compute::add, compute::remove,
        workflows::definitions, workflows::register, workflows::start, workflows::list,
        workflows::get, workflows::wait, workflows::control, workflows::bulk,
        work::lease, work::heartbeat, work::reports, work::complete, work::fail,
        work::progress, work::leave, waits::wait_many, waits::run,
    ),
    components(schemas(error::ErrorBody)),
    modifiers(&BearerAuth, &CommonResponses),
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.security = Some(vec![SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    }
}

/// The OpenAPI document of this API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

/// Builds the router: every route, auth, JSON-only bodies, `Host`/`Origin` checks, body
/// limit, rate limit and CORS.
///
/// To serve it inside your own axum application, beside your routes, mount it with
/// `Router::nest_service("/wrangle", router(..))` (not `nest`): it then sees its own paths,
/// which its token scopes rely on, and its dashboard works at `/wrangle`. See
/// `examples/embed.rs`.
pub fn router(coordinator: Coordinator, config: ApiConfig) -> Router {
    let state = ApiState(Arc::new(ApiShared {
        coordinator,
        limiter: config.limiter(),
        node_name: config.node_name.clone(),
        tokens: config.every_token(),
        streams: Arc::new(streams::StreamSlots::new(config.max_streams_per_client)),
        config: Arc::new(config),
    }));
    let protected = Router::new()
        .route("/tasks", post(tasks::submit).get(tasks::list))
        .route("/tasks/submit", post(tasks::submit_compat))
        .route("/tasks/queued", get(tasks::queued))
        .route("/tasks/in_progress", get(tasks::in_progress))
        .route("/tasks/results", get(tasks::results))
        .route("/tasks/dead_letters", get(tasks::dead_letters))
        .route("/tasks/{id}", get(tasks::get).delete(tasks::cancel))
        .route(
            "/tasks/{id}/wait",
            get(tasks::wait).route_layer(middleware::from_fn_with_state(
                state.clone(),
                streams::one_slot,
            )),
        )
        .route("/tasks/{id}/requeue", post(tasks::requeue))
        .route(
            "/tasks/wait",
            post(waits::wait_many).route_layer(middleware::from_fn_with_state(
                state.clone(),
                streams::one_slot,
            )),
        )
        .route(
            "/tasks/run",
            post(waits::run).route_layer(middleware::from_fn_with_state(
                state.clone(),
                streams::one_slot,
            )),
        )
        .route("/nodes", get(cluster::nodes))
        .route("/agents/nodes", get(cluster::agents_nodes))
        .route("/workers", get(cluster::workers))
        .route(
            "/workers/lease",
            post(work::lease).route_layer(middleware::from_fn_with_state(
                state.clone(),
                streams::one_slot,
            )),
        )
        .route("/workers/heartbeat", post(work::heartbeat))
        .route("/workers/reports", post(work::reports))
        .route("/workers/leave", post(work::leave))
        .route("/workers/tasks/{id}/complete", post(work::complete))
        .route("/workers/tasks/{id}/fail", post(work::fail))
        .route("/workers/tasks/{id}/progress", post(work::progress))
        .route("/scale", post(cluster::scale))
        .route("/compute/nodes", get(compute::list).post(compute::add))
        .route(
            "/compute/nodes/{id}",
            axum::routing::delete(compute::remove),
        )
        .route(
            "/workflows",
            get(workflows::definitions).post(workflows::register),
        )
        .route("/workflows/runs", get(workflows::list))
        .route("/workflows/runs/{id}", get(workflows::get))
        .route(
            "/workflows/runs/{id}/wait",
            get(workflows::wait).route_layer(middleware::from_fn_with_state(
                state.clone(),
                streams::one_slot,
            )),
        )
        .route("/workflows/runs/{id}/{action}", post(workflows::control))
        .route("/workflows/runs/bulk/{action}", post(workflows::bulk))
        .route("/workflows/{name}/runs", post(workflows::start))
        .route("/scale/history", get(cluster::scale_history))
        .route("/scale/groups", get(cluster::scale_groups))
        .route("/stats", get(cluster::stats))
        .route("/readyz", get(cluster::readyz))
        .route("/failover", get(cluster::failover))
        .route(
            "/events",
            get(stream::events).route_layer(middleware::from_fn_with_state(
                state.clone(),
                streams::one_slot,
            )),
        )
        .route("/events/ws", get(stream::events_ws))
        .route("/metrics", get(prometheus::metrics))
        .route("/openapi.json", get(openapi_json))
        .route("/", get(dashboard::index))
        .route("/assets/{file}", get(dashboard::asset))
        .route("/login", post(auth::login))
        .route("/logout", post(auth::logout))
        .fallback(not_found)
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            state.config.body_read_timeout,
        ));
    // The guard sits outside the body timeout: its JSON-only check reads the body's own
    // size hint.
    let mut app = Router::new()
        .route("/healthz", get(cluster::healthz))
        .merge(protected)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), guard::guard));
    if !state.config.cors_origins.is_empty() {
        let origins = state
            .config
            .cors_origins
            .iter()
            .filter_map(|o| o.parse().ok())
            .collect::<Vec<_>>();
        app = app.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods(tower_http::cors::Any)
                .allow_headers(tower_http::cors::Any),
        );
    }
    app.with_state(state)
}

/// Marks a request that arrived over TLS (the login cookie is then `Secure`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct OverTls;

/// Fires when the server begins shutting down, so endless responses (the event stream) end
/// and graceful shutdown does not wait on them forever.
#[derive(Clone, Debug)]
pub(crate) struct ShuttingDown(pub(crate) tokio_util::sync::CancellationToken);
