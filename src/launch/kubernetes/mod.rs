//! Nodes as Kubernetes pods (kube), in one namespace of a cluster.
//!
//! Each node is one **Pod** named `wrangle-NODE` (lower-cased, see `dns_name`) of the
//! group's image, its entrypoint (the node program) given the launcher's arguments,
//! labelled `wrangle.group=GROUP` and `wrangle.node=NODE`, with `restartPolicy: Never` (a
//! node that exits is replaced by the planner, not restarted by the kubelet) and the node's
//! settings in its environment, plus `WRANGLE_GROUP`. The cluster **cookie** is not written
//! into the pod: the launcher keeps it in a Secret `wrangle-GROUP-cookie` (created, or
//! replaced when it holds another cookie) and the pod reads `WRANGLE_COOKIE` from it
//! (`valueFrom.secretKeyRef`), so whoever may read pods but not secrets does not learn it.
//! A Secret of that name that does not carry the group's label is not overwritten.
//!
//! - **terminate** deletes the pod with `gracePeriodSeconds` the grace: the kubelet sends
//!   SIGTERM (the node program drains) and SIGKILL once it passes. The call answers when
//!   the API server has accepted the deletion; from then on the pod, marked for deletion,
//!   is not listed. A pod already gone is a success.
//! - **list** reports the group's pods (label selector `wrangle.group=GROUP`, checked again
//!   here: nothing without the label is ever touched), except those being deleted. A pod
//!   whose node ended (`Succeeded` or `Failed`) is reported no more: its reason and last
//!   lines of output are logged, and it is deleted, so no pod of a group outlives its node.
//!
//! The client comes from a kubeconfig ([`KubernetesLauncher::kubeconfig`]) or is inferred as
//! `kubectl` does (`KUBECONFIG`, `~/.kube/config`, else the pod's service account), the
//! same way as the compute cluster's Kubernetes nodes; kube's own retries are off (the
//! planner retries, with backoff). Pods mount no service-account token unless a service
//! account is named. The nodes must reach the coordinator: give the group a `join`
//! address the cluster's pods can dial.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, Pod, PodSpec, ResourceRequirements, Secret, SecretKeySelector,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::core::ObjectMeta;
use kube::{Api, Client};

use super::{LaunchError, Launcher, NodeLaunch, Resource, GROUP_LABEL, NODE_LABEL};
use crate::compute::KubeSource;

const KIND: &str = "kubernetes";
/// The environment variable holding the cluster cookie, which goes through the Secret.
const COOKIE_ENV: &str = "WRANGLE_COOKIE";
/// The key of the cookie in the group's Secret.
const COOKIE_KEY: &str = "cookie";
/// The name of a node pod's one container.
const CONTAINER: &str = "node";
/// Lines of an ended node's output logged before its pod is deleted.
const TAIL_LINES: i64 = 20;

/// Starts nodes as pods of one image in one namespace.
pub struct KubernetesLauncher {
    namespace: String,
    image: String,
    args: Vec<String>,
    /// A kubeconfig file; `None`: inferred.
    kubeconfig: Option<PathBuf>,
    /// Each pod's resource requests and limits (`cpu`, `memory` quantities).
    requests: BTreeMap<String, Quantity>,
    limits: BTreeMap<String, Quantity>,
    service_account: Option<String>,
    /// Made on first success (tried again at every call until then).
    client: tokio::sync::OnceCell<Client>,
}

impl std::fmt::Debug for KubernetesLauncher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesLauncher")
            .field("namespace", &self.namespace)
            .field("image", &self.image)
            .field("args", &self.args)
            .field("kubeconfig", &self.kubeconfig)
            .field("requests", &self.requests)
            .field("limits", &self.limits)
            .field("service_account", &self.service_account)
            .finish()
    }
}

