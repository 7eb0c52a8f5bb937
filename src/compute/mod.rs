//! The compute cluster: external machines, containers, pods and services that handlers
//! send work to. A [`ComputeCluster`] holds [`ComputeNode`]s, each reached through a
//! backend named by its [`Endpoint`] (HTTP via reqwest, Docker via bollard, Kubernetes via
//! kube, SSH via russh) and represented by a supervised NodeProxy actor that owns the connection,
//! counts in-flight requests against `max_concurrent` and checks health with backoff.
//! [`ComputeCluster::select_node`] picks the least-loaded available node whose labels and
//! capabilities match.
//!
//! Each node has a circuit breaker ([`BreakerState`], shown as [`BreakerInfo`]): node
//! faults (unreachable, timed out, HTTP 5xx) and failed checks open it, after
//! `unhealthy_after` in a row or past a failure rate (see [`ComputeConfig`]). While it is
//! open the node's requests fail at once, retryably, with the cool-down left as
//! `retry_after`, and selection skips the node, so tasks go to another node with the same
//! labels; after the cool-down (growing with each failed probe) one probe request decides
//! whether it closes. While the node fails its health checks no probe is spent on it: the
//! first passing check half-opens the breaker.
//!
//! The task queue stays the one place that retries: a failed request answers with a
//! [`ComputeError`] that says whether a retry (on another node) can help, and converts
//! into the matching [`TaskError`](crate::TaskError).
//!
//! # Kubernetes
//!
//! A `k8s://NAMESPACE/DEPLOYMENT` node (or `k8s://DEPLOYMENT`, in namespace `default`) runs
//! each command as a Job of the deployment's first container image, with argv as the
//! container's command (no shell) and the node's `cpu` and `memory_gb` capabilities as its
//! limits; it answers with the pod's log and the container's exit code, and the Job is
//! deleted afterwards, also on a timeout or when the caller goes away. Kubernetes merges
//! standard error into the log: `stdout` holds both, `stderr` is empty. A
//! `k8s://NAMESPACE/pod/NAME` node is health-checked (running and ready) but refuses
//! commands: exec in a pod is not built. The node's credential names a kubeconfig file in
//! [`ComputeConfig::credentials_dir`]; without one the client is inferred (`KUBECONFIG`,
//! `~/.kube/config`, the in-cluster service account). Healthy means: the API server answers
//! and the deployment has a ready replica.
//!
//! ```no_run
//! use std::time::Duration;
//! use wrangle::compute::{
//!     CommandRequest, ComputeCluster, ComputeConfig, ComputeNode, ComputeRequest,
//!     ComputeResponse,
//! };
//! use wrangle::RestartBudget;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ComputeConfig {
//!     // Holds `prod-kubeconfig`, an ordinary kubeconfig file.
//!     credentials_dir: Some("/etc/wrangle/credentials".into()),
//!     ..ComputeConfig::default()
//! };
//! let cluster = ComputeCluster::start_with("batch", config, RestartBudget::default()).await?;
//! let node = ComputeNode::new("k8s-runner", "k8s://ml/runner")?
//!     .credential("prod-kubeconfig")
//!     .capability("cpu", 2.0)
//!     .capability("memory_gb", 4.0)
//!     .timeout(Duration::from_secs(600));
//! cluster.add_node(node).await?;
//! let request = ComputeRequest::Command(CommandRequest {
//!     argv: vec!["python3".into(), "-c".into(), "print(6 * 7)".into()],
//!     stdin: None,
//! });
//! let answer = cluster.node("k8s-runner").unwrap().execute(request).await;
//! if let Ok(ComputeResponse::Command { exit_code, stdout, .. }) = answer {
//!     assert_eq!((exit_code, stdout.as_str()), (Some(0), "42\n"));
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Files: `endpoint` (parsing), `node` (descriptions, selectors, reports), `request`
//! (requests, answers, errors), `config` (settings), `breaker` (the circuit breaker's state
//! machine), `proxy` (the actor), `state` (what a proxy shares with the handle), `cluster`
//! (the handle), `supervisor` (the proxies' supervisor), `backend/` (one file per backend).

mod backend;
mod breaker;
mod cluster;
mod config;
mod endpoint;
mod node;
mod proxy;
mod request;
mod spec;
mod state;
mod supervisor;
#[cfg(test)]
mod tests;
mod usage;

pub(crate) use backend::{docker_client, docker_message, kube_client, read_kubeconfig, KubeSource};
pub use breaker::BreakerState;
pub use cluster::{ComputeCluster, ComputeNodeRef};
pub use config::ComputeConfig;
pub(crate) use endpoint::dns_label;
pub use endpoint::{
    ComputeBackend, DockerEngine, DockerTarget, Endpoint, EndpointError, KubernetesTarget,
};
pub use node::{BreakerInfo, ComputeNode, ComputeNodeInfo, NodeHealth, Selector};
pub use request::{
    CommandRequest, ComputeError, ComputeErrorKind, ComputeRequest, ComputeResponse, HttpMethod,
    HttpRequest, StreamChunk, StreamFormat, StreamSink,
};
pub use spec::ComputeNodeSpec;
pub use usage::{ModelCall, ModelCounters, MAX_SERIES};
