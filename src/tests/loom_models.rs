//! Loom models of the core state machine: [`State`] (the state word) over
//! [`Event`](crate::event::Event) (the generation-based waiter list), both
//! built only on `crate::sync`, which is loom's under `--cfg loom`, and the
//! reference counting in [`crate::shared`] that frees a group: the models
//! hold handles ([`Shared`]) and pending tasks ([`TaskRef`]) exactly as
//! `WaitGroup` and `TaskGuard` do, around a small payload ([`Probe`]).
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
//! * **Freed exactly once, never used after**: under loom the free only marks
//!   the state (the memory is kept), every access through a handle or task
//!   asserts the mark is not set, and a second free fails an assertion; each
//!   model ends by dropping every reference and asserting one free.
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

use crate::shared::{Counted, Shared, TaskRef};
use crate::state::State;

/// Runs `f` under loom's model checker (which reads `LOOM_MAX_PREEMPTIONS`
/// and friends from the environment) and prints the number of interleavings
/// explored. Shared with [`crate::loom_event`].
pub(crate) fn model<F>(name: &str, f: F)
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

/// The payload of a model's group: the state, and a count of frees kept
/// outside it (a plain `std` atomic: it is read only after every thread
/// joined).
struct Probe {
    state: State,
    frees: std::sync::Arc<StdAtomicUsize>,
}

impl Counted for Probe {
    fn state(&self) -> &State {
        &self.state
    }

    fn on_free(&self) {
        self.frees.fetch_add(1, StdRelaxed);
    }
}

/// A handle, as a `WaitGroup` holds it.
type Group = Shared<Probe>;
/// A pending task, as a `TaskGuard` holds it.
type Task = TaskRef<Probe>;

/// A new group (one handle) and the count of its frees.
fn group() -> (Group, std::sync::Arc<StdAtomicUsize>) {
    let frees = std::sync::Arc::new(StdAtomicUsize::new(0));
    let probe = Probe {
        state: State::new(),
        frees: frees.clone(),
    };
    (Shared::new(|| probe), frees)
}

/// Asserts that the group was freed exactly once (call after every handle
/// and task is gone).
fn assert_freed_once(frees: &StdAtomicUsize) {
    assert_eq!(
        frees.load(StdRelaxed),
        1,
        "the group was not freed exactly once"
    );
}

fn add(group: &Group) -> Task {
    group.add_task().0
}

/// The async wait, as `WaitGroup::wait` runs it.
fn wait_async(group: &Group) {
    loom::future::block_on(group.state().wait_idle());
}

/// Polls `future` once with a waker that does nothing. A pending first poll
/// registers that waker, as an awaited wait's first poll does. Shared with
/// [`crate::loom_event`].
pub(crate) fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    let waker = futures::task::noop_waker();
    Pin::new(future).poll(&mut Context::from_waker(&waker))
}

/// A worker: does its "work" (a relaxed write), then completes its task.
fn work_then_done(task: Task, work: &AtomicUsize) {
    work.fetch_add(1, Ordering::Relaxed);
    drop(task);
}

/// add/done racing with an async wait: the waiter returns, and sees the work.
#[test]
fn done_racing_with_async_wait() {
    model("done_racing_with_async_wait", || {
        let (group, frees) = group();
        let work = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (task, work) = (add(&group), work.clone());
                thread::spawn(move || work_then_done(task, &work))
            })
            .collect();
        wait_async(&group);
        assert_eq!(group.state().len(), 0);
        assert_eq!(
            work.load(Ordering::Relaxed),
            2,
            "wait returned before the work"
        );
        for w in workers {
            w.join().unwrap();
        }
        drop(group);
        assert_freed_once(&frees);
    });
}

/// add/done racing with a blocking wait (condition variable path).
#[test]
fn done_racing_with_blocking_wait() {
    model("done_racing_with_blocking_wait", || {
        let (group, frees) = group();
        let work = Arc::new(AtomicUsize::new(0));
        let worker = {
            let (task, handle, work) = (add(&group), group.clone(), work.clone());
            thread::spawn(move || {
                // A nested task started by the worker, then its own completion.
                let nested = add(&handle);
                drop(handle);
                work_then_done(nested, &work);
                work_then_done(task, &work);
            })
        };
        assert!(group.state().wait_idle_blocking(None));
        assert_eq!(group.state().len(), 0);
        assert_eq!(
            work.load(Ordering::Relaxed),
            2,
            "wait returned before the work"
        );
        worker.join().unwrap();
        drop(group);
        assert_freed_once(&frees);
    });
}

