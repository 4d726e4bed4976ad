//! Loom models of [`Event`] on its own: the lock-free `listen`, the inline
//! first waker, the list for further async waiters, and blocking waiters.
//! ([`super::loom_models`] checks the state word over the event.)
//!
//! Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom -C debug-assertions" LOOM_MAX_PREEMPTIONS=3 \
//!     cargo test --lib --release loom_event -- --nocapture --test-threads=1
//! ```
//!
//! Every model waits for a *condition* (an atomic that a notifier sets before
//! `notify_all`) the way `State` does: listen, check, wait, repeat. A lost
//! wake-up leaves a waiter parked with nobody to wake it, which loom reports
//! as a deadlock; each model also checks that no waker is left stored.
//!
//! The models were checked to fail on broken code: with `listen` reading the
//! generation `Relaxed`, or with `poll` registering its waker without
//! re-reading the generation under the lock, `inline_waiter_and_second_waiter`
//! deadlocks; with a replaced waker not stored, `repolled_listener` does;
//! with `Drop` not removing the waker, `dropped_listener_and_second_waiter`
//! fails its assertion.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Wake, Waker};

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use super::loom_models::{model, poll_once};
use crate::event::Event;

/// The condition the waiters wait for: a counter that reaches `at_least`.
struct Shared {
    event: Event,
    count: AtomicUsize,
}

impl Shared {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            event: Event::new(),
            count: AtomicUsize::new(0),
        })
    }

    /// Makes the condition true for the next waiters, then notifies.
    fn bump_and_notify(&self) {
        self.count.fetch_add(1, Ordering::Release);
        self.event.notify_all();
    }

    fn reached(&self, at_least: usize) -> bool {
        self.count.load(Ordering::Acquire) >= at_least
    }

    /// Waits, as a task, until the count reaches `at_least`.
    async fn wait(&self, at_least: usize) {
        loop {
            let listener = self.event.listen();
            if self.reached(at_least) {
                return;
            }
            listener.await;
        }
    }

    /// Waits, blocking the thread, until the count reaches `at_least`.
    fn wait_blocking(&self, at_least: usize) {
        loop {
            let listener = self.event.listen();
            if self.reached(at_least) {
                return;
            }
            assert!(listener.wait_blocking(None), "untimed wait returned early");
        }
    }
}

/// Two async waiters (one takes the inline slot, the other the list; which is
/// which depends on the interleaving) racing with a notify: both return.
#[test]
fn inline_waiter_and_second_waiter() {
    model("inline_waiter_and_second_waiter", || {
        let shared = Shared::new();
        let second = {
            let shared = shared.clone();
            thread::spawn(move || loom::future::block_on(shared.wait(1)))
        };
        let notifier = {
            let shared = shared.clone();
            thread::spawn(move || shared.bump_and_notify())
        };
        loom::future::block_on(shared.wait(1));
        second.join().unwrap();
        notifier.join().unwrap();
        assert_eq!(shared.event.registered_wakers(), 0);
    });
}

/// A blocking and an async waiter together: the condition variable and the
/// inline waker are both notified.
#[test]
fn blocking_and_async_waiter() {
    model("blocking_and_async_waiter", || {
        let shared = Shared::new();
        let blocking = {
            let shared = shared.clone();
            thread::spawn(move || shared.wait_blocking(1))
        };
        let notifier = {
            let shared = shared.clone();
            thread::spawn(move || shared.bump_and_notify())
        };
        loom::future::block_on(shared.wait(1));
        blocking.join().unwrap();
        notifier.join().unwrap();
        assert_eq!(shared.event.registered_wakers(), 0);
    });
}

/// A waker of its own (distinct from every other waker in a model), that does
/// nothing.
struct Mine;

impl Wake for Mine {
    fn wake(self: std::sync::Arc<Self>) {}
}

/// A listener that registers (possibly in the inline slot) and is dropped
/// un-notified (a timed-out wait), racing with a second waiter and a notify:
/// once dropped, its waker is no longer stored (removed by the drop, or taken
/// by the notify), and the second waiter is woken whichever slot it got.
#[test]
fn dropped_listener_and_second_waiter() {
    model("dropped_listener_and_second_waiter", || {
        let shared = Shared::new();
        let timed_out = {
            let shared = shared.clone();
            thread::spawn(move || {
                let waker = Waker::from(std::sync::Arc::new(Mine));
                let mut listener = shared.event.listen();
                if !shared.reached(1) {
                    let _ = Pin::new(&mut listener).poll(&mut Context::from_waker(&waker));
                }
                drop(listener);
                assert!(
                    !shared.event.holds(&waker),
                    "a dropped listener's waker is still stored"
                );
            })
        };
        let notifier = {
            let shared = shared.clone();
            thread::spawn(move || shared.bump_and_notify())
        };
        loom::future::block_on(shared.wait(1));
        timed_out.join().unwrap();
        notifier.join().unwrap();
        assert_eq!(shared.event.registered_wakers(), 0);
    });
}

/// A listener polled with one waker, then awaited with another (a future
/// moved between tasks, or `select!` re-polling): the notify wakes the latest
/// waker, not the replaced one.
#[test]
fn repolled_listener() {
    model("repolled_listener", || {
        let shared = Shared::new();
        let notifier = {
            let shared = shared.clone();
            thread::spawn(move || shared.bump_and_notify())
        };
        let mut listener = shared.event.listen();
        if !shared.reached(1) {
            let _ = poll_once(&mut listener);
            loom::future::block_on(listener);
        }
        assert!(shared.reached(1));
        notifier.join().unwrap();
        assert_eq!(shared.event.registered_wakers(), 0);
    });
}

/// Two waiters waiting through two notifies: after the first, each registers
/// again (one in the list) while the notifier may still be handing the
/// emptied list back. Both are woken by the second notify.
#[test]
fn waiters_reregister_while_list_is_given_back() {
    model("waiters_reregister_while_list_is_given_back", || {
        let shared = Shared::new();
        let second = {
            let shared = shared.clone();
            thread::spawn(move || {
                loom::future::block_on(async {
                    shared.wait(1).await;
                    shared.wait(2).await;
                })
            })
        };
        let notifier = {
            let shared = shared.clone();
            thread::spawn(move || {
                shared.bump_and_notify();
                shared.bump_and_notify();
            })
        };
        loom::future::block_on(shared.wait(2));
        second.join().unwrap();
        notifier.join().unwrap();
        assert_eq!(shared.event.registered_wakers(), 0);
    });
}
