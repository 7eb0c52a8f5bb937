//! The backends a [`NodeProxy`](super::proxy) talks through, one file each. A backend
//! owns its client (and the client's connection pool), runs one request, and answers a
//! health check; the proxy around it counts, queues, times and supervises.

mod http;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

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

/// The backend for `node`'s endpoint.
pub(crate) fn connect(node: &ComputeNode) -> Result<Arc<dyn Backend>, Error> {
    match node.endpoint() {
        Endpoint::Http { base, .. } => Ok(Arc::new(http::HttpBackend::new(base, node)?)),
        other => Err(Error::invalid(
            "endpoint",
            format!(
                "the {} backend is not available in this build yet ({other})",
                other.backend()
            ),
        )),
    }
}
