//! A node group's settings and their checks.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::Error;

/// One group of nodes the coordinator launches and stops by itself.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeGroupConfig {
    /// Its name: letters, digits, `-` and `_`, at most 40 (it starts each node's name and
    /// labels the provider's resources).
    pub name: String,
    /// Labels its nodes have (`gpu=a100`): tasks requiring them wait for this group.
    pub labels: Vec<String>,
    /// Task types its nodes serve. The API accepts them at submit while the group can
    /// launch, even with none of its nodes online.
    pub task_types: Vec<String>,
    /// Fewest nodes kept running. Default 0.
    pub min_nodes: usize,
    /// Most nodes at once, those still starting or draining included. Default 4.
    pub max_nodes: usize,
    /// Task slots one node brings (its workers × slots), until a joined node says its own.
    /// Default 16 (the node program's 4 workers × 4 slots).
    pub slots_per_node: u64,
    /// Launch more when waiting tasks per slot of the group's nodes exceed this. Default 1.
    pub scale_up_threshold: f64,
    /// Nodes launched in one step up. Default 1.
    pub scale_up_step: usize,
    /// A node with nothing leased or running this long is drained. Default 60 s.
    pub idle_timeout: Duration,
    /// A launched node that has not joined within this is terminated (and a lost one that
    /// has not come back). Also bounds each launcher call. Default 60 s.
    pub join_timeout: Duration,
    /// A drain that has not emptied the node within this is undone: the node keeps its
    /// work and takes tasks again. Default 5 min.
    pub drain_timeout: Duration,
    /// Time a terminated node is given to stop before it is forced. Default 30 s.
    pub stop_grace: Duration,
    /// Least time between two steps up. Default 10 s.
    pub scale_up_cooldown: Duration,
    /// Least time after a step up before any node is drained, and between two drains.
    /// Default 30 s.
    pub scale_down_cooldown: Duration,
    /// First wait after a failed launch (or a node that never joined); doubled at each
    /// failure in a row, up to 5 min. Default 2 s.
    pub launch_backoff: Duration,
    /// Extra environment of the node program (`WRANGLE_NODE_WORKERS`, `RUST_LOG`).
    pub env: BTreeMap<String, String>,
    /// The address (`host:port`) launched nodes dial to join. Default: the cluster's listen
    /// address, `127.0.0.1` for an unspecified one, which suits local processes and
    /// containers on the host's network; nodes on other machines need one they can reach.
    pub join: Option<String>,
}

impl Default for NodeGroupConfig {
    fn default() -> Self {
        Self {
            name: "nodes".into(),
            labels: Vec::new(),
            task_types: Vec::new(),
            min_nodes: 0,
            max_nodes: 4,
            slots_per_node: 16,
            scale_up_threshold: 1.0,
            scale_up_step: 1,
            idle_timeout: Duration::from_secs(60),
            join_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(300),
            stop_grace: Duration::from_secs(30),
            scale_up_cooldown: Duration::from_secs(10),
            scale_down_cooldown: Duration::from_secs(30),
            launch_backoff: Duration::from_secs(2),
            env: BTreeMap::new(),
            join: None,
        }
    }
}

/// Environment variables a group may not set: the launcher sets them for each node.
const RESERVED_ENV: [&str; 4] = [
    "WRANGLE_JOIN",
    "WRANGLE_COOKIE",
    "WRANGLE_NODE_NAME",
    "WRANGLE_LABELS",
];

