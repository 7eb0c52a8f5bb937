//! A **mock of the Kubernetes API**, not a real cluster: an axum server on 127.0.0.1 that
//! answers the few paths wrangle's Kubernetes compute backend and node launcher call, so
//! kube's real client (HTTP, JSON, errors, log streams) runs against it. It keeps
//! Deployments, Jobs, Pods and Secrets in memory and "runs" a Job at once by giving it a
//! pod whose end follows from the Job's command (see [`outcome`]); it records every
//! request, and a test can make it fail (a status such as 500, 403 or 429 with
//! `Retry-After`, or no answer at all).
//!
//! For the node launcher it creates Pods as posted (they stay `Pending`: nothing runs
//! them), lists them by equality label selectors, deletes them at once (recording the
//! grace period asked for; a real API server would keep a pod, marked for deletion, until
//! its kubelet stopped it), and keeps Secrets (create, get, replace with `resourceVersion`
//! checks). A test sets a pod's phase, marks one as being deleted, or adds pods and
//! secrets of its own.
//!
//! Nothing here schedules, pulls images or runs programs: what the tests show is that the
//! backend speaks the API as Kubernetes documents it, not that a cluster runs the Job.

// Each test binary uses its own subset.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStatus};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Pod, PodSpec, PodStatus, PodTemplateSpec, Secret,
};
use kube::core::ObjectMeta;
use serde_json::json;

/// The image a deployment has unless a test says otherwise.
pub(crate) const IMAGE: &str = "busybox:test";
/// An image the mock pretends it cannot pull.
pub(crate) const MISSING_IMAGE: &str = "registry.invalid/missing:1";

/// A way for the mock to fail the requests a test picks.
#[derive(Clone, Debug)]
pub(crate) enum Fault {
    /// Answer with this status and message (a Kubernetes `Status` body).
    Status(u16, &'static str),
    /// `429 Too Many Requests` with `Retry-After` (header and body) of so many seconds.
    TooMany(u32),
    /// Never answer.
    Hang,
}

/// A running mock; stops when dropped.
pub(crate) struct FakeApi {
    pub(crate) addr: SocketAddr,
    state: Arc<Mutex<State>>,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct State {
    deployments: BTreeMap<(String, String), Deployment>,
    jobs: BTreeMap<(String, String), Job>,
    /// Pods by (namespace, name), with their log and whether the log stream stays open.
    pods: BTreeMap<(String, String), (Pod, String, bool)>,
    /// Every request as `METHOD /path?query`.
    requests: Vec<String>,
    /// The Jobs created, in order, as posted.
    created: Vec<Job>,
    /// Names of the Jobs deleted, with the propagation policy asked for.
    deleted: Vec<(String, Option<String>)>,
    /// Requests whose `METHOD /path` contains the pattern fail so.
    faults: Vec<(String, Fault)>,
    /// Secrets by (namespace, name).
    secrets: BTreeMap<(String, String), Secret>,
    /// The Pods created with `POST`, in order, as posted.
    pods_posted: Vec<Pod>,
    /// Names of the Pods deleted, with the `gracePeriodSeconds` each deletion asked for.
    pods_deleted: Vec<(String, Option<i64>)>,
    /// The last `resourceVersion` handed out.
    version: u64,
    /// List every pod of a namespace whatever the label selector asks (a test's way to
    /// show that a client checks labels itself).
    ignore_selectors: bool,
}

impl State {
    fn next_version(&mut self) -> String {
        self.version += 1;
        self.version.to_string()
    }
}

impl FakeApi {
    /// Serves the mock on a free port of 127.0.0.1, on the current runtime.
    pub(crate) async fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let app = Router::new().fallback(move |method: Method, uri: Uri, body: Bytes| {
            let state = shared.clone();
            async move { answer(&state, method, uri, body).await }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            addr,
            state,
            server,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A kubeconfig whose current context talks to this mock as `namespace`'s user.
    pub(crate) fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: mock\n\
             clusters:\n- name: mock\n  cluster:\n    server: http://{}\n\
             users:\n- name: tester\n  user:\n    token: not-a-secret\n\
             contexts:\n- name: mock\n  context:\n    cluster: mock\n    user: tester\n",
            self.addr
        )
    }

