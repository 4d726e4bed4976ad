//! Workloads 9 (issue 11, "bench rows": what transient children, a burst, a
//! deep chain and a diamond ladder leave a group to pay) and 10 (issue 16,
//! scaling: idle shutdown, stubborn tasks, `pending()` and the empty group
//! from 1e3 to 1e6).
//!
//! Reference variants: tokio-util `TaskTracker` + `CancellationToken` where
//! there is a peer for the operation, otherwise the same call on a fresh
//! group (or, for `pending()` scaling, the smallest size). Shutdown-like rows
//! run on a current-thread runtime, like workload 7b, so that the numbers do
//! not depend on how two workers share two cores.

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use taskgroup::WaitGroup;
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::counting;
use super::{current_thread, note, record_extra, variant, variant_ops, Unit, Workload};

/// Formats a per-item byte count from [`counting::Usage::per`].
fn bytes_and_allocs((bytes, allocs): (f64, f64)) -> String {
    format!("{bytes:.0} B in {allocs:.2} allocations")
}

/// `reps` calls of `op` inside one `block_on`, per iteration; the total time.
fn async_reps<F, Fut>(rt: &Runtime, iters: u64, reps: u64, mut op: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters * reps {
            op().await;
        }
        start.elapsed()
    })
}

/// Per iteration: `setup` (not timed) then `op` on what it made (timed).
fn setup_then<S>(iters: u64, mut setup: impl FnMut() -> S, mut op: impl FnMut(&S)) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let s = setup();
        let start = Instant::now();
        op(&s);
        total += start.elapsed();
        drop(s);
    }
    total
}

// ----- 9a. transient children ---------------------------------------------------

/// Transient child groups made under the parent in 9a.
pub(crate) const TRANSIENT: u64 = 100_000;

/// Workload 9a: `wait()` on an idle parent after `TRANSIENT` child groups were
/// made under it, given one guard each that was completed, and dropped;
/// against `wait()` on a fresh group.
pub(crate) fn transient() -> Workload {
    let mut variants = Vec::new();

    let rt = current_thread();
    let fresh = WaitGroup::new();
    let reps = 20_000;
    variants.push(variant_ops("fresh group wait()", reps, move |iters| {
        let wg = &fresh;
        async_reps(&rt, iters, reps, || async move {
            wg.wait().await.expect("no failures");
        })
    }));

    let parent = WaitGroup::new();
    let ((), usage) = counting::measure(|| {
        for _ in 0..TRANSIENT {
            let c = parent.child();
            c.add().done();
            drop(c);
        }
    });
    let linked = parent.linked().len();
    note(format!(
        "After the {TRANSIENT} transient children the parent's `linked().len()` is {linked}; \
         heap retained per transient child (counting allocator, net of frees, the parent's \
         link list included): {}.",
        if counting::installed() {
            bytes_and_allocs(usage.per(TRANSIENT))
        } else {
            "not measured (no counting allocator in this binary)".into()
        }
    ));
    let rt = current_thread();
    variants.push(variant_ops(
        "parent after 100k transient children, wait()",
        1,
        move |iters| {
            let wg = &parent;
            async_reps(&rt, iters, 1, || async move {
                wg.wait().await.expect("no failures");
            })
        },
    ));

    Workload {
        key: "w9.transient",
        title: "9a. wait() on an idle parent after 100k transient child groups (child(), add().done(), drop), current-thread (per wait)".into(),
        op: "wait",
        ops_per_iter: 1,
        variants,
    }
}

// ----- 9b. burst ----------------------------------------------------------------

/// Guards in the burst of 9b.
pub(crate) const BURST: u64 = 100_000;

/// Workload 9b: `pending()` on an idle group after a burst of `BURST` guards,
/// all pending at once and then completed; against `pending()` on a fresh
/// group. Both record guards (the default).
pub(crate) fn burst() -> Workload {
    let mut variants = Vec::new();

    let fresh = WaitGroup::new();
    let reps = 20_000;
    variants.push(variant_ops("fresh group pending()", reps, move |iters| {
        super::timed(iters * reps, || {
            let report = fresh.pending();
            assert!(report.is_empty());
            black_box(report);
        })
    }));

    let wg = WaitGroup::new();
    let ((), usage) = counting::measure(|| {
        let guards: Vec<_> = (0..BURST).map(|_| wg.add()).collect();
        drop(guards);
    });
    assert!(wg.is_empty());
    note(format!(
        "The burst: {BURST} guards taken on one thread (so in one registry shard), all \
         pending at once, then completed. Heap the group retained afterwards, per guard of \
         the burst (counting allocator, net of frees): {}.",
        if counting::installed() {
            bytes_and_allocs(usage.per(BURST))
        } else {
            "not measured (no counting allocator in this binary)".into()
        }
    ));
    let reps = 20;
    variants.push(variant_ops(
        "group after a 100k-guard burst, pending()",
        reps,
        move |iters| {
            super::timed(iters * reps, || {
                let report = wg.pending();
                assert!(report.is_empty());
                black_box(report);
            })
        },
    ));

    Workload {
        key: "w9.burst",
        title: "9b. pending() on an idle group after a burst of 100k concurrent guards (per call)"
            .into(),
        op: "call",
        ops_per_iter: 1,
        variants,
    }
}

