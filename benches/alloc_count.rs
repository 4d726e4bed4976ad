//! Workload 6 of issue 4, and the "one future for the whole group" check:
//! a counting global allocator measures the heap bytes and allocations per
//! pending guard and per spawned idle task, for taskgroup and its peers, and
//! a poll-counting wrapper counts how often the waiting task is polled while
//! 100k tasks finish.
//!
//! It also prints workload 10d of issue 16, the heap bytes of an empty group
//! (`common::rows::empty_group`), with its target.
//!
//! A binary of its own (`harness = false`), because the counting allocator
//! would slow the timed benchmarks. Prints markdown; run by
//! `scripts/bench-report`, or alone with `cargo bench -p taskgroup-bench --bench alloc_count`
//! (`-- --only w10.empty-group` prints the empty-group table alone).

mod common;

use std::alloc::System;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use stats_alloc::{Region, Stats, StatsAlloc, INSTRUMENTED_SYSTEM};
use taskgroup::WaitGroup;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Guards or tasks per measurement.
const N: usize = 10_000;

/// What a measured region cost, per item.
struct PerItem {
    allocs: f64,
    net_bytes: f64,
}

fn per_item(stats: Stats, n: usize) -> PerItem {
    let net = stats.bytes_allocated as f64 + stats.bytes_reallocated as f64
        - stats.bytes_deallocated as f64;
    PerItem {
        allocs: (stats.allocations + stats.reallocations) as f64 / n as f64,
        net_bytes: net / n as f64,
    }
}

/// Takes `N` guards from `add` into a preallocated vector, twice: on the
/// fresh object (the first round, which grows whatever it keeps), and after
/// they were all completed once (the steady state).
fn guards<G>(mut add: impl FnMut() -> G) -> (PerItem, PerItem) {
    let mut keep: Vec<G> = Vec::with_capacity(N);
    let region = Region::new(GLOBAL);
    for _ in 0..N {
        keep.push(add());
    }
    let fresh = per_item(region.change(), N);
    keep.clear();
    let region = Region::new(GLOBAL);
    for _ in 0..N {
        keep.push(add());
    }
    let warm = per_item(region.change(), N);
    keep.clear();
    (fresh, warm)
}

/// Spawns `N` idle tasks with `spawn` (inside a current-thread runtime, so
/// none runs while they are counted), measures, then releases them with the
/// token and lets `finish` wait for them; twice: on the fresh object, and
/// again once the first batch is done (the steady state).
fn tasks<S>(
    setup: impl FnOnce() -> S,
    mut spawn: impl FnMut(&mut S, CancellationToken),
    mut finish: impl for<'a> FnMut(&'a mut S) -> Pin<Box<dyn Future<Output = ()> + 'a>>,
) -> (PerItem, PerItem) {
    let rt = common::current_thread();
    rt.block_on(async {
        let mut state = setup();
        let mut batch = |state: &mut S| {
            let token = CancellationToken::new();
            // Warm the token's internals.
            spawn(state, token.clone());
            let region = Region::new(GLOBAL);
            for _ in 0..N {
                spawn(state, token.clone());
            }
            (per_item(region.change(), N), token)
        };
        let (fresh, token) = batch(&mut state);
        token.cancel();
        finish(&mut state).await;
        let (warm, token) = batch(&mut state);
        token.cancel();
        finish(&mut state).await;
        (fresh, warm)
    })
}

/// Allocations made by one wait on a busy group: `round` takes a guard,
/// starts a wait (polled once, pending), completes the guard and polls the
/// wait to completion; the mean over `N` rounds, after one warm-up round.
fn allocs_per_wait(mut round: impl FnMut()) -> f64 {
    round();
    let region = Region::new(GLOBAL);
    for _ in 0..N {
        round();
    }
    let stats = region.change();
    (stats.allocations + stats.reallocations) as f64 / N as f64
}

fn poll_once<F: Future>(fut: Pin<&mut F>) -> Poll<F::Output> {
    let waker = futures::task::noop_waker();
    fut.poll(&mut Context::from_waker(&waker))
}

