//! The compute cluster's Kubernetes backend, through the public API, against **a mock of
//! the Kubernetes API, not a real cluster** (no API server can run on these machines): an
//! axum server on 127.0.0.1 (`support/k8s_api.rs`) that serves the paths the backend
//! calls, keeps Deployments, Jobs and Pods in memory, and "runs" a Job by giving it a pod
//! whose log and exit code follow from the Job's command. kube's real client talks HTTP to
//! it with a kubeconfig credential, so the client, the error mapping and the log streams
//! are exercised; scheduling, images and the kubelet are not.
//!
//! Covered: a command as a Job (log, exit code, labels, limits, image), the Job deleted
//! after every run and also on timeout and cancellation, streamed output, API failures
//! mapped to retryable or permanent errors, health (API, deployment readiness, pod
//! readiness), credentials, and a `remote_command` task landing on the node.

#[path = "support/commands.rs"]
mod commands;
#[path = "support/common.rs"]
mod common;
#[path = "support/k8s_api.rs"]
mod k8s_api;
use commands::{cmd, parts};

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use wrangle::compute::{
    CommandRequest, ComputeCluster, ComputeConfig, ComputeErrorKind, ComputeNode, ComputeRequest,
    Selector, StreamChunk,
};
use wrangle::{RestartBudget, TaskSpec};
use wrangle_actors::RemoteCommandOutput;

use common::{eventually, fixed, handlers, secs, start};
use k8s_api::{FakeApi, Fault, IMAGE, MISSING_IMAGE};

/// The kubeconfig credential's name in the credentials directory.
const CREDENTIAL: &str = "mock-kubeconfig";

/// A mock API with deployment `ml/runner` ready, and a credentials directory holding a
/// kubeconfig for it.
async fn mock() -> (FakeApi, tempfile::TempDir) {
    let api = FakeApi::start().await;
    api.deployment("ml", "runner", IMAGE, 1);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(CREDENTIAL), api.kubeconfig()).unwrap();
    (api, dir)
}

/// A cluster reading credentials from `dir`, checking health every 100 ms.
async fn cluster(dir: &Path) -> ComputeCluster {
    let config = ComputeConfig {
        health_interval: Duration::from_millis(100),
        health_timeout: Duration::from_secs(2),
        unhealthy_after: 3,
        max_backoff: Duration::from_millis(200),
        credentials_dir: Some(dir.to_path_buf()),
        ..ComputeConfig::default()
    };
    ComputeCluster::start_with("k8s", config, RestartBudget::default())
        .await
        .unwrap()
}

/// Node `id` on `endpoint`, logging in with the mock's kubeconfig.
fn node(id: &str, endpoint: &str) -> ComputeNode {
    ComputeNode::new(id, endpoint)
        .unwrap()
        .credential(CREDENTIAL)
        .timeout(Duration::from_secs(20))
}

