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
//! # The generation
//!
//! `notify_all` bumps a *generation* counter; a listener remembers the
//! generation it started in and is notified once the counter differs. The
//! counter is written only while holding the waiters' lock, and read without
//! it, so listening and noticing a wake-up take no lock:
//!
//! * `listen` reads the generation (`Acquire`). Whichever order it and a
//!   `notify_all` (`Release` store) run in, either the listener's generation is
//!   older than the bump, so the listener completes, or the notify
//!   happened-before the `listen`, so it also happened-before the waiter's
//!   check of its condition, which then sees the condition true.
//! * A listener that has to wait stores its waker under the lock, after
//!   re-reading the generation under the same lock: if a notify came in
//!   between, the listener completes instead of registering. So every stored
//!   waker belongs to the current generation, and a notify (which takes them
//!   all in the critical section that bumps the generation) cannot miss one.
//! * A listener polled again first reads the generation without the lock: a
//!   notified listener completes without touching the lock.
//!
//! # Storage
//!
//! One async waiter is the common case, so the first waker is stored inline
//! and a notify takes it without touching a list; further async waiters go to
//! a list whose memory is kept across notifies, so steady-state waits do not
//! allocate, up to [`KEPT`] wakers' worth: the room of a burst beyond that
//! (100,000 waiters at once: 3 MB) is given back at the next notify, or once
//! every listener of the list is gone. Until then a burst's room is kept
//! (a long-lived listener in the list keeps it through any number of
//! timed-out waits around it), so what an event holds is bounded by its
//! peak since the last notify. Blocking waiters wait on a condition
//! variable, re-checking the generation under the lock. A listener dropped
//! early (a timed-out or cancelled wait) removes its own waker, so nothing
//! outlives the wait.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::sync::{self, AtomicU64, Condvar, Mutex, Ordering};

/// Async and blocking waiters for one condition.
#[derive(Debug)]
pub(crate) struct Event {
    /// Bumped by every `notify_all`, only while `waiters` is locked (so under
    /// the lock a `Relaxed` read sees the current value); read without the
    /// lock with `Acquire`. A listener whose generation differs has been
    /// notified.
    generation: AtomicU64,
    waiters: Mutex<Waiters>,
    condvar: Condvar,
}

/// The async listeners of the current generation.
#[derive(Debug, Default)]
struct Waiters {
    /// The waker of the listener in [`Slot::First`].
    first: Option<Waker>,
    /// Wakers of the listeners in [`Slot::More`]. Moved out by `notify_all`
    /// (and its memory given back), so an index is only meaningful within its
    /// generation.
    more: Vec<Option<Waker>>,
    /// Empty entries in `more`, for reuse.
    free: Vec<usize>,
}

/// The most wakers' room (and free indices) [`Waiters`] keeps once the
/// listeners that needed it are gone: 16 KB of wakers. (Smaller under Miri,
/// so that its test of a burst beyond it stays quick there.)
const KEPT: usize = if cfg!(miri) { 8 } else { 1024 };

/// Where a listener's waker is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Inline, in [`Waiters::first`].
    First,
    /// In [`Waiters::more`], at this index.
    More(usize),
}

impl Waiters {
    /// Stores a new listener's waker.
    fn insert(&mut self, waker: Waker) -> Slot {
        if self.first.is_none() {
            self.first = Some(waker);
            return Slot::First;
        }
        match self.free.pop() {
            Some(index) => {
                self.more[index] = Some(waker);
                Slot::More(index)
            }
            None => {
                self.more.push(Some(waker));
                Slot::More(self.more.len() - 1)
            }
        }
    }

    fn entry(&mut self, slot: Slot) -> &mut Option<Waker> {
        match slot {
            Slot::First => &mut self.first,
            Slot::More(index) => &mut self.more[index],
        }
    }

    /// Removes a listener's waker (the listener was dropped un-notified).
    fn remove(&mut self, slot: Slot) {
        *self.entry(slot) = None;
        if let Slot::More(index) = slot {
            self.free.push(index);
            // Every listener of the list is gone (timed out, cancelled): no
            // index into it is held, so it starts over, as after a notify.
            if self.free.len() == self.more.len() {
                self.more.clear();
                self.free.clear();
                self.trim();
            }
        }
    }

    /// Gives back the room of a burst beyond [`KEPT`] (the lists are empty).
    fn trim(&mut self) {
        if self.more.capacity() > KEPT {
            self.more = Vec::new();
        }
        if self.free.capacity() > KEPT {
            self.free = Vec::new();
        }
    }
}

impl Event {
    pub(crate) fn new() -> Self {
        Self {
            generation: AtomicU64::new(0),
            waiters: Mutex::new(Waiters::default()),
            condvar: Condvar::new(),
        }
    }