// ----- 9c. chain of 1,000 against a flat tree of 1,000 --------------------------

/// Groups below the root in 9c, in a chain or all directly below it.
pub(crate) const CHAIN: u64 = 1_000;

/// Whether the groups below the root form a chain or hang from the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Each group a `child()` of the one before: `CHAIN` deep.
    Chain,
    /// `CHAIN` children of the root.
    Flat,
}

impl Shape {
    fn label(self) -> &'static str {
        match self {
            Shape::Chain => "chain",
            Shape::Flat => "flat",
        }
    }
}

/// The root of `CHAIN` groups below it in `shape`; nothing pending anywhere.
fn group_tree(shape: Shape) -> Tree {
    let root = WaitGroup::new();
    let mut groups = Vec::with_capacity(CHAIN as usize);
    let mut last = root.clone();
    for _ in 0..CHAIN {
        let child = last.child();
        groups.push(child.clone());
        if shape == Shape::Chain {
            last = child;
        }
    }
    Tree {
        root,
        _groups: groups,
    }
}

/// A tree of groups and a handle to each: a `child()` group whose handles
/// are all dropped leaves its parent once idle, so the benches keep them to
/// measure the whole tree.
struct Tree {
    root: WaitGroup,
    _groups: Vec<WaitGroup>,
}

/// The peers' version: a `TaskTracker` and a `CancellationToken` per node,
/// root first, each token a `child_token()` of the one before (chain) or of
/// the root's (flat).
fn peer_tree(shape: Shape) -> Vec<(TaskTracker, CancellationToken)> {
    let mut nodes = Vec::with_capacity(CHAIN as usize + 1);
    nodes.push((TaskTracker::new(), CancellationToken::new()));
    for i in 0..CHAIN as usize {
        let parent = match shape {
            Shape::Chain => &nodes[i].1,
            Shape::Flat => &nodes[0].1,
        };
        let token = parent.child_token();
        nodes.push((TaskTracker::new(), token));
    }
    nodes
}

/// `close()` + `wait()` on every tracker, root first (the peers' ordered wait).
async fn peer_close_wait(nodes: &[(TaskTracker, CancellationToken)]) {
    for (tracker, _) in nodes {
        tracker.close();
        tracker.wait().await;
    }
}

/// What 9c times on the structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TreeOp {
    /// Making the `CHAIN` groups (nodes) below the root.
    Build,
    /// `wait()` on the root (peers: close + wait each node in order).
    Wait,
    /// `shutdown(1 s)` on the root (peers: cancel the root token, then close
    /// + wait each node in order).
    Shutdown,
}

/// Workload 9c: build, `wait()` or `shutdown(1 s)` of `CHAIN` groups below a
/// root, as a chain and as a flat tree, against a `TaskTracker` +
/// `CancellationToken` per node in the same shapes. Nothing is pending: this
/// is the cost of the structure. One op = one group (node) below the root.
pub(crate) fn chain(op: TreeOp) -> Workload {
    let mut variants = Vec::new();
    for shape in [Shape::Chain, Shape::Flat] {
        let rt = current_thread();
        let name = format!(
            "TaskTracker + CancellationToken {}: {}",
            shape.label(),
            match op {
                TreeOp::Build => "build",
                TreeOp::Wait => "close + wait each",
                TreeOp::Shutdown => "cancel + close + wait each",
            }
        );
        variants.push(variant(name, move |iters| match op {
            TreeOp::Build => setup_then(
                iters,
                || (),
                |()| {
                    black_box(peer_tree(shape));
                },
            ),
            TreeOp::Wait => setup_then(
                iters,
                || peer_tree(shape),
                |nodes| rt.block_on(peer_close_wait(nodes)),
            ),
            TreeOp::Shutdown => setup_then(
                iters,
                || peer_tree(shape),
                |nodes| {
                    rt.block_on(async {
                        nodes[0].1.cancel();
                        peer_close_wait(nodes).await;
                    })
                },
            ),
        }));
        let rt = current_thread();
        let name = format!(
            "taskgroup {}: {}",
            shape.label(),
            match op {
                TreeOp::Build => match shape {
                    Shape::Chain => "build (each a child() of the previous)",
                    Shape::Flat => "build (each a child() of the root)",
                },
                TreeOp::Wait => "wait()",
                TreeOp::Shutdown => "shutdown(1s)",
            }
        );
        variants.push(variant(name, move |iters| match op {
            TreeOp::Build => setup_then(
                iters,
                || (),
                |()| {
                    black_box(group_tree(shape));
                },
            ),
            TreeOp::Wait => setup_then(
                iters,
                || group_tree(shape),
                |tree| {
                    rt.block_on(tree.root.wait()).expect("no failures");
                },
            ),
            TreeOp::Shutdown => setup_then(
                iters,
                || group_tree(shape),
                |tree| {
                    let report = rt.block_on(tree.root.shutdown(Duration::from_secs(1)));
                    assert!(report.is_clean(), "{report}");
                },
            ),
        }));
    }
    // Pushed as peer chain, taskgroup chain, peer flat, taskgroup flat: the
    // peers' chain stays first (the reference), taskgroup's flat tree moves
    // up next to its chain.
    variants.swap(2, 3);
    let (key, what) = match op {
        TreeOp::Build => ("w9.chain.build", "build"),
        TreeOp::Wait => ("w9.chain.wait", "wait() on the root"),
        TreeOp::Shutdown => ("w9.chain.shutdown", "shutdown(1s) on the root"),
    };
    Workload {
        key,
        title: format!(
            "9c. {what}: 1,000 idle groups below a root, as a 1,000-deep chain and as a flat tree, current-thread (per group)"
        ),
        op: "group",
        ops_per_iter: CHAIN,
        variants,
    }
}

