//! Drain, cancel, abort (issue 15): when each fires, what tasks that follow
//! each signal are reported as, deadlines tasks read, shielded sections,
//! nested deadlines and cancel reasons. Paused clock: times are exact.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use taskgroup::shutdown::Grace;
use taskgroup::{CancelReason, WaitGroup};
use tokio::time::Instant;

/// When each named step happened, from the test's start.
#[derive(Clone)]
struct Log {
    start: Instant,
    steps: Arc<Mutex<Vec<(&'static str, Duration)>>>,
}

impl Log {
    fn new() -> Self {
        Log {
            start: Instant::now(),
            steps: Arc::default(),
        }
    }
    fn note(&self, step: &'static str) {
        self.steps.lock().push((step, self.start.elapsed()));
    }
    fn at(&self, step: &str) -> Option<Duration> {
        self.steps.lock().iter().find(|s| s.0 == step).map(|s| s.1)
    }
}

const MS: Duration = Duration::from_millis(1);

/// Three tasks: one follows the drain signal, one only cancellation, one
/// nothing. With a 10 s drain and a 5 s cancel phase they stop at 0, 10 s
/// and (aborted) 15 s.
#[tokio::test(start_paused = true)]
async fn drain_then_cancel_then_abort() {
    let log = Log::new();
    let wg = WaitGroup::builder().name("server").build();
    let l = log.clone();
    wg.task().name("drains").go(|ctx| async move {
        ctx.draining().await;
        assert!(!ctx.is_cancelled(), "drained before cancelled");
        l.note("drains stopped");
    });
    let l = log.clone();
    wg.task().name("cancel only").go(|ctx| async move {
        ctx.cancelled().await;
        assert!(ctx.is_draining(), "a cancelled context is draining too");
        l.note("cancel only stopped");
    });
    let l = log.clone();
    wg.task().name("stubborn").go(|_ctx| async move {
        let _noted = Noted(l);
        std::future::pending::<()>().await
    });
    tokio::task::yield_now().await;

    let grace = Grace::drain(Duration::from_secs(10)).then_cancel(Duration::from_secs(5));
    let report = wg.shutdown(grace).await;

    assert_eq!(log.at("drains stopped"), Some(Duration::ZERO));
    assert_eq!(log.at("cancel only stopped"), Some(Duration::from_secs(10)));
    let aborted = log
        .at("stubborn dropped")
        .expect("the stubborn task was aborted");
    assert!(aborted >= Duration::from_secs(15) && aborted < Duration::from_secs(15) + MS);
    assert_eq!(report.finished(), 2, "{report}");
    let names: Vec<_> = report.aborted().iter().map(|t| t.name()).collect();
    assert_eq!(names, [Some("stubborn")]);
    assert!(report.pending().is_empty(), "{report}");
    assert!(matches!(wg.cancel_reason(), Some(CancelReason::Shutdown)));
}

/// Marks its task's end, including when it is aborted (dropped).
struct Noted(Log);
impl Drop for Noted {
    fn drop(&mut self) {
        self.0.note("stubborn dropped");
    }
}

/// A plain `Duration` has no drain phase: drain and cancel fire together,
/// as before phases existed; a group that drains by itself ends the phase.
#[tokio::test(start_paused = true)]
async fn without_a_drain_phase_drain_and_cancel_are_one_and_an_idle_group_ends_the_phase_early() {
    let log = Log::new();
    let wg = WaitGroup::new();
    let l = log.clone();
    wg.go(|ctx| async move {
        ctx.cancelled().await;
        l.note("cancelled");
    });
    let report = wg.shutdown(Duration::from_secs(10)).await;
    assert_eq!(log.at("cancelled"), Some(Duration::ZERO));
    assert!(report.is_clean(), "{report}");

    let wg = WaitGroup::new();
    wg.go(|ctx| async move { ctx.draining().await });
    let started = Instant::now();
    let grace = Grace::drain(Duration::from_secs(60)).then_cancel(Duration::from_secs(60));
    let report = wg.shutdown(grace).await;
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert!(report.is_clean(), "{report}");
    assert!(wg.is_draining());
    assert!(
        wg.is_cancelled(),
        "after a shutdown a group is cancelled, drained in time or not"
    );
}

/// Linked groups are drained in their turn: the pool keeps serving while
/// the server drains, and is drained only after the server stopped.
#[tokio::test(start_paused = true)]
async fn linked_groups_are_drained_in_order() {
    let log = Log::new();
    let root = WaitGroup::builder().name("root").build();
    let server = WaitGroup::builder().name("server").build();
    let pool = WaitGroup::builder().name("pool").build();
    root.link(&server).unwrap();
    root.link(&pool).unwrap();
    let l = log.clone();
    server.go(|ctx| async move {
        ctx.draining().await;
        tokio::time::sleep(Duration::from_secs(2)).await; // in-flight requests
        l.note("server stopped");
    });
    let l = log.clone();
    let p = pool.clone();
    pool.go(|ctx| async move {
        ctx.draining().await;
        assert!(p.is_closed());
        l.note("pool drained");
    });
    let grace = Grace::drain(Duration::from_secs(10)).then_cancel(Duration::from_secs(1));
    let report = root.shutdown(grace).await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(log.at("server stopped"), Some(Duration::from_secs(2)));
    assert_eq!(log.at("pool drained"), Some(Duration::from_secs(2)));
}

/// `deadline()`: none by default; a running shutdown's abort time; a
/// group's own; the earlier of a parent's and a child's. The group's
/// `WaitGroup::deadline()` says what its tasks read.
#[tokio::test(start_paused = true)]
async fn tasks_read_their_deadline() {
    let start = Instant::now();
    let wg = WaitGroup::new();
    assert_eq!(wg.deadline(), None);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    wg.go(move |ctx| async move {
        tx.send(ctx.deadline()).unwrap();
        ctx.draining().await;
        tx.send(ctx.deadline()).unwrap();
    });
    assert_eq!(rx.recv().await.unwrap(), None);
    let grace = Grace::drain(Duration::from_secs(3)).then_cancel(Duration::from_secs(4));
    let mut shutdown = std::pin::pin!(wg.shutdown(grace));
    assert!(futures::poll!(&mut shutdown).is_pending());
    assert_eq!(wg.deadline(), Some(start + Duration::from_secs(7)));
    let report = shutdown.await;
    assert!(report.is_clean());
    assert_eq!(
        rx.recv().await.unwrap(),
        Some(start + Duration::from_secs(7))
    );

    let parent = WaitGroup::builder()
        .timeout(Duration::from_secs(30))
        .build();
    let child = parent.child();
    let own = WaitGroup::builder()
        .timeout(Duration::from_secs(10))
        .build_child(&parent);
    let later = WaitGroup::builder()
        .timeout(Duration::from_secs(60))
        .build_child(&parent);
    let linked = WaitGroup::new();
    parent.link(&linked).unwrap();
    let deadline_in = |wg: &WaitGroup| {
        let (tx, rx) = tokio::sync::oneshot::channel();
        wg.go(move |ctx| async move {
            let _ = tx.send(ctx.deadline());
        });
        rx
    };
    let secs = |s| Some(start + Duration::from_secs(s));
    assert_eq!(deadline_in(&parent).await.unwrap(), secs(30));
    assert_eq!(deadline_in(&child).await.unwrap(), secs(30));
    assert_eq!(deadline_in(&own).await.unwrap(), secs(10));
    assert_eq!(
        deadline_in(&later).await.unwrap(),
        secs(30),
        "cut short by the parent's"
    );
    assert_eq!(deadline_in(&linked).await.unwrap(), secs(30));
    for (group, expected) in [
        (&parent, 30),
        (&child, 30),
        (&own, 10),
        (&later, 30),
        (&linked, 30),
    ] {
        assert_eq!(group.deadline(), secs(expected));
    }
}

/// A child's deadline cancels the child and not its parent; a parent's
/// shutdown cuts a child's later deadline short.
#[tokio::test(start_paused = true)]
async fn nested_deadlines() {
    let start = Instant::now();
    let parent = WaitGroup::builder().name("server").build();
    let request = WaitGroup::builder()
        .name("request")
        .timeout(Duration::from_secs(5))
        .build_child(&parent);
    let (tx, rx) = tokio::sync::oneshot::channel();
    request.go(move |ctx| async move {
        ctx.cancelled().await;
        let _ = tx.send((start.elapsed(), ctx.cancel_reason()));
    });
    let sibling = parent.go(|ctx| async move { ctx.cancelled().await });
    let (at, reason) = rx.await.unwrap();
    assert_eq!(at, Duration::from_secs(5));
    assert!(matches!(reason, Some(CancelReason::Deadline)), "{reason:?}");
    assert!(!parent.is_cancelled());
    assert!(!sibling.is_finished());

    // A child with a 60 s deadline, its parent shut down with 1 s: the
    // child's tasks read the parent's deadline and are cancelled by it.
    let slow = WaitGroup::builder()
        .name("slow")
        .timeout(Duration::from_secs(60))
        .build_child(&parent);
    let (tx, rx) = tokio::sync::oneshot::channel();
    slow.go(move |ctx| async move {
        ctx.cancelled().await;
        let _ = tx.send((ctx.deadline(), ctx.cancel_reason()));
    });
    let shutdown_at = Instant::now();
    let report = parent.shutdown(Duration::from_secs(1)).await;
    assert!(report.is_clean(), "{report}");
    let (deadline, reason) = rx.await.unwrap();
    assert_eq!(deadline, Some(shutdown_at + Duration::from_secs(1)));
    assert!(matches!(reason, Some(CancelReason::Shutdown)), "{reason:?}");
}

/// A shielded flush that outlives the grace but fits its budget completes
/// (and its task is aborted as soon as the section ends); one that exceeds
/// its budget is aborted and named.
#[tokio::test(start_paused = true)]
async fn shielded_sections_within_and_beyond_their_budget() {
    let log = Log::new();
    let wg = WaitGroup::builder()
        .name("store")
        .abort_timeout(Duration::from_secs(20))
        .build();
    let l = log.clone();
    wg.task().name("fits").go(|ctx| async move {
        ctx.cancelled().await;
        ctx.shielded(Duration::from_secs(2), async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            l.note("fits flushed");
        })
        .await;
        std::future::pending::<()>().await // ignores cancellation after
    });
    let l = log.clone();
    wg.task().name("overruns").go(|ctx| async move {
        ctx.cancelled().await;
        ctx.shielded(Duration::from_secs(3), async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            l.note("overruns flushed");
        })
        .await;
    });
    let report = wg.shutdown(Duration::from_millis(100)).await;

    assert_eq!(log.at("fits flushed"), Some(Duration::from_secs(1)));
    assert_eq!(log.at("overruns flushed"), None);
    let mut names: Vec<_> = report.aborted().iter().map(|t| t.name().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, ["fits", "overruns"], "{report}");
    // Aborted when its budget ran out, 3 s after it started (at 0).
    assert_eq!(report.elapsed(), Duration::from_secs(3), "{report}");
}