/// Counts the polls of the future it wraps.
struct Counted<F> {
    fut: Pin<Box<F>>,
    polls: Arc<AtomicUsize>,
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.fut.as_mut().poll(cx)
    }
}

/// Starts the waiting future `wait` as a task, lets it run until it waits,
/// then spawns 100k trivial tasks with `spawn_all` and counts how often the
/// waiting task is polled until it returns. (The waiter must be waiting
/// before the tasks run, or a single poll finds everything done.)
fn waiter_polls<W>(wait: W, spawn_all: impl FnOnce()) -> usize
where
    W: Future<Output = ()> + Send + 'static,
{
    let rt = common::current_thread();
    rt.block_on(async {
        let polls = Arc::new(AtomicUsize::new(0));
        let waiter = tokio::spawn(Counted {
            fut: Box::pin(wait),
            polls: Arc::clone(&polls),
        });
        tokio::task::yield_now().await;
        spawn_all();
        waiter.await.expect("waiter");
        polls.load(Ordering::Relaxed)
    })
}

/// Workload 10d (issue 16): the memory of an empty group, and its target.
fn empty_group_table() -> String {
    let mut out = String::new();
    let Some(rows) = common::rows::empty_group() else {
        unreachable!("this binary installs the counting allocator");
    };
    out.push_str("## Memory of a group (workload 10d)\n\n");
    out.push_str(
        "Counting global allocator (stats_alloc); per group, mean over 1000 groups, after one \
         unmeasured warm-up. \"+\" rows: what one step added to each empty group; \"...\" \
         row: what the group still holds once that task finished. Heap only: the `WaitGroup` \
         handle itself is one pointer.\n\n",
    );
    out.push_str("| what | heap bytes | allocations |\n|---|---:|---:|\n");
    for row in &rows {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.2} |",
            row.what, row.bytes, row.allocs
        );
    }
    let empty = &rows[0];
    out.push_str("\n| target | measured | limit | |\n|---|---|---:|---|\n");
    let _ = writeln!(
        out,
        "| w10.empty-group: an empty group <= 512 B | {:.0} B in {:.1} allocations (`WaitGroup::new()`) | 512 B | {} |\n",
        empty.bytes,
        empty.allocs,
        if empty.bytes <= 512.0 { "met" } else { "**missed**" }
    );
    out
}