impl NodeGroupConfig {
    /// A group named `name` with the defaults.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Checks every setting; the error names the first bad one (as `node_groups.FIELD`).
    pub fn validate(&self) -> Result<(), Error> {
        let ok_name = !self.name.is_empty()
            && self.name.len() <= 40
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok_name {
            return Err(Error::invalid(
                "node_groups.name",
                "1 to 40 letters, digits, '-' or '_'",
            ));
        }
        if self.max_nodes == 0 || self.max_nodes > 1_000 {
            return Err(Error::invalid("node_groups.max_nodes", "must be 1..=1000"));
        }
        if self.min_nodes > self.max_nodes {
            return Err(Error::invalid(
                "node_groups.min_nodes",
                "must not exceed max_nodes",
            ));
        }
        if self.slots_per_node == 0 {
            return Err(Error::invalid(
                "node_groups.slots_per_node",
                "must be at least 1",
            ));
        }
        if !(self.scale_up_threshold.is_finite() && self.scale_up_threshold >= 0.0) {
            return Err(Error::invalid(
                "node_groups.scale_up_threshold",
                "must be a number >= 0",
            ));
        }
        if self.scale_up_step == 0 {
            return Err(Error::invalid(
                "node_groups.scale_up_step",
                "must be at least 1",
            ));
        }
        for (field, d) in [
            ("node_groups.idle_timeout", self.idle_timeout),
            ("node_groups.join_timeout", self.join_timeout),
            ("node_groups.drain_timeout", self.drain_timeout),
            ("node_groups.launch_backoff", self.launch_backoff),
        ] {
            if d.is_zero() {
                return Err(Error::invalid(field, "must be greater than zero"));
            }
        }
        if self.labels.len() > 64 || self.labels.iter().any(|l| l.is_empty() || l.len() > 256) {
            return Err(Error::invalid(
                "node_groups.labels",
                "at most 64 labels of 1 to 256 characters",
            ));
        }
        if self.labels.iter().any(|l| l.contains(',')) {
            return Err(Error::invalid(
                "node_groups.labels",
                "a label may not contain ','",
            ));
        }
        if self.task_types.len() > 1_024 || self.task_types.iter().any(|t| t.is_empty()) {
            return Err(Error::invalid(
                "node_groups.task_types",
                "at most 1024 non-empty task types",
            ));
        }
        if let Some(join) = &self.join {
            let port = join.rsplit_once(':').and_then(|(h, p)| {
                (!h.is_empty() && !h.contains(char::is_whitespace))
                    .then(|| p.parse::<u16>().ok())?
            });
            if join.len() > 255 || !matches!(port, Some(p) if p > 0) {
                return Err(Error::invalid("node_groups.join", "must be host:port"));
            }
        }
        if let Some(k) = self.env.keys().find(|k| RESERVED_ENV.contains(&k.as_str())) {
            return Err(Error::invalid(
                "node_groups.env",
                format!("{k} is set by the launcher"),
            ));
        }
        Ok(())
    }

    /// True when this group's nodes can take tasks of `task_type` requiring `labels`:
    /// the type is one of its task types, and every required label is met as a worker
    /// meets it (`name` by `name` or `name=<any>`, `name=value` only by itself).
    pub fn serves(&self, task_type: &str, labels: &[String]) -> bool {
        self.task_types.iter().any(|t| t == task_type)
            && crate::worker::labels_meet(&self.labels, labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_setting_is_named() {
        let bad = |f: fn(&mut NodeGroupConfig), field: &str| {
            let mut c = NodeGroupConfig::new("gpu");
            f(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{err} should name {field}");
        };
        bad(|c| c.name = "no spaces".into(), "node_groups.name");
        bad(|c| c.max_nodes = 0, "node_groups.max_nodes");
        bad(|c| c.min_nodes = 5, "node_groups.min_nodes");
        bad(|c| c.scale_up_threshold = f64::NAN, "scale_up_threshold");
        bad(|c| c.join_timeout = Duration::ZERO, "join_timeout");
        bad(|c| c.labels = vec!["a,b".into()], "node_groups.labels");
        bad(|c| c.join = Some("no-port".into()), "node_groups.join");
        bad(|c| c.join = Some("host:0".into()), "node_groups.join");
        bad(
            |c| {
                c.env.insert("WRANGLE_COOKIE".into(), "x".into());
            },
            "node_groups.env",
        );
        NodeGroupConfig::new("gpu").validate().unwrap();
    }

    #[test]
    fn serves_its_types_with_its_labels_as_workers_do() {
        let mut c = NodeGroupConfig::new("gpu");
        c.task_types = vec!["infer".into()];
        c.labels = vec!["gpu=a100".into()];
        assert!(c.serves("infer", &[]));
        assert!(c.serves("infer", &["gpu".into()]));
        assert!(c.serves("infer", &["gpu=a100".into()]));
        assert!(!c.serves("infer", &["gpu=h100".into()]));
        assert!(!c.serves("echo", &[]));
    }
}
