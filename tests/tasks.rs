//! `go()` tasks: errors and panics are kept with the task's identity.

use std::error::Error as _;
use std::time::Duration;

use taskgroup::{WaitError, WaitGroup};
use tokio::sync::oneshot;

mod common {
    pub(crate) mod display_panics;
}
use common::display_panics::DisplayPanics;

#[tokio::test]
async fn every_error_is_reported_in_completion_order() {
    let wg = WaitGroup::builder().name("workers").build();
    // Each task waits for its turn, so completion order is 3, 1, 2.
    let (tx1, rx1) = oneshot::channel::<()>();
    let (tx2, rx2) = oneshot::channel::<()>();
    let (tx3, rx3) = oneshot::channel::<()>();
    wg.task().name("one").go(move |_| async move {
        rx1.await.unwrap();
        tx2.send(()).unwrap();
        Err::<(), _>("first error")
    });
    wg.task().name("two").go(move |_| async move {
        rx2.await.unwrap();
        Err::<(), _>(std::io::Error::other("second error"))
    });
    wg.task().name("three").go(move |_| async move {
        rx3.await.unwrap();
        tx1.send(()).unwrap();
        Err::<(), _>("third error".to_string())
    });
    wg.go(|_| async { Ok::<_, std::io::Error>(()) });
    tx3.send(()).unwrap();

    let err = wg.wait().await.unwrap_err();
    let WaitError::Failed { errors } = &err else {
        panic!("expected Failed, got {err:?}");
    };
    let names: Vec<_> = errors.iter().map(|e| e.name().unwrap()).collect();
    assert_eq!(names, ["three", "one", "two"]);
    assert_eq!(errors.first().unwrap().id().as_u64(), 3);
    assert!(errors
        .iter()
        .all(|e| e.group_name() == Some("workers") && !e.is_panic()));
    let text = err.to_string();
    assert!(
        text.starts_with(
            "3 tasks failed; 1) task \"three\" #3 in group \"workers\" failed: third error"
        ),
        "{text}"
    );
    assert!(
        text.contains("2) task \"one\" #1 in group \"workers\" failed: first error"),
        "{text}"
    );
    assert!(
        text.contains("3) task \"two\" #2 in group \"workers\" failed: second error"),
        "{text}"
    );

    // Waiting again returns the same failures.
    let again = wg.wait().await.unwrap_err();
    assert_eq!(again.to_string(), text);
}

#[derive(Debug, thiserror::Error)]
#[error("connecting failed")]
struct Connect(#[source] std::io::Error);

#[tokio::test]
async fn error_values_and_source_chains_are_kept() {
    let wg = WaitGroup::new();
    wg.go(|_| async { Err::<(), _>(Connect(std::io::Error::other("refused"))) });
    let err = wg.wait().await.unwrap_err();
    let failure = err.errors().first().unwrap();
    let inner = failure.error().unwrap();
    assert!(inner.downcast_ref::<Connect>().is_some());
    // Display includes the task's error; source() continues below it.
    assert!(failure.to_string().ends_with("failed: connecting failed"));
    assert_eq!(failure.source().unwrap().to_string(), "refused");
    assert_eq!(err.source().unwrap().to_string(), "refused");
}

#[tokio::test]
async fn a_panic_becomes_an_error_with_the_tasks_identity() {
    let wg = WaitGroup::builder().name("svc").build();
    let id = wg
        .task()
        .name("boom")
        .go(|_| async {
            panic!("kaput {}", 42);
            #[allow(unreachable_code)]
            Ok::<_, std::io::Error>(())
        })
        .id();
    wg.task().name("static").go(|_| async {
        std::panic::panic_any(7_u8);
        #[allow(unreachable_code)]
        Ok::<_, std::io::Error>(())
    });
    let err = wg.wait().await.unwrap_err();
    let errors: Vec<_> = err.errors().iter().collect();
    assert_eq!(errors.len(), 2);
    let boom = errors.iter().find(|e| e.name() == Some("boom")).unwrap();
    assert!(boom.is_panic());
    assert_eq!(boom.id(), id);
    assert_eq!(boom.panic_message(), Some("kaput 42"));
    assert!(boom.error().is_none());
    assert_eq!(
        boom.to_string(),
        format!("task \"boom\" {id} in group \"svc\" panicked: kaput 42")
    );
    let other = errors.iter().find(|e| e.name() == Some("static")).unwrap();
    // A payload that is not a string has no message; `Display` says what the
    // standard library says.
    assert!(other.is_panic());
    assert_eq!(other.panic_message(), None);
    assert!(
        other.to_string().ends_with("panicked: Box<dyn Any>"),
        "{other}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_on_a_multi_thread_runtime_never_reach_the_waiter() {
    let wg = WaitGroup::new();
    for i in 0..100 {
        wg.go(move |_| async move {
            if i % 10 == 0 {
                panic!("task {i}");
            }
            Ok::<_, std::io::Error>(())
        });
    }
    let err = wg.wait().await.unwrap_err();
    assert_eq!(err.errors().len(), 10);
    assert!(err.errors().iter().all(|e| e.is_panic()));
}

struct PanicOnDrop;
impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("panicked in drop");
    }
}

