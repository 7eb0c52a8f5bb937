//! A compute node as configuration writes it (`[[compute.nodes]]` in `wrangle.toml`) and as
//! `POST /compute/nodes` takes it.

use std::collections::BTreeMap;
use std::time::Duration;

use super::node::ComputeNode;
use crate::error::Error;

/// A node's settings, as data.
///
/// ```
/// use wrangle::compute::ComputeNodeSpec;
///
/// let spec: ComputeNodeSpec = toml::from_str(r#"
///     id = "gpu1"
///     endpoint = "http://127.0.0.1:11434"
///     labels = { gpu = "a100" }
///     capabilities = { memory_gb = 80 }
///     max_concurrent = 4
/// "#).unwrap();
/// let node = spec.into_node()?;
/// assert_eq!(node.concurrency(), 4);
/// # Ok::<(), wrangle::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ComputeNodeSpec {
    /// Unique id: 1 to 128 of `[A-Za-z0-9_.-]`.
    pub id: String,
    /// Display name (the id by default).
    #[serde(default)]
    pub name: Option<String>,
    /// Where the node is (`http://`, `https://`, `docker://`, `k8s://`, `ssh://`).
    pub endpoint: String,
    /// Labels selections match exactly.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Capabilities selections require at least (cpu, memory_gb, gpu, …).
    #[serde(default)]
    pub capabilities: BTreeMap<String, f64>,
    /// Requests at once. Default 1.
    #[serde(default = "one")]
    pub max_concurrent: usize,
    /// Seconds one request may take. Default 300.
    #[serde(default = "five_minutes")]
    pub timeout_secs: f64,
    /// Name of a credential in the cluster's credentials directory (never a path).
    #[serde(default)]
    pub credential: Option<String>,
}

fn one() -> usize {
    1
}

fn five_minutes() -> f64 {
    300.0
}

impl ComputeNodeSpec {
    /// The node, checked; the error names the bad field.
    pub fn into_node(self) -> Result<ComputeNode, Error> {
        if !self.timeout_secs.is_finite()
            || self.timeout_secs <= 0.0
            || self.timeout_secs > 86_400.0
        {
            return Err(Error::invalid(
                "timeout_secs",
                "must be more than 0 and at most 86400",
            ));
        }
        let mut node = ComputeNode::new(self.id, &self.endpoint)?
            .max_concurrent(self.max_concurrent)
            .timeout(Duration::from_secs_f64(self.timeout_secs));
        if let Some(name) = self.name {
            node = node.name(name);
        }
        for (k, v) in self.labels {
            node = node.label(k, v);
        }
        for (k, v) in self.capabilities {
            node = node.capability(k, v);
        }
        if let Some(c) = self.credential {
            node = node.credential(c);
        }
        node.validate()?;
        Ok(node)
    }
}