/// A shield's budget is bounded by the shutdown: at most three quarters of
/// the group's share of the forced phase.
#[tokio::test(start_paused = true)]
async fn a_shield_is_bounded_by_the_forced_phase() {
    let wg = WaitGroup::builder()
        .abort_timeout(Duration::from_secs(4))
        .build();
    wg.task().name("forever").go(|ctx| async move {
        ctx.shielded(Duration::MAX, std::future::pending::<()>())
            .await
    });
    tokio::task::yield_now().await;
    let report = wg.shutdown(Duration::ZERO).await;
    assert_eq!(report.aborted().len(), 1, "{report}");
    assert_eq!(report.elapsed(), Duration::from_secs(3), "{report}");
}

/// The forced phase is shared by the groups that have work: 1,000 groups
/// made per connection (scoped children, then plain children, of the
/// server group) whose work ended before the shutdown take none of it, nor
/// do scoped children whose stuck work is aborted with their parent's, so
/// a task's shielded flush of 700 ms, begun at the cancel, fits three
/// quarters of the 1 s abort timeout after a 300 ms grace. (Counting every
/// group of the walk gave the flush a thousandth of the abort timeout: it
/// was aborted at the deadline, however large the abort timeout.)
#[tokio::test(start_paused = true)]
async fn groups_without_work_take_no_share_of_the_forced_phase() {
    for (scoped, stuck) in [(true, 0), (false, 0), (true, 10)] {
        let log = Log::new();
        let server = WaitGroup::builder().name("server").build();
        let l = log.clone();
        server.task().name("flusher").go(|ctx| async move {
            ctx.cancelled().await;
            ctx.shielded(Duration::from_secs(2), async {
                tokio::time::sleep(Duration::from_millis(700)).await;
                l.note("flushed");
            })
            .await;
        });
        for i in 0..1_000 {
            let conn = if scoped {
                server.scoped_child()
            } else {
                server.child()
            };
            if i < stuck {
                conn.go(|_| std::future::pending::<()>());
            } else {
                conn.go(|_| async {});
            }
            server.go(move |ctx| async move {
                let _conn = conn;
                ctx.cancelled().await;
            });
        }
        tokio::task::yield_now().await;
        let report = server.shutdown(Duration::from_millis(300)).await;
        let case = format!("scoped: {scoped}, stuck: {stuck}");
        assert_eq!(
            log.at("flushed"),
            Some(Duration::from_millis(700)),
            "{case}"
        );
        // The stuck tasks aborted (and the flusher's, ended or aborted as
        // its section ends).
        let others = report
            .aborted()
            .iter()
            .filter(|t| t.name() != Some("flusher"));
        assert_eq!(others.count(), stuck, "{report}");
        assert_eq!(report.elapsed(), Duration::from_millis(700), "{report}");
    }
}

