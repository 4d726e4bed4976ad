//! Saturating time (issue #11, D): `Duration::MAX` is a valid timeout
//! everywhere a duration is taken (abort timeout, grace period, plan delays
//! and budget, wait timeouts) and means "no limit"; nothing panics on an
//! overflowing `Instant` or `Duration` sum. Likewise a concurrency limit
//! beyond what tokio's semaphore holds is no limit.
//!
//! On the code before issue #11, `abort_timeout(Duration::MAX)` makes every
//! shutdown panic (the deadline plus the abort timeout overflows), and
//! `ShutdownPlan::budget` panics when a part is `Duration::MAX`. An unbounded
//! grace period (with a finite abort timeout), a plan with one, and
//! `wait_timeout`/`wait_blocking_timeout` with `Duration::MAX` already work;
//! their tests keep it so.

use std::time::Duration;

use taskgroup::shutdown::ShutdownPlan;
use taskgroup::WaitGroup;
use tokio::time::Instant;

/// A task that stops as soon as its group is cancelled.
fn polite(wg: &WaitGroup, name: &'static str) {
    wg.task().name(name).go(|ctx| async move {
        ctx.cancelled().await;
        Ok::<_, std::io::Error>(())
    });
}

/// A task that ignores cancellation: only an abort ends it.
fn stubborn(wg: &WaitGroup, name: &'static str) -> taskgroup::TaskId {
    wg.task()
        .name(name)
        .go(|_| async {
            std::future::pending::<()>().await;
            Ok::<_, std::io::Error>(())
        })
        .id()
}

/// The forced phase is unbounded, but a task aborted at the deadline stops at
/// once, so the shutdown returns at the deadline.
#[tokio::test(start_paused = true)]
async fn an_unbounded_abort_timeout_still_aborts_at_the_deadline() {
    let wg = WaitGroup::builder()
        .name("server")
        .abort_timeout(Duration::MAX)
        .build();
    polite(&wg, "polite");
    let stuck = stubborn(&wg, "stuck");
    tokio::task::yield_now().await;
    let start = Instant::now();
    let report = wg.shutdown(Duration::from_secs(1)).await;
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(
        report.aborted().iter().map(|t| t.id()).collect::<Vec<_>>(),
        [stuck]
    );
    assert_eq!(report.finished(), 1, "{report}");
    assert!(report.pending().is_empty(), "{report}");
    assert!(wg.is_empty());
}

/// A linked group reached after the deadline, under an unbounded abort
/// timeout: no overflow computing its share of the forced phase.
#[tokio::test(start_paused = true)]
async fn an_unbounded_abort_timeout_with_a_group_reached_late() {
    let wg = WaitGroup::builder().abort_timeout(Duration::MAX).build();
    let pool = wg.task().name("pool").child();
    stubborn(&wg, "straggler");
    polite(&pool, "pool");
    tokio::task::yield_now().await;
    let report = wg.shutdown(Duration::from_secs(1)).await;
    assert_eq!(report.aborted().len(), 1, "{report}");
    assert_eq!(report.finished(), 1, "{report}");
    assert!(report.pending().is_empty(), "{report}");
}

/// A group whose tasks stop when cancelled, shut down with an unbounded
/// grace period (and the default abort timeout, or an unbounded one).
async fn unbounded_grace(abort_timeout: Duration) {
    let wg = WaitGroup::builder().abort_timeout(abort_timeout).build();
    let pool = wg.child();
    polite(&wg, "conn");
    polite(&pool, "pool");
    tokio::task::yield_now().await;
    let start = Instant::now();
    let report = wg.shutdown(Duration::MAX).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.finished(), 2, "{report}");
}

