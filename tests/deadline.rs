//! Deadline-bounded waits: the pending report, no leaks, bad deadlines.

use std::time::Duration;

use taskgroup::{TaskKind, WaitError, WaitGroup};
use tokio::sync::oneshot;
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn the_report_names_pending_work_of_the_parent_and_linked_groups() {
    let server = WaitGroup::builder().name("server").build();
    let db = server.task().name("db").child();
    let _listener = server.task().name("listener").add();
    let conn = server.task().name("conn-7").go(|_| async {
        std::future::pending::<()>().await;
        Ok::<_, std::io::Error>(())
    });
    tokio::time::advance(Duration::from_secs(2)).await;
    let _pool = db.task().name("pool").add();
    server
        .task()
        .name("fails")
        .go(|_| async { Err::<(), _>("early failure") });
    tokio::task::yield_now().await;

    let started = Instant::now();
    let err = server
        .wait_timeout(Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    let WaitError::TimedOut { pending, errors } = &err else {
        panic!("expected a timeout, got {err:?}");
    };
    assert_eq!(errors.len(), 1, "failures before the deadline are kept");
    assert_eq!(pending.len(), 3);
    let tasks: Vec<_> = pending.tasks().collect();
    assert_eq!(
        tasks
            .iter()
            .map(|t| (t.group_name().unwrap(), t.name().unwrap(), t.kind()))
            .collect::<Vec<_>>(),
        [
            ("server", "listener", TaskKind::Guard),
            ("server", "conn-7", TaskKind::Task),
            ("db", "pool", TaskKind::Guard)
        ]
    );
    assert_eq!(tasks[1].id(), conn.id());
    assert_eq!(tasks[0].age(), Duration::from_secs(3));
    assert_eq!(tasks[2].age(), Duration::from_secs(1));
    assert!(tasks.iter().all(|t| t.site().file() == file!()));
    let text = err.to_string();
    assert!(text.starts_with("timed out: 3 pending; task \"listener\" #1 in group \"server\" (guard, created at tests/deadline.rs:"), "{text}");
    assert!(text.contains("and task \"fails\""), "{text}");
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_wait_leaves_nothing_running_and_records_nothing() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let wg = WaitGroup::new();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    wg.go(|_| async move {
        release_rx.await.unwrap();
        Ok::<_, std::io::Error>(())
    });
    let alive_before = metrics.num_alive_tasks();
    assert_eq!(alive_before, 1);
    for _ in 0..10 {
        assert!(wg
            .wait_timeout(Duration::from_millis(10))
            .await
            .unwrap_err()
            .is_timeout());
    }
    assert_eq!(
        metrics.num_alive_tasks(),
        alive_before,
        "no helper task left behind"
    );
    assert!(wg.errors().is_empty(), "a timeout is not a task failure");
    release_tx.send(()).unwrap();
    wg.wait().await.unwrap();
    // The waiter registered by the timed-out waits is gone; this one completes.
    assert_eq!(metrics.num_alive_tasks(), 0);
}

#[tokio::test(start_paused = true)]
async fn zero_and_past_deadlines_check_without_waiting() {
    let wg = WaitGroup::new();
    assert!(wg.wait_timeout(Duration::ZERO).await.is_ok());
    let guard = wg.add();
    let start = Instant::now();
    assert!(wg
        .wait_timeout(Duration::ZERO)
        .await
        .unwrap_err()
        .is_timeout());
    let past = Instant::now() - Duration::from_secs(5);
    assert!(wg.wait_deadline(past).await.unwrap_err().is_timeout());
    assert_eq!(start.elapsed(), Duration::ZERO);
    drop(guard);
    assert!(wg.wait_deadline(past).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_huge_timeout_does_not_overflow() {
    let wg = WaitGroup::new();
    let guard = wg.add();
    let wg2 = wg.clone();
    let waiter = tokio::spawn(async move { wg2.wait_timeout(Duration::MAX).await });
    tokio::task::yield_now().await;
    drop(guard);
    assert!(waiter.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn work_finishing_before_the_deadline_returns_when_it_finishes() {
    let wg = WaitGroup::new();
    wg.go(|_| async {
        tokio::time::sleep(Duration::from_millis(999)).await;
        Ok::<_, std::io::Error>(())
    });
    let start = Instant::now();
    assert!(wg.wait_timeout(Duration::from_secs(1)).await.is_ok());
    assert_eq!(start.elapsed(), Duration::from_millis(999));
}

#[tokio::test]
async fn waiting_from_inside_an_own_task_is_an_error_not_a_hang() {
    let parent = WaitGroup::new();
    let child = parent.child();
    let (tx, rx) = oneshot::channel();
    let (p, c) = (parent.clone(), child.clone());
    child.go(move |_| async move {
        let own = c.wait().await;
        let parents = p.wait_timeout(Duration::from_secs(60)).await;
        let blocking = p.wait_blocking();
        tx.send((own, parents, blocking)).unwrap();
        Ok::<_, std::io::Error>(())
    });
    let (own, parents, blocking) = rx.await.unwrap();
    for result in [own, parents, blocking] {
        match result {
            Err(WaitError::WaitFromOwnTask { group }) => assert_eq!(group, child.id()),
            other => panic!("expected WaitFromOwnTask, got {other:?}"),
        }
    }
    // A task may still wait for an unrelated group.
    let other = WaitGroup::new();
    let (tx, rx) = oneshot::channel();
    parent.go(move |_| async move {
        tx.send(other.wait().await.is_ok()).unwrap();
        Ok::<_, std::io::Error>(())
    });
    assert!(rx.await.unwrap());
    parent.wait().await.unwrap();
}
