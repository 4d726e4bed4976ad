//! `ShutdownPlan::run_on_signal` with real signals (issue 14): the first
//! SIGTERM runs the plan, a second signal forces. Each scenario runs in a
//! child process (this test binary re-executed with a filter and an
//! environment variable) that sends the signals to itself with `kill`, so no
//! signal reaches the main test process.
#![cfg(unix)]

use std::process::Output;
use std::time::Duration;

use futures::FutureExt as _;
use taskgroup::shutdown::{Grace, Phase, Readiness, ShutdownPlan, Signal, SignalError};
use taskgroup::WaitGroup;

mod common {
    pub(crate) mod child;
}
use common::child::{is_child, kill_self, run_child, runtime};

fn stdout(out: &Output) -> String {
    format!(
        "{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A server with a task that stops on cancel (and says why) and one that
/// ignores everything, ready until the plan says otherwise; each phase of the
/// plan is printed as it begins (`CHILD phase NotReady`), and the readiness
/// once the plan ended (`CHILD ready at the end: false`).
async fn scenario(second: Option<&'static str>) -> Result<taskgroup::ShutdownReport, SignalError> {
    let wg = WaitGroup::builder().name("server").build();
    wg.task().name("polite").go(|ctx| async move {
        ctx.cancelled().await;
        println!("CHILD polite stopped: {:?}", ctx.cancel_reason());
    });
    wg.task()
        .name("stubborn")
        .go(|_ctx| std::future::pending::<()>());
    let (tx, mut draining) = tokio::sync::mpsc::unbounded_channel();
    let readiness = Readiness::new();
    readiness.set_ready();
    let plan = ShutdownPlan::new(
        Grace::drain(Duration::from_secs(60)).then_cancel(Duration::from_secs(60)),
    )
    .readiness(readiness.clone())
    .on_phase(move |phase| {
        let name = format!("{phase:?}");
        println!(
            "CHILD phase {}",
            name.split([' ', '{']).next().unwrap_or("")
        );
        if let Phase::Draining { .. } = phase {
            let _ = tx.send(());
        }
    });
    let run = plan.run_on_signal(&wg);
    tokio::pin!(run);
    // The first poll installs the handlers: from then on a signal is caught.
    assert!((&mut run).now_or_never().is_none());
    kill_self("-TERM");
    if second == Some("-INT now") {
        // Both before the runtime looks: seen in one wake-up.
        kill_self("-INT");
        let result = run.await;
        println!("CHILD ready at the end: {}", readiness.is_ready());
        return result;
    }
    if let Some(second) = second {
        tokio::select! {
            _ = &mut run => panic!("the plan ended during a 60 s drain"),
            _ = draining.recv() => {}
        }
        kill_self(second);
    }
    run.await
}

/// Runs [`scenario`] with `second` on a real-time runtime: the plan must be
/// forced, well before its 60 s grace.
fn forced(second: &'static str) -> SignalError {
    let started = std::time::Instant::now();
    let result = runtime().block_on(scenario(Some(second)));
    let Err(err) = result else {
        panic!("not forced: {result:?}");
    };
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "forced at once, not after the grace"
    );
    err
}

#[test]
fn a_second_signal_forces_the_plan() {
    let out = run_child("child_forced");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(130), "{text}");
    assert!(
        text.contains("CHILD forced by [Terminate, Interrupt]"),
        "{text}"
    );
    assert!(
        text.contains("CHILD aborted: [Some(\"polite\"), Some(\"stubborn\")]")
            || text.contains("CHILD aborted: [Some(\"stubborn\")]"),
        "{text}"
    );
    assert!(
        text.contains("shutdown forced by a second signal (SIGINT)"),
        "{text}"
    );
}

#[test]
fn child_forced() {
    if !is_child("child_forced") {
        return;
    }
    let err = forced("-INT");
    if let SignalError::Forced { signals, report } = &err {
        println!("CHILD forced by {signals:?}");
        let mut names: Vec<_> = report.aborted().iter().map(|t| t.name()).collect();
        names.sort_unstable();
        println!("CHILD aborted: {names:?}");
        assert!(report.pending().is_empty(), "{report}");
        assert_eq!(signals, &[Signal::Terminate, Signal::Interrupt]);
    }
    println!("{err}");
    std::process::exit(err.exit_code());
}

