//! Opening one SSH connection: TCP, the host key checked against a known_hosts file, then
//! public-key authentication with the node's key. Failures become [`ComputeError`]s that
//! say whether a retry can help: a refused or reset connection is `Unavailable` (retryable,
//! counts against the node); a host key that is unknown or changed, or a key the server
//! refuses, is `Rejected` (permanent: only an operator can fix it, and retrying a refused
//! login only looks like an attack to the server).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};

use crate::compute::request::{ComputeError, ComputeErrorKind};
use crate::error::Error;

/// Where and as whom a node is reached, and what it must prove.
pub(super) struct Target {
    pub(super) user: String,
    pub(super) host: String,
    pub(super) port: u16,
    /// The private key; never printed (this type has no `Debug`).
    pub(super) key: Arc<PrivateKey>,
    /// The credential's name, for messages.
    pub(super) key_name: String,
    pub(super) known_hosts: PathBuf,
    pub(super) connect_timeout: Duration,
    pub(super) config: Arc<client::Config>,
}

/// An authenticated connection.
pub(super) type Connection = Handle<HostKeyCheck>;

/// Reads an unencrypted private key (Ed25519 or ECDSA). The error names the field
/// `credential` and never quotes the file.
pub(super) fn load_key(path: &Path, name: &str) -> Result<PrivateKey, Error> {
    use russh::keys::Error as KeyError;
    let why = match russh::keys::load_secret_key(path, None) {
        Ok(key) => return Ok(key),
        Err(KeyError::KeyIsEncrypted) => "is protected by a passphrase, which is not supported",
        Err(KeyError::IO(_)) => "cannot be read",
        Err(_) => {
            "is not an unencrypted OpenSSH or PEM private key of a supported type (Ed25519, ECDSA)"
        }
    };
    Err(Error::invalid(
        "credential",
        format!("SSH key `{name}` {why}"),
    ))
}

/// The client settings every connection of a backend shares.
pub(super) fn client_config() -> client::Config {
    client::Config {
        // A peer that vanished without closing the socket is noticed within ~1.5 minutes;
        // the health check notices sooner (it redials when a check times out).
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        nodelay: true,
        ..client::Config::default()
    }
}

impl Target {
    fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Connects, checks the host key and logs in, within `connect_timeout`.
    pub(super) async fn dial(&self) -> Result<Connection, ComputeError> {
        let verdict = Arc::new(Mutex::new(None));
        let check = HostKeyCheck {
            host: self.host.clone(),
            port: self.port,
            known_hosts: self.known_hosts.clone(),
            verdict: verdict.clone(),
        };
        let addr = (self.host.as_str(), self.port);
        let connect = client::connect(self.config.clone(), addr, check);
        let mut conn = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                let refused = verdict.lock().expect("verdict").take();
                return Err(self.connect_error(e, refused));
            }
            Err(_) => {
                return Err(ComputeError::unavailable(format!(
                    "ssh {}: no connection within {:?}",
                    self.addr(),
                    self.connect_timeout
                )))
            }
        };
        let key = PrivateKeyWithHashAlg::new(self.key.clone(), None);
        let login = conn.authenticate_publickey(self.user.clone(), key);
        let auth = tokio::time::timeout(self.connect_timeout, login)
            .await
            .map_err(|_| {
                ComputeError::unavailable(format!("ssh {}: no login answer in time", self.addr()))
            })?
            .map_err(|e| self.connect_error(e, None))?;
        if !auth.success() {
            return Err(ComputeError::new(
                ComputeErrorKind::Rejected,
                format!(
                    "ssh {}: the server refused key `{}` for user `{}`",
                    self.addr(),
                    self.key_name,
                    self.user
                ),
            ));
        }
        Ok(conn)
    }

    fn connect_error(&self, e: russh::Error, refused: Option<String>) -> ComputeError {
        use russh::Error as E;
        let addr = self.addr();
        if let Some(why) = refused {
            return ComputeError::new(ComputeErrorKind::Rejected, format!("ssh {addr}: {why}"));
        }
        let kind = match &e {
            // The server's host key algorithms or ciphers are not ones this build speaks: a
            // configuration no retry changes.
            E::NoCommonAlgo { .. } | E::UnknownKey | E::KeyChanged { .. } => {
                ComputeErrorKind::Rejected
            }
            _ => ComputeErrorKind::Unavailable,
        };
        ComputeError::new(kind, format!("ssh {addr}: {e}"))
    }
}

/// The client side of a connection: accepts the server only if its key is in known_hosts.
pub(super) struct HostKeyCheck {
    host: String,
    port: u16,
    known_hosts: PathBuf,
    /// Why the key was refused, for the error the caller sees.
    verdict: Arc<Mutex<Option<String>>>,
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            self.refuse("the server offered a host certificate; only plain host keys in known_hosts are trusted".into());
            return Ok(false);
        };
        let fingerprint = key.fingerprint(HashAlg::Sha256);
        let file = self.known_hosts.display();
        let result =
            russh::keys::check_known_hosts_path(&self.host, self.port, key, &self.known_hosts);
        match result {
            Ok(true) => return Ok(true),
            Ok(false) => self.refuse(format!(
                "host key {} {fingerprint} is not in {file}: check it, then add it (ssh-keyscan)",
                key.algorithm()
            )),
            Err(russh::keys::Error::KeyChanged { line }) => self.refuse(format!(
                "HOST KEY CHANGED: the server offered {} {fingerprint}, but line {line} of {file} \
                 holds another key for this host (a reinstalled server, or someone in the middle)",
                key.algorithm()
            )),
            Err(e) => self.refuse(format!("cannot check the host key against {file}: {e}")),
        }
        Ok(false)
    }
}

impl HostKeyCheck {
    fn refuse(&self, why: String) {
        tracing::warn!(host = %self.host, port = self.port, reason = %why, "ssh host key refused");
        *self.verdict.lock().expect("verdict") = Some(why);
    }
}
