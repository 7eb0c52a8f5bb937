//! wrangle's own accept loop in front of ractor_cluster's: deadlines and limits on
//! connections that have not authenticated yet.
//!
//! ractor_cluster 0.16.5's listener does the TLS handshake inline in its accept loop, with
//! no timeout: one TCP connection that never speaks blocks every join behind it. It offers
//! no hook for that, but it takes connections opened elsewhere
//! (`NodeServerMessage::ConnectionOpenedExternal`). So the coordinator listens itself:
//! each connection's TLS handshake runs in its own task under a deadline; at most
//! `max_pending` connections may be unauthenticated at once (more are closed at once); and
//! until the cookie challenge succeeds, a connection is cut when its deadline passes or
//! when it has sent more than a handshake needs (ractor_cluster buffers a frame of up to
//! 16 MiB as it arrives, so a peer trickling one frame would otherwise hold that memory).
//! ractor_cluster's own listener is moved to an ephemeral loopback port (with the same TLS).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use ractor::ActorRef;
use ractor_cluster::{BoxRead, BoxWrite, ClusterBidiStream, NodeServerMessage};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use super::stats::ClusterCounters;

/// Bytes an unauthenticated peer may send: the name, challenge and digest messages of
/// ractor_cluster's handshake take a few hundred.
pub(crate) const PRE_AUTH_BYTES: usize = 64 * 1024;

/// The limits on connections that have not authenticated.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Time from accept to a passed cookie challenge (TLS handshake included).
    pub(crate) handshake_timeout: Duration,
    /// Connections allowed to be unauthenticated at once.
    pub(crate) max_pending: usize,
}

/// Connections not yet authenticated, by the label ractor_cluster reports them under
/// (the peer's address).
#[derive(Clone, Debug, Default)]
pub(crate) struct Pending(Arc<Mutex<HashMap<String, Arc<Ticket>>>>);

impl Pending {
    fn insert(&self, label: String, ticket: Arc<Ticket>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(label, ticket);
    }

    fn take(&self, label: &str) -> Option<Arc<Ticket>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(label)
    }

    /// The connection `label` passed the cookie challenge: no deadline and no byte budget
    /// from now on, and its place among the pending ones is free.
    pub(crate) fn authenticated(&self, label: &str) {
        if let Some(ticket) = self.take(label) {
            ticket.authenticated.store(true, Ordering::Release);
            ticket.release();
        }
    }

    /// The connection `label` closed.
    pub(crate) fn closed(&self, label: &str) {
        if let Some(ticket) = self.take(label) {
            ticket.release();
        }
    }
}

/// One connection on its way in.
#[derive(Debug)]
struct Ticket {
    authenticated: AtomicBool,
    /// Its place among the pending connections.
    permit: Mutex<Option<OwnedSemaphorePermit>>,
}

impl Ticket {
    fn release(&self) {
        self.permit.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// Accepts on `listener` until the task is aborted, handing each connection to `server`
/// once its TLS handshake (if any) is done, within `limits`.
pub(crate) fn serve(
    listener: TcpListener,
    server: ActorRef<NodeServerMessage>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    pending: Pending,
    refused: Arc<ClusterCounters>,
) -> tokio::task::JoinHandle<()> {
    let slots = Arc::new(Semaphore::new(limits.max_pending));
    tokio::spawn(async move {
        loop {
            let (stream, addr) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, mostly: wait a little rather than spin.
                    tracing::warn!(error = %e, "cluster listener could not accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                ClusterCounters::bump(&refused.handshakes_refused);
                tracing::warn!(
                    peer = %addr,
                    pending = limits.max_pending,
                    "too many connections still handshaking: closed a new one"
                );
                continue;
            };
            let _ = stream.set_nodelay(true);
            let label = addr.to_string();
            let ticket = Arc::new(Ticket {
                authenticated: AtomicBool::new(false),
                permit: Mutex::new(Some(permit)),
            });
            pending.insert(label.clone(), ticket.clone());
            let deadline = Instant::now() + limits.handshake_timeout;
            let (server, tls, pending, counters) = (
                server.clone(),
                tls.clone(),
                pending.clone(),
                refused.clone(),
            );
            tokio::spawn(async move {
                let stream: Box<dyn Duplex> = match tls {
                    None => Box::new(stream),
                    Some(acceptor) => {
                        match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => Box::new(tls),
                            Ok(Err(e)) => {
                                pending.closed(&label);
                                return tracing::warn!(peer = %label, error = %e, "TLS handshake failed");
                            }
                            Err(_) => {
                                pending.closed(&label);
                                ClusterCounters::bump(&counters.handshakes_refused);
                                return tracing::warn!(peer = %label, "no TLS handshake in time: closed");
                            }
                        }
                    }
                };
                let guarded = Guarded {
                    stream,
                    label,
                    ticket,
                    deadline,
                };
                let _ = server.cast(NodeServerMessage::ConnectionOpenedExternal {
                    stream: Box::new(guarded),
                    is_server: true,
                });
            });
        }
    })
}

/// A byte stream both ways.
trait Duplex: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Duplex for T {}

/// An accepted connection as ractor_cluster gets it: its reads fail once the deadline
/// passes or the byte budget is spent before authentication.
struct Guarded {
    stream: Box<dyn Duplex>,
    label: String,
    ticket: Arc<Ticket>,
    deadline: Instant,
}

impl ClusterBidiStream for Guarded {
    fn split(self: Box<Self>) -> (BoxRead, BoxWrite) {
        let (read, write) = tokio::io::split(self.stream);
        let read = GuardedRead {
            inner: read,
            ticket: self.ticket,
            deadline: Box::pin(tokio::time::sleep_until(self.deadline)),
            budget: PRE_AUTH_BYTES,
        };
        (Box::new(read), Box::new(write))
    }

    fn peer_label(&self) -> Option<String> {
        Some(self.label.clone())
    }
}

struct GuardedRead<R> {
    inner: R,
    ticket: Arc<Ticket>,
    deadline: Pin<Box<Sleep>>,
    budget: usize,
}

impl<R: AsyncRead + Unpin> AsyncRead for GuardedRead<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.ticket.authenticated.load(Ordering::Acquire) {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no authentication in time",
            )));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        let got = buf.filled().len() - before;
        if got > this.budget {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "more bytes than a handshake before authentication",
            )));
        }
        this.budget -= got;
        read
    }
}
