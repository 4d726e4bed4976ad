//! The `tracing` feature: a span per task, events for the lifecycle.
#![cfg(feature = "tracing")]

use std::time::Duration;

use taskgroup::{WaitError, WaitGroup};

mod common {
    pub(crate) mod capture;
    pub(crate) mod display_panics;
}
use common::capture::Capture;
use common::display_panics::DisplayPanics;

/// Every event at debug and above, as text, on this thread while the guard
/// lives.
fn capture_debug() -> (Capture, tracing::subscriber::DefaultGuard) {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .without_time()
        .with_writer(capture.clone())
        .finish();
    (capture, tracing::subscriber::set_default(subscriber))
}

#[tokio::test(start_paused = true)]
async fn tasks_run_in_spans_and_the_lifecycle_emits_events() {
    let (capture, _default) = capture_debug();

    let wg = WaitGroup::builder().name("svc").build();
    {
        // Spawned from inside another span (an accept loop's): the task's
        // span is a root of its own, not nested under it.
        let accept = tracing::info_span!("accept");
        let _entered = accept.enter();
        wg.task().name("worker").go(|_| async {
            tracing::info!("inside the task");
            Err::<(), _>("it broke")
        });
    }
    let _held = wg.task().name("held").add();
    tokio::task::yield_now().await;
    assert!(wg.wait_timeout(Duration::from_millis(10)).await.is_err());
    wg.task().name("stuck").go(|_| async {
        std::future::pending::<()>().await;
        Ok::<_, std::io::Error>(())
    });
    wg.cancel_with("test over");
    let report = wg.shutdown(Duration::from_millis(10)).await;
    assert_eq!(report.aborted().len(), 1);

    let text = capture.text();
    let id = wg.id().as_u64();
    let expect = [
        format!("task{{group=\"svc\" group.id={id} task.name=\"worker\" task.id=1}}: tracing: inside the task"),
        "task \"worker\" #1 in group \"svc\" failed: it broke".to_owned(),
        "wait timed out: 1 pending; task \"held\" #2".to_owned(),
        format!("group cancelled group=\"svc\" group.id={id} reason=cancelled: test over"),
        "group closed".to_owned(),
        format!("shutdown done, not clean group=\"svc\" group.id={id} finished=0 failed=1 aborted=1 pending=1 elapsed_ms=10"),
        "aborted: task \"stuck\" #3".to_owned(),
        "still pending: task \"held\" #2".to_owned(),
        "failed: task \"worker\" #1".to_owned(),
    ];
    for line in &expect {
        assert!(text.contains(line.as_str()), "missing {line:?} in:\n{text}");
    }
    assert!(
        !text.contains("accept:task"),
        "a task's span nested under its spawner's:\n{text}"
    );
}

/// With a subscriber that formats events, an error whose `Display` panics is
/// still kept and still cancels the group before the log line is attempted.
#[tokio::test]
async fn an_error_whose_display_panics_is_kept_and_cancels_when_traced() {
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(std::io::sink)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    let wg = WaitGroup::builder().cancel_on_error(true).build();
    wg.task()
        .name("bad-display")
        .go(|_| async { Err::<(), _>(DisplayPanics) });
    let err = wg.wait().await.unwrap_err();
    assert_eq!(err.errors().len(), 1);
    assert_eq!(err.errors().first().unwrap().name(), Some("bad-display"));
    assert!(wg.is_cancelled());
    // The thread is not left marked as running the group's task (it was when
    // the log line unwound the task's poll), or this wait is refused.
    let again = wg.wait().await.unwrap_err();
    assert!(matches!(again, WaitError::Failed { .. }), "{again:?}");
}

/// With every event on (debug), nothing the crate logs formats a user's error
/// unguarded: a shutdown of a group whose failure's `Display` panics returns
/// its report, and the log lines say the `Display` panicked. Before, the
/// shutdown's "failed:" line resumed the panic in the caller and the report
/// was lost (found by a hostile probe, `probe-obs` `trace bad shutdown debug`).
#[tokio::test]
async fn a_failure_whose_display_panics_is_logged_as_such_and_the_shutdown_returns() {
    let (capture, _default) = capture_debug();
    let wg = WaitGroup::builder()
        .name("svc")
        .cancel_on_error(true)
        .build();
    let failing = wg
        .task()
        .name("bad-display")
        .go(|_| async { Err::<(), _>(DisplayPanics) });
    assert!(failing.await.is_err());
    assert!(wg.is_cancelled());
    let report = wg.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.errors().total(), 1);
    assert_eq!(report.errors().first().unwrap().name(), Some("bad-display"));

    let text = capture.text();
    let failure = "task \"bad-display\" #1 in group \"svc\" failed: <the error's Display panicked>";
    let id = wg.id().as_u64();
    let expect = [
        format!("{failure} group=\"svc\" group.id={id} task.name=\"bad-display\""),
        format!("group cancelled by a task failure group=\"svc\" group.id={id} cause={failure}"),
        format!("failed: {failure}"),
    ];
    for line in &expect {
        assert!(text.contains(line.as_str()), "missing {line:?} in:\n{text}");
    }
}

/// A shutdown logs each group it cancels, with the reason, as `cancel()`
/// does (before, only `cancel()`, a failure and a deadline did: found by a
/// hostile probe, `probe-obs` `cancelev`); a group already cancelled is not
/// logged again.
#[tokio::test]
async fn a_shutdown_logs_each_group_it_cancels() {
    let (capture, _default) = capture_debug();
    let root = WaitGroup::builder().name("root").build();
    let child = root.task().name("child").child();
    let done = root.task().name("done").child();
    done.cancel_with("earlier");
    let report = root.shutdown(Duration::from_secs(5)).await;
    assert!(report.is_clean(), "{report}");

    let text = capture.text();
    let line = |group: &WaitGroup| {
        let (name, id) = (group.name().unwrap(), group.id().as_u64());
        format!("group cancelled group=\"{name}\" group.id={id} reason=shutting down")
    };
    for group in [&root, &child] {
        assert!(
            text.contains(&line(group)),
            "missing {:?} in:\n{text}",
            line(group)
        );
    }
    assert!(!text.contains(&line(&done)), "logged twice:\n{text}");
    assert_eq!(text.matches("group cancelled").count(), 3, "{text}");
}
