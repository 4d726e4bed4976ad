//! The workloads of issue 4, shared by the criterion benches (one file per
//! family) and by the interleaved report (`benches/report.rs`).
//!
//! Every workload is a list of [`Variant`]s: one per implementation, each a
//! closure `run(iters) -> Duration` that does `iters` iterations of the same
//! work and returns the time they took (or, for wake latency, the sum of the
//! measured latencies). Criterion drives a closure through `iter_custom`; the
//! report calls every variant of a workload in turn, round after round, and
//! takes medians. Each variant owns what it needs (its runtime, its group), so
//! the same closure can be run again without rebuilding it.
//!
//! "Per op" is what the workload's `ops` says: one add/done pair, one task,
//! one wake-up. A variant may do a different number of ops per iteration
//! than its workload (a cheap reference op repeated to be measurable): then
//! it says so in its own `ops_per_iter`.
//!
//! A sample may also record side measurements ([`record_extra`]: the time to
//! the first abort, the worst add/done stall) and a workload may leave notes
//! for its table ([`note`]: the heap a setup retained); the report prints
//! them as extra columns and lines under the table.
//!
//! Workloads 9 and 10 (issues 11 and 16) are in [`rows`]; the counting
//! allocator the report binary installs for their memory rows is in
//! [`counting`].

// Each bench binary uses a part of this module.
#![allow(dead_code)]

pub(crate) mod counting;
pub(crate) mod rows;

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use taskgroup::WaitGroup;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// One implementation of one workload.
pub(crate) struct Variant {
    /// Shown in tables: `taskgroup lean`, `TaskTracker`, …
    pub(crate) name: String,
    /// Runs `iters` iterations and returns the time measured.
    pub(crate) run: Box<dyn FnMut(u64) -> Duration>,
    /// Ops done by one iteration of this variant, when not the workload's.
    pub(crate) ops_per_iter: Option<u64>,
}

impl fmt::Debug for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Variant").field("name", &self.name).finish()
    }
}

fn variant(name: impl Into<String>, run: impl FnMut(u64) -> Duration + 'static) -> Variant {
    Variant {
        name: name.into(),
        run: Box::new(run),
        ops_per_iter: None,
    }
}

/// A variant that does `ops` ops per iteration, whatever its workload's count.
fn variant_ops(
    name: impl Into<String>,
    ops: u64,
    run: impl FnMut(u64) -> Duration + 'static,
) -> Variant {
    Variant {
        ops_per_iter: Some(ops),
        ..variant(name, run)
    }
}

// ----- side measurements and notes ---------------------------------------------

/// How a side measurement is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    /// Nanoseconds, printed with a unit.
    Ns,
    /// A plain count.
    Count,
}

/// One side measurement of one sample (see [`record_extra`]).
#[derive(Debug, Clone)]
pub(crate) struct Extra {
    /// Column header.
    pub(crate) name: &'static str,
    pub(crate) unit: Unit,
    /// Whether the worst (largest) value matters: the sample keeps the
    /// largest of its iterations' values and the table shows the median and
    /// the largest over the rounds. Otherwise the sample keeps the mean.
    pub(crate) worst: bool,
    pub(crate) value: f64,
}

static EXTRAS: Mutex<Vec<Extra>> = Mutex::new(Vec::new());

/// Records a side measurement of the sample being taken.
pub(crate) fn record_extra(name: &'static str, unit: Unit, worst: bool, value: f64) {
    EXTRAS.lock().expect("not poisoned").push(Extra {
        name,
        unit,
        worst,
        value,
    });
}

/// The side measurements recorded since the last call, one per name (the
/// largest or the mean of that name's values, see [`Extra::worst`]), in the
/// order first recorded.
pub(crate) fn take_extras() -> Vec<Extra> {
    let all = std::mem::take(&mut *EXTRAS.lock().expect("not poisoned"));
    let mut out: Vec<(Extra, usize)> = Vec::new();
    for e in all {
        match out.iter_mut().find(|(o, _)| o.name == e.name) {
            Some((o, n)) if o.worst => {
                o.value = o.value.max(e.value);
                *n += 1;
            }
            Some((o, n)) => {
                o.value += e.value;
                *n += 1;
            }
            None => out.push((e, 1)),
        }
    }
    out.into_iter()
        .map(|(mut e, n)| {
            if !e.worst {
                e.value /= n as f64;
            }
            e
        })
        .collect()
}

static NOTES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A line printed under the table of the workload being built or run.
pub(crate) fn note(line: impl Into<String>) {
    NOTES.lock().expect("not poisoned").push(line.into());
}

/// The notes left since the last call.
pub(crate) fn take_notes() -> Vec<String> {
    std::mem::take(&mut *NOTES.lock().expect("not poisoned"))
}

/// One workload: what one op is and its variants.
#[derive(Debug)]
pub(crate) struct Workload {
    /// Short key used by the targets, e.g. `w1.busy`.
    pub(crate) key: &'static str,
    /// Title for the table.
    pub(crate) title: String,
    /// What one op is, for the unit column.
    pub(crate) op: &'static str,
    /// Ops done by one iteration (`run(1)`), to turn a time into time per op.
    pub(crate) ops_per_iter: u64,
    pub(crate) variants: Vec<Variant>,
}

