//! Loom models of the drain and cancel signals a task reads
//! (`TaskContext::draining`, `is_draining`, `is_cancelled`): a shutdown
//! drains a group and then cancels it on one thread while a task waits for
//! the drain signal, and another looks at both flags. The shutdown's step is
//! modelled both ways it is taken: `drain_own` then `cancel_own` (a group
//! with work), and `drain_and_cancel_own`, both in one hold of the tokens
//! lock (a group found idle).
//!
//! The context and drain tokens are made when first asked for, and a cancel
//! or drain that comes first only sets a bit (`Tokens::early`); two models
//! race the two for each token. The last races a scoped child's making with
//! the cancel of its parent's context, for the reason the child reads (its
//! making and `Node::cancel_scoped` each write, then read what the other
//! wrote: with a look at an atomic flag for the read, in place of the
//! tokens lock, this model fails).
//!
//! What loom explores here: the wake-ups, which the tokens deliver through
//! tokio's `Notify` (loom-instrumented in this build), our select over
//! the two tokens, and the node's tokens lock and early bits (`crate::sync`
//! types). What it does not: the tokens' own tree, kept under a std mutex
//! inside tokio-util, which loom treats as one step, and the `OnceLock`
//! cells holding the tokens (std atomics, invisible to loom). So that loom
//! sees the race on a cell, every ask for a token, and every cancel's look
//! at which tokens are made, takes the tokens lock in this build; the
//! production build first reads a cell without the lock, which is sound
//! because a cell is filled only under that lock and a filled cell's token
//! is handled (cancelled, or handed out) exactly as under it. In both
//! builds a cancel then cancels the tokens it finds made after releasing
//! the lock: one made in between saw the cancel's bit and was made
//! cancelled.

use loom::thread;

use super::loom_models::model;
use crate::context::TaskContext;
use crate::node::NodeRef;
use crate::reason::CancelReason;
use crate::WaitGroup;

fn group() -> (WaitGroup, TaskContext) {
    let wg = WaitGroup::builder().record_guards(false).build();
    let ctx = TaskContext::new(wg.node().clone());
    (wg, ctx)
}

/// Drain then cancel on one thread; a waiter on the drain signal always
/// wakes, and an observer that sees the context cancelled always sees it
/// draining (cancel never comes without drain).
#[test]
fn drain_precedes_cancel() {
    drain_then_cancel("drain_precedes_cancel", |node| {
        node.drain_own();
        node.cancel_own(CancelReason::Shutdown);
    });
}

/// As above, with the drain and the cancel given in one hold of the tokens
/// lock (`Node::drain_and_cancel_own`, a shutdown's turn for a group it
/// found idle).
#[test]
fn one_step_drain_and_cancel_wakes_a_drain_waiter() {
    drain_then_cancel("one_step_drain_and_cancel_wakes_a_drain_waiter", |node| {
        node.drain_and_cancel_own(CancelReason::Shutdown);
    });
}

fn drain_then_cancel(name: &'static str, stop: fn(&NodeRef)) {
    model(name, move || {
        let (wg, ctx) = group();
        let observer = ctx.clone();
        let node = wg.node().clone();
        let shutdown = thread::spawn(move || stop(&node));
        let look = thread::spawn(move || {
            let cancelled = observer.is_cancelled();
            let draining = observer.is_draining();
            assert!(!cancelled || draining, "cancelled but not draining");
        });
        loom::future::block_on(ctx.draining());
        assert!(ctx.is_draining());
        shutdown.join().unwrap();
        look.join().unwrap();
        assert!(ctx.is_cancelled());
        assert!(matches!(ctx.cancel_reason(), Some(CancelReason::Shutdown)));
    });
}

/// A cancel with no drain before it (`cancel()`, a failure, a shutdown with
/// no drain phase) wakes a task waiting only for the drain signal.
#[test]
fn cancel_alone_wakes_a_drain_waiter() {
    model("cancel_alone_wakes_a_drain_waiter", || {
        let (wg, ctx) = group();
        let canceller = wg.clone();
        let cancel = thread::spawn(move || canceller.cancel());
        loom::future::block_on(ctx.draining());
        assert!(ctx.is_draining());
        cancel.join().unwrap();
        assert!(matches!(
            ctx.cancel_reason(),
            Some(CancelReason::Requested(None))
        ));
    });
}