    /// Starts listening: any `notify_all` from now on completes the listener.
    /// Takes no lock.
    pub(crate) fn listen(&self) -> Listener<'_> {
        Listener {
            event: self,
            generation: self.generation.load(Ordering::Acquire),
            slot: None,
        }
    }

    /// Wakes every current listener, async and blocking.
    pub(crate) fn notify_all(&self) {
        let (first, more) = {
            let mut waiters = self.waiters.lock();
            // Only written under the lock, so load + store cannot lose a bump.
            let next = self.generation.load(Ordering::Relaxed).wrapping_add(1);
            self.generation.store(next, Ordering::Release);
            let more = (!waiters.more.is_empty()).then(|| {
                waiters.free.clear();
                let more = std::mem::take(&mut waiters.more);
                waiters.trim();
                more
            });
            (waiters.first.take(), more)
        };
        // Blocking listeners re-check the generation under the lock, so
        // notifying after releasing it cannot be missed. (With no thread
        // blocked this is one load: `parking_lot` checks for waiters first.)
        self.condvar.notify_all();
        // Wake outside the lock: a waker may run arbitrary code.
        if let Some(waker) = first {
            waker.wake();
        }
        if let Some(more) = more {
            self.wake_more(more);
        }
    }

    /// Wakes the listeners after the first, and gives the emptied list back
    /// so that the next wait does not allocate (up to [`KEPT`] wakers' room).
    #[cold]
    fn wake_more(&self, mut more: Vec<Option<Waker>>) {
        for waker in more.drain(..).flatten() {
            waker.wake();
        }
        if more.capacity() > KEPT {
            return;
        }
        let mut waiters = self.waiters.lock();
        if waiters.more.capacity() == 0 {
            waiters.more = more;
        }
    }
}

#[cfg(test)]
impl Event {
    /// How many wakers are stored (for the tests and loom models).
    pub(crate) fn registered_wakers(&self) -> usize {
        let waiters = self.waiters.lock();
        usize::from(waiters.first.is_some()) + waiters.more.iter().flatten().count()
    }

    /// Whether `waker` (or one that wakes the same task) is stored. (For the
    /// loom models only: under Miri `will_wake` may not recognise a copy.)
    #[cfg(loom)]
    pub(crate) fn holds(&self, waker: &Waker) -> bool {
        let waiters = self.waiters.lock();
        let mut stored = waiters.first.iter().chain(waiters.more.iter().flatten());
        stored.any(|w| w.will_wake(waker))
    }
}

/// A registration with an [`Event`]; a future that completes on the next
/// `notify_all` after [`Event::listen`].
#[derive(Debug)]
pub(crate) struct Listener<'a> {
    event: &'a Event,
    generation: u64,
    /// Where our waker is stored, if we stored one in `generation`.
    slot: Option<Slot>,
}

impl Listener<'_> {
    /// Whether a `notify_all` ran since `listen`, read without the lock.
    fn notified(&self) -> bool {
        self.event.generation.load(Ordering::Acquire) != self.generation
    }

    /// Whether a `notify_all` ran since `listen`, read under the lock.
    fn notified_locked(&self, _waiters: &Waiters) -> bool {
        self.event.generation.load(Ordering::Relaxed) != self.generation
    }

    /// Blocks the thread until notified or until `deadline` passes. Returns
    /// `true` if notified.
    pub(crate) fn wait_blocking(self, deadline: Option<std::time::Instant>) -> bool {
        if self.notified() {
            return true;
        }
        let mut waiters = self.event.waiters.lock();
        while !self.notified_locked(&waiters) {
            let (guard, timed_out) = sync::wait(&self.event.condvar, waiters, deadline);
            waiters = guard;
            if timed_out {
                return self.notified_locked(&waiters);
            }
        }
        true
    }

    /// `poll` when no notify was seen without the lock: checks again under
    /// the lock, and stores or updates the waker if still not notified.
    #[inline(never)]
    fn poll_locked(&mut self, waker: &Waker) -> Poll<()> {
        let mut waiters = self.event.waiters.lock();
        if self.notified_locked(&waiters) {
            self.slot = None;
            return Poll::Ready(());
        }
        match self.slot {
            Some(slot) => match waiters.entry(slot) {
                Some(stored) if stored.will_wake(waker) => {}
                entry => *entry = Some(waker.clone()),
            },
            None => self.slot = Some(waiters.insert(waker.clone())),
        }
        Poll::Pending
    }

    /// `drop` for a listener that stored a waker: removes it, unless a notify
    /// already took it.
    #[inline(never)]
    fn unregister(&self, slot: Slot) {
        let mut waiters = self.event.waiters.lock();
        if !self.notified_locked(&waiters) {
            waiters.remove(slot);
        }
    }
}

impl Future for Listener<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        // A notify took our waker (if any) with the generation it bumped.
        if this.notified() {
            this.slot = None;
            return Poll::Ready(());
        }
        this.poll_locked(cx.waker())
    }
}

