//! The record of pending work that reports are made from.
//!
//! Every `go()` task has an entry (its name, creation site, start time and
//! abort handle); guards have one unless the group was built with
//! [`record_guards(false)`](crate::WaitGroupBuilder::record_guards). Entries live in a
//! few shards, each a slab behind its own lock. A thread records into the
//! shard it was assigned when it first recorded (threads are dealt out in
//! turn), so threads rarely meet on one lock, and a guard completed on the
//! thread that took it finds its shard's line still in the cache. There is no
//! group-wide lock on the add/done path. The count of pending work lives in
//! the state word, not here: the registry is only read to make a report.
//!
//! A report (or a shutdown's aborts) walks a shard in chunks, each under the
//! shard's lock, so an add or done on that shard waits for one chunk at
//! most; while such a walk is under way, an add or done that finds its shard
//! held spins rather than sleeps, since a sleeping thread wakes later than
//! the chunk ends ([`Shard::lock`], [`Registry::map_chunked`]).
//!
//! Nothing is allocated before it is needed. A registry that has recorded
//! nothing is one empty cell and owns no memory; its first entry allocates
//! the shard table (a cell per shard) with the shard of the thread that
//! records it inside, one allocation, and every other shard is allocated
//! when a thread assigned to it first records. A group used from one thread
//! owns that one allocation.
//! A shard holds its first page of slots itself, so a thread with a few
//! entries of a group at a time allocates nothing more.
//!
//! # Pages
//!
//! A slab is a directory of pages. Page sizes double from [`FIRST_PAGE`]
//! slots up to [`MAX_PAGE`], and every page after that holds [`MAX_PAGE`]. A
//! slot's index says which page it is in and where ([`locate`]), so a page
//! never moves: growing allocates one page and copies nothing, and a slot
//! keeps its index from insert to remove (a guard holds it). Each page keeps
//! its own free list through its vacant slots and its count of occupied
//! ones, and the pages that have room are linked in a list that `insert`
//! takes the first of: insert and remove are O(1), with no search.
//!
//! # Giving memory back
//!
//! A page whose last entry is removed is freed at once, but for two:
//!
//! * page 0 ([`FIRST_PAGE`] slots) is part of its shard, so a group that
//!   has a few entries at a time never allocates after its first;
//! * one more empty page, the spare, stays while the shard holds entries, so
//!   a count that hovers around a page boundary does not allocate and free a
//!   page on each crossing. A page that empties while the spare is still
//!   empty is freed; the spare itself is freed when the shard empties.
//!
//! So a shard that empties is back to page 0 alone, whatever its peak, and
//! a shard holding `n` entries keeps the pages those entries are in, page 0
//! and the spare: at most `n + 2` pages of at most [`MAX_PAGE`] slots,
//! however many entries it held before. (Entries never move, so `n`
//! survivors in `n` pages do keep those pages.) A freed page leaves a small
//! header in the directory until the pages after it are freed too (the
//! directory shrinks from its end); the next page allocated takes the lowest
//! such hole.
//!
//! The price is paid by a group that fills and drains again and again: each
//! burst allocates its pages anew (and builds their free lists), and the
//! allocator may have handed the memory back to the system, to be faulted
//! in again. One entry at a time, or a count that stays up, pays nothing.
//!
//! A walk ([`Registry::map_chunked`]) reads every header of every shard (one
//! per [`MAX_PAGE`] slots up to the highest live one) and, in a page that
//! holds entries, its slots up to the last occupied one: O(entries + pages
//! kept), not O(peak).

use std::panic::Location;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::label::{GroupLabel, Label, TaskId};
use crate::report::{TaskInfo, TaskKind};

/// One pending guard or task.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) id: TaskId,
    pub(crate) name: Option<Label>,
    pub(crate) kind: TaskKind,
    pub(crate) site: &'static Location<'static>,
    pub(crate) started: Instant,
    /// A spawned task's abort handle (not a blocking task's: it cannot be
    /// aborted once it runs). Taken by the shutdown that aborts it.
    pub(crate) abort: Option<AbortHandle>,
    /// Set by the shutdown that aborted the task, which waits for it.
    pub(crate) watch: Option<Arc<AbortWatch>>,
    /// The task's own say on whether its failure cancels its group.
    pub(crate) critical: Option<bool>,
    /// Waiting for a slot under the group's concurrency limit.
    pub(crate) queued: bool,
    /// The limit slot a guard holds, asked for with
    /// [`TaskBuilder::try_add_in_limit`](crate::TaskBuilder::try_add_in_limit):
    /// freed with the entry.
    pub(crate) slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Entry {
    /// A new entry, started now.
    pub(crate) fn new(
        id: TaskId,
        name: Option<Label>,
        kind: TaskKind,
        site: &'static Location<'static>,
    ) -> Self {
        Entry {
            id,
            name,
            kind,
            site,
            started: Instant::now(),
            abort: None,
            watch: None,
            critical: None,
            queued: false,
            slot: None,
        }
    }

    /// The entry as a report lists it.
    pub(crate) fn info(&self, group: &GroupLabel, now: Instant) -> TaskInfo {
        TaskInfo {
            id: self.id,
            name: self.name.clone(),
            kind: self.kind,
            queued: self.queued,
            site: self.site,
            age: now.saturating_duration_since(self.started),
            group: group.clone(),
        }
    }
}

/// What a shutdown waits on after aborting tasks: each aborted task's entry,
/// when it is removed (the task's future dropped, or finished before the
/// abort took effect), settles here, so the shutdown learns which aborts took
/// effect without holding the tasks' join handles (those belong to the
/// `TaskHandle`s returned to the user).
#[derive(Debug)]
pub(crate) struct AbortWatch {
    group: GroupLabel,
    state: Mutex<WatchState>,
    settled: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct WatchState {
    /// Aborted tasks whose entries are not yet removed, or removed but not
    /// yet settled (their counts not yet given up).
    waiting: usize,
    /// The tasks marked for abort, listed as their entries are removed
    /// (their abort took effect, or they ended first), until the list is
    /// taken.
    aborted: Vec<Stopped>,
    /// The aborts this watch's tasks were marked with are being made, and
    /// this watch was given a window ([`Marked`]): a task marked with it
    /// that ends by itself meanwhile is listed too (it may be ended by one of
    /// those aborts: a part whose starter was aborted first). Otherwise a
    /// task that ends by itself is not listed (it was finishing, and its
    /// abort came too late).
    firing: bool,
    /// The list was taken: a task whose abort takes effect after that is
    /// not listed, nor counted as aborted (its shutdown counts it as
    /// finished, as it counts a task aborted by its handle).
    taken: bool,
    /// The watches of concurrent shutdowns that had aborted tasks this one
    /// found (it does not abort a task twice): it waits for those aborts
    /// too, without listing them, so that it does not report such a task as
    /// still running while its abort is landing. Weak: two shutdowns may
    /// each find the other's.
    others: Vec<Weak<AbortWatch>>,
}

/// An aborted task's entry as its watch keeps it until the report: what
/// [`TaskInfo`] needs but the group (the watch's) and the age (read once,
/// when the report is made).
#[derive(Debug)]
struct Stopped {
    id: TaskId,
    name: Option<Label>,
    kind: TaskKind,
    queued: bool,
    site: &'static Location<'static>,
    started: Instant,
}

impl AbortWatch {
    pub(crate) fn new(group: GroupLabel) -> Arc<Self> {
        Arc::new(AbortWatch {
            group,
            state: Mutex::new(WatchState::default()),
            settled: tokio::sync::Notify::new(),
        })
    }

    /// The aborts marked with this watch are being made, or no longer (see
    /// [`firing`](WatchState::firing)).
    fn set_firing(&self, firing: bool) {
        self.state.lock().firing = firing;
    }

    /// `more` aborted tasks to wait for.
    pub(crate) fn expect(&self, more: usize) {
        if more > 0 {
            let mut state = self.state.lock();
            state.waiting += more;
            // Room for each to settle as aborted: no copying as they come.
            state.aborted.reserve(more);
        }
    }

    /// Lists the task of `entry`, marked for abort and now ended (`dropped`:
    /// its abort took effect; else it ended by itself, listed only while the
    /// aborts are being made, see [`Registry::remove`]), unless
    /// the list was taken already; `true` if
    /// listed. Called under the lock of the entry's shard as the entry is
    /// removed, so that the shard counts the task as aborted exactly when
    /// it is listed (see [`Registry::remove`]). Lock order: the
    /// shard's lock, then this watch's.
    fn list(&self, entry: &mut Entry, dropped: bool) -> bool {
        let mut state = self.state.lock();
        if state.taken || !(dropped || state.firing) {
            return false;
        }
        state.aborted.push(Stopped {
            id: entry.id,
            name: entry.name.take(),
            kind: entry.kind,
            queued: entry.queued,
            site: entry.site,
            started: entry.started,
        });
        true
    }

    /// An aborted task's entry was removed (whether its abort took effect
    /// or it finished first) and its count given up: one fewer to wait for.
    pub(crate) fn settle(&self) {
        let mut state = self.state.lock();
        state.waiting -= 1;
        if state.waiting == 0 {
            self.settled.notify_waiters();
        }
    }

    /// Whether every aborted task settled.
    pub(crate) fn is_settled(&self) -> bool {
        self.unsettled() == 0
    }

    /// How many aborted tasks are still to settle.
    pub(crate) fn unsettled(&self) -> usize {
        self.state.lock().waiting
    }

    /// Notes that a task `other` (a concurrent shutdown's watch) aborted
    /// was found (see [`WatchState::others`]). Under the entry's shard lock,
    /// so the lock order is that of the rest: the shard's, then this
    /// watch's.
    fn wait_also(&self, other: &Arc<AbortWatch>) {
        let mut state = self.state.lock();
        // Noted once each, so the list is as long as the concurrent shutdowns
        // (one or two), not as the entries found: a short scan.
        if !state
            .others
            .iter()
            .any(|noted| std::ptr::eq(noted.as_ptr(), Arc::as_ptr(other)))
        {
            state.others.push(Arc::downgrade(other));
        }
    }

    /// The watches of concurrent shutdowns still alive (see
    /// [`WatchState::others`]).
    fn others(&self) -> Vec<Arc<AbortWatch>> {
        let state = self.state.lock();
        state.others.iter().filter_map(Weak::upgrade).collect()
    }

    /// How many tasks found aborted by concurrent shutdowns are still to
    /// settle.
    pub(crate) fn others_unsettled(&self) -> usize {
        self.others().iter().map(|other| other.unsettled()).sum()
    }

    /// Waits until every task found aborted by a concurrent shutdown
    /// settled.
    pub(crate) async fn others_settled(&self) {
        for other in self.others() {
            other.all_settled().await;
        }
    }

    /// Waits until every aborted task settled.
    pub(crate) async fn all_settled(&self) {
        loop {
            let notified = self.settled.notified();
            if self.state.lock().waiting == 0 {
                return;
            }
            notified.await;
        }
    }

    /// The shutdown this watch is for was dropped: it lists no more, as if
    /// its list were taken (nothing if it was). An abort that lands from now
    /// on counts as an entry removed only, as one after a report's list was
    /// taken does; one listed already stays counted as aborted (it landed
    /// before the shutdown was dropped).
    pub(crate) fn abandon(&self) {
        let mut state = self.state.lock();
        if !state.taken {
            state.taken = true;
            state.aborted = Vec::new();
        }
    }

