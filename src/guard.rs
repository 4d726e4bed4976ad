//! [`TaskGuard`]: one unit of pending work, completed by `done()` or drop.

use std::fmt;
use std::panic::Location;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::label::{GroupId, Label, TaskId};
use crate::node::Node;
use crate::registry::{AbortWatch, Entry, SettleOnDrop, Slot};
use crate::report::TaskKind;
use crate::shared::TaskRef;

/// One pending unit of work in a [`WaitGroup`](crate::WaitGroup), from
/// [`add`](crate::WaitGroup::add) and its variants.
///
/// The group's [`wait`](crate::WaitGroup::wait) does not return while a guard
/// is alive. Complete it with [`done`](Self::done) or by dropping it; since
/// `done` consumes the guard and there is no `Clone`, a guard completes exactly
/// once, by construction. The guard is `'static` and `Send`, so it can be kept
/// in a struct and completed in another method than the one that created it:
///
/// ```
/// use taskgroup::{TaskGuard, WaitGroup};
///
/// struct Listener {
///     running: Option<TaskGuard>,
/// }
///
/// impl Listener {
///     fn start(wg: &WaitGroup) -> Self {
///         Listener { running: Some(wg.task().name("listener").add()) }
///     }
///     fn close(&mut self) {
///         if let Some(guard) = self.running.take() {
///             guard.done();
///         }
///     }
/// }
///
/// let wg = WaitGroup::new();
/// let mut listener = Listener::start(&wg);
/// assert_eq!(wg.len(), 1);
/// listener.close();
/// assert!(wg.is_empty());
/// ```
///
/// A guard that is never completed (leaked with `mem::forget`, or kept in a
/// struct that is never closed) keeps the group busy; a deadline-bounded wait
/// then names it, with the place it was created.
///
/// A guard is two words: its group, and one word of its own (see `Tag`).
#[must_use = "dropping a TaskGuard completes it at once; keep it until the work is done"]
pub struct TaskGuard {
    pub(crate) inner: TaskRef<Node>,
    tag: Tag,
}

/// What a guard knows besides its group, in one word: for a recorded guard,
/// [`RECORDED`] and its registry slot (its id is in the registry entry); for a
/// guard of a [`record_guards(false)`](crate::WaitGroupBuilder::record_guards) group,
/// its id, or 0 until the id is first asked for, so that `add` does not touch
/// the group's id counter.
struct Tag(AtomicU64);

/// Marks a [`Tag`] that holds a registry slot.
const RECORDED: u64 = 1 << 63;

impl TaskGuard {
    /// The guard for a task already counted in the state word: a lean guard
    /// (of a `record_guards(false)` group) needs nothing more; the rest get
    /// an id and a registry entry.
    #[inline]
    pub(crate) fn new(
        task: TaskRef<Node>,
        name: Option<Label>,
        site: &'static Location<'static>,
        kind: TaskKind,
    ) -> Self {
        // A named guard is recorded even in a lean group: naming it asks for it.
        if kind == TaskKind::Guard && !task.record_guards() && name.is_none() {
            return TaskGuard::unrecorded(task);
        }
        Self::new_entered(task, name, site, kind)
    }

    /// [`new_recorded`](Self::new_recorded)'s guard, out of line. Inlined
    /// here, the registry insert made `new` too big to inline into `add()`,
    /// and a lean `add()` then paid a call with a large frame: a lean add +
    /// done took 15 ns where it takes 5 (AMD EPYC, `benches/report.rs`
    /// workload 1).
    #[inline(never)]
    fn new_entered(
        task: TaskRef<Node>,
        name: Option<Label>,
        site: &'static Location<'static>,
        kind: TaskKind,
    ) -> Self {
        Self::new_recorded(task, name, site, kind).0
    }

    /// A recorded guard (every `go()` task's), with its id and slot.
    #[inline]
    pub(crate) fn new_recorded(
        task: TaskRef<Node>,
        name: Option<Label>,
        site: &'static Location<'static>,
        kind: TaskKind,
    ) -> (Self, TaskId, Slot) {
        let id = task.next_id();
        let (guard, slot) = Self::new_with(task, Entry::new(id, name, kind, site));
        (guard, id, slot)
    }

    /// A recorded guard for `entry`, whose id the caller took from the
    /// group's [`next_id`](Node::next_id).
    #[inline]
    pub(crate) fn new_with(task: TaskRef<Node>, entry: Entry) -> (Self, Slot) {
        let slot = task.registry.insert(entry);
        (TaskGuard::recorded(task, slot), slot)
    }

    fn recorded(inner: TaskRef<Node>, slot: Slot) -> Self {
        let slot = slot.as_u64();
        debug_assert!(slot & RECORDED == 0);
        TaskGuard {
            inner,
            tag: Tag(AtomicU64::new(RECORDED | slot)),
        }
    }

    fn unrecorded(inner: TaskRef<Node>) -> Self {
        TaskGuard {
            inner,
            tag: Tag(AtomicU64::new(0)),
        }
    }

