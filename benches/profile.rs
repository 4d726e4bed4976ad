//! Small fixed workloads to count instructions with callgrind, where timings
//! are too noisy to compare two builds (issue 16's notes quote its counts):
//!
//! ```text
//! cargo build --release -p taskgroup-bench --example profile
//! valgrind --tool=callgrind --toggle-collect='*Runtime::block_on*' \
//!     target/release/examples/profile shutdown flat
//! ```
//!
//! `--toggle-collect` counts what runs inside `block_on` only (the timed part);
//! divide the total by the operations the mode prints. Modes:
//!
//! * `shutdown flat|chain`, `wait flat|chain`: 50 times, 1,000 idle groups
//!   below a root (each a `child()` of the root, or of the one before), built
//!   outside `block_on`, then `shutdown(1s)` or `wait()` on the root inside.
//! * `build flat|chain`, `build-peers flat|chain`: the same trees built
//!   inside `block_on` (and dropped outside), of `WaitGroup`s or of what the
//!   benchmarks compare them with, a `TaskTracker` and a child
//!   `CancellationToken` per node.
//! * `go|tracker [ct|mt|mt-task] [ROUNDS]`: `ROUNDS` (3) times, 100,000
//!   trivial tasks spawned then waited for, with `WaitGroup::go` or
//!   tokio-util's `TaskTracker::spawn` (count the whole program: drop
//!   `--toggle-collect`). `ct` (the default) runs them on a current-thread
//!   runtime; `mt` on two workers, spawned from `block_on`'s thread as
//!   workload 3 does (three threads on two workers' worth of work); `mt-task`
//!   on two workers, spawned from a task on one of them, as an accept loop
//!   in a task does. For timings and a sampling profiler, give more rounds:
//!   `/usr/bin/time profile go mt 30`, `perf record -g profile go mt 30`.
//! * `go-select`, `tracker-select`: the same, each task first polling its
//!   cancellation (`ctx.token().cancelled()`, or a clone of one
//!   `CancellationToken` per task) in a `biased` `select!` with work that is
//!   ready, as a task that stops on cancellation does.
//! * `pending [THREADS]`: 1,000,000 guards taken on `THREADS` (1) threads,
//!   in ten turns each taking its share, so that each thread's registry
//!   shard holds runs of ids; then `pending()` five times, each timed (the
//!   first of them faults its pages in). Time it, or count it whole.
//!   `pending churn`: on one thread, 2,000,000 guards, a shuffled half of
//!   them dropped and 500,000 more taken, so that slots are reused out of
//!   id order; then the same five calls.
//! * `sort`: the two sorts `pending()` chooses between, stable and
//!   unstable, on 1,000,000 records of 80 bytes (a `TaskInfo`'s size) that
//!   come as 1 to 4,096 runs of ascending keys, or shuffled; the fastest
//!   of three each.
//! * `stubborn [TASKS]`: three times, `TASKS` (1,000,000) tasks of which
//!   every tenth ignores cancellation, each polled once, then
//!   `shutdown(100 ms)`, on a current-thread runtime (workload 10b). Prints,
//!   after the call, when the first task ran again (the cancel of its
//!   context is done by then: Tokio runs a few tasks before the shutdown
//!   resumes and walks its tasks to abort them), when the first and the last
//!   task was dropped, and when the call returned (after the last drop: the
//!   report is made).
//! * `tree [together]`, `tree-peers [ordered]`: 20 times, workload 8's shutdown: a
//!   tree of 1 + 10 + 100 + 1,000 groups (`child()` of the level above),
//!   one task each waiting for its cancellation, then `shutdown(10 s)` on
//!   the root; or the peers' tree, a `TaskTracker` and a `CancellationToken`
//!   per node, the root token cancelled and each tracker closed and waited
//!   for in the same order. `ordered` gives each node a token of its own,
//!   cancelled only once the nodes before it have stopped, as a shutdown
//!   stops groups in order. `together` builds taskgroup's root with
//!   `stop_children_together`, so the shutdown stops every group at once, as
//!   the peers' tree does. Divide by the 22,220 groups it prints.
//! * `late-groups [GROUPS]`: `GROUPS` (20,000) child groups of one root,
//!   each with a task that ignores cancellation, then `shutdown(100 ms)` with
//!   the default 1 s abort timeout (every group but the first reached after
//!   the deadline, with a share of 50 µs); prints the time taken and the
//!   report's counts. Timed, not counted: run it as is.
//! * `together [GROUPS] [sequential|flat]`: `GROUPS` (2,000) child groups
//!   of a `connections` group built with `stop_children_together(true)`
//!   (with `sequential`: `false`; with `flat`, the tasks in `connections`
//!   itself), below a root; each has a task that takes 5 ms to close once
//!   cancelled; then `shutdown(30 s)` on the root. Prints the time taken
//!   and the report's counts. Timed, not counted.
//! * `shielded [TASKS]`: `TASKS` (40,000) tasks of one group, each in a
//!   shielded section that waits for cancellation then flushes for 200 ms,
//!   then `shutdown(50 ms)`; prints the time taken and the counts (every
//!   flush completes: all finished, none aborted).
//! * `wake oneshot|lean|recording|tracker`: 100,000 times workload 5b's loop
//!   (a task waits, on a oneshot, on a group's last guard or on a
//!   `TaskTracker`'s last token; the main task yields
//!   twice, fires, and awaits it), to compare what a wake-up costs.
//! * `hub-chain [DEPTH] [nohub]`: a chain of `DEPTH` (1,000) nested
//!   `ServiceGroup`s under a `StatusHub` (with `nohub`: none), a leaf at the
//!   bottom waiting for its cancellation, served in a task until the leaf
//!   runs; then that task is aborted (the chain's future dropped). Prints how
//!   long the start took and how long after the drop the last task was gone
//!   (every member aborted and every level ended for the hub). Timed, not
//!   counted.
//! * `reopen [task]`: 1,000,000 times `cancel()` then `reopen()` on one
//!   group (with `task`: 100,000 times, each cycle first a `go()` task that
//!   asks for its context and ends), then prints the resident memory kept
//!   per cycle (`VmRSS` of `/proc/self/status`, Linux) and the time taken:
//!   each reopen of a cancelled group keeps its fresh context until the
//!   group is dropped.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use taskgroup::WaitGroup;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    match arg(0) {
        mode @ ("shutdown" | "wait") => {
            let chain = shape(arg(1));
            for _ in 0..ROUNDS {
                let (root, _groups) = group_tree(chain);
                if mode == "wait" {
                    rt.block_on(root.wait()).expect("no failures");
                } else {
                    let report = rt.block_on(root.shutdown(Duration::from_secs(1)));
                    assert!(report.is_clean(), "{report}");
                }
            }
            println!("{} groups", ROUNDS * GROUPS);
        }
        mode @ ("build" | "build-peers") => {
            let chain = shape(arg(1));
            for _ in 0..ROUNDS {
                // Built inside `block_on` (counted), dropped outside.
                if mode == "build" {
                    drop(rt.block_on(async { group_tree(chain) }));
                } else {
                    drop(rt.block_on(async { peer_tree(chain) }));
                }
            }
            println!("{} groups", ROUNDS * GROUPS);
        }
        mode @ ("go" | "tracker" | "go-select" | "tracker-select") => {
            const TASKS: usize = 100_000;
            // `mt`: on two workers, spawned from `block_on`'s thread as
            // workload 3 does; `ROUNDS` more rounds, for a sampling profiler.
            let rt = match arg(1) {
                "mt" | "mt-task" => tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("a runtime"),
                _ => rt,
            };
            let rounds: usize = arg(2).parse().unwrap_or(3);
            let go = mode.starts_with("go");
            let select = mode.ends_with("select");
            let run = async move {
                for _ in 0..rounds {
                    if go {
                        let wg = WaitGroup::new();
                        for _ in 0..TASKS {
                            if select {
                                wg.go(|ctx| async move {
                                    tokio::select! {
                                        biased;
                                        _ = ctx.token().cancelled() => {}
                                        _ = std::future::ready(()) => {}
                                    }
                                });
                            } else {
                                wg.go(|_| async {});
                            }
                        }
                        wg.wait().await.expect("no failures");
                    } else {
                        let tracker = TaskTracker::new();
                        let token = CancellationToken::new();
                        for _ in 0..TASKS {
                            if select {
                                let token = token.clone();
                                tracker.spawn(async move {
                                    tokio::select! {
                                        biased;
                                        _ = token.cancelled() => {}
                                        _ = std::future::ready(()) => {}
                                    }
                                });
                            } else {
                                tracker.spawn(async {});
                            }
                        }
                        tracker.close();
                        tracker.wait().await;
                    }
                }
            };
            if arg(1) == "mt-task" {
                rt.block_on(rt.spawn(run)).expect("the loop's task");
            } else {
                rt.block_on(run);
            }
            println!("{} tasks", rounds * TASKS);
        }
        "pending" => {
            const GUARDS: usize = 1_000_000;
            const TURNS: usize = 10;
            let wg = WaitGroup::new();
            let mut held: Vec<Vec<_>> = Vec::new();
            if arg(1) == "churn" {
                let mut guards: Vec<_> = (0..2 * GUARDS).map(|_| Some(wg.add())).collect();
                for i in shuffled(2 * GUARDS).into_iter().take(GUARDS) {
                    guards[i] = None;
                }
                guards.extend((0..GUARDS / 2).map(|_| Some(wg.add())));
                held.push(guards.into_iter().flatten().collect());
            } else {
                let threads: usize = arg(1).parse().unwrap_or(1).max(1);
                for _ in 0..TURNS {
                    let turn: Vec<_> = (0..threads)
                        .map(|_| {
                            let wg = wg.clone();
                            std::thread::spawn(move || {
                                (0..GUARDS / threads / TURNS)
                                    .map(|_| wg.add())
                                    .collect::<Vec<_>>()
                            })
                        })
                        .collect();
                    for thread in turn {
                        held.push(thread.join().expect("a guard thread"));
                    }
                }
            }
            for _ in 0..5 {
                let start = Instant::now();
                let pending = wg.pending();
                let took = start.elapsed();
                println!("pending() of {} entries: {took:?}", pending.len());
            }
        }
        "sort" => {
            /// A `TaskInfo`'s size, its id first.
            #[derive(Clone, Copy)]
            struct Record([u64; 10]);
            const RECORDS: usize = 1_000_000;
            let mut sets: Vec<(String, Vec<Record>)> = [1, 2, 16, 32, 64, 256, 4096]
                .into_iter()
                .map(|runs| {
                    // Keys dealt round-robin into `runs` ascending runs.
                    let records = (0..runs)
                        .flat_map(|run| (run..RECORDS).step_by(runs))
                        .map(|key| Record([key as u64; 10]))
                        .collect();
                    (format!("{runs} runs"), records)
                })
                .collect();
            let shuffled = shuffled(RECORDS)
                .into_iter()
                .map(|key| Record([key as u64; 10]))
                .collect();
            sets.push(("shuffled".into(), shuffled));
            for (name, records) in &sets {
                let time = |stable: bool| {
                    (0..3)
                        .map(|_| {
                            let mut records = records.clone();
                            let start = Instant::now();
                            if stable {
                                records.sort_by_key(|r| r.0[0]);
                            } else {
                                records.sort_unstable_by_key(|r| r.0[0]);
                            }
                            start.elapsed()
                        })
                        .min()
                        .expect("three")
                };
                println!(
                    "{name}: stable {:?}, unstable {:?}",
                    time(true),
                    time(false)
                );
            }
        }
        "late-groups" => {
            let groups: usize = arg(1).parse().unwrap_or(20_000);
            rt.block_on(async {
                let root = WaitGroup::new();
                let requests: Vec<WaitGroup> = (0..groups)
                    .map(|_| {
                        let request = root.child();
                        request.go(|_| std::future::pending::<()>());
                        request
                    })
                    .collect();
                tokio::task::yield_now().await;
                let started = Instant::now();
                let report = root.shutdown(Duration::from_millis(100)).await;
                println!(
                    "{groups} groups reached late: shutdown {:?}; {} aborted, {} finished, {} pending",
                    started.elapsed(),
                    report.aborted().len(),
                    report.finished(),
                    report.pending().len()
                );
                drop(requests);
            });
        }
        "together" => {
            let groups: usize = arg(1).parse().unwrap_or(2_000);
            let (together, flat) = (arg(2) != "sequential", arg(2) == "flat");
            rt.block_on(async {
                let root = WaitGroup::new();
                let connections = WaitGroup::builder()
                    .name("connections")
                    .stop_children_together(together)
                    .build_child(&root);
                for _ in 0..groups {
                    let connection = if flat {
                        connections.clone()
                    } else {
                        connections.child()
                    };
                    connection.go(|ctx| async move {
                        ctx.cancelled().await;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    });
                }
                tokio::task::yield_now().await;
                let started = Instant::now();
                let report = root.shutdown(Duration::from_secs(30)).await;
                println!(
                    "{groups} {}: shutdown {:?}; {} finished, {} aborted, {} pending",
                    match (flat, together) {
                        (true, _) => "tasks in one group",
                        (false, true) => "groups stopped together",
                        (false, false) => "groups stopped in turn",
                    },
                    started.elapsed(),
                    report.finished(),
                    report.aborted().len(),
                    report.pending().len()
                );
            });
        }
        "shielded" => {
            let tasks: usize = arg(1).parse().unwrap_or(40_000);
            rt.block_on(async {
                let wg = WaitGroup::builder()
                    .abort_timeout(Duration::from_secs(30))
                    .build();
                for _ in 0..tasks {
                    wg.go(|ctx| async move {
                        ctx.shielded(Duration::from_secs(20), async {
                            ctx.cancelled().await;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        })
                        .await;
                    });
                }
                // Every task polled once, so in its section.
                tokio::spawn(async {}).await.expect("runs");
                let started = Instant::now();
                let report = wg.shutdown(Duration::from_millis(50)).await;
                println!(
                    "{tasks} shielded flushes: shutdown {:?}; {} aborted, {} finished",
                    started.elapsed(),
                    report.aborted().len(),
                    report.finished()
                );
            });
        }
        "stubborn" => {
            let tasks: u64 = arg(1).parse().unwrap_or(1_000_000);
            for _ in 0..3 {
                let marks = Arc::new(Marks::default());
                // Time for every abort to land: the timeline is whole.
                let wg = WaitGroup::builder()
                    .abort_timeout(Duration::from_secs(600))
                    .build();
                let (called, returned, report) = rt.block_on(async {
                    for i in 0..tasks {
                        let mark = DropMark(Arc::clone(&marks));
                        wg.go(move |ctx| async move {
                            if i % 10 == 0 {
                                std::future::pending::<()>().await;
                            }
                            ctx.cancelled().await;
                            mark.0.ran.get_or_init(Instant::now);
                        });
                    }
                    // Every task polled once: a task spawned now runs last.
                    tokio::spawn(async {}).await.expect("runs");
                    let called = Instant::now();
                    let report = wg.shutdown(Duration::from_millis(100)).await;
                    (called, Instant::now(), report)
                });
                let since = |at: Instant| at.duration_since(called);
                let dropped = marks.dropped.lock();
                println!(
                    "after the call: a task ran {:?}, first drop {:?}, last drop {:?}, \
                     returned {:?}; {} aborted, {} pending",
                    marks.ran.get().map(|&at| since(at)),
                    dropped.0.map(since),
                    dropped.1.map(since),
                    since(returned),
                    report.aborted().len(),
                    report.pending().len(),
                );
            }
        }
        mode @ ("tree" | "tree-peers") => {
            // `ordered` peers: each node's token its own, cancelled one after another;
            // `together`: taskgroup's root (and so every group) stops its children together.
            let (ordered, together) = match arg(1) {
                "" => (false, false),
                "ordered" if mode == "tree-peers" => (true, false),
                "together" if mode == "tree" => (false, true),
                other => usage(other),
            };
            // Workload 8's "shutdown" variants: a tree of 1 + 10 + 100 + 1,000
            // groups (or peer nodes), one task each waiting for its
            // cancellation, then the whole tree stopped.
            rt.block_on(async {
                for _ in 0..TREE_ROUNDS {
                    if mode == "tree" {
                        let root = WaitGroup::builder()
                            .stop_children_together(together)
                            .build();
                        let mut level = vec![root.clone()];
                        for depth in 0..=TREE_DEPTH {
                            let mut next = Vec::new();
                            for wg in &level {
                                wg.go(|ctx| async move { ctx.cancelled().await });
                                if depth < TREE_DEPTH {
                                    next.extend((0..TREE_FANOUT).map(|_| wg.child()));
                                }
                            }
                            level = next;
                        }
                        tokio::task::yield_now().await;
                        let report = root.shutdown(Duration::from_secs(10)).await;
                        assert!(report.is_clean(), "{report}");
                    } else {
                        let mut level = vec![(TaskTracker::new(), CancellationToken::new())];
                        let root = level[0].1.clone();
                        let mut all = Vec::new();
                        for depth in 0..=TREE_DEPTH {
                            let mut next = Vec::new();
                            for (tracker, token) in &level {
                                let own = token.clone();
                                tracker.spawn(async move { own.cancelled().await });
                                if depth < TREE_DEPTH {
                                    next.extend((0..TREE_FANOUT).map(|_| {
                                        let token = if ordered {
                                            CancellationToken::new()
                                        } else {
                                            token.child_token()
                                        };
                                        (TaskTracker::new(), token)
                                    }));
                                }
                            }
                            all.append(&mut level);
                            level = next;
                        }
                        tokio::task::yield_now().await;
                        if ordered {
                            // Each node's token cancelled only once the
                            // nodes before it have stopped, as a shutdown
                            // stops groups in order.
                            for (tracker, token) in &all {
                                token.cancel();
                                tracker.close();
                                tracker.wait().await;
                            }
                        } else {
                            root.cancel();
                            for (tracker, _) in &all {
                                tracker.close();
                                tracker.wait().await;
                            }
                        }
                    }
                }
            });
            let groups: usize = (0..=TREE_DEPTH).map(|d| TREE_FANOUT.pow(d)).sum();
            println!("{} groups", TREE_ROUNDS * groups);
        }
        "hub-chain" => {
            use taskgroup::service::{service_fn, Ready, Service, ServiceGroup, StatusHub};
            let depth: usize = match arg(1) {
                "" => 1_000,
                n => n.parse().unwrap_or_else(|_| usage(n)),
            };
            let hub = match arg(2) {
                "" => Some(StatusHub::new(64)),
                "nohub" => None,
                other => usage(other),
            };
            let started = Arc::new(tokio::sync::Notify::new());
            let leaf = {
                let started = started.clone();
                service_fn("leaf", move |ctx: CancellationToken, ready: Ready| {
                    let started = started.clone();
                    async move {
                        ready.ready();
                        started.notify_one();
                        ctx.cancelled().await;
                        Ok(())
                    }
                })
            };
            let mut chain: Box<dyn Service> = Box::new(leaf);
            for level in (1..depth).rev() {
                chain = Box::new(
                    ServiceGroup::builder(format!("c{level}"))
                        .service(chain)
                        .build()
                        .expect("a valid group"),
                );
            }
            let mut top = ServiceGroup::builder("c0").service(chain);
            if let Some(hub) = &hub {
                top = top.status(hub.clone());
            }
            let mut top = top.build().expect("a valid group");
            let (start, drop_took) = rt.block_on(async {
                let start = Instant::now();
                let serve = tokio::spawn(async move { top.serve(CancellationToken::new()).await });
                started.notified().await;
                let start = start.elapsed();
                let dropped = Instant::now();
                serve.abort();
                let metrics = tokio::runtime::Handle::current().metrics();
                while metrics.num_alive_tasks() > 0 {
                    tokio::task::yield_now().await;
                }
                (start, dropped.elapsed())
            });
            let with = if hub.is_some() {
                "under a hub"
            } else {
                "without a hub"
            };
            println!("a chain of {depth} {with}: started in {start:?}, gone {drop_took:?} after the drop");
        }
        "reopen" => {
            let with_task = match arg(1) {
                "" => false,
                "task" => true,
                other => usage(other),
            };
            let cycles: usize = if with_task { 100_000 } else { 1_000_000 };
            let wg = WaitGroup::new();
            let before = resident_kib();
            let start = Instant::now();
            rt.block_on(async {
                for _ in 0..cycles {
                    if with_task {
                        wg.go(|ctx| async move {
                            std::hint::black_box(ctx.token());
                        });
                        wg.wait().await.expect("no failures");
                    }
                    wg.cancel();
                    wg.reopen();
                }
            });
            let took = start.elapsed();
            match (before, resident_kib()) {
                (Some(before), Some(after)) => println!(
                    "{cycles} cycles in {took:?}: {} bytes resident kept per cycle",
                    after.saturating_sub(before) * 1024 / cycles as u64
                ),
                _ => println!("{cycles} cycles in {took:?} (no /proc/self/status here)"),
            }
            drop(wg);
        }
        "wake" => {
            // The loop of workload 5b, one variant: a waiter task parks, the
            // main task fires, then awaits the waiter.
            const WAKES: usize = 100_000;
            let variant = arg(1);
            rt.block_on(async {
                for _ in 0..WAKES {
                    let (waiter, fire): (tokio::task::JoinHandle<()>, Box<dyn FnOnce()>) =
                        match variant {
                            "oneshot" => {
                                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                                let waiter = tokio::spawn(async move { rx.await.expect("sent") });
                                (waiter, Box::new(move || tx.send(()).expect("alive")))
                            }
                            "lean" | "recording" => {
                                let wg = WaitGroup::builder()
                                    .record_guards(variant == "recording")
                                    .build();
                                let guard = wg.add();
                                let waiter = tokio::spawn(async move {
                                    wg.wait().await.expect("no failures");
                                });
                                (waiter, Box::new(move || guard.done()))
                            }
                            "tracker" => {
                                let tracker = TaskTracker::new();
                                let token = tracker.token();
                                tracker.close();
                                let waiter = tokio::spawn(async move { tracker.wait().await });
                                (waiter, Box::new(move || drop(token)))
                            }
                            other => usage(other),
                        };
                    tokio::task::yield_now().await;
                    tokio::task::yield_now().await;
                    fire();
                    waiter.await.expect("waiter");
                }
            });
            println!("{WAKES} wakes");
        }
        other => usage(other),
    }
}

