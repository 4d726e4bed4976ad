//! Reports as errors (issue 14, point 6): `ShutdownReport::into_result`, the
//! error's `Debug` (what `main` prints), and the source chains of
//! `TaskErrors` and `ShutdownError` as anyhow/eyre walk them.

use std::error::Error;
use std::time::Duration;

use taskgroup::{ShutdownError, TaskErrors, WaitGroup};

#[derive(Debug, thiserror::Error)]
#[error("query failed")]
struct Query {
    #[source]
    cause: Io,
}

#[derive(Debug, thiserror::Error)]
#[error("connection reset")]
struct Io;

/// Every message of an error's chain, as anyhow's `{:#}` / eyre print it.
fn chain(err: &(dyn Error + 'static)) -> Vec<String> {
    let mut out = vec![err.to_string()];
    let mut next = err.source();
    while let Some(e) = next {
        out.push(e.to_string());
        next = e.source();
    }
    out
}

async fn failures(n: usize) -> TaskErrors {
    let wg = WaitGroup::builder().name("db").build();
    for i in 0..n {
        wg.task()
            .name(format!("q{i}"))
            .go(|_| async { Err::<(), _>(Query { cause: Io }) });
    }
    wg.wait().await.unwrap_err().errors().clone()
}

#[tokio::test(start_paused = true)]
async fn a_clean_shutdown_is_ok() {
    let wg = WaitGroup::builder().name("app").build();
    wg.task()
        .name("polite")
        .go(|ctx| async move { ctx.cancelled().await });
    assert!(wg
        .shutdown(Duration::from_secs(1))
        .await
        .into_result()
        .is_ok());
}

#[tokio::test(start_paused = true)]
async fn an_aborted_task_is_an_error_whose_debug_is_the_report() {
    let wg = WaitGroup::builder().name("app").build();
    wg.task().name("stuck").go(|_| std::future::pending::<()>());
    let report = wg.shutdown(Duration::from_secs(2)).await;
    let lines = report.to_string();
    let err: ShutdownError = report.into_result().unwrap_err();
    assert_eq!(err.report().aborted().len(), 1);

    // What `fn main() -> Result<(), ShutdownError>` prints after "Error: ".
    assert_eq!(format!("{err:?}"), lines);
    assert_eq!(format!("{err}"), lines);
    let first = lines.lines().next().unwrap();
    assert!(
        first.starts_with("shutdown took 2.0s") && first.ends_with("1 aborted, 0 still pending"),
        "{first}"
    );
    assert!(
        lines.contains("\n  aborted: task \"stuck\" #1 in group \"app\""),
        "{lines}"
    );
    assert!(!format!("{err:?}").contains("\\n"), "no escaped newlines");

    // And through `fn main() -> Result<(), Box<dyn Error>>`, the usual shape.
    let boxed: Box<dyn Error + Send + Sync> = Box::new(err);
    assert_eq!(format!("{boxed:?}"), lines);
    assert!(boxed.source().is_none(), "nothing failed: no cause");
}

#[tokio::test(start_paused = true)]
async fn a_pending_guard_and_a_failure_each_make_it_unclean() {
    let wg = WaitGroup::builder().name("app").build();
    let guard = wg.task().name("held").add();
    let err = wg
        .shutdown(Duration::from_millis(10))
        .await
        .into_result()
        .unwrap_err();
    assert_eq!(err.report().pending().len(), 1);
    assert!(
        err.to_string().contains("pending: task \"held\" #1"),
        "{err}"
    );
    drop(guard);

    // A failure long before the shutdown still counts: nobody looked at it.
    let wg = WaitGroup::builder().name("app").build();
    wg.go(|_| async { Err::<(), _>("early") });
    wg.wait().await.unwrap_err();
    let err = wg
        .shutdown(Duration::from_secs(1))
        .await
        .into_result()
        .unwrap_err();
    assert_eq!(err.report().errors().len(), 1);
    // Once taken (handled), it no longer does.
    let wg = WaitGroup::new();
    wg.go(|_| async { Err::<(), _>("early") });
    wg.wait().await.unwrap_err();
    assert_eq!(wg.take_errors().len(), 1);
    assert!(wg
        .shutdown(Duration::from_secs(1))
        .await
        .into_result()
        .is_ok());
}

#[tokio::test]
async fn one_failure_keeps_its_cause_in_the_chain() {
    let errors = failures(1).await;
    assert_eq!(
        chain(&errors),
        [
            "task \"q0\" #1 in group \"db\" failed: query failed",
            "connection reset"
        ]
    );
}

#[tokio::test]
async fn several_failures_have_no_source() {
    let errors = failures(3).await;
    assert_eq!(errors.len(), 3);
    assert!(errors.source().is_none());
    let chain = chain(&errors);
    assert_eq!(chain.len(), 1, "{chain:?}");
    assert!(
        chain[0].starts_with("3 tasks failed; 1) task \"q"),
        "{chain:?}"
    );
    // Each failure still has its own chain.
    for error in &errors {
        assert_eq!(
            error.source().map(ToString::to_string).as_deref(),
            Some("connection reset")
        );
    }
}

#[tokio::test]
async fn a_dropped_failure_counts_as_another() {
    let wg = WaitGroup::builder().name("db").max_errors(1).build();
    for _ in 0..2 {
        wg.go(|_| async { Err::<(), _>(Query { cause: Io }) });
    }
    let errors = wg.wait().await.unwrap_err().errors().clone();
    assert_eq!((errors.len(), errors.dropped()), (1, 1));
    assert!(errors.source().is_none(), "two failed, one kept: no cause");
}

/// With `max_errors(0)` failures are counted, not kept; the message says
/// how many, once. It read "1 tasks failed; and 1 more failure" before, and
/// the shutdown report "1 failed" then "and 1 more failure".
#[tokio::test(start_paused = true)]
async fn failures_counted_but_not_kept_are_told_once() {
    for (n, expected) in [
        (1, "1 task failed (none kept: see `max_errors`)"),
        (3, "3 tasks failed (none kept: see `max_errors`)"),
    ] {
        let wg = WaitGroup::builder().max_errors(0).build();
        for _ in 0..n {
            wg.go(|_| async { Err::<(), _>(Query { cause: Io }) });
        }
        let err = wg.wait().await.unwrap_err();
        assert_eq!((err.errors().len(), err.errors().dropped()), (0, n));
        assert_eq!(err.to_string(), expected);
        // The shutdown report says it the same way, once.
        let report = wg.shutdown(Duration::from_secs(1)).await;
        let s = if n == 1 { "" } else { "s" };
        assert!(
            report
                .to_string()
                .ends_with(&format!("\n  {n} failure{s} not kept (see `max_errors`)")),
            "{report}"
        );
        assert!(!report.to_string().contains("more failure"), "{report}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_shutdown_error_chain_follows_the_failures() {
    for (n, expected) in [(1, Some("connection reset")), (2, None)] {
        let wg = WaitGroup::builder().name("db").build();
        for _ in 0..n {
            wg.go(|_| async { Err::<(), _>(Query { cause: Io }) });
        }
        wg.wait().await.unwrap_err();
        let err = wg
            .shutdown(Duration::from_secs(1))
            .await
            .into_result()
            .unwrap_err();
        assert_eq!(
            err.source().map(ToString::to_string).as_deref(),
            expected,
            "{n} failures"
        );
        assert_eq!(format!("{err:?}").matches("\n  failed: ").count(), n);
    }
}
