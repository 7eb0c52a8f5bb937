//! Per-client rate limiting, on the server itself.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request};
use dashmap::DashMap;

use super::error::ApiError;

/// Requests per second allowed to one client (an IPv4 address or an IPv6 /64), with a
/// burst allowance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second. Default 50,000.
    pub per_second: f64,
    /// Requests allowed in a burst. Default 100,000.
    pub burst: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_second: 50_000.0,
            burst: 100_000.0,
        }
    }
}

/// Most clients with a bucket of their own. While the table is full, newcomers share one
/// bucket (rate-limited together) until idle clients are swept out.
const MAX_CLIENTS: usize = 65_536;

/// Idle buckets are swept at most this often, so a flood of new addresses never costs a
/// scan of the table per request.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The bucket newcomers share while the table is full (no client has this key).
const OVERFLOW: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

/// The key a client is limited by: its IPv4 address, or its IPv6 /64 (one host usually holds
/// a whole /64, so a per-address key would let it take 2^64 buckets).
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

/// Token buckets by client.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    limit: RateLimit,
    max_clients: usize,
    buckets: DashMap<IpAddr, (f64, Instant)>,
    last_sweep: Mutex<Instant>,
    sweeps: AtomicU64,
}

impl RateLimiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        Self::with_max_clients(limit, MAX_CLIENTS)
    }

    fn with_max_clients(limit: RateLimit, max_clients: usize) -> Self {
        Self {
            limit,
            max_clients,
            buckets: DashMap::new(),
            last_sweep: Mutex::new(Instant::now()),
            sweeps: AtomicU64::new(0),
        }
    }

    /// Takes one token for the client at `ip`; false when its bucket is empty.
    pub(crate) fn allow(&self, ip: IpAddr) -> bool {
        self.allow_at(ip, Instant::now())
    }

    fn allow_at(&self, ip: IpAddr, now: Instant) -> bool {
        let client = client_key(ip);
        let key = if self.buckets.len() < self.max_clients || self.buckets.contains_key(&client) {
            client
        } else {
            self.sweep(now);
            if self.buckets.len() < self.max_clients {
                client
            } else {
                OVERFLOW
            }
        };
        let mut entry = self.buckets.entry(key).or_insert((self.limit.burst, now));
        let (tokens, last) = *entry;
        let refilled = (tokens
            + now.saturating_duration_since(last).as_secs_f64() * self.limit.per_second)
            .min(self.limit.burst);
        if refilled >= 1.0 {
            *entry = (refilled - 1.0, now);
            true
        } else {
            *entry = (refilled, now);
            false
        }
    }

    /// Forgets clients idle long enough for their bucket to be full again; at most once per
    /// `SWEEP_EVERY`, and by one caller at a time.
    fn sweep(&self, now: Instant) {
        let Ok(mut last) = self.last_sweep.try_lock() else {
            return;
        };
        if now.saturating_duration_since(*last) < SWEEP_EVERY && self.sweeps.load(Relaxed) > 0 {
            return;
        }
        *last = now;
        self.sweeps.fetch_add(1, Relaxed);
        let refill = self.limit.burst / self.limit.per_second.max(1e-9);
        self.buckets
            .retain(|_, (_, seen)| now.saturating_duration_since(*seen).as_secs_f64() < refill);
    }
}

/// Refuses (429) a request once its client passes its rate.
pub(crate) fn admit(limiter: &SharedLimiter, req: &Request) -> Result<(), ApiError> {
    if let Some(limiter) = limiter {
        let client = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        if !limiter.allow(client) {
            return Err(ApiError::RateLimited);
        }
    }
    Ok(())
}

/// Shared so tests can build a limiter of their own.
pub(crate) type SharedLimiter = Option<Arc<RateLimiter>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_refuses() {
        let l = RateLimiter::new(RateLimit {
            per_second: 0.001,
            burst: 3.0,
        });
        let ip = IpAddr::from([10, 0, 0, 1]);
        assert!(l.allow(ip) && l.allow(ip) && l.allow(ip));
        assert!(!l.allow(ip));
        assert!(
            l.allow(IpAddr::from([10, 0, 0, 2])),
            "buckets are per client"
        );
    }

    #[test]
    fn idle_clients_are_swept_at_most_once_a_second_and_newcomers_share_a_bucket() {
        let l = RateLimiter::with_max_clients(
            RateLimit {
                per_second: 1.0,
                burst: 2.0,
            },
            100,
        );
        let t0 = Instant::now();
        for i in 0..100u32 {
            assert!(l.allow_at(IpAddr::from(i.to_be_bytes()), t0));
        }
        // A flood of new addresses while everyone is active: one sweep, not one per request.
        let flood: Vec<IpAddr> = (1000..3000u32)
            .map(|i| IpAddr::from(i.to_be_bytes()))
            .collect();
        let allowed = flood.iter().filter(|ip| l.allow_at(**ip, t0)).count();
        assert_eq!(l.sweeps.load(Relaxed), 1);
        assert_eq!(
            allowed, 2,
            "newcomers share one bucket while the table is full"
        );
        assert_eq!(l.buckets.len(), 101);
        // Once the old clients are idle past their refill time, a sweep makes room.
        let later = t0 + Duration::from_secs(3);
        assert!(l.allow_at(IpAddr::from([9, 9, 9, 9]), later));
        assert_eq!(l.sweeps.load(Relaxed), 2);
        assert!(l.buckets.len() <= 2, "{}", l.buckets.len());
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(other));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(client_key(mapped), IpAddr::from([10, 0, 0, 1]));
        let l = RateLimiter::new(RateLimit {
            per_second: 0.001,
            burst: 2.0,
        });
        assert!(l.allow(a) && l.allow(b));
        assert!(
            !l.allow("2001:db8:1:2::99".parse().unwrap()),
            "one /64, one bucket"
        );
        assert!(l.allow(other));
    }
}