    /// The tasks whose abort took effect so far, by id, their ages as of
    /// now. A shutdown calls this once: a task whose abort takes effect
    /// after it is not listed (see [`list`](Self::list)).
    pub(crate) fn take_aborted(&self) -> Vec<TaskInfo> {
        let mut aborted = {
            let mut state = self.state.lock();
            state.taken = true;
            std::mem::take(&mut state.aborted)
        };
        // In the order the runtime dropped them: most often a few runs.
        sort_by_id(&mut aborted, |t| t.id);
        let now = Instant::now();
        aborted
            .into_iter()
            .map(|t| TaskInfo {
                id: t.id,
                name: t.name,
                kind: t.kind,
                queued: t.queued,
                site: t.site,
                age: now.saturating_duration_since(t.started),
                group: self.group.clone(),
            })
            .collect()
    }
}

/// A list in at most this many runs of ascending ids is merged by
/// [`sort_by_id`]: the two sorts tie at about 32 runs to 64.
const FEW_RUNS: usize = 32;

/// Sorts a list made from registry entries by id (ids are unique, so any
/// sort gives one order). Such a list most often comes as a few runs of
/// ascending ids: a registry walk yields each shard's entries in slot order,
/// which is id order until slots are reused, and aborted tasks settle in the
/// order the runtime ran them. A stable sort merges a few runs in linear
/// time, where `sort_unstable` does not look for them; on entries in no
/// order (slots reused) it is the slower by about 2x. So the runs are
/// counted first, up to [`FEW_RUNS`] (`benches/profile.rs sort` times both
/// sorts on 1e6 records of a report's size, by the number of runs). The
/// stable sort borrows scratch space for up to half the list while it runs.
pub(crate) fn sort_by_id<T>(items: &mut [T], id: impl Fn(&T) -> TaskId) {
    let descents = items
        .windows(2)
        .filter(|pair| id(&pair[0]) > id(&pair[1]))
        .take(FEW_RUNS)
        .count();
    if descents < FEW_RUNS {
        items.sort_by_key(id);
    } else {
        items.sort_unstable_by_key(id);
    }
}

/// A shutdown's abort of one entry, under its shard's lock: a spawned task
/// not aborted before has its abort handle taken and used, or, if the handle
/// is not stored yet, is marked to be aborted when it is (see
/// [`Registry::set_abort`]); either way it gets `watch`, which the caller
/// then tells to expect it. Guards, blocking tasks and tracked futures have
/// no handle and never get one. `true` if the entry is to be expected.
fn abort_entry(entry: &mut Entry, watch: &Arc<AbortWatch>) -> bool {
    match mark_for_abort(entry, watch) {
        Some(abort) => {
            if let Some(abort) = abort {
                abort.abort();
            }
            true
        }
        None => false,
    }
}

/// [`abort_entry`] but for the abort itself: the entry gets `watch` (`None`
/// if it is not to be expected), and its abort handle, if it has one, is
/// returned for the caller to use.
fn mark_for_abort(entry: &mut Entry, watch: &Arc<AbortWatch>) -> Option<Option<AbortHandle>> {
    // An entry with a watch was aborted once already; by another shutdown,
    // this one waits for that abort too.
    if let Some(other) = &entry.watch {
        if !Arc::ptr_eq(other, watch) {
            watch.wait_also(other);
        }
        return None;
    }
    let abort = entry.abort.take();
    if abort.is_none() && entry.kind != TaskKind::Task {
        return None;
    }
    entry.watch = Some(Arc::clone(watch));
    Some(abort)
}

/// The abort handles of tasks [`Registry::mark_all`] marked, aborted in
/// their order when this is dropped: after the caller has marked all it
/// aborts together, so that no abort is made before every task is marked,
/// and even if the caller unwinds in between (a marked task's watch waits
/// for its abort).
///
/// The watches given a window (a group's scoped subtree, marked with the
/// group at its turn, or by a forced stop with the whole tree: see
/// `drain.rs`) list a marked task that ends by
/// itself while these aborts are being made, from the first to the last:
/// such a task may be ended by one of them (a part waiting on the task in
/// the parent that started it, whose abort lands first on another worker).
/// A task that ends by itself otherwise (before the first abort is made,
/// or after the last: one still running when its own abort was made) is
/// not listed. The group's own tasks get no window: a task of the group
/// that another of its tasks started is aborted before its starter (the
/// newest first), so its starter's abort cannot end it first.
#[derive(Default)]
pub(crate) struct Marked {
    handles: Vec<AbortHandle>,
    windows: Vec<Arc<AbortWatch>>,
}

impl Marked {
    /// Room for `tasks` more handles, for a caller that knows about how
    /// many it will mark: the list is then made once, not grown by
    /// doubling (which held up to three times its size while it copied).
    pub(crate) fn reserve(&mut self, tasks: usize) {
        self.handles.reserve(tasks);
    }
}

/// Settles an aborted or marked task's watch when dropped (see
/// [`AbortWatch::settle`]): after its task's count is given up, whether
/// that returns or unwinds (a failure kept by the group, freed with it
/// there, may panic in its `Drop`), so that the shutdown waiting on the
/// watch is not left waiting out its share.
pub(crate) struct SettleOnDrop(pub(crate) Option<Arc<AbortWatch>>);

impl Drop for SettleOnDrop {
    #[inline]
    fn drop(&mut self) {
        if let Some(watch) = self.0.take() {
            watch.settle();
        }
    }
}

impl Drop for Marked {
    fn drop(&mut self) {
        for watch in &self.windows {
            watch.set_firing(true);
        }
        for abort in self.handles.drain(..) {
            abort.abort();
        }
        for watch in self.windows.drain(..) {
            watch.set_firing(false);
        }
    }
}

/// The end of a task a shutdown marked for abort, under its shard's lock
/// (see [`Registry::remove`]): whether its watch listed it, for the shard to
/// count it as aborted.
#[cold]
#[inline(never)]
fn list_marked(entry: &mut Entry, dropped: bool) -> bool {
    let Some(watch) = entry.watch.take() else {
        return false;
    };
    let listed = watch.list(entry, dropped);
    entry.watch = Some(watch);
    listed
}

/// What a task whose abort handle comes after a shutdown's abort walk is to
/// do ([`Registry::set_abort`]).
#[derive(Debug)]
pub(crate) enum Late {
    /// Nothing is aborting its group: keep the handle.
    Keep,
    /// Be aborted now; in the watch given, which already counts it, if the
    /// shutdown still waits for its aborts.
    Abort(Option<Arc<AbortWatch>>),
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

/// Slots in a slab's first page; page `k` holds `FIRST_PAGE << k` until that
/// reaches [`MAX_PAGE`]. Small, because page 0 is never given back and most
/// groups hold a few entries at a time (a per-request group, a component
/// with a task or two): 2 slots are 192 bytes, where 8 were 768.
const FIRST_PAGE: usize = 2;

/// Slots in the largest pages: every page from [`FULL_PAGE`] on. It bounds
/// what one surviving entry keeps allocated (1024 slots of 96 bytes, the
/// size of an `Entry` on 64-bit targets), and a page this size stays under
/// the allocator's usual `mmap` threshold.
const MAX_PAGE: usize = 1024;

/// The first page of [`MAX_PAGE`] slots; the pages before it double.
const FULL_PAGE: usize = (MAX_PAGE.trailing_zeros() - FIRST_PAGE.trailing_zeros()) as usize;

/// Slots a [`Registry::map_chunked`] chunk scans under one lock: with the
/// report's copy of each entry (tens of ns), well under a millisecond.
const CHUNK: usize = 1024;

/// Ends a page's free list and the list of pages with room. No slot index
/// reaches it (see [`MAX_PAGES`]).
const NONE: u32 = u32::MAX;

/// Pages in a full directory: the last one ends at or below [`NONE`], so
/// every slot index fits the 32 bits a [`Slot`] gives it and is below `NONE`.
/// (Page `FULL_PAGE + j` ends at `(j + 2) * MAX_PAGE - FIRST_PAGE`.)
const MAX_PAGES: usize =
    ((NONE as u64 + FIRST_PAGE as u64) / MAX_PAGE as u64) as usize + FULL_PAGE - 1;

/// The page holding `index`, and the index within it.
#[inline]
fn locate(index: usize) -> (usize, usize) {
    // Shifted by FIRST_PAGE, a doubling page k spans [FIRST_PAGE << k,
    // FIRST_PAGE << (k + 1)), so its number is the position of the highest
    // bit; from FULL_PAGE on, page FULL_PAGE + j spans [(j + 1) * MAX_PAGE,
    // (j + 2) * MAX_PAGE).
    let shifted = index + FIRST_PAGE;
    if shifted < MAX_PAGE {
        let page =
            (usize::BITS - 1 - shifted.leading_zeros() - FIRST_PAGE.trailing_zeros()) as usize;
        (page, shifted - (FIRST_PAGE << page))
    } else {
        (shifted / MAX_PAGE + FULL_PAGE - 1, shifted % MAX_PAGE)
    }
}

/// The index of page `page`'s first slot (the inverse of [`locate`]).
#[inline]
fn page_start(page: usize) -> usize {
    let shifted = if page < FULL_PAGE {
        FIRST_PAGE << page
    } else {
        (page + 1 - FULL_PAGE) * MAX_PAGE
    };
    shifted - FIRST_PAGE
}

/// The number of slots in page `page`.
#[inline]
fn page_len(page: usize) -> usize {
    if page < FULL_PAGE {
        FIRST_PAGE << page
    } else {
        MAX_PAGE
    }
}

#[derive(Debug)]
enum SlotState {
    Occupied(Entry),
    /// Free; the next free slot of the same page, as an index within the
    /// page (`NONE` for the end of the list).
    Vacant(u32),
}

/// Where a page stands: the part of a page that is not its slots.
#[derive(Debug)]
struct Head {
    /// The slab index of the page's first slot, `page_start(k)`.
    start: u32,
    /// Occupied slots.
    occupied: u32,
    /// The next slot to take, as an index within the page; `NONE` when the
    /// page is full.
    free: u32,
    /// The page before this one and after it in the slab's list of pages
    /// with room (`NONE` at the ends); meaningless while not on the list.
    prev: u32,
    next: u32,
}

impl Head {
    /// The head of a page of all vacant slots, chained in order, as it is
    /// made; not on the room list yet.
    fn new(number: usize) -> Self {
        Head {
            start: page_start(number) as u32,
            occupied: 0,
            free: 0,
            prev: NONE,
            next: NONE,
        }
    }

    fn freed() -> Self {
        Head {
            start: 0,
            occupied: 0,
            free: NONE,
            prev: NONE,
            next: NONE,
        }
    }
}

/// The `len` slots of a page as it is made: all vacant, chained in order on
/// its free list, so taking a slot is one pop and the page never
/// reallocates.
fn vacant_slots(len: usize) -> impl Iterator<Item = SlotState> {
    (1..=len).map(move |next| SlotState::Vacant(if next < len { next as u32 } else { NONE }))
}

/// One page after page 0, allocated or freed.
#[derive(Debug)]
struct Page {
    head: Head,
    /// An allocated page `k` has its `page_len(k)` slots. A freed page has
    /// none (and no allocation), which is how it is told apart.
    slots: Box<[SlotState]>,
}

impl Page {
    fn freed() -> Self {
        Page {
            head: Head::freed(),
            slots: Box::default(),
        }
    }

    fn is_allocated(&self) -> bool {
        !self.slots.is_empty()
    }
}

/// A shard's entries. Page 0 is part of the slab, made with it (a shard is
/// made for its first entry) and never freed, so a thread with at most
/// [`FIRST_PAGE`] entries of a group pending at a time allocates nothing for
/// them but the shard; the pages after it are allocated as needed.
#[derive(Debug)]
struct Slab {
    /// Page 0's head and slots.
    first: Head,
    first_slots: [SlotState; FIRST_PAGE],
    /// Page `k` (from 1) is at `pages[k - 1]`; the last one is always
    /// allocated (freed ones at the end are dropped).
    pages: Vec<Page>,
    /// The first page of the list of pages with room: every allocated page
    /// that is not full is on it, and no other. `NONE` if none has room.
    room: u32,
    /// The page kept for the next growth: `NONE`, or an allocated page
    /// other than page 0 that was empty when it was chosen (it may have
    /// been filled since: `insert` does not look, `page_emptied` does).
    /// Every allocated page but page 0 that is empty is the spare, so an
    /// empty slab (where `page_emptied` frees the spare) holds page 0 alone.
    spare: u32,
    /// Allocated pages, page 0 included; the other pages in `pages` are
    /// holes.
    allocated: usize,
    /// Occupied slots, in all pages.
    len: usize,
    /// Entries ever removed from this slab.
    removed: u64,
    /// Of those, the entries of tasks a shutdown aborted and listed
    /// ([`AbortWatch::list`]).
    aborted: u64,
}

impl Default for Slab {
    fn default() -> Self {
        let mut slots = vacant_slots(FIRST_PAGE);
        Slab {
            first: Head::new(0),
            first_slots: std::array::from_fn(|_| slots.next().expect("FIRST_PAGE slots")),
            pages: Vec::new(),
            // Page 0 alone, with room.
            room: 0,
            spare: NONE,
            allocated: 1,
            len: 0,
            removed: 0,
            aborted: 0,
        }
    }
}

impl Slab {
    /// Pages in the directory, page 0 and the holes included.
    #[inline]
    fn page_count(&self) -> usize {
        1 + self.pages.len()
    }

    #[inline]
    fn head(&self, number: usize) -> &Head {
        match number {
            0 => &self.first,
            _ => &self.pages[number - 1].head,
        }
    }

    #[inline]
    fn head_mut(&mut self, number: usize) -> &mut Head {
        match number {
            0 => &mut self.first,
            _ => &mut self.pages[number - 1].head,
        }
    }

