//! A compute node's circuit breaker, as a pure state machine: time comes in as arguments,
//! so its tests need no sleeps, and the node's state (`state`) holds it behind a mutex.
//!
//! - **Closed**: requests go through. `failures` node faults in a row, or a failure rate of
//!   at least `failure_rate` over the last `window` once it holds `min_requests` requests,
//!   open it. Failed health checks count in the row (not in the rate); a passing one ends
//!   the row.
//! - **Open**: requests are refused at once, retryably, until the cool-down ends. The
//!   cool-down is `open_for`, doubled each time a half-open breaker opens again, up to
//!   `max_open_for`; closing resets it. While the node's health checks fail (it tripped on
//!   a failed check, or one failed since), the end of the cool-down is not enough: no real
//!   request is spent on a node known to be unreachable, and the first passing check moves
//!   the breaker to half-open at once, cool-down or not.
//! - **HalfOpen**: `probes` requests (1 by default) go through at once, the rest are refused.
//!   A probe that succeeds closes the breaker, one that fails (or a failed check) opens it
//!   again. Health checks alone never close it: the probe is a real request.
//!
//! What counts: [`Outcome::Failure`] for node faults (unreachable, timed out, HTTP 5xx),
//! [`Outcome::Success`] for an answer, even a refusal (HTTP 4xx: the node works, the request
//! was wrong), [`Outcome::Ignored`] for what says nothing about the node (a 429, a broken
//! stream, a caller that went away).
//!
//! Hand-written rather than taken from `failsafe` or `tower-resilience`: failsafe's
//! half-open state lets every call through, its clock is its own and its state cannot be
//! read (no remaining cool-down for `Retry-After`, no trip count for the API), and
//! tower-resilience's breaker is a tower `Layer` around a `Service`, while a node's requests
//! are plain calls shared by concurrent callers that take a slot after the breaker's leave.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

/// Buckets the failure-rate window is kept in: outcomes older than the window leave it a
/// bucket (a tenth of the window) at a time.
const BUCKETS: u32 = 10;

/// When a breaker opens and how long it stays open (from
/// [`ComputeConfig`](super::ComputeConfig)).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Policy {
    /// Failures in a row that open it.
    pub(crate) failures: u32,
    /// Failed share of the window's requests that opens it (0 < rate ≤ 1).
    pub(crate) failure_rate: f64,
    /// Requests the window must hold before its rate counts.
    pub(crate) min_requests: u32,
    /// How far back the failure rate looks.
    pub(crate) window: Duration,
    /// The first cool-down.
    pub(crate) open_for: Duration,
    /// The longest cool-down.
    pub(crate) max_open_for: Duration,
    /// Requests let through at once while half-open.
    pub(crate) probes: u32,
}

impl Policy {
    pub(crate) fn from_config(c: &super::ComputeConfig) -> Self {
        Self {
            failures: c.unhealthy_after,
            failure_rate: c.breaker_failure_rate,
            min_requests: c.breaker_min_requests,
            window: c.breaker_window,
            open_for: c.breaker_open_for,
            max_open_for: c.breaker_max_open_for.max(c.breaker_open_for),
            probes: c.breaker_probes,
        }
    }
}

/// A circuit breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Requests go through; failures are counted.
    Closed,
    /// Requests are refused at once (retryably) until the cool-down ends.
    Open,
    /// A bounded number of probe requests go through: success closes, failure reopens.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// 0 closed, 1 open, 2 half-open (the metrics' value).
    pub fn code(self) -> u64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }
}

/// How a request or a check ended, as the breaker counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The node answered.
    Success,
    /// The node is at fault.
    Failure,
    /// Says nothing about the node (a probe's leave is given back).
    Ignored,
}

/// Leave to send one request, from [`Breaker::admit`]; its outcome goes back to
/// [`Breaker::record`]. Leave taken before a change of state does not count after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ticket {
    epoch: u64,
    probe: bool,
}

impl Ticket {
    /// Whether it is a half-open breaker's probe.
    pub(crate) fn is_probe(self) -> bool {
        self.probe
    }
}

/// Why a breaker last opened.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Trip {
    /// Node faults and failed checks in a row.
    InARow(u32),
    /// The failed share of the window's requests.
    Rate {
        /// Failed share.
        rate: f64,
        /// Requests in the window.
        requests: u32,
    },
    /// The half-open probe failed.
    ProbeFailed,
    /// A health check failed while half-open.
    CheckFailed,
}