/// Notes `.1` in the log when dropped (a task's future, aborted).
struct DropNote(Log, &'static str);
impl Drop for DropNote {
    fn drop(&mut self) {
        self.0.note(self.1);
    }
}

/// Each shielded task is aborted when its own budget runs out, in the order
/// of the budgets, not when the first or the last runs out.
#[tokio::test(start_paused = true)]
async fn overrunning_shields_are_aborted_each_at_its_budget() {
    let log = Log::new();
    let wg = WaitGroup::builder()
        .abort_timeout(Duration::from_secs(20))
        .build();
    for (name, budget) in [("3s", 3), ("1s", 1), ("2s", 2)] {
        let l = log.clone();
        wg.task().name(name).go(move |ctx| async move {
            let _noted = DropNote(l, name);
            ctx.shielded(Duration::from_secs(budget), std::future::pending::<()>())
                .await
        });
    }
    tokio::task::yield_now().await;
    let report = wg.shutdown(Duration::ZERO).await;
    assert_eq!(report.aborted().len(), 3, "{report}");
    for (name, at) in [("1s", 1), ("2s", 2), ("3s", 3)] {
        assert_eq!(log.at(name), Some(Duration::from_secs(at)), "{name}");
    }
}

/// A task with nested sections stays shielded until its last one ends: the
/// inner section's end does not release it, the outer's does (and it is
/// aborted then, as it ignores cancellation after it).
#[tokio::test(start_paused = true)]
async fn a_task_is_shielded_until_its_outer_section_ends() {
    let log = Log::new();
    let wg = WaitGroup::builder()
        .abort_timeout(Duration::from_secs(20))
        .build();
    let l = log.clone();
    wg.task().name("nested").go(|ctx| async move {
        let _noted = DropNote(l.clone(), "nested dropped");
        ctx.cancelled().await;
        ctx.shielded(Duration::from_secs(10), async {
            ctx.shielded(Duration::from_secs(1), tokio::time::sleep(MS * 500))
                .await;
            l.note("inner ended");
            tokio::time::sleep(Duration::from_secs(2)).await;
        })
        .await;
        std::future::pending::<()>().await
    });
    tokio::task::yield_now().await;
    let report = wg.shutdown(MS * 100).await;
    assert_eq!(report.aborted().len(), 1, "{report}");
    assert_eq!(log.at("inner ended"), Some(MS * 500));
    assert_eq!(log.at("nested dropped"), Some(MS * 2_500));
    assert_eq!(report.elapsed(), MS * 2_500, "{report}");
}

/// 40,000 tasks each run in a shielded section that waits for
/// cancellation, then flushes for 200 ms; then half of them return and half
/// ignore cancellation. Every flush completes, the second half is aborted as
/// each flush ends, and the whole shutdown takes about the flush. The forced
/// phase used to rescan every section and walk the group after each section
/// ended: it ran into the 20 s of the budgets (the bound below fails), and
/// half the flushes were cut. Real time: the cost was the phase's own work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_shielded_sections_end_in_linear_time() {
    const TASKS: usize = 40_000;
    let flushed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // A permit per task in its section: the shutdown starts once all are.
    let entered = Arc::new(tokio::sync::Semaphore::new(0));
    let wg = WaitGroup::builder()
        .abort_timeout(Duration::from_secs(30))
        .build();
    for i in 0..TASKS {
        let (flushed, entered) = (flushed.clone(), entered.clone());
        wg.go(move |ctx| async move {
            ctx.shielded(Duration::from_secs(20), async {
                entered.add_permits(1);
                ctx.cancelled().await;
                tokio::time::sleep(MS * 200).await;
                flushed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            })
            .await;
            if i % 2 == 1 {
                std::future::pending::<()>().await
            }
        });
    }
    let all = entered.acquire_many(TASKS as u32).await.unwrap();
    all.forget();
    let started = std::time::Instant::now();
    let report = wg.shutdown(MS * 50).await;
    let took = started.elapsed();
    assert_eq!(flushed.load(std::sync::atomic::Ordering::Relaxed), TASKS);
    assert_eq!(report.aborted().len(), TASKS / 2);
    assert_eq!(report.finished(), TASKS / 2);
    assert!(report.pending().is_empty());
    assert!(took < Duration::from_secs(10), "{took:?}");
}