#[test]
fn one_signal_runs_the_plan_gracefully() {
    let out = run_child("child_graceful");
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("CHILD polite stopped: Some(Signal(Terminate))"),
        "{text}"
    );
    assert!(
        text.contains("CHILD aborted: [Some(\"stubborn\")]"),
        "{text}"
    );
}

#[test]
fn child_graceful() {
    if !is_child("child_graceful") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let report = runtime.block_on(scenario(None)).expect("graceful");
    let names: Vec<_> = report.aborted().iter().map(|t| t.name()).collect();
    println!("CHILD aborted: {names:?}");
}

#[test]
fn two_signals_seen_at_once_force() {
    let out = run_child("child_forced_at_once");
    let text = stdout(&out);
    // Within one wake-up the order of two kinds is not known (see
    // `shutdown::signals`): the forcing one is either.
    assert!(matches!(out.status.code(), Some(130 | 143)), "{text}");
    assert!(text.contains("CHILD forced at once by 2 signals"), "{text}");
    // Not ready first, as in any stop (readiness fails, systemd hears
    // `STOPPING=1`): the forced stop used to skip it, and left the server
    // ready.
    let phases: Vec<&str> = text
        .lines()
        .filter_map(|line| line.split("CHILD phase ").nth(1))
        .collect();
    assert_eq!(phases.first(), Some(&"NotReady"), "{text}");
    assert!(phases.contains(&"Forced"), "{text}");
    assert!(text.contains("CHILD ready at the end: false"), "{text}");
}

#[test]
fn child_forced_at_once() {
    if !is_child("child_forced_at_once") {
        return;
    }
    let err = forced("-INT now");
    if let SignalError::Forced { signals, .. } = &err {
        println!("CHILD forced at once by {} signals", signals.len());
    }
    std::process::exit(err.exit_code());
}

/// Runs `plan` on `wg` on signals: SIGTERM, then, once `under_way` resolves
/// (the graceful stop has come where the scenario wants it), `second`.
/// Returns the forced stop's error, having printed its report's aborted
/// tasks, finished count and pending count (`CHILD aborted: [..]`, ...), and
/// the time since the first signal. Panics if the plan ends before the second
/// signal, or the forced stop is not back within 60 s.
async fn force_during(
    plan: &ShutdownPlan,
    wg: &WaitGroup,
    under_way: impl std::future::Future<Output = ()>,
    second: &str,
) -> (SignalError, Duration) {
    let run = plan.run_on_signal(wg);
    tokio::pin!(run);
    assert!((&mut run).now_or_never().is_none());
    let first = std::time::Instant::now();
    kill_self("-TERM");
    tokio::select! {
        result = &mut run => panic!("the plan ended before the second signal: {result:?}"),
        () = under_way => {}
    }
    kill_self(second);
    let err = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the forced stop returns")
        .expect_err("forced");
    let SignalError::Forced { report, .. } = &err else {
        panic!("{err}");
    };
    let names: Vec<_> = report.aborted().iter().map(|t| t.name()).collect();
    println!("CHILD aborted: {names:?}");
    println!("CHILD finished: {}", report.finished());
    println!("CHILD pending: {}", report.pending().len());
    (err, first.elapsed())
}

/// A group "server" (60 s abort timeout) with a task `polite` that ends on
/// cancel and a task `stubborn` that ignores it; the receiver resolves when a
/// stop has aborted `stubborn`.
fn server_with_a_stubborn_task() -> (WaitGroup, tokio::sync::oneshot::Receiver<()>) {
    let wg = WaitGroup::builder()
        .name("server")
        .abort_timeout(Duration::from_secs(60))
        .build();
    wg.task().name("polite").go(|ctx| async move {
        ctx.cancelled().await;
    });
    let (aborted_tx, aborted) = tokio::sync::oneshot::channel::<()>();
    wg.task().name("stubborn").go(|_ctx| async move {
        // Dropped when a stop aborts the task: says so.
        let _tell = aborted_tx;
        std::future::pending::<()>().await
    });
    (wg, aborted)
}

