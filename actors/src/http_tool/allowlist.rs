//! The host allowlist of [`HttpTool`](super::HttpTool): exact names, `*.suffix` patterns
//! and IP addresses, each on one port (the scheme's default unless given).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use reqwest::Url;

use super::config::HttpToolConfigError;

/// The hosts (with ports) requests may go to.
#[derive(Clone, Debug)]
pub(super) struct Allowlist(Vec<HostRule>);

/// One allowlist entry.
#[derive(Clone, Debug, PartialEq, Eq)]
struct HostRule {
    host: HostMatch,
    /// The one port allowed; `None` for the scheme's default port.
    port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostMatch {
    /// Exactly this name.
    Name(String),
    /// Names ending in this suffix (which starts with a dot).
    Suffix(String),
    /// This address.
    Ip(IpAddr),
}

impl Allowlist {
    /// Parses entries as [`HttpToolBuilder::allow_host`](super::HttpToolBuilder::allow_host) describes them.
    pub(super) fn parse<S: AsRef<str>>(
        entries: impl IntoIterator<Item = S>,
    ) -> Result<Self, HttpToolConfigError> {
        entries
            .into_iter()
            .map(|entry| {
                let entry = entry.as_ref();
                host_rule(entry).map_err(|reason| HttpToolConfigError::Host {
                    entry: entry.to_string(),
                    reason,
                })
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// True when nothing is allowed.
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when `url`'s host and port match an entry.
    pub(super) fn permits(&self, url: &Url) -> bool {
        let Some(port) = url.port_or_known_default() else {
            return false;
        };
        let host = match url.host() {
            Some(url::Host::Domain(name)) => {
                HostMatch::Name(name.trim_end_matches('.').to_ascii_lowercase())
            }
            Some(url::Host::Ipv4(ip)) => HostMatch::Ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => HostMatch::Ip(IpAddr::V6(ip)),
            None => return false,
        };
        self.0.iter().any(|rule| {
            // The URL parser drops a port that is the scheme's default.
            let port_ok = rule.port.map_or(url.port().is_none(), |p| p == port);
            let host_ok = match (&rule.host, &host) {
                (HostMatch::Suffix(suffix), HostMatch::Name(name)) => {
                    name.len() > suffix.len() && name.ends_with(suffix.as_str())
                }
                (rule, host) => rule == host,
            };
            port_ok && host_ok
        })
    }
}

fn host_rule(entry: &str) -> Result<HostRule, String> {
    let entry = entry.trim().to_ascii_lowercase();
    if entry.is_empty() {
        return Err("empty".into());
    }
    if entry.contains("://") || entry.contains(['/', '@', '?', '#']) {
        return Err("expected a host, `*.domain` or `host:port`, not a URL".into());
    }
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let (ip, after) = rest.split_once(']').ok_or("unclosed `[`")?;
        let ip: Ipv6Addr = ip.parse().map_err(|_| "not an IPv6 address in `[...]`")?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or("expected `:port` after `]`")?,
            ),
        };
        (HostMatch::Ip(IpAddr::V6(ip)), port)
    } else if let Ok(ip) = entry.parse::<Ipv6Addr>() {
        (HostMatch::Ip(IpAddr::V6(ip)), None)
    } else {
        let (host, port) = match entry.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (entry.as_str(), None),
        };
        let host = if let Ok(ip) = host.parse::<Ipv4Addr>() {
            HostMatch::Ip(IpAddr::V4(ip))
        } else if let Some(suffix) = host.strip_prefix("*.") {
            HostMatch::Suffix(format!(".{}", domain(suffix)?))
        } else {
            HostMatch::Name(domain(host)?)
        };
        (host, port)
    };
    let port = match port {
        None => None,
        Some(port) => match port.parse::<u16>() {
            Ok(p) if p > 0 => Some(p),
            _ => return Err(format!("port `{port}` is not 1 to 65535")),
        },
    };
    Ok(HostRule { host, port })
}

/// Checks a lowercase DNS name (a trailing dot is dropped) and returns it.
pub(super) fn domain(name: &str) -> Result<String, String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return Err("a host name is 1 to 253 characters".into());
    }
    for label in name.split('.') {
        let chars_ok = label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if label.is_empty() || label.len() > 63 || !chars_ok {
            return Err(format!(
                "`{name}` is not a host name (letters, digits, `-` and `_` in dot-separated \
                 labels; `*` only as a leading `*.`; punycode for international names)"
            ));
        }
    }
    if name
        .rsplit('.')
        .next()
        .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!(
            "`{name}` is neither a host name nor a full IPv4 address"
        ));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn permits(entries: &[&str], url: &str) -> bool {
        Allowlist::parse(entries)
            .unwrap()
            .permits(&Url::parse(url).unwrap())
    }

    #[test]
    fn hosts_match_exactly_by_suffix_or_address_on_their_port() {
        assert!(permits(&["api.example.com"], "https://API.example.com./v1"));
        assert!(permits(&["api.example.com"], "http://api.example.com:80/"));
        assert!(!permits(
            &["api.example.com"],
            "https://api.example.com:8443/"
        ));
        assert!(!permits(&["api.example.com"], "https://example.com/"));
        assert!(!permits(
            &["api.example.com"],
            "https://api.example.com.evil.com/"
        ));
        assert!(permits(
            &["api.example.com:8443"],
            "https://api.example.com:8443/"
        ));
        assert!(!permits(
            &["api.example.com:8443"],
            "https://api.example.com/"
        ));
        assert!(permits(&["*.example.com"], "https://a.b.example.com/"));
        assert!(!permits(&["*.example.com"], "https://example.com/"));
        assert!(!permits(&["*.example.com"], "https://badexample.com/"));
        assert!(permits(&["203.0.113.7"], "http://203.0.113.7/"));
        assert!(permits(&["[2001:db8::1]:81"], "http://[2001:db8::1]:81/"));
        assert!(permits(&["2001:db8::1"], "https://[2001:db8::1]/"));
        assert!(!permits(&["203.0.113.7"], "http://203.0.113.8/"));
    }

    #[test]
    fn bad_entries_are_refused_naming_them() {
        for entry in [
            "",
            "https://api.example.com",
            "user@api.example.com",
            "api.example.com/path",
            "api.example.com:0",
            "api.example.com:http",
            "*",
            "*example.com",
            "api.*.com",
            "exämple.com",
            "1.2.3",
            "[::1",
        ] {
            let err = Allowlist::parse([entry]).expect_err(entry).to_string();
            assert!(err.starts_with("hosts: "), "{entry}: {err}");
        }
    }
}
