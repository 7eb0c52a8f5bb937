//! [`HttpToolBuilder`]: the host and header allowlists, size caps and time limits of an
//! [`HttpTool`], checked once when it is built.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderName;

use super::allowlist::{domain, Allowlist};
use super::guard::{Guard, GuardedResolver};
use super::{HttpTool, Inner};

/// Request headers no task may set, even when allowlisted: the client manages them, and
/// letting a task set them would let it reshape the request (`host`) or the connection.
const MANAGED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "proxy-authorization",
    "proxy-connection",
];

/// A setting of [`HttpToolBuilder`] that cannot work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpToolConfigError {
    /// An allowlist entry that is not a host, `*.domain` or `host:port`.
    #[error("hosts: `{entry}`: {reason}")]
    Host {
        /// The entry as given.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No host allowed: every request would be refused.
    #[error("hosts: the allowlist is empty, so every request would be refused")]
    NoHosts,
    /// A header name that is not valid, or one the client manages.
    #[error("headers: `{name}`: {reason}")]
    Header {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A pinned name ([`HttpToolBuilder::resolve`]) that is not a host name, or has no
    /// addresses.
    #[error("resolve: `{host}`: {reason}")]
    Resolve {
        /// The name as given.
        host: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A size or time limit out of range.
    #[error("{field}: {reason}")]
    Limit {
        /// The setting.
        field: &'static str,
        /// The range expected.
        reason: String,
    },
    /// The HTTP client could not be built (its TLS setup failed).
    #[error("HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// Builds an [`HttpTool`]: which hosts it may reach, which headers a task may set, and its
/// caps. Start from [`HttpTool::builder`]; every setting but the hosts has a default.
#[derive(Clone, Debug)]
pub struct HttpToolBuilder {
    hosts: Vec<String>,
    request_headers: Vec<String>,
    response_headers: Vec<String>,
    max_response_bytes: usize,
    max_request_bytes: usize,
    default_timeout: Duration,
    max_timeout: Duration,
    connect_timeout: Duration,
    max_redirects: usize,
    allow_private_addresses: bool,
    pinned: Vec<(String, Vec<IpAddr>)>,
    user_agent: String,
}

impl Default for HttpToolBuilder {
    fn default() -> Self {
        Self {
            hosts: Vec::new(),
            request_headers: ["accept", "accept-language", "content-type"]
                .map(String::from)
                .to_vec(),
            response_headers: vec!["content-type".to_string()],
            max_response_bytes: 1024 * 1024,
            max_request_bytes: 1024 * 1024,
            default_timeout: Duration::from_secs(30),
            max_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            max_redirects: 5,
            allow_private_addresses: false,
            pinned: Vec::new(),
            user_agent: concat!("wrangle-actors/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

impl HttpToolBuilder {
    /// Allows requests (and redirects) to `entry`: an exact host name (`api.example.com`),
    /// every subdomain of one (`*.example.com`, which does not match `example.com`
    /// itself), or an IP address (`203.0.113.7`, `[2001:db8::1]`), each with an optional
    /// port (`api.example.com:8443`). Without a port, only the scheme's default port (80
    /// for http, 443 for https) is allowed. Names are matched case-insensitively;
    /// internationalised names are written in punycode (`xn--...`).
    ///
    /// Being on the allowlist does not waive the address check: a host whose address is
    /// loopback, private, link-local or the like is still refused (see
    /// [`allow_private_addresses`](Self::allow_private_addresses)).
    pub fn allow_host(mut self, entry: impl Into<String>) -> Self {
        self.hosts.push(entry.into());
        self
    }

    /// Allows a task to set request header `name` (case-insensitive). Default `accept`,
    /// `accept-language`, `content-type`. Hop-by-hop and framing headers (`host`,
    /// `content-length`, `connection`, ...) cannot be allowed.
    ///
    /// Header values are never logged nor quoted in errors. reqwest drops `authorization`
    /// and `cookie` on a redirect to another host; other allowed headers follow a redirect
    /// to any host on the allowlist, so allow secret-bearing headers only when every host
    /// on it may see them.
    pub fn allow_header(mut self, name: impl Into<String>) -> Self {
        self.request_headers.push(name.into());
        self
    }

    /// Returns response header `name` in [`HttpToolOutput::headers`](super::HttpToolOutput)
    /// when the server sends it. Default `content-type` only: other headers (`set-cookie`)
    /// may carry secrets.
    pub fn return_header(mut self, name: impl Into<String>) -> Self {
        self.response_headers.push(name.into());
        self
    }

    /// How much of a response body is kept; reading stops there and the output says
    /// `truncated: true`. Default 1 MiB.
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// The largest request body (`body.text`, or `body.json` once encoded). Default 1 MiB.
    pub fn max_request_bytes(mut self, bytes: usize) -> Self {
        self.max_request_bytes = bytes;
        self
    }

    /// The time limit (connection, redirects and body read together) of a task that gives
    /// no `timeout_ms`. Default 30 s.
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// The largest `timeout_ms` a task may ask for. Default 5 minutes.
    pub fn max_timeout(mut self, timeout: Duration) -> Self {
        self.max_timeout = timeout;
        self
    }

    /// How long a TCP connection (and TLS handshake) may take. Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Most redirects followed per request; past it the task fails. Default 5; 0 refuses
    /// every redirect.
    pub fn max_redirects(mut self, redirects: usize) -> Self {
        self.max_redirects = redirects;
        self
    }

    /// Lets requests reach loopback, private (`10/8`, `172.16/12`, `192.168/16`),
    /// carrier-grade NAT (`100.64/10`) and unique-local (`fc00::/7`) addresses. Default
    /// false. For tests and setups whose allowlisted hosts are on a trusted internal
    /// network; link-local, cloud metadata, multicast and reserved addresses stay refused.
    pub fn allow_private_addresses(mut self, allow: bool) -> Self {
        self.allow_private_addresses = allow;
        self
    }

    /// Answers `host` with `addrs` instead of asking DNS (as curl's `--resolve`), for a
    /// fixed internal name or a test. The answers go through the same address check as any
    /// other.
    pub fn resolve(
        mut self,
        host: impl Into<String>,
        addrs: impl IntoIterator<Item = IpAddr>,
    ) -> Self {
        self.pinned.push((host.into(), addrs.into_iter().collect()));
        self
    }

    /// The `user-agent` sent. Default `wrangle-actors/<version>`.
    pub fn user_agent(mut self, agent: impl Into<String>) -> Self {
        self.user_agent = agent.into();
        self
    }

    /// Checks every setting and builds the tool with its HTTP client.
    pub fn build(self) -> Result<HttpTool, HttpToolConfigError> {
        let allowlist = Allowlist::parse(&self.hosts)?;
        if allowlist.is_empty() {
            return Err(HttpToolConfigError::NoHosts);
        }
        for (field, bytes) in [
            ("max_response_bytes", self.max_response_bytes),
            ("max_request_bytes", self.max_request_bytes),
        ] {
            if bytes == 0 {
                return Err(limit(field, "must be at least 1 byte"));
            }
        }
        for (field, t) in [
            ("default_timeout", self.default_timeout),
            ("max_timeout", self.max_timeout),
            ("connect_timeout", self.connect_timeout),
        ] {
            if t.is_zero() {
                return Err(limit(field, "must be longer than zero"));
            }
        }
        if self.default_timeout > self.max_timeout {
            return Err(limit(
                "default_timeout",
                "must not be longer than max_timeout",
            ));
        }
        let mut pinned = HashMap::new();
        for (host, addrs) in self.pinned {
            let name = domain(&host.to_ascii_lowercase()).map_err(|reason| {
                HttpToolConfigError::Resolve {
                    host: host.clone(),
                    reason,
                }
            })?;
            if addrs.is_empty() {
                let reason = "no addresses".to_string();
                return Err(HttpToolConfigError::Resolve { host, reason });
            }
            pinned.insert(name, addrs);
        }
        let mut request_headers = header_names(&self.request_headers)?;
        if let Some(managed) = request_headers
            .iter()
            .find(|h| MANAGED_HEADERS.contains(&h.as_str()) || h.as_str().starts_with("proxy-"))
        {
            return Err(HttpToolConfigError::Header {
                name: managed.to_string(),
                reason: "set by the client, a task may not set it".into(),
            });
        }
        request_headers.dedup();
        let mut response_headers = header_names(&self.response_headers)?;
        response_headers.dedup();

        let guard = Arc::new(Guard {
            allowlist,
            allow_private: self.allow_private_addresses,
            max_redirects: self.max_redirects,
            pinned,
        });
        let client = reqwest::Client::builder()
            // Nothing from the environment decides where requests go.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver(Arc::clone(&guard))))
            .redirect(guard.redirect_policy())
            .referer(false)
            .connect_timeout(self.connect_timeout)
            .user_agent(self.user_agent)
            .build()
            .map_err(HttpToolConfigError::Client)?;
        Ok(HttpTool {
            inner: Arc::new(Inner {
                client,
                guard,
                request_headers,
                response_headers,
                max_response_bytes: self.max_response_bytes,
                max_request_bytes: self.max_request_bytes,
                default_timeout: self.default_timeout,
                max_timeout: self.max_timeout,
            }),
        })
    }
}

fn limit(field: &'static str, reason: &str) -> HttpToolConfigError {
    HttpToolConfigError::Limit {
        field,
        reason: reason.to_string(),
    }
}

/// Parses header names, lowercased and sorted.
fn header_names(names: &[String]) -> Result<Vec<HeaderName>, HttpToolConfigError> {
    let mut parsed = names
        .iter()
        .map(|name| {
            HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes()).map_err(|_| {
                HttpToolConfigError::Header {
                    name: name.clone(),
                    reason: "not a valid header name".into(),
                }
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    parsed.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Ok(parsed)
}