#[tokio::test(start_paused = true)]
async fn a_panic_while_an_aborted_task_is_dropped_is_recorded() {
    let wg = WaitGroup::new();
    let (started_tx, started_rx) = oneshot::channel();
    wg.task().name("dropper").go(|_| async move {
        let _bomb = PanicOnDrop;
        started_tx.send(()).unwrap();
        std::future::pending::<()>().await;
        Ok::<_, std::io::Error>(())
    });
    started_rx.await.unwrap();
    let report = wg.shutdown(Duration::from_secs(1)).await;
    assert_eq!(report.aborted().len(), 1);
    assert!(report.pending().is_empty());
    let error = report.errors().first().expect("the drop panic is recorded");
    assert!(error.is_panic());
    assert_eq!(error.panic_message(), Some("panicked in drop"));
    assert!(
        error.to_string().contains("panicked while being dropped"),
        "{error}"
    );
}

#[tokio::test]
async fn tasks_receive_the_group_context() {
    let wg = WaitGroup::new();
    let (tx, rx) = oneshot::channel();
    wg.go(move |ctx| async move {
        tx.send(()).unwrap();
        ctx.cancelled().await;
        Ok::<_, std::io::Error>(())
    });
    rx.await.unwrap();
    assert_eq!(wg.len(), 1);
    wg.cancel();
    wg.wait().await.unwrap();
}

#[test]
fn go_outside_a_runtime_panics_with_a_clear_message() {
    let wg = WaitGroup::new();
    let panic = std::panic::catch_unwind(|| {
        wg.go(|_| async { Ok::<_, std::io::Error>(()) });
    })
    .unwrap_err();
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(
        message.contains("WaitGroup::go must be called from within a Tokio runtime"),
        "{message}"
    );
    // Nothing was registered.
    assert!(wg.is_empty());
}

#[tokio::test]
async fn a_panic_while_building_the_future_leaves_nothing_registered() {
    let wg = WaitGroup::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wg.go(|_| -> std::future::Ready<Result<(), std::io::Error>> { panic!("no future") });
    }));
    assert!(result.is_err());
    assert!(wg.is_empty());
    assert!(wg.pending().is_empty());
    wg.wait().await.unwrap();
}

#[tokio::test]
async fn an_error_whose_display_panics_is_kept_without_formatting_it() {
    let wg = WaitGroup::builder().cancel_on_error(true).build();
    wg.task()
        .name("bad-display")
        .go(|_| async { Err::<(), _>(DisplayPanics) });
    let err = wg.wait().await.unwrap_err();
    let failure = err.errors().first().unwrap();
    assert_eq!(failure.name(), Some("bad-display"));
    assert!(failure.error().unwrap().is::<DisplayPanics>());
    assert!(wg.is_cancelled());
}

/// Sends, when dropped, what a blocking wait on its group returns then.
struct WaitOnDrop {
    wg: WaitGroup,
    tx: std::sync::mpsc::Sender<Result<(), WaitError>>,
}

