//! Kubernetes nodes through kube: one client per node, made on first use (so a node can be
//! added while its API server is down), talking to the API server over rustls.
//!
//! - **Credentials**: the node's named credential is a kubeconfig file in the cluster's
//!   `credentials_dir` (its current context is used), read and parsed when the node is
//!   added: a missing or malformed one is refused naming the field `credential`. Without a
//!   credential the client is inferred as `kubectl` would: `KUBECONFIG` or
//!   `~/.kube/config`, else the in-cluster service account. Like an SSH key, a kubeconfig is
//!   never taken from a request, and its `exec` plugins run as wrangle's user: only an
//!   operator puts files in `credentials_dir`.
//! - **Commands** on `k8s://NAMESPACE/DEPLOYMENT` (or `k8s://DEPLOYMENT`, namespace
//!   `default`) each run as a **Job** in the deployment's namespace, from the image of the
//!   deployment's first container, with argv as the container's `command` (no shell, the
//!   image's entrypoint replaced) — see `job` and `run`. The Job is deleted when the
//!   command ends, and also when the request is dropped (timeout, caller gone, proxy
//!   stopped). Kubernetes keeps one log per container with standard error merged into it:
//!   the answer's `stdout` holds both streams, in the order the kubelet wrote them, and
//!   `stderr` is always empty. A Job has no standard input: a command with `stdin` is
//!   refused (`Invalid`).
//! - **Pods** (`k8s://NAMESPACE/pod/NAME`) are watched for health, but commands are not
//!   exec'd in them: exec needs kube's websocket client, which this build leaves out.
//!   Such a command is refused with a permanent error naming the endpoint.
//! - **Health**: the API server answers `GET /version`, and the deployment exists with at
//!   least one ready replica (or the pod is `Running` with its `Ready` condition true).
//! - **Errors**: see `error`; a non-zero exit code is an answer, not an error.
//!
//! kube's own retry layer is turned off: the task queue stays the one place that retries.
//!
//! The tests (`tests/compute_k8s.rs`) run against a mock of the Kubernetes API served on
//! 127.0.0.1, not a real cluster.

mod deletion;
mod error;
mod health;
mod job;
mod output;
mod run;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::Backend;
use crate::compute::endpoint::{Endpoint, KubernetesTarget};
use crate::compute::node::ComputeNode;
use crate::compute::request::{
    ComputeError, ComputeErrorKind, ComputeRequest, ComputeResponse, StreamSink,
};
use crate::error::Error;

pub(crate) struct KubernetesBackend {
    cluster: Arc<Cluster>,
}

/// What a node's requests share: the client, where it runs things, and the limits.
struct Cluster {
    /// Where the client's settings come from.
    source: Source,
    /// Made on first success.
    client: tokio::sync::OnceCell<Client>,
    node_id: String,
    namespace: String,
    target: KubernetesTarget,
    /// The endpoint as written, for messages.
    endpoint: String,
    /// Resource limits of a Job's container, from the node's capabilities.
    limits: job::Limits,
    /// How long the API server lets a Job run (`activeDeadlineSeconds`): the node's
    /// timeout, so a Job outlives no request even when wrangle is gone before deleting it.
    deadline: Duration,
}

/// Where a client's settings come from (also the node launcher's: `launch::kubernetes`).
pub(crate) enum Source {
    /// A parsed kubeconfig (not printed: it holds secrets), its current context used;
    /// `name` says which one in messages (a credential's name, a path).
    Kubeconfig {
        config: Box<Kubeconfig>,
        name: String,
    },
    /// Inferred: `KUBECONFIG`, `~/.kube/config`, or the in-cluster service account.
    Infer,
}

impl KubernetesBackend {
    /// The backend of a `k8s://` node; `credential` is the path of its named kubeconfig.
    /// Refuses a kubeconfig that cannot be read or parsed, naming the field `credential`.
    pub(crate) fn new(node: &ComputeNode, credential: Option<&Path>) -> Result<Self, Error> {
        let Endpoint::Kubernetes { namespace, target } = node.endpoint() else {
            return Err(Error::invalid("endpoint", "not a k8s:// endpoint"));
        };
        let source = match (credential, node.credential_name()) {
            (Some(path), Some(name)) => Source::Kubeconfig {
                config: Box::new(load_kubeconfig(path, name)?),
                name: name.to_string(),
            },
            _ => Source::Infer,
        };
        Ok(Self {
            cluster: Arc::new(Cluster {
                source,
                client: tokio::sync::OnceCell::new(),
                node_id: node.id().to_string(),
                namespace: namespace.clone(),
                target: target.clone(),
                endpoint: node.endpoint().to_string(),
                limits: job::Limits::from_capabilities(node.capabilities()),
                deadline: node.request_timeout(),
            }),
        })
    }
}

