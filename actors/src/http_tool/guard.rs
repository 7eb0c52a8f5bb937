//! Where [`HttpTool`](super::HttpTool) may connect: the URL check (scheme, userinfo, host
//! allowlist, IP literals), the resolver that refuses names resolving to an address the
//! classifier (module `address`) forbids, and the redirect policy that applies the same
//! checks to every hop.
//!
//! A name is checked where it is resolved, and the connection goes to exactly the addresses
//! checked (the resolver hands them to the connector), so a name whose DNS answer changes
//! between a check and the connection (DNS rebinding) cannot reach loopback, private,
//! link-local or metadata addresses. IP-literal URLs never reach a resolver, so
//! [`Guard::check_url`] classifies them itself.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::redirect::{Attempt, Policy};
use reqwest::Url;

use super::address::{classify, Forbidden};
use super::allowlist::Allowlist;

/// Why a request, or one of its redirects, was refused before it was sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum Refused {
    /// Not `http` or `https`.
    #[error("scheme `{0}` is not allowed (expected http or https)")]
    Scheme(String),
    /// `user:password@` in the URL.
    #[error("credentials in the URL (`user@host`) are not allowed")]
    Userinfo,
    /// No host at all.
    #[error("the URL has no host")]
    NoHost,
    /// The host (and port) is not on the allowlist.
    #[error("host `{0}` is not on the allowlist")]
    NotAllowed(String),
    /// An IP-literal host of a forbidden kind.
    #[error("{ip} is a {} address", kind.describe())]
    Literal {
        /// The address.
        ip: IpAddr,
        /// Its kind.
        kind: Forbidden,
    },
    /// A name that resolved to a forbidden address.
    #[error("`{host}` resolves to {ip}, a {} address", kind.describe())]
    Resolved {
        /// The name.
        host: String,
        /// The first forbidden address among its answers.
        ip: IpAddr,
        /// Its kind.
        kind: Forbidden,
    },
    /// A redirect from https to http.
    #[error("redirect from https to http")]
    Downgrade,
    /// A redirect whose target failed a check.
    #[error("redirect refused: {0}")]
    Redirect(Box<Refused>),
    /// A connection that ended up at a forbidden address all the same (a second check
    /// after the resolver's, on the connection's peer).
    #[error("connected to {ip}, a {} address", kind.describe())]
    Connected {
        /// The peer's address.
        ip: IpAddr,
        /// Its kind.
        kind: Forbidden,
    },
    /// Past the redirect limit.
    #[error("more than {0} redirects")]
    TooManyRedirects(usize),
}

/// The checks every URL, address and redirect goes through.
#[derive(Debug)]
pub(super) struct Guard {
    /// The hosts (and ports) requests may go to.
    pub(super) allowlist: Allowlist,
    /// Lets loopback, private, shared-NAT and unique-local addresses through.
    pub(super) allow_private: bool,
    /// Most redirects followed per request.
    pub(super) max_redirects: usize,
    /// Names answered without DNS (still classified).
    pub(super) pinned: HashMap<String, Vec<IpAddr>>,
}

impl Guard {
    /// Checks `ip` against the classifier, honouring `allow_private`.
    pub(super) fn check_ip(&self, ip: IpAddr) -> Result<(), Forbidden> {
        match classify(ip) {
            Some(kind) if !(self.allow_private && kind.is_private()) => Err(kind),
            _ => Ok(()),
        }
    }

    /// Checks a URL before it is requested: scheme, userinfo, allowlist, and the address of
    /// an IP-literal host (which no resolver sees).
    pub(super) fn check_url(&self, url: &Url) -> Result<(), Refused> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refused::Scheme(url.scheme().to_string()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refused::Userinfo);
        }
        let host = url.host().ok_or(Refused::NoHost)?;
        if !self.allowlist.permits(url) {
            return Err(Refused::NotAllowed(host_port(url)));
        }
        let literal = match host {
            url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            url::Host::Domain(_) => None,
        };
        if let Some(ip) = literal {
            self.check_ip(ip)
                .map_err(|kind| Refused::Literal { ip, kind })?;
        }
        Ok(())
    }

    /// The redirect policy: at most `max_redirects` hops, never from https to http, and
    /// every target through [`Guard::check_url`]. Anything else is an error, not a stop:
    /// the caller learns why.
    pub(super) fn redirect_policy(self: &Arc<Self>) -> Policy {
        let guard = Arc::clone(self);
        Policy::custom(move |attempt: Attempt<'_>| {
            // `previous` holds the first URL and every redirect followed so far.
            if attempt.previous().len() > guard.max_redirects {
                return attempt.error(Refused::TooManyRedirects(guard.max_redirects));
            }
            let next = attempt.url();
            let downgrade = next.scheme() == "http"
                && attempt.previous().last().map(Url::scheme) == Some("https");
            let checked = if downgrade {
                Err(Refused::Downgrade)
            } else {
                guard.check_url(next)
            };
            match checked {
                Ok(()) => attempt.follow(),
                Err(reason) => attempt.error(Refused::Redirect(Box::new(reason))),
            }
        })
    }
}