// ----- 9d. diamond ladder ---------------------------------------------------------

/// Levels of the ladder the issue asks for (3 x 30 + 1 = 91 groups).
pub(crate) const LADDER_LEVELS: u32 = 30;
/// Levels of the smaller ladder that is always measured (and the probe's
/// first step).
pub(crate) const LADDER_ROW: u32 = 12;
/// Levels of the probe's second step, run once: with the first, it says
/// whether the full ladder can finish within the budget.
pub(crate) const LADDER_PROBE: u32 = 16;
/// The most one sample of the full ladder may take.
pub(crate) const LADDER_BUDGET: Duration = Duration::from_secs(10);

/// A diamond ladder of `levels` levels below a root `c_0`: at level `i`,
/// `a_i` and `b_i` are children of `c_{i-1}`, and `c_i` is a child of `a_i`
/// also linked under `b_i`. `3 * levels + 1` groups, `2^levels` paths from
/// the root to the bottom.
fn ladder(levels: u32) -> Tree {
    let root = WaitGroup::new();
    let mut groups = Vec::with_capacity(3 * levels as usize);
    let mut c = root.clone();
    for _ in 0..levels {
        let a = c.child();
        let b = c.child();
        let next = a.child();
        b.link(&next).expect("no cycle");
        groups.extend([a, b, next.clone()]);
        c = next;
    }
    Tree {
        root,
        _groups: groups,
    }
}

/// What 9d times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LadderOp {
    Wait,
    Cancel,
}

impl LadderOp {
    fn label(self) -> &'static str {
        match self {
            LadderOp::Wait => "wait()",
            LadderOp::Cancel => "cancel()",
        }
    }

    /// Runs the op once on `root`.
    fn run(self, rt: &Runtime, root: &WaitGroup) {
        match self {
            LadderOp::Wait => rt.block_on(root.wait()).expect("no failures"),
            LadderOp::Cancel => root.cancel(),
        }
    }
}

/// The fastest of `runs` runs of `op` on a fresh `levels`-level ladder.
fn ladder_probe(rt: &Runtime, op: LadderOp, levels: u32, runs: usize) -> Duration {
    (0..runs)
        .map(|_| setup_then(1, || ladder(levels), |tree| op.run(rt, &tree.root)))
        .min()
        .expect("one run at least")
}

