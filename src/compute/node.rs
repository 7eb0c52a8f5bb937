//! A compute node's description ([`ComputeNode`]), what a selection asks of one
//! ([`Selector`]), and what the cluster reports about one ([`ComputeNodeInfo`]).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::breaker::BreakerState;
use super::endpoint::{ComputeBackend, Endpoint, EndpointError};
use crate::error::Error;

/// Longest node id accepted.
const MAX_ID: usize = 128;
/// Most labels or capabilities on one node.
const MAX_ENTRIES: usize = 64;

/// An external execution target: where it is, what it offers, how much it takes at once.
///
/// ```
/// use wrangle::compute::ComputeNode;
///
/// let node = ComputeNode::new("gpu2", "k8s://ollama-deployment")?
///     .label("gpu", "a100")
///     .capability("gpu", 1.0)
///     .max_concurrent(4);
/// assert_eq!(node.id(), "gpu2");
/// assert_eq!(node.endpoint().to_string(), "k8s://default/ollama-deployment");
/// # Ok::<(), wrangle::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ComputeNode {
    id: String,
    name: String,
    endpoint: Endpoint,
    labels: BTreeMap<String, String>,
    capabilities: BTreeMap<String, f64>,
    max_concurrent: usize,
    timeout: Duration,
    credential: Option<String>,
}

impl ComputeNode {
    /// A node with one slot (`max_concurrent` 1), a 300 s request timeout, no labels and
    /// no capabilities. Fails on an id that is empty, too long or not `[A-Za-z0-9_.-]`,
    /// and on an endpoint that does not parse.
    pub fn new(id: impl Into<String>, endpoint: &str) -> Result<Self, Error> {
        let id = id.into();
        check_name("node_id", &id)?;
        let endpoint = Endpoint::parse(endpoint).map_err(endpoint_error)?;
        Ok(Self {
            name: id.clone(),
            id,
            endpoint,
            labels: BTreeMap::new(),
            capabilities: BTreeMap::new(),
            max_concurrent: 1,
            timeout: Duration::from_secs(300),
            credential: None,
        })
    }

    /// A display name (the id by default).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Adds a label: selections that ask for `key = value` may pick this node.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Adds a capability: how much of `key` (cpu, memory_gb, gpu, anything) this node
    /// has. A selection requiring `key ≥ n` picks only nodes with at least `n`.
    pub fn capability(mut self, key: impl Into<String>, amount: f64) -> Self {
        self.capabilities.insert(key.into(), amount);
        self
    }

    /// How many requests the node runs at once (default 1); more wait in its proxy.
    pub fn max_concurrent(mut self, n: usize) -> Self {
        self.max_concurrent = n;
        self
    }

    /// How long one request may take (default 300 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The name of the credential (in the cluster's credentials directory) the backend
    /// logs in with: an SSH key, a bearer token, a kubeconfig.
    pub fn credential(mut self, name: impl Into<String>) -> Self {
        self.credential = Some(name.into());
        self
    }

    /// The node's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The node's display name.
    pub fn display_name(&self) -> &str {
        &self.name
    }

    /// Where the node is.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Its backend.
    pub fn backend(&self) -> ComputeBackend {
        self.endpoint.backend()
    }

    /// Its labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    /// Its capabilities.
    pub fn capabilities(&self) -> &BTreeMap<String, f64> {
        &self.capabilities
    }

    /// Requests it runs at once.
    pub fn concurrency(&self) -> usize {
        self.max_concurrent
    }

    /// The request timeout.
    pub fn request_timeout(&self) -> Duration {
        self.timeout
    }

