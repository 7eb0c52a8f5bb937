//! The breaker's state machine, with time passed in: trips by a row and by a rate, the
//! cool-down and its growth, half-open probes, and health checks.

use std::time::Duration;

use tokio::time::Instant;

use super::*;

fn policy() -> Policy {
    Policy {
        failures: 3,
        failure_rate: 0.5,
        min_requests: 10,
        window: Duration::from_secs(60),
        open_for: Duration::from_secs(10),
        max_open_for: Duration::from_secs(35),
        probes: 1,
    }
}

const S: Duration = Duration::from_secs(1);

/// Sends one request at `now` that ends with `outcome`.
fn call(b: &mut Breaker, now: Instant, outcome: Outcome) {
    let ticket = b.admit(now).expect("let through");
    b.record(ticket, outcome, now);
}

/// Opens a fresh breaker by failures in a row at `now`.
fn tripped(now: Instant) -> Breaker {
    let mut b = Breaker::new(policy());
    for _ in 0..3 {
        call(&mut b, now, Outcome::Failure);
    }
    assert_eq!(b.state(now), BreakerState::Open);
    b
}

#[test]
fn failures_in_a_row_open_it_and_a_success_between_them_resets_the_row() {
    let t = Instant::now();
    let mut b = Breaker::new(policy());
    call(&mut b, t, Outcome::Failure);
    call(&mut b, t, Outcome::Failure);
    call(&mut b, t, Outcome::Success);
    call(&mut b, t, Outcome::Failure);
    call(&mut b, t, Outcome::Failure);
    assert_eq!(b.state(t), BreakerState::Closed, "a success broke the row");
    assert_eq!(b.snapshot(t).consecutive_failures, 2);
    call(&mut b, t, Outcome::Failure);
    let s = b.snapshot(t);
    assert_eq!(s.state, BreakerState::Open);
    assert_eq!((s.trips, s.last_trip), (1, Some(Trip::InARow(3))));
    assert_eq!(s.retry_in, Some(Duration::from_secs(10)));
    assert!(!s.waiting_for_check);
}

#[test]
fn refusals_and_ignored_outcomes_do_not_count_as_failures() {
    let t = Instant::now();
    let mut b = Breaker::new(policy());
    for _ in 0..10 {
        call(&mut b, t, Outcome::Ignored);
    }
    call(&mut b, t, Outcome::Failure);
    call(&mut b, t, Outcome::Ignored);
    call(&mut b, t, Outcome::Failure);
    assert_eq!(b.state(t), BreakerState::Closed);
    assert_eq!(
        b.snapshot(t).window_requests,
        2,
        "ignored ones are not in the window"
    );
}

#[test]
fn a_failure_rate_opens_it_only_once_the_window_holds_min_requests() {
    let t = Instant::now();
    let mut b = Breaker::new(policy());
    // Alternating: never 3 in a row, half of them failed.
    for i in 0..9 {
        let outcome = if i % 2 == 0 {
            Outcome::Failure
        } else {
            Outcome::Success
        };
        call(&mut b, t + S * i, outcome);
    }
    let s = b.snapshot(t + S * 9);
    assert_eq!((s.window_requests, s.window_failures), (9, 5));
    assert_eq!(
        s.state,
        BreakerState::Closed,
        "9 requests are below the minimum"
    );
    call(&mut b, t + S * 9, Outcome::Success);
    assert_eq!(
        b.state(t + S * 9),
        BreakerState::Closed,
        "rate counts on a failure"
    );
    call(&mut b, t + S * 10, Outcome::Failure);
    let s = b.snapshot(t + S * 10);
    assert_eq!(s.state, BreakerState::Open);
    assert_eq!(
        s.last_trip,
        Some(Trip::Rate {
            rate: 6.0 / 11.0,
            requests: 11
        })
    );
}