impl Drop for Listener<'_> {
    #[inline]
    fn drop(&mut self) {
        // A completed listener has no slot: only a cancelled or timed-out
        // wait gets past this check.
        if let Some(slot) = self.slot {
            self.unregister(slot);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use std::sync::Arc;
    use std::task::Wake;

    use super::*;

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    fn poll(listener: &mut Listener<'_>, counter: &Arc<Counter>) -> Poll<()> {
        let waker = Waker::from(Arc::clone(counter));
        Pin::new(listener).poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn a_dropped_listener_removes_its_inline_waker() {
        let event = Event::new();
        let counter = Arc::new(Counter::default());
        let mut listener = event.listen();
        assert!(poll(&mut listener, &counter).is_pending());
        assert_eq!(Arc::strong_count(&counter), 2, "the event holds the waker");
        drop(listener);
        assert_eq!(event.registered_wakers(), 0);
        assert_eq!(
            Arc::strong_count(&counter),
            1,
            "the waker outlived its listener"
        );
        event.notify_all();
        assert_eq!(counter.0.load(Relaxed), 0, "a dropped listener was woken");
    }

    #[test]
    fn a_dropped_listener_frees_its_slot_for_the_next() {
        let event = Event::new();
        let (a, b, c) = (
            Arc::new(Counter::default()),
            Arc::new(Counter::default()),
            Arc::new(Counter::default()),
        );
        let mut first = event.listen();
        let mut second = event.listen();
        assert!(poll(&mut first, &a).is_pending());
        assert!(poll(&mut second, &b).is_pending());
        // The inline slot is freed and taken by a third listener; the second
        // stays in the list.
        drop(first);
        let mut third = event.listen();
        assert!(poll(&mut third, &c).is_pending());
        assert_eq!(event.registered_wakers(), 2);
        event.notify_all();
        assert_eq!(
            [&a, &b, &c].map(|w| w.0.load(Relaxed)),
            [0, 1, 1],
            "exactly the live listeners are woken"
        );
        assert!(poll(&mut second, &b).is_ready());
        assert!(poll(&mut third, &c).is_ready());
        assert_eq!(event.registered_wakers(), 0);
    }

    #[test]
    fn a_repolled_listener_keeps_one_waker_and_wakes_the_latest() {
        let event = Event::new();
        let (a, b) = (Arc::new(Counter::default()), Arc::new(Counter::default()));
        let mut listener = event.listen();
        assert!(poll(&mut listener, &a).is_pending());
        assert!(poll(&mut listener, &b).is_pending());
        assert_eq!(event.registered_wakers(), 1);
        assert_eq!(Arc::strong_count(&a), 1, "the replaced waker was kept");
        event.notify_all();
        assert_eq!((a.0.load(Relaxed), b.0.load(Relaxed)), (0, 1));
        assert!(poll(&mut listener, &b).is_ready());
    }

    #[test]
    fn a_listener_started_after_a_notify_waits_for_the_next() {
        let event = Event::new();
        let counter = Arc::new(Counter::default());
        event.notify_all();
        let mut listener = event.listen();
        assert!(poll(&mut listener, &counter).is_pending());
        event.notify_all();
        assert_eq!(counter.0.load(Relaxed), 1);
        assert!(poll(&mut listener, &counter).is_ready());
    }

    #[test]
    fn many_waiters_reuse_the_list_without_allocating_again() {
        let event = Event::new();
        let counter = Arc::new(Counter::default());
        let mut capacity = None;
        for _ in 0..3 {
            let mut listeners: Vec<_> = (0..4).map(|_| event.listen()).collect();
            for listener in &mut listeners {
                assert!(poll(listener, &counter).is_pending());
            }
            event.notify_all();
            let now = event.waiters.lock().more.capacity();
            assert!(now >= 3, "the list was not given back");
            assert_eq!(*capacity.get_or_insert(now), now, "the list grew again");
        }
        assert_eq!(counter.0.load(Relaxed), 12);
    }

    /// A burst of waiters beyond [`KEPT`] leaves no more room than that once
    /// notified, or once they are all gone (timed-out or cancelled waits):
    /// 100,000 waiters at once kept 3 MB for the event's life. Everything
    /// below `KEPT` is kept (the test above).
    #[test]
    fn a_burst_of_waiters_gives_its_room_back() {
        let event = Event::new();
        let counter = Arc::new(Counter::default());
        let burst = 4 * KEPT;
        let room = |event: &Event| {
            let waiters = event.waiters.lock();
            (waiters.more.capacity(), waiters.free.capacity())
        };
        for notified in [true, false] {
            let mut listeners: Vec<_> = (0..burst).map(|_| event.listen()).collect();
            for listener in &mut listeners {
                assert!(poll(listener, &counter).is_pending());
            }
            // Half leave early: their indices go to the free list.
            listeners.truncate(burst / 2);
            assert!(room(&event).0 >= burst - 1);
            if notified {
                event.notify_all();
            }
            drop(listeners);
            let (more, free) = room(&event);
            assert!(more <= KEPT && free <= KEPT, "{more}, {free}");
            assert_eq!(event.registered_wakers(), 0);
        }
        assert_eq!(counter.0.load(Relaxed), burst / 2);
    }
}