/// What `stubborn` times: when a cancelled task first ran, and the first
/// and last drop of a task.
#[derive(Default)]
struct Marks {
    ran: OnceLock<Instant>,
    dropped: Mutex<(Option<Instant>, Option<Instant>)>,
}

/// Held by a task of `stubborn`: marks its drop.
struct DropMark(Arc<Marks>);

impl Drop for DropMark {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut dropped = self.0.dropped.lock();
        dropped.0.get_or_insert(now);
        dropped.1 = Some(now);
    }
}

/// `0..n` shuffled, the same way every run (a xorshift generator).
fn shuffled(n: usize) -> Vec<usize> {
    let mut all: Vec<usize> = (0..n).collect();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        all.swap(i, (x % (i as u64 + 1)) as usize);
    }
    all
}

/// Rounds of `tree` and `tree-peers`, and the shape of their tree (that of
/// workload 8: 1 + 10 + 100 + 1,000 groups).
const TREE_ROUNDS: usize = 20;
const TREE_DEPTH: u32 = 3;
const TREE_FANOUT: usize = 10;

/// Rounds of `shutdown`, `wait`, `build` and `build-peers` (flat or chain),
/// and groups below the root in each.
const ROUNDS: usize = 50;
const GROUPS: usize = 1_000;

/// `true` for a chain, `false` for a flat tree.
fn shape(arg: &str) -> bool {
    match arg {
        "flat" => false,
        "chain" => true,
        other => usage(other),
    }
}

