//! SignalService with real signals. Each scenario runs in a child process (this test binary,
//! re-executed with a filter for one `child_*` test and an environment variable), which sends
//! SIGTERM to itself, so no signal ever reaches the main test process. Without the variable
//! the `child_*` tests do nothing.
#![cfg(unix)]

use std::process::Output;
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};
use taskgroup::service::{service_fn, Ready, Service, ServiceError, ServiceGroup, SignalService};
use taskgroup::shutdown::Signal;
use taskgroup::BoxError;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod common {
    pub(crate) mod child;
}
use common::child::{is_child, kill_self, run_child, runtime};

fn check(out: &Output, expected: &[&str]) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    for line in expected {
        assert!(
            stdout.contains(line),
            "missing {line:?} in:\n{stdout}\n{stderr}"
        );
    }
}

#[test]
fn sigterm_stops_the_service_gracefully() {
    let out = run_child("child_graceful");
    check(&out, &["CHILD graceful stop ran", "CHILD result: ok"]);
}

#[test]
fn child_graceful() {
    if !is_child("child_graceful") {
        return;
    }
    runtime().block_on(async {
        let api = service_fn("api", |ctx: CancellationToken, ready: Ready| async move {
            ready.ready();
            ctx.cancelled().await;
            println!("CHILD graceful stop ran");
            Ok(())
        });
        let group = ServiceGroup::builder("app").service(api).build().unwrap();
        let mut app = SignalService::new(group);
        let (ready, when_ready) = Ready::channel();
        let run = tokio::spawn(app.run(CancellationToken::new(), ready));
        assert!(when_ready.await);
        kill_self("-TERM");
        match tokio::time::timeout(Duration::from_secs(10), run).await {
            Ok(Ok(Ok(()))) => println!("CHILD result: ok"),
            other => println!("CHILD result: {other:?}"),
        }
    });
}

#[test]
fn second_sigterm_forces_the_stop() {
    let out = run_child("child_forced");
    check(
        &out,
        &[
            "CHILD first signal: stopping",
            "CHILD forced: app: forced stop: SIGTERM then SIGTERM",
            "CHILD stuck service dropped",
        ],
    );
}

struct OnDrop(mpsc::UnboundedSender<()>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// Runs `stuck` as the only service of a group `app` with an hour to stop (so that only a
/// forced stop ends it within the tests' bounds), under a `SignalService`, on a task;
/// returns the task once the service is ready.
async fn run_stuck(stuck: impl Service) -> JoinHandle<Result<(), BoxError>> {
    let group = ServiceGroup::builder("app")
        .service(stuck)
        .stop_timeout(Duration::from_secs(3600))
        .build()
        .unwrap();
    let mut app = SignalService::new(group);
    let (ready, when_ready) = Ready::channel();
    let run = tokio::spawn(app.run(CancellationToken::new(), ready));
    assert!(when_ready.await);
    run
}

#[test]
fn child_forced() {
    if !is_child("child_forced") {
        return;
    }
    runtime().block_on(async {
        let (cancelled_tx, mut cancelled) = mpsc::unbounded_channel();
        let (dropped_tx, mut dropped) = mpsc::unbounded_channel();
        // Ignores its stop: only a forced stop (abort) ends it.
        let stuck = service_fn("stuck", move |ctx: CancellationToken, ready: Ready| {
            let cancelled_tx = cancelled_tx.clone();
            let guard = OnDrop(dropped_tx.clone());
            async move {
                let _guard = guard;
                ready.ready();
                ctx.cancelled().await;
                let _ = cancelled_tx.send(());
                std::future::pending::<()>().await;
                Ok(())
            }
        });
        let run = run_stuck(stuck).await;
        kill_self("-TERM");
        cancelled.recv().await.unwrap();
        println!("CHILD first signal: stopping");
        kill_self("-TERM");
        let res = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("forced stop in time")
            .unwrap();
        let err = res.unwrap_err().downcast::<ServiceError>().unwrap();
        assert!(matches!(
            *err,
            ServiceError::Forced {
                signal: Signal::Terminate,
                ..
            }
        ));
        println!("CHILD forced: {err}");
        tokio::time::timeout(Duration::from_secs(10), dropped.recv())
            .await
            .expect("aborted in time");
        println!("CHILD stuck service dropped");
    });
}

/// A SIGINT and a SIGTERM that both arrive before the runtime polls (its only thread busy)
/// are two signals: the stop is forced, and the error names both. Before issue 13 the error
/// said "forced stop on a second SIGTERM signal" (or SIGINT, whichever stream the `select!`
/// polled last): the SIGINT was lost from the report. (Within one wake-up the true order is
/// not known; they are listed SIGINT first, which is the order sent here.)
#[test]
fn sigint_then_sigterm_before_a_poll_force_the_stop() {
    let out = run_child("child_busy");
    check(
        &out,
        &[
            "CHILD forced: app: forced stop: SIGINT then SIGTERM",
            "CHILD stuck service dropped",
        ],
    );
}

/// Two SIGTERMs sent back to back while the runtime's only thread is busy are two signals,
/// not one notification: the stop is forced. Before issue 13, tokio's stream coalesced them
/// and only a graceful stop started, so a stuck member kept the process up for its whole
/// stop timeout (an hour here: the test's 10 s bound would fail).
///
/// Raised in the runtime's thread (see [`busy`]). Sent with `kill`, only one was seen once
/// in 93 runs of this file here (in a loop running every test binary two at a time; none in
/// 80 runs beside two CPU hogs): the kernel merges a standard signal sent while the same one
/// is still pending, before a thread of the process took it, and no handler can count that.
#[test]
fn two_sigterms_before_a_poll_force_the_stop() {
    let out = run_child("child_busy_terms");
    check(
        &out,
        &[
            "CHILD forced: app: forced stop: SIGTERM then SIGTERM",
            "CHILD stuck service dropped",
        ],
    );
}

#[test]
fn child_busy() {
    if is_child("child_busy") {
        busy(&[SIGINT, SIGTERM]);
    }
}

#[test]
fn child_busy_terms() {
    if is_child("child_busy_terms") {
        busy(&[SIGTERM, SIGTERM]);
    }
}

/// Runs a stuck service under a `SignalService` and raises `signals` in the runtime's only
/// thread, without yielding in between. A signal raised in a thread is handled by it before
/// `raise` returns, so the two are two deliveries (two `kill`s one after the other can be
/// one: the kernel merges a standard signal sent while the same one is still pending), and
/// both are in before the runtime polls again.
fn busy(signals: &[i32]) {
    runtime().block_on(async {
        let (dropped_tx, mut dropped) = mpsc::unbounded_channel();
        let stuck = service_fn("stuck", move |_ctx, ready: Ready| {
            let guard = OnDrop(dropped_tx.clone());
            async move {
                let _guard = guard;
                ready.ready();
                std::future::pending::<()>().await;
                Ok(())
            }
        });
        let run = run_stuck(stuck).await;
        // Sent from the runtime's only thread, without yielding: all are delivered before
        // the signal handlers' sockets are polled again.
        for &signal in signals {
            signal_hook::low_level::raise(signal).unwrap();
        }
        let res = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("forced stop in time")
            .unwrap();
        let err = res.unwrap_err().downcast::<ServiceError>().unwrap();
        println!("CHILD forced: {err}");
        tokio::time::timeout(Duration::from_secs(10), dropped.recv())
            .await
            .expect("aborted in time");
        println!("CHILD stuck service dropped");
    });
}