/// Reads and parses kubeconfig `name`; the error names the field and never quotes the file.
fn load_kubeconfig(path: &Path, name: &str) -> Result<Kubeconfig, Error> {
    read_kubeconfig(path)
        .map_err(|why| Error::invalid("credential", format!("kubeconfig `{name}` {why}")))
}

/// Reads and parses the kubeconfig at `path`; the error says why (`cannot be read (…)`,
/// `is not a kubeconfig …`) and never quotes the file, which holds secrets.
pub(crate) fn read_kubeconfig(path: &Path) -> Result<Kubeconfig, String> {
    use kube::config::KubeconfigError as E;
    Kubeconfig::read_from(path).map_err(|e| match e {
        E::ReadConfig(e, _) => format!("cannot be read ({})", e.kind()),
        _ => "is not a kubeconfig (YAML with clusters, users and contexts)".to_string(),
    })
}

/// A client from `source`'s settings, talking rustls, with kube's retry layer off (the task
/// queue, or a node group's planner, is the one place that retries). Errors start with
/// `kubernetes: ` and never quote the kubeconfig.
pub(crate) async fn connect(source: &Source) -> Result<Client, ComputeError> {
    install_crypto_provider();
    let mut config = match source {
        Source::Kubeconfig { config, name } => {
            let options = KubeConfigOptions::default();
            Config::from_custom_kubeconfig((**config).clone(), &options)
                .await
                .map_err(|e| {
                    ComputeError::new(
                        ComputeErrorKind::Rejected,
                        format!("kubernetes: kubeconfig `{name}` cannot be used: {e}"),
                    )
                })?
        }
        Source::Infer => Config::infer().await.map_err(|e| {
            ComputeError::unavailable(format!(
                "kubernetes: no credential named and none found (KUBECONFIG, \
                 ~/.kube/config, in-cluster): {e}"
            ))
        })?,
    };
    config.default_retry = false;
    Client::try_from(config).map_err(|e| error::api_error("make a client", e))
}

/// kube builds its TLS settings with rustls' process-wide crypto provider, which rustls
/// cannot choose by itself here (ring and aws-lc-rs are both built): wrangle installs its
/// own, aws-lc-rs (`util::tls_provider`), unless the application installed one first.
fn install_crypto_provider() {
    use tokio_rustls::rustls::crypto::CryptoProvider;
    if CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: a provider is installed either way.
        let _ = CryptoProvider::install_default(
            tokio_rustls::rustls::crypto::aws_lc_rs::default_provider(),
        );
    }
}

impl Cluster {
    /// The node's client, made on first use (tried again at every use until it works).
    async fn client(&self) -> Result<Client, ComputeError> {
        self.client
            .get_or_try_init(|| connect(&self.source))
            .await
            .cloned()
    }
}

impl Backend for KubernetesBackend {
    fn execute(
        &self,
        request: ComputeRequest,
        sink: Option<StreamSink>,
    ) -> BoxFuture<'static, Result<ComputeResponse, ComputeError>> {
        let refuse = |why: String| -> BoxFuture<'static, _> {
            Box::pin(async move { Err(ComputeError::invalid(why)) })
        };
        let ComputeRequest::Command(command) = request else {
            return refuse("a Kubernetes node runs commands, not HTTP requests".into());
        };
        if command.stdin.is_some() {
            return refuse(format!(
                "stdin: {}: a command runs as a Kubernetes Job, which has no standard input",
                self.cluster.endpoint
            ));
        }
        match &self.cluster.target {
            KubernetesTarget::Deployment(deployment) => Box::pin(run::run(
                self.cluster.clone(),
                deployment.clone(),
                command.argv,
                sink,
            )),
            KubernetesTarget::Pod(_) => refuse(format!(
                "{}: commands are not exec'd in a pod (this build has no websocket client); \
                 use a deployment endpoint, k8s://NAMESPACE/DEPLOYMENT, whose commands run as Jobs",
                self.cluster.endpoint
            )),
        }
    }

    fn health(&self, _timeout: Duration) -> BoxFuture<'static, Result<(), String>> {
        // The proxy bounds the check by its timeout.
        let cluster = self.cluster.clone();
        Box::pin(async move { health::check(&cluster).await })
    }
}
