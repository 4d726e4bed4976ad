//! The state word: how many tasks are pending, whether the group is closed, and
//! whether anyone is waiting for the count to reach zero.
//!
//! # Layout
//!
//! ```text
//!  63                                   2    1         0
//! +--------------------------------------+---------+--------+
//! |            pending count             | WAITING | CLOSED |
//! +--------------------------------------+---------+--------+
//! ```
//!
//! | CLOSED | WAITING | count | meaning                                          |
//! |--------|---------|-------|--------------------------------------------------|
//! | 0      | 0       | 0     | open, idle, nobody waiting (a new group)         |
//! | 0      | 0       | n > 0 | open, busy; the last `done` notifies nobody      |
//! | 0      | 1       | n > 0 | busy, a waiter is listening: the last `done` clears WAITING and notifies |
//! | x      | 1       | 0     | idle; a waiter set WAITING and found the count at zero (harmless, cleared by the next last `done`) |
//! | 1      | x       | x     | as above, and `try_add` refuses new work         |
//!
//! `add` and `done` are one atomic read-modify-write each. `done` touches the
//! [`Event`]'s lock only when it takes the count to zero *and* WAITING is set,
//! so "last one out" with no waiter costs nothing extra.
//!
//! # Why no wake-up is lost
//!
//! A waiter (1) listens on the event, (2) sets WAITING with a read-modify-write
//! and reads the count from the same operation, (3) returns if the count is
//! zero, else waits on the listener. The `done` that takes the count to zero
//! reads WAITING from the same read-modify-write that decrements, and then
//! (a) clears WAITING and (b) notifies. Every read-modify-write on the word is
//! totally ordered, so either the waiter's (2) comes after that decrement (it
//! sees zero, or a newer non-zero count whose own last `done` will see WAITING),
//! or it comes before it (the decrement sees WAITING and notifies). If (a)
//! clears a WAITING bit set by a waiter that came after the decrement, that
//! waiter had already listened (1 before 2), and (b) follows (a), so (b) wakes
//! it; it then re-checks and sets WAITING again.
//!
//! # Memory ordering
//!
//! `done` decrements with `Release`, and waiters read the count with `Acquire`:
//! when a waiter sees zero, every task's work happens-before the wait returns.
//! Every update is a read-modify-write, so the release sequence of each `done`
//! reaches the waiter's read. `add` only needs `Relaxed`, like `Arc::clone`: a
//! new task is published by whatever hands it its guard.
//!
//! # Overflow
//!
//! The count has 62 bits. Every increment is paired with exactly one decrement
//! by construction (a guard completes once, on `done` or drop), and reaching
//! 2^62 pending tasks at one per nanosecond would take over a century, so the
//! count cannot wrap; a debug assertion checks it never goes below zero.

use crate::event::{Event, Listener};
use crate::sync::{AtomicU64, Ordering};

const CLOSED: u64 = 0b01;
const WAITING: u64 = 0b10;
const ONE_TASK: u64 = 0b100;

fn count(word: u64) -> u64 {
    word >> 2
}

/// The state word and the event waiters listen on.
#[derive(Debug)]
pub(crate) struct State {
    word: AtomicU64,
    idle: Event,
}

/// `try_add` found the group closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IsClosed;

impl State {
    pub(crate) fn new() -> Self {
        Self {
            word: AtomicU64::new(0),
            idle: Event::new(),
        }
    }

    /// Registers one pending task, whether or not the group is closed.
    /// Returns whether it was closed.
    #[inline]
    pub(crate) fn add(&self) -> bool {
        self.word.fetch_add(ONE_TASK, Ordering::Relaxed) & CLOSED != 0
    }

    /// Registers one pending task unless the group is closed.
    #[inline]
    pub(crate) fn try_add(&self) -> Result<(), IsClosed> {
        let mut word = self.word.load(Ordering::Relaxed);
        loop {
            if word & CLOSED != 0 {
                return Err(IsClosed);
            }
            match self.word.compare_exchange_weak(
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

    /// Completes one pending task, waking the waiters if it was the last.
    #[inline]
    pub(crate) fn done(&self) {
        let prev = self.word.fetch_sub(ONE_TASK, Ordering::Release);
        debug_assert!(count(prev) > 0, "done() without a matching add()");
        if count(prev) == 1 && prev & WAITING != 0 {
            self.wake_waiters();
        }
    }

    #[cold]
    fn wake_waiters(&self) {
        self.word.fetch_and(!WAITING, Ordering::Relaxed);
        self.idle.notify_all();
    }

    /// Closes the group to `try_add`. Returns `true` if this call closed it.
    pub(crate) fn close(&self) -> bool {
        self.word.fetch_or(CLOSED, Ordering::Relaxed) & CLOSED == 0
    }

    /// Closes the group to `try_add` and returns how many tasks were pending
    /// at that moment (exactly: it is the same read-modify-write).
    pub(crate) fn close_and_len(&self) -> u64 {
        count(self.word.fetch_or(CLOSED, Ordering::Relaxed))
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.word.load(Ordering::Relaxed) & CLOSED != 0
    }

    /// The number of pending tasks.
    pub(crate) fn len(&self) -> u64 {
        count(self.word.load(Ordering::Acquire))
    }

    /// Listens for the count reaching zero. Returns `None` if it is zero now
    /// (with happens-before from every completed task), else a listener that
    /// completes when the count next reaches zero (the caller re-checks).
    pub(crate) fn idle_listener(&self) -> Option<Listener<'_>> {
        if count(self.word.load(Ordering::Acquire)) == 0 {
            return None;
        }
        let listener = self.idle.listen();
        let word = self.word.fetch_or(WAITING, Ordering::Acquire);
        if count(word) == 0 {
            return None;
        }
        Some(listener)
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