/// The first ask for each token racing with the cancel or drain of a group
/// that has neither made (a shutdown reaching an idle group while a task
/// starts): whichever comes first, the token handed out ends cancelled, and
/// an observer that reads "cancelled" (or "draining") then asks for the
/// token always gets a cancelled one.
#[test]
fn first_ask_for_a_token_racing_with_its_cancel() {
    first_asks_racing_with("first_ask_for_a_token_racing_with_its_cancel", |node| {
        node.drain_own();
        node.cancel_own(CancelReason::Shutdown);
    });
}

/// As above, with the drain and the cancel given in one hold of the tokens
/// lock (`Node::drain_and_cancel_own`, a shutdown's turn for a group it
/// found idle).
#[test]
fn first_ask_for_a_token_racing_with_one_step_drain_and_cancel() {
    first_asks_racing_with(
        "first_ask_for_a_token_racing_with_one_step_drain_and_cancel",
        |node| node.drain_and_cancel_own(CancelReason::Shutdown),
    );
}

fn first_asks_racing_with(name: &'static str, stop: fn(&NodeRef)) {
    model(name, move || {
        let (wg, ctx) = group();
        let node = wg.node().clone();
        let observer = (ctx.clone(), wg.node().clone());
        let shutdown = thread::spawn(move || stop(&node));
        let look = thread::spawn(move || {
            let (observer, node) = observer;
            if observer.is_draining() {
                let first = crate::node::Generation::default();
                let drain = node.drain_in(&first);
                assert!(
                    drain.is_cancelled() || observer.token().is_cancelled(),
                    "draining, but neither token says so"
                );
            }
            if observer.is_cancelled() {
                assert!(observer.token().is_cancelled(), "a live token handed out");
            }
        });
        let own = ctx.token().clone();
        let first = crate::node::Generation::default();
        let drain = wg.node().drain_in(&first).clone();
        shutdown.join().unwrap();
        look.join().unwrap();
        assert!(own.is_cancelled() && drain.is_cancelled());
        assert!(ctx.is_cancelled() && ctx.is_draining());
        assert!(matches!(ctx.cancel_reason(), Some(CancelReason::Shutdown)));
    });
}

/// A drain and then `reopen()` on one thread racing a cancel on another,
/// with a task of the first generation waiting for its context: whichever
/// comes first, the task's context ends cancelled, with the cancel's
/// reason. A cancel that comes after the reopen reaches the generation the
/// drain ended (see `node::Later`), not only the fresh one.
#[test]
fn cancel_racing_a_reopen_after_a_drain_reaches_the_old_context() {
    cancel_racing_a_reopen(
        "cancel_racing_a_reopen_after_a_drain_reaches_the_old_context",
        |node| node.cancel_own(CancelReason::Shutdown),
        false,
    );
}

/// As above, with `cancel()` (the whole tree's scopes: `cancel_tree`).
#[test]
fn cancel_tree_racing_a_reopen_after_a_drain_reaches_the_old_context() {
    cancel_racing_a_reopen(
        "cancel_tree_racing_a_reopen_after_a_drain_reaches_the_old_context",
        |node| crate::node::cancel_tree(node, CancelReason::Shutdown),
        false,
    );
}

/// As above, in a group drained and reopened once before, with the task in
/// the second generation: the later generations exist, so the reopen
/// replaces the current one and lists the drained one (under the lock of the
/// later generations), and the cancel takes that list under the same lock
/// and cancels what it took after releasing it.
#[test]
fn cancel_racing_a_second_reopen_after_a_drain_reaches_the_old_context() {
    cancel_racing_a_reopen(
        "cancel_racing_a_second_reopen_after_a_drain_reaches_the_old_context",
        |node| node.cancel_own(CancelReason::Shutdown),
        true,
    );
}

/// As above, with `cancel()`.
#[test]
fn cancel_tree_racing_a_second_reopen_after_a_drain_reaches_the_old_context() {
    cancel_racing_a_reopen(
        "cancel_tree_racing_a_second_reopen_after_a_drain_reaches_the_old_context",
        |node| crate::node::cancel_tree(node, CancelReason::Shutdown),
        true,
    );
}

/// `reopened`: the group was drained and reopened once before the task
/// started.
fn cancel_racing_a_reopen(name: &'static str, cancel: fn(&NodeRef), reopened: bool) {
    model(name, move || {
        let (wg, ctx) = if reopened {
            let wg = WaitGroup::builder().record_guards(false).build();
            wg.node().drain_own();
            wg.node().reopen();
            let ctx = TaskContext::new(wg.node().clone());
            (wg, ctx)
        } else {
            group()
        };
        let node = wg.node().clone();
        let reopen = thread::spawn(move || {
            node.drain_own();
            node.reopen();
        });
        let node = wg.node().clone();
        let cancel = thread::spawn(move || cancel(&node));
        loom::future::block_on(ctx.cancelled());
        reopen.join().unwrap();
        cancel.join().unwrap();
        assert!(ctx.is_cancelled() && ctx.is_draining());
        assert!(matches!(ctx.cancel_reason(), Some(CancelReason::Shutdown)));
    });
}

