//! Where a compute node is and how to reach it: the endpoint strings of the spec, parsed
//! into a typed [`Endpoint`] whose errors name the part that is wrong.
//!
//! | form | backend |
//! | --- | --- |
//! | `http://host:port[/base]`, `https://…` | REST, OpenAI-compatible and Ollama APIs |
//! | `docker://CONTAINER`, `docker://image/IMAGE` | the local Docker engine |
//! | `docker+tcp://host:port/CONTAINER`, `docker+tcp://host:port/image/IMAGE` | a Docker engine over TCP |
//! | `k8s://DEPLOYMENT`, `k8s://NAMESPACE/DEPLOYMENT`, `k8s://NAMESPACE/pod/NAME` | Kubernetes |
//! | `ssh://user@host[:port]` | a machine over SSH (port 22 by default) |

use std::fmt;
use std::str::FromStr;

/// The kind of backend an endpoint reaches.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ComputeBackend {
    /// An HTTP(S) service.
    Http,
    /// A Docker engine.
    Docker,
    /// A Kubernetes cluster.
    Kubernetes,
    /// A machine over SSH.
    Ssh,
}

impl fmt::Display for ComputeBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Http => "http",
            Self::Docker => "docker",
            Self::Kubernetes => "kubernetes",
            Self::Ssh => "ssh",
        })
    }
}

/// Which Docker engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DockerEngine {
    /// The engine on this machine (its default socket).
    Local,
    /// An engine listening on TCP.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
}

/// What a Docker endpoint runs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DockerTarget {
    /// Commands exec in this running container.
    Container(String),
    /// Each command runs in a new container of this image, removed afterwards.
    Image(String),
}

/// What a Kubernetes endpoint runs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KubernetesTarget {
    /// A deployment: commands run in one of its ready pods.
    Deployment(String),
    /// One pod.
    Pod(String),
}

/// A parsed compute endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// An HTTP(S) service; requests' paths are joined to `base`.
    Http {
        /// Scheme, host, port and base path, without a trailing slash.
        base: String,
        /// True for `https`.
        tls: bool,
    },
    /// A Docker engine and what to run in.
    Docker {
        /// Which engine.
        engine: DockerEngine,
        /// A container or an image.
        target: DockerTarget,
    },
    /// A Kubernetes workload.
    Kubernetes {
        /// The namespace (`default` when the endpoint names none).
        namespace: String,
        /// A deployment or a pod.
        target: KubernetesTarget,
    },
    /// A machine over SSH.
    Ssh {
        /// The user to log in as.
        user: String,
        /// Host name or address (IPv6 without brackets).
        host: String,
        /// Port (22 by default).
        port: u16,
    },
}

/// An endpoint that does not parse: which part is wrong, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("endpoint `{endpoint}`: {part}: {reason}")]
pub struct EndpointError {
    /// The endpoint as given (credentials never appear in endpoints, so it is safe to show).
    pub endpoint: String,
    /// The part that is wrong (`scheme`, `host`, `port`, `user`, `container`, …).
    pub part: &'static str,
    /// What was expected.
    pub reason: String,
}

/// Longest endpoint accepted.
const MAX_ENDPOINT: usize = 2048;

impl Endpoint {
    /// The backend this endpoint reaches.
    pub fn backend(&self) -> ComputeBackend {
        match self {
            Self::Http { .. } => ComputeBackend::Http,
            Self::Docker { .. } => ComputeBackend::Docker,
            Self::Kubernetes { .. } => ComputeBackend::Kubernetes,
            Self::Ssh { .. } => ComputeBackend::Ssh,
        }
    }