/// A group cancelled, or shut down, then reopened before its deadline is
/// cancelled at the deadline all the same: the deadline is set once, and its
/// tasks read it. Before, a `cancel()` (or a failure) ended the deadline's
/// timer, and the reopened group's tasks read a deadline nothing enforced
/// (found by a doc audit, `probe-docs` `b5`).
#[tokio::test(start_paused = true)]
async fn a_group_reopened_before_its_deadline_is_cancelled_at_it() {
    for how in ["cancel", "failure", "shutdown"] {
        let start = Instant::now();
        let wg = WaitGroup::builder()
            .cancel_on_error(true)
            .timeout(Duration::from_millis(100))
            .build();
        tokio::time::sleep(Duration::from_millis(10)).await;
        match how {
            "cancel" => wg.cancel(),
            "failure" => {
                wg.go(|_| async { Err::<(), _>("boom") });
                assert!(wg.wait().await.is_err());
            }
            _ => drop(wg.shutdown(Duration::ZERO).await),
        }
        assert!(wg.is_cancelled(), "{how}");
        wg.reopen();
        let _ = wg.take_errors();
        assert!(!wg.is_cancelled(), "{how}: reopened");
        let (tx, rx) = tokio::sync::oneshot::channel();
        wg.go(move |ctx| async move {
            let deadline = ctx.deadline();
            ctx.cancelled().await;
            let _ = tx.send((deadline, start.elapsed(), ctx.cancel_reason()));
        });
        let (deadline, at, reason) = tokio::time::timeout(Duration::from_secs(3600), rx)
            .await
            .unwrap_or_else(|_| panic!("{how}: not cancelled at its deadline"))
            .unwrap();
        assert_eq!(deadline, Some(start + Duration::from_millis(100)), "{how}");
        assert_eq!(at, Duration::from_millis(100), "{how}");
        assert!(
            matches!(reason, Some(CancelReason::Deadline)),
            "{how}: {reason:?}"
        );
        wg.wait().await.unwrap();
    }
}