/// A scoped child made while a shutdown cancels its parent's own context:
/// whichever comes first, the child ends cancelled, and a look that finds it
/// cancelled finds the shutdown's reason (not the caller's token's): the
/// cancel either finds the child among the links and gives it the reason
/// before cancelling (`Node::cancel_scoped`), or the child, made from a
/// context cancelled since, takes the reason set before that cancel.
#[test]
fn a_scoped_child_made_during_a_cancel_has_its_reason() {
    model("a_scoped_child_made_during_a_cancel_has_its_reason", || {
        let (wg, _ctx) = group();
        let node = wg.node().clone();
        let shutdown = thread::spawn(move || node.cancel_own(CancelReason::Shutdown));
        let child = wg.scoped_child();
        if child.is_cancelled() {
            assert!(matches!(
                child.cancel_reason(),
                Some(CancelReason::Shutdown)
            ));
        }
        shutdown.join().unwrap();
        assert!(child.is_cancelled());
        assert!(matches!(
            child.cancel_reason(),
            Some(CancelReason::Shutdown)
        ));
    });
}

/// As above, with the parent cancelled as a whole tree (`cancel()`, a
/// deadline, a failure with `cancel_on_error`): its walk sets each group's
/// reason before it reads the group's links, so the child is found by the
/// walk or reads the reason as it is made.
#[test]
fn a_scoped_child_made_during_a_cancel_of_the_tree_has_its_reason() {
    made_during_a_cancel_of_the_tree(
        "a_scoped_child_made_during_a_cancel_of_the_tree_has_its_reason",
        |wg| vec![wg.scoped_child()],
    );
}

/// The same for a plain child, whose scope hangs off its parent's scope: the
/// walk marks the parent's scope as being cancelled (with the reason) before
/// it reads the parent's links, and the child, pushed, reads the mark. (A
/// reason alone does not say the scope goes: a shutdown's turn cancels the
/// parent's own context only.) Before, the child read whether its parent
/// had a reason before its push, and could find its scope cancelled with no
/// reason: `Token` (a scratch probe, one thread cancelling a root while
/// another made a child of its child: 3 to 6 of 100,000 runs).
#[test]
fn a_plain_child_made_during_a_cancel_of_the_tree_has_its_reason() {
    made_during_a_cancel_of_the_tree(
        "a_plain_child_made_during_a_cancel_of_the_tree_has_its_reason",
        |wg| vec![wg.child()],
    );
}

/// The same for a child made below such a child, which the walk does not
/// find either: the child is marked as going in turn. (Before, the
/// grandchild read `Token` in most runs of a reviewer's probe.)
#[test]
fn a_grandchild_made_during_a_cancel_of_the_tree_has_its_reason() {
    made_during_a_cancel_of_the_tree(
        "a_grandchild_made_during_a_cancel_of_the_tree_has_its_reason",
        |wg| {
            let child = wg.child();
            let grandchild = child.child();
            vec![child, grandchild]
        },
    );
    made_during_a_cancel_of_the_tree(
        "a_child_of_a_scoped_child_made_during_a_cancel_of_the_tree_has_its_reason",
        |wg| {
            let child = wg.scoped_child();
            let grandchild = child.child();
            vec![child, grandchild]
        },
    );
}

/// The groups `make` makes on this thread while another cancels its
/// parent's tree read the cancel's reason whenever they read cancelled.
fn made_during_a_cancel_of_the_tree(name: &'static str, make: fn(&WaitGroup) -> Vec<WaitGroup>) {
    model(name, move || {
        let (wg, _ctx) = group();
        let parent = wg.clone();
        let cancel = thread::spawn(move || parent.cancel());
        let made = make(&wg);
        for group in &made {
            if group.is_cancelled() {
                assert!(matches!(
                    group.cancel_reason(),
                    Some(CancelReason::Requested(_))
                ));
            }
        }
        cancel.join().unwrap();
        for group in &made {
            assert!(group.is_cancelled());
            let reason = group.cancel_reason();
            assert!(
                matches!(reason, Some(CancelReason::Requested(_))),
                "{reason:?}"
            );
        }
    });
}