    /// Parses an endpoint string.
    ///
    /// ```
    /// use wrangle::compute::{Endpoint, KubernetesTarget};
    ///
    /// let e: Endpoint = "k8s://ollama-deployment".parse()?;
    /// assert_eq!(e, Endpoint::Kubernetes {
    ///     namespace: "default".into(),
    ///     target: KubernetesTarget::Deployment("ollama-deployment".into()),
    /// });
    /// let bad = "ssh://gpu1:22".parse::<Endpoint>().unwrap_err();
    /// assert_eq!(bad.part, "user");
    /// # Ok::<(), wrangle::compute::EndpointError>(())
    /// ```
    pub fn parse(s: &str) -> Result<Self, EndpointError> {
        let err = |part: &'static str, reason: &str| EndpointError {
            endpoint: s.chars().take(200).collect(),
            part,
            reason: reason.into(),
        };
        if s.len() > MAX_ENDPOINT {
            return Err(err("endpoint", "longer than 2048 bytes"));
        }
        if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(err("endpoint", "contains spaces or control characters"));
        }
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(err(
                "scheme",
                "missing; expected http://, https://, docker://, docker+tcp://, k8s:// or ssh://",
            ));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "http" | "https" => parse_http(s, &err),
            "docker" => Ok(Self::Docker {
                engine: DockerEngine::Local,
                target: docker_target(rest, &err)?,
            }),
            "docker+tcp" => {
                let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
                let (host, port) = host_port(authority, None, &err)?;
                Ok(Self::Docker {
                    engine: DockerEngine::Tcp { host, port },
                    target: docker_target(path, &err)?,
                })
            }
            "k8s" | "kubernetes" => parse_k8s(rest, &err),
            "ssh" => {
                let Some((user, authority)) = rest.split_once('@') else {
                    return Err(err("user", "missing; expected ssh://user@host:port"));
                };
                if user.is_empty() || !user.chars().all(name_char) {
                    return Err(err("user", "must be a non-empty user name"));
                }
                let authority = authority.strip_suffix('/').unwrap_or(authority);
                let (host, port) = host_port(authority, Some(22), &err)?;
                Ok(Self::Ssh {
                    user: user.into(),
                    host,
                    port,
                })
            }
            _ => Err(err(
                "scheme",
                "unknown; expected http, https, docker, docker+tcp, k8s or ssh",
            )),
        }
    }
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Http { base, .. } => f.write_str(base),
            Self::Docker { engine, target } => {
                match engine {
                    DockerEngine::Local => f.write_str("docker://")?,
                    DockerEngine::Tcp { host, port } => {
                        write!(f, "docker+tcp://{}/", HostPort(host, *port))?
                    }
                }
                match target {
                    DockerTarget::Container(c) => f.write_str(c),
                    DockerTarget::Image(i) => write!(f, "image/{i}"),
                }
            }
            Self::Kubernetes { namespace, target } => match target {
                KubernetesTarget::Deployment(d) => write!(f, "k8s://{namespace}/{d}"),
                KubernetesTarget::Pod(p) => write!(f, "k8s://{namespace}/pod/{p}"),
            },
            Self::Ssh { user, host, port } => write!(f, "ssh://{user}@{}", HostPort(host, *port)),
        }
    }
}

/// `host:port`, with brackets around an IPv6 address.
struct HostPort<'a>(&'a str, u16);

impl fmt::Display for HostPort<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.contains(':') {
            write!(f, "[{}]:{}", self.0, self.1)
        } else {
            write!(f, "{}:{}", self.0, self.1)
        }
    }
}

type ErrFn<'a> = dyn Fn(&'static str, &str) -> EndpointError + 'a;

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

