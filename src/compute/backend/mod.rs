//! The backends a [`NodeProxy`](super::proxy) talks through, one file each. A backend
//! owns its client (and the client's connection pool), runs one request, and answers a
//! health check; the proxy around it counts, queues, times and supervises.

mod docker;
mod http;
mod k8s;
mod ssh;

pub(crate) use docker::{connect as docker_client, message as docker_message};
pub(crate) use k8s::{connect as kube_client, read_kubeconfig, Source as KubeSource};

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::config::ComputeConfig;
use super::endpoint::Endpoint;
use super::node::ComputeNode;
use super::request::{ComputeError, ComputeRequest, ComputeResponse, StreamSink};
use crate::error::Error;

/// One backend's client for one node.
pub(crate) trait Backend: Send + Sync + 'static {
    /// Runs one request; streamed output goes to `sink` as it arrives. The proxy bounds
    /// the whole call by the node's timeout.
    fn execute(
        &self,
        request: ComputeRequest,
        sink: Option<StreamSink>,
    ) -> BoxFuture<'static, Result<ComputeResponse, ComputeError>>;

    /// Checks that the node answers; `Err` says why not.
    fn health(&self, timeout: Duration) -> BoxFuture<'static, Result<(), String>>;
}

/// The backend for `node`'s endpoint, with credentials and host keys found by `config`.
pub(crate) fn connect(
    node: &ComputeNode,
    config: &ComputeConfig,
) -> Result<Arc<dyn Backend>, Error> {
    let credential = match node.credential_name() {
        Some(name) => Some(config.credential_path(name)?),
        None => None,
    };
    match node.endpoint() {
        Endpoint::Http { base, .. } => {
            let token = credential.map(|path| read_secret(&path)).transpose()?;
            Ok(Arc::new(http::HttpBackend::new(base, node, token)?))
        }
        Endpoint::Docker { engine, target } => {
            Ok(Arc::new(docker::DockerBackend::new(engine, target, node)))
        }
        Endpoint::Kubernetes { .. } => Ok(Arc::new(k8s::KubernetesBackend::new(
            node,
            credential.as_deref(),
        )?)),
        Endpoint::Ssh { .. } => Ok(Arc::new(ssh::SshBackend::new(node, credential, config)?)),
    }
}

/// A secret file's content (a token), trimmed; bounded, and never quoted in errors.
fn read_secret(path: &std::path::Path) -> Result<String, Error> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::invalid("credential", format!("{}: {}", path.display(), e.kind())))?;
    if bytes.len() > 64 << 10 {
        return Err(Error::invalid(
            "credential",
            "a token file is at most 64 KiB",
        ));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::invalid("credential", "a token file must be UTF-8 text"))?;
    Ok(text.trim().to_string())
}