    /// Page `number`'s head and slots (none for a freed page).
    ///
    /// # Panics
    ///
    /// If `number` is not below [`page_count`](Self::page_count).
    #[inline]
    fn page_mut(&mut self, number: usize) -> (&mut Head, &mut [SlotState]) {
        match number {
            0 => (&mut self.first, &mut self.first_slots),
            _ => {
                let page = &mut self.pages[number - 1];
                (&mut page.head, &mut page.slots)
            }
        }
    }

    #[inline]
    fn insert(&mut self, entry: Entry) -> usize {
        if self.room == NONE {
            self.add_page();
        }
        let number = self.room as usize;
        let (head, slots) = self.page_mut(number);
        // On the room list, so not full: `free` is a slot.
        let offset = head.free as usize;
        let slot = &mut slots[offset];
        let SlotState::Vacant(next) = *slot else {
            unreachable!("a slot on the free list is vacant");
        };
        *slot = SlotState::Occupied(entry);
        head.free = next;
        head.occupied += 1;
        let index = head.start as usize + offset;
        if next == NONE {
            self.unlink_room(number);
        }
        self.len += 1;
        index
    }

    /// Allocates a page after page 0, all vacant, and puts it first on the
    /// room list: the lowest hole in the directory if there is one, else a
    /// page at its end. Cold: once per page of growth.
    ///
    /// Nearly all its cost is the allocation, not the chaining. Under
    /// callgrind, 3 x (100k `go()` then `wait()`) on a current-thread
    /// runtime spend ~130 instructions a task here: ~118 in `malloc`, most
    /// of them glibc merging the small chunks the finished tasks freed
    /// (`malloc_consolidate`, which a large request runs first), and ~7.5 in
    /// writing the vacant slots. Filling pages lazily instead (a `Vec` with
    /// the page's capacity, slots pushed as first taken) was measured at
    /// +33 instructions a task: push's capacity check, the fullness test on
    /// insert and remove, and a slower drop of a freed page (issue 16).
    #[cold]
    #[inline(never)]
    fn add_page(&mut self) {
        let number = if self.allocated < self.page_count() {
            1 + self
                .pages
                .iter()
                .position(|page| !page.is_allocated())
                .expect("a directory with fewer pages allocated than headers has a hole")
        } else {
            assert!(
                self.page_count() < MAX_PAGES,
                "more than 2^32 - 1024 pending entries in one shard"
            );
            self.pages.push(Page::freed());
            self.pages.len()
        };
        self.pages[number - 1] = Page {
            head: Head::new(number),
            slots: vacant_slots(page_len(number)).collect(),
        };
        self.allocated += 1;
        self.link_room(number);
    }

    fn link_room(&mut self, number: usize) {
        let head = self.room;
        let page = self.head_mut(number);
        page.prev = NONE;
        page.next = head;
        if head != NONE {
            self.head_mut(head as usize).prev = number as u32;
        }
        self.room = number as u32;
    }

    fn unlink_room(&mut self, number: usize) {
        let Head { prev, next, .. } = *self.head(number);
        if prev == NONE {
            self.room = next;
        } else {
            self.head_mut(prev as usize).next = next;
        }
        if next != NONE {
            self.head_mut(next as usize).prev = prev;
        }
    }

    /// Removes the entry at `index`, if there is one; a task's that a
    /// shutdown marked is listed by its watch on the way, and counted as
    /// aborted if it is (`dropped`: its future was dropped unfinished; see
    /// [`Registry::remove`] and [`Registry::remove_aborted`]).
    #[inline]
    fn remove(&mut self, index: usize, dropped: bool) -> Option<Entry> {
        let (number, offset) = locate(index);
        if number >= self.page_count() {
            return None;
        }
        let (head, slots) = self.page_mut(number);
        let free = head.free;
        let slot = slots.get_mut(offset)?;
        if let SlotState::Vacant(_) = slot {
            return None;
        }
        let SlotState::Occupied(mut entry) = std::mem::replace(slot, SlotState::Vacant(free))
        else {
            unreachable!("checked above");
        };
        head.free = offset as u32;
        head.occupied -= 1;
        let emptied = head.occupied == 0;
        self.len -= 1;
        self.removed += 1;
        if entry.watch.is_some() && list_marked(&mut entry, dropped) {
            self.aborted += 1;
        }
        // A page that was full goes back on the room list: a few writes,
        // done here because a shard holding as many entries as page 0 has
        // slots (a thread with two guards pending) does this on every
        // removal. One emptied is given back. Page 0 emptying is the common
        // case (one entry at a time) and frees nothing, unless the slab just
        // emptied and has a spare to free.
        if free == NONE {
            self.link_room(number);
        }
        if emptied && (number != 0 || (self.len == 0 && self.spare != NONE)) {
            self.page_emptied(number);
        }
        Some(entry)
    }

    /// Gives back what an emptied page makes unneeded (see the module docs):
    /// the page, unless it is page 0 or becomes the spare (there is no other
    /// empty one), and the spare if the slab is now empty. Once per page
    /// drained.
    #[cold]
    #[inline(never)]
    fn page_emptied(&mut self, number: usize) {
        if number != 0 {
            let spare = self.spare;
            let other_spare = spare != NONE
                && spare as usize != number
                && self.head(spare as usize).occupied == 0;
            if self.len != 0 && !other_spare {
                // The old spare, if any, was filled since: no longer kept.
                self.spare = number as u32;
                return;
            }
            self.free_page(number);
        }
        if self.len == 0 && self.spare != NONE {
            // Empty like every page.
            self.free_page(self.spare as usize);
        }
    }

    /// Frees an empty page other than page 0, drops the freed headers that
    /// end the directory, and shrinks the directory if it is mostly unused.
    fn free_page(&mut self, number: usize) {
        debug_assert!(number != 0 && self.head(number).occupied == 0);
        if self.spare == number as u32 {
            self.spare = NONE;
        }
        // Empty, so it has room, so it is on the list.
        self.unlink_room(number);
        self.pages[number - 1] = Page::freed();
        self.allocated -= 1;
        while self.pages.last().is_some_and(|page| !page.is_allocated()) {
            self.pages.pop();
        }
        if self.pages.capacity() > 4 && self.pages.len() * 4 <= self.pages.capacity() {
            self.pages.shrink_to(self.pages.len() * 2);
        }
    }

    fn get_mut(&mut self, index: usize) -> Option<&mut Entry> {
        let (number, offset) = locate(index);
        if number >= self.page_count() {
            return None;
        }
        match self.page_mut(number).1.get_mut(offset)? {
            SlotState::Occupied(entry) => Some(entry),
            SlotState::Vacant(_) => None,
        }
    }

    /// Calls `f` on the entries from slab index `from` on, scanning at most
    /// about `budget` slots (a page's walk from its start stops at its last
    /// entry; empty pages are skipped by their count, each costing one);
    /// returns the index to resume from, or `None` once the slab is done.
    fn visit_from(
        &mut self,
        from: usize,
        budget: usize,
        f: &mut impl FnMut(usize, &mut Entry),
    ) -> Option<usize> {
        let (first, mut offset) = locate(from);
        let mut spent = 0;
        for number in first..self.page_count() {
            let (head, slots) = self.page_mut(number);
            let start = offset;
            offset = 0;
            spent += 1;
            if head.occupied == 0 {
                continue;
            }
            // From the page's start, its walk ends at its last entry.
            let mut left = if start == 0 {
                head.occupied as usize
            } else {
                usize::MAX
            };
            for (at, slot) in slots.iter_mut().enumerate().skip(start) {
                if left == 0 {
                    break;
                }
                if spent >= budget {
                    return Some(page_start(number) + at);
                }
                spent += 1;
                if let SlotState::Occupied(entry) = slot {
                    left -= 1;
                    f(page_start(number) + at, entry);
                }
            }
        }
        None
    }

    /// Every entry: empty pages are skipped by their count, and a page's
    /// walk stops at its last entry. The tests' check on the chunked walk.
    #[cfg(test)]
    fn iter_mut(&mut self) -> impl Iterator<Item = &mut Entry> {
        let first = (&self.first, &mut self.first_slots[..]);
        let rest = self
            .pages
            .iter_mut()
            .map(|page| (&page.head, &mut page.slots[..]));
        std::iter::once(first)
            .chain(rest)
            .filter(|(head, _)| head.occupied != 0)
            .flat_map(|(head, slots)| {
                let occupied = head.occupied as usize;
                slots
                    .iter_mut()
                    .filter_map(|slot| match slot {
                        SlotState::Occupied(entry) => Some(entry),
                        SlotState::Vacant(_) => None,
                    })
                    .take(occupied)
            })
    }

    /// Heap bytes held outside the shard: the directory and the slots of
    /// the pages after page 0.
    fn retained_bytes(&self) -> usize {
        self.pages.capacity() * std::mem::size_of::<Page>()
            + self
                .pages
                .iter()
                .map(|page| std::mem::size_of_val::<[SlotState]>(&page.slots))
                .sum::<usize>()
    }
}

/// A shard on cache lines of its own, so two threads recording into two
/// shards do not contend on one line.
///
/// Without aligning the allocation, as [`Node`](crate::node::Node) does: a type
/// aligned to more than 16 bytes is allocated through `posix_memalign` in
/// glibc, which cost about 600 instructions a shard (callgrind, `profile
/// tree`: a tree of groups with a task each makes a shard per group) where
/// `malloc` costs about 100, and splits off the chunks around the aligned
/// block, which the allocator merges again later. Instead, in declaration
/// order (`repr(C)`), 48 bytes that nothing reads come before the lock and
/// after the counters: malloc's blocks are 16-byte aligned, so the 64-byte
/// lines those fields are on hold nothing of another allocation.
#[derive(Debug, Default)]
#[repr(C)]
struct Shard {
    _before: Pad,
    slab: Mutex<Slab>,
    /// Chunked walks (reports, a shutdown's aborts) under way on this shard:
    /// while there is one, a thread that finds the shard held spins for it.
    walks: AtomicU32,
    /// Threads spinning in [`Shard::lock_contended`] for this shard, so a
    /// walk between two chunks knows to let one in.
    spinning: AtomicU32,
    _after: Pad,
}

/// What a report counts of a registry, summed over its shards, each shard's
/// read at one moment (under its lock): see [`Registry::removed_and_len`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counts {
    /// Entries ever removed.
    pub(crate) removed: u64,
    /// Of those, the tasks a shutdown aborted and listed.
    pub(crate) aborted: u64,
    /// Entries there.
    pub(crate) entries: usize,
}

impl Counts {
    fn add(&mut self, slab: &Slab) {
        self.removed += slab.removed;
        self.aborted += slab.aborted;
        self.entries += slab.len;
    }
}

/// 48 bytes around a [`Shard`]'s fields: a 64-byte line less malloc's 16.
/// Never read.
#[derive(Default)]
struct Pad(#[allow(dead_code)] [u64; 6]);

impl std::fmt::Debug for Pad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pad")
    }
}