fn parse_http(s: &str, err: &ErrFn<'_>) -> Result<Endpoint, EndpointError> {
    let url = url::Url::parse(s).map_err(|e| err("url", &e.to_string()))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(err("host", "missing"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(err(
            "credentials",
            "not allowed in an endpoint; give them as a named credential",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(err("query", "an endpoint has no query or fragment"));
    }
    let base = url.as_str().trim_end_matches('/').to_string();
    Ok(Endpoint::Http {
        tls: url.scheme() == "https",
        base,
    })
}

fn docker_target(path: &str, err: &ErrFn<'_>) -> Result<DockerTarget, EndpointError> {
    if let Some(image) = path.strip_prefix("image/") {
        // Images may carry a registry host, a path, a tag or a digest.
        let ok = !image.is_empty()
            && image
                .chars()
                .all(|c| name_char(c) || matches!(c, '/' | ':' | '@'));
        if !ok {
            return Err(err(
                "image",
                "must be an image reference such as busybox:1.36",
            ));
        }
        return Ok(DockerTarget::Image(image.into()));
    }
    if path.is_empty() || !path.chars().all(name_char) {
        return Err(err(
            "container",
            "must be a container name ([A-Za-z0-9_.-]) or image/IMAGE",
        ));
    }
    Ok(DockerTarget::Container(path.into()))
}

fn parse_k8s(rest: &str, err: &ErrFn<'_>) -> Result<Endpoint, EndpointError> {
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let (namespace, target) =
        match parts.as_slice() {
            [deployment] => (
                "default",
                KubernetesTarget::Deployment(deployment.to_string()),
            ),
            [namespace, deployment] => (
                *namespace,
                KubernetesTarget::Deployment(deployment.to_string()),
            ),
            [namespace, "pod", pod] => (*namespace, KubernetesTarget::Pod(pod.to_string())),
            _ => return Err(err(
                "path",
                "expected k8s://DEPLOYMENT, k8s://NAMESPACE/DEPLOYMENT or k8s://NAMESPACE/pod/NAME",
            )),
        };
    if !dns_label(namespace) {
        return Err(err(
            "namespace",
            "must be a DNS label (a-z, 0-9, '-', at most 63)",
        ));
    }
    let (part, name) = match &target {
        KubernetesTarget::Deployment(d) => ("deployment", d),
        KubernetesTarget::Pod(p) => ("pod", p),
    };
    let subdomain = name.len() <= 253 && name.split('.').all(dns_label);
    if !subdomain {
        return Err(err(part, "must be a DNS name (a-z, 0-9, '-', '.')"));
    }
    Ok(Endpoint::Kubernetes {
        namespace: namespace.into(),
        target,
    })
}

pub(crate) fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn host_port(
    authority: &str,
    default_port: Option<u16>,
    err: &ErrFn<'_>,
) -> Result<(String, u16), EndpointError> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((host, after)) = v6.split_once(']') else {
            return Err(err("host", "an IPv6 address needs a closing ']'"));
        };
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(err("host", "not an IPv6 address"));
        }
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p)),
            None if after.is_empty() => (host, None),
            None => return Err(err("port", "expected ':' and a port after the address")),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() || !host.chars().all(|c| name_char(c) || c == ':') {
        return Err(err("host", "must be a host name or an IP address"));
    }
    let port = match (port, default_port) {
        (Some(p), _) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(err("port", "must be a number from 1 to 65535")),
        },
        (None, Some(p)) => p,
        (None, None) => return Err(err("port", "missing")),
    };
    Ok((host.into(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Endpoint {
        Endpoint::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn bad(s: &str) -> &'static str {
        match Endpoint::parse(s) {
            Ok(e) => panic!("{s} parsed as {e:?}"),
            Err(e) => {
                assert!(e.to_string().contains(e.part), "{e}");
                e.part
            }
        }
    }

    #[test]
    fn every_form_of_the_spec_parses_and_prints_back() {
        let cases = [
            ("http://gpu1:11434", "http://gpu1:11434"),
            ("https://api.example.com/v1/", "https://api.example.com/v1"),
            ("docker://worker-1", "docker://worker-1"),
            ("docker://image/busybox:1.36", "docker://image/busybox:1.36"),
            (
                "docker+tcp://10.0.0.2:2375/box",
                "docker+tcp://10.0.0.2:2375/box",
            ),
            ("k8s://ollama-deployment", "k8s://default/ollama-deployment"),
            ("k8s://ml/ollama", "k8s://ml/ollama"),
            ("k8s://ml/pod/ollama-0", "k8s://ml/pod/ollama-0"),
            ("ssh://ada@192.168.1.10:2222", "ssh://ada@192.168.1.10:2222"),
            ("ssh://ada@host", "ssh://ada@host:22"),
            ("ssh://ada@[::1]:22", "ssh://ada@[::1]:22"),
        ];
        for (input, printed) in cases {
            let e = ok(input);
            assert_eq!(e.to_string(), printed, "{input}");
            assert_eq!(ok(printed), e, "{printed} parses back to the same endpoint");
        }
        assert_eq!(ok("k8s://x").backend(), ComputeBackend::Kubernetes);
        assert_eq!(
            ok("ssh://ada@[::1]:22"),
            Endpoint::Ssh {
                user: "ada".into(),
                host: "::1".into(),
                port: 22
            }
        );
        assert_eq!(
            ok("docker://image/busybox"),
            Endpoint::Docker {
                engine: DockerEngine::Local,
                target: DockerTarget::Image("busybox".into())
            }
        );
    }

    #[test]
    fn each_bad_endpoint_names_its_bad_part() {
        assert_eq!(bad("gpu1:11434"), "scheme");
        assert_eq!(bad("ftp://x"), "scheme");
        assert_eq!(bad("http://"), "url");
        assert_eq!(bad("http://user:pw@host"), "credentials");
        assert_eq!(bad("http://host/?a=1"), "query");
        assert_eq!(bad("docker://"), "container");
        assert_eq!(bad("docker://a;rm"), "container");
        assert_eq!(bad("docker://image/"), "image");
        assert_eq!(bad("docker+tcp://host/box"), "port");
        assert_eq!(bad("k8s://Bad_NS/dep"), "namespace");
        assert_eq!(bad("k8s://ns/Dep!"), "deployment");
        assert_eq!(bad("k8s://a/b/c/d"), "path");
        assert_eq!(bad("ssh://host:22"), "user");
        assert_eq!(bad("ssh://ada@host:0"), "port");
        assert_eq!(bad("ssh://ada@host:99999"), "port");
        assert_eq!(bad("ssh://ada@[::1"), "host");
        assert_eq!(bad("ssh://ada@:22"), "host");
        assert_eq!(bad("ssh://a da@host"), "endpoint");
        assert_eq!(bad(&format!("http://{}", "a".repeat(3000))), "endpoint");
    }
}