/// The lean configuration: no identity recorded for guards.
pub(crate) fn lean() -> WaitGroup {
    WaitGroup::builder().record_guards(false).build()
}

/// The default configuration: every guard records its id, site and start.
pub(crate) fn recording() -> WaitGroup {
    WaitGroup::new()
}

pub(crate) fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

pub(crate) fn multi_thread() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Which runtime a spawn workload runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    CurrentThread,
    MultiThread,
}

impl Flavor {
    pub(crate) fn runtime(self) -> Runtime {
        match self {
            Flavor::CurrentThread => current_thread(),
            Flavor::MultiThread => multi_thread(),
        }
    }
    pub(crate) fn label(self) -> &'static str {
        match self {
            Flavor::CurrentThread => "current-thread",
            Flavor::MultiThread => "2-worker multi-thread",
        }
    }
}

fn timed(iters: u64, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed()
}

// ----- workload 1: add + done, one thread --------------------------------------

/// Whether the add/done pair is the group's last work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Occupancy {
    /// Another guard stays pending: done() never takes the count to zero.
    Busy,
    /// The pair takes the count 0 -> 1 -> 0, with nobody waiting.
    LastOut,
}

/// Workload 1a/1b: one add/done pair per op on one thread.
pub(crate) fn add_done(occupancy: Occupancy) -> Workload {
    let busy = occupancy == Occupancy::Busy;
    let mut variants = Vec::new();

    let floor = Arc::new(AtomicUsize::new(usize::from(busy)));
    variants.push(variant("floor: Arc<AtomicUsize> add+sub", move |iters| {
        let counter = black_box(&floor);
        timed(iters, || {
            counter.fetch_add(1, Ordering::Relaxed);
            black_box(counter.fetch_sub(1, Ordering::Release));
        })
    }));

    for (name, wg) in [
        ("taskgroup lean", lean()),
        ("taskgroup recording", recording()),
    ] {
        let hold = busy.then(|| wg.add());
        variants.push(variant(name, move |iters| {
            let _hold = &hold;
            timed(iters, || {
                let guard = wg.add();
                black_box(&guard);
                drop(guard);
            })
        }));
    }

    let tracker = TaskTracker::new();
    let hold = busy.then(|| tracker.token());
    variants.push(variant("TaskTracker token()", move |iters| {
        let _hold = &hold;
        timed(iters, || {
            let token = tracker.token();
            black_box(&token);
            drop(token);
        })
    }));

    // crossbeam's WaitGroup counts itself: a pair on it is never the last.
    if busy {
        let wg = crossbeam_utils::sync::WaitGroup::new();
        variants.push(variant("crossbeam WaitGroup clone", move |iters| {
            timed(iters, || {
                let clone = wg.clone();
                black_box(&clone);
                drop(clone);
            })
        }));
    }

    let wg = awaitgroup::WaitGroup::new();
    let hold = busy.then(|| wg.worker());
    variants.push(variant("awaitgroup worker()", move |iters| {
        let _hold = &hold;
        timed(iters, || {
            let worker = wg.worker();
            black_box(&worker);
            drop(worker);
        })
    }));

    // What a recorded add/done pair is made of, for the report's reasoning
    // on the recording target: one clock read (the entry's start time) and a
    // shard lock taken on add and again on done.
    if busy {
        variants.push(variant("reference: one Instant::now()", move |iters| {
            timed(iters, || {
                black_box(tokio::time::Instant::now());
            })
        }));
        let lock = parking_lot::Mutex::new(0_u64);
        variants.push(variant("reference: two Mutex lock+unlock", move |iters| {
            let lock = black_box(&lock);
            timed(iters, || {
                *lock.lock() += 1;
                *lock.lock() -= 1;
            })
        }));
    }

    let (key, title) = match occupancy {
        Occupancy::Busy => (
            "w1.busy",
            "1a. add + done, one thread, another guard pending",
        ),
        Occupancy::LastOut => (
            "w1.last",
            "1b. add + done, one thread, last one out, no waiter",
        ),
    };
    Workload {
        key,
        title: title.into(),
        op: "pair",
        ops_per_iter: 1,
        variants,
    }
}

/// Polls `fut` once with a waker that does nothing.
fn poll_once<F: Future>(fut: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    let waker = futures::task::noop_waker();
    fut.poll(&mut Context::from_waker(&waker))
}

/// Workload 1c: add, a waiter starts waiting (polled once, pending), done
/// (wakes it), the waiter is polled to completion. One op = all of that.
pub(crate) fn add_done_waiter() -> Workload {
    let mut variants = Vec::new();

    variants.push(variant("oneshot: send + recv", move |iters| {
        timed(iters, || {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let mut rx = pin!(rx);
            assert!(poll_once(rx.as_mut()).is_pending());
            tx.send(()).expect("receiver alive");
            assert!(poll_once(rx.as_mut()).is_ready());
        })
    }));

    for (name, wg) in [
        ("taskgroup lean", lean()),
        ("taskgroup recording", recording()),
    ] {
        variants.push(variant(name, move |iters| {
            timed(iters, || {
                let guard = wg.add();
                let mut wait = pin!(wg.wait());
                assert!(poll_once(wait.as_mut()).is_pending());
                drop(guard);
                assert!(poll_once(wait.as_mut()).is_ready());
            })
        }));
    }

    let tracker = TaskTracker::new();
    tracker.close();
    variants.push(variant("TaskTracker token() + wait()", move |iters| {
        timed(iters, || {
            let token = tracker.token();
            let mut wait = pin!(tracker.wait());
            assert!(poll_once(wait.as_mut()).is_pending());
            drop(token);
            assert!(poll_once(wait.as_mut()).is_ready());
        })
    }));

    let mut wg = awaitgroup::WaitGroup::new();
    variants.push(variant("awaitgroup worker() + wait()", move |iters| {
        timed(iters, || {
            let worker = wg.worker();
            {
                let mut wait = pin!(wg.wait());
                assert!(poll_once(wait.as_mut()).is_pending());
                drop(worker);
                assert!(poll_once(wait.as_mut()).is_ready());
            }
        })
    }));

    Workload {
        key: "w1.waiter",
        title: "1c. add + done, last one out, with a waiter (poll, done, poll)".into(),
        op: "pair",
        ops_per_iter: 1,
        variants,
    }
}