impl KubernetesLauncher {
    /// Pods of `image` in `namespace`, the image's entrypoint given `args`, with the
    /// client inferred as `kubectl` would.
    pub fn new(namespace: impl Into<String>, image: impl Into<String>, args: Vec<String>) -> Self {
        Self {
            namespace: namespace.into(),
            image: image.into(),
            args,
            kubeconfig: None,
            requests: BTreeMap::new(),
            limits: BTreeMap::new(),
            service_account: None,
            client: tokio::sync::OnceCell::new(),
        }
    }

    /// Talks to the cluster of the kubeconfig at `path` (its current context), read at the
    /// first call. It is never printed: errors say only why it cannot be used.
    pub fn kubeconfig(mut self, path: impl Into<PathBuf>) -> Self {
        self.kubeconfig = Some(path.into());
        self
    }

    /// Each pod's resource requests: `cpu` and `memory` as Kubernetes quantities (`500m`,
    /// `2`, `512Mi`); an empty one is not requested. The API server checks them at launch.
    pub fn requests(mut self, cpu: &str, memory: &str) -> Self {
        self.requests = quantities(cpu, memory);
        self
    }

    /// Each pod's resource limits, as [`requests`](Self::requests); an empty one is not
    /// limited.
    pub fn limits(mut self, cpu: &str, memory: &str) -> Self {
        self.limits = quantities(cpu, memory);
        self
    }

    /// Runs the pods as service account `name` (its token mounted); by default they run as
    /// the namespace's default account with no token mounted.
    pub fn service_account(mut self, name: impl Into<String>) -> Self {
        self.service_account = Some(name.into());
        self
    }

    async fn client(&self) -> Result<Client, LaunchError> {
        self.client
            .get_or_try_init(|| async {
                let source = match &self.kubeconfig {
                    Some(path) => {
                        let name = path.display().to_string();
                        let config = crate::compute::read_kubeconfig(path).map_err(|why| {
                            LaunchError::new(KIND, format!("kubeconfig {name} {why}"))
                        })?;
                        KubeSource::Kubeconfig {
                            config: Box::new(config),
                            name,
                        }
                    }
                    None => KubeSource::Infer,
                };
                crate::compute::kube_client(&source).await.map_err(|e| {
                    // Its messages start with `kubernetes: `, which a launch error says already.
                    let reason = e.message.strip_prefix("kubernetes: ").unwrap_or(&e.message);
                    LaunchError::new(KIND, reason)
                })
            })
            .await
            .cloned()
    }

    fn pods(&self, client: Client) -> Api<Pod> {
        Api::namespaced(client, &self.namespace)
    }

