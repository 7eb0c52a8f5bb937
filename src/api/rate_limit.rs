//! Per-client rate limiting, on the server itself.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;

use super::error::ApiError;
use super::ApiState;

/// Requests per second allowed to one client (by IP address), with a burst allowance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second. Default 20,000.
    pub per_second: f64,
    /// Requests allowed in a burst. Default 40,000.
    pub burst: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_second: 20_000.0,
            burst: 40_000.0,
        }
    }
}

/// Past this many clients, idle ones are forgotten before a new one is added.
const MAX_CLIENTS: usize = 10_000;

/// Token buckets by client address.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    limit: RateLimit,
    buckets: DashMap<IpAddr, (f64, Instant)>,
}

impl RateLimiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: DashMap::new(),
        }
    }

    /// Takes one token for `client`; false when its bucket is empty.
    pub(crate) fn allow(&self, client: IpAddr) -> bool {
        let now = Instant::now();
        if self.buckets.len() >= MAX_CLIENTS && !self.buckets.contains_key(&client) {
            // Forget clients idle long enough for their bucket to be full again.
            let refill =
                Duration::from_secs_f64(self.limit.burst / self.limit.per_second.max(1e-9));
            self.buckets
                .retain(|_, (_, last)| now.duration_since(*last) < refill);
        }
        let mut entry = self
            .buckets
            .entry(client)
            .or_insert((self.limit.burst, now));
        let (tokens, last) = *entry;
        let refilled = (tokens + now.duration_since(last).as_secs_f64() * self.limit.per_second)
            .min(self.limit.burst);
        if refilled >= 1.0 {
            *entry = (refilled - 1.0, now);
            true
        } else {
            *entry = (refilled, now);
            false
        }
    }
}

/// Answers 429 once a client passes its rate.
pub(crate) async fn rate_limit(
    State(state): State<ApiState>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(limiter) = &state.limiter {
        let client = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        if !limiter.allow(client) {
            return ApiError::RateLimited.into_response();
        }
    }
    next.run(req).await
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
    fn idle_clients_are_forgotten_past_the_limit() {
        let l = RateLimiter::new(RateLimit {
            per_second: 1e9,
            burst: 1.0,
        });
        for i in 0..MAX_CLIENTS as u32 {
            assert!(l.allow(IpAddr::from(i.to_be_bytes())));
        }
        assert_eq!(l.buckets.len(), MAX_CLIENTS);
        // Their buckets refill in a nanosecond: all idle, all forgotten for the newcomer.
        std::thread::sleep(Duration::from_millis(1));
        assert!(l.allow(IpAddr::from([255, 255, 255, 255])));
        assert_eq!(l.buckets.len(), 1);
    }
}