// ----- workload 2: two threads contended ---------------------------------------

/// Overlap of the two threads' running intervals in each `two_threads` call
/// since the last [`take_overlap`], as a fraction of the wall time.
static OVERLAP: Mutex<Vec<f64>> = Mutex::new(Vec::new());

/// The mean overlap of the two-thread runs since the last call, if any: 1.0
/// when both threads ran from start to end together, near 0.5 when one ran
/// after the other (the machine was busy and the "contended" numbers are
/// then mostly uncontended).
pub(crate) fn take_overlap() -> Option<f64> {
    let mut all = OVERLAP.lock().expect("not poisoned");
    let n = all.len();
    let mean = (n > 0).then(|| all.iter().sum::<f64>() / n as f64);
    all.clear();
    mean
}

/// Runs `body(iters)` on two threads that spin until both are running, then
/// start together; returns the wall time from the start until both finished.
fn two_threads(iters: u64, body: &(dyn Fn(u64) + Sync)) -> Duration {
    let ready = AtomicUsize::new(0);
    let go = AtomicUsize::new(0);
    let (wall, spans) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    ready.fetch_add(1, Ordering::AcqRel);
                    while go.load(Ordering::Acquire) == 0 {
                        std::hint::spin_loop();
                    }
                    let begin = Instant::now();
                    body(iters);
                    (begin, Instant::now())
                })
            })
            .collect();
        while ready.load(Ordering::Acquire) < 2 {
            std::hint::spin_loop();
        }
        let start = Instant::now();
        go.store(1, Ordering::Release);
        let spans: Vec<(Instant, Instant)> = handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .collect();
        (start.elapsed(), spans)
    });
    let (a, b) = (spans[0], spans[1]);
    let together = a.1.min(b.1).saturating_duration_since(a.0.max(b.0));
    let overlap = together.as_secs_f64() / wall.as_secs_f64().max(1e-12);
    OVERLAP.lock().expect("not poisoned").push(overlap);
    wall
}

/// Makes `make()` after a spacer allocation of `spacer` bytes (kept alive), so
/// that the allocator places the new object at a different offset within a
/// cache line. The spacer must outlive the object; it is returned with it.
fn placed<T>(spacer: usize, make: impl FnOnce() -> T) -> (T, Vec<u8>) {
    let pad = vec![0u8; spacer];
    (make(), pad)
}

/// Allocation placements tried for the contended workload (spacer bytes).
pub(crate) const PLACEMENTS: [usize; 4] = [0, 16, 32, 48];

/// Workload 2: two threads each doing `iters` add/done pairs on one group.
/// One op = one pair (time per op = wall time / all pairs of both threads).
pub(crate) fn contended() -> Workload {
    let mut variants = Vec::new();
    for (p, &spacer) in PLACEMENTS.iter().enumerate() {
        let (floor, pad) = placed(spacer, || Arc::new(AtomicUsize::new(0)));
        variants.push(variant(
            format!("floor: Arc<AtomicUsize> [p{p}]"),
            move |iters| {
                let _pad = &pad;
                let counter = &*floor;
                two_threads(iters, &|n| {
                    for _ in 0..n {
                        counter.fetch_add(1, Ordering::Relaxed);
                        black_box(counter.fetch_sub(1, Ordering::Release));
                    }
                })
            },
        ));
    }
    for (p, &spacer) in PLACEMENTS.iter().enumerate() {
        for (name, make) in [
            ("taskgroup lean", lean as fn() -> WaitGroup),
            ("taskgroup recording", recording),
        ] {
            let (wg, pad) = placed(spacer, make);
            variants.push(variant(format!("{name} [p{p}]"), move |iters| {
                let _pad = &pad;
                let wg = &wg;
                two_threads(iters, &|n| {
                    for _ in 0..n {
                        let guard = wg.add();
                        black_box(&guard);
                        drop(guard);
                    }
                })
            }));
        }
    }
    for (p, &spacer) in PLACEMENTS.iter().enumerate() {
        let (tracker, pad) = placed(spacer, TaskTracker::new);
        variants.push(variant(format!("TaskTracker [p{p}]"), move |iters| {
            let _pad = &pad;
            let tracker = &tracker;
            two_threads(iters, &|n| {
                for _ in 0..n {
                    let token = tracker.token();
                    black_box(&token);
                    drop(token);
                }
            })
        }));
    }
    for (p, &spacer) in PLACEMENTS.iter().enumerate() {
        let (wg, pad) = placed(spacer, awaitgroup::WaitGroup::new);
        variants.push(variant(format!("awaitgroup [p{p}]"), move |iters| {
            let _pad = &pad;
            let wg = &wg;
            two_threads(iters, &|n| {
                for _ in 0..n {
                    let worker = wg.worker();
                    black_box(&worker);
                    drop(worker);
                }
            })
        }));
    }
    // crossbeam's WaitGroup takes a mutex per step: one placement is enough
    // to show where it stands.
    let wg = crossbeam_utils::sync::WaitGroup::new();
    variants.push(variant("crossbeam WaitGroup [p0]", move |iters| {
        let wg = &wg;
        two_threads(iters, &|n| {
            for _ in 0..n {
                let clone = wg.clone();
                black_box(&clone);
                drop(clone);
            }
        })
    }));
    Workload {
        key: "w2",
        title: "2. two threads, each doing add + done pairs on one group (per pair, wall time / pairs of both threads)".into(),
        op: "pair",
        ops_per_iter: 2,
        variants,
    }
}

