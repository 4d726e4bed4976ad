//! The state word: how many tasks are pending, how many handles keep the
//! group alive, whether the group is closed, and whether anyone is waiting
//! for the count of tasks to reach zero.
//!
//! # Layout
//!
//! ```text
//!  63              34 33                      2    1         0
//! +------------------+-------------------------+---------+--------+
//! |     handles      |     pending tasks       | WAITING | CLOSED |
//! +------------------+-------------------------+---------+--------+
//! ```
//!
//! The word is also the group's reference count: the group's memory lives
//! while a handle (a [`WaitGroup`](crate::WaitGroup) or an internal
//! reference) or a pending task (a guard) is counted, and the step that takes
//! both counts to zero frees it ([`crate::shared`]). So a guard costs one
//! read-modify-write to create and one to complete, where a guard holding an
//! `Arc` to a group with its own counter costs two each way.
//!
//! | CLOSED | WAITING | tasks | meaning                                          |
//! |--------|---------|-------|--------------------------------------------------|
//! | 0      | 0       | 0     | open, idle, nobody waiting (a new group)         |
//! | 0      | 0       | n > 0 | open, busy; the last `done` notifies nobody      |
//! | 0      | 1       | n > 0 | busy, a waiter is listening: the last `done` clears WAITING and notifies |
//! | x      | 1       | 0     | idle; a waiter set WAITING and found no task (harmless: the next last `done` clears it and notifies nobody) |
//! | 1      | x       | x     | as above, and `try_add` refuses new work         |
//!
//! # Why no wake-up is lost
//!
//! A waiter (1) listens on the event, (2) sets WAITING with a read-modify-write
//! and reads the count from the same operation, (3) returns if the count is
//! zero, else waits on the listener. The `done` that takes the count to zero
//! does so with a compare-and-swap that also clears WAITING, so it knows from
//! the same operation whether anyone was waiting, and then notifies. Every
//! read-modify-write on the word is totally ordered, so either the waiter's
//! (2) comes after that `done` (it sees zero, or a newer non-zero count whose
//! own last `done` will see WAITING), or it comes before it (the `done` sees
//! WAITING and notifies; the waiter listened before (2), so the notification
//! reaches it).
//!
//! # Why the notifier may still touch the group
//!
//! The `done` that takes the count to zero has, in the same step, given up
//! its own task's reference; another thread may then drop the last handle.
//! So when that step also clears WAITING it turns the task's unit into a
//! handle unit (`tasks - 1, handles + 1` in one compare-and-swap), notifies
//! through that handle, and then drops it like any other handle. A `done`
//! that did not see WAITING never touches the group after its step. This is
//! why `done` is a compare-and-swap rather than a `fetch_sub`: the decision
//! "I woke the waiters, so I hold a reference" must be made by the same
//! operation that releases the task, or two `done`s could both believe they
//! own the one WAITING bit (the loom models in `src/tests/loom_models.rs` include
//! the last handle dropped while the last `done` notifies).
//!
//! # Memory ordering
//!
//! `done` releases its task with `Release`, and waiters read the count with
//! `Acquire`: when a waiter sees zero, every task's work happens-before the
//! wait returns. Every update is a read-modify-write, so the release sequence
//! of each `done` reaches the waiter's read. Adding a task or a handle only
//! needs `Relaxed`, like `Arc::clone`: the caller already holds a reference.
//! The step that frees the group is followed by an `Acquire` fence, like
//! `Arc`'s drop, so every other reference's last use happens-before the free.
//!
//! # Overflow
//!
//! Tasks have 32 bits and handles 30. An increment that finds its field at
//! half its range or more is undone and panics (the count is left as it was),
//! so no number of concurrent increments in between can carry into the next
//! field. Leaking two billion guards with `mem::forget` is the only way there.

use crate::event::{Event, Listener};
use crate::sync::{fence, AtomicU64, Ordering};

