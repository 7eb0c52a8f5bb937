//! Affinity bindings: which worker each affinity key is bound to, at most `max` of them, the
//! least recently used dropped first when a new one would pass the bound.
//!
//! A key is bound when the first task carrying it is leased, used again by every later
//! lease of its tasks, and unbound when its worker leaves. A dropped binding costs only
//! locality: the key's next task binds it again, to whichever worker takes it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Affinity key → worker, bounded, least recently used first out.
pub(crate) struct Bindings {
    /// Most keys held.
    max: usize,
    /// Each key's worker, and the use stamp that is its place in `by_use`.
    by_key: HashMap<Arc<str>, (Arc<str>, u64)>,
    /// Keys by their last use, oldest first.
    by_use: BTreeMap<u64, Arc<str>>,
    /// The last use stamp handed out.
    uses: u64,
    /// Bindings dropped to keep to `max`.
    evicted: u64,
}

impl Bindings {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            by_key: HashMap::new(),
            by_use: BTreeMap::new(),
            uses: 0,
            evicted: 0,
        }
    }

    /// The worker `key` is bound to.
    pub(crate) fn get(&self, key: &str) -> Option<&Arc<str>> {
        self.by_key.get(key).map(|(worker, _)| worker)
    }

    /// Binds `key` to `worker` (again, or anew), as its most recent use; drops the least
    /// recently used binding when there are more than `max`.
    pub(crate) fn bind(&mut self, key: &str, worker: &Arc<str>) {
        self.uses += 1;
        let stamp = self.uses;
        match self.by_key.get_mut(key) {
            Some((bound, used)) => {
                let key = self.by_use.remove(used).expect("every key has a use");
                *bound = worker.clone();
                *used = stamp;
                self.by_use.insert(stamp, key);
            }
            None => {
                let key: Arc<str> = key.into();
                self.by_key.insert(key.clone(), (worker.clone(), stamp));
                self.by_use.insert(stamp, key);
                while self.by_key.len() > self.max {
                    let (_, oldest) = self.by_use.pop_first().expect("as many uses as keys");
                    self.by_key.remove(&oldest);
                    self.evicted += 1;
                }
            }
        }
    }

    /// Drops every binding to `worker` (it left); returns how many there were.
    pub(crate) fn unbind_worker(&mut self, worker: &str) -> usize {
        let before = self.by_key.len();
        let by_use = &mut self.by_use;
        self.by_key.retain(|_, (bound, used)| {
            let keep = &**bound != worker;
            if !keep {
                by_use.remove(used);
            }
            keep
        });
        before - self.by_key.len()
    }

    /// Keys bound now.
    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Bindings dropped to keep to the bound, since start.
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Every binding, for the queue's consistency checks in tests.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<str>)> {
        assert_eq!(self.by_key.len(), self.by_use.len(), "one use per key");
        self.by_key.iter().map(|(k, (w, _))| (k, w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    #[test]
    fn the_least_recently_used_binding_goes_first() {
        let mut b = Bindings::new(2);
        b.bind("a", &w("w1"));
        b.bind("b", &w("w2"));
        // `a` used again: `b` is now the oldest.
        b.bind("a", &w("w1"));
        b.bind("c", &w("w3"));
        assert_eq!(b.len(), 2);
        assert_eq!(b.get("a").map(|w| &**w), Some("w1"));
        assert_eq!(b.get("b"), None, "the least recently used went");
        assert_eq!(b.get("c").map(|w| &**w), Some("w3"));
        assert_eq!(b.evicted(), 1);
        assert_eq!(b.iter().count(), 2);
    }

    #[test]
    fn a_worker_leaving_drops_only_its_own_bindings() {
        let mut b = Bindings::new(10);
        b.bind("a", &w("w1"));
        b.bind("b", &w("w2"));
        b.bind("c", &w("w1"));
        assert_eq!(b.unbind_worker("w1"), 2);
        assert_eq!(b.get("a"), None);
        assert_eq!(b.get("c"), None);
        assert_eq!(b.get("b").map(|w| &**w), Some("w2"));
        // Rebinding a dropped key works, and the bookkeeping stays in step.
        b.bind("a", &w("w2"));
        assert_eq!(b.get("a").map(|w| &**w), Some("w2"));
        assert_eq!(b.iter().count(), 2);
    }
}