/// Workload 9d: `wait()` or `cancel()` on the root of a diamond ladder,
/// against the same on a fresh group. The full 30-level ladder is measured
/// only if the growth from 12 to 16 levels says one call will take less than
/// [`LADDER_BUDGET`]; otherwise its row is left out and a note says why (a
/// call that walks every path cannot be interrupted).
pub(crate) fn diamond_ladder(op: LadderOp) -> Workload {
    let mut variants = Vec::new();

    let rt = current_thread();
    let reps = 20_000;
    let fresh = (op == LadderOp::Wait).then(WaitGroup::new);
    variants.push(variant_ops(
        format!("fresh group {}", op.label()),
        reps,
        move |iters| match &fresh {
            Some(wg) => async_reps(&rt, iters, reps, || async move {
                wg.wait().await.expect("no failures");
            }),
            // A cancel is done once per group: a fresh group each time.
            None => {
                let groups: Vec<WaitGroup> = (0..iters * reps).map(|_| WaitGroup::new()).collect();
                let start = Instant::now();
                for wg in &groups {
                    wg.cancel();
                }
                start.elapsed()
            }
        },
    ));

    let rt = current_thread();
    let small = ladder_probe(&rt, op, LADDER_ROW, 3);
    let probe = ladder_probe(&rt, op, LADDER_PROBE, 1);
    let per_level = (probe.as_secs_f64() / small.as_secs_f64().max(1e-9))
        .powf(1.0 / f64::from(LADDER_PROBE - LADDER_ROW));
    let predicted = probe.as_secs_f64() * per_level.powi((LADDER_LEVELS - LADDER_PROBE) as i32);
    let full_fits = predicted < LADDER_BUDGET.as_secs_f64();

    for levels in [LADDER_ROW, LADDER_LEVELS] {
        if levels == LADDER_LEVELS && !full_fits {
            continue;
        }
        let rt = current_thread();
        let mut over_budget: Option<Duration> = None;
        let name = format!(
            "{levels}-level ladder ({} groups), {}",
            3 * levels + 1,
            op.label()
        );
        variants.push(variant(name, move |iters| {
            // A sample that overran the budget is not taken again.
            if let Some(took) = over_budget {
                return took * iters as u32;
            }
            let took = match op {
                LadderOp::Wait => {
                    let tree = ladder(levels);
                    setup_then(iters, || (), |()| op.run(&rt, &tree.root))
                }
                LadderOp::Cancel => {
                    setup_then(iters, || ladder(levels), |tree| op.run(&rt, &tree.root))
                }
            };
            if took > LADDER_BUDGET * iters as u32 {
                over_budget = Some(took / iters as u32);
                note(format!(
                    "{levels}-level ladder: one sample took {:.1} s, over the {} s budget; \
                     later samples repeat it instead of running again.",
                    took.as_secs_f64() / iters as f64,
                    LADDER_BUDGET.as_secs()
                ));
            }
            took
        }));
    }
    note(format!(
        "Probe: {} on a {LADDER_ROW}-level ladder {:.3} ms (fastest of 3), on a \
         {LADDER_PROBE}-level one {:.3} ms (once): x{per_level:.2} per level (x2 per level = \
         every path walked).",
        op.label(),
        small.as_secs_f64() * 1e3,
        probe.as_secs_f64() * 1e3,
    ));
    if full_fits {
        note(format!(
            "{LADDER_LEVELS} levels: predicted {predicted:.3} s per call, within the {} s budget: measured.",
            LADDER_BUDGET.as_secs()
        ));
    } else {
        note(format!(
            "**{LADDER_LEVELS}-level ladder, {}: skipped: exceeds {} s** (predicted {} per call \
             from the probe).",
            op.label(),
            LADDER_BUDGET.as_secs(),
            human_secs(predicted)
        ));
    }

    let key = match op {
        LadderOp::Wait => "w9.ladder.wait",
        LadderOp::Cancel => "w9.ladder.cancel",
    };
    Workload {
        key,
        title: format!(
            "9d. {} on the root of a diamond ladder (level i: a_i, b_i children of c_(i-1); c_i a child of a_i, linked under b_i), current-thread (per call)",
            op.label()
        ),
        op: "call",
        ops_per_iter: 1,
        variants,
    }
}

/// Seconds, or minutes, hours, days when large.
fn human_secs(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.1} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else if s < 172_800.0 {
        format!("{:.0} h", s / 3600.0)
    } else {
        format!("{:.0} days", s / 86_400.0)
    }
}

// ----- 10a. idle shutdown at scale ------------------------------------------------

/// The sizes of workload 10, and their key suffixes.
pub(crate) const SIZES: [(u64, &str); 4] = [
    (1_000, "1e3"),
    (10_000, "1e4"),
    (100_000, "1e5"),
    (1_000_000, "1e6"),
];

/// Resolves once every task spawned before the call has been polled once: on
/// a current-thread runtime tasks run in spawn order, so when a task spawned
/// now runs, those before it have run (and, if idle, parked).
async fn all_polled_once() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _ = tx.send(());
    });
    rx.await.expect("sentinel ran");
}

/// Per iteration on `rt`: `spawn` (not timed, then every task polled once),
/// and `stop` on what it made (timed, the sum returned). Records the time
/// per iteration as the side measurement `total`.
fn spawn_then_stop<S, Fut>(
    rt: &Runtime,
    iters: u64,
    mut spawn: impl FnMut() -> S,
    mut stop: impl FnMut(S) -> Fut,
) -> Duration
where
    Fut: std::future::Future<Output = ()>,
{
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let took = rt.block_on(async {
            let s = spawn();
            all_polled_once().await;
            let start = Instant::now();
            stop(s).await;
            start.elapsed()
        });
        record_extra("total", Unit::Ns, false, took.as_nanos() as f64);
        total += took;
    }
    total
}

