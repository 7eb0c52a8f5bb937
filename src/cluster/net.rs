//! The network under the cluster: ractor_cluster node servers, TLS, connecting, and
//! watching sessions open and close.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{ActorId, ActorRef};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{
    IncomingEncryptionMode, NodeEventSubscription, NodeServer, NodeServerMessage,
};
use tokio_rustls::rustls;

use crate::error::Error;

/// Starts a node server: the coordinator's listener, or a node's own (which only connects out).
pub(crate) async fn start_server(
    name: &str,
    listen: SocketAddr,
    cookie: &str,
    tls: Option<IncomingEncryptionMode>,
    max_frame_bytes: u64,
) -> Result<ActorRef<NodeServerMessage>, Error> {
    let server = NodeServer::new(
        listen.port(),
        cookie.to_string(),
        name.to_string(),
        listen.ip().to_string(),
        tls,
        Some(ractor_cluster::node::NodeConnectionMode::Isolated),
    )
    .with_listen_addr(listen.ip())
    .with_max_inbound_frame_size(max_frame_bytes);
    // The listener binds in the server's start; a taken port fails here.
    let (actor, _) = ractor::Actor::spawn(None, server, ())
        .await
        .map_err(|e| Error::spawn("node server", e))?;
    Ok(actor)
}