impl Shard {
    /// Locks the shard for one entry's insert, update or removal.
    ///
    /// Those holds last tens of ns; a walk's chunks last tens of µs
    /// ([`Registry::map_chunked`]). `parking_lot` spins a few µs, then
    /// sleeps, and a thread that sleeps through a chunk wakes late: on the
    /// 2-vCPU virtual machine of issue 16's runs, the add/done thread of
    /// `--only w10.pending` stalled 300-400 µs every other chunk, three
    /// times the chunk itself. So while a walk is under way on the shard, a
    /// thread that finds it held spins for it instead (see
    /// [`lock_contended`](Self::lock_contended)); otherwise the holder is
    /// another add or done, and `parking_lot`'s own spin-then-sleep is the
    /// right wait (spinning longer for a holder that lost its core, with
    /// more threads than cores, made add/done up to 1.9x slower:
    /// `benches/oversubscribed.rs`).
    #[inline]
    fn lock(&self) -> MutexGuard<'_, Slab> {
        match self.slab.try_lock() {
            Some(slab) => slab,
            None => self.lock_contended(SPIN),
        }
    }

    /// Spins for the shard while a walk is under way on it, for up to
    /// `spin`, then sleeps for it. After the first µs each round of spinning
    /// also yields the core, as `parking_lot` does, so a holder preempted on
    /// this core runs instead.
    #[cold]
    #[inline(never)]
    fn lock_contended(&self, spin: Duration) -> MutexGuard<'_, Slab> {
        // Miri's threads are green: spinning only burns its interpreter.
        if cfg!(miri) || self.walks.load(Ordering::Relaxed) == 0 {
            return self.slab.lock();
        }
        self.spinning.fetch_add(1, Ordering::Relaxed);
        let start = std::time::Instant::now();
        let mut rounds = 0_u32;
        let slab = loop {
            // Reads while it is held, so the holder keeps the line.
            let mut taken = None;
            for _ in 0..64 {
                if !self.slab.is_locked() {
                    if let Some(slab) = self.slab.try_lock() {
                        taken = Some(slab);
                        break;
                    }
                }
                std::hint::spin_loop();
            }
            if let Some(slab) = taken {
                break slab;
            }
            if start.elapsed() >= spin || self.walks.load(Ordering::Relaxed) == 0 {
                // Asleep, the fair unlock between a walk's chunks hands the
                // shard over: no window is needed for this thread.
                self.spinning.fetch_sub(1, Ordering::Relaxed);
                return self.slab.lock();
            }
            rounds += 1;
            if rounds > 1 {
                std::thread::yield_now();
            }
        };
        self.spinning.fetch_sub(1, Ordering::Relaxed);
        slab
    }

    /// Locks the shard for a walk's next chunk. If a thread spins for it in
    /// [`lock`](Self::lock), waits first (for up to `window`, [`WINDOW`] but
    /// in tests) until that thread took it: the fair unlock before this
    /// hands the shard only to a thread asleep.
    fn lock_after_window(&self, window: Duration) -> MutexGuard<'_, Slab> {
        if self.spinning.load(Ordering::Relaxed) == 0 {
            return self.slab.lock();
        }
        let start = std::time::Instant::now();
        // Until the spinner took it, or stopped spinning (it took the shard
        // and let it go already, or fell asleep, and then the fair unlock
        // woke it), or `window` passed.
        while self.spinning.load(Ordering::Relaxed) > 0
            && !self.slab.is_locked()
            && start.elapsed() < window
        {
            std::hint::spin_loop();
        }
        self.slab.lock()
    }
}

/// Counts a chunked walk on a shard ([`Shard::walks`]) while it lives.
struct Walking<'a>(&'a AtomicU32);

impl<'a> Walking<'a> {
    fn start(walks: &'a AtomicU32) -> Self {
        walks.fetch_add(1, Ordering::Relaxed);
        Walking(walks)
    }
}

impl Drop for Walking<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long [`Shard::lock`] spins on a held shard during a walk before it
/// sleeps: several times a walk's chunk.
const SPIN: Duration = Duration::from_micros(500);

/// How long a walk between two chunks waits for a spinning thread to take
/// the shard (a spinner that lost its core is not waited for longer).
const WINDOW: Duration = Duration::from_micros(20);

/// The shard table, made by a registry's first insert together with that
/// thread's shard, in one allocation: most groups are recorded into from one
/// thread (a component's task, a request's group), and a separate shard
/// cost each such group an allocation and its free (about 400 instructions
/// per group in workload 8's tree, `benches/profile.rs tree`).
type Shards = Box<ShardTable<[OnceLock<Box<Shard>>]>>;

/// See [`Shards`]; `C` is the cells, an array made unsized.
#[derive(Debug)]
struct ShardTable<C: ?Sized> {
    /// The index of `first` among the shards.
    first_index: usize,
    /// The shard of the thread that made the table.
    first: Shard,
    /// One cell per shard, each filled when a thread assigned to that shard
    /// first records; the cell at `first_index` stays empty.
    cells: C,
}

impl ShardTable<[OnceLock<Box<Shard>>]> {
    /// The number of shards, a power of two.
    fn count(&self) -> usize {
        self.cells.len()
    }

    /// The shard at `index`, if it was made.
    #[inline]
    fn get(&self, index: usize) -> Option<&Shard> {
        if index == self.first_index {
            return Some(&self.first);
        }
        self.cells.get(index)?.get().map(|shard| &**shard)
    }

    /// The shards made so far, in index order.
    fn made(&self) -> impl Iterator<Item = &Shard> {
        (0..self.count()).filter_map(|index| self.get(index))
    }
}

#[derive(Debug)]
pub(crate) struct Registry {
    /// Filled by the first insert; the number of shards is a power of two.
    shards: OnceLock<Shards>,
}

fn shard_count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cpus * 2).clamp(2, 32).next_power_of_two()
    })
}

/// A shard table of [`shard_count`] shards, with the shard of `thread` (a
/// [`thread_shard`] number) made in it.
#[cold]
fn new_shards(thread: usize) -> Shards {
    fn with<const N: usize>(thread: usize) -> Shards {
        // Unsized from `[_; N]`: one allocation, with no `unsafe`.
        Box::new(ShardTable {
            first_index: thread & (N - 1),
            first: Shard::default(),
            cells: std::array::from_fn::<_, N, _>(|_| OnceLock::new()),
        })
    }
    match shard_count() {
        2 => with::<2>(thread),
        4 => with::<4>(thread),
        8 => with::<8>(thread),
        16 => with::<16>(thread),
        32 => with::<32>(thread),
        n => unreachable!("{n} shards: a power of two from 2 to 32"),
    }
}

/// What [`making_lock`] hands out: a few locks, shared by all registries.
#[allow(clippy::declare_interior_mutable_const)] // only the array below copies it
const MAKING_LOCK: Mutex<()> = parking_lot::const_mutex(());
static MAKING: [Mutex<()>; 16] = [MAKING_LOCK; 16];

/// The lock under which a thread makes a shard of `registry`, and which an
/// abort's walk takes and lets go before it looks for shards
/// ([`Registry::abort_all`]). A thread that records its first entry in a
/// shard the walk found not made shares no shard lock with the walk; this
/// orders the two: the shard was made before the walk looked (and is
/// walked), or after, by a thread that saw what the walk's caller did
/// first. Taken once per shard made (the first with the shard table) and
/// once per walk, never on add/done, and allocating nothing: a shutdown of
/// a tree of any size costs no memory for it. Striped by address, as a
/// registry lives in its group's node and does not move.
fn making_lock(registry: &Registry) -> &'static Mutex<()> {
    let at = registry as *const Registry as usize;
    &MAKING[(at >> 6) % MAKING.len()]
}

