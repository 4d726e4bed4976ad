//! A broadcast wake-up: every task or thread listening when [`Event::notify_all`]
//! runs is woken.
//!
//! Listening is split from waiting so that a waiter can register *before* it
//! checks its condition, which is what makes a lost wake-up impossible:
//!
//! ```text
//! waiter                          notifier
//! listener = event.listen()       make the condition true
//! if condition { return }         event.notify_all()
//! listener.await
//! ```
//!
//! `listen` records the current *generation* under the lock and `notify_all`
//! bumps it under the same lock, so whichever order the two locks are taken in,
//! either the waiter sees the condition or its listener sees a newer generation.
//! Wakers are stored only by listeners that actually have to wait; a notify
//! takes them all, and a listener dropped early (a timed-out or cancelled wait)
//! removes its own waker, so nothing outlives the wait.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::sync::{self, Condvar, Mutex};

/// Async and blocking waiters for one condition.
#[derive(Debug)]
pub(crate) struct Event {
    waiters: Mutex<Waiters>,
    condvar: Condvar,
}

#[derive(Debug, Default)]
struct Waiters {
    /// Bumped by every `notify_all`; a listener whose generation differs has
    /// been notified.
    generation: u64,
    /// Wakers of async listeners of the current generation, by slot. Cleared
    /// (moved out) by `notify_all`, so a slot index is only meaningful within
    /// its generation.
    wakers: Vec<Option<Waker>>,
    /// Empty slots in `wakers`, for reuse.
    free: Vec<usize>,
}

impl Event {
    pub(crate) fn new() -> Self {
        Self {
            waiters: Mutex::new(Waiters::default()),
            condvar: Condvar::new(),
        }
    }

    /// Starts listening: any `notify_all` from now on completes the listener.
    pub(crate) fn listen(&self) -> Listener<'_> {
        let generation = self.waiters.lock().generation;
        Listener {
            event: self,
            generation,
            slot: None,
        }
    }

    /// Wakes every current listener, async and blocking.
    pub(crate) fn notify_all(&self) {
        let mut wakers = {
            let mut waiters = self.waiters.lock();
            waiters.generation = waiters.generation.wrapping_add(1);
            waiters.free.clear();
            std::mem::take(&mut waiters.wakers)
        };
        // Blocking listeners re-check the generation under the lock, so
        // notifying after releasing it cannot be missed.
        self.condvar.notify_all();
        if wakers.capacity() == 0 {
            return;
        }
        // Wake outside the lock: a waker may run arbitrary code.
        for waker in wakers.drain(..).flatten() {
            waker.wake();
        }
        // Give the emptied list back, so the next wait does not allocate.
        let mut waiters = self.waiters.lock();
        if waiters.wakers.capacity() == 0 {
            waiters.wakers = wakers;
        }
    }
}

#[cfg(all(test, loom))]
impl Event {
    /// How many wakers are stored (for the loom models).
    pub(crate) fn registered_wakers(&self) -> usize {
        self.waiters.lock().wakers.iter().flatten().count()
    }
}

/// A registration with an [`Event`]; a future that completes on the next
/// `notify_all` after [`Event::listen`].
#[derive(Debug)]
pub(crate) struct Listener<'a> {
    event: &'a Event,
    generation: u64,
    slot: Option<usize>,
}

impl Listener<'_> {
    /// Blocks the thread until notified or until `deadline` passes. Returns
    /// `true` if notified.
    pub(crate) fn wait_blocking(self, deadline: Option<std::time::Instant>) -> bool {
        let mut waiters = self.event.waiters.lock();
        while waiters.generation == self.generation {
            let (guard, timed_out) = sync::wait(&self.event.condvar, waiters, deadline);
            waiters = guard;
            if timed_out {
                return waiters.generation != self.generation;
            }
        }
        true
    }
}

impl Future for Listener<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut waiters = this.event.waiters.lock();
        if waiters.generation != this.generation {
            // Notified; our slot (if any) was cleared with its generation.
            this.slot = None;
            return Poll::Ready(());
        }
        match this.slot {
            Some(slot) => match &mut waiters.wakers[slot] {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                entry => *entry = Some(cx.waker().clone()),
            },
            None => {
                let waker = Some(cx.waker().clone());
                let slot = match waiters.free.pop() {
                    Some(slot) => {
                        waiters.wakers[slot] = waker;
                        slot
                    }
                    None => {
                        waiters.wakers.push(waker);
                        waiters.wakers.len() - 1
                    }
                };
                this.slot = Some(slot);
            }
        }
        Poll::Pending
    }
}

impl Drop for Listener<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            let mut waiters = self.event.waiters.lock();
            // A notify since we registered already removed our waker.
            if waiters.generation == self.generation {
                waiters.wakers[slot] = None;
                waiters.free.push(slot);
            }
        }
    }
}