/// A root and `GROUPS` groups below it, each a `child()` of the one before
/// (chain) or of the root (flat); the handles are kept, or the groups leave.
fn group_tree(chain: bool) -> (WaitGroup, Vec<WaitGroup>) {
    let root = WaitGroup::new();
    let mut groups = Vec::with_capacity(GROUPS);
    let mut last = root.clone();
    for _ in 0..GROUPS {
        let group = if chain { last.child() } else { root.child() };
        groups.push(group.clone());
        last = group;
    }
    (root, groups)
}

/// The peers' tree of the benchmarks: a `TaskTracker` and a child
/// `CancellationToken` per node, in the same shape.
fn peer_tree(chain: bool) -> Vec<(TaskTracker, CancellationToken)> {
    let mut nodes = Vec::with_capacity(GROUPS + 1);
    nodes.push((TaskTracker::new(), CancellationToken::new()));
    for i in 0..GROUPS {
        let parent = if chain { &nodes[i].1 } else { &nodes[0].1 };
        let token = parent.child_token();
        nodes.push((TaskTracker::new(), token));
    }
    nodes
}

/// The resident memory of this process in KiB (`VmRSS`), where Linux's
/// `/proc/self/status` says.
fn resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn usage(got: &str) -> ! {
    eprintln!(
        "unknown mode {got:?}: shutdown|wait|build|build-peers flat|chain, go, tracker, \
         pending [THREADS|churn], sort, stubborn [TASKS], late-groups [GROUPS], \
         together [GROUPS] [sequential|flat], \
         shielded [TASKS], hub-chain [DEPTH] [nohub], tree [together], tree-peers [ordered], wake oneshot|lean|recording|tracker, \
         reopen [task]"
    );
    std::process::exit(2);
}
