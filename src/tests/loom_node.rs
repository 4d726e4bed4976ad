//! Loom models of a `child()` group leaving its parent (`crate::node`): the
//! last handle's drop, the last task's `done` and new work added through
//! another handle race, and in every interleaving the child leaves its
//! parent's links exactly once, only when it is idle, and is freed exactly
//! once; a parent's wait that races with it returns.
//!
//! And of `WaitGroup::wait`'s return on a group without links: a failure
//! recorded before the last `done` is in what the wait returns, in every
//! interleaving (the wait reads the failures flag after the count).
//!
//! The node's user count, links and links lock, and the fence on the notify
//! path are `crate::sync` types, so loom explores them. What these models do
//! not cover: loom keeps a freed node's memory (see `crate::shared`), so a
//! freed child never releases its reference to its parent; the models check
//! the child's free, not the parent's.

use loom::thread;

use super::loom_models::model;
use crate::error::TaskError;
use crate::label::GroupId;
use crate::node::{Node, FREED};
use crate::{WaitError, WaitGroup};

/// A parent and a lean child (guards without registry entries, so the model
/// explores the node and the state word, not the registry's locks).
fn family() -> (WaitGroup, WaitGroup) {
    FREED.lock().unwrap().clear();
    let parent = WaitGroup::builder().record_guards(false).build();
    let child = parent.child();
    (parent, child)
}

fn freed(id: GroupId) -> usize {
    FREED.lock().unwrap().iter().filter(|&&g| g == id).count()
}

fn assert_left_and_freed(parent: &WaitGroup, child: GroupId) {
    assert!(
        parent.node().links().is_empty(),
        "the child did not leave its parent"
    );
    assert_eq!(freed(child), 1, "the child was not freed exactly once");
}

/// The last handle dropped on one thread while the last task completes on
/// another: whichever comes last makes the child leave.
#[test]
fn last_handle_racing_with_last_done() {
    model("last_handle_racing_with_last_done", || {
        let (parent, child) = family();
        let id = child.id();
        let guard = child.add();
        let a = thread::spawn(move || drop(child));
        let b = thread::spawn(move || drop(guard));
        a.join().unwrap();
        b.join().unwrap();
        assert_left_and_freed(&parent, id);
    });
}

/// New work added through one handle while the other handle and the old
/// work go away: the child never leaves while work is pending (the parent
/// still counts it), and leaves once everything is gone.
#[test]
fn leaving_racing_with_new_work() {
    model("leaving_racing_with_new_work", || {
        let (parent, child) = family();
        let id = child.id();
        let other = child.clone();
        let old = child.add();
        let a = thread::spawn(move || {
            let new = other.add();
            drop(other);
            // Still pending: the child must still be linked.
            assert_eq!(freed(id), 0, "freed with work pending");
            drop(new);
        });
        let b = thread::spawn(move || {
            drop(child);
            drop(old);
        });
        a.join().unwrap();
        b.join().unwrap();
        assert_left_and_freed(&parent, id);
    });
}

/// A parent's blocking wait racing with its detached child's last task and
/// the child leaving: the wait returns (no lost wake-up), and the child
/// leaves.
#[test]
fn parent_wait_racing_with_child_leaving() {
    model("parent_wait_racing_with_child_leaving", || {
        let (parent, child) = family();
        let id = child.id();
        let guard = child.add();
        drop(child);
        let waiter = {
            let parent = parent.clone();
            thread::spawn(move || parent.wait_blocking().unwrap())
        };
        let worker = thread::spawn(move || drop(guard));
        waiter.join().unwrap();
        worker.join().unwrap();
        assert_left_and_freed(&parent, id);
    });
}

/// A task's failure and its last `done` on one thread, racing with an async
/// `wait()` on another: the wait returns that failure, never `Ok` (its fast
/// path for a group without links or failures reads the failures flag after
/// the count it waited on, with `Acquire`, as the full walk does).
#[test]
fn async_wait_racing_with_a_failing_last_done() {
    model("async_wait_racing_with_a_failing_last_done", || {
        let group = WaitGroup::builder().record_guards(false).build();
        let guard = group.add();
        let node = group.node().clone();
        let worker = thread::spawn(move || {
            let error = TaskError::failed(guard.id(), None, node.label.clone(), "boom".into());
            Node::record_failure(&node, error, Some(false));
            drop(guard);
        });
        let result = loom::future::block_on(group.wait());
        worker.join().unwrap();
        match result {
            Err(WaitError::Failed { errors }) => assert_eq!(errors.len(), 1),
            other => panic!("the wait missed the failure: {other:?}"),
        }
    });
}

/// Two critical failures recorded at once on two threads: one is the cause,
/// it is listed first and primary, and the other is secondary, whichever
/// thread wins (the mark, the push and the cause are decided under the
/// failures lock; `tests/stress.rs` races the same through tasks).
#[test]
fn two_critical_failures_racing_make_one_cause_listed_first() {
    model(
        "two_critical_failures_racing_make_one_cause_listed_first",
        || {
            let group = WaitGroup::builder().record_guards(false).build();
            let failing = ["a", "b"].map(|name| {
                let guard = group.add();
                let node = group.node().clone();
                thread::spawn(move || {
                    let name = Some(crate::label::Label::Static(name));
                    let error =
                        TaskError::failed(guard.id(), name, node.label.clone(), "boom".into());
                    Node::record_failure(&node, error, Some(true));
                    drop(guard);
                })
            });
            for thread in failing {
                thread.join().unwrap();
            }
            let errors = group.errors();
            let cause = group.cancel_cause().expect("a critical failure cancels");
            assert_eq!(errors.first().unwrap().name(), cause.name());
            assert!(!cause.is_secondary());
            assert_eq!(errors.primary().count(), 1);
            assert_eq!(errors.secondary().count(), 1);
            assert!(group.is_cancelled());
        },
    );
}
