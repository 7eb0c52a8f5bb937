//! SSH nodes through russh: one connection per node, opened on first use and opened again
//! when it drops, carrying one session channel per running command.
//!
//! - **Login**: public-key only, with the node's named credential (an unencrypted Ed25519
//!   or ECDSA private key in the cluster's `credentials_dir`; RSA keys are not built in).
//!   A node without a credential is refused when added. The key is never printed.
//! - **Host key**: checked against [`ComputeConfig::known_hosts`] (default
//!   `~/.ssh/known_hosts`, re-read at every connection). An unknown or changed key is
//!   refused (`Rejected`, not retried); there is no switch to accept keys blindly.
//!   `@cert-authority` and `@revoked` lines are not understood: a key is trusted only when a
//!   plain line lists it.
//! - **Channels**: at most `max_concurrent` commands at once, plus one health check and one
//!   channel stopping abandoned commands, each slot held until sshd has closed the channel.
//!   OpenSSH's sshd allows 10 sessions per connection by default (`MaxSessions`): keep
//!   `max_concurrent` at 8 or below, or raise `MaxSessions` on the server. A channel sshd refuses fails as `Busy` (retryable).
//! - **Commands**: see `command` and `run`: quoted argv, stdin then EOF, streamed and bounded
//!   output, the exit status (`None` when a signal ended it; a non-zero code is an answer,
//!   not an error), and a command abandoned by a timeout is killed on the server.

mod command;
mod dial;
mod run;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use russh::client::Msg;
use russh::{Channel, ChannelOpenFailure};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

use self::dial::{Connection, Target};
use super::Backend;
use crate::compute::config::ComputeConfig;
use crate::compute::node::ComputeNode;
use crate::compute::request::{
    ComputeError, ComputeErrorKind, ComputeRequest, ComputeResponse, StreamSink,
};
use crate::error::Error;

/// The `max_concurrent` from which sshd's default `MaxSessions` (10) may refuse channels.
const SSHD_MAX_SESSIONS: usize = 9;

pub(crate) struct SshBackend {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    /// The connection, once opened; replaced when it has dropped.
    conn: Mutex<Option<Arc<Connection>>>,
    /// Channel slots for commands: `max_concurrent`.
    commands: Arc<Semaphore>,
    /// The health check's own slot, so a busy node still answers its check.
    check: Arc<Semaphore>,
    /// The slot of the channel that stops abandoned commands.
    stopper: Arc<Semaphore>,
}

impl SshBackend {
    /// The backend of an `ssh://user@host:port` node. Refuses a node without a credential,
    /// a key it cannot read, and a known_hosts file that does not exist.
    pub(crate) fn new(
        node: &ComputeNode,
        credential: Option<PathBuf>,
        config: &ComputeConfig,
    ) -> Result<Self, Error> {
        let crate::compute::Endpoint::Ssh { user, host, port } = node.endpoint() else {
            return Err(Error::invalid("endpoint", "not an ssh:// endpoint"));
        };
        let (Some(path), Some(name)) = (credential, node.credential_name()) else {
            return Err(Error::invalid(
                "credential",
                "an SSH node logs in with a key: name its private key file in the cluster's credentials_dir",
            ));
        };
        let key = dial::load_key(&path, name)?;
        let known_hosts = known_hosts(config)?;
        if node.concurrency() >= SSHD_MAX_SESSIONS {
            tracing::warn!(
                node = node.id(),
                max_concurrent = node.concurrency(),
                "an SSH node runs max_concurrent channels plus two (health, stopping) on one \
                 connection; sshd allows 10 by default (MaxSessions)"
            );
        }
        let target = Target {
            user: user.clone(),
            host: host.clone(),
            port: *port,
            key: Arc::new(key),
            key_name: name.to_string(),
            known_hosts,
            connect_timeout: Duration::from_secs(10).min(node.request_timeout()),
            config: Arc::new(dial::client_config()),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                target,
                conn: Mutex::new(None),
                commands: Arc::new(Semaphore::new(node.concurrency())),
                check: Arc::new(Semaphore::new(1)),
                stopper: Arc::new(Semaphore::new(1)),
            }),
        })
    }
}

/// The known_hosts file: the configured one, else `~/.ssh/known_hosts`; it must exist.
fn known_hosts(config: &ComputeConfig) -> Result<PathBuf, Error> {
    let path = match &config.known_hosts {
        Some(path) => path.clone(),
        None => match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(".ssh").join("known_hosts"),
            None => {
                return Err(Error::invalid(
                    "known_hosts",
                    "not set, and no HOME to find ~/.ssh/known_hosts in",
                ))
            }
        },
    };
    if !path.is_file() {
        return Err(Error::invalid(
            "known_hosts",
            format!(
                "{} does not exist: SSH host keys are checked against it",
                path.display()
            ),
        ));
    }
    Ok(path)
}

