//! Cancellation: contexts, caller tokens, children, errgroup semantics.

use taskgroup::WaitGroup;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn cancel_on_error_cancels_siblings_and_children_and_keeps_the_cause() {
    let wg = WaitGroup::builder()
        .name("errgroup")
        .cancel_on_error(true)
        .build();
    let child = wg.task().name("child").child();
    let linked = WaitGroup::builder().name("linked").build();
    wg.link(&linked).unwrap();

    let (ready_tx, ready_rx) = oneshot::channel::<()>();
    wg.task().name("sibling").go(|ctx| async move {
        ctx.cancelled().await;
        Ok::<_, std::io::Error>(())
    });
    child.task().name("in-child").go(|ctx| async move {
        ctx.cancelled().await;
        Ok::<_, std::io::Error>(())
    });
    linked.task().name("in-linked").go(|ctx| async move {
        ctx.cancelled().await;
        Ok::<_, std::io::Error>(())
    });
    wg.task().name("failer").go(|_| async move {
        ready_rx.await.unwrap();
        Err::<(), _>("it broke")
    });
    assert!(!wg.is_cancelled());
    ready_tx.send(()).unwrap();

    let err = wg.wait().await.unwrap_err();
    assert!(wg.is_cancelled() && child.is_cancelled() && linked.is_cancelled());
    // Only the real failure is reported: the siblings returned Ok on cancel.
    assert_eq!(err.errors().len(), 1);
    let cause = wg.cancel_cause().expect("a failure cancelled the group");
    assert_eq!(cause.name(), Some("failer"));
    assert_eq!(
        cause.to_string(),
        "task \"failer\" #2 in group \"errgroup\" failed: it broke"
    );
}

#[tokio::test]
async fn a_panic_also_cancels_with_cancel_on_error() {
    let wg = WaitGroup::builder().cancel_on_error(true).build();
    wg.go(|ctx| async move {
        ctx.cancelled().await;
        Ok::<_, std::io::Error>(())
    });
    wg.go(|_| async {
        panic!("boom");
        #[allow(unreachable_code)]
        Ok::<_, std::io::Error>(())
    });
    let err = wg.wait().await.unwrap_err();
    assert!(wg.cancel_cause().unwrap().is_panic());
    assert_eq!(err.errors().len(), 1);
}

/// A group with `cancel_on_error`, kept for a server's whole life: after
/// each run's failure, shutdown and reopen, the next run's first failure
/// cancels the group and its children again, and is that run's cause.
/// Before, the cause was set once for the group's life: from the second run
/// on a failure cancelled nothing (its siblings ran on), and
/// `cancel_cause()` named the first run's failure.
#[tokio::test]
async fn cancel_on_error_cancels_again_in_every_run_after_a_reopen() {
    let wg = WaitGroup::builder()
        .name("server")
        .cancel_on_error(true)
        .build();
    let conns = wg.child();
    for run in 0..3 {
        let (sibling_tx, sibling_rx) = oneshot::channel();
        conns.go(move |ctx| async move {
            ctx.cancelled().await;
            sibling_tx.send(ctx.cancel_reason()).unwrap();
        });
        let name = format!("failer {run}");
        wg.task()
            .name(name.clone())
            .go(|_| async move { Err::<(), _>("it broke") });
        let reason = tokio::time::timeout(std::time::Duration::from_secs(10), sibling_rx)
            .await
            .unwrap_or_else(|_| panic!("run {run}: the failure did not cancel the child"))
            .unwrap();
        match reason {
            Some(taskgroup::CancelReason::Failure(cause)) => {
                assert_eq!(cause.name(), Some(name.as_str()), "run {run}");
            }
            other => panic!("run {run}: {other:?}"),
        }
        assert_eq!(wg.cancel_cause().unwrap().name(), Some(name.as_str()));
        let err = wg.wait().await.unwrap_err();
        assert_eq!(err.errors().primary().count(), 1, "run {run}: {err}");
        let report = wg.shutdown(std::time::Duration::from_secs(1)).await;
        assert!(report.aborted().is_empty(), "run {run}: {report}");
        wg.take_errors();
        wg.reopen();
        conns.reopen();
        assert!(!wg.is_cancelled() && !conns.is_cancelled(), "run {run}");
        assert!(
            wg.cancel_cause().is_none(),
            "run {run}: reopened, not cancelled"
        );
    }
}