fn main() {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--only" {
            // Only the empty-group table; `scripts/bench-report --only P`
            // asks for it when P is a prefix of its key.
            if args.next().as_deref() == Some("w10.empty-group") {
                print!("{}", empty_group_table());
                return;
            }
        }
    }
    let mut out = String::new();
    let mut push = |line: String| {
        out.push_str(&line);
        out.push('\n');
    };
    push("## Memory (workload 6)\n".into());
    push(format!(
        "Counting global allocator (stats_alloc); {N} guards or tasks per measurement. \
         \"heap/item\" is net bytes still allocated per pending item; \"allocs/item\" counts \
         allocations and reallocations. \"fresh\": the first {N} on a new group (growth of \
         whatever it keeps included); \"warm\": {N} more after those were completed.\n"
    ));
    push("### Per pending guard\n".into());
    push("| guard type | inline bytes | heap/item fresh | allocs/item fresh | heap/item warm | allocs/item warm |".into());
    push("|---|---:|---:|---:|---:|---:|".into());
    let mut row = |name: &str, inline: usize, (fresh, warm): (PerItem, PerItem)| {
        push(format!(
            "| {name} | {inline} | {:.1} | {:.3} | {:.1} | {:.3} |",
            fresh.net_bytes, fresh.allocs, warm.net_bytes, warm.allocs
        ));
        (fresh, warm)
    };
    let floor = Arc::new(AtomicUsize::new(0));
    row(
        "floor: a counter increment (no guard object)",
        0,
        guards(|| {
            floor.fetch_add(1, Ordering::Relaxed);
        }),
    );
    let wg = common::lean();
    let lean = row(
        "taskgroup `TaskGuard`, lean",
        std::mem::size_of::<taskgroup::TaskGuard>(),
        guards(|| wg.add()),
    );
    let wg = common::recording();
    row(
        "taskgroup `TaskGuard`, recording",
        std::mem::size_of::<taskgroup::TaskGuard>(),
        guards(|| wg.add()),
    );
    let tracker = TaskTracker::new();
    row(
        "tokio-util `TaskTrackerToken`",
        std::mem::size_of::<tokio_util::task::task_tracker::TaskTrackerToken>(),
        guards(|| tracker.token()),
    );
    let cb = crossbeam_utils::sync::WaitGroup::new();
    row(
        "crossbeam `WaitGroup` clone",
        std::mem::size_of::<crossbeam_utils::sync::WaitGroup>(),
        guards(|| cb.clone()),
    );
    let ag = awaitgroup::WaitGroup::new();
    row(
        "awaitgroup `Worker`",
        std::mem::size_of::<awaitgroup::Worker>(),
        guards(|| ag.worker()),
    );
    push(String::new());

    push("### Per spawned idle task (waiting for a CancellationToken), current-thread\n".into());
    push(
        "| spawn | heap/task fresh | allocs/task fresh | heap/task warm | allocs/task warm |"
            .into(),
    );
    push("|---|---:|---:|---:|---:|".into());
    let mut task_row = |name: &str, (fresh, warm): (PerItem, PerItem)| {
        push(format!(
            "| {name} | {:.1} | {:.3} | {:.1} | {:.3} |",
            fresh.net_bytes, fresh.allocs, warm.net_bytes, warm.allocs
        ));
        (fresh, warm)
    };
    let raw = task_row(
        "raw `tokio::spawn` (handle kept in a preallocated Vec)",
        tasks(
            || Vec::with_capacity(N + 1),
            |handles, token| handles.push(tokio::spawn(async move { token.cancelled().await })),
            |handles| {
                Box::pin(async move {
                    for h in handles.drain(..) {
                        h.await.expect("task");
                    }
                })
            },
        ),
    );
    let go = task_row(
        "taskgroup `go()`",
        tasks(
            WaitGroup::new,
            |wg, token| {
                wg.go(|_ctx| async move {
                    token.cancelled().await;
                    Ok::<(), Infallible>(())
                });
            },
            |wg| Box::pin(async move { wg.wait().await.expect("no failures") }),
        ),
    );
    task_row(
        "tokio-util `TaskTracker::spawn`",
        tasks(
            TaskTracker::new,
            |t, token| {
                t.spawn(async move { token.cancelled().await });
            },
            |t| {
                Box::pin(async move {
                    t.close();
                    t.wait().await;
                })
            },
        ),
    );
    task_row(
        "tokio `JoinSet::spawn`",
        tasks(
            JoinSet::new,
            |set, token| {
                set.spawn(async move { token.cancelled().await });
            },
            |set| {
                Box::pin(async move {
                    while let Some(r) = set.join_next().await {
                        r.expect("task");
                    }
                })
            },
        ),
    );
    push(String::new());

    push(
        "### Allocations per wait (take a guard, start waiting, complete it, wait returns)\n"
            .into(),
    );
    push("| waiter | allocs/wait |".into());
    push("|---|---:|".into());
    let oneshot_allocs = allocs_per_wait(|| {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut rx = std::pin::pin!(rx);
        assert!(poll_once(rx.as_mut()).is_pending());
        tx.send(()).expect("receiver alive");
        assert!(poll_once(rx.as_mut()).is_ready());
    });
    push(format!(
        "| tokio oneshot (channel included) | {oneshot_allocs:.2} |"
    ));
    for (name, wg) in [
        ("taskgroup `wait()`, lean", common::lean()),
        ("taskgroup `wait()`, recording", common::recording()),
    ] {
        let allocs = allocs_per_wait(|| {
            let guard = wg.add();
            let mut wait = std::pin::pin!(wg.wait());
            assert!(poll_once(wait.as_mut()).is_pending());
            drop(guard);
            assert!(poll_once(wait.as_mut()).is_ready());
        });
        push(format!("| {name} | {allocs:.2} |"));
    }
    let tracker = TaskTracker::new();
    tracker.close();
    let allocs = allocs_per_wait(|| {
        let token = tracker.token();
        let mut wait = std::pin::pin!(tracker.wait());
        assert!(poll_once(wait.as_mut()).is_pending());
        drop(token);
        assert!(poll_once(wait.as_mut()).is_ready());
    });
    push(format!("| TaskTracker `wait()` | {allocs:.2} |"));
    push(String::new());

    push("### Polls of the waiting task while 100k trivial tasks finish (current-thread)\n".into());
    push("| waiter | polls |".into());
    push("|---|---:|".into());
    let tasks_n = common::TASKS;
    let wg = WaitGroup::new();
    let guard = wg.add(); // keeps the group busy until the tasks are spawned
    let waiting = wg.clone();
    let tg_polls = waiter_polls(
        async move { waiting.wait().await.expect("no failures") },
        move || {
            for _ in 0..tasks_n {
                wg.go(|_ctx| async { Ok::<(), Infallible>(()) });
            }
            guard.done();
        },
    );
    push(format!("| taskgroup `wait()` | {tg_polls} |"));
    let tracker = TaskTracker::new();
    tracker.close();
    let waiting = tracker.clone();
    let token = tracker.token(); // keeps the tracker busy until the tasks are spawned
    let tt_polls = waiter_polls(async move { waiting.wait().await }, move || {
        for _ in 0..tasks_n {
            tracker.spawn(async {});
        }
        drop(token);
    });
    push(format!("| TaskTracker `wait()` | {tt_polls} |"));
    // JoinSet and handles: the waiter owns what it waits on, so it spawns the
    // tasks itself, then waits; they run only once it yields.
    let js_polls = waiter_polls(
        async move {
            let mut set = JoinSet::new();
            for _ in 0..tasks_n {
                set.spawn(async {});
            }
            while let Some(r) = set.join_next().await {
                r.expect("task");
            }
        },
        || {},
    );
    push(format!("| JoinSet `join_next()` loop | {js_polls} |"));
    let raw_polls = waiter_polls(
        async move {
            let handles: Vec<_> = (0..tasks_n).map(|_| tokio::spawn(async {})).collect();
            for h in handles {
                h.await.expect("task");
            }
        },
        || {},
    );
    push(format!("| raw handles awaited in order | {raw_polls} |"));
    push(String::new());

    push("## Targets (memory and polls)\n".into());
    push("| target | measured | |".into());
    push("|---|---|---|".into());
    let verdict = |met: bool| if met { "met" } else { "**missed**" };
    let inline = std::mem::size_of::<taskgroup::TaskGuard>();
    push(format!(
        "| lean pending guard: 0 heap allocations | {:.3} allocs/guard fresh, {:.3} warm | {} |",
        lean.0.allocs,
        lean.1.allocs,
        verdict(lean.0.allocs == 0.0 && lean.1.allocs == 0.0)
    ));
    push(format!(
        "| lean pending guard: at most 16 bytes inline | {inline} bytes | {}{} |",
        verdict(inline <= 16),
        if inline > 16 {
            format!(" by {} bytes", inline - 16)
        } else {
            String::new()
        }
    ));
    let extra_fresh = go.0.allocs - raw.0.allocs;
    let extra_warm = go.1.allocs - raw.1.allocs;
    push(format!(
        "| spawned task: no allocation beyond tokio's task cell, steady state | go() vs raw spawn: {extra_warm:+.3} allocs/task, {:+.1} heap bytes/task | {} |",
        go.1.net_bytes - raw.1.net_bytes,
        verdict(extra_warm <= 0.0)
    ));
    push(format!(
        "| spawned task: no allocation beyond tokio's task cell, fresh group | go() vs raw spawn: {extra_fresh:+.3} allocs/task, {:+.1} heap bytes/task | {} |",
        go.0.net_bytes - raw.0.net_bytes,
        verdict(extra_fresh <= 0.0)
    ));
    push(format!(
        "| wait() is one future for the whole group, not one poll per task | {tg_polls} polls for {tasks_n} tasks (JoinSet {js_polls}) | {} |",
        verdict(tg_polls <= 3)
    ));
    push(String::new());
    print!("{out}");
    print!("{}", empty_group_table());
}
