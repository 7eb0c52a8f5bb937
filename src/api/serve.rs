//! The server loop: TCP or TLS connections served by hyper (HTTP/1.1), with a cap on open
//! connections, a deadline for each request's head, and a graceful shutdown.
//!
//! Written here rather than with `axum::serve`, which offers neither a connection cap, a
//! header read timeout nor TLS; each piece is hyper's or rustls's own.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

use super::{OverTls, ShuttingDown};

/// Settings of the server's connections (the router's own limits are in
/// [`super::ApiConfig`]).
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Most connections open at once; past it, new ones wait in the kernel's accept queue
    /// until one closes. Default 32,768 (room for 10,000 event streams and a load test's
    /// clients at once).
    pub max_connections: usize,
    /// Time a client has to send a request's head (request line and headers), and to finish
    /// the TLS handshake; slower connections are closed (slowloris). Default 10 s.
    pub header_read_timeout: Duration,
    /// Serve HTTPS with this certificate chain and key. Default none (plain HTTP).
    pub tls: Option<TlsFiles>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            max_connections: 32_768,
            header_read_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// A PEM certificate chain and its PEM private key, for HTTPS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Serves `app` on `listener` with [`ServeConfig::default`] until `shutdown` resolves, with
/// each client's address known to the rate limiter. Open event streams end when shutdown
/// begins; other requests finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, app, ServeConfig::default(), shutdown).await
}

/// Like [`serve`], with connection limits and optional TLS. A certificate or key that
/// cannot be read is an error before anything is served.
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = config.tls.as_ref().map(super::tls::acceptor).transpose()?;
    let token = CancellationToken::new();
    let app = app.layer(axum::Extension(ShuttingDown(token.clone())));
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let connections = TaskTracker::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (app, token, acceptor) = (app.clone(), token.clone(), acceptor.clone());
        let deadline = config.header_read_timeout;
        connections.spawn(async move {
            let _permit = permit;
            match acceptor {
                None => connection(stream, addr, false, app, token, deadline).await,
                Some(tls) => match tokio::time::timeout(deadline, tls.accept(stream)).await {
                    Ok(Ok(stream)) => connection(stream, addr, true, app, token, deadline).await,
                    Ok(Err(e)) => {
                        tracing::debug!(client = %addr, error = %e, "tls handshake failed")
                    }
                    Err(_) => tracing::debug!(client = %addr, "tls handshake timed out"),
                },
            }
        });
    }
    token.cancel();
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Serves one connection until it closes, or until shutdown lets its request finish.
async fn connection<I>(
    io: I,
    addr: SocketAddr,
    over_tls: bool,
    app: Router,
    token: CancellationToken,
    header_read_timeout: Duration,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(addr));
        if over_tls {
            req.extensions_mut().insert(OverTls);
        }
        let mut app = app.clone();
        async move { Ok::<_, Infallible>(app.call(req).await.unwrap_or_else(|e| match e {})) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    // With upgrades: `/events/ws` turns its connection into a WebSocket.
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = token.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(client = %addr, error = %e, "connection ended with an error");
    }
}
