//! Token buckets for [`Chat`](super::Chat): requests and tokens per minute, one pair per
//! node and model. A call takes one request and its estimated tokens (prompt bytes / 4 +
//! `max_tokens`) before it is sent; once the answer says how many it used, the difference
//! is settled, so a bucket may go into debt and the next calls wait it off. A call that
//! would wait longer than the limit's `max_wait` is not held in a worker: it fails
//! retryably with a `retry_after`, and the queue brings it back then.
//!
//! Written here rather than taken from `governor`: its GCRA cells cannot be refunded or
//! charged after the fact, and token limits are only known once the answer is in.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Limits on calls to one model on one node; `None` fields are unlimited.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Requests per minute.
    pub requests_per_minute: Option<u32>,
    /// Prompt plus completion tokens per minute.
    pub tokens_per_minute: Option<u32>,
    /// Longest a call waits for its turn in the worker (default 10 s); a longer wait
    /// becomes a retryable error with `retry_after`.
    pub max_wait: Duration,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            requests_per_minute: None,
            tokens_per_minute: None,
            max_wait: Duration::from_secs(10),
        }
    }
}

/// One bucket: a balance refilled at `per_minute / 60` per second up to `per_minute`.
#[derive(Debug)]
struct Bucket {
    per_minute: f64,
    balance: f64,
    at: Instant,
}

impl Bucket {
    fn new(per_minute: u32, now: Instant) -> Self {
        Self {
            per_minute: per_minute as f64,
            balance: per_minute as f64,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        self.balance = (self.balance + secs * self.per_minute / 60.0).min(self.per_minute);
        self.at = now;
    }

    /// How long until `amount` is there (zero when it is). An amount larger than the
    /// whole bucket waits for a full one.
    fn wait_for(&self, amount: f64) -> Duration {
        let need = amount.min(self.per_minute) - self.balance;
        if need <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(need * 60.0 / self.per_minute)
        }
    }
}

#[derive(Debug, Default)]
struct Buckets {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
}

/// The buckets of every node and model a [`Chat`](super::Chat) has called.
#[derive(Debug, Default)]
pub(crate) struct Limiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<(String, String), Buckets>>,
}

/// Most node and model pairs tracked; beyond it the fullest buckets are forgotten.
const MAX_KEYS: usize = 10_000;

impl Limiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::default(),
        }
    }

    pub(crate) fn limited(&self) -> bool {
        self.limit.requests_per_minute.is_some() || self.limit.tokens_per_minute.is_some()
    }

    /// Takes one request and `tokens` for `(node, model)` now, or says how long to wait
    /// for them (nothing is taken then).
    pub(crate) fn try_take(
        &self,
        node: &str,
        model: &str,
        tokens: u64,
        now: Instant,
    ) -> Result<(), Duration> {
        let mut all = self.buckets.lock().expect("buckets");
        if all.len() >= MAX_KEYS && !all.contains_key(&(node.to_string(), model.to_string())) {
            all.retain(|_, b| {
                b.requests
                    .as_ref()
                    .is_some_and(|r| r.balance < r.per_minute)
                    || b.tokens.as_ref().is_some_and(|t| t.balance < t.per_minute)
            });
        }
        let b = all
            .entry((node.to_string(), model.to_string()))
            .or_insert_with(|| Buckets {
                requests: self.limit.requests_per_minute.map(|n| Bucket::new(n, now)),
                tokens: self.limit.tokens_per_minute.map(|n| Bucket::new(n, now)),
            });
        let mut wait = Duration::ZERO;
        if let Some(r) = &mut b.requests {
            r.refill(now);
            wait = wait.max(r.wait_for(1.0));
        }
        if let Some(t) = &mut b.tokens {
            t.refill(now);
            wait = wait.max(t.wait_for(tokens as f64));
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        if let Some(r) = &mut b.requests {
            r.balance -= 1.0;
        }
        if let Some(t) = &mut b.tokens {
            t.balance -= tokens as f64;
        }
        Ok(())
    }

    /// Settles a call that took `estimated` tokens and used `used`.
    pub(crate) fn settle(&self, node: &str, model: &str, estimated: u64, used: u64) {
        let mut all = self.buckets.lock().expect("buckets");
        if let Some(t) = all
            .get_mut(&(node.to_string(), model.to_string()))
            .and_then(|b| b.tokens.as_mut())
        {
            t.balance = (t.balance + estimated as f64 - used as f64).min(t.per_minute);
        }
    }

    /// Waits for a turn of `(node, model)` while the wait is within `max_wait`; answers
    /// the wait it would need otherwise.
    pub(crate) async fn take(&self, node: &str, model: &str, tokens: u64) -> Result<(), Duration> {
        loop {
            match self.try_take(node, model, tokens, Instant::now()) {
                Ok(()) => return Ok(()),
                Err(wait) if wait > self.limit.max_wait => return Err(wait),
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(requests: Option<u32>, tokens: Option<u32>) -> Limiter {
        Limiter::new(RateLimit {
            requests_per_minute: requests,
            tokens_per_minute: tokens,
            max_wait: Duration::from_secs(10),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn requests_per_minute_refill_steadily() {
        let l = limiter(Some(60), None);
        let t0 = Instant::now();
        for _ in 0..60 {
            l.try_take("n", "m", 0, t0).unwrap();
        }
        // Empty: one more request comes after a second.
        assert_eq!(l.try_take("n", "m", 0, t0), Err(Duration::from_secs(1)));
        l.try_take("n", "m", 0, t0 + Duration::from_secs(1))
            .unwrap();
        // Other models and nodes have buckets of their own.
        l.try_take("n", "other", 0, t0).unwrap();
        l.try_take("n2", "m", 0, t0).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_estimated_then_settled_and_may_go_into_debt() {
        let l = limiter(None, Some(600));
        let t0 = Instant::now();
        l.try_take("n", "m", 500, t0).unwrap();
        // The call used 800: 200 of debt to wait off at 10 tokens a second.
        l.settle("n", "m", 500, 800);
        assert_eq!(l.try_take("n", "m", 100, t0), Err(Duration::from_secs(30)));
        // A call larger than the bucket waits for a full one, not forever.
        assert_eq!(
            l.try_take("n", "m", 10_000, t0),
            Err(Duration::from_secs(80))
        );
        l.try_take("n", "m", 100, t0 + Duration::from_secs(30))
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn take_waits_short_turns_and_refuses_long_ones() {
        let l = limiter(Some(6), None);
        let t0 = Instant::now();
        for _ in 0..6 {
            l.take("n", "m", 0).await.unwrap();
        }
        // The next turn is 10 s away: within max_wait, so it waits (in paused time).
        l.take("n", "m", 0).await.unwrap();
        assert_eq!(Instant::now() - t0, Duration::from_secs(10));
        let l = limiter(Some(1), None);
        l.take("n", "m", 0).await.unwrap();
        assert_eq!(l.take("n", "m", 0).await, Err(Duration::from_secs(60)));
    }

    #[test]
    fn unlimited_limiters_say_so() {
        assert!(!Limiter::new(RateLimit::default()).limited());
        assert!(limiter(Some(1), None).limited());
    }
}