/// The last `done` racing with a new `add` (and that work's own `done`), while
/// a waiter waits: the `done` that clears WAITING must not strand a waiter
/// that set WAITING again for the new work, and the two `done`s that take the
/// count to zero must not both believe they own the notification.
#[test]
fn last_done_racing_with_new_add() {
    model("last_done_racing_with_new_add", || {
        let (group, frees) = group();
        let work = Arc::new(AtomicUsize::new(0));
        let first = {
            let (task, work) = (add(&group), work.clone());
            thread::spawn(move || work_then_done(task, &work))
        };
        let second = {
            let (group, work) = (group.clone(), work.clone());
            thread::spawn(move || {
                let task = add(&group);
                drop(group);
                work_then_done(task, &work);
            })
        };
        // The waiter may return between the two pieces of work (the count
        // was zero then); it must return, and then see at least the work whose
        // done made the count zero.
        wait_async(&group);
        assert!(work.load(Ordering::Relaxed) >= 1);
        first.join().unwrap();
        second.join().unwrap();
        // Now idle for good: a second wait returns at once and sees both.
        wait_async(&group);
        assert_eq!(group.state().len(), 0);
        assert_eq!(work.load(Ordering::Relaxed), 2);
        drop(group);
        assert_freed_once(&frees);
    });
}

/// Two waiters (one async, one blocking) and a `done`: both are woken.
#[test]
fn two_waiters_and_done() {
    model("two_waiters_and_done", || {
        let (group, frees) = group();
        let work = Arc::new(AtomicUsize::new(0));
        let task = add(&group);
        let blocking = {
            let (group, work) = (group.clone(), work.clone());
            thread::spawn(move || {
                assert!(group.state().wait_idle_blocking(None));
                assert_eq!(work.load(Ordering::Relaxed), 1);
            })
        };
        let worker = {
            let work = work.clone();
            thread::spawn(move || work_then_done(task, &work))
        };
        wait_async(&group);
        assert_eq!(work.load(Ordering::Relaxed), 1);
        blocking.join().unwrap();
        worker.join().unwrap();
        drop(group);
        assert_freed_once(&frees);
    });
}

/// `close` racing with `try_add` (and `add`): a `try_add` that starts after
/// the close was observed fails; one that succeeded is counted; the CLOSED
/// bit and the counts never clobber each other.
#[test]
fn close_racing_with_try_add() {
    model("close_racing_with_try_add", || {
        let (group, frees) = group();
        let closed_seen = Arc::new(AtomicBool::new(false));
        let closer = {
            let (group, closed_seen) = (group.clone(), closed_seen.clone());
            thread::spawn(move || {
                assert!(group.state().close(), "first close reports it closed");
                closed_seen.store(true, Ordering::Release);
            })
        };
        let adder = {
            let (group, closed_seen) = (group.clone(), closed_seen.clone());
            thread::spawn(move || {
                let after_close = closed_seen.load(Ordering::Acquire);
                let added = group.try_add_task().ok();
                if after_close {
                    assert!(
                        added.is_none(),
                        "try_add succeeded after close() was observed"
                    );
                }
                added
            })
        };
        let (plain, _) = group.add_task(); // an unconditional add races too
        closer.join().unwrap();
        let added = adder.join().unwrap();
        let state = group.state();
        assert!(state.is_closed());
        assert!(!state.close(), "second close reports already closed");
        assert!(group.try_add_task().is_err());
        assert_eq!(state.len(), 1 + u64::from(added.is_some()));
        drop(plain);
        drop(added);
        assert_eq!(state.len(), 0);
        assert!(state.is_closed(), "done must not clear CLOSED");
        drop(group);
        assert_freed_once(&frees);
    });
}

/// A wait that times out (its listener registered a waker and is then
/// dropped) racing with the last `done`, while another waiter waits: the other
/// waiter is still woken, and no waker is left in the event.
#[test]
fn dropped_listener_racing_with_last_done() {
    model("dropped_listener_racing_with_last_done", || {
        let (group, frees) = group();
        let task = add(&group);
        let timed_out = {
            let group = group.clone();
            thread::spawn(move || {
                if let Some(mut listener) = group.state().idle_listener() {
                    // Polled once (registers its waker), then the deadline
                    // passes and the wait future is dropped.
                    let _ = poll_once(&mut listener);
                    drop(listener);
                }
            })
        };
        let worker = thread::spawn(move || drop(task));
        wait_async(&group);
        assert_eq!(group.state().len(), 0);
        timed_out.join().unwrap();
        worker.join().unwrap();
        assert_eq!(
            group.state().registered_wakers(),
            0,
            "a waker outlived its wait"
        );
        drop(group);
        assert_freed_once(&frees);
    });
}

