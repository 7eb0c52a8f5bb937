//! The compute cluster: external machines, containers, pods and services that handlers
//! send work to. A [`ComputeCluster`] holds [`ComputeNode`]s, each reached through a
//! backend named by its [`Endpoint`] (HTTP via reqwest, Docker via bollard; Kubernetes and
//! SSH follow) and represented by a supervised NodeProxy actor that owns the connection,
//! counts in-flight requests against `max_concurrent`, checks health with backoff and
//! trips a circuit breaker. [`ComputeCluster::select_node`] picks the least-loaded healthy
//! node whose labels and capabilities match.
//!
//! The task queue stays the one place that retries: a failed request answers with a
//! [`ComputeError`] that says whether a retry (on another node) can help, and converts
//! into the matching [`TaskError`](crate::TaskError).
//!
//! Files: `endpoint` (parsing), `node` (descriptions, selectors, reports), `request`
//! (requests, answers, errors), `config` (settings), `proxy` (the actor), `state` (what a proxy shares with the
//! handle), `cluster` (the handle), `supervisor` (the proxies' supervisor), `backend/` (one file per
//! backend).

mod backend;
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

pub use cluster::{ComputeCluster, ComputeNodeRef};
pub use config::ComputeConfig;
pub use endpoint::{
    ComputeBackend, DockerEngine, DockerTarget, Endpoint, EndpointError, KubernetesTarget,
};
pub use node::{ComputeNode, ComputeNodeInfo, NodeHealth, Selector};
pub use request::{
    CommandRequest, ComputeError, ComputeErrorKind, ComputeRequest, ComputeResponse, HttpMethod,
    HttpRequest, StreamChunk, StreamFormat, StreamSink,
};
pub use spec::ComputeNodeSpec;