    /// The registry slot of a recorded guard.
    pub(crate) fn slot(&self) -> Option<Slot> {
        let tag = self.tag.0.load(Ordering::Relaxed);
        (tag & RECORDED != 0).then(|| Slot::from_u64(tag & !RECORDED))
    }

    /// The guard's id, unique within its group.
    ///
    /// In a group built with [`record_guards(false)`](crate::WaitGroupBuilder::record_guards)
    /// a guard takes its id when this is first called, so ids are still unique
    /// but no longer in the order of `add`.
    pub fn id(&self) -> TaskId {
        let tag = self.tag.0.load(Ordering::Relaxed);
        if tag & RECORDED != 0 {
            return self.inner.recorded_id(Slot::from_u64(tag & !RECORDED));
        }
        if tag != 0 {
            return TaskId(tag);
        }
        let id = self.inner.next_id();
        match self
            .tag
            .0
            .compare_exchange(0, id.0, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => id,
            // Another thread asked first; its id stands (ours is never used).
            Err(theirs) => TaskId(theirs),
        }
    }

    /// The id of the group the guard belongs to.
    pub fn group_id(&self) -> GroupId {
        self.inner.label.id
    }

    /// Completes the work. The same as dropping the guard, but says so.
    #[inline]
    pub fn done(self) {}

    /// Removes the entry of a task whose future was dropped unfinished
    /// (aborted) now, as [`Registry::remove_aborted`] does; the guard is then
    /// unrecorded, and its drop only gives up the count. For an aborted
    /// task's end (`task::drop_aborted`), which settles its watch only once
    /// the count is given up too. `None` if the guard is unrecorded, else
    /// the watch of the shutdown that marked the task, if one did.
    ///
    /// [`Registry::remove_aborted`]: crate::registry::Registry::remove_aborted
    pub(crate) fn remove_aborted(&mut self) -> Option<Option<Arc<AbortWatch>>> {
        let tag = std::mem::take(self.tag.0.get_mut());
        if tag & RECORDED == 0 {
            *self.tag.0.get_mut() = tag;
            return None;
        }
        let slot = Slot::from_u64(tag & !RECORDED);
        self.inner.registry.remove_aborted(slot)
    }

    /// Completes the guard of a task that ended by itself (its future
    /// returned or panicked): its entry is removed (and listed as aborted,
    /// if a shutdown marked the task and its watch's window is open: see
    /// [`Registry::remove`]), its count given up, and only then the watch of
    /// the shutdown that marked it, if one did, settled, as
    /// `task::drop_aborted` does for an aborted task. So a shutdown woken by
    /// that settle finds the group without the task rather than with its
    /// count and no entry, which in a
    /// [`record_guards(false)`](crate::WaitGroupBuilder::record_guards) group
    /// reads as a pending guard beside the task's listing.
    ///
    /// [`Registry::remove`]: crate::registry::Registry::remove
    #[inline(always)]
    pub(crate) fn end(mut self) {
        let tag = std::mem::take(self.tag.0.get_mut());
        if tag & RECORDED == 0 {
            *self.tag.0.get_mut() = tag;
            return;
        }
        let _settle = SettleOnDrop(remove_ended(&self.inner, Slot::from_u64(tag & !RECORDED)));
        drop(self);
    }
}

impl Drop for TaskGuard {
    #[inline]
    fn drop(&mut self) {
        // The entry goes first; the task unit is given up after this, when
        // the `inner` field is dropped (so an idle group has no entries).
        let tag = *self.tag.0.get_mut();
        if tag & RECORDED != 0 {
            remove_entry(&self.inner, Slot::from_u64(tag & !RECORDED));
        }
    }
}

/// Removes a recorded guard's entry: out of line, so that the drop of a lean
/// guard is small enough to inline and saves no registers before its
/// atomic step (see [`TaskGuard::new_entered`]). Only a task's entry is
/// ever marked by a shutdown, and a task's guard ends through
/// [`TaskGuard::end`] or `task::drop_aborted`; a marked entry found here
/// (a task's guard dropped otherwise) still has its watch settled.
#[inline(never)]
fn remove_entry(node: &Node, slot: Slot) {
    if let Some(entry) = node.registry.remove(slot) {
        if let Some(watch) = &entry.watch {
            watch.settle();
        }
    }
}

/// [`TaskGuard::end`]'s removal, out of line as [`remove_entry`] is:
/// returns the watch of the shutdown that marked the task, if one did (it
/// then stops waiting for the task, and listed it if it ended while the
/// watch's window was open, a scoped child's: see `Registry::remove`).
#[inline(never)]
fn remove_ended(node: &Node, slot: Slot) -> Option<Arc<AbortWatch>> {
    node.registry.remove(slot)?.watch.take()
}

impl fmt::Debug for TaskGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskGuard")
            .field("id", &self.id())
            .field("group", &self.inner.label)
            .finish()
    }
}
