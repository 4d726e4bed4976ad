//! The record of pending work that reports are made from.
//!
//! Every `go()` task has an entry (its name, creation site, start time and
//! join handle); guards have one unless the group was built with
//! [`record_guards(false)`](crate::Builder::record_guards). Entries live in a
//! few shards, each a small slab behind its own lock, chosen by task id, so
//! concurrent adds from different threads rarely meet on one lock and there is
//! no group-wide lock on the add/done path. The count of pending work lives in
//! the state word, not here: the registry is only read to make a report.

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

#[derive(Debug, Default)]
struct Slab {
    entries: Vec<Option<Entry>>,
    free: Vec<usize>,
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

impl Registry {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..shard_count()).map(|_| Shard::default()).collect(),
        }
    }

    pub(crate) fn insert(&self, entry: Entry) -> Slot {
        let shard = (entry.id.0 as usize) & (self.shards.len() - 1);
        let mut slab = self.shards[shard].0.lock();
        let index = match slab.free.pop() {
            Some(index) => {
                slab.entries[index] = Some(entry);
                index
            }
            None => {
                slab.entries.push(Some(entry));
                slab.entries.len() - 1
            }
        };
        assert!(
            index <= u32::MAX as usize,
            "more than 2^32 pending entries in one shard"
        );
        Slot::new(shard, index)
    }

    /// The id of the entry in `slot`, which its guard still holds.
    pub(crate) fn id(&self, slot: Slot) -> TaskId {
        let slab = self.shards[slot.shard()].0.lock();
        slab.entries[slot.index()]
            .as_ref()
            .expect("a live guard's entry")
            .id
    }

    /// Removes the entry a guard owns. Only that guard calls this, once.
    pub(crate) fn remove(&self, slot: Slot) -> Option<Entry> {
        let mut slab = self.shards[slot.shard()].0.lock();
        let entry = slab.entries[slot.index()].take();
        slab.free.push(slot.index());
        entry
    }

    /// Stores the join handle of a just-spawned task, unless the task has
    /// already finished (its slot is empty or reused by a newer entry).
    pub(crate) fn set_join(&self, slot: Slot, id: TaskId, join: JoinHandle<()>) {
        let mut slab = self.shards[slot.shard()].0.lock();
        if let Some(Some(entry)) = slab.entries.get_mut(slot.index()) {
            if entry.id == id {
                entry.join = Some(join);
            }
        }
    }

    /// Calls `f` on every entry, one shard at a time.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&mut Entry)) {
        for shard in self.shards.iter() {
            let mut slab = shard.0.lock();
            slab.entries.iter_mut().flatten().for_each(&mut f);
        }
    }
}