/// [`force_during`] with a plan of a 50 ms cancel phase; prints whether the
/// report timed the whole stop (`CHILD whole stop timed: true`) and the
/// error, and returns it.
async fn force_after_the_deadline(
    wg: &WaitGroup,
    under_way: impl std::future::Future<Output = ()>,
) -> SignalError {
    let plan =
        ShutdownPlan::new(Grace::drain(Duration::ZERO).then_cancel(Duration::from_millis(50)));
    let (err, since_first) = force_during(&plan, wg, under_way, "-TERM").await;
    let SignalError::Forced { report, .. } = &err else {
        unreachable!()
    };
    println!(
        "CHILD whole stop timed: {}",
        report.elapsed() >= Duration::from_millis(50) && report.elapsed() <= since_first
    );
    println!("{err}");
    err
}

#[test]
fn a_forced_report_covers_the_whole_stop() {
    let out = run_child("child_forced_late");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(143), "{text}");
    // The graceful stop aborted `stubborn` at its deadline; the forced one,
    // `flusher` in its shielded section. The forced stop's report used to
    // list `flusher` alone: `stubborn`, aborted, was in no report.
    assert!(
        text.contains("CHILD aborted: [Some(\"stubborn\"), Some(\"flusher\")]"),
        "{text}"
    );
    // `polite` ended on the first signal's cancel: finished, as the
    // graceful stop counts it.
    assert!(text.contains("CHILD finished: 1"), "{text}");
    assert!(text.contains("CHILD pending: 0"), "{text}");
    assert!(text.contains("CHILD whole stop timed: true"), "{text}");
}

#[test]
fn child_forced_late() {
    if !is_child("child_forced_late") {
        return;
    }
    let err = runtime().block_on(async {
        let (wg, aborted) = server_with_a_stubborn_task();
        let (shielded_tx, shielded) = tokio::sync::oneshot::channel();
        wg.task().name("flusher").go(|ctx| async move {
            ctx.cancelled().await;
            ctx.shielded(Duration::from_secs(60), async move {
                let _ = shielded_tx.send(());
                std::future::pending::<()>().await
            })
            .await;
        });
        // The graceful stop under way: `flusher` in its section (which the
        // graceful stop waits for, up to the 60 s abort timeout) and
        // `stubborn` aborted at the 50 ms deadline.
        let under_way = async {
            let _ = shielded.await;
            let _ = aborted.await;
        };
        force_after_the_deadline(&wg, under_way).await
    });
    std::process::exit(err.exit_code());
}

#[test]
fn a_forced_report_covers_a_graceful_stop_given_up_on() {
    let out = run_child("child_forced_during_a_late_group");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(143), "{text}");
    // The graceful stop, still giving `pool` its time to stop by itself when
    // the forced one ended, is given up on; what it did is reported all the
    // same. The report was the forced stop's alone: `stubborn`, which the
    // graceful stop aborted, was in none, and `polite` was not counted.
    assert!(
        text.contains("CHILD aborted: [Some(\"stubborn\")]"),
        "{text}"
    );
    assert!(text.contains("CHILD finished: 1"), "{text}");
    assert!(text.contains("CHILD pending: 1"), "{text}");
    assert!(text.contains("CHILD whole stop timed: true"), "{text}");
}

/// The graceful stop aborts `stubborn` at its 50 ms deadline and `polite`
/// ends on the first signal; `pool`, a group linked below, is then reached
/// late, and given three quarters of the 60 s abort timeout to stop by
/// itself, which its guard `lease` never lets it: the second signal comes
/// then, and the forced stop is back long before the graceful one.
#[test]
fn child_forced_during_a_late_group() {
    if !is_child("child_forced_during_a_late_group") {
        return;
    }
    let err = runtime().block_on(async {
        let (wg, aborted) = server_with_a_stubborn_task();
        let pool = wg.task().name("pool").child();
        let _lease = pool.task().name("lease").add();
        let under_way = async {
            let _ = aborted.await;
        };
        force_after_the_deadline(&wg, under_way).await
    });
    std::process::exit(err.exit_code());
}