impl fmt::Display for Trip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InARow(n) => write!(f, "{n} failures in a row"),
            Self::Rate { rate, requests } => write!(
                f,
                "{:.0}% of the last {requests} requests failed",
                rate * 100.0
            ),
            Self::ProbeFailed => f.write_str("the half-open probe failed"),
            Self::CheckFailed => f.write_str("a health check failed while half-open"),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum State {
    Closed,
    Open {
        until: Instant,
        /// Its health checks fail: only a passing one ends the open state.
        unreachable: bool,
    },
    HalfOpen {
        /// Probes running.
        probing: u32,
    },
}

/// What a breaker shows, read at one instant.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Snapshot {
    pub(crate) state: BreakerState,
    pub(crate) consecutive_failures: u32,
    pub(crate) window_requests: u32,
    pub(crate) window_failures: u32,
    /// How long ago it opened (open or half-open).
    pub(crate) opened_ago: Option<Duration>,
    /// How long until the cool-down ends (open only; zero once over).
    pub(crate) retry_in: Option<Duration>,
    /// Open and waiting for a passing health check.
    pub(crate) waiting_for_check: bool,
    pub(crate) trips: u64,
    pub(crate) last_trip: Option<Trip>,
    /// The cool-down of the next opening.
    pub(crate) cool_down: Duration,
}

/// One node's breaker.
#[derive(Clone, Debug)]
pub(crate) struct Breaker {
    policy: Policy,
    state: State,
    /// Bumped at every change of state: tickets of an older state do not count.
    epoch: u64,
    consecutive: u32,
    window: Window,
    /// The next opening's cool-down.
    cool_down: Duration,
    trips: u64,
    last_trip: Option<Trip>,
    /// When it last opened (kept through half-open, for display).
    opened_at: Option<Instant>,
}

impl Breaker {
    pub(crate) fn new(policy: Policy) -> Self {
        Self {
            window: Window::new(policy.window),
            cool_down: policy.open_for,
            policy,
            state: State::Closed,
            epoch: 0,
            consecutive: 0,
            trips: 0,
            last_trip: None,
            opened_at: None,
        }
    }