/// Every cancellation carries its reason; the first sticks; a child
/// carries its parent's.
#[tokio::test(start_paused = true)]
async fn cancel_reasons() {
    let wg = WaitGroup::new();
    assert!(wg.cancel_reason().is_none());
    let child = wg.child();
    wg.cancel_with("reloading");
    for group in [&wg, &child] {
        match group.cancel_reason() {
            Some(CancelReason::Requested(Some(why))) => assert_eq!(why, "reloading"),
            other => panic!("{other:?}"),
        }
    }
    wg.cancel();
    assert!(matches!(
        wg.cancel_reason(),
        Some(CancelReason::Requested(Some(_)))
    ));
    assert!(wg.reopen() || !wg.is_closed());
    assert!(
        wg.cancel_reason().is_none(),
        "a reopened group starts afresh"
    );

    let wg = WaitGroup::builder().cancel_on_error(true).build();
    let child = wg.child();
    wg.task()
        .name("db")
        .go(|_| async { Err::<(), _>("connection refused") });
    let (tx, rx) = tokio::sync::oneshot::channel();
    child.go(move |ctx| async move {
        ctx.cancelled().await;
        let _ = tx.send(ctx.cancel_reason());
    });
    match rx.await.unwrap() {
        Some(CancelReason::Failure(error)) => assert_eq!(error.name(), Some("db")),
        other => panic!("{other:?}"),
    }
    let report = wg.shutdown(Duration::from_secs(1)).await;
    assert_eq!(report.errors().len(), 1);
    assert!(
        matches!(wg.cancel_reason(), Some(CancelReason::Failure(_))),
        "the first reason sticks"
    );

    let token = tokio_util::sync::CancellationToken::new();
    let wg = WaitGroup::builder().token(token.clone()).build();
    token.cancel();
    assert!(matches!(wg.cancel_reason(), Some(CancelReason::Token)));
    assert_eq!(CancelReason::Deadline.to_string(), "deadline exceeded");

    // A child made once its parent is cancelled carries the parent's reason
    // too, not `Token` (found by a doc audit, `probe-docs` `b6`): after a
    // cancel, a failure, a deadline.
    let wg = WaitGroup::new();
    wg.cancel_with("reloading");
    match wg.child().cancel_reason() {
        Some(CancelReason::Requested(Some(why))) => assert_eq!(why, "reloading"),
        other => panic!("{other:?}"),
    }
    let wg = WaitGroup::builder().cancel_on_error(true).build();
    wg.go(|_| async { Err::<(), _>("boom") });
    assert!(wg.wait().await.is_err());
    assert!(matches!(
        wg.child().cancel_reason(),
        Some(CancelReason::Failure(_))
    ));
    let wg = WaitGroup::builder()
        .timeout(Duration::from_millis(10))
        .build();
    wg.cancelled().await;
    let late = wg.child();
    assert!(matches!(late.cancel_reason(), Some(CancelReason::Deadline)));
    let (tx, rx) = tokio::sync::oneshot::channel();
    late.go(move |ctx| async move {
        let _ = tx.send(ctx.cancel_reason());
    });
    assert!(matches!(rx.await.unwrap(), Some(CancelReason::Deadline)));
}

/// An idle group that a handle can still give work counts among the
/// groups sharing the forced phase: a pool, idle at the deadline, that the
/// `Drop` of the server's aborted task gives a task flushing 400 ms once
/// its group is stopped, gets the time for it, though the server holds a
/// shielded section that never ends (it waits three quarters of its share,
/// 375 ms, not of the whole abort timeout, 750 ms, which left the pool 188
/// ms).
#[tokio::test(start_paused = true)]
async fn an_idle_group_a_handle_can_give_work_keeps_its_share() {
    struct FlushOnDrop(WaitGroup, Log);
    impl Drop for FlushOnDrop {
        fn drop(&mut self) {
            let log = self.1.clone();
            self.0.go(|ctx| async move {
                ctx.cancelled().await; // flushes when its group is stopped
                tokio::time::sleep(Duration::from_millis(400)).await;
                log.note("flushed");
            });
        }
    }
    let log = Log::new();
    let server = WaitGroup::builder().name("server").build();
    let pool = server.child();
    let flush = FlushOnDrop(pool, log.clone());
    server.task().name("stuck").go(|_| async move {
        let _flush = flush;
        std::future::pending::<()>().await
    });
    server.task().name("shielded").go(|ctx| async move {
        ctx.shielded(Duration::MAX, std::future::pending::<()>())
            .await
    });
    tokio::task::yield_now().await;
    let report = server.shutdown(Duration::from_millis(100)).await;
    // The pool's turn at 475 ms (the deadline, 100 ms, and the shield's
    // 375 ms): its flush ends at 875 ms, within its share.
    assert_eq!(
        log.at("flushed"),
        Some(Duration::from_millis(875)),
        "{report}"
    );
}