/// A listener polled, then notified, then polled to completion: the future
/// completes and no waker is left (the notify took it).
#[test]
fn notified_listener_completes_and_leaves_nothing() {
    model("notified_listener_completes_and_leaves_nothing", || {
        let (group, frees) = group();
        let task = add(&group);
        let worker = thread::spawn(move || drop(task));
        if let Some(mut listener) = group.state().idle_listener() {
            let first = poll_once(&mut listener);
            worker.join().unwrap();
            if first.is_pending() {
                // done() has run and the count is zero: the listener was
                // notified (or the count was zero when WAITING was set, in
                // which case idle_listener returned None and we are not here).
                assert_eq!(poll_once(&mut listener), Poll::Ready(()));
            }
        } else {
            worker.join().unwrap();
        }
        assert_eq!(group.state().len(), 0);
        assert_eq!(group.state().registered_wakers(), 0);
        drop(group);
        assert_freed_once(&frees);
    });
}

/// The waiter gives up (its wait times out, and it drops its handle) and the
/// last handle goes, while the last task's `done` sees WAITING and notifies:
/// the notifier must hold the group alive through the notification, and the
/// group is freed exactly once, by whoever lets go last.
#[test]
fn last_handle_dropped_while_last_done_notifies() {
    model("last_handle_dropped_while_last_done_notifies", || {
        let (group, frees) = group();
        let task = add(&group);
        let waiter = {
            let group = group.clone();
            thread::spawn(move || {
                if let Some(mut listener) = group.state().idle_listener() {
                    let _ = poll_once(&mut listener);
                }
                drop(group);
            })
        };
        let worker = thread::spawn(move || drop(task));
        drop(group);
        waiter.join().unwrap();
        worker.join().unwrap();
        assert_freed_once(&frees);
    });
}

/// Handles and the last task let go from three threads at once, with no
/// waiter: exactly one of them frees the group.
#[test]
fn handles_and_last_task_released_together() {
    model("handles_and_last_task_released_together", || {
        let (group, frees) = group();
        let task = add(&group);
        let other = group.clone();
        let a = thread::spawn(move || drop(other));
        let b = thread::spawn(move || drop(task));
        drop(group);
        a.join().unwrap();
        b.join().unwrap();
        assert_freed_once(&frees);
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
        let (parent, parent_frees) = group();
        let (child, child_frees) = group();
        let work = Arc::new(AtomicUsize::new(0));
        let parent_task = {
            let (task, child, work) = (add(&parent), child.clone(), work.clone());
            thread::spawn(move || {
                let handed = add(&child); // hands work to the child before completing
                drop(child);
                drop(task);
                work_then_done(handed, &work);
            })
        };
        wait_tree(&parent, &[&child]);
        assert_eq!(
            work.load(Ordering::Relaxed),
            1,
            "returned before the child's work"
        );
        assert_eq!((parent.state().len(), child.state().len()), (0, 0));
        parent_task.join().unwrap();
        drop((parent, child));
        assert_freed_once(&parent_frees);
        assert_freed_once(&child_frees);
    });
}

/// `link()` racing with the wait: the link is published (under the links
/// lock in the real code; a release store here) before the parent's last
/// `done`, so a wait that sees the parent idle sees the link and waits for the
/// child.
#[test]
fn link_racing_with_wait() {
    model("link_racing_with_wait", || {
        let (parent, parent_frees) = group();
        let (child, child_frees) = group();
        let linked = Arc::new(AtomicBool::new(false));
        let work = Arc::new(AtomicUsize::new(0));
        let linker = {
            let (task, linked) = (add(&parent), linked.clone());
            thread::spawn(move || {
                linked.store(true, Ordering::Release); // parent.link(&child)
                drop(task);
            })
        };
        let child_task = {
            let (task, work) = (add(&child), work.clone());
            thread::spawn(move || work_then_done(task, &work))
        };
        let (p, c) = (parent.state(), child.state());
        loop {
            loom::future::block_on(async {
                p.wait_idle().await;
                if linked.load(Ordering::Acquire) {
                    c.wait_idle().await;
                }
            });
            let links_idle = !linked.load(Ordering::Acquire) || c.len() == 0;
            if p.len() == 0 && links_idle {
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
        drop((parent, child));
        assert_freed_once(&parent_frees);
        assert_freed_once(&child_frees);
    });
}

/// `wait_tree` over loom: wait for `parent`, then each child, until one pass
/// finds everything idle.
fn wait_tree(parent: &Group, children: &[&Group]) {
    loop {
        loom::future::block_on(async {
            parent.state().wait_idle().await;
            for child in children {
                child.state().wait_idle().await;
            }
        });
        let idle = |g: &Group| g.state().len() == 0;
        if idle(parent) && children.iter().all(|c| idle(c)) {
            return;
        }
    }
}