// ----- workloads 3 and 4: spawn 100k tasks and wait -----------------------------

/// Tasks per batch in workloads 3 and 4.
pub(crate) const TASKS: u64 = 100_000;

/// The error of a failing task in workload 4.
#[derive(Debug)]
pub(crate) struct Fail(pub(crate) u64);

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {} failed", self.0)
    }
}

impl std::error::Error for Fail {}

fn outcome(i: u64, failing: bool) -> Result<(), Fail> {
    if failing && i % 100 == 0 {
        Err(Fail(i))
    } else {
        Ok(())
    }
}

fn batches(
    rt: &Runtime,
    iters: u64,
    mut batch: impl FnMut() -> std::pin::Pin<Box<dyn Future<Output = ()>>>,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let fut = batch();
        let start = Instant::now();
        rt.block_on(fut);
        total += start.elapsed();
    }
    total
}

/// Workload 3's two phases, per task, as side measurements: the spawn loop
/// (from `spawn` to `complete`), and from the end of that loop until the wait
/// returned (on the current-thread runtime no task runs during the loop, so
/// this is the tasks' run and completion plus the wait; on two workers the
/// phases overlap).
fn record_phases(spawn: Instant, complete: Instant) {
    let end = Instant::now();
    let per = |d: Duration| d.as_nanos() as f64 / TASKS as f64;
    record_extra(PHASE_SPAWN, Unit::Ns, false, per(complete - spawn));
    record_extra(PHASE_COMPLETE, Unit::Ns, false, per(end - complete));
}

/// The names of [`record_phases`]'s side measurements.
pub(crate) const PHASE_SPAWN: &str = "spawn loop per task";
/// See [`PHASE_SPAWN`].
pub(crate) const PHASE_COMPLETE: &str = "completion + wait per task";

/// Workload 3: `TASKS` trivial tasks spawned, then all waited for.
pub(crate) fn spawn_trivial(flavor: Flavor) -> Workload {
    let mut variants = Vec::new();

    let rt = flavor.runtime();
    variants.push(variant("raw tokio::spawn + await handles", move |iters| {
        batches(&rt, iters, || {
            Box::pin(async {
                let mut handles = Vec::with_capacity(TASKS as usize);
                for _ in 0..TASKS {
                    handles.push(tokio::spawn(async {}));
                }
                for handle in handles {
                    handle.await.expect("task");
                }
            })
        })
    }));

    let rt = flavor.runtime();
    variants.push(variant("taskgroup go() + wait()", move |iters| {
        batches(&rt, iters, || {
            Box::pin(async {
                let wg = WaitGroup::new();
                let spawn = Instant::now();
                for _ in 0..TASKS {
                    wg.go(|_ctx| async { Ok::<(), Infallible>(()) });
                }
                let complete = Instant::now();
                wg.wait().await.expect("no failures");
                record_phases(spawn, complete);
            })
        })
    }));

    let rt = flavor.runtime();
    variants.push(variant("TaskTracker spawn + close + wait", move |iters| {
        batches(&rt, iters, || {
            Box::pin(async {
                let tracker = TaskTracker::new();
                let spawn = Instant::now();
                for _ in 0..TASKS {
                    tracker.spawn(async {});
                }
                let complete = Instant::now();
                tracker.close();
                tracker.wait().await;
                record_phases(spawn, complete);
            })
        })
    }));

    let rt = flavor.runtime();
    variants.push(variant("JoinSet spawn + join_next", move |iters| {
        batches(&rt, iters, || {
            Box::pin(async {
                let mut set = JoinSet::new();
                for _ in 0..TASKS {
                    set.spawn(async {});
                }
                while let Some(res) = set.join_next().await {
                    res.expect("task");
                }
            })
        })
    }));

    Workload {
        key: match flavor {
            Flavor::CurrentThread => "w3.ct",
            Flavor::MultiThread => "w3.mt",
        },
        title: format!(
            "3. 100k trivial tasks spawned then waited, {}",
            flavor.label()
        ),
        op: "task",
        ops_per_iter: TASKS,
        variants,
    }
}

