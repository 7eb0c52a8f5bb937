//! The task table's index (task id → slab slot), made of many small hash tables whose
//! growth is spread over time, so that a queue growing past a million tasks never stops
//! on one big table's growth.
//!
//! One table of a million ids doubles in one go: a new 40 MB table whose pages the kernel
//! zeroes on first touch, and since hashing scatters the next inserts over all of it,
//! those few thousand page faults land on the next few submits (measured with a table
//! sized up front: 1.2 to 1.7 ms for each of the first submits of 1,000 tasks, against
//! 0.5 ms after). Split into `SHARDS` tables, each grows alone and is small, but shards
//! that fill at the same rate would all grow at the same moment. So ids are spread over
//! the shards unevenly, in geometric proportions from 1 to 2: shard `i` gets a share
//! proportional to 2^(i / SHARDS). A shard with twice the traffic of another reaches the
//! same size when the queue has half as many tasks, so across one doubling of the queue
//! the shards' growths come one by one, evenly spaced, each a few hundred kilobytes.
//!
//! Written here rather than taken from a crate: `griddle` (the incremental table this
//! replaces) spreads the rehash, not the fresh table's page faults; no crate found spreads
//! those.

use std::hash::{BuildHasher, BuildHasherDefault};

use crate::task::{IdHasher, IdMap, TaskId};

/// Tables in the index: each grows on its own, and a growth touches about 1/SHARDS of
/// the index's memory.
const SHARDS: usize = 256;

/// Bits of a hash that choose the shard: bits 32 to 55, which no shard's own table uses
/// for its buckets (those come from the low bits, its tag from the top seven).
const ROUTE_BITS: u32 = 24;
/// The route table's cells: a cell covers 2^(ROUTE_BITS - CELL_BITS) route values.
const CELL_BITS: u32 = 12;

/// Task id → slot, in `SHARDS` tables (see the module's documentation).
pub(super) struct SlotIndex {
    shards: Box<[IdMap<u32>]>,
    /// `start[i]`: the first route value of shard `i`; `start[SHARDS]` is past the last.
    start: Box<[u32]>,
    /// The shard each route cell begins in (a cell holds at most one shard's start).
    cells: Box<[u8]>,
    len: usize,
}

impl Default for SlotIndex {
    fn default() -> Self {
        let span = f64::from(1u32 << ROUTE_BITS);
        // Shard i takes the route values u with i <= SHARDS * log2(1 + u / span) < i + 1.
        let start: Box<[u32]> = (0..=SHARDS)
            .map(|i| ((2f64.powf(i as f64 / SHARDS as f64) - 1.0) * span).round() as u32)
            .collect();
        let cells = (0..1u32 << CELL_BITS)
            .map(|c| {
                let first = c << (ROUTE_BITS - CELL_BITS);
                let shard = start.partition_point(|&s| s <= first) - 1;
                u8::try_from(shard).expect("fewer than 257 shards")
            })
            .collect();
        Self {
            shards: (0..SHARDS).map(|_| IdMap::default()).collect(),
            start,
            cells,
            len: 0,
        }
    }
}

impl SlotIndex {
    fn shard(&self, id: &TaskId) -> usize {
        let hash = BuildHasherDefault::<IdHasher>::default().hash_one(id);
        let route = (hash >> 32) as u32 & ((1 << ROUTE_BITS) - 1);
        let mut shard = usize::from(self.cells[(route >> (ROUTE_BITS - CELL_BITS)) as usize]);
        // The shards are wider than a cell, so the next one may start inside it.
        if route >= self.start[shard + 1] {
            shard += 1;
        }
        shard
    }

    pub(super) fn get(&self, id: &TaskId) -> Option<&u32> {
        self.shards[self.shard(id)].get(id)
    }

    pub(super) fn contains_key(&self, id: &TaskId) -> bool {
        self.get(id).is_some()
    }

    pub(super) fn insert(&mut self, id: TaskId, slot: u32) -> Option<u32> {
        let shard = self.shard(&id);
        let old = self.shards[shard].insert(id, slot);
        self.len += usize::from(old.is_none());
        old
    }

    pub(super) fn remove(&mut self, id: &TaskId) -> Option<u32> {
        let shard = self.shard(id);
        let old = self.shards[shard].remove(id);
        self.len -= usize::from(old.is_some());
        old
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every id and slot, in no order.
    #[cfg(test)]
    pub(super) fn iter(&self) -> impl Iterator<Item = (&TaskId, &u32)> {
        self.shards.iter().flatten()
    }

    /// How many ids each shard holds (for tests).
    #[cfg(test)]
    fn sizes(&self) -> Vec<usize> {
        self.shards.iter().map(|s| s.len()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_value_finds_the_shard_whose_range_holds_it() {
        let index = SlotIndex::default();
        assert_eq!(index.start[0], 0);
        assert_eq!(index.start[SHARDS], 1 << ROUTE_BITS);
        assert!(
            index.start.windows(2).all(|w| w[0] < w[1]),
            "no empty shard"
        );
        // Each shard at least as wide as a cell: one step forward from the cell suffices.
        let narrowest = index.start.windows(2).map(|w| w[1] - w[0]).min().unwrap();
        assert!(narrowest >= 1 << (ROUTE_BITS - CELL_BITS), "{narrowest}");
        for route in (0..1u32 << ROUTE_BITS).step_by(61) {
            let mut shard = usize::from(index.cells[(route >> (ROUTE_BITS - CELL_BITS)) as usize]);
            if route >= index.start[shard + 1] {
                shard += 1;
            }
            assert!(
                index.start[shard] <= route && route < index.start[shard + 1],
                "route {route} in shard {shard}"
            );
        }
    }

    #[test]
    fn ids_are_found_removed_and_spread_in_geometric_shares() {
        let mut index = SlotIndex::default();
        let ids: Vec<TaskId> = (0..200_000).map(|_| TaskId::new()).collect();
        for (slot, id) in ids.iter().enumerate() {
            assert_eq!(index.insert(*id, slot as u32), None);
        }
        assert_eq!(index.len(), ids.len());
        assert_eq!(index.insert(ids[7], 99), Some(7), "an insert replaces");
        assert_eq!(index.len(), ids.len());
        for (slot, id) in ids.iter().enumerate().skip(8).step_by(97) {
            assert_eq!(index.get(id), Some(&(slot as u32)));
        }
        // The last shard gets about twice the first's share (2^(255/256) against 1).
        let sizes = index.sizes();
        let (first, last) = (
            sizes[..16].iter().sum::<usize>(),
            sizes[240..].iter().sum::<usize>(),
        );
        let ratio = last as f64 / first as f64;
        assert!(
            (1.75..2.15).contains(&ratio),
            "last/first shares {ratio}: {sizes:?}"
        );
        for id in &ids {
            assert!(index.remove(id).is_some());
        }
        assert!(index.is_empty() && index.get(&ids[0]).is_none());
        assert_eq!(index.remove(&ids[0]), None);
    }
}
