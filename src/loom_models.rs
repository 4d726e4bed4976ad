//! Loom models of the core state machine: [`State`] (the state word) over
//! [`Event`](crate::event::Event) (the generation-based waiter list), both
//! built only on `crate::sync`, which is loom's under `--cfg loom`.
//!
//! Run with (see `scripts/proofs`):
//!
//! ```text
//! RUSTFLAGS="--cfg loom -C debug-assertions" LOOM_MAX_PREEMPTIONS=2 \
//!     cargo test --lib --release loom_models -- --nocapture --test-threads=1
//! ```
//!
//! What a model shows, and how:
//!
//! * **No lost wake-up**: every waiter is a loom thread that parks in
//!   `loom::future::block_on` (async) or in the condition variable (blocking).
//!   If any interleaving leaves it parked with nobody left to wake it, loom
//!   reports a deadlock and the model fails. So "the model terminates with
//!   every waiter returned" is the assertion.
//! * **Happens-before**: workers write a loom atomic with `Relaxed` before
//!   `done()`; the waiter reads it with `Relaxed` after the wait returns and
//!   must see the write. Loom explores stale reads of relaxed atomics, so this
//!   fails if `done()`/`wait` lacked their `Release`/`Acquire` pairing (the bug
//!   that makes a Relaxed-only wait group unsound).
//! * **Count never wraps**: `done()` debug-asserts the count was positive
//!   (the script builds with `-C debug-assertions`), and each model asserts
//!   the final count.
//! * **Closed means no new work**: a `try_add` that starts after `close()` was
//!   observed fails, and one that succeeded is counted.
//! * **No waker left behind**: a listener dropped before it was notified (a
//!   timed-out or cancelled wait) removes its waker; the model checks the
//!   event holds no waker at the end.
//!
//! Each model prints how many interleavings loom explored.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicUsize as StdAtomicUsize;
use std::sync::atomic::Ordering::Relaxed as StdRelaxed;
use std::task::{Context, Poll};

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use crate::state::State;

/// Runs `f` under loom's model checker (which reads `LOOM_MAX_PREEMPTIONS`
/// and friends from the environment) and prints the number of interleavings
/// explored.
fn model<F>(name: &str, f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let runs = std::sync::Arc::new(StdAtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&runs);
    let builder = loom::model::Builder::new();
    let bound = builder.preemption_bound;
    builder.check(move || {
        counter.fetch_add(1, StdRelaxed);
        f();
    });
    println!(
        "loom model {name}: {} interleavings explored (preemption bound {bound:?})",
        runs.load(StdRelaxed)
    );
}

/// The async wait, as `WaitGroup::wait` runs it.
fn wait_async(state: &State) {
    loom::future::block_on(state.wait_idle());
}

/// A worker: does its "work" (a relaxed write), then completes.
fn work_then_done(state: &State, work: &AtomicUsize) {
    work.fetch_add(1, Ordering::Relaxed);
    state.done();
}

/// add/done racing with an async wait: the waiter returns, and sees the work.
#[test]
fn done_racing_with_async_wait() {
    model("done_racing_with_async_wait", || {
        let state = Arc::new(State::new());
        let work = Arc::new(AtomicUsize::new(0));
        state.add();
        state.add();
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (state, work) = (state.clone(), work.clone());
                thread::spawn(move || work_then_done(&state, &work))
            })
            .collect();
        wait_async(&state);
        assert_eq!(state.len(), 0);
        assert_eq!(
            work.load(Ordering::Relaxed),
            2,
            "wait returned before the work"
        );
        for w in workers {
            w.join().unwrap();
        }
    });
}

/// add/done racing with a blocking wait (condition variable path).
#[test]
fn done_racing_with_blocking_wait() {
    model("done_racing_with_blocking_wait", || {
        let state = Arc::new(State::new());
        let work = Arc::new(AtomicUsize::new(0));
        state.add();
        let worker = {
            let (state, work) = (state.clone(), work.clone());
            thread::spawn(move || {
                // A nested add/done on the worker, then its own completion.
                state.add();
                work_then_done(&state, &work);
                work_then_done(&state, &work);
            })
        };
        assert!(state.wait_idle_blocking(None));
        assert_eq!(state.len(), 0);
        assert_eq!(
            work.load(Ordering::Relaxed),
            2,
            "wait returned before the work"
        );
        worker.join().unwrap();
    });
}