/// Workload 4: `TASKS` tasks returning `Result`, 1% failing, every error
/// collected (plus taskgroup's all-succeed run with the same error type).
pub(crate) fn spawn_failing(flavor: Flavor) -> Workload {
    let mut variants = Vec::new();

    for (name, failing) in [
        ("taskgroup go(), all succeed", false),
        ("taskgroup go(), 1% fail", true),
    ] {
        let rt = flavor.runtime();
        variants.push(variant(name, move |iters| {
            batches(&rt, iters, move || {
                Box::pin(async move {
                    let wg = WaitGroup::new();
                    for i in 0..TASKS {
                        wg.go(move |_ctx| async move { outcome(i, failing) });
                    }
                    let failed = match wg.wait().await {
                        Ok(()) => 0,
                        Err(err) => err.errors().len() as u64,
                    };
                    assert_eq!(failed, if failing { TASKS / 100 } else { 0 });
                })
            })
        }));
    }

    let rt = flavor.runtime();
    variants.push(variant("JoinSet, errors collected", move |iters| {
        batches(&rt, iters, || {
            Box::pin(async {
                let mut set = JoinSet::new();
                for i in 0..TASKS {
                    set.spawn(async move { outcome(i, true) });
                }
                let mut errors = Vec::new();
                while let Some(res) = set.join_next().await {
                    if let Err(e) = res.expect("task") {
                        errors.push(e);
                    }
                }
                assert_eq!(errors.len() as u64, TASKS / 100);
            })
        })
    }));

    let rt = flavor.runtime();
    variants.push(variant(
        "TaskTracker + Mutex<Vec> of errors",
        move |iters| {
            batches(&rt, iters, || {
                Box::pin(async {
                    let tracker = TaskTracker::new();
                    let errors = Arc::new(Mutex::new(Vec::new()));
                    for i in 0..TASKS {
                        let errors = Arc::clone(&errors);
                        tracker.spawn(async move {
                            if let Err(e) = outcome(i, true) {
                                errors.lock().expect("not poisoned").push(e);
                            }
                        });
                    }
                    tracker.close();
                    tracker.wait().await;
                    assert_eq!(
                        errors.lock().expect("not poisoned").len() as u64,
                        TASKS / 100
                    );
                })
            })
        },
    ));

    let rt = flavor.runtime();
    variants.push(variant(
        "raw tokio::spawn, errors collected",
        move |iters| {
            batches(&rt, iters, || {
                Box::pin(async {
                    let mut handles = Vec::with_capacity(TASKS as usize);
                    for i in 0..TASKS {
                        handles.push(tokio::spawn(async move { outcome(i, true) }));
                    }
                    let mut errors = Vec::new();
                    for handle in handles {
                        if let Err(e) = handle.await.expect("task") {
                            errors.push(e);
                        }
                    }
                    assert_eq!(errors.len() as u64, TASKS / 100);
                })
            })
        },
    ));

    Workload {
        key: match flavor {
            Flavor::CurrentThread => "w4.ct",
            Flavor::MultiThread => "w4.mt",
        },
        title: format!(
            "4. 100k tasks returning Result, 1% failing, {}",
            flavor.label()
        ),
        op: "task",
        ops_per_iter: TASKS,
        variants,
    }
}

// ----- workload 5: wake latency -------------------------------------------------

/// How long the notifier waits before the wake-up, so that the waiter is
/// parked and the wake-up takes the slow path.
const PARK_DELAY: Duration = Duration::from_micros(50);

/// Something a waiter can wait on and a notifier can fire from another thread.
type Fire = Box<dyn FnOnce() + Send>;

/// Runs `iters` wake-ups from an OS thread: for each, `setup` makes a pair
/// (the waiter's future, the notifier's action); the notifier thread sleeps
/// [`PARK_DELAY`], stores the time, and fires; the waiter, blocked on the
/// future in a current-thread runtime, takes the time when it resumes. Returns
/// the sum of the latencies.
fn wake_from_thread(
    rt: &Runtime,
    iters: u64,
    setup: &mut dyn FnMut() -> (std::pin::Pin<Box<dyn Future<Output = ()>>>, Fire),
) -> Duration {
    let base = Instant::now();
    let fired_at = Arc::new(AtomicU64::new(0));
    let (tx, rx) = std::sync::mpsc::channel::<Fire>();
    let notifier = std::thread::spawn(move || {
        for fire in rx {
            std::thread::sleep(PARK_DELAY);
            fire();
        }
    });
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let (wait, fire) = setup();
        let stamp = Arc::clone(&fired_at);
        tx.send(Box::new(move || {
            stamp.store(base.elapsed().as_nanos() as u64, Ordering::Relaxed);
            fire();
        }))
        .expect("notifier alive");
        rt.block_on(wait);
        let resumed = base.elapsed().as_nanos() as u64;
        // The fire's release (done/send) happens-before the wait's return.
        let fired = fired_at.load(Ordering::Relaxed);
        total += Duration::from_nanos(resumed.saturating_sub(fired));
    }
    drop(tx);
    notifier.join().expect("notifier");
    total
}

