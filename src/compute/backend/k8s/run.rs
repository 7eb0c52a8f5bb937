//! A command run as a Job: read the deployment's image, create the Job, wait for its pod
//! to start, follow its log (streamed to the sink as it comes), read the container's exit
//! code, delete the Job. A [`Deletion`] guard deletes the Job (propagation `Background`,
//! so its pod goes too) if the request is dropped on the way, so no Job outlives its
//! request whatever ends it.
//!
//! A pod that cannot start because of its image (`ErrImagePull`, `ImagePullBackOff`,
//! `InvalidImageName`) or its settings (`CreateContainerConfigError`) fails the request as
//! `Unavailable` (another node may run it); a program missing from the image
//! (`StartError`, `ContainerCannotRun`) as `Rejected`, like the Docker backend. A Job the
//! API server failed before it made a pod (a quota, the deadline) is `Unavailable`, and so
//! is a deployment that does not exist (`404`): the node can run nothing, another node
//! may. Other refusals keep the API's status (see `error`).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};
use kube::api::{ListParams, LogParams, PostParams};
use kube::{Api, Client};

use super::deletion::Deletion;
use super::error::{api_error, is_not_found};
use super::job::{self, Manifest, CONTAINER, REQUEST};
use super::output::{read_all, Output};
use super::Cluster;
use crate::compute::request::{ComputeError, ComputeErrorKind, ComputeResponse, StreamSink};

/// First and longest wait between two looks at a pod.
const POLL_MIN: Duration = Duration::from_millis(50);
const POLL_MAX: Duration = Duration::from_secs(1);
/// Waiting reasons that mean the pod will not start by itself.
const STUCK: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
];
/// Termination reasons that mean the program could not be started.
const NOT_STARTED: &[&str] = &["StartError", "ContainerCannotRun"];

pub(super) async fn run(
    cluster: Arc<Cluster>,
    deployment: String,
    argv: Vec<String>,
    sink: Option<StreamSink>,
) -> Result<ComputeResponse, ComputeError> {
    let client = cluster.client().await?;
    let ns = cluster.namespace.as_str();
    let image = image_of(&client, ns, &deployment).await?;
    let (run, name) = job::names(&cluster.node_id);
    let manifest = Manifest {
        name: &name,
        run: &run,
        node_id: &cluster.node_id,
        image: &image,
        argv,
        limits: &cluster.limits,
        deadline: cluster.deadline,
    }
    .job();
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    // Armed before the Job exists: a request dropped while the API server creates it
    // still deletes it, by name.
    let mut deletion = Deletion {
        jobs: jobs.clone(),
        name: name.clone(),
        created: false,
        armed: true,
    };
    match jobs.create(&PostParams::default(), &manifest).await {
        Ok(_) => deletion.created = true,
        Err(e) => {
            // The API server answered with a refusal: there is no Job to delete. (A
            // connection lost on the way leaves that unknown: the guard stays armed.)
            if matches!(e, kube::Error::Api(_)) {
                deletion.armed = false;
            }
            return Err(api_error(&format!("create job {ns}/{name}"), e));
        }
    }
    let pods: Api<Pod> = Api::namespaced(client, ns);
    let result = follow(&jobs, &pods, &name, &run, sink, &cluster.node_id).await;
    deletion.now().await;
    result
}

/// The image of the deployment's first container.
async fn image_of(client: &Client, ns: &str, deployment: &str) -> Result<String, ComputeError> {
    let found = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(deployment)
        .await
        .map_err(|e| {
            let missing = is_not_found(&e);
            let e = api_error(&format!("get deployment {ns}/{deployment}"), e);
            // A node whose deployment is gone can run nothing, while another node may run
            // the command: the node's fault, as a missing image is on a Docker node.
            if missing {
                ComputeError::unavailable(e.message)
            } else {
                e
            }
        })?;
    found
        .spec
        .template
        .spec
        .and_then(|s| s.containers.into_iter().next())
        .and_then(|c| c.image)
        .ok_or_else(|| {
            ComputeError::unavailable(format!(
                "kubernetes: deployment {ns}/{deployment} names no container image"
            ))
        })
}

