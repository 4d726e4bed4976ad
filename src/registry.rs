//! The record of pending work that reports are made from.
//!
//! Every `go()` task has an entry (its name, creation site, start time and
//! join handle); guards have one unless the group was built with
//! [`record_guards(false)`](crate::WaitGroupBuilder::record_guards). Entries live in a
//! few shards, each a slab behind its own lock. A thread records into the
//! shard it was assigned when it first recorded (threads are dealt out in
//! turn), so threads rarely meet on one lock, and a guard completed on the
//! thread that took it finds its shard's line still in the cache. There is no
//! group-wide lock on the add/done path. The count of pending work lives in
//! the state word, not here: the registry is only read to make a report.
//!
//! A slab is a list of pages, each twice the size of the one before, that are
//! never moved or reallocated once made: growing by a page allocates once and
//! copies nothing. Vacant slots form a free list through the slots themselves.

use std::panic::Location;
use std::sync::OnceLock;

use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::label::{Label, TaskId};
use crate::report::TaskKind;

/// One pending guard or task.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) id: TaskId,
    pub(crate) name: Option<Label>,
    pub(crate) kind: TaskKind,
    pub(crate) site: &'static Location<'static>,
    pub(crate) started: Instant,
    /// A `go()` task's handle, to abort it and to wait for the abort.
    pub(crate) join: Option<JoinHandle<()>>,
}

/// Where an entry lives: shard in the high half, index in the low half.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot(u64);

impl Slot {
    fn new(shard: usize, index: usize) -> Self {
        Slot(((shard as u64) << 32) | index as u64)
    }
    fn shard(self) -> usize {
        (self.0 >> 32) as usize
    }
    fn index(self) -> usize {
        (self.0 & u64::from(u32::MAX)) as usize
    }
    /// The slot as a number below 2^63 (shards are few), for a guard's tag.
    pub(crate) fn as_u64(self) -> u64 {
        self.0
    }
    pub(crate) fn from_u64(value: u64) -> Self {
        Slot(value)
    }
}

/// Entries in a slab's first page; page `k` holds `FIRST_PAGE << k`.
const FIRST_PAGE: usize = 32;

/// Pages needed to reach the last index (the slot index is 32 bits, and
/// `u32::MAX` ends the free list).
const MAX_PAGES: usize = (u32::BITS + 1 - FIRST_PAGE.trailing_zeros()) as usize;

/// The page holding `index`, and the index within it.
#[inline]
fn locate(index: usize) -> (usize, usize) {
    // Page k starts at FIRST_PAGE * (2^k - 1): shifted by FIRST_PAGE, the
    // page is the position of the highest bit.
    let shifted = index + FIRST_PAGE;
    let page =
        (usize::BITS - 1 - shifted.leading_zeros()) as usize - FIRST_PAGE.trailing_zeros() as usize;
    (page, shifted - (FIRST_PAGE << page))
}

#[derive(Debug)]
enum SlotState {
    Occupied(Entry),
    /// Free; the next free slot (`NONE` for the end of the list).
    Vacant(u32),
}

/// Ends the free list.
const NONE: u32 = u32::MAX;

#[derive(Debug)]
struct Slab {
    /// Page `k` is allocated with room for its `FIRST_PAGE << k` slots and
    /// pushed to until full, so it never reallocates and a slot is written
    /// only when first used.
    pages: Vec<Vec<SlotState>>,
    /// Slots ever used: every slot below is in a page, occupied or on the
    /// free list.
    used: usize,
    /// The most recently freed slot, `NONE` if none is free.
    free: u32,
    /// Occupied slots.
    occupied: usize,
    /// Entries ever removed.
    removed: u64,
}

impl Default for Slab {
    fn default() -> Self {
        Slab {
            pages: Vec::new(),
            used: 0,
            free: NONE,
            occupied: 0,
            removed: 0,
        }
    }
}

impl Slab {
    #[inline]
    fn slot(&mut self, index: usize) -> &mut SlotState {
        let (page, offset) = locate(index);
        &mut self.pages[page][offset]
    }

    fn insert(&mut self, entry: Entry) -> usize {
        if self.free != NONE {
            let index = self.free as usize;
            let slot = self.slot(index);
            let SlotState::Vacant(next) = *slot else {
                unreachable!("a slot on the free list is vacant");
            };
            *slot = SlotState::Occupied(entry);
            self.free = next;
            self.occupied += 1;
            return index;
        }
        let index = self.used;
        assert!(
            index < NONE as usize,
            "more than 2^32 - 1 pending entries in one shard"
        );
        let (page, _) = locate(index);
        if page == self.pages.len() {
            self.grow();
        }
        self.pages[page].push(SlotState::Occupied(entry));
        self.used += 1;
        self.occupied += 1;
        index
    }

    /// Adds the next page, empty. Cold: once per doubling.
    #[cold]
    fn grow(&mut self) {
        if self.pages.is_empty() {
            self.pages.reserve_exact(MAX_PAGES);
        }
        self.pages
            .push(Vec::with_capacity(FIRST_PAGE << self.pages.len()));
    }

    fn remove(&mut self, index: usize) -> Option<Entry> {
        let free = self.free;
        let slot = self.slot(index);
        match std::mem::replace(slot, SlotState::Vacant(free)) {
            SlotState::Occupied(entry) => {
                self.free = index as u32;
                self.occupied -= 1;
                self.removed += 1;
                Some(entry)
            }
            vacant => {
                *slot = vacant;
                None
            }
        }
    }