/// Workload 5a: wake latency from an OS thread to a task blocked in a
/// current-thread runtime.
pub(crate) fn wake_thread() -> Workload {
    let mut variants = Vec::new();

    let rt = current_thread();
    variants.push(variant("tokio oneshot", move |iters| {
        wake_from_thread(&rt, iters, &mut || {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            (
                Box::pin(async move { rx.await.expect("sent") }),
                Box::new(move || tx.send(()).expect("receiver alive")),
            )
        })
    }));

    for (name, make) in [
        ("taskgroup lean", lean as fn() -> WaitGroup),
        ("taskgroup recording", recording),
    ] {
        let rt = current_thread();
        variants.push(variant(name, move |iters| {
            wake_from_thread(&rt, iters, &mut || {
                let wg = make();
                let guard = wg.add();
                (
                    Box::pin(async move { wg.wait().await.expect("no failures") }),
                    Box::new(move || guard.done()),
                )
            })
        }));
    }

    let rt = current_thread();
    variants.push(variant("TaskTracker", move |iters| {
        wake_from_thread(&rt, iters, &mut || {
            let tracker = TaskTracker::new();
            let token = tracker.token();
            tracker.close();
            (
                Box::pin(async move { tracker.wait().await }),
                Box::new(move || drop(token)),
            )
        })
    }));

    let rt = current_thread();
    variants.push(variant("awaitgroup", move |iters| {
        wake_from_thread(&rt, iters, &mut || {
            let mut wg = awaitgroup::WaitGroup::new();
            let worker = wg.worker();
            (
                Box::pin(async move { wg.wait().await }),
                Box::new(move || worker.done()),
            )
        })
    }));

    Workload {
        key: "w5.thread",
        title: "5a. wake latency, last done() on an OS thread -> waiting task resumed".into(),
        op: "wake",
        ops_per_iter: 1,
        variants,
    }
}

/// Workload 5b: wake latency from one task to another on a current-thread
/// runtime: the waiter task is parked, the main task fires, the waiter takes
/// the time when it resumes.
pub(crate) fn wake_task() -> Workload {
    /// Per iteration: the waiter (returns its resume time) and the action.
    type Pair = (
        std::pin::Pin<Box<dyn Future<Output = Instant> + Send>>,
        Box<dyn FnOnce()>,
    );

    fn run(rt: &Runtime, iters: u64, setup: impl Fn() -> Pair) -> Duration {
        rt.block_on(async {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (wait, fire) = setup();
                let waiter = tokio::spawn(wait);
                // Let the waiter run until it parks.
                tokio::task::yield_now().await;
                tokio::task::yield_now().await;
                let fired = Instant::now();
                fire();
                let resumed = waiter.await.expect("waiter");
                total += resumed.saturating_duration_since(fired);
            }
            total
        })
    }

    let mut variants = Vec::new();
    let rt = current_thread();
    variants.push(variant("tokio oneshot", move |iters| {
        run(&rt, iters, || {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            (
                Box::pin(async move {
                    rx.await.expect("sent");
                    Instant::now()
                }),
                Box::new(move || tx.send(()).expect("receiver alive")),
            )
        })
    }));
    for (name, group) in [
        ("taskgroup lean", lean as fn() -> WaitGroup),
        ("taskgroup recording", recording),
    ] {
        let rt = current_thread();
        variants.push(variant(name, move |iters| {
            run(&rt, iters, || {
                let wg = group();
                let guard = wg.add();
                (
                    Box::pin(async move {
                        wg.wait().await.expect("no failures");
                        Instant::now()
                    }),
                    Box::new(move || guard.done()),
                )
            })
        }));
    }
    let rt = current_thread();
    variants.push(variant("TaskTracker", move |iters| {
        run(&rt, iters, || {
            let tracker = TaskTracker::new();
            let token = tracker.token();
            tracker.close();
            (
                Box::pin(async move {
                    tracker.wait().await;
                    Instant::now()
                }),
                Box::new(move || drop(token)),
            )
        })
    }));
    let rt = current_thread();
    variants.push(variant("awaitgroup", move |iters| {
        run(&rt, iters, || {
            let mut wg = awaitgroup::WaitGroup::new();
            let worker = wg.worker();
            (
                Box::pin(async move {
                    wg.wait().await;
                    Instant::now()
                }),
                Box::new(move || worker.done()),
            )
        })
    }));

    Workload {
        key: "w5.task",
        title: "5b. wake latency, last done() in a task -> waiting task resumed (current-thread)"
            .into(),
        op: "wake",
        ops_per_iter: 1,
        variants,
    }
}

// ----- workload 7: scale ---------------------------------------------------------

/// Entries in the scale workloads.
pub(crate) const SCALE: u64 = 1_000_000;