const CLOSED: u64 = 0b01;
const WAITING: u64 = 0b10;
const TASKS_SHIFT: u32 = 2;
const HANDLES_SHIFT: u32 = 34;
const ONE_TASK: u64 = 1 << TASKS_SHIFT;
const ONE_HANDLE: u64 = 1 << HANDLES_SHIFT;
const TASKS: u64 = ((1 << 32) - 1) << TASKS_SHIFT;
const HANDLES: u64 = !0 << HANDLES_SHIFT;
/// Half of each field's range: an increment finding its field here panics.
const MAX_TASKS: u64 = 1 << 31;
const MAX_HANDLES: u64 = 1 << 29;

fn tasks(word: u64) -> u64 {
    (word & TASKS) >> TASKS_SHIFT
}

fn handles(word: u64) -> u64 {
    word >> HANDLES_SHIFT
}

/// Whether nothing references the group any more.
fn unreferenced(word: u64) -> bool {
    word & (TASKS | HANDLES) == 0
}

/// What the caller of [`Word::done`] must do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(crate) enum Done {
    /// Nothing: the group is still referenced, and nobody was waiting.
    Nothing,
    /// Waiters must be notified. The caller now holds one handle unit
    /// (converted from its task's unit in the same step) and must release it
    /// after notifying.
    Notify,
    /// That was the last reference: the caller must free the group.
    Free,
}

/// The state word on its own, so that the steps which may be a group's last
/// touch borrow nothing but this atomic (the same rule `Arc` follows: after
/// the step that lets another thread free the memory, only a reference to
/// the atomic itself is still live, and it is not used again).
#[derive(Debug)]
pub(crate) struct Word(AtomicU64);

impl Word {
    /// Counts one more pending task. Returns whether the group was closed.
    ///
    /// # Panics
    ///
    /// With 2^31 tasks pending (the count is left unchanged).
    #[inline]
    pub(crate) fn add_task(&self) -> bool {
        let prev = self.0.fetch_add(ONE_TASK, Ordering::Relaxed);
        if tasks(prev) >= MAX_TASKS {
            self.0.fetch_sub(ONE_TASK, Ordering::Relaxed);
            too_many("pending tasks");
        }
        prev & CLOSED != 0
    }

    /// Counts one more pending task unless the group is closed.
    ///
    /// # Panics
    ///
    /// With 2^31 tasks pending.
    #[inline]
    pub(crate) fn try_add_task(&self) -> Result<(), IsClosed> {
        let mut word = self.0.load(Ordering::Relaxed);
        loop {
            if word & CLOSED != 0 {
                return Err(IsClosed);
            }
            if tasks(word) >= MAX_TASKS {
                too_many("pending tasks");
            }
            match self.0.compare_exchange_weak(
                word,
                word + ONE_TASK,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => word = actual,
            }
        }
    }

    /// Completes one pending task, giving up its reference; see [`Done`].
    #[inline]
    pub(crate) fn done(&self) -> Done {
        let mut word = self.0.load(Ordering::Relaxed);
        loop {
            debug_assert!(tasks(word) > 0, "done() without a matching add()");
            let (new, done) = if tasks(word) == 1 && word & WAITING != 0 {
                (word - ONE_TASK - WAITING + ONE_HANDLE, Done::Notify)
            } else if unreferenced(word - ONE_TASK) {
                (word - ONE_TASK, Done::Free)
            } else {
                (word - ONE_TASK, Done::Nothing)
            };
            match self
                .0
                .compare_exchange_weak(word, new, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => {
                    if done == Done::Free {
                        fence(Ordering::Acquire);
                    }
                    return done;
                }
                Err(actual) => word = actual,
            }
        }
    }

