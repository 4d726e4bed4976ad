//! The fast paths of issue 16, from outside the crate: `pending()` copies a
//! large group in chunks while other threads add and complete work, and
//! `go()` spawns from every place a runtime can be found (inside a task, a
//! `block_on`, a `spawn_blocking` thread, a plain thread that entered the
//! runtime) and still refuses, by name, where none can; on a runtime that
//! has shut down it returns at once with the task aborted.

// The spawning futures hand their `TaskHandle`s out, to be awaited together.
#![allow(clippy::async_yields_async)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use taskgroup::{TaskGuard, WaitGroup};

/// Enough guards for several chunks of the registry's copy (1,024 slots).
fn lasting() -> usize {
    if cfg!(miri) {
        2_100
    } else {
        20_000
    }
}

/// Every guard pending for the whole `pending()` call is listed exactly
/// once, while another thread adds and completes guards on the same group
/// (each chunk is a snapshot; the lock is released between chunks).
#[test]
fn pending_lists_each_lasting_guard_once_while_others_come_and_go() {
    let wg = WaitGroup::new();
    let lasting: Vec<TaskGuard> = (0..lasting())
        .map(|i| {
            if i % 2 == 0 {
                wg.task().name("lasting").add()
            } else {
                wg.add()
            }
        })
        .collect();
    let ids: Vec<_> = lasting.iter().map(TaskGuard::id).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let churn = std::thread::spawn({
        let wg = wg.clone();
        let stop = Arc::clone(&stop);
        move || {
            let mut pairs = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                // Some finish at once, some live across a few calls.
                let held: Vec<TaskGuard> = (0..8).map(|_| wg.task().name("churn").add()).collect();
                drop(held);
                pairs += 8;
            }
            pairs
        }
    });
    for _ in 0..if cfg!(miri) { 2 } else { 20 } {
        let report = wg.pending();
        let groups = report.groups();
        assert_eq!(groups.len(), 1);
        let mut seen: HashMap<_, usize> = HashMap::new();
        for task in groups[0].tasks() {
            *seen.entry(task.id()).or_default() += 1;
        }
        assert!(seen.values().all(|&n| n == 1), "an entry listed twice");
        for id in &ids {
            assert_eq!(seen.get(id), Some(&1), "lasting guard {id} missing");
        }
        // Sorted by id, as before the copy was chunked.
        assert!(groups[0].tasks().windows(2).all(|w| w[0].id() < w[1].id()));
    }
    stop.store(true, Ordering::Relaxed);
    assert!(churn.join().unwrap() > 0);
    drop(lasting);
    assert!(wg.is_empty());
    assert!(wg.pending().is_empty());
}

fn spawn_one(wg: &WaitGroup) -> taskgroup::TaskHandle<u32> {
    wg.go(|_| async { Ok::<_, std::io::Error>(7) })
}

/// A runtime with two workers, or a current-thread one.
fn runtime(multi: bool) -> tokio::runtime::Runtime {
    if multi {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }
}

/// `go()` finds the runtime wherever Tokio would: in a task (the path that
/// clones no runtime handle), in `block_on`, on a blocking thread, and on a
/// plain thread inside `Runtime::enter`; `try_go` too.
#[test]
fn go_spawns_from_every_place_a_runtime_is_found() {
    for multi in [false, true] {
        let rt = runtime(multi);
        let wg = WaitGroup::new();
        // In block_on's own future (not a task).
        let from_block_on = rt.block_on(async { spawn_one(&wg) });
        // In a task.
        let from_task = rt.block_on({
            let wg = wg.clone();
            async move { tokio::spawn(async move { spawn_one(&wg) }).await.unwrap() }
        });
        let from_try_go = rt.block_on({
            let wg = wg.clone();
            async move {
                tokio::spawn(
                    async move { wg.try_go(|_| async { Ok::<_, std::io::Error>(7) }).unwrap() },
                )
                .await
                .unwrap()
            }
        });
        // On a blocking thread of the runtime.
        let from_blocking = rt.block_on({
            let wg = wg.clone();
            async move {
                tokio::task::spawn_blocking(move || spawn_one(&wg))
                    .await
                    .unwrap()
            }
        });
        // On a plain thread that entered the runtime.
        let from_entered = std::thread::scope(|s| {
            s.spawn(|| {
                let _enter = rt.enter();
                spawn_one(&wg)
            })
            .join()
            .unwrap()
        });
        rt.block_on(async {
            for handle in [
                from_block_on,
                from_task,
                from_try_go,
                from_blocking,
                from_entered,
            ] {
                assert_eq!(handle.await.unwrap(), 7);
            }
            wg.wait().await.unwrap();
        });
    }
}

/// Outside any runtime, `go()` and `try_go()` still panic with a message
/// naming the method, from a plain thread too, and leave nothing counted.
#[test]
fn go_and_try_go_outside_a_runtime_name_the_method() {
    let wg = WaitGroup::new();
    for method in ["go", "try_go"] {
        let wg2 = wg.clone();
        let panic = std::thread::spawn(move || {
            if method == "go" {
                spawn_one(&wg2);
            } else {
                let _ = wg2.try_go(|_| async { Ok::<_, std::io::Error>(7) });
            }
        })
        .join()
        .unwrap_err();
        let message = panic.downcast_ref::<String>().unwrap();
        assert!(
            message.contains(&format!(
                "WaitGroup::{method} must be called from within a Tokio runtime"
            )),
            "{message}"
        );
        assert!(wg.is_empty());
    }
}

/// A runtime that has shut down drops a spawned future inside the spawn
/// call (Tokio cannot run it): `go()` through an entered handle of that
/// runtime and `spawn_on()` with it return at once (no lock held across the
/// spawn meets the guard's own removal), the task counts as aborted, its
/// value is never produced, and the group is idle with nothing pending.
#[test]
fn go_on_a_runtime_that_shut_down_leaves_the_group_idle() {
    for multi in [false, true] {
        let rt = runtime(multi);
        let handle = rt.handle().clone();
        drop(rt);
        let wg = WaitGroup::new();
        let ran = Arc::new(AtomicBool::new(false));
        let spawned = {
            let _enter = handle.enter();
            let ran2 = ran.clone();
            let by_go = wg.go(move |_| async move {
                ran2.store(true, Ordering::Relaxed);
                Ok::<_, std::io::Error>(1)
            });
            let ran3 = ran.clone();
            let by_spawn_on = wg.task().name("on").spawn_on(&handle, move |_| async move {
                ran3.store(true, Ordering::Relaxed);
                Ok::<_, std::io::Error>(2)
            });
            [by_go, by_spawn_on]
        };
        assert!(wg.is_empty(), "multi {multi}: {} pending", wg.len());
        assert!(wg.pending().is_empty());
        for task in spawned {
            assert!(task.is_finished());
            let joined = futures::executor::block_on(task);
            assert!(joined.unwrap_err().is_aborted(), "multi {multi}");
        }
        assert!(!ran.load(Ordering::Relaxed));
        // Nothing failed: an abort is not a failure.
        assert!(wg.errors().is_empty());
    }
}
