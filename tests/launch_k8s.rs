//! The Kubernetes node launcher runs here against a **MOCK of the Kubernetes API, not a real
//! cluster** (no API server can run on these machines): an axum server on 127.0.0.1
//! (`support/k8s_api.rs`) that keeps Pods and Secrets in memory. kube's real client talks
//! HTTP to it with a kubeconfig, so the requests, the label selectors, the Secret holding
//! the cookie and the error mapping are exercised; nothing schedules or runs the pods, so
//! no node ever joins.
//!
//! Covered: the launcher by itself (a labelled pod whose cookie comes from a Secret; list
//! reports it, reaps ended pods, skips pods being deleted and never touches pods without the
//! group's label; terminate with the grace period; API refusals as errors), and a
//! coordinator's node group that launches a pod for a waiting task and, the node never
//! joining, deletes it after `join_timeout`, counting a failure.

#[path = "support/k8s_api.rs"]
mod k8s_api;
#[path = "support/net.rs"]
mod net;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_api::{FakeApi, Fault};
use wrangle::launch::{
    KubernetesLauncher, Launcher, NodeGroupConfig, NodeLaunch, Resource, GROUP_LABEL, NODE_LABEL,
};
use wrangle::{ClusterConfig, Coordinator, CoordinatorConfig, TaskSpec};

const NS: &str = "nodes";
const IMAGE: &str = "registry.example/wrangle-node:1";
const COOKIE: &str = "cookie-that-must-not-leak";

/// Polls `cond` every 20 ms until it holds; fails after `timeout`.
async fn until<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A mock API and a directory holding a kubeconfig for it (`config`).
async fn mock() -> (FakeApi, tempfile::TempDir) {
    let api = FakeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config"), api.kubeconfig()).unwrap();
    (api, dir)
}

fn launcher(dir: &tempfile::TempDir) -> KubernetesLauncher {
    KubernetesLauncher::new(NS, IMAGE, vec!["--workers".into(), "2".into()])
        .kubeconfig(dir.path().join("config"))
        .requests("250m", "256Mi")
        .limits("1", "1Gi")
}