    /// Adds (or replaces) deployment `ns/name` of `image` with `ready` ready replicas.
    pub(crate) fn deployment(&self, ns: &str, name: &str, image: &str, ready: i32) {
        let deployment = Deployment {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..ObjectMeta::default()
            },
            spec: DeploymentSpec {
                replicas: Some(1),
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "main".into(),
                            image: Some(image.into()),
                            ..Container::default()
                        }],
                        ..PodSpec::default()
                    }),
                },
                ..DeploymentSpec::default()
            },
            status: Some(DeploymentStatus {
                ready_replicas: (ready > 0).then_some(ready),
                replicas: Some(1),
                ..DeploymentStatus::default()
            }),
        };
        self.state()
            .deployments
            .insert((ns.into(), name.into()), deployment);
    }

    /// Sets how many replicas of deployment `ns/name` are ready.
    pub(crate) fn set_ready(&self, ns: &str, name: &str, ready: i32) {
        let mut state = self.state();
        let d = state
            .deployments
            .get_mut(&(ns.to_string(), name.to_string()))
            .expect("a deployment the test added");
        d.status.as_mut().unwrap().ready_replicas = (ready > 0).then_some(ready);
    }

    /// Adds a standalone pod `ns/name`, running and ready when `ready`.
    pub(crate) fn pod(&self, ns: &str, name: &str, ready: bool) {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"containers": [{"name": "main", "image": IMAGE}]},
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
            },
        }))
        .unwrap();
        self.state()
            .pods
            .insert((ns.into(), name.into()), (pod, String::new(), false));
    }

    /// Fails every request whose `METHOD /path` contains `pattern` with `fault`.
    pub(crate) fn fail(&self, pattern: &str, fault: Fault) {
        self.state().faults.push((pattern.into(), fault));
    }

    /// Answers every request again.
    pub(crate) fn heal(&self) {
        self.state().faults.clear();
    }

    /// Every request so far, as `METHOD /path?query`.
    pub(crate) fn requests(&self) -> Vec<String> {
        self.state().requests.clone()
    }

    /// The names of the Jobs created so far.
    pub(crate) fn created(&self) -> Vec<String> {
        let state = self.state();
        state
            .created
            .iter()
            .filter_map(|j| j.metadata.name.clone())
            .collect()
    }

    /// The Jobs created so far, as the client posted them.
    pub(crate) fn posted(&self) -> Vec<Job> {
        self.state().created.clone()
    }

    /// The Jobs deleted so far, with the propagation policy each deletion asked for.
    pub(crate) fn deleted(&self) -> Vec<(String, Option<String>)> {
        self.state().deleted.clone()
    }

    /// The Jobs that exist now.
    pub(crate) fn jobs(&self) -> Vec<Job> {
        self.state().jobs.values().cloned().collect()
    }

    /// Adds pod `ns/name` with `labels`, in `phase`, as if something else had made it.
    pub(crate) fn labelled_pod(&self, ns: &str, name: &str, labels: &[(&str, &str)], phase: &str) {
        let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"containers": [{"name": "node", "image": IMAGE}]},
            "status": {"phase": phase},
        }))
        .unwrap();
        self.state()
            .pods
            .insert((ns.into(), name.into()), (pod, String::new(), false));
    }

    /// Ends pod `ns/name` as its kubelet would report it: `phase` (`Succeeded`, `Failed`),
    /// its container terminated with `exit_code` and `reason`, having printed `log`.
    pub(crate) fn end_pod(
        &self,
        ns: &str,
        name: &str,
        phase: &str,
        exit_code: i32,
        reason: &str,
        log: &str,
    ) {
        let mut state = self.state();
        let (pod, old_log, open) = state
            .pods
            .get_mut(&(ns.to_string(), name.to_string()))
            .expect("a pod that exists");
        let container = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
            .unwrap_or_default();
        pod.status = Some(PodStatus {
            phase: Some(phase.into()),
            container_statuses: Some(vec![ContainerStatus {
                name: container.0,
                image: container.1,
                state: Some(terminated(exit_code, reason, None)),
                ..ContainerStatus::default()
            }]),
            ..PodStatus::default()
        });
        *old_log = log.to_string();
        *open = false;
    }

    /// Marks pod `ns/name` as being deleted (`deletionTimestamp` set), as a real API server
    /// does during a pod's grace period.
    pub(crate) fn mark_deleting(&self, ns: &str, name: &str) {
        let mut state = self.state();
        let (pod, _, _) = state
            .pods
            .get_mut(&(ns.to_string(), name.to_string()))
            .expect("a pod that exists");
        pod.metadata.deletion_timestamp =
            Some(serde_json::from_value(json!("2026-01-01T00:00:00Z")).unwrap());
    }

    /// Lists pods as if the label selector were not there: every pod of the namespace.
    pub(crate) fn ignore_label_selectors(&self) {
        self.state().ignore_selectors = true;
    }

    /// The Pods that exist now in `ns`, by name.
    pub(crate) fn pod_names(&self, ns: &str) -> Vec<String> {
        self.state()
            .pods
            .keys()
            .filter(|(pod_ns, _)| pod_ns == ns)
            .map(|(_, name)| name.clone())
            .collect()
    }

    /// Pod `ns/name` as the mock keeps it.
    pub(crate) fn pod_object(&self, ns: &str, name: &str) -> Option<Pod> {
        let state = self.state();
        state
            .pods
            .get(&(ns.to_string(), name.to_string()))
            .map(|(p, _, _)| p.clone())
    }

    /// The Pods created with `POST` so far, as the client posted them.
    pub(crate) fn pods_posted(&self) -> Vec<Pod> {
        self.state().pods_posted.clone()
    }

    /// The Pods deleted so far, with the `gracePeriodSeconds` each deletion asked for.
    pub(crate) fn pods_deleted(&self) -> Vec<(String, Option<i64>)> {
        self.state().pods_deleted.clone()
    }

    /// Secret `ns/name`, if it exists.
    pub(crate) fn secret(&self, ns: &str, name: &str) -> Option<Secret> {
        self.state()
            .secrets
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Adds (or overwrites) secret `ns/name` with `labels`, holding `key` = `value`.
    pub(crate) fn put_secret(
        &self,
        ns: &str,
        name: &str,
        labels: &[(&str, &str)],
        key: &str,
        value: &str,
    ) {
        let mut state = self.state();
        let version = state.next_version();
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                labels: Some(labels),
                resource_version: Some(version),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(
                key.to_string(),
                k8s_openapi::ByteString(value.as_bytes().to_vec()),
            )])),
            type_: Some("Opaque".into()),
            ..Secret::default()
        };
        state.secrets.insert((ns.into(), name.into()), secret);
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// How a Job's command ends in the mock: its log, its exit code (`None` while it runs on
/// forever), or a reason it could not start.
///
/// - `echo ARGS…` prints its arguments; `true` exits 0, `false` 1;
/// - `sleep N` runs until the Job is deleted;
/// - `sh -c 'PART; PART…'` runs each part in turn: `echo …` (a `>&2` still goes to the
///   log, as Kubernetes merges the streams), `exit N`, `sleep N`;
/// - any other program cannot start (`StartError`, exit code 128).
pub(crate) fn outcome(argv: &[String]) -> Result<(String, Option<i32>), String> {
    let mut log = String::new();
    let program = argv.first().map(String::as_str).unwrap_or("");
    let script = match program {
        "sh" if argv.get(1).map(String::as_str) == Some("-c") => {
            argv.get(2).cloned().unwrap_or_default()
        }
        "echo" | "true" | "false" | "sleep" => argv.join(" "),
        other => {
            return Err(format!(
                "exec: \"{other}\": executable file not found in $PATH"
            ))
        }
    };
    for part in script.split(';').map(str::trim) {
        let words: Vec<&str> = part.split_whitespace().collect();
        match words.first().copied() {
            Some("echo") => {
                let text: Vec<&str> = words[1..].iter().copied().filter(|w| *w != ">&2").collect();
                log.push_str(&text.join(" "));
                log.push('\n');
            }
            Some("exit") => return Ok((log, Some(words.get(1).unwrap_or(&"0").parse().unwrap()))),
            Some("sleep") => return Ok((log, None)),
            Some("true") | None => {}
            Some("false") => return Ok((log, Some(1))),
            Some(other) => panic!("the mock cannot run `{other}`"),
        }
    }
    Ok((log, Some(0)))
}