    /// The pod of `node`, its cookie read from Secret `secret` (`None`: no cookie).
    fn pod(&self, node: &NodeLaunch, secret: Option<&str>) -> Pod {
        let mut env: Vec<EnvVar> = node
            .env
            .iter()
            .filter(|(k, _)| *k != COOKIE_ENV && *k != "WRANGLE_GROUP")
            .map(|(k, v)| plain(k, v))
            .collect();
        env.push(plain("WRANGLE_GROUP", &node.group));
        if let Some(secret) = secret {
            env.push(EnvVar {
                name: COOKIE_ENV.into(),
                value: None,
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret.to_string(),
                        key: COOKIE_KEY.into(),
                        optional: Some(false),
                    }),
                    ..EnvVarSource::default()
                }),
            });
        }
        let resources =
            (!self.requests.is_empty() || !self.limits.is_empty()).then(|| ResourceRequirements {
                requests: (!self.requests.is_empty()).then(|| self.requests.clone()),
                limits: (!self.limits.is_empty()).then(|| self.limits.clone()),
                ..ResourceRequirements::default()
            });
        Pod {
            metadata: ObjectMeta {
                name: Some(dns_name("wrangle-", &node.name, "")),
                namespace: Some(self.namespace.clone()),
                labels: Some(node.resource_labels.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                restart_policy: Some("Never".into()),
                service_account_name: self.service_account.clone(),
                automount_service_account_token: Some(self.service_account.is_some()),
                containers: vec![Container {
                    name: CONTAINER.into(),
                    image: Some(self.image.clone()),
                    args: Some(self.args.clone()),
                    env: Some(env),
                    resources,
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    /// Group `group`'s Secret holding `cookie`.
    fn secret(&self, group: &str, cookie: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(dns_name("wrangle-", group, "-cookie")),
                namespace: Some(self.namespace.clone()),
                labels: Some(BTreeMap::from([(GROUP_LABEL.into(), group.to_string())])),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::from([(
                COOKIE_KEY.into(),
                ByteString(cookie.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        }
    }

    /// Makes group `group`'s Secret hold `cookie`: created, or replaced (409: it exists)
    /// when it holds another one. Answers its name.
    async fn ensure_secret(
        &self,
        client: Client,
        group: &str,
        cookie: &str,
    ) -> Result<String, LaunchError> {
        let secrets: Api<Secret> = Api::namespaced(client, &self.namespace);
        let mut wanted = self.secret(group, cookie);
        let name = wanted.metadata.name.clone().unwrap_or_default();
        let what = |verb: &str| format!("{verb} secret {}/{name}", self.namespace);
        match secrets.create(&PostParams::default(), &wanted).await {
            Ok(_) => return Ok(name),
            Err(e) if status_code(&e) == Some(409) => {}
            Err(e) => return Err(api_failure(&what("create"), e)),
        }
        let current = secrets
            .get(&name)
            .await
            .map_err(|e| api_failure(&what("get"), e))?;
        let labels = current.metadata.labels.clone().unwrap_or_default();
        if labels.get(GROUP_LABEL).map(String::as_str) != Some(group) {
            return Err(LaunchError::new(
                KIND,
                format!(
                    "secret {}/{name} exists without the label {GROUP_LABEL}={group}: \
                     not replaced (remove it, or run the group in another namespace)",
                    self.namespace
                ),
            ));
        }
        if current.data == wanted.data {
            return Ok(name);
        }
        // Replaced only as it was read: a concurrent change is a 409, and the next launch
        // tries again.
        wanted.metadata.resource_version = current.metadata.resource_version;
        secrets
            .replace(&name, &PostParams::default(), &wanted)
            .await
            .map_err(|e| api_failure(&what("replace"), e))?;
        tracing::info!(namespace = %self.namespace, secret = %name, "group cookie secret replaced");
        Ok(name)
    }

    /// Logs why the pod of an ended node ended and its last lines of output, then deletes it.
    async fn reap(&self, pods: &Api<Pod>, pod: &Pod, name: &str, node: &str) {
        let status = pod.status.clone().unwrap_or_default();
        let phase = status.phase.unwrap_or_default();
        let mut reason = [status.reason, status.message]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(": ");
        let ended = status
            .container_statuses
            .unwrap_or_default()
            .into_iter()
            .find_map(|c| c.state.and_then(|s| s.terminated));
        if let Some(t) = ended {
            let words = [t.reason, t.message].into_iter().flatten();
            let words = words.collect::<Vec<_>>().join(": ");
            if !reason.is_empty() {
                reason.push_str("; ");
            }
            reason.push_str(&format!("exit code {}", t.exit_code));
            if !words.is_empty() {
                reason.push_str(&format!(" ({words})"));
            }
        }
        let params = LogParams {
            container: Some(CONTAINER.into()),
            tail_lines: Some(TAIL_LINES),
            ..LogParams::default()
        };
        let output = pods.logs(name, &params).await.unwrap_or_default();
        tracing::warn!(%node, pod = %name, %phase, %reason, output = %output.trim_end(), "node pod ended: deleted");
        match pods.delete(name, &DeleteParams::default()).await {
            Err(e) if status_code(&e) != Some(404) => {
                let e = api_failure("delete", e);
                tracing::warn!(%node, pod = %name, error = %e, "ended node pod not deleted");
            }
            _ => {}
        }
    }
}

impl Launcher for KubernetesLauncher {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn launch(&self, node: NodeLaunch) -> BoxFuture<'_, Result<String, LaunchError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let secret = match node.env.get(COOKIE_ENV) {
                Some(cookie) => Some(
                    self.ensure_secret(client.clone(), &node.group, cookie)
                        .await?,
                ),
                None => None,
            };
            let pod = self.pod(&node, secret.as_deref());
            let name = pod.metadata.name.clone().unwrap_or_default();
            self.pods(client)
                .create(&PostParams::default(), &pod)
                .await
                .map_err(|e| api_failure(&format!("create pod {}/{name}", self.namespace), e))?;
            tracing::info!(node = %node.name, pod = %name, namespace = %self.namespace, image = %self.image, "node pod created");
            Ok(name)
        })
    }

    fn terminate(&self, id: String, grace: Duration) -> BoxFuture<'_, Result<(), LaunchError>> {
        Box::pin(async move {
            let pods = self.pods(self.client().await?);
            let seconds = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
            let params = DeleteParams {
                grace_period_seconds: Some(u32::try_from(seconds).unwrap_or(u32::MAX)),
                ..DeleteParams::default()
            };
            match pods.delete(&id, &params).await {
                Ok(_) => Ok(()),
                Err(e) if status_code(&e) == Some(404) => Ok(()),
                Err(e) => Err(api_failure(
                    &format!("delete pod {}/{id}", self.namespace),
                    e,
                )),
            }
        })
    }

    fn list(&self, group: String) -> BoxFuture<'_, Result<Vec<Resource>, LaunchError>> {
        Box::pin(async move {
            let pods = self.pods(self.client().await?);
            let params = ListParams::default().labels(&format!("{GROUP_LABEL}={group}"));
            let listed = pods
                .list(&params)
                .await
                .map_err(|e| api_failure(&format!("list pods in {}", self.namespace), e))?;
            let mut running = Vec::new();
            for pod in listed.items {
                let Some(name) = pod.metadata.name.clone() else {
                    continue;
                };
                let labels = pod.metadata.labels.clone().unwrap_or_default();
                // The API server selected by label; checked again, as nothing else is touched.
                if labels.get(GROUP_LABEL) != Some(&group) {
                    continue;
                }
                if pod.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let node = labels.get(NODE_LABEL).cloned().unwrap_or_default();
                let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                if matches!(phase, Some("Succeeded" | "Failed")) {
                    self.reap(&pods, &pod, &name, &node).await;
                    continue;
                }
                running.push(Resource { id: name, node });
            }
            Ok(running)
        })
    }
}

fn plain(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.to_string()),
        value_from: None,
    }
}