    /// Its state as last changed, without looking at the time.
    pub(crate) fn current(&self) -> BreakerState {
        match self.state {
            State::Closed => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Its state at `now`: an open breaker whose cool-down is over (and whose node passes
    /// its checks) is half-open.
    pub(crate) fn state(&mut self, now: Instant) -> BreakerState {
        self.tick(now);
        self.current()
    }

    /// Whether a request would be let through now (without taking leave).
    pub(crate) fn admits(&mut self, now: Instant) -> bool {
        self.tick(now);
        match self.state {
            State::Closed => true,
            State::Open { .. } => false,
            State::HalfOpen { probing } => probing < self.policy.probes,
        }
    }

    /// Leave to send a request now, or how long until it may be worth asking again
    /// (`None`: no telling, such as while probes run or while the node fails its checks).
    pub(crate) fn admit(&mut self, now: Instant) -> Result<Ticket, Option<Duration>> {
        self.tick(now);
        match &mut self.state {
            State::Closed => Ok(Ticket {
                epoch: self.epoch,
                probe: false,
            }),
            State::Open { until, .. } => {
                let left = until.saturating_duration_since(now);
                Err((!left.is_zero()).then_some(left))
            }
            State::HalfOpen { probing } => {
                if *probing < self.policy.probes {
                    *probing += 1;
                    Ok(Ticket {
                        epoch: self.epoch,
                        probe: true,
                    })
                } else {
                    Err(None)
                }
            }
        }
    }

    /// How the request of `ticket` ended.
    pub(crate) fn record(&mut self, ticket: Ticket, outcome: Outcome, now: Instant) {
        if ticket.epoch != self.epoch {
            return;
        }
        match (&mut self.state, ticket.probe) {
            (State::Closed, false) => match outcome {
                Outcome::Success => {
                    self.consecutive = 0;
                    self.window.add(now, false);
                }
                Outcome::Failure => {
                    self.consecutive = self.consecutive.saturating_add(1);
                    self.window.add(now, true);
                    if self.consecutive >= self.policy.failures {
                        self.open(now, Trip::InARow(self.consecutive), false);
                    } else {
                        let (requests, failed) = self.window.counts(now);
                        let rate = f64::from(failed) / f64::from(requests.max(1));
                        if requests >= self.policy.min_requests && rate >= self.policy.failure_rate
                        {
                            self.open(now, Trip::Rate { rate, requests }, false);
                        }
                    }
                }
                Outcome::Ignored => {}
            },
            (State::HalfOpen { probing }, true) => {
                *probing = probing.saturating_sub(1);
                match outcome {
                    Outcome::Success => self.close(),
                    Outcome::Failure => {
                        self.consecutive = self.consecutive.saturating_add(1);
                        self.reopen(now, Trip::ProbeFailed, false);
                    }
                    Outcome::Ignored => {}
                }
            }
            _ => {}
        }
    }

    /// A health check passed: ends the row of failures, and ends the open state of a
    /// node that was failing its checks.
    pub(crate) fn check_passed(&mut self, now: Instant) {
        self.consecutive = 0;
        if let State::Open {
            unreachable: true, ..
        } = self.state
        {
            self.half_open();
        }
        self.tick(now);
    }

    /// A health check failed: one more in the row; an open breaker waits for a passing
    /// check; a half-open one opens again.
    pub(crate) fn check_failed(&mut self, now: Instant) {
        self.consecutive = self.consecutive.saturating_add(1);
        match &mut self.state {
            State::Closed => {
                if self.consecutive >= self.policy.failures {
                    self.open(now, Trip::InARow(self.consecutive), true);
                }
            }
            State::Open { unreachable, .. } => *unreachable = true,
            State::HalfOpen { .. } => self.reopen(now, Trip::CheckFailed, true),
        }
    }

    pub(crate) fn snapshot(&mut self, now: Instant) -> Snapshot {
        let state = self.state(now);
        let (window_requests, window_failures) = self.window.counts(now);
        let (retry_in, waiting_for_check) = match self.state {
            State::Open {
                until, unreachable, ..
            } => (Some(until.saturating_duration_since(now)), unreachable),
            _ => (None, false),
        };
        Snapshot {
            state,
            consecutive_failures: self.consecutive,
            window_requests,
            window_failures,
            opened_ago: match state {
                BreakerState::Closed => None,
                _ => self.opened_at.map(|at| now.saturating_duration_since(at)),
            },
            retry_in,
            waiting_for_check,
            trips: self.trips,
            last_trip: self.last_trip.clone(),
            cool_down: self.cool_down,
        }
    }

    /// An open breaker whose cool-down is over, on a node that passes its checks, is
    /// half-open.
    fn tick(&mut self, now: Instant) {
        if let State::Open {
            until,
            unreachable: false,
            ..
        } = self.state
        {
            if now >= until {
                self.half_open();
            }
        }
    }

    fn open(&mut self, now: Instant, why: Trip, unreachable: bool) {
        self.trips += 1;
        self.epoch += 1;
        self.last_trip = Some(why);
        self.opened_at = Some(now);
        self.state = State::Open {
            until: now + self.cool_down,
            unreachable,
        };
    }

    /// Opens a half-open breaker again, with a longer cool-down.
    fn reopen(&mut self, now: Instant, why: Trip, unreachable: bool) {
        self.cool_down = self
            .cool_down
            .saturating_mul(2)
            .min(self.policy.max_open_for);
        self.open(now, why, unreachable);
    }

    fn half_open(&mut self) {
        self.epoch += 1;
        self.state = State::HalfOpen { probing: 0 };
    }

    fn close(&mut self) {
        self.epoch += 1;
        self.state = State::Closed;
        self.consecutive = 0;
        self.window.clear();
        self.cool_down = self.policy.open_for;
    }
}

/// Outcomes of the last `span`, in buckets of a tenth of it.
#[derive(Clone, Debug)]
struct Window {
    span: Duration,
    buckets: VecDeque<Bucket>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    start: Instant,
    requests: u32,
    failed: u32,
}

impl Window {
    fn new(span: Duration) -> Self {
        Self {
            span,
            buckets: VecDeque::new(),
        }
    }

    fn add(&mut self, now: Instant, failed: bool) {
        while self
            .buckets
            .front()
            .is_some_and(|b| b.start + self.span <= now)
        {
            self.buckets.pop_front();
        }
        let width = self.span / BUCKETS;
        match self.buckets.back_mut() {
            Some(b) if now < b.start + width => {
                b.requests += 1;
                b.failed += u32::from(failed);
            }
            _ => self.buckets.push_back(Bucket {
                start: now,
                requests: 1,
                failed: u32::from(failed),
            }),
        }
    }

    /// Requests and failures still in the window at `now`.
    fn counts(&self, now: Instant) -> (u32, u32) {
        self.buckets
            .iter()
            .filter(|b| b.start + self.span > now)
            .fold((0, 0), |(r, f), b| (r + b.requests, f + b.failed))
    }

    fn clear(&mut self) {
        self.buckets.clear();
    }
}

#[cfg(test)]
mod tests;
