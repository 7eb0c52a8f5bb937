//! An ordered set for the queue's ordered indexes: the task table's per-status lists (task
//! ids) and the lease deadlines (times, then ids).
//!
//! Keys are held in sorted runs of at most [`MAX`] held in order, each run searched by bisection.
//! The queue's traffic lands at the two ends of each list: a status gains its newest ids
//! (tasks are made, leased and finished roughly in id order) and loses its oldest (dispatch
//! is first in, first out; retention evicts the oldest). Those two cases cost a push and a
//! pop, with no search at all; anything else bisects the runs, then one run. A `BTreeSet`
//! searches each node from its left, so the newest end, where most inserts go, is its
//! slowest (measured: a sixth of a no-op task's instructions went to the status sets).
//!
//! A run that falls under a quarter full merges into a neighbour with room, so sparse runs
//! do not pile up when tasks leave out of order.

use std::collections::VecDeque;

/// Keys per run at most: a run is split in two past this.
const MAX: usize = 256;

/// Keys in ascending order (see the module's documentation).
pub(crate) struct Sorted<K> {
    /// Non-empty runs, each ascending, every key of one below every key of the next.
    runs: VecDeque<VecDeque<K>>,
    len: usize,
}

impl<K> Default for Sorted<K> {
    fn default() -> Self {
        Self {
            runs: VecDeque::new(),
            len: 0,
        }
    }
}

impl<K: Ord + Copy> Sorted<K> {
    /// Keys held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The smallest key.
    pub(crate) fn first(&self) -> Option<&K> {
        self.runs.front().and_then(|r| r.front())
    }

    /// Takes the smallest key out.
    pub(crate) fn pop_first(&mut self) -> Option<K> {
        let k = *self.first()?;
        self.remove(&k);
        Some(k)
    }

    /// The run that holds `k` if any run does: the first whose last key is not below it.
    fn run_of(&self, k: &K) -> usize {
        self.runs
            .partition_point(|r| r.back().expect("runs are not empty") < k)
    }

    /// Adds `k`; false when it was there already.
    pub(crate) fn insert(&mut self, k: K) -> bool {
        match self.runs.back_mut() {
            None => self.runs.push_back(VecDeque::from([k])),
            // The newest so far: the common case, no search.
            Some(last) if k > *last.back().expect("runs are not empty") => {
                if last.len() < MAX {
                    last.push_back(k);
                } else {
                    let mut run = VecDeque::with_capacity(MAX);
                    run.push_back(k);
                    self.runs.push_back(run);
                }
            }
            Some(_) => {
                // Below the last id, so some run's last id is not below it.
                let i = self.run_of(&k);
                let run = &mut self.runs[i];
                match run.binary_search(&k) {
                    Ok(_) => return false,
                    Err(at) => run.insert(at, k),
                }
                if run.len() > MAX {
                    let upper = run.split_off(run.len() / 2);
                    self.runs.insert(i + 1, upper);
                }
            }
        }
        self.len += 1;
        true
    }

    /// Takes `k` out; false when it was not there.
    pub(crate) fn remove(&mut self, k: &K) -> bool {
        let i = match self.runs.front_mut() {
            None => return false,
            // The oldest: the common case, no search.
            Some(first) if first.front() == Some(k) => {
                first.pop_front();
                0
            }
            Some(_) => {
                let i = self.run_of(k);
                let Some(run) = self.runs.get_mut(i) else {
                    return false;
                };
                match run.binary_search(k) {
                    Ok(at) => {
                        run.remove(at);
                    }
                    Err(_) => return false,
                }
                i
            }
        };
        self.len -= 1;
        self.tidy(i);
        true
    }

    /// After a removal from run `i`: drops it when empty, or merges it into a neighbour
    /// when it is under a quarter full and the two fit in one run.
    fn tidy(&mut self, i: usize) {
        let n = self.runs[i].len();
        if n == 0 {
            self.runs.remove(i);
            return;
        }
        if n >= MAX / 4 {
            return;
        }
        if i + 1 < self.runs.len() && n + self.runs[i + 1].len() <= MAX {
            let run = self.runs.remove(i).expect("run i exists");
            let next = &mut self.runs[i];
            for k in run.into_iter().rev() {
                next.push_front(k);
            }
        } else if i > 0 && n + self.runs[i - 1].len() <= MAX {
            let run = self.runs.remove(i).expect("run i exists");
            self.runs[i - 1].extend(run);
        }
    }