/// A scoped child whose stuck work its parent's turn aborts still counts
/// among the groups sharing the forced phase if it holds a shielded
/// section, which it waits for in its own turn: a plain child after them,
/// flushing 300 ms once stopped, gets the time for it.
#[tokio::test(start_paused = true)]
async fn a_scoped_child_with_a_shielded_section_keeps_its_share() {
    let log = Log::new();
    let server = WaitGroup::builder().name("server").build();
    let scoped = server.scoped_child();
    for group in [&server, &scoped] {
        group.go(|_| std::future::pending::<()>());
        group.go(|ctx| async move {
            ctx.shielded(Duration::MAX, std::future::pending::<()>())
                .await
        });
    }
    let pool = server.child();
    let l = log.clone();
    pool.go(|ctx| async move {
        ctx.cancelled().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        l.note("flushed");
    });
    tokio::task::yield_now().await;
    let report = server.shutdown(Duration::from_millis(100)).await;
    assert!(log.at("flushed").is_some(), "{report}");
}

/// An accept loop in `run_until_draining` ends at the drain signal, so the
/// child group of its connections is drained at once, not when the cancel
/// comes 10 s later (as it is behind a loop in `run_until_cancelled`); the
/// future's output comes through when it is ready first, and a cancel
/// without a drain phase ends the loop too.
#[tokio::test(start_paused = true)]
async fn run_until_draining_ends_an_accept_loop_at_the_drain_signal() {
    use taskgroup::shutdown::Grace;
    for until_drain in [true, false] {
        let log = Log::new();
        let server = WaitGroup::builder().name("server").build();
        let conns = server.child();
        let l = log.clone();
        conns.go(|ctx| async move {
            ctx.draining().await;
            l.note("conn drained");
        });
        let (accept, mut accepted) = tokio::sync::mpsc::channel::<u32>(1);
        server.go(move |ctx| async move {
            loop {
                let next = if until_drain {
                    ctx.run_until_draining(accepted.recv()).await
                } else {
                    ctx.run_until_cancelled(accepted.recv()).await
                };
                match next {
                    Some(Some(conn)) => assert_eq!(conn, 7),
                    _ => return,
                }
            }
        });
        accept.send(7).await.unwrap();
        tokio::task::yield_now().await;
        let grace = Grace::drain(Duration::from_secs(10)).then_cancel(Duration::from_secs(1));
        let report = server.shutdown(grace).await;
        assert!(report.is_clean(), "{report}");
        let drained = if until_drain { 0 } else { 10 };
        assert_eq!(log.at("conn drained"), Some(Duration::from_secs(drained)));
    }
    // A cancel without a drain phase.
    let wg = WaitGroup::new();
    let task = wg.go(|ctx| async move {
        let ended = ctx.run_until_draining(std::future::pending::<()>()).await;
        Ok::<_, std::convert::Infallible>(ended)
    });
    wg.cancel();
    assert_eq!(task.await.unwrap(), None);
}

/// `drain()` drains a whole tree without closing or cancelling it.
#[tokio::test(start_paused = true)]
async fn drain_on_demand() {
    let wg = WaitGroup::new();
    let child = wg.child();
    let task = child.go(|ctx| async move { ctx.draining().await });
    wg.drain();
    task.await.unwrap();
    assert!(child.is_draining());
    assert!(!wg.is_closed() && !wg.is_cancelled());
}

/// Hostile input: `Duration::MAX` phases and timeouts saturate.
#[tokio::test(start_paused = true)]
async fn saturating_phases() {
    let grace = Grace::drain(Duration::MAX).then_cancel(Duration::MAX);
    assert_eq!(grace.total(), Duration::MAX);
    let wg = WaitGroup::builder().timeout(Duration::MAX).build();
    wg.go(|ctx| async move { ctx.draining().await });
    let deadline = wg.go(|ctx| async move { Ok::<_, std::io::Error>(ctx.deadline()) });
    assert_eq!(deadline.await.unwrap(), None);
    let report = wg.shutdown(grace).await;
    assert!(report.is_clean(), "{report}");
    let far = WaitGroup::builder()
        .timeout(Duration::from_secs(u64::MAX))
        .build();
    assert!(!far.is_cancelled());
}