/// The pod the mock makes for `job`: ended, running forever, or stuck on its image.
fn pod_of(ns: &str, job: &Job) -> (Pod, String, bool) {
    let job_name = job.metadata.name.clone().unwrap_or_default();
    let template = job.spec.as_ref().unwrap().template.clone();
    let mut labels = template.metadata.and_then(|m| m.labels).unwrap_or_default();
    labels.insert("job-name".into(), job_name.clone());
    let spec = template.spec.unwrap();
    let container = &spec.containers[0];
    let argv = container.command.clone().unwrap_or_default();
    let running = |log: String| {
        (
            "Running",
            ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..ContainerState::default()
            },
            log,
            true,
        )
    };
    let (phase, state, log, open) = if container.image.as_deref() == Some(MISSING_IMAGE) {
        let waiting = ContainerStateWaiting {
            reason: Some("ErrImagePull".into()),
            message: Some(format!("pull access denied for {MISSING_IMAGE}")),
        };
        let state = ContainerState {
            waiting: Some(waiting),
            ..ContainerState::default()
        };
        ("Pending", state, String::new(), false)
    } else {
        match outcome(&argv) {
            Ok((log, None)) => running(log),
            Ok((log, Some(code))) => {
                let phase = if code == 0 { "Succeeded" } else { "Failed" };
                let state = terminated(code, if code == 0 { "Completed" } else { "Error" }, None);
                (phase, state, log, false)
            }
            Err(message) => (
                "Failed",
                terminated(128, "StartError", Some(message)),
                String::new(),
                false,
            ),
        }
    };
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(format!("{job_name}-x7k2p")),
            namespace: Some(ns.into()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(spec.clone()),
        status: Some(PodStatus {
            phase: Some(phase.into()),
            container_statuses: Some(vec![ContainerStatus {
                name: container.name.clone(),
                image: container.image.clone().unwrap_or_default(),
                state: Some(state),
                ..ContainerStatus::default()
            }]),
            ..PodStatus::default()
        }),
    };
    (pod, log, open)
}