/// Reads a PEM certificate chain and private key into a TLS acceptor for the listener.
pub(crate) fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, Error> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &Path, e: &dyn std::fmt::Display| {
        Error::invalid("cluster.tls", format!("{}: {e}", what.display()))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, &e))?;
    if chain.is_empty() {
        return Err(bad(cert, &"no certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
    let config = rustls::ServerConfig::builder_with_provider(crate::util::tls_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(cert, &e))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| bad(cert, &e))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Reads the PEM certificate(s) a node trusts for its coordinator.
pub(crate) fn tls_connector(ca: &Path) -> Result<tokio_rustls::TlsConnector, Error> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let bad =
        |e: &dyn std::fmt::Display| Error::invalid("tls_ca", format!("{}: {e}", ca.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(&e))? {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    if roots.is_empty() {
        return Err(bad(&"no certificate in the file"));
    }
    let config = rustls::ClientConfig::builder_with_provider(crate::util::tls_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// How a node reaches its coordinator.
#[derive(Clone)]
pub(crate) struct Connector {
    pub(crate) server: ActorRef<NodeServerMessage>,
    pub(crate) address: String,
    pub(crate) tls: Option<(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
    pub(crate) timeout: Duration,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("address", &self.address)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Connector {
    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// Opens a session to the coordinator (authentication follows in the background).
    pub(crate) async fn connect(&self) -> Result<(), String> {
        let attempt = async {
            match &self.tls {
                None => ractor_cluster::client_connect(&self.server, self.address.as_str()).await,
                Some((connector, name)) => {
                    ractor_cluster::client_connect_enc(
                        &self.server,
                        self.address.as_str(),
                        connector.clone(),
                        name.clone(),
                    )
                    .await
                }
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(describe_connect_error(e)),
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
        }
    }

    /// Ends every session of this node's server.
    pub(crate) async fn close_sessions(&self) {
        close_sessions_with(&self.server, None).await;
    }

    /// Calls `on_close` whenever a session of this node's server closes.
    pub(crate) fn subscribe(
        &self,
        on_close: impl Fn(ClosedSession) + Send + Sync + 'static,
    ) -> SessionEvents {
        SessionEvents::subscribe(
            &self.server,
            SessionTable::default(),
            super::admission::Pending::default(),
            on_close,
        )
    }
}

fn describe_connect_error(e: ractor_cluster::ClientConnectErr) -> String {
    match e {
        ractor_cluster::ClientConnectErr::Socket(e) => e.to_string(),
        ractor_cluster::ClientConnectErr::Encryption(e) => format!("TLS handshake failed: {e}"),
        ractor_cluster::ClientConnectErr::Messaging(e) => format!("node server unavailable: {e}"),
    }
}

/// Ends the sessions of `server`: all of them, or the one with the session id `only`.
pub(crate) async fn close_sessions_with(
    server: &ActorRef<NodeServerMessage>,
    only: Option<SessionId>,
) {
    let Ok(sessions) = ractor::call_t!(server, NodeServerMessage::GetSessions, 1_000) else {
        return;
    };
    for (id, ses) in &sessions {
        if only.is_none_or(|only| only == *id) {
            ses.actor.stop(Some("wrangle gave the peer up".into()));
        }
    }
}

/// ractor_cluster's id of one session of a node server (its `NodeId`): a new connection
/// gets a new one, and the actors a peer advertises carry it (`ActorId::Remote`).
pub(crate) type SessionId = ractor_cluster::NodeId;

/// The session an actor of a peer came on, or `None` for a local actor.
pub(crate) fn session_of(actor: &ractor::ActorCell) -> Option<SessionId> {
    match actor.get_id() {
        ActorId::Remote { node_id, .. } => Some(node_id),
        ActorId::Local(_) => None,
    }
}

/// The authenticated sessions of a node server: session id to the node name its peer
/// proved it holds the cookie under. Written by the session events, read by the gate.
#[derive(Clone, Debug, Default)]
pub(crate) struct SessionTable(Arc<std::sync::RwLock<HashMap<SessionId, String>>>);

impl SessionTable {
    /// The node name of an authenticated session.
    pub(crate) fn name_of(&self, session: SessionId) -> Option<String> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&session)
            .cloned()
    }

    fn insert(&self, session: SessionId, name: String) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(session, name);
    }

    fn remove(&self, session: SessionId) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&session);
    }
}

/// A ractor_cluster peer name is `name@host`: the part before `@`.
pub(crate) fn node_name(peer: &str) -> &str {
    peer.split_once('@').map_or(peer, |(name, _)| name)
}

/// A session that closed.
#[derive(Clone, Debug)]
pub(crate) struct ClosedSession {
    /// The peer's node name, when it said one.
    pub(crate) peer: Option<String>,
    /// Which session it was: a node that re-connected has a new one.
    pub(crate) session: SessionId,
    /// The peer's address.
    pub(crate) addr: String,
    /// Whether it got past the cookie.
    pub(crate) authenticated: bool,
}

/// A subscription to a node server's session events; unsubscribes when dropped.
pub(crate) struct SessionEvents {
    server: ActorRef<NodeServerMessage>,
    id: String,
}

impl SessionEvents {
    /// Watches `server`'s sessions: `table` is kept to its authenticated sessions,
    /// `pending` told which connections authenticated or closed, and `on_close` called for
    /// each session that closes.
    pub(crate) fn subscribe(
        server: &ActorRef<NodeServerMessage>,
        table: SessionTable,
        pending: super::admission::Pending,
        on_close: impl Fn(ClosedSession) + Send + Sync + 'static,
    ) -> Self {
        let id = format!("wrangle-{}", fastrand::u64(..));
        let _ = server.cast(NodeServerMessage::SubscribeToEvents {
            id: id.clone(),
            subscription: Box::new(Watcher {
                authenticated: Mutex::default(),
                table,
                pending,
                on_close: Box::new(on_close),
            }),
        });
        Self {
            server: server.clone(),
            id,
        }
    }
}

impl Drop for SessionEvents {
    fn drop(&mut self) {
        let _ = self
            .server
            .cast(NodeServerMessage::UnsubscribeToEvents(self.id.clone()));
    }
}

struct Watcher {
    authenticated: Mutex<HashSet<ActorId>>,
    table: SessionTable,
    pending: super::admission::Pending,
    on_close: Box<dyn Fn(ClosedSession) + Send + Sync>,
}

impl NodeEventSubscription for Watcher {
    fn node_session_opened(&self, _ses: NodeServerSessionInformation) {}

    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        self.authenticated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ses.actor.get_id());
        self.pending.authenticated(&ses.peer_addr);
        if let Some(peer) = &ses.peer_name {
            self.table
                .insert(ses.node_id, node_name(&peer.name).to_string());
        }
    }

    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let authenticated = self
            .authenticated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ses.actor.get_id());
        self.table.remove(ses.node_id);
        self.pending.closed(&ses.peer_addr);
        (self.on_close)(ClosedSession {
            peer: ses.peer_name.map(|n| node_name(&n.name).to_string()),
            session: ses.node_id,
            addr: ses.peer_addr,
            authenticated,
        });
    }
}

impl std::fmt::Debug for SessionEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionEvents")
    }
}