    /// Counts one more handle.
    ///
    /// # Panics
    ///
    /// With 2^29 handles (the count is left unchanged).
    #[inline]
    pub(crate) fn add_handle(&self) {
        let prev = self.0.fetch_add(ONE_HANDLE, Ordering::Relaxed);
        if handles(prev) >= MAX_HANDLES {
            self.0.fetch_sub(ONE_HANDLE, Ordering::Relaxed);
            too_many("handles");
        }
    }

    /// Releases one handle. Returns `true` if that was the last reference:
    /// the caller must free the group.
    #[inline]
    pub(crate) fn release_handle(&self) -> bool {
        let prev = self.0.fetch_sub(ONE_HANDLE, Ordering::Release);
        debug_assert!(handles(prev) > 0, "a handle released twice");
        if unreferenced(prev - ONE_HANDLE) {
            fence(Ordering::Acquire);
            return true;
        }
        false
    }
}

#[cold]
#[track_caller]
fn too_many(what: &str) -> ! {
    panic!("taskgroup: too many {what} on one group (the count would overflow)")
}

/// The state word and the event waiters listen on.
#[derive(Debug)]
pub(crate) struct State {
    word: Word,
    idle: Event,
    /// Set when the group is "freed" under loom, which keeps the memory so
    /// that a use after the free is an assertion failure rather than
    /// undefined behaviour (see `crate::shared`).
    #[cfg(loom)]
    pub(crate) freed: loom::sync::atomic::AtomicBool,
}

/// `try_add` found the group closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IsClosed;