#[test]
fn a_second_signal_does_not_wait_for_a_guard() {
    let out = run_child("child_forced_with_a_guard");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(130), "{text}");
    assert!(
        text.contains("CHILD aborted: [Some(\"stubborn\")]"),
        "{text}"
    );
    assert!(text.contains("CHILD pending: 1"), "{text}");
}

/// A guard held for good (no abort ends it) and no limit on the abort
/// timeout: the forced stop lists the guard as pending and returns. It did
/// not return (the graceful stop, run beside it to merge the reports, waited
/// for the guard, and was given up to the abort timeout): `probe-today`.
#[test]
fn child_forced_with_a_guard() {
    if !is_child("child_forced_with_a_guard") {
        return;
    }
    let err = runtime().block_on(async {
        let wg = WaitGroup::builder()
            .name("server")
            .abort_timeout(Duration::MAX)
            .build();
        let _lease = wg.task().name("lease").add();
        wg.task()
            .name("stubborn")
            .go(|_ctx| std::future::pending::<()>());
        let (tx, mut draining) = tokio::sync::mpsc::unbounded_channel();
        let plan =
            ShutdownPlan::new(Grace::drain(Duration::from_secs(600))).on_phase(move |phase| {
                if let Phase::Draining { .. } = phase {
                    let _ = tx.send(());
                }
            });
        let under_way = async {
            draining.recv().await;
        };
        force_during(&plan, &wg, under_way, "-INT").await.0
    });
    std::process::exit(err.exit_code());
}

#[test]
fn a_failure_under_cancel_on_error_runs_the_plan_without_a_signal() {
    let out = run_child("child_failure_runs_the_plan");
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("CHILD polite stopped: true"), "{text}");
    assert!(
        text.contains(
            "CHILD failed: [\"task \\\"db\\\" #2 in group \\\"server\\\" failed: db lost\"]"
        ),
        "{text}"
    );
    assert!(text.contains("CHILD aborted: 0, pending: 0"), "{text}");
}

/// A task's failure cancels its `cancel_on_error` group: the plan, waiting
/// for a signal, runs on that cancel (it waited for a signal alone, and a
/// program whose part failed ran on until someone sent one: a user probe
/// porting tokio-graceful-shutdown's nested-error example).
#[test]
fn child_failure_runs_the_plan() {
    if !is_child("child_failure_runs_the_plan") {
        return;
    }
    let report = runtime().block_on(async {
        let wg = WaitGroup::builder()
            .name("server")
            .cancel_on_error(true)
            .build();
        let polite = wg.task().name("polite").go(|ctx| async move {
            ctx.cancelled().await;
        });
        wg.task().name("db").go(|_ctx| async move {
            tokio::task::yield_now().await;
            Err::<(), _>("db lost")
        });
        let plan = ShutdownPlan::new(
            Grace::drain(Duration::from_secs(60)).then_cancel(Duration::from_secs(60)),
        );
        let report = tokio::time::timeout(Duration::from_secs(30), plan.run_on_signal(&wg))
            .await
            .expect("the plan runs on the failure's cancel, not on a signal")
            .expect("graceful");
        println!("CHILD polite stopped: {}", polite.is_finished());
        report
    });
    let failed: Vec<_> = report.errors().iter().map(|e| e.to_string()).collect();
    println!("CHILD failed: {failed:?}");
    println!(
        "CHILD aborted: {}, pending: {}",
        report.aborted().len(),
        report.pending().len()
    );
}