/// Waits (up to 10 s) until every Job the mock saw created was deleted, with propagation
/// `Background`, and none remains.
async fn all_jobs_deleted(api: &FakeApi) {
    eventually("every job is deleted", secs(10), || async {
        api.jobs().is_empty() && api.deleted().len() == api.created().len()
    })
    .await;
    let mut created = api.created();
    let mut deleted: Vec<String> = api.deleted().into_iter().map(|(n, _)| n).collect();
    created.sort();
    deleted.sort();
    assert_eq!(created, deleted);
    for (job, policy) in api.deleted() {
        assert_eq!(policy.as_deref(), Some("Background"), "{job}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_runs_as_a_job_and_answers_its_log_and_exit_code() {
    let (api, dir) = mock().await;
    let c = cluster(dir.path()).await;
    c.add_node(
        node("k1", "k8s://ml/runner")
            .capability("cpu", 0.5)
            .capability("memory_gb", 0.125),
    )
    .await
    .unwrap();
    let k1 = c.node("k1").unwrap();
    let r = k1.execute(cmd(&["echo", "a", "b c"])).await.unwrap();
    assert_eq!(parts(r), (Some(0), "a b c\n".into(), String::new()));
    // Kubernetes keeps one log per container, standard error merged in.
    let r = k1
        .execute(cmd(&["sh", "-c", "echo out; echo err >&2; exit 3"]))
        .await
        .unwrap();
    assert_eq!(parts(r), (Some(3), "out\nerr\n".into(), String::new()));
    assert_eq!(api.created().len(), 2);
    all_jobs_deleted(&api).await;

    let job = api.posted().remove(0);
    let labels = job.metadata.labels.clone().unwrap();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "wrangle");
    assert_eq!(labels["wrangle.io/node"], "k1");
    assert!(job
        .metadata
        .name
        .as_deref()
        .unwrap()
        .starts_with("wrangle-k1-"));
    let spec = job.spec.unwrap();
    assert_eq!(spec.backoff_limit, Some(0));
    assert!(spec.ttl_seconds_after_finished.is_some());
    assert_eq!(spec.active_deadline_seconds, Some(20), "the node's timeout");
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let container = &pod.containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some(IMAGE),
        "the deployment's image"
    );
    assert_eq!(
        container.command.clone().unwrap(),
        ["echo", "a", "b c"],
        "argv as the command, no shell"
    );
    assert_eq!(container.args, None);
    let limits = container.resources.clone().unwrap().limits.unwrap();
    assert_eq!(limits["cpu"].0, "500m");
    assert_eq!(limits["memory"].0, (128u64 << 20).to_string());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_streams_while_the_job_runs_and_a_caller_gone_deletes_it() {
    let (api, dir) = mock().await;
    let c = cluster(dir.path()).await;
    c.add_node(node("k1", "k8s://ml/runner")).await.unwrap();
    let k1 = c.node("k1").unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let call = tokio::spawn(async move {
        k1.execute_streaming(cmd(&["sh", "-c", "echo first; sleep 3600"]), tx)
            .await
    });
    let chunk = tokio::time::timeout(secs(10), rx.recv())
        .await
        .expect("output streams while the command runs")
        .expect("a chunk");
    assert_eq!(chunk, StreamChunk::Stdout("first\n".into()));
    assert!(!call.is_finished(), "the command still runs");
    assert_eq!(api.jobs().len(), 1);
    assert!(api.deleted().is_empty());
    call.abort();
    all_jobs_deleted(&api).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_deletes_the_job() {
    let (api, dir) = mock().await;
    let c = cluster(dir.path()).await;
    // Long enough for the Job to be made on a loaded machine before the timeout.
    c.add_node(node("k1", "k8s://ml/runner").timeout(Duration::from_secs(3)))
        .await
        .unwrap();
    let e = c
        .node("k1")
        .unwrap()
        .execute(cmd(&["sleep", "3600"]))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ComputeErrorKind::Timeout, "{e}");
    assert_eq!(api.created().len(), 1);
    all_jobs_deleted(&api).await;

    // An API server that stops answering mid-run: the same.
    api.fail("GET /api/v1/namespaces/ml/pods", Fault::Hang);
    let e = c
        .node("k1")
        .unwrap()
        .execute(cmd(&["echo", "never read"]))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ComputeErrorKind::Timeout, "{e}");
    assert_eq!(api.created().len(), 2);
    all_jobs_deleted(&api).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn programs_and_images_that_cannot_start_fail_as_a_user_expects() {
    let (api, dir) = mock().await;
    api.deployment("ml", "broken", MISSING_IMAGE, 1);
    let c = cluster(dir.path()).await;
    c.add_node(node("k1", "k8s://ml/runner")).await.unwrap();
    c.add_node(node("k2", "k8s://ml/broken")).await.unwrap();
    let e = c
        .node("k1")
        .unwrap()
        .execute(cmd(&["no-such-program"]))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ComputeErrorKind::Rejected, "{e}");
    assert!(
        e.message.contains("StartError") && e.message.contains("executable file not found"),
        "{e}"
    );
    let e = c
        .node("k2")
        .unwrap()
        .execute(cmd(&["echo", "hi"]))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ComputeErrorKind::Unavailable, "{e}");
    assert!(e.message.contains("ErrImagePull"), "{e}");
    assert_eq!(api.created().len(), 2);
    all_jobs_deleted(&api).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_failures_are_retryable_or_permanent_as_their_status_says() {
    let (api, dir) = mock().await;
    let c = cluster(dir.path()).await;
    c.add_node(node("k1", "k8s://ml/runner")).await.unwrap();
    let k1 = c.node("k1").unwrap();
    let create = "POST /apis/batch/v1/namespaces/ml/jobs";
    let cases = [
        (
            Fault::Status(500, "etcdserver: request timed out"),
            ComputeErrorKind::Remote,
        ),
        (Fault::TooMany(7), ComputeErrorKind::Busy),
        (
            Fault::Status(
                403,
                "jobs.batch is forbidden: User \"tester\" cannot create",
            ),
            ComputeErrorKind::Rejected,
        ),
        (
            Fault::Status(404, "namespaces \"ml\" not found"),
            ComputeErrorKind::Rejected,
        ),
        (
            Fault::Status(
                422,
                "Job.batch \"x\" is invalid: spec.template: Required value",
            ),
            ComputeErrorKind::Rejected,
        ),
    ];
    for (fault, kind) in cases {
        api.heal();
        api.fail(create, fault.clone());
        let e = k1.execute(cmd(&["echo", "hi"])).await.unwrap_err();
        assert_eq!(e.kind, kind, "{fault:?}: {e}");
        assert_eq!(
            e.is_retryable(),
            matches!(kind, ComputeErrorKind::Remote | ComputeErrorKind::Busy),
            "{e}"
        );
        match fault {
            Fault::TooMany(secs) => {
                assert_eq!(e.retry_after, Some(Duration::from_secs(secs.into())), "{e}")
            }
            Fault::Status(code, message) => {
                assert!(
                    e.message.contains(message) && e.message.contains(&code.to_string()),
                    "{e}"
                );
                assert_eq!(e.retry_after, None);
            }
            Fault::Hang => unreachable!(),
        }
    }
    assert!(
        !api.requests().iter().any(|r| r.starts_with("DELETE")),
        "a refused creation leaves no Job to delete"
    );
    api.heal();
    // A failure after the Job exists still deletes it.
    api.fail(
        "GET /api/v1/namespaces/ml/pods",
        Fault::Status(500, "apiserver is sad"),
    );
    let e = k1.execute(cmd(&["echo", "hi"])).await.unwrap_err();
    assert_eq!(e.kind, ComputeErrorKind::Remote, "{e}");
    assert_eq!(api.created().len(), 1, "only the last attempt made a job");
    all_jobs_deleted(&api).await;
    api.heal();

    // A deployment that is not there: this node can run nothing, another may.
    c.add_node(node("k2", "k8s://ml/gone")).await.unwrap();
    let e = c
        .node("k2")
        .unwrap()
        .execute(cmd(&["true"]))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ComputeErrorKind::Unavailable, "{e}");
    assert!(e.message.contains("\"gone\" not found"), "{e}");
    // An API server that is not there at all.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kubeconfig = api
        .kubeconfig()
        .replace(&api.addr.to_string(), &format!("127.0.0.1:{port}"));
    std::fs::write(dir.path().join("nowhere"), kubeconfig).unwrap();
    c.add_node(node("k3", "k8s://ml/runner").credential("nowhere"))
        .await
        .unwrap();
    let e = c
        .node("k3")
        .unwrap()
        .execute(cmd(&["true"]))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ComputeErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_api_and_the_deployments_readiness() {
    let (api, dir) = mock().await;
    let c = cluster(dir.path()).await;
    c.add_node(node("k1", "k8s://ml/runner")).await.unwrap();
    let k1 = c.node("k1").unwrap();
    eventually("a check passes", secs(10), || async {
        k1.info().health.checked_at.is_some() && k1.info().health.healthy
    })
    .await;
    assert!(api.requests().iter().any(|r| r == "GET /version"));

    api.set_ready("ml", "runner", 0);
    eventually("the node is unhealthy", secs(10), || async {
        !k1.info().health.healthy
    })
    .await;
    let health = k1.info().health;
    assert!(health.consecutive_failures >= 3, "{health:?}");
    let reason = health.reason.unwrap_or_default();
    assert!(
        reason.contains("deployment ml/runner") && reason.contains("no ready replica"),
        "{reason}"
    );
    assert!(
        c.select_node(&Selector::new()).is_none(),
        "nothing goes to it"
    );
    let before = api.created().len();
    let e = k1.execute(cmd(&["echo", "hi"])).await.unwrap_err();
    assert_eq!(e.kind, ComputeErrorKind::Unavailable, "{e}");
    assert_eq!(
        api.created().len(),
        before,
        "no job is made for an unhealthy node"
    );

    api.set_ready("ml", "runner", 1);
    eventually("the node is healthy again", secs(10), || async {
        k1.info().health.healthy
    })
    .await;
    let r = k1.execute(cmd(&["echo", "back"])).await.unwrap();
    assert_eq!(parts(r).1, "back\n");

    api.fail(
        "GET /version",
        Fault::Status(503, "the API server is shutting down"),
    );
    eventually(
        "an unreachable API makes it unhealthy",
        secs(10),
        || async { !k1.info().health.healthy },
    )
    .await;
    let reason = k1.info().health.reason.unwrap_or_default();
    assert!(
        reason.contains("/version") && reason.contains("503"),
        "{reason}"
    );
    api.heal();
    eventually("and healthy once it answers", secs(10), || async {
        k1.info().health.healthy
    })
    .await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_endpoints_check_the_pod_and_refuse_commands_naming_the_endpoint() {
    let (api, dir) = mock().await;
    api.pod("ml", "web-0", true);
    api.pod("ml", "web-1", false);
    let c = cluster(dir.path()).await;
    c.add_node(node("ready", "k8s://ml/pod/web-0"))
        .await
        .unwrap();
    c.add_node(node("unready", "k8s://ml/pod/web-1"))
        .await
        .unwrap();
    let health = c.health_check().await;
    assert_eq!(health.get("ready"), Some(&true), "{health:?}");
    assert_eq!(health.get("unready"), Some(&false), "{health:?}");
    let reason = c
        .node("unready")
        .unwrap()
        .info()
        .health
        .reason
        .unwrap_or_default();
    assert!(
        reason.contains("pod ml/web-1 is Running but not Ready"),
        "{reason}"
    );
    let e = c
        .node("ready")
        .unwrap()
        .execute(cmd(&["echo", "hi"]))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ComputeErrorKind::Invalid, "{e}");
    assert!(!e.is_retryable());
    assert!(e.message.contains("k8s://ml/pod/web-0"), "{e}");
    assert!(api.created().is_empty());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_named_files_and_bad_ones_are_refused_naming_the_field() {
    let (_api, dir) = mock().await;
    std::fs::write(dir.path().join("garbage"), "clusters: [unclosed\n\t: :").unwrap();
    let c = cluster(dir.path()).await;
    let e = c
        .add_node(node("k1", "k8s://ml/runner").credential("absent"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("credential") && e.contains("absent"), "{e}");
    let e = c
        .add_node(node("k1", "k8s://ml/runner").credential("garbage"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("credential") && e.contains("kubeconfig `garbage`"),
        "{e}"
    );
    assert!(!e.contains("unclosed"), "the file is never quoted: {e}");
    let e = c
        .add_node(node("k1", "k8s://ml/runner").credential("../garbage"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("credential"), "a name, never a path: {e}");
    assert!(c.list_nodes().is_empty(), "nothing was added");

    // A good one; a command with stdin is refused, as a Job has none.
    c.add_node(node("k1", "k8s://ml/runner")).await.unwrap();
    let e = c
        .node("k1")
        .unwrap()
        .execute(ComputeRequest::Command(CommandRequest {
            argv: vec!["cat".into()],
            stdin: Some("x".into()),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ComputeErrorKind::Invalid, "{e}");
    assert!(e.message.starts_with("stdin"), "{e}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_command_task_runs_as_a_job_on_the_kubernetes_node() {
    let (api, dir) = mock().await;
    let compute = cluster(dir.path()).await;
    compute
        .add_node(node("k1", "k8s://ml/runner").label("pool", "k8s"))
        .await
        .unwrap();
    let registry = handlers();
    wrangle_actors::register_compute(&registry, &compute);
    let c = start(fixed(2), registry).await;

    let input = json!({"labels": {"pool": "k8s"}, "argv": ["echo", "hello", "from a job"]});
    let task = c
        .submit_async(TaskSpec::new("remote_command", &input).unwrap())
        .await
        .unwrap();
    let out: RemoteCommandOutput = task.result(secs(30)).await.unwrap();
    assert_eq!(
        out,
        RemoteCommandOutput {
            node: "k1".into(),
            exit_code: Some(0),
            stdout: "hello from a job\n".into(),
            stderr: String::new(),
        }
    );
    // A non-zero exit fails the task (check = true), permanently: it is an answer.
    let input = json!({"labels": {"pool": "k8s"}, "argv": ["sh", "-c", "echo boom; exit 4"]});
    let failed = c
        .submit_async(TaskSpec::new("remote_command", &input).unwrap().retries(3))
        .await
        .unwrap();
    let e = failed
        .result::<RemoteCommandOutput>(secs(30))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("node k1 exited with code 4"), "{e}");
    assert_eq!(c.get_task(failed.id).await.unwrap().attempts.len(), 1);
    assert_eq!(api.created().len(), 2);
    all_jobs_deleted(&api).await;
    c.stop(true).await.unwrap();
    compute.stop().await;
}
