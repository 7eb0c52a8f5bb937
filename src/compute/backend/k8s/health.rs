//! A Kubernetes node's health check: the API server answers, and what the endpoint names
//! can take work. Each failure's reason names what failed.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use super::error::api_error;
use super::Cluster;
use crate::compute::endpoint::KubernetesTarget;

/// `Ok` when the API server answers `GET /version` and the deployment has a ready
/// replica (or the pod runs and is ready); else why not.
pub(super) async fn check(cluster: &Cluster) -> Result<(), String> {
    let client = cluster.client().await.map_err(|e| e.message)?;
    client
        .apiserver_version()
        .await
        .map_err(|e| api_error("GET /version", e).message)?;
    let ns = &cluster.namespace;
    match &cluster.target {
        KubernetesTarget::Deployment(name) => {
            let deployment = Api::<Deployment>::namespaced(client, ns)
                .get(name)
                .await
                .map_err(|e| api_error(&format!("get deployment {ns}/{name}"), e).message)?;
            deployment_ready(&deployment).map_err(|why| format!("deployment {ns}/{name} {why}"))
        }
        KubernetesTarget::Pod(name) => {
            let pod = Api::<Pod>::namespaced(client, ns)
                .get(name)
                .await
                .map_err(|e| api_error(&format!("get pod {ns}/{name}"), e).message)?;
            pod_ready(&pod).map_err(|why| format!("pod {ns}/{name} {why}"))
        }
    }
}

/// `Ok` with at least one ready replica; else what the deployment's status says.
fn deployment_ready(deployment: &Deployment) -> Result<(), String> {
    let status = deployment.status.clone().unwrap_or_default();
    let ready = status.ready_replicas.unwrap_or(0);
    if ready >= 1 {
        return Ok(());
    }
    let wanted = deployment.spec.replicas.unwrap_or(1);
    Err(format!("has no ready replica (0 of {wanted} ready)"))
}

/// `Ok` when the pod is `Running` and its `Ready` condition is true.
fn pod_ready(pod: &Pod) -> Result<(), String> {
    let status = pod.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or_else(|| "Unknown".into());
    if phase != "Running" {
        return Err(format!("is {phase}, not Running"));
    }
    let ready = status
        .conditions
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if ready {
        Ok(())
    } else {
        Err("is Running but not Ready".into())
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};

    use super::*;

    #[test]
    fn a_deployment_needs_a_ready_replica() {
        let deployment = |ready| Deployment {
            spec: DeploymentSpec {
                replicas: Some(2),
                ..DeploymentSpec::default()
            },
            status: Some(DeploymentStatus {
                ready_replicas: ready,
                ..DeploymentStatus::default()
            }),
            ..Deployment::default()
        };
        assert!(deployment_ready(&deployment(Some(1))).is_ok());
        assert_eq!(
            deployment_ready(&deployment(None)).unwrap_err(),
            "has no ready replica (0 of 2 ready)"
        );
    }

    #[test]
    fn a_pod_must_run_and_be_ready() {
        let pod = |phase: &str, ready: &str| Pod {
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        assert!(pod_ready(&pod("Running", "True")).is_ok());
        assert_eq!(
            pod_ready(&pod("Running", "False")).unwrap_err(),
            "is Running but not Ready"
        );
        assert_eq!(
            pod_ready(&pod("Pending", "False")).unwrap_err(),
            "is Pending, not Running"
        );
    }
}
