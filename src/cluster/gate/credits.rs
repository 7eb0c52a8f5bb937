//! What a remote worker may hold: its credits at the queue plus the leases it has not
//! reported yet stay within the slots it declared, and a node's workers' slots within the
//! capacity the node declared in its hello. A frame that asks for more is clamped (and the
//! clamp counted): one node cannot hoard every task by announcing `u32::MAX` free slots.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One remote worker's credits, as the gate lets them through to the queue.
#[derive(Debug)]
pub(super) struct Ledger {
    /// Slots the worker declared (within what its node's capacity left).
    pub(super) slots: u32,
    /// Leases sent to the worker, counted by its sink as the queue hands them out.
    delivered: Arc<AtomicU64>,
    /// Attempts it reported finished.
    finished: u64,
    /// Credits the queue was last told outright (attach, or credits set).
    base: u64,
    /// Credits added by reports since.
    added: u64,
    /// Leases delivered when the queue was last told outright.
    delivered_at_set: u64,
}

impl Ledger {
    /// A worker with `slots` slots whose sink counts into `delivered`.
    pub(super) fn new(slots: u32) -> Self {
        Self {
            slots,
            delivered: Arc::default(),
            finished: 0,
            base: 0,
            added: 0,
            delivered_at_set: 0,
        }
    }

    /// The counter its sink increments for each lease delivered.
    pub(super) fn delivered(&self) -> Arc<AtomicU64> {
        self.delivered.clone()
    }

    fn delivered_now(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Leases delivered and not reported yet.
    pub(super) fn in_flight(&self) -> u64 {
        self.delivered_now().saturating_sub(self.finished)
    }

    /// Credits the queue holds for the worker now, as far as the gate can tell.
    fn at_queue(&self) -> u64 {
        let used = self.delivered_now().saturating_sub(self.delivered_at_set);
        (self.base + self.added).saturating_sub(used)
    }

    /// The worker attached (its sink is new): the credits to pass on.
    pub(super) fn attach(&mut self, credits: u32) -> u32 {
        let credits = credits.min(self.slots);
        self.base = u64::from(credits);
        self.added = 0;
        self.delivered_at_set = self.delivered_now();
        credits
    }

    /// The worker set its free slots outright: the credits to pass on. Credits still at
    /// the queue count as held: the queue may hand them out before it takes the new value.
    pub(super) fn set(&mut self, credits: u32) -> u32 {
        let held = self.in_flight() + self.at_queue();
        let room = u64::from(self.slots).saturating_sub(held);
        let credits = u64::from(credits).min(room);
        self.base = credits;
        self.added = 0;
        self.delivered_at_set = self.delivered_now();
        credits as u32
    }

    /// The worker reported `finished` attempts and freed `credits` slots: the credits to
    /// pass on (the reports themselves always go through).
    pub(super) fn report(&mut self, finished: usize, credits: u32) -> u32 {
        self.finished += finished as u64;
        let held = self.in_flight() + self.at_queue();
        let room = u64::from(self.slots).saturating_sub(held);
        let credits = u64::from(credits).min(room);
        self.added += credits;
        credits as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver(l: &Ledger, n: u64) {
        l.delivered().fetch_add(n, Ordering::Relaxed);
    }

    #[test]
    fn an_honest_worker_keeps_every_slot_it_frees() {
        let mut l = Ledger::new(4);
        assert_eq!(l.attach(4), 4);
        deliver(&l, 4);
        for _ in 0..100 {
            assert_eq!(l.report(1, 1), 1);
            deliver(&l, 1);
        }
        // Four finished at once, reported in two frames, the freed slots with the last.
        assert_eq!(l.report(2, 0), 0);
        assert_eq!(l.report(2, 4), 4);
        // Draining, then back.
        assert_eq!(l.set(0), 0);
        assert_eq!(l.set(4), 4);
        // Credits the queue has not used yet may still go out before it takes a new value.
        let mut l = Ledger::new(4);
        assert_eq!(l.attach(4), 4);
        assert_eq!(l.set(4), 0);
    }

    #[test]
    fn a_hoarder_gets_no_more_than_its_slots() {
        let mut l = Ledger::new(2);
        assert_eq!(l.attach(u32::MAX), 2);
        deliver(&l, 2);
        // Holding two leases, it claims more free slots: outright, or freed by no report.
        assert_eq!(l.set(u32::MAX), 0);
        assert_eq!(l.report(0, u32::MAX), 0);
        assert_eq!(l.report(0, 1), 0);
        // One finished: one slot back, once.
        assert_eq!(l.report(1, 5), 1);
        assert_eq!(l.report(0, 5), 0);
        deliver(&l, 1);
        assert_eq!(l.set(9), 0);
    }
}