/// The last `done` racing with a new `add` (and that work's own `done`), while
/// a waiter waits: the `done` that clears WAITING must not strand a waiter
/// that set WAITING again for the new work.
#[test]
fn last_done_racing_with_new_add() {
    model("last_done_racing_with_new_add", || {
        let state = Arc::new(State::new());
        let work = Arc::new(AtomicUsize::new(0));
        state.add();
        let first = {
            let (state, work) = (state.clone(), work.clone());
            thread::spawn(move || work_then_done(&state, &work))
        };
        let second = {
            let (state, work) = (state.clone(), work.clone());
            thread::spawn(move || {
                state.add();
                work_then_done(&state, &work);
            })
        };
        // The waiter may return between the two pieces of work (the count
        // was zero then); it must return, and then see at least the work whose
        // done made the count zero.
        wait_async(&state);
        assert!(work.load(Ordering::Relaxed) >= 1);
        first.join().unwrap();
        second.join().unwrap();
        // Now idle for good: a second wait returns at once and sees both.
        wait_async(&state);
        assert_eq!(state.len(), 0);
        assert_eq!(work.load(Ordering::Relaxed), 2);
    });
}

/// Two waiters (one async, one blocking) and a `done`: both are woken.
#[test]
fn two_waiters_and_done() {
    model("two_waiters_and_done", || {
        let state = Arc::new(State::new());
        let work = Arc::new(AtomicUsize::new(0));
        state.add();
        let blocking = {
            let (state, work) = (state.clone(), work.clone());
            thread::spawn(move || {
                assert!(state.wait_idle_blocking(None));
                assert_eq!(work.load(Ordering::Relaxed), 1);
            })
        };
        let worker = {
            let (state, work) = (state.clone(), work.clone());
            thread::spawn(move || work_then_done(&state, &work))
        };
        wait_async(&state);
        assert_eq!(work.load(Ordering::Relaxed), 1);
        blocking.join().unwrap();
        worker.join().unwrap();
    });
}

/// `close` racing with `try_add` (and `add`): a `try_add` that starts after
/// the close was observed fails; one that succeeded is counted; the CLOSED
/// bit and the count never clobber each other.
#[test]
fn close_racing_with_try_add() {
    model("close_racing_with_try_add", || {
        let state = Arc::new(State::new());
        let closed_seen = Arc::new(AtomicBool::new(false));
        let closer = {
            let (state, closed_seen) = (state.clone(), closed_seen.clone());
            thread::spawn(move || {
                assert!(state.close(), "first close reports it closed");
                closed_seen.store(true, Ordering::Release);
            })
        };
        let adder = {
            let (state, closed_seen) = (state.clone(), closed_seen.clone());
            thread::spawn(move || {
                let after_close = closed_seen.load(Ordering::Acquire);
                let added = state.try_add().is_ok();
                if after_close {
                    assert!(!added, "try_add succeeded after close() was observed");
                }
                added
            })
        };
        state.add(); // unconditional add races too
        closer.join().unwrap();
        let added = adder.join().unwrap();
        assert!(state.is_closed());
        assert!(!state.close(), "second close reports already closed");
        assert!(state.try_add().is_err());
        assert_eq!(state.len(), 1 + u64::from(added));
        state.done();
        if added {
            state.done();
        }
        assert_eq!(state.len(), 0);
        assert!(state.is_closed(), "done must not clear CLOSED");
    });
}

/// A wait that times out (its listener registered a waker and is then
/// dropped) racing with the last `done`, while another waiter waits: the other
/// waiter is still woken, and no waker is left in the event.
#[test]
fn dropped_listener_racing_with_last_done() {
    model("dropped_listener_racing_with_last_done", || {
        let state = Arc::new(State::new());
        state.add();
        let timed_out = {
            let state = state.clone();
            thread::spawn(move || {
                if let Some(mut listener) = state.idle_listener() {
                    let waker = futures::task::noop_waker();
                    let mut cx = Context::from_waker(&waker);
                    // Polled once (registers its waker), then the deadline
                    // passes and the wait future is dropped.
                    let _ = Pin::new(&mut listener).poll(&mut cx);
                    drop(listener);
                }
            })
        };
        let worker = {
            let state = state.clone();
            thread::spawn(move || state.done())
        };
        wait_async(&state);
        assert_eq!(state.len(), 0);
        timed_out.join().unwrap();
        worker.join().unwrap();
        assert_eq!(state.registered_wakers(), 0, "a waker outlived its wait");
    });
}

