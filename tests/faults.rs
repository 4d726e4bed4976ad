//! Injected faults that the other test files do not already cover (see
//! docs/RELIABILITY.md for the full list and where each lives): a guard
//! leaked with `mem::forget`, `spawn_blocking` work that cannot be aborted, an
//! error whose `Display` panics reaching a shutdown report, a panic in `Drop`
//! of a future that completed normally, and a thread that panics while
//! holding a guard.

use std::time::Duration;

use taskgroup::{TaskKind, WaitGroup};
use tokio::sync::oneshot;

mod common {
    pub(crate) mod display_panics;
}
use common::display_panics::DisplayPanics;

/// A leaked guard (as with `mem::forget`) keeps its group busy forever; every
/// deadline-bounded wait names it, with its creation site, and returns at the
/// deadline instead of hanging: async wait, shutdown, and blocking wait, in
/// the group itself and through a link.
#[tokio::test(start_paused = true)]
async fn a_guard_leaked_with_mem_forget_is_named_with_its_site_at_the_deadline() {
    let server = WaitGroup::builder().name("server").build();
    let pool = server.task().name("pool").child();
    // Leaked the way `mem::forget` leaks (`forget(x)` is `ManuallyDrop::new(x)`:
    // the guard's `Drop` never runs), but kept in hand so the end of the test
    // can release it: Miri's leak checker then stays on for everything else.
    let line = line!() + 1;
    let guard = std::mem::ManuallyDrop::new(pool.task().name("leaked-conn").add());

    let check = |report: &taskgroup::PendingReport| {
        let leaked: Vec<_> = report.tasks().collect();
        assert_eq!(leaked.len(), 1, "{report}");
        let info = leaked[0];
        assert_eq!(info.name(), Some("leaked-conn"));
        assert_eq!(info.kind(), TaskKind::Guard);
        assert_eq!(info.group_name(), Some("pool"));
        assert_eq!((info.site().file(), info.site().line()), (file!(), line));
        assert!(report.to_string().contains("leaked-conn"), "{report}");
    };

    let err = server
        .wait_timeout(Duration::from_secs(5))
        .await
        .unwrap_err();
    check(err.pending().expect("a timeout report"));

    let start = tokio::time::Instant::now();
    let report = server.shutdown(Duration::from_secs(5)).await;
    // A guard cannot be aborted: the shutdown waits out the grace period
    // (paused time: exactly), then reports it.
    assert!(start.elapsed() <= Duration::from_secs(5) + Duration::from_secs(1));
    assert!(report.aborted().is_empty(), "{report}");
    check(report.pending());

    // A blocking wait from a plain thread, on the same leaked guard.
    let blocking = std::thread::spawn(move || {
        server
            .wait_blocking_timeout(Duration::from_millis(50))
            .unwrap_err()
    })
    .join()
    .unwrap();
    check(blocking.pending().expect("a timeout report"));
    assert_eq!(
        pool.len(),
        1,
        "still leaked: the count is never lost either"
    );
    drop(std::mem::ManuallyDrop::into_inner(guard));
    assert!(pool.is_empty());
}

/// Work moved into `spawn_blocking` cannot be aborted. The async task awaiting
/// it is aborted at the deadline (and reported as aborted); the guard the
/// blocking closure holds is reported as still pending, by name; shutdown
/// returns within grace + abort timeout + a generous bound; and once the
/// blocking work ends, the group becomes idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_blocking_work_that_cannot_be_aborted_is_reported_as_still_running() {
    let wg = WaitGroup::builder()
        .name("io")
        .abort_timeout(Duration::from_millis(100))
        .build();
    let (started_tx, started_rx) = oneshot::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let guard = wg.task().name("blocking-read").add();
    wg.task().name("reader").go(move |_ctx| async move {
        // Ignores cancellation: it waits for the blocking read.
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            started_tx.send(()).unwrap();
            release_rx.recv().unwrap();
        })
        .await
        .map_err(std::io::Error::other)
    });
    started_rx.await.unwrap();

    let report = wg.shutdown(Duration::from_millis(100)).await;
    assert!(
        report.elapsed() < Duration::from_secs(10),
        "{:?}",
        report.elapsed()
    );
    let aborted: Vec<_> = report.aborted().iter().map(|t| t.name()).collect();
    assert_eq!(aborted, [Some("reader")], "{report}");
    let pending: Vec<_> = report
        .pending()
        .tasks()
        .map(|t| (t.name(), t.kind()))
        .collect();
    assert_eq!(
        pending,
        [(Some("blocking-read"), TaskKind::Guard)],
        "{report}"
    );
    assert!(
        report.errors().is_empty(),
        "an abort is not a failure: {report}"
    );

    release_tx.send(()).unwrap();
    wg.wait_timeout(Duration::from_secs(30)).await.unwrap();
}

/// An error whose `Display` panics (tests/tasks.rs covers `wait`) also passes
/// through a shutdown and a blocking wait: the crate never formats a task's
/// error itself. (Formatting the report, or the error, is the caller's call,
/// and does run the error's `Display`.)
#[tokio::test(start_paused = true)]
async fn an_error_whose_display_panics_survives_shutdown_and_reports() {
    let wg = WaitGroup::new();
    wg.task().name("bad-display").go(|ctx| async move {
        ctx.cancelled().await;
        Err::<(), _>(DisplayPanics)
    });
    tokio::task::yield_now().await;
    let report = wg.shutdown(Duration::from_secs(1)).await;
    assert_eq!(report.finished(), 1);
    assert_eq!(report.errors().len(), 1);
    let failure = report.errors().first().unwrap();
    assert_eq!(failure.name(), Some("bad-display"));
    assert!(failure.error().unwrap().is::<DisplayPanics>());
    let wg2 = wg.clone();
    let err = std::thread::spawn(move || wg2.wait_blocking().unwrap_err())
        .join()
        .unwrap();
    assert_eq!(err.errors().len(), 1);
}

struct PanicOnDrop;
impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("panicked in drop after Ok");
    }
}

/// A future that completes `Ok` and then panics while being dropped: the panic
/// is recorded (tests/tasks.rs covers the aborted case), and the group still
/// becomes idle.
#[tokio::test]
async fn a_panic_in_drop_after_completing_ok_is_recorded() {
    let wg = WaitGroup::new();
    wg.task().name("drop-bomb").go(|_| {
        let bomb = PanicOnDrop;
        async move {
            let _bomb = bomb;
            Ok::<_, std::io::Error>(())
        }
    });
    let err = wg.wait_timeout(Duration::from_secs(30)).await.unwrap_err();
    let failure = err.errors().first().unwrap();
    assert_eq!(failure.name(), Some("drop-bomb"));
    assert!(failure.is_panic());
    assert_eq!(failure.panic_message(), Some("panicked in drop after Ok"));
    assert!(wg.is_empty());
}

/// A thread that panics while holding a guard completes it while unwinding:
/// the wait returns rather than hanging on a dead thread's work.
#[test]
fn a_thread_panicking_with_a_guard_completes_it() {
    let wg = WaitGroup::new();
    let guard = wg.task().name("doomed").add();
    let thread = std::thread::spawn(move || {
        let _guard = guard;
        panic!("worker died");
    });
    assert!(thread.join().is_err());
    wg.wait_blocking_timeout(Duration::from_secs(30)).unwrap();
    assert!(wg.is_empty());
}