/// This thread's shard, as a number to be reduced modulo the shard count.
/// Threads are numbered in the order they first record.
#[inline]
fn thread_shard() -> usize {
    use std::cell::Cell;
    use std::sync::atomic::AtomicUsize;
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
    /// An empty registry; it allocates nothing until its first insert.
    pub(crate) const fn new() -> Self {
        Self {
            shards: OnceLock::new(),
        }
    }

    #[inline]
    pub(crate) fn insert(&self, entry: Entry) -> Slot {
        let thread = thread_shard();
        let shards = match self.shards.get() {
            Some(shards) => shards,
            None => self.make_table(thread),
        };
        let shard = thread & (shards.count() - 1);
        let made = match shards.get(shard) {
            Some(made) => made,
            None => self.make_shard(&shards.cells[shard]),
        };
        let index = made.lock().insert(entry);
        Slot::new(shard, index)
    }

    /// Makes the shard table with the shard of `thread` in it (unless
    /// another thread just made the table), under this registry's
    /// [`making_lock`], as [`make_shard`](Self::make_shard) makes a shard:
    /// see [`abort_all`](Self::abort_all). Once per registry.
    #[cold]
    #[inline(never)]
    fn make_table(&self, thread: usize) -> &Shards {
        let _making = making_lock(self).lock();
        self.shards.get_or_init(|| new_shards(thread))
    }

    /// Makes the shard of `cell` (unless another thread just did), under
    /// this registry's [`making_lock`]: see [`abort_all`](Self::abort_all).
    /// Once per shard but the table's first.
    #[cold]
    #[inline(never)]
    fn make_shard<'a>(&self, cell: &'a OnceLock<Box<Shard>>) -> &'a Shard {
        let _making = making_lock(self).lock();
        cell.get_or_init(Box::default)
    }

    /// The shard `slot` is in, if it was ever made (it was, if `slot` came
    /// from `insert`).
    #[inline]
    fn shard(&self, slot: Slot) -> Option<&Shard> {
        self.shards.get()?.get(slot.shard())
    }

    /// The shards made so far.
    fn made_shards(&self) -> impl Iterator<Item = &Shard> {
        self.shards
            .get()
            .into_iter()
            .flat_map(|shards| shards.made())
    }

    /// Nothing was ever recorded here: no shard was made.
    pub(crate) fn never_used(&self) -> bool {
        self.shards.get().is_none()
    }

    /// The id of the entry in `slot`, which its guard still holds.
    pub(crate) fn id(&self, slot: Slot) -> TaskId {
        self.with(slot, |entry| entry.id)
    }

    /// The id, name and say on cancelling of the entry in `slot`, which its
    /// guard still holds.
    pub(crate) fn identity(&self, slot: Slot) -> (TaskId, Option<Label>, Option<bool>) {
        self.with(slot, |entry| (entry.id, entry.name.clone(), entry.critical))
    }

    /// Marks the entry in `slot` as running (no longer queued for a slot),
    /// unless a shutdown marked the task for abort while it was queued
    /// (its entry has a watch): then returns `false`, and the task must not
    /// start. Its abort is made with the marking, under no lock and with no
    /// wait between them ([`mark_all`](Self::mark_all) and the drop of its
    /// `Marked`), so it is on its way: the aborts of the group's running
    /// tasks free the slots such a task is handed.
    pub(crate) fn start_queued(&self, slot: Slot) -> bool {
        let Some(shard) = self.shard(slot) else {
            return true;
        };
        let mut slab = shard.lock();
        let Some(entry) = slab.get_mut(slot.index()) else {
            return true;
        };
        if entry.watch.is_some() {
            return false;
        }
        entry.queued = false;
        true
    }

    fn with<R>(&self, slot: Slot, f: impl FnOnce(&Entry) -> R) -> R {
        let mut slab = self.shard(slot).expect("a live guard's shard").lock();
        f(slab.get_mut(slot.index()).expect("a live guard's entry"))
    }

    /// Removes the entry a guard owns, as its guard is dropped: a guard's,
    /// or a task's that ended by itself (see
    /// [`remove_aborted`](Self::remove_aborted) for one aborted). Only that
    /// guard calls this, once. If a shutdown marked the task for abort (the
    /// entry has its watch), it counts as removed only, and its end is
    /// reported as finished (it was finishing, its abort too late), unless
    /// it ends while the aborts it was marked with are being
    /// made and its watch was given a window ([`Marked`]): it may end
    /// because of one of them (a part whose starter's abort landed first),
    /// and was still running when the shutdown began aborting, so it is
    /// listed and counted as aborted
    /// as [`remove_aborted`](Self::remove_aborted) lists an aborted task (one
    /// that returns an error then is both listed and recorded as failed).
    /// The caller settles the watch, a task's once its count is given up
    /// too (`TaskGuard::end`).
    #[inline]
    pub(crate) fn remove(&self, slot: Slot) -> Option<Entry> {
        self.shard(slot)?.lock().remove(slot.index(), false)
    }

    /// Removes the entry of a task whose future was dropped unfinished
    /// (aborted), as [`remove`](Self::remove) does. If a
    /// shutdown aborted the task (the entry has its watch) and still lists,
    /// the watch lists it and the shard counts it in
    /// [`removed_and_len`](Self::removed_and_len) as aborted, both under the
    /// shard's lock: a shutdown's counters then see the entry removed and
    /// the task aborted together or not at all, and a task counted as
    /// aborted is one some shutdown's report lists. A task aborted otherwise
    /// (by its handle, its runtime shutting down) or after the shutdown took
    /// its list counts as removed only: its end is reported as finished.
    /// Returns the watch of the shutdown that marked the task, if one did
    /// (`None` if the entry was gone); the entry itself is dropped here,
    /// after the lock is let go. The caller settles the watch once the
    /// task's count is given up (`task::drop_aborted`).
    #[inline]
    pub(crate) fn remove_aborted(&self, slot: Slot) -> Option<Option<Arc<AbortWatch>>> {
        let mut entry = self.shard(slot)?.lock().remove(slot.index(), true)?;
        Some(entry.watch.take())
    }

    /// Stores the abort handle of a just-spawned task, unless the task has
    /// already finished (its slot is empty, reused by a newer entry, or in a
    /// page since freed), or is to be aborted already. A shutdown's abort
    /// can come between the task's count and its handle, on another thread:
    ///
    /// * an abort whose walk found the entry without its handle marked it
    ///   (its `watch` is set, and the watch counts it): the task is aborted
    ///   now;
    /// * an abort whose walk did not find the entry (made after the walk
    ///   passed) is told by `late`, called under the shard's lock (see
    ///   `Node::late_abort`): the task is aborted now, in the watch `late`
    ///   gives if any (which already counts it).
    ///
    /// The shutdown published what `late` reads before its walk took the
    /// shard's lock, or, for a shard made after the walk looked, before the
    /// shard was made (see [`abort_all`](Self::abort_all)), so a task the
    /// walk missed sees it: no task counted before the walk is left running.
    ///
    /// Lock order: the shard's lock, then whatever `late` takes.
    pub(crate) fn set_abort(
        &self,
        slot: Slot,
        id: TaskId,
        abort: AbortHandle,
        late: impl FnOnce() -> Late,
    ) {
        let Some(shard) = self.shard(slot) else {
            return;
        };
        let mut slab = shard.lock();
        let Some(entry) = slab.get_mut(slot.index()).filter(|entry| entry.id == id) else {
            return;
        };
        if entry.watch.is_none() {
            match late() {
                Late::Keep => {
                    entry.abort = Some(abort);
                    return;
                }
                // Counted by the watch before it was given, so before the
                // task's removal (which takes this lock) can settle it.
                Late::Abort(watch) => entry.watch = watch,
            }
        }
        drop(slab);
        abort.abort();
    }

    /// Aborts the spawned tasks (but those `spare` keeps), each once, as
    /// [`mark_all`](Self::mark_all) marks them, the newest first.
    pub(crate) fn abort_all(&self, spare: &dyn Fn(TaskId) -> bool, watch: &Arc<AbortWatch>) {
        let mut marked = Marked::default();
        self.mark_all(spare, watch, &mut marked, false);
        // Dropped here: the aborts are made.
        drop(marked);
    }

    /// Marks the spawned tasks (but those `spare` keeps) for abort, each
    /// once: their abort handles are taken, and `watch` is told to wait for
    /// them. A task whose handle has not been stored yet is marked, and
    /// aborted when it is (see [`set_abort`](Self::set_abort)). The handles
    /// go to `marked`, this registry's newest task first, after those it
    /// holds already, to be aborted when it is dropped, once the caller has
    /// marked all it aborts together (a group and its scoped subtree, or a
    /// forced stop's whole tree: see `drain.rs`).
    ///
    /// The aborts are made once every task is marked, the newest first: a
    /// task's abort can end a task it started (a connection's, dropped on
    /// another worker, resets its streams, whose tasks then return), and
    /// that task, ended before it was marked, counted as finished by itself
    /// rather than aborted and named (HTTP/2 requests stuck at a shutdown's
    /// deadline went missing from its report in some runs on two workers:
    /// `tests/shutdown.rs`, `a_task_started_by_another_is_aborted_before_it`).
    /// A task of a scoped child, ended by the abort of the task that started
    /// it in the parent, is marked before that abort is made, and listed as
    /// aborted when it ends meanwhile if `window` (see [`Marked`]). `marked` holds
    /// one handle per task marked until it is dropped (16 bytes a task: 16
    /// MB at a million stuck tasks).
    pub(crate) fn mark_all(
        &self,
        spare: &dyn Fn(TaskId) -> bool,
        watch: &Arc<AbortWatch>,
        marked: &mut Marked,
        window: bool,
    ) {
        // Before looking for shards, meet any thread making one: a shard it
        // made before is seen below, and one it makes after is made with
        // what came before this (a shutdown's published watch, see
        // `set_abort`) in view of every thread that then records into it.
        drop(making_lock(self).lock());
        // In chunks, as a report: at a million tasks one walk under the lock
        // would hold up every completion on the shard for all of it.
        let mut found = (0, Vec::new());
        self.walk_chunks(
            CHUNK,
            &mut found,
            |(aborted, handles), _, entry| {
                if spare(entry.id) {
                    return;
                }
                if let Some(abort) = mark_for_abort(entry, watch) {
                    *aborted += 1;
                    handles.extend(abort.map(|abort| (entry.id, abort)));
                }
            },
            // Still under the shard's lock, which the removal of every entry
            // marked takes before it settles: expected before settled.
            |(aborted, _), _, _| watch.expect(std::mem::take(aborted)),
            |_, _| {},
        );
        // Walked in slot order, which is id order in runs (see `sort_by_id`).
        let mut handles = found.1;
        sort_by_id(&mut handles, |&(id, _)| id);
        marked
            .handles
            .extend(handles.into_iter().rev().map(|(_, abort)| abort));
        if window {
            marked.windows.push(Arc::clone(watch));
        }
    }

    /// Aborts the task in `slot` as [`abort_all`](Self::abort_all) aborts
    /// each, if the slot still holds task `id` (the task may have ended, and
    /// its slot been taken by another).
    pub(crate) fn abort_one(&self, slot: Slot, id: TaskId, watch: &Arc<AbortWatch>) {
        let Some(shard) = self.shard(slot) else {
            return;
        };
        let mut slab = shard.lock();
        if let Some(entry) = slab.get_mut(slot.index()).filter(|entry| entry.id == id) {
            // Under the shard's lock, as in `abort_all`: expected before the
            // entry's removal can settle it.
            if abort_entry(entry, watch) {
                watch.expect(1);
            }
        }
    }

    /// Calls `f` on every entry, one shard at a time, each under one lock
    /// (the tests' check on the chunked walks). Costs O(entries + pages kept)
    /// (see the module docs), not O(entries ever held).
    #[cfg(test)]
    fn for_each(&self, mut f: impl FnMut(&mut Entry)) {
        for shard in self.made_shards() {
            shard.slab.lock().iter_mut().for_each(&mut f);
        }
    }

    /// Maps every entry into `out`, one shard at a time and within a shard in
    /// chunks of about [`CHUNK`] slots, taking the shard's lock for each
    /// chunk and handing it over (a fair unlock) in between, so an add or
    /// done on that shard waits for one chunk at most, however many entries
    /// the shard holds (and, see [`Shard::lock`], without sleeping through
    /// it). A chunk is mapped into a buffer of its own under the lock and
    /// moved into `out` after the lock is released: the lock is never held
    /// while `out` grows or faults in fresh memory.
    ///
    /// Each chunk is a snapshot of its part of the shard: an entry present
    /// for the whole call is mapped exactly once (entries never move), one
    /// inserted or removed during the call may or may not be.
    pub(crate) fn map_chunked<T>(&self, map: impl FnMut(&Entry) -> T, out: &mut Vec<T>) {
        self.map_in_chunks(CHUNK, map, out, || {});
    }

    /// [`map_chunked`](Self::map_chunked) in chunks of `chunk` slots, with
    /// `between` called between two chunks of a shard, with no lock held
    /// (tests change the registry there).
    fn map_in_chunks<T>(
        &self,
        chunk: usize,
        mut map: impl FnMut(&Entry) -> T,
        out: &mut Vec<T>,
        mut between: impl FnMut(),
    ) {
        self.walk_chunks(
            chunk,
            // Grown under the lock as a chunk needs (`append` leaves it empty
            // with its room kept): a shard of two entries does not allocate
            // room for a whole chunk.
            &mut (Vec::new(), out),
            |(buffer, _), _, entry| buffer.push(map(entry)),
            |_, _, _| {},
            |(buffer, out), more| {
                out.append(buffer);
                if more {
                    between();
                }
            },
        );
    }

    /// [`map_chunked`](Self::map_chunked) for a report that also counts the
    /// entries ever removed: returns the number removed and, of those, the
    /// tasks a shutdown aborted and listed, and the number of entries, as
    /// [`removed_and_len`](Self::removed_and_len) does, each shard's read
    /// with what it lists, so that no entry is both in `out` and counted
    /// removed. An entry mapped in one chunk may be removed before the
    /// shard's last chunk, where its counters are read: so, under that last
    /// chunk's lock, if the shard's count of removals moved since its first
    /// chunk, each entry the shard listed is looked up by its slot and id,
    /// and one no longer there is left out of `out` (it is counted
    /// removed). That look-up holds the shard's lock for O(entries the
    /// shard listed), a few nanoseconds each, once per shard, and only when
    /// work ended during the listing: a report on work that has stopped
    /// pays nothing for it.
    pub(crate) fn map_counted<T>(&self, map: impl FnMut(&Entry) -> T, out: &mut Vec<T>) -> Counts {
        self.map_counted_in_chunks(CHUNK, map, out, || {})
    }

    /// [`map_counted`](Self::map_counted) in chunks of `chunk` slots, with
    /// `between` called between two chunks of a shard, with no lock held
    /// (tests change the registry there).
    fn map_counted_in_chunks<T>(
        &self,
        chunk: usize,
        mut map: impl FnMut(&Entry) -> T,
        out: &mut Vec<T>,
        mut between: impl FnMut(),
    ) -> Counts {
        /// What the walk keeps: as `map_in_chunks`, a chunk's buffer moved
        /// into `out` once the lock is released, and with each mapped entry
        /// its index and id, the shard's so far (the index of one found gone
        /// set to `GONE`): grown under the lock within a shard's first chunk
        /// (as `map_in_chunks`'s buffer is), and given room for a chunk more
        /// before each further chunk, so that a shard of a million entries
        /// is not copied to a bigger list under its lock.
        struct Walk<'a, T> {
            buffer: Vec<T>,
            shard_ids: Vec<(u32, TaskId)>,
            /// Whether the shard's last chunk found any gone.
            any_gone: bool,
            out: &'a mut Vec<T>,
            /// Where the shard's entries start in `out`.
            shard_start: usize,
            /// The shard's count of removals at its first chunk.
            removed_at_start: Option<u64>,
            counted: Counts,
        }
        const GONE: u32 = u32::MAX;
        let mut walk = Walk {
            buffer: Vec::new(),
            shard_ids: Vec::new(),
            any_gone: false,
            shard_start: out.len(),
            out,
            removed_at_start: None,
            counted: Counts::default(),
        };
        self.walk_chunks(
            chunk,
            &mut walk,
            |walk, index, entry| {
                walk.buffer.push(map(entry));
                // Slot indices are below 2^32 (see `Slot`).
                walk.shard_ids.push((index as u32, entry.id));
            },
            |walk, slab, more| {
                let at_start = *walk.removed_at_start.get_or_insert(slab.removed);
                if more {
                    return;
                }
                // The shard's last chunk: its counters, and what it listed
                // that is gone since, read at this one moment. With no
                // removal since its first chunk (a report on work that has
                // stopped, most often), nothing listed is gone.
                if slab.removed != at_start {
                    for (index, id) in &mut walk.shard_ids {
                        if !slab
                            .get_mut(*index as usize)
                            .is_some_and(|entry| entry.id == *id)
                        {
                            *index = GONE;
                            walk.any_gone = true;
                        }
                    }
                }
                walk.counted.add(slab);
            },
            |walk, more| {
                walk.out.append(&mut walk.buffer);
                if more {
                    walk.shard_ids.reserve(chunk);
                    between();
                    return;
                }
                if std::mem::take(&mut walk.any_gone) {
                    // The shard's part of `out` (in the order of
                    // `shard_ids`) without what is gone, in order.
                    let mut kept = walk.shard_start;
                    for (at, &(index, _)) in (walk.shard_start..).zip(&walk.shard_ids) {
                        if index != GONE {
                            walk.out.swap(kept, at);
                            kept += 1;
                        }
                    }
                    walk.out.truncate(kept);
                }
                walk.shard_ids.clear();
                walk.shard_start = walk.out.len();
                walk.removed_at_start = None;
            },
        );
        walk.counted
    }

    /// Walks every entry, one shard at a time and within a shard in chunks
    /// of about `chunk` slots, each under the shard's lock: `visit` runs on
    /// each entry of the chunk (with its index in the shard), `held` last
    /// under the lock (with the shard's slab, told whether the shard has
    /// more), and `after` once it is released (told the same). The lock is
    /// handed over between chunks (a fair unlock, then a short window, see
    /// [`Shard::lock_after_window`]). The closures share `state` rather than
    /// capture one another's.
    ///
    /// Each chunk is a snapshot of its part of the shard: an entry present
    /// for the whole walk is visited exactly once (entries never move), one
    /// inserted or removed during it may or may not be.
    fn walk_chunks<S>(
        &self,
        chunk: usize,
        state: &mut S,
        mut visit: impl FnMut(&mut S, usize, &mut Entry),
        mut held: impl FnMut(&mut S, &mut Slab, bool),
        mut after: impl FnMut(&mut S, bool),
    ) {
        for shard in self.made_shards() {
            let _walking = Walking::start(&shard.walks);
            let mut from = 0;
            loop {
                let mut slab = if from == 0 {
                    shard.slab.lock()
                } else {
                    shard.lock_after_window(WINDOW)
                };
                let next = slab.visit_from(from, chunk, &mut |index, entry: &mut Entry| {
                    visit(state, index, entry);
                });
                held(state, &mut slab, next.is_some());
                // Fair: a thread asleep waiting for this shard gets it before
                // the next chunk.
                MutexGuard::unlock_fair(slab);
                after(state, next.is_some());
                match next {
                    Some(at) => from = at,
                    None => break,
                }
            }
        }
    }

    /// The number of entries, summed over the shards (each locked in turn,
    /// so a moving count may be one that never was at a single instant).
    pub(crate) fn len(&self) -> usize {
        self.made_shards().map(|shard| shard.slab.lock().len).sum()
    }

    /// The number of entries ever removed, and of those the tasks a
    /// shutdown aborted and listed ([`remove`](Self::remove)),
    /// and the number of entries: sums of counters that each shard keeps
    /// under its lock, so keeping them costs a removal nothing but an
    /// increment, and each shard's three are read together. The first two
    /// only grow, so two reads taken in turn never go backwards.
    pub(crate) fn removed_and_len(&self) -> Counts {
        let mut counts = Counts::default();
        for shard in self.made_shards() {
            counts.add(&shard.slab.lock());
        }
        counts
    }

    /// The first two of [`removed_and_len`](Self::removed_and_len).
    #[cfg(test)]
    pub(crate) fn removed(&self) -> (u64, u64) {
        let counts = self.removed_and_len();
        (counts.removed, counts.aborted)
    }

    /// About how many heap bytes the registry holds now: the shard table,
    /// the shards made, their directories and their pages' slots (not what
    /// the entries themselves point to, such as a name).
    #[cfg_attr(not(test), allow(dead_code))] // Read by tests.
    pub(crate) fn retained_bytes(&self) -> usize {
        let Some(shards) = self.shards.get() else {
            return 0;
        };
        // The table holds its first shard; the others are allocated apart.
        std::mem::size_of_val::<ShardTable<[OnceLock<Box<Shard>>]>>(shards)
            + (shards.made().count() - 1) * std::mem::size_of::<Shard>()
            + self
                .made_shards()
                .map(|shard| shard.slab.lock().retained_bytes())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_cover_every_index_once() {
        let mut next = 0;
        for page in 0..FULL_PAGE + 3 {
            assert_eq!(page_start(page), next);
            for offset in 0..page_len(page) {
                assert_eq!(locate(next), (page, offset));
                next += 1;
            }
        }
        assert_eq!(page_len(FULL_PAGE - 1) * 2, MAX_PAGE);
        // The last page ends at or below NONE, and a page more would not.
        let last = MAX_PAGES - 1;
        let end = page_start(last) + page_len(last);
        assert_eq!(locate(end - 1), (last, MAX_PAGE - 1));
        assert!(end <= NONE as usize && end + MAX_PAGE > NONE as usize);
    }

    fn entry(id: u64) -> Entry {
        Entry::new(TaskId(id), None, TaskKind::Guard, Location::caller())
    }

    fn current_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    fn task_entry(id: u64) -> Entry {
        Entry::new(TaskId(id), None, TaskKind::Task, Location::caller())
    }

    fn watch() -> Arc<AbortWatch> {
        AbortWatch::new(GroupLabel {
            id: crate::label::GroupId::next(),
            name: None,
        })
    }

    fn waiting(watch: &AbortWatch) -> usize {
        watch.state.lock().waiting
    }

    /// The end of an aborted task, as `task::drop_aborted` makes it: its
    /// entry removed (and listed by its watch), then its watch settled.
    fn end_aborted(registry: &Registry, slot: Slot) {
        let watch = registry.remove_aborted(slot).expect("the entry");
        watch.expect("a watch").settle();
    }

    /// The end of a task that finished by itself once its abort was made.
    fn end_finished(registry: &Registry, slot: Slot) {
        let entry = registry.remove(slot).expect("the entry");
        entry.watch.expect("a watch").settle();
    }

    /// A list in a few runs of ids, or in none, comes out in id order
    /// either way `sort_by_id` takes.
    #[test]
    fn sort_by_id_orders_runs_and_shuffles() {
        let runs = |n: u64, count: u64| -> Vec<u64> {
            (0..count)
                .flat_map(|run| (run..n).step_by(count as usize))
                .collect()
        };
        let mut shuffled: Vec<u64> = (0..500).collect();
        let mut x = 7_u64;
        for i in (1..shuffled.len()).rev() {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            shuffled.swap(i, (x >> 33) as usize % (i + 1));
        }
        let few = FEW_RUNS as u64;
        for mut ids in [
            vec![],
            runs(500, 1),
            runs(500, 2),
            runs(500, few - 1),
            runs(500, few),
            runs(500, few + 1),
            shuffled,
        ] {
            let mut items: Vec<(TaskId, u64)> = ids.iter().map(|&id| (TaskId(id), id)).collect();
            sort_by_id(&mut items, |item| item.0);
            ids.sort_unstable();
            assert_eq!(items.iter().map(|item| item.1).collect::<Vec<_>>(), ids);
        }
    }

    /// A task marked with a window that ends by itself while its aborts are
    /// being made is listed as aborted (and counted so); one that ends by
    /// itself before or after that window is not, as with no window. Here
    /// the window is opened and closed by hand, as `Marked::drop` does
    /// around its aborts.
    #[test]
    fn a_task_ending_by_itself_is_listed_only_while_its_window_is_open() {
        let registry = Registry::new();
        let [before, during, after] = [1, 2, 3].map(|id| registry.insert(task_entry(id)));
        let watch = watch();
        let mut marked = Marked::default();
        registry.mark_all(&|_| false, &watch, &mut marked, true);
        assert_eq!(waiting(&watch), 3);
        end_finished(&registry, before);
        assert_eq!(registry.removed(), (1, 0));
        watch.set_firing(true);
        end_finished(&registry, during);
        assert_eq!(registry.removed(), (2, 1));
        watch.set_firing(false);
        end_finished(&registry, after);
        assert_eq!(registry.removed(), (3, 1));
        drop(marked);
        assert!(
            !watch.state.lock().firing,
            "the window closes after the aborts"
        );
        let listed: Vec<_> = watch.take_aborted().iter().map(|t| t.id.0).collect();
        assert_eq!(listed, [2]);
        assert_eq!(waiting(&watch), 0);
    }

    /// A task listed by its watch's window as it ends by itself (its
    /// future returned: `TaskGuard::end`) settles the watch only once its
    /// count is given up, as an aborted task does: a shutdown woken by the
    /// settle finds the group without it. In a lean group, where a count
    /// above the entries reads as pending guards, a settle before the count
    /// would have that shutdown report the task pending beside its listing.
    #[test]
    fn a_task_listed_as_it_ends_by_itself_settles_after_its_count() {
        /// Reads its group's count when woken, as a woken shutdown does.
        struct ReadLen(crate::WaitGroup, std::sync::atomic::AtomicUsize);
        impl std::task::Wake for ReadLen {
            fn wake(self: Arc<Self>) {
                self.wake_by_ref();
            }
            fn wake_by_ref(self: &Arc<Self>) {
                self.1.store(self.0.len(), Ordering::SeqCst);
            }
        }
        let wg = crate::WaitGroup::builder().record_guards(false).build();
        let node = wg.node();
        let entry = Entry::new(node.next_id(), None, TaskKind::Task, Location::caller());
        let guard = crate::guard::TaskGuard::new_with(node.add_task().0, entry).0;
        let watch = watch();
        let mut marked = Marked::default();
        node.registry
            .mark_all(&|_| false, &watch, &mut marked, true);
        watch.set_firing(true);
        let reader = Arc::new(ReadLen(wg.clone(), usize::MAX.into()));
        let waker = std::task::Waker::from(Arc::clone(&reader));
        let mut settled = std::pin::pin!(watch.all_settled());
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(std::future::Future::poll(settled.as_mut(), &mut cx).is_pending());
        guard.end();
        assert_eq!(
            reader.1.load(Ordering::SeqCst),
            0,
            "the count at the settle"
        );
        assert!(std::future::Future::poll(settled.as_mut(), &mut cx).is_ready());
        drop(marked);
        assert_eq!(watch.take_aborted().len(), 1);
        assert!(wg.is_empty());
    }

    /// A watch lists the tasks whose abort took effect, by id whatever the
    /// order their entries were removed in, each aged as of the listing; a
    /// task that finished by itself once its abort was made is waited for
    /// but not listed. The registry counts as aborted exactly the tasks
    /// listed.
    #[test]
    fn a_watch_lists_its_aborted_tasks_by_id_aged_when_listed() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let registry = Registry::new();
            let [three, one, finished] = [3, 1, 4].map(|id| registry.insert(task_entry(id)));
            tokio::time::advance(Duration::from_secs(1)).await;
            let two = registry.insert(task_entry(2));
            let watch = watch();
            // Entries without abort handles yet: marked, and waited for.
            registry.abort_all(&|_| false, &watch);
            assert_eq!(waiting(&watch), 4);
            end_aborted(&registry, three);
            end_finished(&registry, finished);
            end_aborted(&registry, one);
            end_aborted(&registry, two);
            assert_eq!(waiting(&watch), 0);
            assert_eq!(registry.removed(), (4, 3));
            tokio::time::advance(Duration::from_secs(2)).await;
            let listed: Vec<_> = watch
                .take_aborted()
                .iter()
                .map(|t| (t.id.0, t.age, t.group.id))
                .collect();
            let (s, group) = (Duration::from_secs, watch.group.id);
            assert_eq!(
                listed,
                [(1, s(3), group), (2, s(2), group), (3, s(3), group)]
            );
        });
    }

    /// A task whose abort takes effect after its watch's list was taken
    /// (its shutdown stopped waiting), or that was aborted with no watch
    /// (by its handle), is neither listed nor counted as aborted: counted
    /// as removed only, it is reported as finished, not lost between the
    /// parts of a report.
    #[test]
    fn a_task_aborted_after_its_list_was_taken_or_by_its_handle_counts_as_removed_only() {
        let registry = Registry::new();
        let [late, on_time] = [1, 2].map(|id| registry.insert(task_entry(id)));
        let watch = watch();
        registry.abort_all(&|_| false, &watch);
        end_aborted(&registry, on_time);
        assert_eq!(watch.take_aborted().len(), 1);
        end_aborted(&registry, late);
        assert_eq!(waiting(&watch), 0);
        assert!(watch.take_aborted().is_empty());
        assert_eq!(registry.removed(), (2, 1));
        let by_handle = registry.insert(task_entry(3));
        let entry = registry.remove(by_handle).expect("the entry");
        assert!(entry.watch.is_none());
        assert_eq!(registry.removed(), (3, 1));
    }

    /// An abort that walks the registry between a task's entry and its
    /// abort handle (the spawning thread is between the two) counts the
    /// task and marks it, once; the handle, when it comes, aborts the task
    /// at once instead of being stored. Guards, which never get a handle,
    /// are not counted.
    #[test]
    fn an_abort_before_a_tasks_handle_aborts_the_task_when_the_handle_comes() {
        let runtime = current_thread();
        let registry = Registry::new();
        let slot = registry.insert(task_entry(1));
        let guard = registry.insert(entry(2));
        let watch = watch();
        registry.abort_all(&|_| false, &watch);
        assert_eq!(waiting(&watch), 1);
        // A second walk does not count it again.
        registry.abort_all(&|_| false, &watch);
        assert_eq!(waiting(&watch), 1);
        let task = runtime.spawn(std::future::pending::<()>());
        registry.set_abort(slot, TaskId(1), task.abort_handle(), || {
            panic!("a marked entry asks nothing")
        });
        let joined = runtime.block_on(task);
        assert!(joined.unwrap_err().is_cancelled());
        end_aborted(&registry, slot);
        assert_eq!(waiting(&watch), 0);
        assert_eq!(watch.take_aborted().len(), 1);
        assert!(registry.remove(guard).is_some());
    }

    /// A task recorded after an abort walked the registry is aborted as its
    /// handle comes, if `late` gives the watch of an abort under way, and
    /// joins it; otherwise its handle is stored, and a spared task's too.
    #[test]
    fn a_task_recorded_after_an_abort_walked_joins_the_late_watch() {
        let runtime = current_thread();
        let registry = Registry::new();
        let watch = watch();
        registry.abort_all(&|_| false, &watch);
        let slot = registry.insert(task_entry(1));
        let task = runtime.spawn(std::future::pending::<()>());
        registry.set_abort(slot, TaskId(1), task.abort_handle(), || {
            watch.expect(1);
            Late::Abort(Some(Arc::clone(&watch)))
        });
        assert_eq!(waiting(&watch), 1);
        assert!(runtime.block_on(task).unwrap_err().is_cancelled());
        end_aborted(&registry, slot);
        assert_eq!(waiting(&watch), 0);
        assert_eq!(watch.take_aborted().len(), 1);
        // An abort that no longer waits: aborted, in no watch.
        let slot = registry.insert(task_entry(3));
        let task = runtime.spawn(std::future::pending::<()>());
        registry.set_abort(slot, TaskId(3), task.abort_handle(), || Late::Abort(None));
        assert!(runtime.block_on(task).unwrap_err().is_cancelled());
        assert!(registry.remove(slot).expect("the entry").watch.is_none());
        // No abort under way: the handle is kept, and a later walk aborts.
        let slot = registry.insert(task_entry(2));
        let task = runtime.spawn(std::future::pending::<()>());
        registry.set_abort(slot, TaskId(2), task.abort_handle(), || Late::Keep);
        assert!(!task.is_finished());
        // A spared task is left alone by the walk.
        registry.abort_all(&|id| id == TaskId(2), &watch);
        assert_eq!(waiting(&watch), 0);
        registry.abort_all(&|_| false, &watch);
        assert_eq!(waiting(&watch), 1);
        assert!(runtime.block_on(task).unwrap_err().is_cancelled());
        end_aborted(&registry, slot);
        assert_eq!(waiting(&watch), 0);
    }

    /// An abort's walk makes no shard and allocates nothing: a registry
    /// that recorded nothing still owns nothing after it, and the first
    /// entry after it makes its shard as ever.
    #[test]
    fn an_abort_walk_makes_nothing() {
        let registry = Registry::new();
        registry.abort_all(&|_| false, &watch());
        assert_eq!(registry.retained_bytes(), 0);
        let slot = registry.insert(entry(1));
        assert_eq!(registry.made_shards().count(), 1);
        registry.abort_all(&|_| false, &watch());
        assert_eq!(registry.made_shards().count(), 1);
        assert!(registry.remove(slot).is_some());
    }

    /// Between two chunks a walk lets a thread spinning for the shard take
    /// it first: the walk's next lock returns after that thread's insert.
    #[test]
    #[cfg_attr(miri, ignore = "nothing spins under Miri")]
    fn a_walk_lets_a_spinning_thread_in_between_chunks() {
        let shard = Shard::default();
        let walking = Walking::start(&shard.walks);
        let held = shard.slab.lock();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                shard
                    .lock_contended(Duration::from_secs(60))
                    .insert(entry(9))
            });
            // A signal, not a sleep: the taker says it spins.
            while shard.spinning.load(Ordering::Relaxed) == 0 {
                std::hint::spin_loop();
            }
            MutexGuard::unlock_fair(held);
            let mut slab = shard.lock_after_window(Duration::from_secs(60));
            assert_eq!(slab.len, 1, "the walk's lock came first");
            assert_eq!(slab.get_mut(0).map(|entry| entry.id), Some(TaskId(9)));
        });
        assert_eq!(shard.spinning.load(Ordering::Relaxed), 0);
        drop(walking);
        assert_eq!(shard.walks.load(Ordering::Relaxed), 0);
    }

    /// A thread that finds its shard held gets it once it is released:
    /// with no walk under way (it sleeps at once), and during one whether
    /// it is still spinning then or already asleep (a zero spin).
    #[test]
    fn a_held_shard_is_taken_once_released() {
        for (walk, spin) in [(false, SPIN), (true, Duration::ZERO), (true, SPIN)] {
            let shard = Shard::default();
            let walking = walk.then(|| Walking::start(&shard.walks));
            let held = shard.slab.lock();
            let (started, start) = std::sync::mpsc::channel();
            std::thread::scope(|scope| {
                let taker = scope.spawn(|| {
                    started.send(()).expect("the test waits");
                    shard.lock_contended(spin).insert(entry(7))
                });
                start.recv().expect("the taker runs");
                assert!(shard.slab.is_locked());
                drop(held);
                let index = taker.join().expect("the taker returns");
                let mut slab = shard.lock();
                assert_eq!(slab.get_mut(index).map(|entry| entry.id), Some(TaskId(7)));
            });
            drop(walking);
            assert_eq!(shard.spinning.load(Ordering::Relaxed), 0);
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

    /// Checks every invariant a slab documents, walking all of it.
    fn check(slab: &Slab) {
        let count = slab.page_count();
        let mut on_list = vec![false; count];
        let (mut at, mut before) = (slab.room, NONE);
        while at != NONE {
            let head = slab.head(at as usize);
            assert!(!on_list[at as usize], "the room list has no cycle");
            assert_eq!(head.prev, before);
            on_list[at as usize] = true;
            (before, at) = (at, head.next);
        }
        let first = (&slab.first, &slab.first_slots[..]);
        let rest = slab.pages.iter().map(|page| (&page.head, &page.slots[..]));
        let mut len = 0;
        let mut allocated = 0;
        for (number, (head, slots)) in std::iter::once(first).chain(rest).enumerate() {
            let occupied = slots
                .iter()
                .filter(|slot| matches!(slot, SlotState::Occupied(_)))
                .count();
            assert_eq!(head.occupied as usize, occupied);
            len += occupied;
            if slots.is_empty() {
                assert!(number != 0 && !on_list[number] && slab.spare != number as u32);
                assert!(number + 1 < count, "no freed page ends it");
                continue;
            }
            allocated += 1;
            assert_eq!(slots.len(), page_len(number));
            assert_eq!(head.start as usize, page_start(number));
            assert_eq!(on_list[number], head.free != NONE);
            let mut vacant = 0;
            let mut free = head.free;
            while free != NONE {
                let SlotState::Vacant(next) = slots[free as usize] else {
                    panic!("the free list holds an occupied slot");
                };
                vacant += 1;
                free = next;
            }
            assert_eq!(vacant + occupied, slots.len());
            if number != 0 && occupied == 0 {
                assert_eq!(slab.spare, number as u32, "an empty page is kept");
            }
        }
        assert_eq!(slab.len, len);
        assert_eq!(slab.allocated, allocated);
        if slab.spare != NONE {
            assert!(slab.spare != 0 && slab.pages[slab.spare as usize - 1].is_allocated());
        }
        if slab.len == 0 {
            assert!(slab.pages.is_empty(), "an empty slab keeps page 0 alone");
        }
    }

    fn check_all(registry: &Registry) {
        for shard in registry.made_shards() {
            check(&shard.slab.lock());
        }
    }

    /// Headers in every shard's directory.
    fn headers(registry: &Registry) -> usize {
        registry
            .made_shards()
            .map(|shard| shard.slab.lock().page_count())
            .sum()
    }

    /// What a registry holds after one entry came and went: the least a
    /// used registry can hold.
    fn used_once() -> usize {
        let registry = Registry::new();
        let slot = registry.insert(entry(1));
        registry.remove(slot);
        registry.retained_bytes()
    }

    /// Entries in a burst: under Miri, enough to fill every doubling page
    /// and one of `MAX_PAGE` slots (2,040 + 460), so each path is taken but
    /// the interpreter's run stays in minutes.
    fn burst() -> u64 {
        if cfg!(miri) {
            2_500
        } else {
            100_000
        }
    }

    #[test]
    fn an_empty_registry_owns_nothing() {
        let registry = Registry::new();
        assert!(std::mem::size_of::<Registry>() <= 24);
        assert_eq!(registry.retained_bytes(), 0);
        assert_eq!((registry.len(), registry.removed()), (0, (0, 0)));
        assert!(ids(&registry).is_empty());
        // Nothing to find, and nothing made by looking.
        let slot = Slot::new(0, 0);
        assert!(registry.remove(slot).is_none());
        registry.set_abort(slot, TaskId(1), tokio_join().abort_handle(), || Late::Keep);
        assert_eq!(registry.retained_bytes(), 0);
        // The first entry makes the table with this thread's shard in it,
        // page 0 in that: one allocation, nothing else.
        let slot = registry.insert(entry(1));
        assert_eq!(registry.made_shards().count(), 1);
        let shards = registry.shards.get().unwrap();
        assert!(std::ptr::eq(registry.shard(slot).unwrap(), &shards.first));
        assert_eq!(slot.shard(), shards.first_index);
        assert!(shards.cells.iter().all(|cell| cell.get().is_none()));
        let cells = shard_count() * std::mem::size_of::<OnceLock<Box<Shard>>>();
        let page0 = FIRST_PAGE * std::mem::size_of::<SlotState>();
        assert!(std::mem::size_of::<Shard>() > page0);
        let used = registry.retained_bytes();
        assert_eq!(used, std::mem::size_of_val(&**shards));
        assert!(used <= std::mem::size_of::<Shard>() + cells + 16);
        registry.remove(slot);
        assert_eq!(registry.retained_bytes(), used);
        assert!(used <= 1400, "one entry's registry holds {used} bytes");
    }

    /// A shard asks the allocator for no more than malloc's alignment, and
    /// its fields sit 48 bytes in from both ends (see [`Shard`]).
    #[test]
    fn a_shard_is_padded_not_aligned() {
        use std::mem::{align_of, size_of};
        assert!(align_of::<Shard>() <= 16);
        assert!(align_of::<ShardTable<[OnceLock<Box<Shard>>; 32]>>() <= 16);
        let shard = Shard::default();
        let base = std::ptr::addr_of!(shard) as usize;
        let at = |field: usize| field - base;
        assert_eq!(at(std::ptr::addr_of!(shard._before) as usize), 0);
        assert_eq!(at(std::ptr::addr_of!(shard.slab) as usize), 48);
        let walks = at(std::ptr::addr_of!(shard.walks) as usize);
        let spinning = at(std::ptr::addr_of!(shard.spinning) as usize);
        let after = at(std::ptr::addr_of!(shard._after) as usize);
        assert!(walks < spinning);
        assert!(after >= spinning + size_of::<AtomicU32>());
        assert_eq!(size_of::<Shard>() - after, 48);
        assert_eq!(format!("{:?}", shard._before), "Pad");
    }

    #[test]
    fn len_and_removed_count() {
        let registry = Registry::new();
        let slots: Vec<Slot> = (1..=100).map(|id| registry.insert(entry(id))).collect();
        assert_eq!((registry.len(), registry.removed()), (100, (0, 0)));
        for slot in &slots[..40] {
            assert!(registry.remove(*slot).is_some());
        }
        assert_eq!((registry.len(), registry.removed()), (60, (40, 0)));
        // Removing twice finds nothing and counts nothing.
        assert!(registry.remove(slots[0]).is_none());
        assert_eq!((registry.len(), registry.removed()), (60, (40, 0)));
        // Summed over shards: entries recorded from other threads count too.
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| {
                    let slot = registry.insert(entry(1000));
                    registry.remove(slot);
                });
            }
        });
        assert_eq!((registry.len(), registry.removed()), (60, (43, 0)));
        for slot in &slots[40..] {
            registry.remove(*slot);
        }
        assert_eq!((registry.len(), registry.removed()), (0, (100 + 3, 0)));
        check_all(&registry);
    }

    /// Threads whose first inserts race on a fresh registry make one table;
    /// each entry is found in its slot's shard and walked once, the shard
    /// made with the table among them; a shard made apart is counted apart.
    #[test]
    fn first_inserts_from_many_threads_make_one_table() {
        let threads = if cfg!(miri) { 4 } else { 2 * shard_count() + 1 };
        for _ in 0..if cfg!(miri) { 2 } else { 20 } {
            let registry = Registry::new();
            let start = std::sync::Barrier::new(threads);
            let slots: Vec<(u64, Slot)> = std::thread::scope(|scope| {
                let handles: Vec<_> = (1..=threads as u64)
                    .map(|id| {
                        let (registry, start) = (&registry, &start);
                        scope.spawn(move || {
                            start.wait();
                            (id, registry.insert(entry(id)))
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let shards = registry.shards.get().unwrap();
            assert!(slots
                .iter()
                .any(|(_, slot)| slot.shard() == shards.first_index));
            assert!(shards.cells[shards.first_index].get().is_none());
            for &(id, slot) in &slots {
                assert_eq!(registry.id(slot), TaskId(id));
            }
            let mut made: Vec<usize> = slots.iter().map(|(_, slot)| slot.shard()).collect();
            made.sort_unstable();
            made.dedup();
            assert_eq!(registry.made_shards().count(), made.len());
            let pages: usize = registry
                .made_shards()
                .map(|shard| shard.slab.lock().retained_bytes())
                .sum();
            assert_eq!(
                registry.retained_bytes(),
                std::mem::size_of_val(&**shards)
                    + (made.len() - 1) * std::mem::size_of::<Shard>()
                    + pages
            );
            assert_eq!(ids(&registry), (1..=threads as u64).collect::<Vec<_>>());
            for (_, slot) in slots {
                assert!(registry.remove(slot).is_some());
            }
            assert_eq!(registry.len(), 0);
            check_all(&registry);
        }
    }

    /// A burst of entries drained in several orders: the registry gives back
    /// all but page 0 and its directory, and `for_each` has nothing to walk.
    #[test]
    fn a_drained_burst_gives_its_memory_back() {
        let baseline = used_once();
        let n = burst();
        // The i-th of n entries to remove.
        type Order = fn(u64, u64) -> u64;
        let orders: [(&str, Order); 3] = [
            ("first in, first out", |i, _| i),
            ("last in, first out", |i, n| n - 1 - i),
            // A permutation: 7919 is prime and divides neither count.
            ("scattered", |i, n| i * 7919 % n),
        ];
        let registry = Registry::new();
        for (name, order) in orders {
            let slots: Vec<Slot> = (0..n).map(|id| registry.insert(entry(id))).collect();
            let peak = registry.retained_bytes();
            assert!(peak > n as usize * std::mem::size_of::<SlotState>());
            check_all(&registry);
            for i in 0..n {
                let index = order(i, n);
                let removed = registry.remove(slots[index as usize]);
                assert_eq!(removed.map(|e| e.id.0), Some(index), "{name}");
            }
            check_all(&registry);
            assert_eq!(registry.len(), 0, "{name}");
            assert!(ids(&registry).is_empty(), "{name}");
            assert_eq!(headers(&registry), 1, "{name}: page 0 alone");
            let retained = registry.retained_bytes();
            assert!(
                retained <= 2 * baseline,
                "{name}: {retained} bytes kept after a drain, from {peak}; {baseline} used once"
            );
        }
        assert_eq!(registry.removed(), (3 * n, 0));
    }

    /// One survivor of a burst keeps its own page and the spare, at most two
    /// pages of MAX_PAGE slots, and the directory up to its page; `for_each`
    /// finds it alone.
    #[test]
    fn a_survivor_keeps_its_page_not_the_burst() {
        let baseline = used_once();
        let n = burst();
        let slot_size = std::mem::size_of::<SlotState>();
        // Every header up to the last page, in a directory at most 4x its
        // length (it shrinks at 4x).
        let directory = 4 * (locate(n as usize - 1).0 + 1) * std::mem::size_of::<Page>();
        let bound = baseline + 2 * MAX_PAGE * slot_size + directory;
        let registry = Registry::new();
        for keep in [n - 1, 0, n / 2] {
            let slots: Vec<Slot> = (0..n).map(|id| registry.insert(entry(id))).collect();
            let peak = registry.retained_bytes();
            for (id, slot) in slots.iter().enumerate() {
                if id as u64 != keep {
                    registry.remove(*slot);
                }
            }
            check_all(&registry);
            assert_eq!(ids(&registry), [keep]);
            assert_eq!(registry.len(), 1);
            let retained = registry.retained_bytes();
            assert!(
                retained <= bound,
                "keeping #{keep}: {retained} bytes kept from {peak}, bound {bound}"
            );
            // A small fraction of the peak once the burst spans many pages
            // (the two pages kept are then few of them).
            if n >= 10_000 {
                assert!(retained * 4 < peak, "keeping #{keep}: {retained} of {peak}");
            }
            // The survivor is where it was.
            let survivor = slots[keep as usize];
            assert_eq!(registry.id(survivor), TaskId(keep));
            assert_eq!(registry.remove(survivor).map(|e| e.id.0), Some(keep));
            assert!(registry.retained_bytes() <= 2 * baseline);
        }
    }

    /// A chunked visit sees every entry once, holes and freed pages
    /// included, and releases the lock between chunks: entries inserted and
    /// removed between them (which would deadlock under a held lock) leave
    /// every entry present throughout visited exactly once.
    #[test]
    fn a_chunked_visit_sees_each_lasting_entry_once() {
        let n = burst();
        let registry = Registry::new();
        let slots: Vec<Slot> = (0..n).map(|id| registry.insert(entry(id))).collect();
        // Holes everywhere, and whole pages freed in the middle.
        for (id, slot) in slots.iter().enumerate() {
            let id = id as u64;
            if id % 3 == 0 || (n / 4..n / 2).contains(&id) {
                registry.remove(*slot);
            }
        }
        let lasting = ids(&registry);
        let mut seen = Vec::new();
        registry.map_in_chunks(CHUNK, |entry| entry.id.0, &mut seen, || {});
        seen.sort_unstable();
        assert_eq!(seen, lasting);

        // Small chunks; between them, remove some entries not yet seen and
        // insert new ones (into holes before and after the cursor).
        let transient: Vec<u64> = lasting.iter().copied().filter(|id| id % 7 == 1).collect();
        let stay: Vec<u64> = lasting.iter().copied().filter(|id| id % 7 != 1).collect();
        let mut to_remove = transient.iter().rev().copied();
        let mut next_id = n;
        let mut added = Vec::new();
        let mut chunks = 0;
        let mut seen = Vec::new();
        registry.map_in_chunks(
            64,
            |entry| entry.id.0,
            &mut seen,
            || {
                chunks += 1;
                if let Some(id) = to_remove.next() {
                    assert!(registry.remove(slots[id as usize]).is_some());
                }
                added.push(registry.insert(entry(next_id)));
                next_id += 1;
            },
        );
        assert!(chunks > 10, "{chunks} chunks");
        let mut counts = std::collections::HashMap::new();
        for id in &seen {
            *counts.entry(*id).or_insert(0) += 1;
        }
        for id in &stay {
            assert_eq!(counts.get(id), Some(&1), "entry {id} present throughout");
        }
        assert!(counts.values().all(|&c| c == 1), "an entry seen twice");
        for slot in added {
            assert!(registry.remove(slot).is_some());
        }
    }

    /// A counted walk never lists an entry it counts removed: between its
    /// chunks, entries it mapped already are removed (one of them with its
    /// slot taken at once by a new entry); none of them is listed, each is
    /// counted removed, and every other entry is listed once.
    #[test]
    fn a_counted_walk_lists_no_entry_it_counts_removed() {
        let n = burst();
        let registry = Registry::new();
        let slots: Vec<Slot> = (0..n).map(|id| registry.insert(entry(id))).collect();
        let (before, _) = registry.removed();
        let mut gone = Vec::new();
        let mut added = Vec::new();
        let mut chunks = 0;
        let mut listed = Vec::new();
        let counts = registry.map_counted_in_chunks(
            64,
            |entry| entry.id.0,
            &mut listed,
            || {
                // The walk is past the first 32 slots once a chunk is done.
                let id = chunks;
                chunks += 1;
                if id < 32 {
                    assert!(registry.remove(slots[id as usize]).is_some());
                    gone.push(id);
                    if id == 3 {
                        // Into the slot just freed, behind the walk.
                        added.push(registry.insert(entry(n + id)));
                    }
                }
            },
        );
        assert!(chunks > 32, "{chunks} chunks");
        assert_eq!(counts.aborted, 0);
        assert_eq!(counts.removed - before, gone.len() as u64);
        // Entries there at the end: those listed, and the one added.
        assert_eq!(counts.entries, listed.len() + added.len());
        listed.sort_unstable();
        let expected: Vec<u64> = (0..n).filter(|id| !gone.contains(id)).collect();
        assert_eq!(
            listed, expected,
            "each entry listed or counted removed, once"
        );
        for slot in added {
            assert!(registry.remove(slot).is_some());
        }
        // With nothing in the way, the same as an uncounted walk.
        let mut plain = Vec::new();
        registry.map_chunked(|entry| entry.id.0, &mut plain);
        let mut counted = Vec::new();
        let counts = registry.map_counted(|entry| entry.id.0, &mut counted);
        assert_eq!(counted, plain);
        assert_eq!(counts.removed, registry.removed().0);
        assert_eq!(counts.entries, registry.len());
    }

    /// Entries kept across a drain of their neighbours (and across the freeing
    /// and reuse of the pages between them) still answer for their slots; a
    /// abort handle for an entry gone, whose slot may be reused or whose page
    /// may be freed, is dropped.
    #[test]
    fn slots_stay_valid_while_their_neighbours_come_and_go() {
        let n = burst();
        let registry = Registry::new();
        let slots: Vec<Slot> = (0..n).map(|id| registry.insert(entry(id))).collect();
        let kept = |id: u64| id % 1000 == 999 || id == 0 || id == n - 1;
        for (id, slot) in slots.iter().enumerate() {
            if !kept(id as u64) {
                registry.remove(*slot);
            }
        }
        check_all(&registry);
        let kept_ids: Vec<u64> = (0..n).filter(|id| kept(*id)).collect();
        assert_eq!(ids(&registry), kept_ids);
        // A second burst fills the holes and the freed pages between them.
        let again: Vec<Slot> = (n..2 * n).map(|id| registry.insert(entry(id))).collect();
        check_all(&registry);
        for id in kept_ids.iter().copied() {
            let slot = slots[id as usize];
            assert_eq!(registry.id(slot), TaskId(id));
            assert_eq!(registry.identity(slot), (TaskId(id), None, None));
        }
        // An abort handle is stored for its own entry, not for a newer one in
        // a reused slot.
        let reused = again[0];
        assert!(
            slots.contains(&reused),
            "a freed slot is used before a new page"
        );
        let old_id = slots.iter().position(|slot| *slot == reused).unwrap() as u64;
        registry.set_abort(reused, TaskId(old_id), tokio_join().abort_handle(), || {
            Late::Keep
        });
        registry.set_abort(again[1], TaskId(n + 1), tokio_join().abort_handle(), || {
            Late::Keep
        });
        let mut joined = Vec::new();
        registry.for_each(|entry| {
            if entry.abort.is_some() {
                joined.push(entry.id.0);
            }
        });
        assert_eq!(joined, [n + 1]);
        for slot in &again {
            assert!(registry.remove(*slot).is_some());
        }
        for id in kept_ids.iter().copied() {
            let slot = slots[id as usize];
            assert_eq!(registry.remove(slot).map(|e| e.id.0), Some(id));
            assert!(registry.remove(slot).is_none());
            // Gone, and its page maybe freed: a harmless no-op.
            registry.set_abort(slot, TaskId(id), tokio_join().abort_handle(), || Late::Keep);
        }
        check_all(&registry);
        assert_eq!(registry.len(), 0);
        assert!(ids(&registry).is_empty());
        // A slot past the directory's end.
        registry.set_abort(
            slots[n as usize - 1],
            TaskId(n - 1),
            tokio_join().abort_handle(),
            || Late::Keep,
        );
        assert!(registry.retained_bytes() <= 2 * used_once());
    }

    /// Random inserts and removes against a model, checking every invariant:
    /// the spare, the holes, the room list and the directory's end.
    #[test]
    fn random_inserts_and_removes_keep_the_invariants() {
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        let mut random = move |below: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % below as u64) as usize
        };
        let registry = Registry::new();
        let mut live: Vec<(Slot, u64)> = Vec::new();
        let mut next_id = 0;
        let rounds = if cfg!(miri) { 20 } else { 200 };
        for round in 0..rounds {
            // Alternate growing and shrinking phases of random depth.
            let target = if round % 2 == 0 {
                random(5000)
            } else {
                random(50)
            };
            let steps = if cfg!(miri) { 300 } else { 3000 };
            for _ in 0..steps {
                let grow = live.len() < target;
                if (grow && random(4) != 0) || live.is_empty() {
                    next_id += 1;
                    live.push((registry.insert(entry(next_id)), next_id));
                } else {
                    let (slot, id) = live.swap_remove(random(live.len()));
                    assert_eq!(registry.remove(slot).map(|e| e.id.0), Some(id));
                }
            }
            check_all(&registry);
            assert_eq!(registry.len(), live.len());
            let mut model: Vec<u64> = live.iter().map(|(_, id)| *id).collect();
            model.sort_unstable();
            assert_eq!(ids(&registry), model);
            for (slot, id) in live.iter().take(10) {
                assert_eq!(registry.id(*slot), TaskId(*id));
            }
        }
        for (slot, _) in live.drain(..) {
            registry.remove(slot);
        }
        check_all(&registry);
        assert_eq!(headers(&registry), 1);
    }

    /// A finished task's join handle (the runtime is gone; the handle stays
    /// valid to drop).
    fn tokio_join() -> tokio::task::JoinHandle<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.spawn(async {})
    }
}
