//! The task table: every task's entry, found by id, and the ids of each status in creation
//! order, for listing pages.
//!
//! Entries live in a slab (slots in fixed chunks of 4,096, freed slots reused), so the id
//! index holds only a 4-byte slot per task, and growing the slab adds a chunk instead of
//! copying every entry into a buffer twice the size. The index is many small tables that
//! grow one at a time (see `index.rs`). So a queue that grows past a million tasks never
//! stops to copy its table. The slab is written here (a few lines) rather than taken from
//! a crate.

use std::ops::Index;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::index::SlotIndex;
use super::Run;
use crate::queue::sorted::Sorted;
use crate::task::{Payload, TaskId, TaskOptions, TaskPriority, TaskStatus};

/// One task. Kept small, because a million of them may wait: its type is its class's, its
/// creation time is in its id (UUIDv7, to the millisecond, plus the microseconds here),
/// default options are not stored, and what only a task that has run needs lives behind
/// `run`, allocated at its first lease.
pub(super) struct Entry {
    pub(super) payload: Payload,
    /// `None`: the defaults, but for `priority`.
    options: Option<Box<TaskOptions>>,
    pub(super) run: Option<Box<Run>>,
    wait: Wait,
    pub(super) class: u32,
    /// Changed only through [`Tasks::set_status`], which keeps the status sets in step.
    status: TaskStatus,
    pub(super) priority: TaskPriority,
    /// Microseconds from the millisecond in the id to the task's creation.
    created_us: u16,
}

/// Where a task waits: one field, since no task is both queued and pending.
#[derive(Clone, Copy)]
enum Wait {
    /// Queued (and, after, running): the sequence number of its current place in its
    /// class heap; older heap entries for the same task are stale and skipped.
    Seq(u64),
    /// Pending: when it becomes runnable.
    At(Instant),
}

/// The options of tasks submitted without any.
static NO_OPTIONS: TaskOptions = TaskOptions {
    priority: TaskPriority::Normal,
    timeout: None,
    retries: None,
    labels: Vec::new(),
    metadata: std::collections::BTreeMap::new(),
    idempotency_key: None,
    delay: None,
    trace_id: None,
    affinity_key: None,
};

impl Entry {
    /// A task of `class`, created at `created_at`.
    pub(super) fn new(
        id: TaskId,
        class: usize,
        payload: Payload,
        options: TaskOptions,
        status: TaskStatus,
        created_at: SystemTime,
    ) -> Self {
        let priority = options.priority;
        let plain = TaskOptions {
            priority: TaskPriority::Normal,
            ..options
        };
        let options = (plain != NO_OPTIONS).then(|| Box::new(plain));
        let created_us = created_at
            .duration_since(id.created_at())
            .map_or(0, |d| d.as_micros().min(u16::MAX as u128) as u16);
        Self {
            payload,
            options,
            run: None,
            wait: Wait::Seq(0),
            class: u32::try_from(class).expect("fewer than 2^32 classes"),
            status,
            priority,
            created_us,
        }
    }

    pub(super) fn status(&self) -> TaskStatus {
        self.status
    }

    /// The sequence number of a queued or running task's place in its class heap (0 for
    /// a pending one).
    pub(super) fn seq(&self) -> u64 {
        match self.wait {
            Wait::Seq(seq) => seq,
            Wait::At(_) => 0,
        }
    }

    /// When a pending task becomes runnable.
    pub(super) fn ready_at(&self) -> Option<Instant> {
        match self.wait {
            Wait::At(at) => Some(at),
            Wait::Seq(_) => None,
        }
    }

    pub(super) fn set_seq(&mut self, seq: u64) {
        self.wait = Wait::Seq(seq);
    }

    pub(super) fn set_ready_at(&mut self, at: Instant) {
        self.wait = Wait::At(at);
    }

    /// The class slot.
    pub(super) fn class(&self) -> usize {
        self.class as usize
    }

    /// The options, but for `priority` (see [`Self::full_options`]).
    pub(super) fn options(&self) -> &TaskOptions {
        self.options.as_deref().unwrap_or(&NO_OPTIONS)
    }

    /// The options as submitted.
    pub(super) fn full_options(&self) -> TaskOptions {
        TaskOptions {
            priority: self.priority,
            ..self.options().clone()
        }
    }

    /// When the task with this id was accepted.
    pub(super) fn created_at(&self, id: TaskId) -> SystemTime {
        id.created_at() + Duration::from_micros(u64::from(self.created_us))
    }
}

/// Where a task's entry sits in the slab: found once by id, then used for every step of
/// one change (a report, a lease) instead of hashing the id again at each step. Valid
/// until the task is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Slot(u32);

/// Slots per slab chunk, as a power of two: a slot's chunk is `slot >> CHUNK_BITS`.
const CHUNK_BITS: u32 = 12;
const CHUNK: usize = 1 << CHUNK_BITS;

/// Every task in memory (see the module's documentation).
pub(super) struct Tasks {
    /// Chunks of `CHUNK` slots each, filled in order; only the last may be short.
    slots: Vec<Vec<Option<Entry>>>,
    free: Vec<u32>,
    index: SlotIndex,
    /// Ids by status ([`TaskStatus`] as index), in id (creation) order.
    by_status: [Sorted<TaskId>; TaskStatus::ALL.len()],
}