    /// The credential's name, if any.
    pub fn credential_name(&self) -> Option<&str> {
        self.credential.as_deref()
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), Error> {
        check_name("node_id", &self.id)?;
        if self.name.is_empty() || self.name.len() > MAX_ID {
            return Err(Error::invalid("name", "must be 1 to 128 bytes"));
        }
        if self.max_concurrent == 0 || self.max_concurrent > 100_000 {
            return Err(Error::invalid("max_concurrent", "must be from 1 to 100000"));
        }
        if self.timeout.is_zero() {
            return Err(Error::invalid("timeout", "must be greater than zero"));
        }
        if self.labels.len() > MAX_ENTRIES || self.capabilities.len() > MAX_ENTRIES {
            return Err(Error::invalid(
                "labels",
                "at most 64 labels and 64 capabilities",
            ));
        }
        for (k, v) in &self.labels {
            check_name("labels", k)?;
            if v.len() > 256 {
                return Err(Error::invalid(
                    "labels",
                    format!("value of `{k}` is over 256 bytes"),
                ));
            }
        }
        for (k, v) in &self.capabilities {
            check_name("capabilities", k)?;
            if !v.is_finite() || *v < 0.0 {
                return Err(Error::invalid(
                    "capabilities",
                    format!("`{k}` must be a finite number ≥ 0"),
                ));
            }
        }
        if let Some(c) = &self.credential {
            check_name("credential", c)?;
        }
        Ok(())
    }
}

pub(crate) fn endpoint_error(e: EndpointError) -> Error {
    Error::invalid("endpoint", e.to_string())
}

/// A name that is safe as an id, a label key or a file name: `[A-Za-z0-9_.-]`, 1 to 128
/// bytes, not `.` or `..`.
fn check_name(field: &'static str, s: &str) -> Result<(), Error> {
    let ok = !s.is_empty()
        && s.len() <= MAX_ID
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("`{}` must be 1 to 128 of [A-Za-z0-9_.-]", s.escape_debug()),
        ))
    }
}

/// What a selection asks of a node: labels it must carry (equal values) and capabilities
/// it must have at least.
///
/// ```
/// use wrangle::compute::Selector;
///
/// let want = Selector::new().label("gpu", "a100").require("memory_gb", 40.0);
/// # let _ = want;
/// ```
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Selector {
    /// Labels the node must carry, with these values.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Capabilities the node must have at least this much of.
    #[serde(default)]
    pub requirements: BTreeMap<String, f64>,
}

impl Selector {
    /// Any node.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only nodes labelled `key = value`.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Only nodes with at least `amount` of `key`.
    pub fn require(mut self, key: impl Into<String>, amount: f64) -> Self {
        self.requirements.insert(key.into(), amount);
        self
    }

    /// Whether `node` matches.
    pub fn matches(&self, node: &ComputeNode) -> bool {
        self.labels
            .iter()
            .all(|(k, v)| node.labels.get(k) == Some(v))
            && self
                .requirements
                .iter()
                .all(|(k, min)| node.capabilities.get(k).is_some_and(|have| have >= min))
    }
}

/// A node's health as its proxy last saw it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct NodeHealth {
    /// Whether the node takes work: its circuit breaker is not open.
    pub healthy: bool,
    /// When it was last checked (`None`: not yet); in JSON, milliseconds since the Unix
    /// epoch.
    #[serde(serialize_with = "unix_ms")]
    #[schema(value_type = Option<u64>)]
    pub checked_at: Option<SystemTime>,
    /// Why the last check or request failed, if it did (cleared by a passing check).
    pub reason: Option<String>,
    /// Node faults and failed checks in a row (the breaker's count).
    pub consecutive_failures: u32,
}