/// Waits for the Job's pod, follows its log, and answers with its exit code.
async fn follow(
    jobs: &Api<Job>,
    pods: &Api<Pod>,
    job: &str,
    run: &str,
    sink: Option<StreamSink>,
    node_id: &str,
) -> Result<ComputeResponse, ComputeError> {
    let pod = started_pod(jobs, pods, job, run).await?;
    let mut out = Output::new(sink, node_id);
    let params = LogParams {
        container: Some(CONTAINER.to_string()),
        follow: true,
        ..LogParams::default()
    };
    // A log stream cut short is read again whole once the container has ended.
    let streamed = match pods.log_stream(&pod, &params).await {
        Ok(stream) => read_all(stream, &mut out).await.is_ok(),
        Err(_) => false,
    };
    let ended = terminated(pods, &pod).await?;
    if !streamed {
        let params = LogParams {
            container: Some(CONTAINER.to_string()),
            ..LogParams::default()
        };
        let whole = pods
            .logs(&pod, &params)
            .await
            .map_err(|e| api_error(&format!("read the log of pod {pod}"), e))?;
        out.catch_up(whole.as_bytes()).await;
    }
    if let Some(reason) = ended.reason.as_deref().filter(|r| NOT_STARTED.contains(r)) {
        return Err(ComputeError::new(
            ComputeErrorKind::Rejected,
            format!(
                "kubernetes: pod {pod} could not start its command ({reason}): {}",
                ended.message.as_deref().unwrap_or("no message")
            ),
        ));
    }
    Ok(out.answer(i64::from(ended.exit_code)))
}

/// The name of the Job's pod once its container has started (or ended).
async fn started_pod(
    jobs: &Api<Job>,
    pods: &Api<Pod>,
    job: &str,
    run: &str,
) -> Result<String, ComputeError> {
    let selector = ListParams::default().labels(&format!("{REQUEST}={run}"));
    let mut wait = POLL_MIN;
    loop {
        let list = pods
            .list(&selector)
            .await
            .map_err(|e| api_error(&format!("list the pods of job {job}"), e))?;
        match list.items.into_iter().next() {
            Some(pod) => {
                let name = pod.metadata.name.clone().unwrap_or_default();
                if let Some(why) = stuck(&pod) {
                    return Err(ComputeError::unavailable(format!(
                        "kubernetes: pod {name} of job {job} cannot start: {why}"
                    )));
                }
                let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                if matches!(phase, Some("Running" | "Succeeded" | "Failed")) {
                    return Ok(name);
                }
            }
            None => {
                let found = jobs
                    .get(job)
                    .await
                    .map_err(|e| api_error(&format!("get job {job}"), e))?;
                if let Some(why) = job_failed(&found) {
                    return Err(ComputeError::unavailable(format!(
                        "kubernetes: job {job} failed before it ran: {why}"
                    )));
                }
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(POLL_MAX);
    }
}

/// Why the pod's container will not start by itself, if so.
fn stuck(pod: &Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find_map(|s| {
        let waiting = s.state.as_ref()?.waiting.as_ref()?;
        let reason = waiting.reason.as_deref()?;
        STUCK.contains(&reason).then(|| {
            format!(
                "{reason}: {}",
                waiting.message.as_deref().unwrap_or("no message")
            )
        })
    })
}

/// The reason and message of a Job's `Failed` condition, if it has one.
fn job_failed(job: &Job) -> Option<String> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .find(|c| c.type_ == "Failed" && c.status == "True")
        .map(|c| {
            format!(
                "{}: {}",
                c.reason.as_deref().unwrap_or("Failed"),
                c.message.as_deref().unwrap_or("no message")
            )
        })
}

/// The container's end, once the pod records it.
async fn terminated(pods: &Api<Pod>, pod: &str) -> Result<ContainerStateTerminated, ComputeError> {
    let mut wait = POLL_MIN;
    loop {
        let found = pods
            .get(pod)
            .await
            .map_err(|e| api_error(&format!("get pod {pod}"), e))?;
        let status = found.status.unwrap_or_default();
        let ended = status
            .container_statuses
            .unwrap_or_default()
            .into_iter()
            .find(|s| s.name == CONTAINER)
            .and_then(|s| s.state)
            .and_then(|s| s.terminated);
        if let Some(ended) = ended {
            return Ok(ended);
        }
        if status.phase.as_deref() == Some("Failed") {
            // Failed with no container state: evicted, or killed at its deadline.
            return Err(ComputeError::unavailable(format!(
                "kubernetes: pod {pod} failed without its command ending: {}",
                status
                    .message
                    .as_deref()
                    .or(status.reason.as_deref())
                    .unwrap_or("no message")
            )));
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(POLL_MAX);
    }
}