#[tokio::test(start_paused = true)]
async fn an_unbounded_grace_period_returns_once_the_tasks_stop() {
    unbounded_grace(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn an_unbounded_grace_period_and_abort_timeout_together() {
    unbounded_grace(Duration::MAX).await;
}

#[test]
fn a_plan_budget_saturates() {
    let wg = WaitGroup::new();
    assert_eq!(ShutdownPlan::new(Duration::MAX).budget(&wg), Duration::MAX);
    assert_eq!(
        ShutdownPlan::new(Duration::from_secs(10))
            .pre_stop_delay(Duration::MAX)
            .budget(&wg),
        Duration::MAX
    );
    assert_eq!(
        ShutdownPlan::new(Duration::MAX)
            .pre_stop_delay(Duration::MAX)
            .budget(&wg),
        Duration::MAX
    );
    let unbounded = WaitGroup::builder().abort_timeout(Duration::MAX).build();
    assert_eq!(
        ShutdownPlan::new(Duration::from_secs(10)).budget(&unbounded),
        Duration::MAX
    );
    // Finite parts still add up.
    assert_eq!(
        ShutdownPlan::new(Duration::from_secs(10))
            .pre_stop_delay(Duration::from_secs(5))
            .budget(&wg),
        Duration::from_secs(16)
    );
}

#[tokio::test(start_paused = true)]
async fn a_plan_with_an_unbounded_grace_period_runs() {
    let wg = WaitGroup::new();
    polite(&wg, "conn");
    tokio::task::yield_now().await;
    let report = ShutdownPlan::new(Duration::MAX).run(&wg).await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.finished(), 1);
}

#[tokio::test(start_paused = true)]
async fn wait_timeout_max_returns_once_the_group_is_idle() {
    let wg = WaitGroup::new();
    wg.go(|_| async {
        // Models a second of work.
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<_, std::io::Error>(())
    });
    let start = Instant::now();
    wg.wait_timeout(Duration::MAX).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}

#[test]
fn wait_blocking_timeout_max_returns_once_the_group_is_idle() {
    let wg = WaitGroup::new();
    let work = wg.add();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let completer = std::thread::spawn(move || {
        release_rx.recv().unwrap();
        drop(work);
    });
    release_tx.send(()).unwrap();
    wg.wait_blocking_timeout(Duration::MAX).unwrap();
    assert!(wg.is_empty());
    completer.join().unwrap();
}

/// `limit(usize::MAX)` (what a config's "unlimited" often maps to) and any
/// limit from tokio's `Semaphore::MAX_PERMITS` up mean no limit; before, the
/// group's semaphore panicked in `build()`. One below is a real limit, and
/// builds.
#[tokio::test]
async fn a_limit_beyond_a_semaphores_range_is_no_limit() {
    use tokio::sync::{Barrier, Semaphore};
    for limit in [
        usize::MAX,
        Semaphore::MAX_PERMITS,
        Semaphore::MAX_PERMITS - 1,
    ] {
        let wg = WaitGroup::builder().limit(limit).build();
        // Three tasks that can only finish once all three run at once.
        let all = std::sync::Arc::new(Barrier::new(3));
        for _ in 0..2 {
            let all = all.clone();
            wg.go(move |_| async move {
                all.wait().await;
            });
        }
        let last = all.clone();
        wg.try_go(move |_| async move {
            last.wait().await;
        })
        .unwrap_or_else(|e| panic!("limit {limit}: {e}"));
        let guard = wg
            .task()
            .try_add_in_limit()
            .unwrap_or_else(|e| panic!("limit {limit}: {e}"));
        assert_eq!(wg.len(), 4, "limit {limit}");
        drop(guard);
        tokio::time::timeout(Duration::from_secs(30), wg.wait())
            .await
            .unwrap_or_else(|_| panic!("limit {limit}: the tasks did not run at once"))
            .unwrap();
    }
}

/// Any time limit of thirty years or more is none, as `Duration::MAX` is:
/// `timeout(Duration::from_secs(u64::MAX))` panicked outside a runtime (it
/// made a deadline, and its timer), and inside one its tasks read a deadline
/// thirty years away; so did the tasks of a shutdown without a time limit.
#[test]
fn every_time_limit_beyond_thirty_years_is_none() {
    let far = [
        Duration::MAX,
        Duration::from_secs(u64::MAX),
        Duration::from_secs(100 * 365 * 24 * 3600),
    ];
    for timeout in far {
        // Outside a runtime: a group without a deadline needs none.
        let _ = WaitGroup::builder().timeout(timeout).build();
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for timeout in far {
            let wg = WaitGroup::builder().timeout(timeout).build();
            let (tx, rx) = tokio::sync::oneshot::channel();
            wg.go(|ctx| async move {
                let before = ctx.deadline();
                ctx.cancelled().await;
                let _ = tx.send((before, ctx.deadline()));
            });
            let report = wg.shutdown(timeout).await;
            assert!(report.is_clean(), "{report}");
            let (before, during) = rx.await.unwrap();
            assert_eq!(before, None, "{timeout:?}: the group's deadline");
            assert_eq!(during, None, "{timeout:?}: the shutdown's deadline");
        }
    });
}