/// A node's circuit breaker: whether requests go through, and why not.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct BreakerInfo {
    /// `closed` (requests go through), `open` (refused at once, retryably) or `half_open`
    /// (a probe request decides).
    pub state: BreakerState,
    /// Node faults and failed checks in a row.
    pub consecutive_failures: u32,
    /// Requests in the failure-rate window.
    pub window_requests: u32,
    /// Of those, the failed ones.
    pub window_failures: u32,
    /// `window_failures / window_requests` (0 when the window is empty).
    pub failure_rate: f64,
    /// When it last opened, while open or half-open; in JSON, milliseconds since the Unix
    /// epoch.
    #[serde(serialize_with = "unix_ms")]
    #[schema(value_type = Option<u64>)]
    pub opened_at: Option<SystemTime>,
    /// While open, when its cool-down ends (a probe may then go through); in JSON,
    /// milliseconds since the Unix epoch.
    #[serde(serialize_with = "unix_ms")]
    #[schema(value_type = Option<u64>)]
    pub retry_at: Option<SystemTime>,
    /// Open and waiting for a passing health check, whatever the cool-down: the node fails
    /// its checks.
    pub waiting_for_check: bool,
    /// Why it last opened.
    pub reason: Option<String>,
    /// Times it opened since the node was added.
    pub trips: u64,
    /// Requests it refused at once.
    pub rejected: u64,
}

fn unix_ms<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    let ms = t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok());
    match ms {
        Some(d) => s.serialize_some(&(d.as_millis() as u64)),
        None => s.serialize_none(),
    }
}

/// What the cluster knows of one node right now.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct ComputeNodeInfo {
    /// Its id.
    pub id: String,
    /// Its display name.
    pub name: String,
    /// Its backend.
    pub backend: ComputeBackend,
    /// Its endpoint.
    pub endpoint: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its capabilities.
    pub capabilities: BTreeMap<String, f64>,
    /// Requests it runs at once.
    pub max_concurrent: usize,
    /// Requests running now.
    pub in_flight: usize,
    /// Requests waiting in its proxy for a slot.
    pub waiting: usize,
    /// Its health.
    pub health: NodeHealth,
    /// Its circuit breaker.
    pub breaker: BreakerInfo,
    /// Requests finished, and of those failed, since the node was added.
    pub requests: u64,
    /// Requests that failed.
    pub failures: u64,
    /// Times its proxy was restarted.
    pub restarts: u64,
    /// Messages waiting in its proxy's mailbox.
    pub mailbox_depth: u64,
    /// Whether it is being removed (it takes nothing new and finishes what it has).
    pub draining: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_fields_are_named() {
        let field = |r: Result<(), Error>| match r.unwrap_err() {
            Error::Invalid { field, .. } => field,
            e => panic!("{e}"),
        };
        assert_eq!(
            field(ComputeNode::new("", "http://h:1").map(|_| ())),
            "node_id"
        );
        assert_eq!(
            field(ComputeNode::new("a/b", "http://h:1").map(|_| ())),
            "node_id"
        );
        assert_eq!(
            field(ComputeNode::new("a", "gopher://h").map(|_| ())),
            "endpoint"
        );
        let n = ComputeNode::new("a", "http://h:1").unwrap();
        assert!(n.validate().is_ok());
        assert_eq!(
            field(n.clone().max_concurrent(0).validate()),
            "max_concurrent"
        );
        assert_eq!(
            field(n.clone().timeout(Duration::ZERO).validate()),
            "timeout"
        );
        assert_eq!(field(n.clone().label("a b", "x").validate()), "labels");
        assert_eq!(
            field(n.clone().capability("gpu", f64::NAN).validate()),
            "capabilities"
        );
        assert_eq!(
            field(n.clone().credential("../id_rsa").validate()),
            "credential"
        );
    }

    #[test]
    fn selectors_match_labels_exactly_and_capabilities_at_least() {
        let n = ComputeNode::new("a", "http://h:1")
            .unwrap()
            .label("gpu", "a100")
            .label("region", "eu")
            .capability("memory_gb", 80.0);
        assert!(Selector::new().matches(&n));
        assert!(Selector::new().label("gpu", "a100").matches(&n));
        assert!(!Selector::new().label("gpu", "h100").matches(&n));
        assert!(!Selector::new().label("zone", "b").matches(&n));
        assert!(Selector::new().require("memory_gb", 80.0).matches(&n));
        assert!(!Selector::new().require("memory_gb", 81.0).matches(&n));
        assert!(!Selector::new().require("cpu", 1.0).matches(&n));
    }
}