fn quantities(cpu: &str, memory: &str) -> BTreeMap<String, Quantity> {
    [("cpu", cpu), ("memory", memory)]
        .into_iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| (k.to_string(), Quantity(v.trim().to_string())))
        .collect()
}

/// `prefix + raw + suffix` as a Kubernetes object name (lower-case letters, digits, `-`):
/// `raw` as it is when it is one already, else lower-cased with other characters as `-`
/// and 8 hex digits of a hash of `raw` added, so two group names that differ only so
/// (`GPU`, `gpu`) do not share a name.
fn dns_name(prefix: &str, raw: &str, suffix: &str) -> String {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if raw.chars().all(ok) {
        return format!("{prefix}{raw}{suffix}");
    }
    let mapped: String = raw
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if ok(c) { c } else { '-' })
        .collect();
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let hash = raw.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("{prefix}{mapped}-{hash:08x}{suffix}")
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// A failure of `what` (`"create pod ns/x"`): the API server's own message and status, or
/// why it could not be reached.
fn api_failure(what: &str, e: kube::Error) -> LaunchError {
    let reason = match e {
        kube::Error::Api(status) => {
            let message = if status.message.is_empty() {
                &status.reason
            } else {
                &status.message
            };
            format!("{what}: HTTP {}: {message}", status.code)
        }
        other => match std::error::Error::source(&other) {
            Some(source) => format!("{what}: {other}: {source}"),
            None => format!("{what}: {other}"),
        },
    };
    LaunchError::new(KIND, reason)
}

#[cfg(test)]
mod tests;