/// Workload 7a: `SCALE` guards taken and kept, then all completed.
pub(crate) fn scale_guards() -> Workload {
    fn run<G>(iters: u64, keep: &mut Vec<G>, mut add: impl FnMut() -> G) -> Duration {
        timed(iters, || {
            for _ in 0..SCALE {
                keep.push(add());
            }
            keep.clear();
        })
    }
    let mut variants = Vec::new();

    let floor = Arc::new(AtomicUsize::new(0));
    variants.push(variant("floor: Arc<AtomicUsize> add+sub", move |iters| {
        let counter = black_box(&floor);
        timed(iters, || {
            for _ in 0..SCALE {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            for _ in 0..SCALE {
                black_box(counter.fetch_sub(1, Ordering::Release));
            }
        })
    }));
    for (name, make) in [
        ("taskgroup lean", lean as fn() -> WaitGroup),
        ("taskgroup recording", recording),
    ] {
        let wg = make();
        let mut keep = Vec::with_capacity(SCALE as usize);
        variants.push(variant(name, move |iters| {
            let t = run(iters, &mut keep, || wg.add());
            assert!(wg.is_empty());
            t
        }));
    }
    let tracker = TaskTracker::new();
    let mut keep = Vec::with_capacity(SCALE as usize);
    variants.push(variant("TaskTracker token()", move |iters| {
        run(iters, &mut keep, || tracker.token())
    }));
    let wg = crossbeam_utils::sync::WaitGroup::new();
    let mut keep = Vec::with_capacity(SCALE as usize);
    variants.push(variant("crossbeam WaitGroup clone", move |iters| {
        run(iters, &mut keep, || wg.clone())
    }));
    let wg = awaitgroup::WaitGroup::new();
    let mut keep = Vec::with_capacity(SCALE as usize);
    variants.push(variant("awaitgroup worker()", move |iters| {
        run(iters, &mut keep, || wg.worker())
    }));
    Workload {
        key: "w7.guards",
        title: "7a. 1e6 pending guards, then all done (per guard)".into(),
        op: "guard",
        ops_per_iter: SCALE,
        variants,
    }
}

/// Workload 7b: `SCALE` idle tasks (each waiting for cancellation), released
/// at once, then waited for, on a current-thread runtime.
pub(crate) fn scale_idle_tasks() -> Workload {
    let mut variants = Vec::new();

    let rt = current_thread();
    variants.push(variant("raw tokio::spawn + await handles", move |iters| {
        batches(&rt, iters, || {
            Box::pin(async {
                let token = CancellationToken::new();
                let mut handles = Vec::with_capacity(SCALE as usize);
                for _ in 0..SCALE {
                    let token = token.clone();
                    handles.push(tokio::spawn(async move { token.cancelled().await }));
                }
                tokio::task::yield_now().await;
                token.cancel();
                for handle in handles {
                    handle.await.expect("task");
                }
            })
        })
    }));
    let rt = current_thread();
    variants.push(variant(
        "taskgroup go() + cancel() + wait()",
        move |iters| {
            batches(&rt, iters, || {
                Box::pin(async {
                    let wg = WaitGroup::new();
                    for _ in 0..SCALE {
                        wg.go(|ctx| async move {
                            ctx.cancelled().await;
                            Ok::<(), Infallible>(())
                        });
                    }
                    tokio::task::yield_now().await;
                    wg.cancel();
                    wg.wait().await.expect("no failures");
                })
            })
        },
    ));
    let rt = current_thread();
    variants.push(variant("TaskTracker + CancellationToken", move |iters| {
        batches(&rt, iters, || {
            Box::pin(async {
                let tracker = TaskTracker::new();
                let token = CancellationToken::new();
                for _ in 0..SCALE {
                    let token = token.clone();
                    tracker.spawn(async move { token.cancelled().await });
                }
                tokio::task::yield_now().await;
                token.cancel();
                tracker.close();
                tracker.wait().await;
            })
        })
    }));
    let rt = current_thread();
    variants.push(variant("JoinSet + CancellationToken", move |iters| {
        batches(&rt, iters, || {
            Box::pin(async {
                let mut set = JoinSet::new();
                let token = CancellationToken::new();
                for _ in 0..SCALE {
                    let token = token.clone();
                    set.spawn(async move { token.cancelled().await });
                }
                tokio::task::yield_now().await;
                token.cancel();
                while let Some(res) = set.join_next().await {
                    res.expect("task");
                }
            })
        })
    }));
    Workload {
        key: "w7.tasks",
        title: "7b. 1e6 idle tasks released at once, then waited, current-thread (per task)".into(),
        op: "task",
        ops_per_iter: SCALE,
        variants,
    }
}

/// Workload 7c: the pending report of `SCALE` pending guards. One op = one
/// whole report. The peers have only a count (`len()`), shown for scale.
pub(crate) fn scale_report() -> Workload {
    let mut variants = Vec::new();
    for (name, make) in [
        (
            "taskgroup recording pending()",
            recording as fn() -> WaitGroup,
        ),
        ("taskgroup lean pending() (counts only)", lean),
    ] {
        let wg = make();
        let guards: Vec<_> = (0..SCALE).map(|_| wg.add()).collect();
        variants.push(variant(name, move |iters| {
            let _guards = &guards;
            timed(iters, || {
                let report = wg.pending();
                assert_eq!(report.len(), SCALE as usize);
                black_box(report);
            })
        }));
    }
    let tracker = TaskTracker::new();
    let tokens: Vec<_> = (0..SCALE).map(|_| tracker.token()).collect();
    variants.push(variant("TaskTracker len() (a count only)", move |iters| {
        let _tokens = &tokens;
        timed(iters, || {
            assert_eq!(black_box(&tracker).len(), SCALE as usize);
        })
    }));
    Workload {
        key: "w7.report",
        title: "7c. snapshot of 1e6 pending entries (per snapshot)".into(),
        op: "snapshot",
        ops_per_iter: 1,
        variants,
    }
}

// ----- workload 8: linked tree ----------------------------------------------------

/// Depth below the root, and children per group.
pub(crate) const TREE_DEPTH: u32 = 3;
pub(crate) const TREE_FANOUT: usize = 10;

/// Groups in the tree, root included (1 + 10 + 100 + 1000).
pub(crate) fn tree_groups() -> u64 {
    (0..=TREE_DEPTH).map(|d| (TREE_FANOUT as u64).pow(d)).sum()
}

fn build_tree(root: &WaitGroup, depth: u32, each: &mut dyn FnMut(&WaitGroup)) {
    each(root);
    if depth == 0 {
        return;
    }
    for _ in 0..TREE_FANOUT {
        let child = root.child();
        build_tree(&child, depth - 1, each);
    }
}

/// The peers' tree: a `TaskTracker` per node and a `CancellationToken` tree.
struct PeerNode {
    tracker: TaskTracker,
    token: CancellationToken,
    children: Vec<PeerNode>,
}

fn build_peer_tree(
    token: CancellationToken,
    depth: u32,
    each: &mut dyn FnMut(&PeerNode),
) -> PeerNode {
    let mut node = PeerNode {
        tracker: TaskTracker::new(),
        token,
        children: Vec::new(),
    };
    each(&node);
    if depth > 0 {
        for _ in 0..TREE_FANOUT {
            let child = build_peer_tree(node.token.child_token(), depth - 1, each);
            node.children.push(child);
        }
    }
    node
}

/// Closes and waits every tracker, parent first (the peers' "ordered" wait).
fn wait_peer_tree(node: &PeerNode) -> std::pin::Pin<Box<dyn Future<Output = ()> + '_>> {
    Box::pin(async move {
        node.tracker.close();
        node.tracker.wait().await;
        for child in &node.children {
            wait_peer_tree(child).await;
        }
    })
}