/// On a `cancel_on_error` group, the first failure is primary (and the
/// cancel cause); the failures its cancellation caused are secondary,
/// reported apart; a failure during a shutdown's cancel phase is secondary.
#[tokio::test(start_paused = true)]
async fn primary_and_secondary_failures() {
    let wg = WaitGroup::builder()
        .name("app")
        .cancel_on_error(true)
        .build();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    wg.task().name("db").go(|_| async move {
        let _ = rx.await;
        Err::<(), _>("connection refused")
    });
    for name in ["api", "worker"] {
        wg.task().name(name).go(|ctx| async move {
            ctx.cancelled().await;
            Err::<(), _>("interrupted")
        });
    }
    let bystander = wg
        .task()
        .name("bystander")
        .go(|ctx| async move { ctx.cancelled().await });
    tx.send(()).unwrap();
    let errors = wg.wait().await.unwrap_err().errors().clone();
    bystander.await.unwrap();
    let names = |it: &mut dyn Iterator<Item = &taskgroup::TaskError>| {
        let mut v: Vec<_> = it.map(|e| e.name().unwrap().to_owned()).collect();
        v.sort();
        v
    };
    assert_eq!(names(&mut errors.primary()), ["db"]);
    assert_eq!(names(&mut errors.secondary()), ["api", "worker"]);
    assert_eq!(wg.cancel_cause().unwrap().name(), Some("db"));
    assert!(
        errors
            .to_string()
            .contains("failed: interrupted (after the group was cancelled)"),
        "{errors}"
    );

    let wg = WaitGroup::new();
    wg.task().name("conn").go(|ctx| async move {
        ctx.cancelled().await;
        Err::<(), _>("reset by shutdown")
    });
    let report = wg.shutdown(Duration::from_secs(1)).await;
    assert_eq!(report.errors().secondary().count(), 1, "{report}");
    assert_eq!(report.errors().primary().count(), 0, "{report}");

    // Reopened after a failure cancelled it, a group's next failure is
    // primary again: it comes after no cancel of its generation.
    let wg = WaitGroup::builder().cancel_on_error(true).build();
    wg.task()
        .name("first")
        .go(|_| async { Err::<(), _>("one") });
    assert!(wg.wait().await.is_err());
    assert!(wg.is_cancelled());
    wg.reopen(); // not closed, so `false`; the context is fresh all the same
    assert!(!wg.is_cancelled());
    let _ = wg.take_errors();
    wg.task()
        .name("after reopen")
        .go(|_| async { Err::<(), _>("two") });
    let errors = wg.wait().await.unwrap_err().errors().clone();
    assert_eq!(names(&mut errors.primary()), ["after reopen"], "{errors}");
}

/// A group the shutdown reaches after the deadline reads the time it is
/// actually given: three quarters of its share of the forced phase.
#[tokio::test(start_paused = true)]
async fn a_group_reached_late_reads_its_own_abort_time() {
    let start = Instant::now();
    let root = WaitGroup::builder()
        .name("root")
        .abort_timeout(Duration::from_secs(4))
        .build();
    let late = WaitGroup::builder().name("late").build();
    root.link(&late).unwrap();
    root.task()
        .name("stubborn")
        .go(|_ctx| std::future::pending::<()>());
    let (tx, rx) = tokio::sync::oneshot::channel();
    late.go(move |ctx| async move {
        ctx.cancelled().await;
        let _ = tx.send(ctx.deadline());
    });
    let report = root.shutdown(Duration::from_secs(1)).await;
    assert_eq!(report.aborted().len(), 1, "{report}");
    // Reached at 1 s with 4 s of forced phase left for one group: 3 s more.
    assert_eq!(rx.await.unwrap(), Some(start + Duration::from_secs(4)));
}

/// A root whose turn in a shutdown lasts 200 ms (its task stops 200 ms after
/// the cancel, and until then, asked, says the deadline it reads), with a
/// child whose task, asked, says the deadline it reads.
struct SlowRoot {
    root: WaitGroup,
    child: WaitGroup,
    ask: tokio::sync::mpsc::UnboundedSender<()>,
    seen: tokio::sync::mpsc::UnboundedReceiver<Option<Instant>>,
    ask_root: tokio::sync::mpsc::UnboundedSender<()>,
    seen_root: tokio::sync::mpsc::UnboundedReceiver<Option<Instant>>,
}