fn terminated(code: i32, reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: code,
            reason: Some(reason.into()),
            message,
            ..ContainerStateTerminated::default()
        }),
        ..ContainerState::default()
    }
}

fn status(code: u16, message: &str, retry_after: u32) -> Response {
    let reason = match code {
        403 => "Forbidden",
        404 => "NotFound",
        409 => "AlreadyExists",
        422 => "Invalid",
        429 => "TooManyRequests",
        _ => "InternalError",
    };
    let mut body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    if retry_after > 0 {
        body["details"] = json!({"retryAfterSeconds": retry_after});
    }
    let mut response = (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response();
    if retry_after > 0 {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from(retry_after));
    }
    response
}

fn object<T: serde::Serialize>(value: &T) -> Response {
    axum::Json(value).into_response()
}

async fn answer(state: &Mutex<State>, method: Method, uri: Uri, body: Bytes) -> Response {
    let line = format!("{method} {}", uri.path());
    let fault = {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        s.requests.push(format!(
            "{line}{}",
            uri.query().map(|q| format!("?{q}")).unwrap_or_default()
        ));
        s.faults
            .iter()
            .find(|(pattern, _)| line.contains(pattern.as_str()))
            .map(|(_, f)| f.clone())
    };
    match fault {
        Some(Fault::Status(code, message)) => return status(code, message, 0),
        Some(Fault::TooMany(secs)) => {
            return status(429, "too many requests, please try again later", secs)
        }
        Some(Fault::Hang) => std::future::pending::<()>().await,
        None => {}
    }
    let query: BTreeMap<String, String> = uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let path: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    let key = |ns: &str, name: &str| (ns.to_string(), name.to_string());
    match (&method, path.as_slice()) {
        (&Method::GET, ["version"]) => object(&json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0-mock", "gitCommit": "mock",
            "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24",
            "compiler": "gc", "platform": "linux/amd64",
        })),
        (&Method::GET, ["apis", "apps", "v1", "namespaces", ns, "deployments", name]) => {
            match s.deployments.get(&key(ns, name)) {
                Some(d) => object(d),
                None => status(404, &format!("deployments.apps \"{name}\" not found"), 0),
            }
        }
        (&Method::POST, ["apis", "batch", "v1", "namespaces", ns, "jobs"]) => {
            let mut job: Job = match serde_json::from_slice(&body) {
                Ok(job) => job,
                Err(e) => return status(422, &format!("Job is invalid: {e}"), 0),
            };
            let name = job.metadata.name.clone().unwrap_or_default();
            if s.jobs.contains_key(&key(ns, &name)) {
                return status(409, &format!("jobs.batch \"{name}\" already exists"), 0);
            }
            s.created.push(job.clone());
            job.metadata.namespace = Some(ns.to_string());
            let pod = pod_of(ns, &job);
            let pod_name = pod.0.metadata.name.clone().unwrap();
            s.pods.insert(key(ns, &pod_name), pod);
            s.jobs.insert(key(ns, &name), job.clone());
            (StatusCode::CREATED, axum::Json(job)).into_response()
        }
        (&Method::GET, ["apis", "batch", "v1", "namespaces", ns, "jobs", name]) => {
            match s.jobs.get(&key(ns, name)) {
                Some(job) => object(job),
                None => status(404, &format!("jobs.batch \"{name}\" not found"), 0),
            }
        }
        (&Method::DELETE, ["apis", "batch", "v1", "namespaces", ns, "jobs", name]) => {
            let policy = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["propagationPolicy"].as_str().map(String::from));
            match s.jobs.remove(&key(ns, name)) {
                Some(job) => {
                    s.deleted.push((name.to_string(), policy));
                    s.pods.retain(|_, (pod, _, _)| {
                        pod.metadata.labels.as_ref().and_then(|l| l.get("job-name"))
                            != Some(&name.to_string())
                    });
                    object(&job)
                }
                None => status(404, &format!("jobs.batch \"{name}\" not found"), 0),
            }
        }
        (&Method::GET, ["api", "v1", "namespaces", ns, "pods"]) => {
            let selector = if s.ignore_selectors {
                String::new()
            } else {
                query.get("labelSelector").cloned().unwrap_or_default()
            };
            let wanted: Vec<(&str, &str)> = selector
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .collect();
            let items: Vec<&Pod> = s
                .pods
                .iter()
                .filter(|((pod_ns, _), _)| pod_ns == ns)
                .map(|(_, (pod, _, _))| pod)
                .filter(|pod| {
                    let labels = pod.metadata.labels.clone().unwrap_or_default();
                    wanted
                        .iter()
                        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
                })
                .collect();
            object(&json!({
                "apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"},
                "items": items,
            }))
        }
        (&Method::POST, ["api", "v1", "namespaces", ns, "pods"]) => {
            let mut pod: Pod = match serde_json::from_slice(&body) {
                Ok(pod) => pod,
                Err(e) => return status(422, &format!("Pod is invalid: {e}"), 0),
            };
            let name = pod.metadata.name.clone().unwrap_or_default();
            if s.pods.contains_key(&key(ns, &name)) {
                return status(409, &format!("pods \"{name}\" already exists"), 0);
            }
            s.pods_posted.push(pod.clone());
            pod.metadata.namespace = Some(ns.to_string());
            pod.metadata.resource_version = Some(s.next_version());
            // Nothing schedules it: it waits, as a pod no node has taken.
            pod.status = Some(PodStatus {
                phase: Some("Pending".into()),
                ..PodStatus::default()
            });
            s.pods
                .insert(key(ns, &name), (pod.clone(), String::new(), false));
            (StatusCode::CREATED, axum::Json(pod)).into_response()
        }
        (&Method::DELETE, ["api", "v1", "namespaces", ns, "pods", name]) => {
            let grace = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["gracePeriodSeconds"].as_i64());
            match s.pods.remove(&key(ns, name)) {
                Some((pod, _, _)) => {
                    s.pods_deleted.push((name.to_string(), grace));
                    object(&pod)
                }
                None => status(404, &format!("pods \"{name}\" not found"), 0),
            }
        }
        (&Method::POST, ["api", "v1", "namespaces", ns, "secrets"]) => {
            let mut secret: Secret = match serde_json::from_slice(&body) {
                Ok(secret) => secret,
                Err(e) => return status(422, &format!("Secret is invalid: {e}"), 0),
            };
            let name = secret.metadata.name.clone().unwrap_or_default();
            if s.secrets.contains_key(&key(ns, &name)) {
                return status(409, &format!("secrets \"{name}\" already exists"), 0);
            }
            secret.metadata.namespace = Some(ns.to_string());
            secret.metadata.resource_version = Some(s.next_version());
            s.secrets.insert(key(ns, &name), secret.clone());
            (StatusCode::CREATED, axum::Json(secret)).into_response()
        }
        (&Method::GET, ["api", "v1", "namespaces", ns, "secrets", name]) => {
            match s.secrets.get(&key(ns, name)) {
                Some(secret) => object(secret),
                None => status(404, &format!("secrets \"{name}\" not found"), 0),
            }
        }
        (&Method::PUT, ["api", "v1", "namespaces", ns, "secrets", name]) => {
            let mut secret: Secret = match serde_json::from_slice(&body) {
                Ok(secret) => secret,
                Err(e) => return status(422, &format!("Secret is invalid: {e}"), 0),
            };
            let Some(current) = s.secrets.get(&key(ns, name)) else {
                return status(404, &format!("secrets \"{name}\" not found"), 0);
            };
            // As the API server: a replacement names the version it read, if any.
            if let Some(read) = &secret.metadata.resource_version {
                if current.metadata.resource_version.as_ref() != Some(read) {
                    return status(
                        409,
                        &format!(
                            "Operation cannot be fulfilled on secrets \"{name}\": the object \
                             has been modified; please apply your changes to the latest version \
                             and try again"
                        ),
                        0,
                    );
                }
            }
            secret.metadata.namespace = Some(ns.to_string());
            secret.metadata.resource_version = Some(s.next_version());
            s.secrets.insert(key(ns, name), secret.clone());
            object(&secret)
        }
        (&Method::GET, ["api", "v1", "namespaces", ns, "pods", name]) => {
            match s.pods.get(&key(ns, name)) {
                Some((pod, _, _)) => object(pod),
                None => status(404, &format!("pods \"{name}\" not found"), 0),
            }
        }
        (&Method::GET, ["api", "v1", "namespaces", ns, "pods", name, "log"]) => {
            let Some((_, log, open)) = s.pods.get(&key(ns, name)) else {
                return status(404, &format!("pods \"{name}\" not found"), 0);
            };
            let follow = query.get("follow").map(String::as_str) == Some("true");
            let first = futures_util::stream::once({
                let log = Bytes::from(log.clone());
                async move { Ok::<_, std::io::Error>(log) }
            });
            if follow && *open {
                // A running container's log: what it printed, then nothing until it ends.
                Body::from_stream(first.chain(futures_util::stream::pending())).into_response()
            } else {
                Body::from_stream(first).into_response()
            }
        }
        _ => status(
            404,
            &format!("the mock does not serve {method} {}", uri.path()),
            0,
        ),
    }
}