impl State {
    /// A state counting one handle (the creator's), no task, open.
    pub(crate) fn new() -> Self {
        Self {
            word: Word(AtomicU64::new(ONE_HANDLE)),
            idle: Event::new(),
            #[cfg(loom)]
            freed: loom::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The word, for the reference-counting steps in `crate::shared`.
    pub(crate) fn word(&self) -> &Word {
        &self.word
    }

    /// Wakes every waiter listening now (after a [`Done::Notify`]).
    #[cold]
    pub(crate) fn notify_idle(&self) {
        self.idle.notify_all();
    }

    /// Closes the group to `try_add`. Returns `true` if this call closed it.
    pub(crate) fn close(&self) -> bool {
        self.word.0.fetch_or(CLOSED, Ordering::Relaxed) & CLOSED == 0
    }

    /// Opens the group to `try_add` again. Returns `true` if it was closed.
    pub(crate) fn reopen(&self) -> bool {
        self.word.0.fetch_and(!CLOSED, Ordering::Relaxed) & CLOSED != 0
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.word.0.load(Ordering::Relaxed) & CLOSED != 0
    }

    /// The number of pending tasks.
    pub(crate) fn len(&self) -> u64 {
        tasks(self.word.0.load(Ordering::Acquire))
    }

    /// Listens for the count reaching zero. Returns `None` if it is zero now
    /// (with happens-before from every completed task), else a listener that
    /// completes when the count next reaches zero (the caller re-checks).
    pub(crate) fn idle_listener(&self) -> Option<Listener<'_>> {
        if tasks(self.word.0.load(Ordering::Acquire)) == 0 {
            return None;
        }
        let listener = self.idle.listen();
        let word = self.word.0.fetch_or(WAITING, Ordering::Acquire);
        if tasks(word) == 0 {
            return None;
        }
        Some(listener)
    }

    /// Sets WAITING so that the `done` which takes the count to zero takes
    /// the notify path (and so calls [`Counted::on_idle`]), and returns the
    /// count at that moment: if it is zero, no such `done` is to come.
    ///
    /// `AcqRel`: the caller's earlier writes (a detached group's handle count)
    /// are released to that `done`, which reads this bit, and the count is
    /// read with `Acquire` as in [`State::idle_listener`].
    ///
    /// [`Counted::on_idle`]: crate::shared::Counted::on_idle
    pub(crate) fn arm_idle_hook(&self) -> u64 {
        tasks(self.word.0.fetch_or(WAITING, Ordering::AcqRel))
    }

    /// Resolves once the count is zero.
    pub(crate) async fn wait_idle(&self) {
        while let Some(listener) = self.idle_listener() {
            listener.await;
        }
    }

    /// Blocks until the count is zero or `deadline` passes. Returns `true` if
    /// the count reached zero.
    pub(crate) fn wait_idle_blocking(&self, deadline: Option<std::time::Instant>) -> bool {
        while let Some(listener) = self.idle_listener() {
            if !listener.wait_blocking(deadline) {
                return self.len() == 0;
            }
        }
        true
    }

    /// How many async waiters' wakers the event holds (loom models check
    /// that none outlives its wait).
    #[cfg(all(test, loom))]
    pub(crate) fn registered_wakers(&self) -> usize {
        self.idle.registered_wakers()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn word(tasks: u64, handles: u64, flags: u64) -> Word {
        Word(AtomicU64::new(
            (tasks << TASKS_SHIFT) | (handles << HANDLES_SHIFT) | flags,
        ))
    }

    fn parts(word: &Word) -> (u64, u64, u64) {
        let w = word.0.load(Ordering::Relaxed);
        (tasks(w), handles(w), w & (CLOSED | WAITING))
    }

    #[test]
    fn done_says_who_notifies_and_who_frees() {
        // Not the last task: nothing to do.
        let w = word(2, 1, WAITING);
        assert_eq!(w.done(), Done::Nothing);
        assert_eq!(parts(&w), (1, 1, WAITING));
        // The last task with a waiter: WAITING becomes a handle unit.
        assert_eq!(w.done(), Done::Notify);
        assert_eq!(parts(&w), (0, 2, 0));
        // The last task with no handle left and nobody waiting: free.
        let w = word(1, 0, CLOSED);
        assert_eq!(w.done(), Done::Free);
        assert_eq!(parts(&w), (0, 0, CLOSED));
        // ... but with a waiter, notify first (the handle unit keeps it).
        let w = word(1, 0, WAITING);
        assert_eq!(w.done(), Done::Notify);
        assert!(w.release_handle(), "the notifier's handle is the last");
    }

    #[test]
    fn the_last_handle_frees_whatever_the_flags() {
        let w = word(0, 2, CLOSED | WAITING);
        assert!(!w.release_handle());
        assert!(w.release_handle());
        let w = word(1, 1, 0);
        assert!(!w.release_handle(), "a pending task keeps the group");
    }

    #[test]
    fn too_many_tasks_panics_and_leaves_the_count() {
        let w = word(MAX_TASKS, 1, 0);
        let add = std::panic::catch_unwind(|| w.add_task());
        assert!(add.is_err());
        let try_add = std::panic::catch_unwind(|| w.try_add_task());
        assert!(try_add.is_err());
        assert_eq!(parts(&w), (MAX_TASKS, 1, 0));
        let w = word(MAX_TASKS - 1, 1, 0);
        assert!(!w.add_task());
        assert_eq!(parts(&w), (MAX_TASKS, 1, 0));
    }

    #[test]
    fn too_many_handles_panics_and_leaves_the_count() {
        let w = word(3, MAX_HANDLES, 0);
        assert!(std::panic::catch_unwind(|| w.add_handle()).is_err());
        assert_eq!(parts(&w), (3, MAX_HANDLES, 0));
    }

    #[test]
    fn the_fields_do_not_overlap() {
        assert_eq!(TASKS & HANDLES, 0);
        assert_eq!((TASKS | HANDLES) & (CLOSED | WAITING), 0);
        assert_eq!(TASKS | HANDLES | CLOSED | WAITING, u64::MAX);
        // The largest counts either field can reach stay inside it.
        assert_eq!(((2 * MAX_TASKS - 1) << TASKS_SHIFT) & !TASKS, 0);
        assert_eq!(
            ((2 * MAX_HANDLES - 1) << HANDLES_SHIFT) >> HANDLES_SHIFT,
            2 * MAX_HANDLES - 1
        );
    }
}
