//! Loom models of the drain and cancel signals a task reads
//! (`TaskContext::draining`, `is_draining`, `is_cancelled`): a shutdown
//! drains a group and then cancels it on one thread while a task waits for
//! the drain signal, and another looks at both flags.
//!
//! What loom explores here: the wake-ups, which the tokens deliver through
//! tokio's `Notify` (loom-instrumented in this build), and our select over
//! the two tokens. What it does not: the tokens' own tree, kept under a std
//! mutex inside tokio-util, which loom treats as one step.

use loom::thread;

use super::loom_models::model;
use crate::context::TaskContext;
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
    model("drain_precedes_cancel", || {
        let (wg, ctx) = group();
        let observer = ctx.clone();
        let node = wg.node().clone();
        let shutdown = thread::spawn(move || {
            node.drain_own();
            node.cancel_own(CancelReason::Shutdown);
        });
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
