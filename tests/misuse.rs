//! Misuse that must fail loudly or just work (issue #11, F): `wait_blocking`
//! called from async code on a current-thread runtime panics at once, naming
//! itself, instead of blocking the only thread forever; called from
//! `spawn_blocking`, or from a worker of a multi-thread runtime (even one with
//! a single worker), it works; and `try_go`/`try_add` on a closed group refuse
//! without needing a runtime.
//!
//! A call that would hang runs on a thread of its own, watched: the test
//! fails after [`LIMIT`] instead of hanging (the hung thread is left behind).
//!
//! On the code before issue #11, `wait_blocking` hangs inside a current-thread
//! runtime and on a multi-thread runtime's worker when the work is completed
//! by a task queued behind the blocked worker, and `try_go` panics outside a
//! runtime even on a closed group.

use std::any::Any;
use std::sync::mpsc;
use std::time::Duration;

use taskgroup::{WaitError, WaitGroup};

/// Generous upper bound for a call that must not hang.
const LIMIT: Duration = Duration::from_secs(10);

/// Runs `f` on a thread of its own; `None` if it has not returned within
/// [`LIMIT`].
fn watched<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(f());
    });
    done_rx.recv_timeout(LIMIT).ok()
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<not a string>".to_owned()
    }
}

/// What `#[tokio::test]` does (a current-thread runtime, blocked on), with
/// `wait_blocking` called directly in the test's async body while a guard is
/// pending: nothing else can ever run on that thread, so the call must panic
/// at once, with a message naming `wait_blocking`.
#[test]
fn wait_blocking_in_async_code_on_a_current_thread_runtime_panics_at_once() {
    let outcome = watched(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let wg = WaitGroup::new();
            let _pending = wg.task().name("pending").add();
            std::panic::catch_unwind(|| wg.wait_blocking())
                .map_err(|payload| panic_message(&*payload))
        })
    });
    match outcome {
        None => panic!("wait_blocking hung for {LIMIT:?} inside a current-thread runtime"),
        Some(Ok(result)) => panic!("wait_blocking returned {result:?} instead of panicking"),
        Some(Err(message)) => assert!(
            message.contains("wait_blocking"),
            "the panic does not name wait_blocking: {message:?}"
        ),
    }
}

/// From `spawn_blocking` on a current-thread runtime, `wait_blocking` is on a
/// thread of its own: it waits, and returns once another thread completes
/// the work.
#[tokio::test]
async fn wait_blocking_from_spawn_blocking_on_a_current_thread_runtime_works() {
    let wg = WaitGroup::new();
    let work = wg.add();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let completer = std::thread::spawn(move || {
        release_rx.recv().unwrap();
        drop(work);
    });
    let waiter = {
        let wg = wg.clone();
        tokio::task::spawn_blocking(move || wg.wait_blocking())
    };
    release_tx.send(()).unwrap();
    tokio::time::timeout(LIMIT, waiter)
        .await
        .expect("wait_blocking from spawn_blocking hung")
        .unwrap()
        .unwrap();
    completer.join().unwrap();
    assert!(wg.is_empty());
}

/// A task on a multi-thread runtime with `workers` workers calls
/// `wait_blocking`; the work is completed by another task of the same
/// runtime, which the waiting task wakes just before it blocks (so it is
/// queued on the waiting task's own worker).
fn wait_blocking_on_a_worker(workers: usize) -> Option<Result<(), WaitError>> {
    watched(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .unwrap();
        let result = rt.block_on(async {
            let wg = WaitGroup::new();
            let work = wg.add();
            let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(async move {
                release_rx.await.unwrap();
                drop(work);
            });
            let waiter = tokio::spawn(async move {
                release_tx.send(()).unwrap();
                wg.wait_blocking()
            });
            waiter.await.unwrap()
        });
        // Only reached when nothing hung: the runtime can shut down.
        drop(rt);
        result
    })
}

#[test]
fn wait_blocking_on_the_only_worker_of_a_multi_thread_runtime_works() {
    match wait_blocking_on_a_worker(1) {
        None => panic!("wait_blocking on the only worker hung for {LIMIT:?}"),
        Some(result) => result.unwrap(),
    }
}

#[test]
fn wait_blocking_on_a_worker_of_a_two_worker_runtime_works() {
    match wait_blocking_on_a_worker(2) {
        None => panic!("wait_blocking on a worker hung for {LIMIT:?}"),
        Some(result) => result.unwrap(),
    }
}

#[test]
fn try_add_on_a_closed_group_outside_a_runtime_is_refused() {
    let wg = WaitGroup::new();
    wg.close();
    assert_eq!(wg.try_add().unwrap_err().group_id(), wg.id());
    assert_eq!(
        wg.task().name("late").try_add().unwrap_err().group_id(),
        wg.id()
    );
    assert!(wg.is_empty());
}

#[test]
fn try_go_on_a_closed_group_outside_a_runtime_is_refused_without_panicking() {
    let wg = WaitGroup::new();
    wg.close();
    let mut called = false;
    let refused = wg.try_go(|_| {
        called = true;
        async { Ok::<_, std::io::Error>(()) }
    });
    assert_eq!(refused.unwrap_err().group_id(), wg.id());
    assert!(!called, "a refused try_go does not call the closure");
    let refused = wg
        .task()
        .name("late")
        .try_go(|_| async { Ok::<_, std::io::Error>(()) });
    assert_eq!(refused.unwrap_err().group_id(), wg.id());
    assert!(wg.is_empty());
}