/// Workload 10a: `n` idle tasks waiting for cancellation, then stopped:
/// taskgroup `go()` + `shutdown(1 s)` against `TaskTracker` +
/// `CancellationToken` (cancel, close, wait). Only the stop is timed.
pub(crate) fn idle_shutdown(n: u64, key: &'static str, size: &str) -> Workload {
    let mut variants = Vec::new();

    let rt = current_thread();
    variants.push(variant(
        "TaskTracker + CancellationToken: cancel + close + wait",
        move |iters| {
            spawn_then_stop(
                &rt,
                iters,
                || {
                    let tracker = TaskTracker::new();
                    let token = CancellationToken::new();
                    for _ in 0..n {
                        let token = token.clone();
                        tracker.spawn(async move { token.cancelled().await });
                    }
                    (tracker, token)
                },
                |(tracker, token)| async move {
                    token.cancel();
                    tracker.close();
                    tracker.wait().await;
                },
            )
        },
    ));

    let rt = current_thread();
    variants.push(variant("taskgroup go() + shutdown(1s)", move |iters| {
        spawn_then_stop(
            &rt,
            iters,
            || {
                let wg = WaitGroup::new();
                for _ in 0..n {
                    wg.go(|ctx| async move {
                        ctx.cancelled().await;
                        Ok::<(), Infallible>(())
                    });
                }
                wg
            },
            |wg| async move {
                let report = wg.shutdown(Duration::from_secs(1)).await;
                // On a loaded machine 1e6 tasks may not all stop within the
                // grace: the rest are aborted, which the column shows.
                assert!(report.errors().is_empty(), "{report}");
                assert_eq!(report.finished() + report.aborted().len(), n as usize);
                record_extra(
                    "aborted at the deadline",
                    Unit::Count,
                    true,
                    report.aborted().len() as f64,
                );
            },
        )
    }));

    Workload {
        key,
        title: format!(
            "10a. shutdown of {size} idle tasks (each waiting for cancellation), current-thread (per task; total = one whole stop)"
        ),
        op: "task",
        ops_per_iter: n,
        variants,
    }
}

// ----- 10b. stubborn tasks --------------------------------------------------------

/// The grace period of 10b.
pub(crate) const STUBBORN_GRACE: Duration = Duration::from_millis(100);

/// Held by a stubborn task: its drop, which an abort causes, lowers `first`
/// to the time it happened (ns since `base`) and counts the task stopped.
struct AbortProbe {
    first: Arc<AtomicU64>,
    alive: Arc<AtomicU64>,
    base: Instant,
}

impl Drop for AbortProbe {
    fn drop(&mut self) {
        let at = self.base.elapsed().as_nanos() as u64;
        self.first.fetch_min(at, Ordering::Relaxed);
        self.alive.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long a stubborn sample keeps the runtime going after the stop
/// returned, for the first abort to take effect, before it gives up.
const FIRST_ABORT_WAIT: Duration = Duration::from_secs(30);

/// What one stubborn sample needs: the probes' clock, the time of the first
/// drop, and how many stubborn tasks still run.
struct Probe {
    first: Arc<AtomicU64>,
    alive: Arc<AtomicU64>,
    base: Instant,
}

impl Probe {
    fn new() -> Self {
        Probe {
            first: Arc::new(AtomicU64::new(u64::MAX)),
            alive: Arc::new(AtomicU64::new(0)),
            base: Instant::now(),
        }
    }
    fn holder(&self) -> AbortProbe {
        self.alive.fetch_add(1, Ordering::Relaxed);
        AbortProbe {
            first: Arc::clone(&self.first),
            alive: Arc::clone(&self.alive),
            base: self.base,
        }
    }
    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
    /// Called when the stop returned, on the runtime: records how many
    /// stubborn tasks were still running then, and how many tasks were
    /// aborted; then keeps the runtime going until the first stubborn task
    /// was dropped (if that was not before the return) and records the time
    /// from `called` to that drop.
    async fn record(&self, called: u64, aborted: usize) {
        record_extra(
            "stubborn still running at return",
            Unit::Count,
            true,
            self.alive.load(Ordering::Relaxed) as f64,
        );
        record_extra("tasks aborted", Unit::Count, false, aborted as f64);
        let waited = Instant::now();
        while self.first.load(Ordering::Relaxed) == u64::MAX {
            assert!(
                waited.elapsed() < FIRST_ABORT_WAIT,
                "no stubborn task was dropped within {FIRST_ABORT_WAIT:?} of the stop's return"
            );
            tokio::task::yield_now().await;
        }
        let first = self.first.load(Ordering::Relaxed);
        record_extra(
            "first stubborn abort after call",
            Unit::Ns,
            true,
            first.saturating_sub(called) as f64,
        );
    }
}

/// Workload 10b: `n` tasks of which every tenth ignores cancellation; a stop
/// with a 100 ms grace: taskgroup `shutdown(100ms)` against `TaskTracker` +
/// `CancellationToken` with the `JoinHandle`s kept (cancel, close, wait up
/// to 100 ms, abort what is left, wait). One op = one whole stop; the time to
/// the first abort is measured inside: each stubborn task holds a probe
/// whose drop (the abort) records the time.
pub(crate) fn stubborn(n: u64, key: &'static str, size: &str) -> Workload {
    let mut variants = Vec::new();

    let rt = current_thread();
    variants.push(variant(
        "TaskTracker + CancellationToken + JoinHandles: cancel, wait 100 ms, abort the rest",
        move |iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let probe = Probe::new();
                total += rt.block_on(async {
                    let tracker = TaskTracker::new();
                    let token = CancellationToken::new();
                    let mut handles = Vec::with_capacity(n as usize);
                    for i in 0..n {
                        if i % 10 == 0 {
                            let holder = probe.holder();
                            handles.push(tracker.spawn(async move {
                                let _holder = holder;
                                std::future::pending::<()>().await;
                            }));
                        } else {
                            let token = token.clone();
                            handles.push(tracker.spawn(async move { token.cancelled().await }));
                        }
                    }
                    all_polled_once().await;
                    let called = probe.now();
                    let start = Instant::now();
                    token.cancel();
                    tracker.close();
                    let mut aborted = 0;
                    if tokio::time::timeout(STUBBORN_GRACE, tracker.wait())
                        .await
                        .is_err()
                    {
                        for h in &handles {
                            if !h.is_finished() {
                                h.abort();
                                aborted += 1;
                            }
                        }
                        tracker.wait().await;
                    }
                    let took = start.elapsed();
                    probe.record(called, aborted).await;
                    took
                });
            }
            total
        },
    ));

