//! Blocking waits, for synchronous code outside any runtime.

use std::time::Duration;

use taskgroup::WaitGroup;

#[test]
fn wait_blocking_from_a_plain_thread() {
    let wg = WaitGroup::new();
    let child = wg.child();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let guard = wg.add();
    let in_child = child.add();
    let worker = std::thread::spawn(move || {
        rx.recv().unwrap();
        drop(guard);
        drop(in_child);
    });
    let waiter = {
        let wg = wg.clone();
        std::thread::spawn(move || wg.wait_blocking())
    };
    tx.send(()).unwrap();
    assert!(waiter.join().unwrap().is_ok());
    worker.join().unwrap();
}

#[test]
fn wait_blocking_timeout_reports_what_is_pending() {
    let wg = WaitGroup::builder().name("sync").build();
    let _guard = wg.task().name("held").add();
    let err = wg
        .wait_blocking_timeout(Duration::from_millis(20))
        .unwrap_err();
    let names: Vec<_> = err.pending().unwrap().tasks().map(|t| t.name()).collect();
    assert_eq!(names, [Some("held")]);
    assert!(wg
        .wait_blocking_timeout(Duration::ZERO)
        .unwrap_err()
        .is_timeout());
}

#[test]
fn wait_blocking_returns_task_failures() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let wg = WaitGroup::new();
    rt.block_on(async {
        wg.go(|_| async { Err::<(), _>("failed") });
    });
    let err = wg
        .wait_blocking_timeout(Duration::from_secs(10))
        .unwrap_err();
    assert_eq!(err.errors().len(), 1);
}

/// A `Drop` impl that waits for the work it owns.
struct Flusher {
    wg: WaitGroup,
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.wg.wait_blocking().unwrap();
    }
}

#[test]
fn wait_blocking_in_drop() {
    let wg = WaitGroup::new();
    let guard = wg.add();
    let flusher = Flusher { wg: wg.clone() };
    let t = std::thread::spawn(move || guard.done());
    drop(flusher);
    t.join().unwrap();
    assert!(wg.is_empty());
}

#[test]
fn many_blocking_and_async_waiters_all_wake() {
    let wg = WaitGroup::new();
    let guard = wg.add();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let async_waiters: Vec<_> = (0..8)
        .map(|_| {
            let wg = wg.clone();
            rt.spawn(async move { wg.wait().await })
        })
        .collect();
    let blocking_waiters: Vec<_> = (0..8)
        .map(|_| {
            let wg = wg.clone();
            std::thread::spawn(move || wg.wait_blocking())
        })
        .collect();
    drop(guard);
    for w in blocking_waiters {
        assert!(w.join().unwrap().is_ok());
    }
    rt.block_on(async {
        for w in async_waiters {
            assert!(w.await.unwrap().is_ok());
        }
    });
}