    fn get_mut(&mut self, index: usize) -> Option<&mut Entry> {
        if index >= self.used {
            return None;
        }
        match self.slot(index) {
            SlotState::Occupied(entry) => Some(entry),
            SlotState::Vacant(_) => None,
        }
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut Entry> {
        let used = self.used;
        self.pages
            .iter_mut()
            .flat_map(|page| page.iter_mut())
            .take(used)
            .filter_map(|slot| match slot {
                SlotState::Occupied(entry) => Some(entry),
                SlotState::Vacant(_) => None,
            })
    }
}

/// A shard on its own cache line, so two threads recording into two shards do
/// not contend on one line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(Mutex<Slab>);

#[derive(Debug)]
pub(crate) struct Registry {
    shards: Box<[Shard]>,
}

fn shard_count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cpus * 2).clamp(2, 32).next_power_of_two()
    })
}

/// This thread's shard, as a number to be reduced modulo the shard count.
/// Threads are numbered in the order they first record.
#[inline]
fn thread_shard() -> usize {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    SHARD
        .try_with(|shard| {
            if shard.get() == usize::MAX {
                shard.set(NEXT.fetch_add(1, Ordering::Relaxed) & (usize::MAX >> 1));
            }
            shard.get()
        })
        // A guard taken while the thread's locals are being destroyed.
        .unwrap_or(0)
}

impl Registry {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..shard_count()).map(|_| Shard::default()).collect(),
        }
    }

    pub(crate) fn insert(&self, entry: Entry) -> Slot {
        let shard = thread_shard() & (self.shards.len() - 1);
        let index = self.shards[shard].0.lock().insert(entry);
        Slot::new(shard, index)
    }

    /// The id of the entry in `slot`, which its guard still holds.
    pub(crate) fn id(&self, slot: Slot) -> TaskId {
        self.with(slot, |entry| entry.id)
    }

    /// The id and name of the entry in `slot`, which its guard still holds.
    pub(crate) fn identity(&self, slot: Slot) -> (TaskId, Option<Label>) {
        self.with(slot, |entry| (entry.id, entry.name.clone()))
    }

    fn with<R>(&self, slot: Slot, f: impl FnOnce(&Entry) -> R) -> R {
        let mut slab = self.shards[slot.shard()].0.lock();
        f(slab.get_mut(slot.index()).expect("a live guard's entry"))
    }

    /// Removes the entry a guard owns. Only that guard calls this, once.
    pub(crate) fn remove(&self, slot: Slot) -> Option<Entry> {
        self.shards[slot.shard()].0.lock().remove(slot.index())
    }

    /// Stores the join handle of a just-spawned task, unless the task has
    /// already finished (its slot is empty or reused by a newer entry).
    pub(crate) fn set_join(&self, slot: Slot, id: TaskId, join: JoinHandle<()>) {
        let mut slab = self.shards[slot.shard()].0.lock();
        if let Some(entry) = slab.get_mut(slot.index()) {
            if entry.id == id {
                entry.join = Some(join);
            }
        }
    }

    /// Entries ever removed, summed over the shards.
    pub(crate) fn removed(&self) -> u64 {
        self.shards.iter().map(|s| s.0.lock().removed).sum()
    }

    /// Entries present now, summed over the shards.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().occupied).sum()
    }

    /// Calls `f` on every entry, one shard at a time.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&mut Entry)) {
        for shard in self.shards.iter() {
            shard.0.lock().iter_mut().for_each(&mut f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_cover_every_index_once() {
        let mut next = 0;
        for page in 0..6 {
            for offset in 0..FIRST_PAGE << page {
                assert_eq!(locate(next), (page, offset));
                next += 1;
            }
        }
        assert_eq!(locate(NONE as usize - 1).0, MAX_PAGES - 1);
    }

    fn entry(id: u64) -> Entry {
        Entry {
            id: TaskId(id),
            name: None,
            kind: TaskKind::Guard,
            site: Location::caller(),
            started: Instant::now(),
            join: None,
        }
    }

    fn ids(registry: &Registry) -> Vec<u64> {
        let mut ids = Vec::new();
        registry.for_each(|entry| ids.push(entry.id.0));
        ids.sort_unstable();
        ids
    }

    #[test]
    fn slots_are_reused_across_pages() {
        let registry = Registry::new();
        let count = if cfg!(miri) { 100 } else { 1000 };
        let slots: Vec<Slot> = (1..=count).map(|id| registry.insert(entry(id))).collect();
        assert_eq!(ids(&registry), (1..=count).collect::<Vec<_>>());
        // Free every other entry, then fill the holes again.
        for (i, slot) in slots.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
            assert_eq!(registry.remove(*slot).map(|e| e.id.0), Some(i as u64 + 1));
        }
        assert_eq!(ids(&registry).len(), count as usize / 2);
        let refilled: Vec<Slot> = (count + 1..=count + count / 2)
            .map(|id| registry.insert(entry(id)))
            .collect();
        for slot in &refilled {
            assert!(
                slots.contains(slot),
                "a freed slot is used before a new one"
            );
        }
        assert_eq!(ids(&registry).len(), count as usize);
        assert_eq!(registry.id(refilled[0]), TaskId(count + 1));
        for slot in slots.iter().skip(1).step_by(2).chain(&refilled) {
            assert!(registry.remove(*slot).is_some());
        }
        assert!(ids(&registry).is_empty());
    }
}
