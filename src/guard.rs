//! [`TaskGuard`]: one unit of pending work, completed by `done()` or drop.

use std::fmt;
use std::sync::Arc;

use crate::label::{GroupId, TaskId};
use crate::registry::Slot;
use crate::wait_group::Inner;

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
///         Listener { running: Some(wg.add_named("listener")) }
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
#[must_use = "dropping a TaskGuard completes it at once; keep it until the work is done"]
pub struct TaskGuard {
    pub(crate) inner: Arc<Inner>,
    pub(crate) id: TaskId,
    pub(crate) slot: Slot,
}

impl TaskGuard {
    /// The guard's id, unique within its group.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The id of the group the guard belongs to.
    pub fn group_id(&self) -> GroupId {
        self.inner.label.id
    }

    /// Completes the work. The same as dropping the guard, but says so.
    #[inline]
    pub fn done(self) {}
}

impl Drop for TaskGuard {
    #[inline]
    fn drop(&mut self) {
        self.inner.complete(self.slot);
    }
}

impl fmt::Debug for TaskGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskGuard")
            .field("id", &self.id)
            .field("group", &self.inner.label)
            .finish()
    }
}
