//! Which coordinator address a node tries next, and how long it waits first: [`Rotation`].
//!
//! A node may be given several coordinator addresses: one coordinator leads and listens,
//! the others stand by and refuse connections (or are frozen, or gone). The node tries the
//! addresses in turn. An attempt that fails (refused, timed out, a hello refused, a gate
//! that never shows up) or a coordinator lost after joining (closed, silent) moves it to
//! the next address at once; only when every address has failed in a row does it wait,
//! `reconnect_min` at first, doubling up to `reconnect_max`. So a takeover is found within
//! about one connection attempt per address, and a node whose coordinators are all down
//! still backs off. With one address every failure ends a cycle: the node backs off after
//! each, as a node with a single coordinator always did. With several, the wait is at most
//! [`FAILOVER_MAX_WAIT`] whatever `reconnect_max` says: they are coordinators in failover,
//! one of which takes over within seconds, and a cycle of refused connections costs
//! little.

use std::time::Duration;

/// The longest wait between two cycles through several addresses.
pub(super) const FAILOVER_MAX_WAIT: Duration = Duration::from_secs(1);

/// The position in the list of coordinator addresses, and the backoff between cycles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Rotation {
    /// How many addresses there are (at least one).
    len: usize,
    /// The address being tried or joined, as an index into the list.
    current: usize,
    /// Attempts that failed in a row since the last join or the last wait: a whole
    /// cycle has failed when this reaches `len`.
    failed_in_a_row: usize,
    /// The wait after the next cycle that fails.
    backoff: Duration,
    /// The first wait (after a join, the backoff starts again from it).
    min: Duration,
    /// The longest wait.
    max: Duration,
}

impl Rotation {
    /// Starts at the first of `len` addresses (at least one), waiting `min` after the
    /// first failed cycle and at most `max` after any (at most [`FAILOVER_MAX_WAIT`] with
    /// several addresses).
    pub(super) fn new(len: usize, min: Duration, max: Duration) -> Self {
        let max = if len > 1 {
            max.min(FAILOVER_MAX_WAIT)
        } else {
            max
        };
        Self {
            len: len.max(1),
            current: 0,
            failed_in_a_row: 0,
            backoff: min,
            min,
            max: max.max(min),
        }
    }

    /// The index of the address to try (or joined).
    pub(super) fn current(&self) -> usize {
        self.current
    }

    /// The node joined the current address: the next failure starts a new cycle, and the
    /// backoff starts again from `min`.
    pub(super) fn joined(&mut self) {
        self.failed_in_a_row = 0;
        self.backoff = self.min;
    }

    /// The current address failed, or was lost: moves to the next one, and says how long
    /// to wait before trying it. Zero while the cycle has addresses left to try; after a
    /// whole cycle failed, the backoff (which then doubles, up to `max`).
    pub(super) fn failed(&mut self) -> Duration {
        self.current = (self.current + 1) % self.len;
        self.failed_in_a_row += 1;
        if self.failed_in_a_row < self.len {
            return Duration::ZERO;
        }
        self.failed_in_a_row = 0;
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(self.max);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// (index tried next, wait before it) for `n` failures in a row.
    fn fail(r: &mut Rotation, n: usize) -> Vec<(usize, u64)> {
        (0..n)
            .map(|_| {
                let wait = r.failed();
                (r.current(), wait.as_millis() as u64)
            })
            .collect()
    }

    #[test]
    fn one_address_backs_off_after_every_failure_as_before() {
        let mut r = Rotation::new(1, ms(200), ms(1_000));
        assert_eq!(
            fail(&mut r, 5),
            [(0, 200), (0, 400), (0, 800), (0, 1_000), (0, 1_000)]
        );
        r.joined();
        assert_eq!(fail(&mut r, 2), [(0, 200), (0, 400)]);
    }

    #[test]
    fn several_addresses_are_tried_at_once_and_the_backoff_comes_once_per_cycle() {
        let mut r = Rotation::new(3, ms(200), ms(5_000));
        assert_eq!(r.current(), 0);
        assert_eq!(
            fail(&mut r, 9),
            [
                (1, 0),
                (2, 0),
                (0, 200),
                (1, 0),
                (2, 0),
                (0, 400),
                (1, 0),
                (2, 0),
                (0, 800),
            ]
        );
        // Several addresses: never more than a second between cycles.
        assert_eq!(
            fail(&mut r, 6),
            [(1, 0), (2, 0), (0, 1_000), (1, 0), (2, 0), (0, 1_000)]
        );
    }

    #[test]
    fn losing_the_joined_coordinator_moves_on_at_once_and_a_join_resets_the_backoff() {
        let mut r = Rotation::new(2, ms(100), ms(5_000));
        // Both down for three cycles: the backoff has grown.
        assert_eq!(
            fail(&mut r, 6),
            [(1, 0), (0, 100), (1, 0), (0, 200), (1, 0), (0, 400)]
        );
        // A takeover: the node's attempt at 0 fails, 1 accepts it at once.
        assert_eq!(fail(&mut r, 1), [(1, 0)]);
        r.joined();
        // 1 dies: straight to 0; 0 refuses too: the cycle ends with the smallest wait.
        assert_eq!(fail(&mut r, 2), [(0, 0), (1, 100)]);
    }

    #[test]
    fn a_failure_part_way_through_a_cycle_counts_towards_it_after_a_join() {
        let mut r = Rotation::new(3, ms(100), ms(5_000));
        assert_eq!(fail(&mut r, 1), [(1, 0)]);
        r.joined();
        // Joined 1; it is lost, then 2 and 0 fail: one whole cycle, one wait.
        assert_eq!(fail(&mut r, 3), [(2, 0), (0, 0), (1, 100)]);
    }
}