impl Backend for SshBackend {
    fn execute(
        &self,
        request: ComputeRequest,
        sink: Option<StreamSink>,
    ) -> BoxFuture<'static, Result<ComputeResponse, ComputeError>> {
        let ComputeRequest::Command(request) = request else {
            return Box::pin(async {
                Err(ComputeError::invalid(
                    "an SSH node runs commands, not HTTP requests",
                ))
            });
        };
        let inner = self.inner.clone();
        Box::pin(async move {
            let permit = inner.commands.clone().acquire_owned().await.ok();
            let session = inner.session(permit).await?;
            run::run(session, &request.argv, request.stdin, sink).await
        })
    }

    fn health(&self, timeout: Duration) -> BoxFuture<'static, Result<(), String>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            // Within the proxy's bound: a connection that hangs is dropped for the next check.
            let within = timeout.mul_f32(0.9);
            match tokio::time::timeout(within, inner.check()).await {
                Ok(result) => result,
                Err(_) => {
                    inner.forget(None).await;
                    Err(format!(
                        "ssh: no answer to a health check within {within:?}"
                    ))
                }
            }
        })
    }
}

impl Inner {
    /// Runs `true` over the connection (opening it if needed).
    async fn check(&self) -> Result<(), String> {
        let permit = self.check.clone().acquire_owned().await.ok();
        let session = self.session(permit).await.map_err(|e| e.message)?;
        let answer = run::run(session, &["true".to_string()], None, None)
            .await
            .map_err(|e| e.message)?;
        match answer {
            ComputeResponse::Command {
                exit_code: Some(0), ..
            } => Ok(()),
            ComputeResponse::Command {
                exit_code, stderr, ..
            } => Err(format!(
                "ssh: `true` ended with {exit_code:?}: {}",
                stderr.chars().take(200).collect::<String>()
            )),
            ComputeResponse::Http { .. } => Err("ssh: not a command's answer".into()),
        }
    }

    /// The connection, opened now if there is none or it dropped; `true` when new.
    async fn connection(&self) -> Result<(Arc<Connection>, bool), ComputeError> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok((conn.clone(), false));
        }
        *slot = None;
        let conn = Arc::new(self.target.dial().await?);
        *slot = Some(conn.clone());
        Ok((conn, true))
    }

    /// Drops the connection (`which`, or whichever there is), so the next use redials.
    async fn forget(&self, which: Option<&Arc<Connection>>) {
        let mut slot = self.conn.lock().await;
        if which.is_none_or(|w| slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, w))) {
            *slot = None;
        }
    }

    /// A new session channel holding `permit`.
    async fn session(
        &self,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<run::Session, ComputeError> {
        let (conn, channel) = self.open().await?;
        Ok(run::Session {
            conn,
            channel,
            permit,
            stopper: self.stopper.clone(),
        })
    }

    /// A new session channel and its connection. A connection that was kept but turns
    /// out dead is redialled once: nothing ran on it, so that is safe.
    async fn open(&self) -> Result<(Arc<Connection>, Channel<Msg>), ComputeError> {
        let (conn, fresh) = self.connection().await?;
        match conn.channel_open_session().await {
            Ok(channel) => Ok((conn, channel)),
            Err(russh::Error::ChannelOpenFailure(why)) => Err(refused_channel(why)),
            Err(e) if fresh => Err(self.lost(&conn, e).await),
            Err(_) => {
                self.forget(Some(&conn)).await;
                let (conn, _) = self.connection().await?;
                match conn.channel_open_session().await {
                    Ok(channel) => Ok((conn, channel)),
                    Err(russh::Error::ChannelOpenFailure(why)) => Err(refused_channel(why)),
                    Err(e) => Err(self.lost(&conn, e).await),
                }
            }
        }
    }

    async fn lost(&self, conn: &Arc<Connection>, e: russh::Error) -> ComputeError {
        self.forget(Some(conn)).await;
        ComputeError::unavailable(format!("ssh: the connection failed: {e}"))
    }
}

/// sshd would not open a session: too many on the connection (`MaxSessions`) or no
/// resources. Retryable, and not the node's fault.
fn refused_channel(why: ChannelOpenFailure) -> ComputeError {
    ComputeError::new(
        ComputeErrorKind::Busy,
        format!("ssh: the server refused a new session ({why:?}; its MaxSessions may be below max_concurrent + 2)"),
    )
}