#[test]
fn failures_older_than_the_window_leave_the_rate() {
    // Half of 8 requests failed, then one of 2 more, `later` on: 5 of 10 would open it.
    let run = |later: Duration| {
        let t = Instant::now();
        let mut b = Breaker::new(policy());
        for i in 0..4 {
            call(&mut b, t + S * i, Outcome::Failure);
            call(&mut b, t + S * i, Outcome::Success);
        }
        call(&mut b, t + later, Outcome::Success);
        call(&mut b, t + later, Outcome::Failure);
        b.snapshot(t + later)
    };
    let within = run(Duration::from_secs(30));
    assert_eq!(within.state, BreakerState::Open, "{within:?}");
    let past = run(Duration::from_secs(90));
    assert_eq!(past.state, BreakerState::Closed, "{past:?}");
    assert_eq!((past.window_requests, past.window_failures), (2, 1));
}

#[test]
fn an_open_breaker_refuses_with_the_cool_down_left_then_lets_one_probe_through() {
    let t = Instant::now();
    let mut b = tripped(t);
    assert_eq!(b.admit(t), Err(Some(Duration::from_secs(10))));
    assert_eq!(b.admit(t + S * 4), Err(Some(Duration::from_secs(6))));
    assert!(!b.admits(t + S * 9));
    let after = t + S * 10;
    assert!(b.admits(after));
    assert_eq!(b.state(after), BreakerState::HalfOpen);
    let probe = b.admit(after).unwrap();
    assert!(probe.is_probe());
    assert_eq!(b.admit(after), Err(None), "one probe at a time");
    assert!(
        !b.admits(after),
        "a half-open breaker with its probe out takes nothing"
    );
    b.record(probe, Outcome::Success, after + S);
    let s = b.snapshot(after + S);
    assert_eq!(s.state, BreakerState::Closed);
    assert_eq!((s.consecutive_failures, s.window_requests), (0, 0));
    assert!(!b.admit(after + S).unwrap().is_probe());
}

#[test]
fn a_failed_probe_opens_it_again_for_longer_up_to_the_maximum_and_closing_resets_it() {
    let t = Instant::now();
    let mut b = tripped(t);
    let mut now = t;
    // 10 s, then 20, 35 (the cap), 35.
    for (trip, cool_down) in [(2, 20), (3, 35), (4, 35)] {
        now += b.snapshot(now).retry_in.unwrap();
        let probe = b.admit(now).unwrap();
        b.record(probe, Outcome::Failure, now);
        let s = b.snapshot(now);
        assert_eq!((s.state, s.trips), (BreakerState::Open, trip));
        assert_eq!(s.last_trip, Some(Trip::ProbeFailed));
        assert_eq!(s.retry_in, Some(Duration::from_secs(cool_down)));
    }
    now += Duration::from_secs(35);
    let probe = b.admit(now).unwrap();
    b.record(probe, Outcome::Success, now);
    assert_eq!(b.state(now), BreakerState::Closed);
    for _ in 0..3 {
        call(&mut b, now, Outcome::Failure);
    }
    assert_eq!(
        b.snapshot(now).retry_in,
        Some(Duration::from_secs(10)),
        "closing reset the cool-down"
    );
}

#[test]
fn probes_are_bounded_and_a_probe_given_back_frees_its_place() {
    let t = Instant::now();
    let mut b = Breaker::new(Policy {
        probes: 2,
        ..policy()
    });
    for _ in 0..3 {
        call(&mut b, t, Outcome::Failure);
    }
    let after = t + S * 10;
    let first = b.admit(after).unwrap();
    let second = b.admit(after).unwrap();
    assert!(first.is_probe() && second.is_probe());
    assert_eq!(b.admit(after), Err(None));
    b.record(first, Outcome::Ignored, after);
    let third = b
        .admit(after)
        .expect("the ignored probe gave its place back");
    assert_eq!(b.admit(after), Err(None));
    b.record(second, Outcome::Success, after);
    assert_eq!(b.state(after), BreakerState::Closed);
    // The third probe ends after the breaker closed: it counts for nothing.
    b.record(third, Outcome::Failure, after);
    assert_eq!(b.snapshot(after).consecutive_failures, 0);
}

