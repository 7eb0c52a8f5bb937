//! The Job a command runs as: its name, labels, limits and spec.
//!
//! - **Labels** (on the Job and its pod): `app.kubernetes.io/managed-by=wrangle`,
//!   `wrangle.io/node=<node id>` and `wrangle.io/request=<id of this run>`; the pod is found
//!   by the last. (The task that sent the command is not known down here: a
//!   [`CommandRequest`](crate::compute::CommandRequest) does not carry it.)
//! - **Spec**: one container, `command`, of the deployment's image, argv as its `command`
//!   (no shell; the image's entrypoint replaced), `restartPolicy: Never`, `backoffLimit: 0`
//!   (a failed command is an answer, never run twice by Kubernetes), `activeDeadlineSeconds`
//!   the node's timeout, `ttlSecondsAfterFinished` as a backstop should the deletion fail,
//!   and no service-account token mounted: commands sent by agents get no credentials of
//!   the cluster.
//! - **Limits** from the node's capabilities, as the Docker backend reads them: `cpu`
//!   (cores, fractions allowed) as millicores, `memory_gb` (GiB) as bytes; absent or zero
//!   means no limit. Requests default to the limits.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::core::ObjectMeta;

/// The name of the one container of a command's pod.
pub(super) const CONTAINER: &str = "command";
/// The label saying who manages a Job.
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The label naming the node that made a Job.
const NODE: &str = "wrangle.io/node";
/// The label naming one run: the pod is found by it.
pub(super) const REQUEST: &str = "wrangle.io/request";
/// How long a finished Job the API server keeps should wrangle fail to delete it.
const TTL_AFTER_FINISHED_SECS: i32 = 300;

/// A Job container's resource limits.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Limits(BTreeMap<String, Quantity>);

impl Limits {
    /// `cpu` cores as millicores and `memory_gb` GiB as bytes; zero means no limit.
    pub(super) fn from_capabilities(capabilities: &BTreeMap<String, f64>) -> Self {
        let scaled = |key: &str, unit: f64| {
            capabilities
                .get(key)
                .map(|v| (v * unit).round())
                .filter(|v| *v >= 1.0)
                .map(|v| v.min(i64::MAX as f64) as i64)
        };
        let mut limits = BTreeMap::new();
        if let Some(millis) = scaled("cpu", 1e3) {
            limits.insert("cpu".to_string(), Quantity(format!("{millis}m")));
        }
        if let Some(bytes) = scaled("memory_gb", (1u64 << 30) as f64) {
            limits.insert("memory".to_string(), Quantity(bytes.to_string()));
        }
        Self(limits)
    }
}

/// A fresh run's id and its Job's name: `wrangle-<node>-<id>`, a DNS label of at most 63
/// characters (the node id lower-cased, other characters as `-`, cut to 20).
pub(super) fn names(node_id: &str) -> (String, String) {
    let run = uuid::Uuid::now_v7().simple().to_string();
    let node: String = node_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(20)
        .collect();
    let node = node.trim_matches('-');
    let name = if node.is_empty() {
        format!("wrangle-{run}")
    } else {
        format!("wrangle-{node}-{run}")
    };
    (run, name)
}

/// A label value of `s`: at most 63 of `[A-Za-z0-9_.-]`, starting and ending alphanumeric
/// (node ids are `[A-Za-z0-9_.-]` already, but may be longer or end in `-`).
fn label_value(s: &str) -> String {
    let cut: String = s.chars().take(63).collect();
    cut.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// What a Job is made of.
pub(super) struct Manifest<'a> {
    pub(super) name: &'a str,
    pub(super) run: &'a str,
    pub(super) node_id: &'a str,
    pub(super) image: &'a str,
    pub(super) argv: Vec<String>,
    pub(super) limits: &'a Limits,
    pub(super) deadline: Duration,
}

impl Manifest<'_> {
    /// The Job.
    pub(super) fn job(self) -> Job {
        let labels = BTreeMap::from([
            (MANAGED_BY.to_string(), "wrangle".to_string()),
            (NODE.to_string(), label_value(self.node_id)),
            (REQUEST.to_string(), self.run.to_string()),
        ]);
        let resources = (!self.limits.0.is_empty()).then(|| ResourceRequirements {
            limits: Some(self.limits.0.clone()),
            ..ResourceRequirements::default()
        });
        let container = Container {
            name: CONTAINER.to_string(),
            image: Some(self.image.to_string()),
            command: Some(self.argv),
            resources,
            ..Container::default()
        };
        // Whole seconds, rounded up, at least one.
        let deadline = i64::try_from(self.deadline.as_secs())
            .unwrap_or(i64::MAX)
            .saturating_add(i64::from(self.deadline.subsec_nanos() > 0))
            .max(1);
        Job {
            metadata: ObjectMeta {
                name: Some(self.name.to_string()),
                labels: Some(labels.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(JobSpec {
                backoff_limit: Some(0),
                active_deadline_seconds: Some(deadline),
                ttl_seconds_after_finished: Some(TTL_AFTER_FINISHED_SECS),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![container],
                        restart_policy: Some("Never".into()),
                        automount_service_account_token: Some(false),
                        ..PodSpec::default()
                    }),
                },
                ..JobSpec::default()
            }),
            ..Job::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_become_millicores_and_bytes() {
        let caps: BTreeMap<String, f64> = [("cpu".to_string(), 0.5), ("memory_gb".into(), 0.25)]
            .into_iter()
            .collect();
        let Limits(limits) = Limits::from_capabilities(&caps);
        assert_eq!(limits["cpu"], Quantity("500m".into()));
        assert_eq!(limits["memory"], Quantity((256u64 << 20).to_string()));
        let none: BTreeMap<String, f64> = [("cpu".to_string(), 0.0)].into_iter().collect();
        assert_eq!(Limits::from_capabilities(&none), Limits::default());
    }

    #[test]
    fn names_are_dns_labels_and_labels_are_valid_values() {
        let (run, name) = names("GPU_node.1-with-a-rather-long-id");
        assert!(name.len() <= 63, "{name}");
        assert!(name.starts_with("wrangle-gpu-node-1-with-a-"), "{name}");
        assert!(name.ends_with(&run));
        assert!(name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        assert_eq!(label_value("-x_y-"), "x_y");
        assert_eq!(label_value(&"a".repeat(100)).len(), 63);
    }

    #[test]
    fn the_job_runs_argv_once_with_the_limits_and_no_token() {
        let limits = Limits::from_capabilities(&[("cpu".to_string(), 2.0)].into());
        let job = Manifest {
            name: "wrangle-n-1",
            run: "1",
            node_id: "n",
            image: "busybox:1",
            argv: vec!["echo".into(), "a b".into()],
            limits: &limits,
            deadline: Duration::from_millis(1500),
        }
        .job();
        let spec = job.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.active_deadline_seconds, Some(2));
        let labels = spec.template.metadata.unwrap().labels.unwrap();
        assert_eq!(labels[MANAGED_BY], "wrangle");
        assert_eq!(labels[REQUEST], "1");
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.automount_service_account_token, Some(false));
        let c = &pod.containers[0];
        assert_eq!(
            c.command.as_deref(),
            Some(&["echo".to_string(), "a b".into()][..])
        );
        assert_eq!(c.args, None);
        assert_eq!(
            c.resources.as_ref().unwrap().limits.as_ref().unwrap()["cpu"],
            Quantity("2000m".into())
        );
    }
}