    let rt = current_thread();
    variants.push(variant("taskgroup shutdown(100ms)", move |iters| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let probe = Probe::new();
            total += rt.block_on(async {
                let wg = WaitGroup::new();
                for i in 0..n {
                    if i % 10 == 0 {
                        let holder = probe.holder();
                        wg.go(|_ctx| async move {
                            let _holder = holder;
                            std::future::pending::<()>().await;
                            Ok::<(), Infallible>(())
                        });
                    } else {
                        wg.go(|ctx| async move {
                            ctx.cancelled().await;
                            Ok::<(), Infallible>(())
                        });
                    }
                }
                all_polled_once().await;
                let called = probe.now();
                let start = Instant::now();
                let report = wg.shutdown(STUBBORN_GRACE).await;
                let took = start.elapsed();
                assert!(report.aborted().len() as u64 >= n / 10, "{report}");
                record_extra(
                    "pending in its report",
                    Unit::Count,
                    true,
                    report.pending().len() as f64,
                );
                probe.record(called, report.aborted().len()).await;
                took
            });
        }
        total
    }));

    Workload {
        key,
        title: format!(
            "10b. shutdown with a 100 ms grace of {size} tasks, 10% ignoring cancellation, current-thread (per stop)"
        ),
        op: "stop",
        ops_per_iter: 1,
        variants,
    }
}

// ----- 10c. pending() at scale, and what it does to add/done ---------------------

/// Pairs timed by the stall thread: gaps between two consecutive pairs at
/// least this long are kept (ns).
const GAP_KEPT_NS: u64 = 1_000;

/// A gap this long is counted as well: an add/done that waited through
/// several of `pending()`'s chunks, or slept and woke late.
const LONG_GAP_NS: u64 = 250_000;

/// The gaps between a thread's add/done pairs within a span.
struct Gaps {
    /// The longest, in ns (0 if none was kept).
    worst: u64,
    /// How many were at least [`LONG_GAP_NS`].
    long: usize,
}

/// A thread that holds `n` guards of a group (taken on it, so they sit in its
/// registry shard) and, on request, does add/done pairs on the group in a
/// loop, timestamping each, until told to stop; it returns the gaps between
/// consecutive pairs of at least [`GAP_KEPT_NS`], as (start, end) in ns since
/// `base`.
struct Staller {
    start: Option<mpsc::Sender<()>>,
    gaps: mpsc::Receiver<Vec<(u64, u64)>>,
    running: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    base: Instant,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Staller {
    fn new(wg: &WaitGroup, n: u64) -> Self {
        let (start_tx, start_rx) = mpsc::channel::<()>();
        let (gaps_tx, gaps_rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let running = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let base = Instant::now();
        let thread = {
            let wg = wg.clone();
            let running = Arc::clone(&running);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let guards: Vec<_> = (0..n).map(|_| wg.add()).collect();
                ready_tx.send(()).expect("main thread waits");
                let ns = || base.elapsed().as_nanos() as u64;
                for () in start_rx {
                    let mut gaps = Vec::with_capacity(1 << 14);
                    let mut prev = ns();
                    running.store(true, Ordering::Release);
                    while !stop.load(Ordering::Acquire) {
                        let guard = wg.add();
                        black_box(&guard);
                        drop(guard);
                        let now = ns();
                        if now - prev >= GAP_KEPT_NS {
                            gaps.push((prev, now));
                        }
                        prev = now;
                    }
                    running.store(false, Ordering::Release);
                    if gaps_tx.send(gaps).is_err() {
                        break;
                    }
                }
                drop(guards);
            })
        };
        ready_rx.recv().expect("stall thread took its guards");
        Staller {
            start: Some(start_tx),
            gaps: gaps_rx,
            running,
            stop,
            base,
            thread: Some(thread),
        }
    }