impl Tasks {
    pub(super) fn new() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            index: SlotIndex::default(),
            by_status: Default::default(),
        }
    }

    fn slot(&self, slot: u32) -> &Option<Entry> {
        &self.slots[(slot >> CHUNK_BITS) as usize][slot as usize & (CHUNK - 1)]
    }

    fn slot_mut(&mut self, slot: u32) -> &mut Option<Entry> {
        &mut self.slots[(slot >> CHUNK_BITS) as usize][slot as usize & (CHUNK - 1)]
    }

    /// The slot of task `id`, if it is in memory.
    pub(super) fn find(&self, id: &TaskId) -> Option<Slot> {
        self.index.get(id).map(|&slot| Slot(slot))
    }

    /// The slot of task `id`, which must be in memory.
    pub(super) fn slot_of(&self, id: &TaskId) -> Slot {
        self.find(id).expect("task exists")
    }

    /// The entry in `at`.
    pub(super) fn at(&self, at: Slot) -> &Entry {
        self.slot(at.0)
            .as_ref()
            .expect("a found slot holds its task")
    }

    /// The entry in `at`, to change.
    pub(super) fn at_mut(&mut self, at: Slot) -> &mut Entry {
        self.slot_mut(at.0)
            .as_mut()
            .expect("a found slot holds its task")
    }

    pub(super) fn get(&self, id: &TaskId) -> Option<&Entry> {
        let slot = *self.index.get(id)?;
        self.slot(slot).as_ref()
    }

    pub(super) fn get_mut(&mut self, id: &TaskId) -> Option<&mut Entry> {
        let slot = *self.index.get(id)?;
        self.slot_mut(slot).as_mut()
    }

    pub(super) fn contains_key(&self, id: &TaskId) -> bool {
        self.index.contains_key(id)
    }

    /// Adds a task; its id must be new. Returns its slot.
    pub(super) fn insert(&mut self, id: TaskId, entry: Entry) -> Slot {
        let status = entry.status;
        let slot = match self.free.pop() {
            Some(slot) => {
                *self.slot_mut(slot) = Some(entry);
                slot
            }
            None => {
                if self.slots.last().is_none_or(|c| c.len() == CHUNK) {
                    self.slots.push(Vec::with_capacity(CHUNK));
                }
                let chunks = self.slots.len() - 1;
                let last = self.slots.last_mut().expect("a chunk with room");
                last.push(Some(entry));
                u32::try_from(chunks * CHUNK + last.len() - 1).expect("fewer than 2^32 tasks")
            }
        };
        let old = self.index.insert(id, slot);
        assert!(old.is_none(), "task ids are unique");
        self.by_status[status as usize].insert(id);
        Slot(slot)
    }

    pub(super) fn remove(&mut self, id: &TaskId) -> Option<Entry> {
        let slot = self.index.remove(id)?;
        let entry = self
            .slot_mut(slot)
            .take()
            .expect("indexed slots hold a task");
        self.free.push(slot);
        self.by_status[entry.status as usize].remove(id);
        Some(entry)
    }

    /// Moves a task to `status`; returns its entry.
    pub(super) fn set_status(&mut self, id: TaskId, status: TaskStatus) -> &mut Entry {
        let at = self.slot_of(&id);
        self.set_status_at(at, id, status)
    }

    /// Moves task `id`, in `at`, to `status`; returns its entry.
    pub(super) fn set_status_at(&mut self, at: Slot, id: TaskId, status: TaskStatus) -> &mut Entry {
        let e = self
            .slots
            .get_mut((at.0 >> CHUNK_BITS) as usize)
            .and_then(|c| c[at.0 as usize & (CHUNK - 1)].as_mut())
            .expect("indexed slots hold a task");
        if e.status != status {
            self.by_status[e.status as usize].remove(&id);
            self.by_status[status as usize].insert(id);
            e.status = status;
        }
        e
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Every task, in no order (for tests).
    #[cfg(test)]
    pub(super) fn iter(&self) -> impl Iterator<Item = (&TaskId, &Entry)> {
        self.index
            .iter()
            .map(|(id, &slot)| (id, self.slot(slot).as_ref().expect("indexed")))
    }

    /// Checks that every task is in the set of its status and nowhere else (for tests).
    #[cfg(test)]
    pub(super) fn check(&self) {
        let listed: usize = self.by_status.iter().map(Sorted::len).sum();
        assert_eq!(listed, self.index.len(), "each task in one status set");
        for (id, &slot) in self.index.iter() {
            let e = self.slot(slot).as_ref().expect("indexed slots hold a task");
            assert!(
                self.by_status[e.status as usize].contains(id),
                "{id} in its status set"
            );
        }
        let used = self.slots.iter().flatten().filter(|s| s.is_some()).count();
        assert_eq!(used, self.index.len(), "each slot indexed once");
        let made: usize = self.slots.iter().map(Vec::len).sum();
        assert_eq!(used + self.free.len(), made, "each empty slot free");
        let short = self.slots.iter().rev().skip(1).any(|c| c.len() != CHUNK);
        assert!(!short, "only the last chunk is short");
    }

    /// The ids of tasks with `status`, oldest first.
    pub(super) fn with_status(&self, status: TaskStatus) -> &Sorted<TaskId> {
        &self.by_status[status as usize]
    }
}

impl Index<&TaskId> for Tasks {
    type Output = Entry;

    fn index(&self, id: &TaskId) -> &Entry {
        self.get(id).expect("task exists")
    }
}