impl Drop for WaitOnDrop {
    fn drop(&mut self) {
        let _ = self.tx.send(self.wg.wait_blocking_timeout(Duration::ZERO));
    }
}

/// A task is marked as its group's while its future is dropped by an abort,
/// as while it is polled, and the mark is gone once the task is done.
#[tokio::test]
async fn an_aborted_task_is_still_its_groups_while_its_future_drops() {
    let wg = WaitGroup::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let (started_tx, started_rx) = oneshot::channel();
    let on_drop = WaitOnDrop { wg: wg.clone(), tx };
    wg.go(move |_| async move {
        let _on_drop = on_drop;
        started_tx.send(()).unwrap();
        std::future::pending::<()>().await;
        Ok::<_, std::io::Error>(())
    });
    started_rx.await.unwrap();
    let report = wg.shutdown(Duration::ZERO).await;
    assert_eq!(report.aborted().len(), 1);
    match rx.recv().unwrap() {
        Err(WaitError::WaitFromOwnTask { group }) => assert_eq!(group, wg.id()),
        other => panic!("expected WaitFromOwnTask, got {other:?}"),
    }
    // This thread ran the task and dropped it; it is not marked any more.
    wg.wait().await.unwrap();
}

/// `first()` and `first_error()` are the first failure recorded in any group,
/// not the first listed (the list goes group by group): a child's failure,
/// then its parent's, gives the child's (found by a doc audit, `probe-docs`
/// `b4`).
#[tokio::test]
async fn the_first_failure_is_the_first_recorded_in_any_group() {
    let parent = WaitGroup::builder().name("parent").build();
    let child = parent.task().name("child").child();
    let root_cause = child
        .task()
        .name("child-task")
        .go(|_| async { Err::<(), _>("root cause") });
    assert!(root_cause.await.is_err());
    let later = parent
        .task()
        .name("parent-task")
        .go(|_| async { Err::<(), _>("later") });
    assert!(later.await.is_err());
    let err = parent.wait().await.unwrap_err();
    let errors = err.errors();
    let listed: Vec<_> = errors.iter().map(|e| e.name().unwrap()).collect();
    assert_eq!(listed, ["parent-task", "child-task"], "group by group");
    assert_eq!(errors.first().unwrap().name(), Some("child-task"));
    assert_eq!(errors.first_error().unwrap().to_string(), "root cause");
    drop(child);
}

/// A task whose body never returns (an accept loop, a ticker, a `panic!`)
/// is written as for `tokio::spawn`: its output is `!`. It did not compile
/// (``the trait bound `!: TaskOutput` is not satisfied``, or in this
/// edition-2021 crate, "this function depends on never type fallback being
/// `()`").
#[tokio::test]
async fn tasks_that_never_return_are_written_as_for_tokio_spawn() {
    let wg = WaitGroup::builder().name("server").build();
    let (ticked_tx, ticked) = oneshot::channel();
    wg.task().name("ticker").go(|_ctx| async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        let mut ticked_tx = Some(ticked_tx);
        loop {
            tick.tick().await;
            if let Some(tx) = ticked_tx.take() {
                let _ = tx.send(());
            }
        }
    });
    let failing = wg
        .task()
        .name("boom")
        .go(|_ctx| async move { panic!("boom") });
    let (stop_tx, stop) = std::sync::mpsc::channel::<()>();
    wg.task().name("blocked").spawn_blocking(move |_ctx| {
        stop.recv().unwrap();
        panic!("told to stop")
    });
    ticked.await.unwrap();
    let err = failing.await.expect_err("a task that panics");
    assert!(err.to_string().contains("boom"), "{err}");
    let report = wg.shutdown(Duration::ZERO).await;
    // The ticker is aborted; the blocking task cannot be, and is pending.
    let aborted: Vec<_> = report.aborted().iter().map(|t| t.name()).collect();
    assert_eq!(aborted, [Some("ticker")], "{report}");
    assert_eq!(report.pending().len(), 1, "{report}");
    stop_tx.send(()).unwrap();
    let err = wg.wait().await.expect_err("the panics are kept");
    assert_eq!(err.errors().total(), 2, "{err}");
}