    fn ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// Starts the pair loop, runs `f` (timed), then spins for as long again
    /// (the control span, both cores still busy), stops the loop. Returns
    /// `f`'s time, then the worst gap and the number of gaps of at least
    /// [`LONG_GAP_NS`] overlapping `f`'s span, then the same within the
    /// control span.
    fn during(&self, f: impl FnOnce()) -> (Duration, Gaps, Gaps) {
        self.stop.store(false, Ordering::Release);
        self.start
            .as_ref()
            .expect("alive")
            .send(())
            .expect("stall thread alive");
        while !self.running.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
        // Let the loop settle.
        let settle = self.ns() + 200_000;
        while self.ns() < settle {
            std::hint::spin_loop();
        }
        let t0 = self.ns();
        f();
        let t1 = self.ns();
        let t2 = t1 + (t1 - t0);
        while self.ns() < t2 {
            std::hint::spin_loop();
        }
        self.stop.store(true, Ordering::Release);
        let gaps = self.gaps.recv().expect("stall thread alive");
        let of = |keep: &dyn Fn(u64, u64) -> bool| {
            let kept = || {
                gaps.iter()
                    .filter(|&&(s, e)| keep(s, e))
                    .map(|&(s, e)| e - s)
            };
            Gaps {
                worst: kept().max().unwrap_or(0),
                long: kept().filter(|&gap| gap >= LONG_GAP_NS).count(),
            }
        };
        let during = of(&|s, e| s < t1 && e > t0);
        let control = of(&|s, _| s >= t1 && s < t2);
        (Duration::from_nanos(t1 - t0), during, control)
    }
}

impl Drop for Staller {
    fn drop(&mut self) {
        // Stops a loop left running by a panic in `during`.
        self.stop.store(true, Ordering::Release);
        drop(self.start.take());
        if let Some(thread) = self.thread.take() {
            thread.join().expect("stall thread");
        }
    }
}

/// Entries read per sample of 10c at the small sizes (`pending()` repeated).
const PENDING_ENTRIES_PER_SAMPLE: u64 = 200_000;

/// Workload 10c: `pending()` on a recording group with 1e3 to 1e6 pending
/// guards; time per entry, against the smallest size (ratio 1.00x = linear).
/// Meanwhile another thread does add/done pairs on the group, in the registry
/// shard that holds the guards, and the worst gap between two of its pairs is
/// recorded, during the call and during a control span of equal length
/// right after it.
pub(crate) fn pending_scale() -> Workload {
    let mut variants = Vec::new();
    for (n, size) in SIZES {
        let reps = (PENDING_ENTRIES_PER_SAMPLE / n).max(1);
        let wg = WaitGroup::new();
        let staller = Staller::new(&wg, n);
        variants.push(variant_ops(
            format!("{size} pending guards"),
            reps * n,
            move |iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (took, during, control) = staller.during(|| {
                        for _ in 0..reps {
                            let report = wg.pending();
                            // Plus the stall thread's pair, if caught open.
                            let len = report.len() as u64;
                            assert!(len == n || len == n + 1, "{len} pending");
                            black_box(report);
                        }
                    });
                    record_extra(
                        "worst add/done stall during pending()",
                        Unit::Ns,
                        true,
                        during.worst as f64,
                    );
                    record_extra(
                        "worst stall, same span after",
                        Unit::Ns,
                        true,
                        control.worst as f64,
                    );
                    record_extra(
                        "add/done stalls of 250 µs or more during pending()",
                        Unit::Count,
                        true,
                        during.long as f64,
                    );
                    record_extra(
                        "stalls of 250 µs or more, same span after",
                        Unit::Count,
                        true,
                        control.long as f64,
                    );
                    total += took;
                }
                total
            },
        ));
    }
    note(format!(
        "Stall: the worst gap between two consecutive add/done pairs of another thread \
         (a gap of at least {} µs; 0 = none) that overlaps the `pending()` calls, and the \
         worst in a span of equal length right after them with both cores still busy (the \
         control: preemption, not the call). The pairs go to the registry shard holding \
         the pending guards (they were taken on that thread). Below 1e6, one sample is \
         {PENDING_ENTRIES_PER_SAMPLE} entries' worth of calls made back to back, so a pair \
         may wait through several of them (the lock lets the caller take it again at once): \
         the stall there is that of a burst of calls, not of one. The stalls of {} µs or \
         more are counted too: a pair that waited through several chunks, or slept and \
         woke late.",
        GAP_KEPT_NS / 1000,
        LONG_GAP_NS / 1000
    ));
    Workload {
        key: "w10.pending",
        title: "10c. pending() on a recording group with 1e3-1e6 pending guards (per entry)".into(),
        op: "entry",
        ops_per_iter: 1,
        variants,
    }
}