/// What a node group asks for node `name` of group `group`.
fn request(group: &str, name: &str) -> NodeLaunch {
    NodeLaunch {
        name: name.into(),
        group: group.into(),
        env: [
            ("WRANGLE_JOIN", "10.0.0.1:7450"),
            ("WRANGLE_COOKIE", COOKIE),
            ("WRANGLE_NODE_NAME", name),
            ("RUST_LOG", "info"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        resource_labels: [(GROUP_LABEL, group), (NODE_LABEL, name)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// Every request the mock saw, as `METHOD /path` (its query left out).
fn calls(api: &FakeApi) -> Vec<String> {
    api.requests()
        .into_iter()
        .map(|r| r.split('?').next().unwrap_or_default().to_string())
        .collect()
}

/// The cookie the Secret `ns/name` holds.
fn secret_cookie(api: &FakeApi, name: &str) -> String {
    let secret = api.secret(NS, name).expect("the cookie secret exists");
    let data = secret.data.expect("the secret has data");
    String::from_utf8(data["cookie"].0.clone()).unwrap()
}

#[tokio::test]
async fn a_node_is_a_labelled_pod_that_reads_the_cookie_from_a_secret() {
    let (api, dir) = mock().await;
    let launcher = launcher(&dir);
    assert_eq!(launcher.kind(), "kubernetes");

    let id = launcher
        .launch(request("gpu", "gpu-00000001"))
        .await
        .unwrap();
    assert_eq!(id, "wrangle-gpu-00000001");
    let posted = api.pods_posted();
    assert_eq!(posted.len(), 1);
    let pod = &posted[0];
    let labels = pod.metadata.labels.clone().unwrap();
    assert_eq!(labels[GROUP_LABEL], "gpu");
    assert_eq!(labels[NODE_LABEL], "gpu-00000001");
    let spec = pod.spec.clone().unwrap();
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    let container = &spec.containers[0];
    assert_eq!(container.image.as_deref(), Some(IMAGE));
    assert_eq!(container.args.clone().unwrap(), ["--workers", "2"]);
    let resources = container.resources.clone().unwrap();
    assert_eq!(resources.requests.unwrap()["memory"].0, "256Mi");
    assert_eq!(resources.limits.unwrap()["cpu"].0, "1");
    let env = container.env.clone().unwrap();
    let value = |name: &str| env.iter().find(|e| e.name == name).unwrap().clone();
    assert_eq!(value("WRANGLE_GROUP").value.as_deref(), Some("gpu"));
    assert_eq!(
        value("WRANGLE_JOIN").value.as_deref(),
        Some("10.0.0.1:7450")
    );
    // The cookie: by reference to the Secret, never as a value, anywhere in the pod.
    let cookie = value("WRANGLE_COOKIE");
    assert_eq!(cookie.value, None);
    let key = cookie.value_from.unwrap().secret_key_ref.unwrap();
    assert_eq!(key.name, "wrangle-gpu-cookie");
    assert_eq!(key.key, "cookie");
    let text = serde_json::to_string(pod).unwrap();
    assert!(!text.contains(COOKIE), "the cookie is in the pod: {text}");
    assert_eq!(secret_cookie(&api, "wrangle-gpu-cookie"), COOKIE);
    let secret_labels = api
        .secret(NS, "wrangle-gpu-cookie")
        .unwrap()
        .metadata
        .labels;
    assert_eq!(secret_labels.unwrap()[GROUP_LABEL], "gpu");

    // A second node: the Secret exists (409) and holds the cookie already: not replaced.
    launcher
        .launch(request("gpu", "gpu-00000002"))
        .await
        .unwrap();
    let requests = calls(&api);
    let secret_calls: Vec<&String> = requests.iter().filter(|r| r.contains("/secrets")).collect();
    assert_eq!(
        secret_calls,
        [
            "POST /api/v1/namespaces/nodes/secrets",
            "POST /api/v1/namespaces/nodes/secrets",
            "GET /api/v1/namespaces/nodes/secrets/wrangle-gpu-cookie",
        ],
        "{requests:?}"
    );
    let mut listed = launcher.list("gpu".into()).await.unwrap();
    listed.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(
        listed,
        [
            Resource {
                id: "wrangle-gpu-00000001".into(),
                node: "gpu-00000001".into()
            },
            Resource {
                id: "wrangle-gpu-00000002".into(),
                node: "gpu-00000002".into()
            },
        ]
    );
    let selectors: Vec<String> = api
        .requests()
        .iter()
        .filter_map(|r| r.strip_prefix("GET /api/v1/namespaces/nodes/pods?"))
        .flat_map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned())
        .filter(|(k, _)| k == "labelSelector")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(
        selectors,
        ["wrangle.group=gpu"],
        "listed by the group's label"
    );
}

#[tokio::test]
async fn a_new_cookie_replaces_the_groups_secret_but_a_foreign_secret_is_left_alone() {
    let (api, dir) = mock().await;
    api.put_secret(
        NS,
        "wrangle-gpu-cookie",
        &[(GROUP_LABEL, "gpu")],
        "cookie",
        "old",
    );
    let launcher = launcher(&dir);
    launcher
        .launch(request("gpu", "gpu-00000001"))
        .await
        .unwrap();
    assert_eq!(secret_cookie(&api, "wrangle-gpu-cookie"), COOKIE);
    assert!(calls(&api)
        .contains(&"PUT /api/v1/namespaces/nodes/secrets/wrangle-gpu-cookie".to_string()));

    // A Secret of that name without the group's label is someone else's.
    api.put_secret(NS, "wrangle-cpu-cookie", &[], "cookie", "theirs");
    let e = launcher
        .launch(request("cpu", "cpu-00000001"))
        .await
        .unwrap_err();
    assert!(
        e.reason.contains("wrangle-cpu-cookie") && e.reason.contains("label"),
        "{e}"
    );
    assert_eq!(secret_cookie(&api, "wrangle-cpu-cookie"), "theirs");
    assert_eq!(api.pods_posted().len(), 1, "no pod without its cookie");
}

#[tokio::test]
async fn list_reaps_ended_pods_and_never_touches_pods_without_the_label() {
    let (api, dir) = mock().await;
    let launcher = launcher(&dir);
    let running = launcher
        .launch(request("gpu", "gpu-00000001"))
        .await
        .unwrap();
    let failed = launcher
        .launch(request("gpu", "gpu-00000002"))
        .await
        .unwrap();
    let done = launcher
        .launch(request("gpu", "gpu-00000003"))
        .await
        .unwrap();
    let leaving = launcher
        .launch(request("gpu", "gpu-00000004"))
        .await
        .unwrap();
    api.end_pod(
        NS,
        &failed,
        "Failed",
        1,
        "Error",
        "joining...\ncookie refused\n",
    );
    api.end_pod(NS, &done, "Succeeded", 0, "Completed", "");
    api.mark_deleting(NS, &leaving);
    // Someone else's pods, ended too: without the label, and of another group. The mock
    // lists them all whatever the selector, so the launcher's own check is what spares them.
    api.ignore_label_selectors();
    api.labelled_pod(NS, "web-1", &[("app", "web")], "Failed");
    api.labelled_pod(
        NS,
        "cpu-pod",
        &[(GROUP_LABEL, "cpu"), (NODE_LABEL, "cpu-1")],
        "Failed",
    );
    api.labelled_pod("other", "gpu-elsewhere", &[(GROUP_LABEL, "gpu")], "Running");

    let listed = launcher.list("gpu".into()).await.unwrap();
    assert_eq!(
        listed,
        [Resource {
            id: running.clone(),
            node: "gpu-00000001".into()
        }]
    );
    let deleted: Vec<String> = api.pods_deleted().into_iter().map(|(n, _)| n).collect();
    let mut expected = vec![failed.clone(), done.clone()];
    expected.sort();
    let mut got = deleted.clone();
    got.sort();
    assert_eq!(got, expected, "only the group's ended pods are deleted");
    let left = api.pod_names(NS);
    for name in ["web-1", "cpu-pod", running.as_str(), leaving.as_str()] {
        assert!(
            left.iter().any(|n| n == name),
            "{name} was removed: {left:?}"
        );
    }
    assert!(api.pod_object("other", "gpu-elsewhere").is_some());
    // The ended node's last output was asked for before its pod went.
    assert!(
        api.requests()
            .iter()
            .any(|r| r.starts_with(&format!("GET /api/v1/namespaces/{NS}/pods/{failed}/log"))),
        "{:?}",
        api.requests()
    );

    // The other group sees its own pod only, reaps it, and still leaves the others alone.
    assert_eq!(launcher.list("cpu".into()).await.unwrap(), []);
    assert!(api.pods_deleted().iter().any(|(n, _)| n == "cpu-pod"));
    assert!(api.pod_names(NS).contains(&"web-1".to_string()));
    assert!(api.pod_names(NS).contains(&running));
}

#[tokio::test]
async fn terminate_deletes_with_the_grace_period_and_a_missing_pod_is_no_error() {
    let (api, dir) = mock().await;
    let launcher = launcher(&dir);
    let id = launcher
        .launch(request("gpu", "gpu-00000001"))
        .await
        .unwrap();
    launcher
        .terminate(id.clone(), Duration::from_secs(12))
        .await
        .unwrap();
    assert_eq!(api.pods_deleted(), [(id.clone(), Some(12))]);
    assert!(api.pod_names(NS).is_empty());
    assert_eq!(launcher.list("gpu".into()).await.unwrap(), []);
    // Already gone: 404, a success.
    launcher
        .terminate(id.clone(), Duration::from_millis(1_500))
        .await
        .unwrap();
    assert_eq!(api.pods_deleted().len(), 1);
    let deletes = calls(&api)
        .iter()
        .filter(|r| *r == &format!("DELETE /api/v1/namespaces/{NS}/pods/{id}"))
        .count();
    assert_eq!(deletes, 2);
}

#[tokio::test]
async fn api_refusals_are_launch_errors_with_the_servers_message() {
    let (api, dir) = mock().await;
    let launcher = launcher(&dir);
    api.fail(
        "POST /api/v1/namespaces/nodes/pods",
        Fault::Status(403, "pods is forbidden: User \"tester\" cannot create pods"),
    );
    let e = launcher
        .launch(request("gpu", "gpu-00000001"))
        .await
        .unwrap_err();
    assert_eq!(e.launcher, "kubernetes");
    assert!(
        e.reason.contains("403") && e.reason.contains("cannot create pods"),
        "{e}"
    );
    assert!(!e.to_string().contains(COOKIE) && !e.to_string().contains("not-a-secret"));
    api.fail(
        "DELETE /api/v1",
        Fault::Status(500, "etcdserver: request timed out"),
    );
    let e = launcher
        .terminate("wrangle-gpu-00000001".into(), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(e.reason.contains("etcdserver: request timed out"), "{e}");
    api.fail(
        "GET /api/v1",
        Fault::Status(403, "pods is forbidden: cannot list"),
    );
    let e = launcher.list("gpu".into()).await.unwrap_err();
    assert!(e.reason.contains("cannot list"), "{e}");

    // A kubeconfig that is not one: said so, never quoted.
    let bad = dir.path().join("bad");
    std::fs::write(&bad, "token: hunter2-not-yaml-config: [").unwrap();
    let e = KubernetesLauncher::new(NS, IMAGE, Vec::new())
        .kubeconfig(&bad)
        .list("gpu".into())
        .await
        .unwrap_err();
    assert!(e.reason.contains("is not a kubeconfig"), "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

/// A coordinator whose group `gpu` launches pods on the mock; `join_timeout` 1 s.
async fn coordinator(launcher: KubernetesLauncher) -> Coordinator {
    let listen = format!("127.0.0.1:{}", net::free_port()).parse().unwrap();
    let config = CoordinatorConfig {
        cluster: Some(ClusterConfig::new(listen, COOKIE)),
        autoscale_interval: Duration::from_millis(100),
        ..CoordinatorConfig::default()
    };
    let group = NodeGroupConfig {
        labels: vec!["gpu=a100".into()],
        task_types: vec!["echo".into()],
        max_nodes: 1,
        join_timeout: Duration::from_secs(1),
        stop_grace: Duration::from_secs(7),
        // Long enough that the test sees one launch only.
        launch_backoff: Duration::from_secs(60),
        ..NodeGroupConfig::new("gpu")
    };
    Coordinator::builder()
        .config(config)
        .node_group(group, Arc::new(launcher))
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_group_launches_a_pod_and_deletes_it_when_its_node_never_joins() {
    let (api, dir) = mock().await;
    let c = coordinator(launcher(&dir)).await;
    let groups = c.node_groups().expect("the coordinator has node groups");
    let spec = TaskSpec::new("echo", &1).unwrap().label("gpu=a100");
    c.submit_async(spec).await.unwrap();

    until("a pod to be created", Duration::from_secs(10), || async {
        !api.pods_posted().is_empty()
    })
    .await;
    let pod = api.pods_posted().remove(0);
    let name = pod.metadata.name.clone().unwrap();
    let node = pod.metadata.labels.clone().unwrap()[NODE_LABEL].clone();
    assert!(node.starts_with("gpu-"), "{node}");
    let env = pod.spec.unwrap().containers[0].env.clone().unwrap();
    assert!(env
        .iter()
        .any(|e| e.name == "WRANGLE_NODE_NAME" && e.value.as_deref() == Some(&*node)));
    assert!(!serde_json::to_string(&env).unwrap().contains(COOKIE));
    assert_eq!(secret_cookie(&api, "wrangle-gpu-cookie"), COOKIE);

    // Nothing runs the pod: after join_timeout (1 s) it is deleted with stop_grace (7 s).
    until("the pod to be deleted", Duration::from_secs(10), || async {
        api.pods_deleted().contains(&(name.clone(), Some(7)))
    })
    .await;
    until(
        "the group to count the failure",
        Duration::from_secs(10),
        || async {
            let status = groups.status().remove(0);
            status.counts.launch_failures == 1 && status.members.is_empty()
        },
    )
    .await;
    let status = groups.status().remove(0);
    assert_eq!(status.launcher, "kubernetes");
    assert_eq!(status.counts.launches, 1);
    assert_eq!(status.counts.terminations, 1);
    let history = groups.history();
    let of_node = |action: &str| {
        history
            .iter()
            .any(|e| e.action == action && e.node.as_deref() == Some(&*node))
    };
    for action in ["launch", "launched", "terminate", "terminated"] {
        assert!(of_node(action), "{action} missing: {history:?}");
    }
    assert!(!of_node("joined"), "{history:?}");
    let terminate = history.iter().find(|e| e.action == "terminate").unwrap();
    assert!(terminate.reason.contains("join_timeout"), "{terminate:?}");
    assert!(api.pod_names(NS).is_empty(), "no pod is left");
    c.stop(false).await.unwrap();
}