    /// True when `k` is held.
    #[cfg(test)]
    pub(crate) fn contains(&self, k: &K) -> bool {
        self.runs
            .get(self.run_of(k))
            .is_some_and(|r| r.binary_search(k).is_ok())
    }

    /// The keys above `after` (all without one), ascending.
    pub(crate) fn after(&self, after: Option<K>) -> impl Iterator<Item = K> + '_ {
        let (i, at) = match after {
            None => (0, 0),
            Some(k) => {
                let i = self
                    .runs
                    .partition_point(|r| *r.back().expect("runs are not empty") <= k);
                let at = self
                    .runs
                    .get(i)
                    .map_or(0, |r| r.partition_point(|&x| x <= k));
                (i, at)
            }
        };
        self.runs
            .range(i..)
            .enumerate()
            .flat_map(move |(n, r)| r.range(if n == 0 { at } else { 0 }..))
            .copied()
    }

    /// The keys below `before` (all without one), descending.
    pub(crate) fn before(&self, before: Option<K>) -> impl Iterator<Item = K> + '_ {
        let (i, at) = match before {
            None => (self.runs.len(), 0),
            Some(k) => {
                // Runs before `i` start below `k`; the last of them may reach past it.
                let i = self
                    .runs
                    .partition_point(|r| *r.front().expect("runs are not empty") < k);
                let at = match i {
                    0 => 0,
                    _ => self.runs[i - 1].partition_point(|&x| x < k),
                };
                (i, at)
            }
        };
        let full = before.is_none();
        self.runs
            .range(..i)
            .rev()
            .enumerate()
            .flat_map(move |(n, r)| {
                let end = if n == 0 && !full { at } else { r.len() };
                r.range(..end).rev()
            })
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn id(n: u128) -> u128 {
        n
    }

    /// Random inserts and removes, at the ends and anywhere, checked against a `BTreeSet`
    /// after every step, with listings from random cursors both ways.
    #[test]
    fn matches_an_ordered_set_under_any_mix_of_changes() {
        let mut rng = fastrand::Rng::with_seed(11);
        for round in 0..20u128 {
            let mut s = Sorted::default();
            let mut model = BTreeSet::new();
            let mut next = 0u128;
            for _ in 0..6_000 {
                let k = match rng.u8(..10) {
                    // Mostly the newest, as the queue makes them.
                    0..=4 => {
                        next += 1 + rng.u128(..3);
                        next
                    }
                    // Anywhere below it.
                    5 => rng.u128(..=next + 1),
                    // The oldest held.
                    6..=7 => model.first().copied().unwrap_or(0),
                    // Any held (or not).
                    _ => rng.u128(..=next + 1),
                };
                if rng.u8(..10) < 5 + (round % 3) as u8 {
                    assert_eq!(s.insert(id(k)), model.insert(k), "insert {k}");
                } else {
                    assert_eq!(s.remove(&id(k)), model.remove(&k), "remove {k}");
                }
                assert_eq!(s.len(), model.len());
            }
            let all: Vec<u128> = s.after(None).collect();
            assert_eq!(all, model.iter().copied().collect::<Vec<_>>());
            let back: Vec<u128> = s.before(None).collect();
            assert_eq!(back, model.iter().rev().copied().collect::<Vec<_>>());
            for _ in 0..200 {
                let c = rng.u128(..=next + 2);
                let up: Vec<u128> = s.after(Some(id(c))).take(50).collect();
                let want: Vec<u128> = model.range(c + 1..).take(50).copied().collect();
                assert_eq!(up, want, "after {c}");
                let down: Vec<u128> = s.before(Some(id(c))).take(50).collect();
                let want: Vec<u128> = model.range(..c).rev().take(50).copied().collect();
                assert_eq!(down, want, "before {c}");
                assert_eq!(s.contains(&id(c)), model.contains(&c));
            }
            // Runs stay ordered, non-empty and within bounds.
            for w in s.runs.iter().collect::<Vec<_>>().windows(2) {
                assert!(w[0].back() < w[1].front());
            }
            assert!(s.runs.iter().all(|r| !r.is_empty() && r.len() <= MAX));
        }
    }

    #[test]
    fn a_first_in_first_out_stream_stays_in_few_full_runs() {
        let mut s = Sorted::default();
        for k in 0..100_000u128 {
            s.insert(id(k));
            if k >= 10_000 {
                assert!(s.remove(&id(k - 10_000)));
            }
        }
        assert_eq!(s.len(), 10_000);
        assert!(s.runs.len() <= 10_000 / MAX + 2, "{} runs", s.runs.len());
    }
}