/// A listener polled, then notified, then polled to completion: the future
/// completes and no waker is left (the notify took it).
#[test]
fn notified_listener_completes_and_leaves_nothing() {
    model("notified_listener_completes_and_leaves_nothing", || {
        let state = Arc::new(State::new());
        state.add();
        let worker = {
            let state = state.clone();
            thread::spawn(move || state.done())
        };
        if let Some(mut listener) = state.idle_listener() {
            let waker = futures::task::noop_waker();
            let mut cx = Context::from_waker(&waker);
            let first = Pin::new(&mut listener).poll(&mut cx);
            worker.join().unwrap();
            if first.is_pending() {
                // done() has run and the count is zero: the listener was
                // notified (or the count was zero when WAITING was set, in
                // which case idle_listener returned None and we are not here).
                assert_eq!(Pin::new(&mut listener).poll(&mut cx), Poll::Ready(()));
            }
        } else {
            worker.join().unwrap();
        }
        assert_eq!(state.len(), 0);
        assert_eq!(state.registered_wakers(), 0);
    });
}

/// A parent waiting on its own state and then on a linked child's, as
/// `WaitGroup::wait_tree` does: the parent's task hands work to the child
/// (`child.add()`) and completes; the child's last `done` races with the
/// parent's wait. The wait returns only when both are idle and sees the
/// child's work.
#[test]
fn link_wait_racing_with_childs_last_done() {
    model("link_wait_racing_with_childs_last_done", || {
        let parent = Arc::new(State::new());
        let child = Arc::new(State::new());
        let work = Arc::new(AtomicUsize::new(0));
        parent.add();
        let parent_task = {
            let (parent, child, work) = (parent.clone(), child.clone(), work.clone());
            thread::spawn(move || {
                child.add(); // hands work to the child before completing
                parent.done();
                work_then_done(&child, &work);
            })
        };
        wait_tree(&parent, &[&child]);
        assert_eq!(
            work.load(Ordering::Relaxed),
            1,
            "returned before the child's work"
        );
        assert_eq!((parent.len(), child.len()), (0, 0));
        parent_task.join().unwrap();
    });
}

/// `link()` racing with the wait: the link is published (under the links
/// lock in the real code; a release store here) before the parent's last
/// `done`, so a wait that sees the parent idle sees the link and waits for the
/// child.
#[test]
fn link_racing_with_wait() {
    model("link_racing_with_wait", || {
        let parent = Arc::new(State::new());
        let child = Arc::new(State::new());
        let linked = Arc::new(AtomicBool::new(false));
        let work = Arc::new(AtomicUsize::new(0));
        parent.add();
        child.add();
        let linker = {
            let (parent, linked) = (parent.clone(), linked.clone());
            thread::spawn(move || {
                linked.store(true, Ordering::Release); // parent.link(&child)
                parent.done();
            })
        };
        let child_task = {
            let (child, work) = (child.clone(), work.clone());
            thread::spawn(move || work_then_done(&child, &work))
        };
        loop {
            loom::future::block_on(async {
                parent.wait_idle().await;
                if linked.load(Ordering::Acquire) {
                    child.wait_idle().await;
                }
            });
            let links_idle = !linked.load(Ordering::Acquire) || child.len() == 0;
            if parent.len() == 0 && links_idle {
                break;
            }
        }
        assert!(
            linked.load(Ordering::Relaxed),
            "parent idle before the link was seen"
        );
        assert_eq!(
            work.load(Ordering::Relaxed),
            1,
            "returned before the child's work"
        );
        linker.join().unwrap();
        child_task.join().unwrap();
    });
}

/// `wait_tree` over loom: wait for `parent`, then each child, until one pass
/// finds everything idle.
fn wait_tree(parent: &State, children: &[&State]) {
    loop {
        loom::future::block_on(async {
            parent.wait_idle().await;
            for child in children {
                child.wait_idle().await;
            }
        });
        if parent.len() == 0 && children.iter().all(|c| c.len() == 0) {
            return;
        }
    }
}
