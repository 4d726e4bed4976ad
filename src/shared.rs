//! The group's shared allocation, and the two kinds of reference to it: a
//! handle ([`Shared`]) and a pending task ([`TaskRef`], what a guard holds).
//!
//! This is `Arc` with its count moved into the group's state word
//! ([`crate::state`]), so that one read-modify-write both counts a task and
//! keeps the group alive. With an `Arc`, a guard would touch two counters on
//! two cache lines each way (the `Arc`'s and the group's); here it touches
//! one. `scripts/bench-report` measures the difference (docs/PERFORMANCE.md).
//!
//! This is the crate's only `unsafe` code. Its invariant:
//!
//! > The allocation a `Shared` or `TaskRef` points to is a live `T` made by
//! > [`Shared::new`], and the reference counts one unit in that `T`'s state
//! > word (a handle unit for `Shared`, a task unit for `TaskRef`), until the
//! > reference gives the unit up. The allocation is freed exactly once, by
//! > whoever makes the step that leaves the word with no unit at all.
//!
//! Everything else follows from the word's rules ([`crate::state::Word`]):
//! a unit is only added by someone who already holds one; giving one up is
//! the last thing a reference does with the allocation, except for the one
//! case where [`Done::Notify`] hands the caller a handle unit in the same
//! step, which it then holds (as a `Shared`) while it notifies. Only shared
//! references to `T` are ever made, and `T: Send + Sync` is required to share
//! or send one, as for `Arc`.
//!
//! Under `--cfg loom` the memory is never freed: the free marks the state as
//! freed (asserting it was not already) and every access asserts it is not,
//! so the loom models turn a use after free or a double free into a failed
//! assertion instead of undefined behaviour. Miri runs the test suite over
//! the real frees (`scripts/miri`).

use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ops::Deref;
use std::ptr::NonNull;

use crate::state::{Done, IsClosed, State};

/// What lives in a shared allocation: something with a state word.
pub(crate) trait Counted {
    /// The state word that counts references to `self`.
    fn state(&self) -> &State;

    /// Called after the last task of a group with a waiter completed and the
    /// waiters were woken, through the handle unit the notifier holds (so
    /// `this` is alive for the call). Cold.
    fn on_idle(_this: &Shared<Self>)
    where
        Self: Sized,
    {
    }

    /// Called by the loom build where the real build frees the allocation.
    #[cfg(loom)]
    fn on_free(&self) {}
}

/// A handle: counts one handle unit; `Clone` adds one, `Drop` gives it up.
pub(crate) struct Shared<T: Counted> {
    ptr: NonNull<T>,
    _owns: PhantomData<T>,
}

/// A pending task: counts one task unit, given up on `Drop` (which also
/// wakes the waiters if it was the last task).
pub(crate) struct TaskRef<T: Counted> {
    ptr: NonNull<T>,
    _owns: PhantomData<T>,
}

// SAFETY: like `Arc<T>`: the references give out `&T` on any thread and may
// drop the `T` on any thread, which `T: Send + Sync` allows.
unsafe impl<T: Counted + Send + Sync> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T: Counted + Send + Sync> Sync for Shared<T> {}
// SAFETY: as above.
unsafe impl<T: Counted + Send + Sync> Send for TaskRef<T> {}
// SAFETY: as above.
unsafe impl<T: Counted + Send + Sync> Sync for TaskRef<T> {}

/// The `T` behind a reference that holds a unit.
///
/// # Safety
///
/// `ptr` must come from a `Shared` or `TaskRef` that still holds its unit
/// (so the allocation is live), and the result must not outlive that.
#[inline]
unsafe fn get<'a, T: Counted>(ptr: NonNull<T>) -> &'a T {
    // SAFETY: the caller holds a unit, so the allocation is live (the
    // module's invariant); only shared references are ever made.
    let value = unsafe { ptr.as_ref() };
    #[cfg(loom)]
    assert!(
        !value
            .state()
            .freed
            .load(loom::sync::atomic::Ordering::SeqCst),
        "a group was used after it was freed"
    );
    value
}

/// Frees the allocation.
///
/// # Safety
///
/// `ptr` came from [`Shared::new`], and the caller made the step that left
/// its word with no unit: nobody else can reach it.
unsafe fn free<T: Counted>(ptr: NonNull<T>) {
    #[cfg(not(loom))]
    // SAFETY: a `Box<MaybeUninit<T>>` leaked by `Shared::new` once written,
    // so a `Box<T>`'s allocation holding a `T`; unreachable by anyone else
    // (the caller's contract), so this is the one owner.
    drop(unsafe { Box::from_raw(ptr.as_ptr()) });
    #[cfg(loom)]
    {
        // SAFETY: under loom the memory is never freed, so it is live.
        let value = unsafe { ptr.as_ref() };
        let was_freed = value
            .state()
            .freed
            .swap(true, loom::sync::atomic::Ordering::SeqCst);
        assert!(!was_freed, "a group was freed twice");
        value.on_free();
    }
}

