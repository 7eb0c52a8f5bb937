//! Latency histograms the queue records as tasks finish, read by the Prometheus endpoint.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds.
pub(crate) const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
    300.0,
];

/// A fixed-bucket histogram updated with relaxed atomics (no lock on the hot path).
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last slot counts those above every bound.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket bound (Prometheus `le` semantics), then the total.
    pub fn cumulative(&self) -> (Vec<(f64, u64)>, u64) {
        let mut total = 0;
        let mut out = Vec::with_capacity(BUCKETS.len());
        for (i, bound) in BUCKETS.iter().enumerate() {
            total += self.counts[i].load(Ordering::Relaxed);
            out.push((*bound, total));
        }
        total += self.counts[BUCKETS.len()].load(Ordering::Relaxed);
        (out, total)
    }

    /// Observations per bucket, not cumulative, by upper bound; the last bound is
    /// `f64::INFINITY` (those above every bound). Their sum is the total count.
    pub fn counts(&self) -> Vec<(f64, u64)> {
        BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.counts)
            .map(|(bound, n)| (bound, n.load(Ordering::Relaxed)))
            .collect()
    }

    /// The sum of all observations, in seconds.
    pub fn sum_secs(&self) -> f64 {
        self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// The value under which `q` (0..=1) of observations fall, as the bucket bound that
    /// reaches it (an upper estimate); `None` with no observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let (buckets, total) = self.cumulative();
        if total == 0 {
            return None;
        }
        let want = (q.clamp(0.0, 1.0) * total as f64).ceil().max(1.0) as u64;
        Some(
            buckets
                .iter()
                .find(|(_, c)| *c >= want)
                .map(|(b, _)| *b)
                .unwrap_or(f64::INFINITY),
        )
    }
}

/// Events per second over the last few whole seconds, from a ring of per-second counts
/// (relaxed atomics; a count racing a second's rollover may land in either second).
#[derive(Debug, Default)]
pub struct RateWindow {
    /// Per slot: the second it counts (Unix time) and its count.
    slots: [(AtomicU64, AtomicU64); RING],
}

const RING: usize = 16;

/// Whole seconds averaged by [`RateWindow::per_second`].
pub const RATE_WINDOW_SECS: u64 = 10;

impl RateWindow {
    /// Counts one event in second `now_secs`.
    pub fn record(&self, now_secs: u64) {
        let (sec, count) = &self.slots[now_secs as usize % RING];
        if sec.swap(now_secs, Ordering::Relaxed) != now_secs {
            count.store(0, Ordering::Relaxed);
        }
        count.fetch_add(1, Ordering::Relaxed);
    }

    /// Events per second over the [`RATE_WINDOW_SECS`] whole seconds before `now_secs`.
    pub fn per_second(&self, now_secs: u64) -> f64 {
        let from = now_secs.saturating_sub(RATE_WINDOW_SECS);
        let total: u64 = self
            .slots
            .iter()
            .filter(|(sec, _)| (from..now_secs).contains(&sec.load(Ordering::Relaxed)))
            .map(|(_, count)| count.load(Ordering::Relaxed))
            .sum();
        total as f64 / RATE_WINDOW_SECS as f64
    }
}

/// Task timings recorded by the queue.
#[derive(Debug, Default)]
pub struct TaskMetrics {
    /// From submit to completion, for completed tasks.
    pub latency: Histogram,
    /// From lease to result, for each completed attempt.
    pub run_time: Histogram,
    /// Completions per second.
    pub completions: RateWindow,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_window_averages_whole_past_seconds() {
        let w = RateWindow::default();
        for _ in 0..30 {
            w.record(100);
        }
        for _ in 0..10 {
            w.record(105);
        }
        w.record(110); // the current second is not counted yet
        assert_eq!(w.per_second(110), 4.0);
        assert_eq!(w.per_second(111), 1.1, "100 left the window, 110 entered");
        // Second 116 reuses second 100's slot, starting it from zero: the window 107..117
        // holds one event at 110 and one at 116.
        w.record(116);
        assert_eq!(w.per_second(117), 0.2);
        assert_eq!(w.per_second(1000), 0.0);
    }

    #[test]
    fn buckets_are_cumulative_and_quantiles_pick_the_bound() {
        let h = Histogram::default();
        for ms in [0, 1, 1, 3, 700] {
            h.observe(Duration::from_millis(ms));
        }
        let (b, total) = h.cumulative();
        assert_eq!(total, 5);
        assert_eq!(b[0], (0.0005, 1));
        assert_eq!(b[1], (0.001, 3));
        assert_eq!(b[3], (0.005, 4));
        assert_eq!(h.quantile(0.5), Some(0.001));
        assert_eq!(h.quantile(1.0), Some(1.0));
        assert!((h.sum_secs() - 0.705).abs() < 1e-9);
        let counts = h.counts();
        assert_eq!(counts.len(), BUCKETS.len() + 1);
        assert_eq!(counts[1], (0.001, 2));
        assert_eq!(*counts.last().unwrap(), (f64::INFINITY, 0));
        assert_eq!(counts.iter().map(|(_, n)| n).sum::<u64>(), total);
    }
}