/// A failure with `cancel_on_error` in a group cancelled already (here by
/// `cancel_with`) is secondary and did not cancel it: it is not the
/// `cancel_cause()`, and the reason stays the first one. Before, it was
/// made the cause, a secondary failure named as what cancelled the group.
#[tokio::test]
async fn a_failure_after_a_cancel_is_not_the_cancel_cause() {
    let wg = WaitGroup::builder().cancel_on_error(true).build();
    wg.cancel_with("operator");
    wg.go(|_| async { Err::<(), _>("late failure") });
    let err = wg.wait().await.unwrap_err();
    assert_eq!(err.errors().secondary().count(), 1, "{err}");
    assert!(wg.cancel_cause().is_none(), "{:?}", wg.cancel_cause());
    assert!(matches!(
        wg.cancel_reason(),
        Some(taskgroup::CancelReason::Requested(Some(why))) if why == "operator"
    ));
}

#[tokio::test]
async fn without_cancel_on_error_a_failure_cancels_nothing() {
    let wg = WaitGroup::new();
    wg.go(|_| async { Err::<(), _>("no") });
    assert!(wg.wait().await.is_err());
    assert!(!wg.is_cancelled());
    assert!(wg.cancel_cause().is_none());
}

#[tokio::test]
async fn the_callers_token_cancels_the_group_but_not_the_other_way() {
    let process = CancellationToken::new();
    let wg = WaitGroup::builder().token(process.clone()).build();
    let child = wg.child();
    wg.cancel();
    assert!(
        !process.is_cancelled(),
        "cancelling the group must not cancel the caller's token"
    );

    let wg = WaitGroup::builder().token(process.clone()).build();
    let child2 = wg.child();
    wg.go(|ctx| async move {
        ctx.cancelled().await;
        Ok::<_, std::io::Error>(())
    });
    process.cancel();
    assert!(wg.is_cancelled() && child2.is_cancelled());
    wg.cancelled().await;
    wg.wait().await.unwrap();
    drop(child);
}

#[test]
fn cancelling_a_child_does_not_cancel_the_parent() {
    let parent = WaitGroup::new();
    let child = parent.child();
    let grandchild = child.child();
    child.cancel();
    assert!(child.is_cancelled() && grandchild.is_cancelled());
    assert!(!parent.is_cancelled());
    assert!(!parent.context().is_cancelled());
}

#[test]
fn cancelling_the_parent_cancels_children_created_before_and_after() {
    let parent = WaitGroup::new();
    let before = parent.child();
    parent.cancel();
    let after = parent.child();
    assert!(before.is_cancelled() && after.is_cancelled());
}

#[test]
fn the_context_is_the_token_tasks_get() {
    let wg = WaitGroup::new();
    let ctx = wg.context();
    ctx.cancel();
    assert!(wg.is_cancelled());
}

/// `context()` is the token of the group's own tasks: cancelling it reaches
/// them, not the groups below (`cancel()` does).
#[tokio::test]
async fn cancelling_the_context_reaches_the_groups_own_tasks_only() {
    let wg = WaitGroup::new();
    let child = wg.child();
    let (tx, rx) = oneshot::channel();
    wg.go(move |ctx| async move {
        ctx.cancelled().await;
        tx.send(()).unwrap();
    });
    wg.context().cancel();
    rx.await.unwrap();
    assert!(wg.is_cancelled());
    assert!(!child.is_cancelled());
    wg.cancel();
    assert!(child.is_cancelled());
}

/// Reasons compare: a task can `assert_eq!` the one it reads. A failure
/// equals itself as shared down the tree, not another failure with the same
/// text. (`CancelReason` had no `PartialEq`: `probe-api`.)
#[tokio::test]
async fn cancel_reasons_compare_by_kind_and_a_failure_by_identity() {
    use taskgroup::CancelReason;
    let wg = WaitGroup::builder().cancel_on_error(true).build();
    let child = wg.child();
    wg.task()
        .critical(true)
        .go(|_| async { Err::<(), _>("boom") });
    wg.cancelled().await;
    let parent = wg.cancel_reason().expect("cancelled by the failure");
    assert_eq!(child.cancel_reason(), Some(parent.clone()));
    let other = WaitGroup::builder().cancel_on_error(true).build();
    other.go(|_| async { Err::<(), _>("boom") });
    other.cancelled().await;
    // Another failure with the same message.
    assert_ne!(other.cancel_reason(), Some(parent));

    let requested = WaitGroup::new();
    requested.cancel_with("config reloaded");
    assert_eq!(
        requested.cancel_reason(),
        Some(CancelReason::Requested(Some("config reloaded".into())))
    );
    assert_ne!(requested.cancel_reason(), Some(CancelReason::Shutdown));
    let stopped = WaitGroup::new();
    let _ = stopped.shutdown(std::time::Duration::ZERO).await;
    assert_eq!(stopped.cancel_reason(), Some(CancelReason::Shutdown));
}