#[test]
fn a_signal_during_a_stop_a_cancel_began_is_the_first() {
    let out = run_child("child_cancel_then_signals");
    let text = stdout(&out);
    assert_eq!(
        text.matches("CHILD phase ").count(),
        4,
        "NotReady, Draining, Forced, Done: {text}"
    );
    assert!(text.contains("CHILD forced by 2 signals"), "{text}");
    assert!(
        text.contains("CHILD aborted: [Some(\"stubborn\")]"),
        "{text}"
    );
    assert!(matches!(out.status.code(), Some(130 | 143)), "{text}");
}

/// `cancel()` (an admin endpoint's stop) runs the plan; a SIGTERM during it
/// is the first signal, so the stop goes on (still running 300 ms after it,
/// in a 60 s drain), and a SIGINT after it forces.
#[test]
fn child_cancel_then_signals() {
    if !is_child("child_cancel_then_signals") {
        return;
    }
    let err = runtime().block_on(async {
        let (wg, _aborted) = server_with_a_stubborn_task();
        let (tx, mut draining) = tokio::sync::mpsc::unbounded_channel();
        let plan =
            ShutdownPlan::new(Grace::drain(Duration::from_secs(60))).on_phase(move |phase| {
                let name = format!("{phase:?}");
                println!(
                    "CHILD phase {}",
                    name.split([' ', '{']).next().unwrap_or("")
                );
                if let Phase::Draining { .. } = phase {
                    let _ = tx.send(());
                }
            });
        let run = plan.run_on_signal(&wg);
        tokio::pin!(run);
        assert!((&mut run).now_or_never().is_none());
        wg.cancel();
        tokio::select! {
            result = &mut run => panic!("the plan ended in a 60 s drain: {result:?}"),
            drained = tokio::time::timeout(Duration::from_secs(30), draining.recv()) => {
                drained.expect("the plan runs on the group's cancel");
            }
        }
        kill_self("-TERM");
        // Not a synchronisation: a window in which a first signal that
        // forced would end the plan (its stubborn task aborted at once).
        tokio::select! {
            result = &mut run => panic!("the first signal forced: {result:?}"),
            () = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
        kill_self("-INT");
        tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("the forced stop returns")
            .expect_err("forced")
    });
    if let SignalError::Forced { signals, report } = &err {
        println!("CHILD forced by {} signals", signals.len());
        let names: Vec<_> = report.aborted().iter().map(|t| t.name()).collect();
        println!("CHILD aborted: {names:?}");
    }
    std::process::exit(err.exit_code());
}

#[test]
fn a_tasks_own_cancel_does_not_run_the_plan() {
    let out = run_child("child_ctx_cancel");
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("CHILD plan ran after cancel(): true"),
        "{text}"
    );
}

/// A task's `ctx.cancel()` cancels its siblings, not the program: the plan
/// waits on (it ran the whole stop on it: a reviewer's probe); the group's
/// `cancel()` then runs it.
#[test]
fn child_ctx_cancel() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    if !is_child("child_ctx_cancel") {
        return;
    }
    runtime().block_on(async {
        let wg = WaitGroup::builder().name("server").build();
        let sibling = wg.task().name("sibling").go(|ctx| async move {
            ctx.cancelled().await;
        });
        let stopper = wg.task().name("stopper").go(|ctx| async move {
            ctx.cancel();
        });
        let asked = Arc::new(AtomicBool::new(false));
        let seen = asked.clone();
        let plan = ShutdownPlan::new(Duration::from_secs(5)).on_phase(move |phase| {
            if let Phase::NotReady = phase {
                assert!(
                    seen.load(Ordering::SeqCst),
                    "the plan ran on a task's ctx.cancel()"
                );
            }
        });
        let run = plan.run_on_signal(&wg);
        tokio::pin!(run);
        assert!((&mut run).now_or_never().is_none());
        stopper.await.unwrap();
        sibling.await.unwrap();
        // Polled once with the context cancelled: a plan that took it for a
        // stop would begin (its first phase) in this poll.
        assert!((&mut run).now_or_never().is_none());
        asked.store(true, Ordering::SeqCst);
        wg.cancel();
        let report = tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .expect("the plan runs on cancel()")
            .expect("graceful");
        println!("CHILD plan ran after cancel(): {}", report.is_clean());
    });
}