#[test]
fn requests_sent_before_a_trip_do_not_count_after_it() {
    let t = Instant::now();
    let mut b = Breaker::new(policy());
    let early = b.admit(t).unwrap();
    for _ in 0..3 {
        call(&mut b, t, Outcome::Failure);
    }
    let after = t + S * 10;
    let probe = b.admit(after).unwrap();
    b.record(early, Outcome::Success, after);
    assert_eq!(
        b.state(after),
        BreakerState::HalfOpen,
        "only the probe closes it"
    );
    b.record(probe, Outcome::Success, after);
    assert_eq!(b.state(after), BreakerState::Closed);
}

#[test]
fn failed_checks_open_it_and_only_a_passing_check_ends_that() {
    let t = Instant::now();
    let mut b = Breaker::new(policy());
    b.check_failed(t);
    b.check_failed(t);
    b.check_passed(t);
    b.check_failed(t);
    b.check_failed(t);
    assert_eq!(
        b.state(t),
        BreakerState::Closed,
        "a passing check broke the row"
    );
    b.check_failed(t);
    let s = b.snapshot(t);
    assert_eq!((s.state, s.waiting_for_check), (BreakerState::Open, true));
    // Long past the cool-down, a node that fails its checks still gets nothing.
    let later = t + Duration::from_secs(600);
    b.check_failed(later);
    assert_eq!(b.admit(later), Err(None));
    assert_eq!(b.snapshot(later).consecutive_failures, 4);
    // One passing check: half-open at once, and a real request decides.
    b.check_passed(later);
    assert_eq!(b.state(later), BreakerState::HalfOpen);
    b.check_passed(later);
    assert_eq!(
        b.state(later),
        BreakerState::HalfOpen,
        "checks alone do not close it"
    );
    call(&mut b, later, Outcome::Success);
    assert_eq!(b.state(later), BreakerState::Closed);
}

#[test]
fn a_passing_check_does_not_cut_short_the_cool_down_of_failing_requests() {
    let t = Instant::now();
    let mut b = tripped(t);
    b.check_passed(t + S);
    assert_eq!(
        b.state(t + S),
        BreakerState::Open,
        "the node answers checks but fails work"
    );
    assert_eq!(b.admit(t + S), Err(Some(Duration::from_secs(9))));
    // A check that fails meanwhile makes it wait for a passing one.
    b.check_failed(t + S * 2);
    assert_eq!(b.admit(t + S * 30), Err(None));
    b.check_passed(t + S * 31);
    assert_eq!(b.state(t + S * 31), BreakerState::HalfOpen);
}

#[test]
fn a_failed_check_while_half_open_opens_it_again_for_longer() {
    let t = Instant::now();
    let mut b = tripped(t);
    let after = t + S * 10;
    let probe = b.admit(after).unwrap();
    b.check_failed(after);
    let s = b.snapshot(after);
    assert_eq!((s.state, s.trips), (BreakerState::Open, 2));
    assert_eq!(s.last_trip, Some(Trip::CheckFailed));
    assert_eq!(s.retry_in, Some(Duration::from_secs(20)));
    // The probe that was out ends: it no longer decides anything.
    b.record(probe, Outcome::Success, after);
    assert_eq!(b.state(after), BreakerState::Open);
}

#[test]
fn the_snapshot_says_when_it_opened() {
    let t = Instant::now();
    let mut b = tripped(t);
    assert_eq!(b.snapshot(t + S * 3).opened_ago, Some(S * 3));
    assert_eq!(b.snapshot(t + S * 12).state, BreakerState::HalfOpen);
    assert_eq!(b.snapshot(t + S * 12).opened_ago, Some(S * 12));
    let probe = b.admit(t + S * 12).unwrap();
    b.record(probe, Outcome::Success, t + S * 12);
    assert_eq!(b.snapshot(t + S * 13).opened_ago, None);
    assert_eq!(b.snapshot(t + S * 13).trips, 1);
}