/// `host:port` of `url`, for messages (never its path or query).
pub(super) fn host_port(url: &Url) -> String {
    match (url.host_str(), url.port_or_known_default()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_string(),
        (None, _) => String::new(),
    }
}

/// Resolves names with the system resolver (or the pinned answers) and refuses the lot
/// when any answer is a forbidden address: a name that points at an internal address is
/// not trusted with its other answers either.
#[derive(Debug)]
pub(super) struct GuardedResolver(pub(super) Arc<Guard>);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = Arc::clone(&self.0);
        let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = match guard.pinned.get(&host) {
                // Port 0: the connector puts the URL's port in.
                Some(ips) => ips.iter().map(|ip| SocketAddr::new(*ip, 0)).collect(),
                None => tokio::net::lookup_host((host.as_str(), 0)).await?.collect(),
            };
            if addrs.is_empty() {
                return Err(format!("`{host}` has no addresses").into());
            }
            for addr in &addrs {
                if let Err(kind) = guard.check_ip(addr.ip()) {
                    // Boxed as itself (not a box in a box), so a caller can downcast it.
                    let refused: Box<dyn std::error::Error + Send + Sync> =
                        Box::new(Refused::Resolved {
                            host,
                            ip: addr.ip(),
                            kind,
                        });
                    return Err(refused);
                }
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(allow_private: bool) -> Guard {
        Guard {
            allowlist: Allowlist::parse([
                "api.example.com",
                "*.example.org",
                "127.0.0.1:8080",
                "[::1]",
                "169.254.169.254",
            ])
            .unwrap(),
            allow_private,
            max_redirects: 3,
            pinned: HashMap::new(),
        }
    }

    fn check(guard: &Guard, url: &str) -> Result<(), Refused> {
        guard.check_url(&Url::parse(url).unwrap())
    }

    #[test]
    fn private_addresses_pass_only_when_allowed_and_metadata_never() {
        let (strict, open) = (guard(false), guard(true));
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "fd00::1",
            "100.64.0.1",
            "::ffff:192.168.0.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(strict.check_ip(ip).is_err(), "{ip}");
            assert_eq!(open.check_ip(ip), Ok(()), "{ip}");
        }
        for ip in [
            "169.254.169.254",
            "169.254.1.1",
            "fe80::1",
            "0.0.0.0",
            "224.0.0.1",
            "fd00:ec2::254",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(open.check_ip(ip).is_err(), "{ip}");
        }
    }

    #[test]
    fn urls_are_checked_before_any_connection() {
        let g = guard(false);
        assert_eq!(check(&g, "https://api.example.com/x?y=1"), Ok(()));
        assert_eq!(check(&g, "https://a.b.example.org/"), Ok(()));
        assert_eq!(
            check(&g, "ftp://api.example.com/"),
            Err(Refused::Scheme("ftp".into()))
        );
        assert_eq!(
            check(&g, "https://user:pw@api.example.com/"),
            Err(Refused::Userinfo)
        );
        assert_eq!(
            check(&g, "https://user@api.example.com/"),
            Err(Refused::Userinfo)
        );
        assert_eq!(
            check(&g, "https://evil.com/"),
            Err(Refused::NotAllowed("evil.com:443".into()))
        );
        // On the allowlist, refused for its address.
        assert!(matches!(
            check(&g, "http://127.0.0.1:8080/"),
            Err(Refused::Literal {
                kind: Forbidden::Loopback,
                ..
            })
        ));
        assert!(matches!(
            check(&g, "http://[::1]/"),
            Err(Refused::Literal {
                kind: Forbidden::Loopback,
                ..
            })
        ));
        assert!(matches!(
            check(&g, "http://169.254.169.254/"),
            Err(Refused::Literal {
                kind: Forbidden::Metadata,
                ..
            })
        ));
        // Other spellings of an address are normalised by the URL parser first.
        assert!(matches!(
            check(&g, "http://0x7f.0.0.1:8080/"),
            Err(Refused::Literal {
                kind: Forbidden::Loopback,
                ..
            })
        ));
        assert_eq!(check(&guard(true), "http://127.0.0.1:8080/"), Ok(()));
        assert!(check(&guard(true), "http://169.254.169.254/").is_err());
    }

    #[tokio::test]
    async fn the_resolver_refuses_a_name_with_any_forbidden_answer() {
        let mut g = guard(false);
        g.pinned.insert(
            "rebind.example.com".into(),
            vec![
                "93.184.216.34".parse().unwrap(),
                "10.0.0.7".parse().unwrap(),
            ],
        );
        g.pinned.insert(
            "ok.example.com".into(),
            vec!["93.184.216.34".parse().unwrap()],
        );
        let resolver = GuardedResolver(Arc::new(g));
        let err = resolver
            .resolve("rebind.example.com".parse().unwrap())
            .await
            .err()
            .expect("refused");
        let refused = err.downcast_ref::<Refused>().expect("a refusal");
        assert!(matches!(
            refused,
            Refused::Resolved {
                kind: Forbidden::Private,
                ..
            }
        ));
        let addrs: Vec<_> = resolver
            .resolve("ok.example.com".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert_eq!(addrs, vec!["93.184.216.34:0".parse().unwrap()]);
    }
}