/// Workload 8: a linked tree (depth 3, fan-out 10, 1111 groups), one task
/// per group. "wait": trivial tasks, built then waited. "shutdown": idle
/// tasks waiting for cancellation, then the tree shut down. One op = one
/// whole tree, built, run and drained.
pub(crate) fn tree() -> Workload {
    let mut variants = Vec::new();

    let rt = current_thread();
    variants.push(variant("taskgroup child() tree, wait()", move |iters| {
        batches(&rt, iters, || {
            Box::pin(async {
                let root = WaitGroup::new();
                build_tree(&root, TREE_DEPTH, &mut |wg| {
                    wg.go(|_ctx| async { Ok::<(), Infallible>(()) });
                });
                root.wait().await.expect("no failures");
            })
        })
    }));
    let rt = current_thread();
    variants.push(variant("TaskTracker per node, wait each", move |iters| {
        batches(&rt, iters, || {
            Box::pin(async {
                let root = build_peer_tree(CancellationToken::new(), TREE_DEPTH, &mut |node| {
                    node.tracker.spawn(async {});
                });
                wait_peer_tree(&root).await;
            })
        })
    }));
    // The default shutdown stops the groups one after another, each cancelled once those
    // before it stopped; with `stop_children_together` (inherited by `child()`), all at once,
    // then waited: what the peers' variant does.
    for (name, together) in [
        ("taskgroup child() tree, shutdown()", false),
        (
            "taskgroup child() tree, children stopped together, shutdown()",
            true,
        ),
    ] {
        let rt = current_thread();
        variants.push(variant(name, move |iters| {
            batches(&rt, iters, || {
                Box::pin(async move {
                    let root = WaitGroup::builder()
                        .stop_children_together(together)
                        .build();
                    build_tree(&root, TREE_DEPTH, &mut |wg| {
                        wg.go(|ctx| async move {
                            ctx.cancelled().await;
                            Ok::<(), Infallible>(())
                        });
                    });
                    tokio::task::yield_now().await;
                    let report = root.shutdown(Duration::from_secs(10)).await;
                    assert!(report.is_clean(), "{report}");
                })
            })
        }));
    }
    let rt = current_thread();
    variants.push(variant(
        "TaskTracker + CancellationToken tree, cancel + wait each",
        move |iters| {
            batches(&rt, iters, || {
                Box::pin(async {
                    let root = build_peer_tree(CancellationToken::new(), TREE_DEPTH, &mut |node| {
                        let token = node.token.clone();
                        node.tracker.spawn(async move { token.cancelled().await });
                    });
                    tokio::task::yield_now().await;
                    root.token.cancel();
                    wait_peer_tree(&root).await;
                })
            })
        },
    ));
    Workload {
        key: "w8",
        title: format!(
            "8. linked tree, depth {TREE_DEPTH}, fan-out {TREE_FANOUT} ({} groups, one task each), current-thread (per tree)",
            tree_groups()
        ),
        op: "tree",
        ops_per_iter: 1,
        variants,
    }
}

// ----- criterion glue ------------------------------------------------------------

/// Registers every variant of `workload` as one criterion group, each driven
/// through `iter_custom` so the workload's own timing (wall time, or summed
/// latency) is what criterion sees.
pub(crate) fn criterion_workload(c: &mut criterion::Criterion, workload: Workload, heavy: bool) {
    let mut group = c.benchmark_group(workload.key);
    group.throughput(criterion::Throughput::Elements(workload.ops_per_iter));
    if heavy {
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(5));
    }
    for mut v in workload.variants {
        group.bench_function(v.name.as_str(), |b| b.iter_custom(|iters| (v.run)(iters)));
    }
    group.finish();
}