// ----- 10d. memory of an empty group ------------------------------------------------

/// One row of the empty-group memory table.
#[derive(Debug, Clone)]
pub(crate) struct MemRow {
    pub(crate) what: &'static str,
    pub(crate) bytes: f64,
    pub(crate) allocs: f64,
}

/// Groups (or peers) per memory measurement.
const MEM_N: u64 = 1_000;

/// Workload 10d: heap bytes and allocations of an empty group, and what its
/// first guard and first task add, per group (mean over [`MEM_N`] groups,
/// after one unmeasured warm-up of each step); the peers for scale. `None`
/// without the counting allocator.
pub(crate) fn empty_group() -> Option<Vec<MemRow>> {
    if !counting::installed() {
        return None;
    }
    let mut rows = Vec::new();
    let mut row = |what, usage: counting::Usage| {
        let (bytes, allocs) = usage.per(MEM_N);
        rows.push(MemRow {
            what,
            bytes,
            allocs,
        });
    };
    let n = MEM_N as usize;
    let rt = current_thread();
    let idle = |ctx: taskgroup::TaskContext| async move {
        ctx.cancelled().await;
        Ok::<(), Infallible>(())
    };
    let _guard = rt.enter();

    // Warm-up: lazy statics, this thread's shard number, the runtime's lists.
    let warm = WaitGroup::new();
    warm.add().done();
    warm.go(idle);
    drop(warm.child());
    rt.block_on(async {
        all_polled_once().await;
        warm.cancel();
        warm.wait().await.expect("no failures");
    });
    let token = CancellationToken::new();
    let handle = tokio::spawn({
        let token = token.clone();
        async move { token.cancelled().await }
    });
    token.cancel();
    rt.block_on(handle).expect("task");

    let mut groups: Vec<WaitGroup> = Vec::with_capacity(n);
    let ((), usage) = counting::measure(|| groups.extend((0..n).map(|_| WaitGroup::new())));
    row("empty group, `WaitGroup::new()` (records guards)", usage);
    let mut lean: Vec<WaitGroup> = Vec::with_capacity(n);
    let ((), usage) = counting::measure(|| lean.extend((0..n).map(|_| super::lean())));
    row("empty group, lean (`record_guards(false)`)", usage);
    drop(lean);
    let parent = WaitGroup::new();
    let mut children: Vec<WaitGroup> = Vec::with_capacity(n);
    let ((), usage) = counting::measure(|| children.extend((0..n).map(|_| parent.child())));
    row("empty `child()` of one parent (its link included)", usage);
    drop(children);
    drop(parent);

    let mut guards = Vec::with_capacity(n);
    let ((), usage) = counting::measure(|| guards.extend(groups.iter().map(|wg| wg.add())));
    row("+ first guard, pending (`add()`)", usage);
    drop(guards);
    drop(groups);

    let groups: Vec<WaitGroup> = (0..n).map(|_| WaitGroup::new()).collect();
    let ((), spawned) = counting::measure(|| {
        for wg in &groups {
            wg.go(idle);
        }
    });
    row(
        "+ first `go()` task, pending (idle), on another empty group",
        spawned,
    );
    let ((), finished) = counting::measure(|| {
        rt.block_on(async {
            all_polled_once().await;
            for wg in &groups {
                wg.cancel();
                wg.wait().await.expect("no failures");
            }
        });
    });
    row(
        "... that task finished: what the group keeps of it",
        counting::Usage {
            allocs: spawned.allocs + finished.allocs,
            net_bytes: spawned.net_bytes + finished.net_bytes,
        },
    );
    drop(groups);

    let token = CancellationToken::new();
    let mut handles = Vec::with_capacity(n);
    let ((), usage) = counting::measure(|| {
        handles.extend((0..n).map(|_| {
            let token = token.clone();
            tokio::spawn(async move { token.cancelled().await })
        }));
    });
    row(
        "reference: raw `tokio::spawn` of an idle task (handle kept)",
        usage,
    );
    token.cancel();
    rt.block_on(async {
        for h in handles {
            h.await.expect("task");
        }
    });

    let mut peers: Vec<(TaskTracker, CancellationToken)> = Vec::with_capacity(n);
    let ((), usage) = counting::measure(|| {
        peers.extend((0..n).map(|_| (TaskTracker::new(), CancellationToken::new())));
    });
    row(
        "peer: `TaskTracker::new()` + `CancellationToken::new()`",
        usage,
    );
    let ((), usage) = counting::measure(|| {
        for (tracker, token) in &peers {
            let token = token.clone();
            tracker.spawn(async move { token.cancelled().await });
        }
    });
    row("peer: + first `TaskTracker::spawn`, pending (idle)", usage);
    rt.block_on(async {
        for (tracker, token) in &peers {
            token.cancel();
            tracker.close();
            tracker.wait().await;
        }
    });
    Some(rows)
}