impl<T: Counted> Shared<T> {
    /// A new allocation holding what `make` returns. Its state must count
    /// exactly one handle and no task, as [`State::new`] does; that handle
    /// is the result.
    ///
    /// The allocation is made before `make` runs, so that the value is built
    /// in it: `Box::new(make())` builds it on the stack and copies it (a
    /// group's node is 376 bytes: `benches/profile.rs build flat` went from
    /// 1,005 to 980 instructions a group). If `make` panics, the allocation
    /// is freed and nothing else happens.
    pub(crate) fn new(make: impl FnOnce() -> T) -> Self {
        let mut place = Box::new(MaybeUninit::<T>::uninit());
        place.write(make());
        Self {
            // Initialised just above; `free` turns it back into a `Box<T>`
            // (`MaybeUninit<T>` has `T`'s layout).
            ptr: NonNull::from(Box::leak(place)).cast::<T>(),
            _owns: PhantomData,
        }
    }

    /// Counts a pending task; returns it and whether the group was closed.
    ///
    /// # Panics
    ///
    /// With 2^31 tasks pending.
    #[inline]
    pub(crate) fn add_task(&self) -> (TaskRef<T>, bool) {
        let was_closed = self.state().word().add_task();
        (TaskRef::adopt(self.ptr), was_closed)
    }

    /// Counts a pending task unless the group is closed.
    ///
    /// # Panics
    ///
    /// With 2^31 tasks pending.
    #[inline]
    pub(crate) fn try_add_task(&self) -> Result<TaskRef<T>, IsClosed> {
        self.state().word().try_add_task()?;
        Ok(TaskRef::adopt(self.ptr))
    }

    /// Whether both handles point to the same group.
    pub(crate) fn ptr_eq(a: &Self, b: &Self) -> bool {
        a.ptr == b.ptr
    }

    /// Wraps a handle unit the caller already counted.
    fn adopt(ptr: NonNull<T>) -> Self {
        Self {
            ptr,
            _owns: PhantomData,
        }
    }
}

impl<T: Counted> TaskRef<T> {
    /// A handle to the group, made from a pending task (whose unit keeps the
    /// group alive while the handle's unit is added, as for `Clone`).
    ///
    /// # Panics
    ///
    /// With 2^29 handles to one group.
    pub(crate) fn handle(&self) -> Shared<T> {
        self.state().word().add_handle();
        Shared::adopt(self.ptr)
    }

    /// Wraps a task unit the caller already counted.
    fn adopt(ptr: NonNull<T>) -> Self {
        Self {
            ptr,
            _owns: PhantomData,
        }
    }
}

impl<T: Counted> Deref for Shared<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: `self` holds its handle unit for as long as the borrow.
        unsafe { get(self.ptr) }
    }
}

impl<T: Counted> Deref for TaskRef<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: `self` holds its task unit for as long as the borrow.
        unsafe { get(self.ptr) }
    }
}

impl<T: Counted> Clone for Shared<T> {
    /// # Panics
    ///
    /// With 2^29 handles to one group.
    #[inline]
    fn clone(&self) -> Self {
        self.state().word().add_handle();
        Self::adopt(self.ptr)
    }
}

impl<T: Counted> Drop for Shared<T> {
    #[inline]
    fn drop(&mut self) {
        // After `release_handle`, only the `&Word` it borrowed was live (as
        // in `Arc`'s drop), and it is not used again.
        if self.state().word().release_handle() {
            // SAFETY: our step left the word with no unit.
            unsafe { free(self.ptr) };
        }
    }
}

impl<T: Counted> Drop for TaskRef<T> {
    #[inline]
    fn drop(&mut self) {
        match self.state().word().done() {
            Done::Nothing => {}
            // SAFETY: our step left the word with no unit.
            Done::Free => unsafe { free(self.ptr) },
            Done::Notify => notify(Shared::adopt(self.ptr)),
        }
    }
}

/// Wakes the waiters through the handle unit `done` gave the caller, then
/// releases it (which may free the group).
#[cold]
fn notify<T: Counted>(handle: Shared<T>) {
    handle.state().notify_idle();
    T::on_idle(&handle);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::{Counted, Shared};
    use crate::state::State;

    /// A payload that counts its drops.
    struct Plain {
        state: State,
        drops: Arc<AtomicUsize>,
    }

    impl Counted for Plain {
        fn state(&self) -> &State {
            &self.state
        }
    }

    impl Drop for Plain {
        fn drop(&mut self) {
            self.drops.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_value_made_in_place_is_dropped_once_with_the_last_handle() {
        let drops = Arc::new(AtomicUsize::new(0));
        let first = Shared::new(|| Plain {
            state: State::new(),
            drops: drops.clone(),
        });
        let second = first.clone();
        drop(first);
        assert_eq!(drops.load(Ordering::Relaxed), 0);
        drop(second);
        assert_eq!(drops.load(Ordering::Relaxed), 1);
    }

    /// Under Miri, a leaked allocation fails the run.
    #[test]
    fn a_panic_while_making_the_value_frees_its_allocation() {
        let made = std::panic::catch_unwind(|| Shared::<Plain>::new(|| panic!("no value")));
        assert!(made.is_err());
    }
}