impl SlowRoot {
    fn new() -> Self {
        let root = WaitGroup::builder().name("root").build();
        let (seen_root_tx, seen_root) = tokio::sync::mpsc::unbounded_channel();
        let (ask_root, mut asked_root) = tokio::sync::mpsc::unbounded_channel::<()>();
        root.task().name("slow").go(|ctx| async move {
            ctx.cancelled().await;
            let stop = tokio::time::sleep(Duration::from_millis(200));
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    () = &mut stop => break,
                    Some(()) = asked_root.recv() => seen_root_tx.send(ctx.deadline()).unwrap(),
                }
            }
        });
        let child = root.child();
        let (seen_tx, seen) = tokio::sync::mpsc::unbounded_channel();
        let (ask, mut asked) = tokio::sync::mpsc::unbounded_channel::<()>();
        child.go(move |ctx| async move {
            while asked.recv().await.is_some() {
                seen_tx.send(ctx.deadline()).unwrap();
            }
        });
        SlowRoot {
            root,
            child,
            ask,
            seen,
            ask_root,
            seen_root,
        }
    }

    /// The deadline the root's task reads now (in its 200 ms after the
    /// cancel).
    async fn root_deadline(&mut self) -> Option<Instant> {
        self.ask_root.send(()).unwrap();
        self.seen_root.recv().await.unwrap()
    }

    /// The deadline the child's task reads now.
    async fn child_deadline(&mut self) -> Option<Instant> {
        self.ask.send(()).unwrap();
        self.seen.recv().await.unwrap()
    }

    /// Drops a shutdown of the root with `grace` 20 ms in: in the root's turn.
    async fn drop_a_shutdown(&self, grace: Duration) {
        let shutdown = self.root.shutdown(grace);
        let dropped = tokio::time::timeout(Duration::from_millis(20), shutdown).await;
        assert!(dropped.is_err(), "the root's turn takes 200 ms");
    }
}

/// Two overlapping shutdowns dropped in the order they began: the second
/// put back the first one's deadline, which it had replaced, after the first
/// was gone; the child, open, read it for good, and children made there
/// inherited it (`probe-reg` `drop`). It reads none, in either order.
#[tokio::test(start_paused = true)]
async fn two_dropped_shutdowns_leave_no_deadline_whatever_the_order() {
    for first_dropped_first in [true, false] {
        let mut tree = SlowRoot::new();
        let first = tree.root.shutdown(Duration::from_secs(10));
        let second = tree.root.shutdown(Duration::from_secs(5));
        let (mut first, mut second) = (Box::pin(first), Box::pin(second));
        // Both under way, in the root's 200 ms turn.
        let both = futures::future::join(first.as_mut(), second.as_mut());
        let under_way = tokio::time::timeout(Duration::from_millis(10), both).await;
        assert!(under_way.is_err(), "the root's turn takes 200 ms");
        if first_dropped_first {
            drop(first);
            drop(second);
        } else {
            drop(second);
            drop(first);
        }
        assert!(!tree.child.is_closed(), "neither reached the child");
        assert_eq!(tree.child_deadline().await, None);
        let (tx, rx) = tokio::sync::oneshot::channel();
        tree.child.child().go(|ctx| async move {
            let _ = tx.send(ctx.deadline());
        });
        assert_eq!(rx.await.unwrap(), None);
    }
}

/// A shutdown dropped before it reached a group takes back the deadline it
/// gave that group's tasks: the group is open, and nothing enforces it. It
/// stayed, passed, for good (and children made there inherited it), as
/// `reopen()` changes nothing on an open group (`probe-cancel` `stale`).
#[tokio::test(start_paused = true)]
async fn a_dropped_shutdown_takes_back_the_deadline_of_the_groups_it_did_not_reach() {
    let mut tree = SlowRoot::new();
    tree.drop_a_shutdown(Duration::from_millis(300)).await;
    assert!(!tree.child.is_closed() && !tree.child.is_cancelled());
    assert_eq!(tree.child_deadline().await, None);
    // And a child made there afterwards has none either.
    let (tx, rx) = tokio::sync::oneshot::channel();
    tree.child.child().go(|ctx| async move {
        let _ = tx.send(ctx.deadline());
    });
    assert_eq!(rx.await.unwrap(), None);
    // The next shutdown stops everything as usual (the child's task, which
    // ignores the cancel, aborted at its deadline).
    let report = tree.root.shutdown(Duration::from_millis(300)).await;
    assert!(report.pending().is_empty(), "{report}");
    assert_eq!(report.aborted().len(), 1, "{report}");
}

/// The same, with another shutdown running: the dropped one puts back the
/// deadline it replaced, which that shutdown enforces. It cleared it: the
/// child's task read none while a shutdown was about to abort it
/// (`probe-today` `drop b`).
#[tokio::test(start_paused = true)]
async fn a_dropped_shutdown_puts_back_the_deadline_of_one_still_running() {
    let mut tree = SlowRoot::new();
    let start = Instant::now();
    let running = {
        let root = tree.root.clone();
        tokio::spawn(async move { root.shutdown(Duration::from_secs(2)).await })
    };
    tokio::task::yield_now().await;
    let running_deadline = tree.child_deadline().await;
    assert_eq!(running_deadline, Some(start + Duration::from_secs(2)));
    tree.drop_a_shutdown(Duration::from_secs(1)).await;
    assert_eq!(tree.child_deadline().await, running_deadline);
    // The root, which both reached, reads it too (the dropped shutdown's,
    // which nothing enforces, stayed).
    assert_eq!(tree.root_deadline().await, running_deadline);
    let report = running.await.unwrap();
    assert_eq!(report.aborted().len(), 1, "{report}");
}
