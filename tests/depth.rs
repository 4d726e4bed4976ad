//! Depth and width (issue #11, C): walks over the link graph are iterative
//! and visit each group once, so neither depth nor the number of paths
//! matters.
//!
//! * A chain of 100,000 groups (each a `child()` or a `scoped_child()` of the
//!   one before, or a fresh group `link`ed under it; building is O(1) per
//!   step), with work in the deepest group: `wait_blocking`, `cancel`,
//!   `pending`, `errors`, `wait`, `wait_timeout` and `shutdown` on the root
//!   reach it, on a thread with a 2 MiB stack; and dropping the chain, root
//!   first or leaf first, does not overflow that stack. A `shutdown` of the
//!   scoped chain with work at every level (a guard, or a task only an abort
//!   ends) ends within the watchdog too: before, each group's turn walked the
//!   whole chain below it, and both scoped `shutdown` cases ran past the 60 s
//!   watchdog (in a release build).
//! * A ladder of 30 diamonds (91 groups, 2^30 paths from top to bottom):
//!   `wait`, `cancel`, `pending`, `errors`, `wait_blocking` and one more `link`
//!   above the top each finish within [`BOUND`].
//!
//! * A [`ServiceError`] nested 10,000 levels deep ([`ERROR_CYCLES`] times a
//!   `Starting`, a `Failed`, a `GaveUp` and a `Failures`, as containers nested
//!   in containers make them): its `Display` and `{:?}` write exactly the text
//!   the nesting gives (built here outside in), and `{:#?}`, whose indentation
//!   makes its text quadratic in the depth, prints it a fifth as deep with the
//!   deepest error at its indentation, on the same 2 MiB stack. An error
//!   500,000 levels deep ([`DROP_CYCLES`] cycles, a [`TeardownError`] in each)
//!   drops on that stack, each of its leaves dropped once.
//! * Containers nested [`SERVICE_DEPTH`] deep (a `Sequence` in a
//!   `ServiceGroup` in a `Restarter` in a `Sequence`, and so on): dropping them
//!   does not overflow the 2 MiB stack.
//!
//! A stack overflow aborts the whole process, and an exponential walk would
//! run for hours, so every case runs in a child process: this test binary,
//! re-executed for [`child_process_case`] only, with the case in the
//! environment variable [`CASE`] (as tests/service_signal.rs does for
//! signals). In the child the case runs on its own thread while the main
//! thread waits for its completion message for at most the case's watchdog
//! (60 s for a chain or an error, twice [`BOUND`] for a diamond) and then
//! exits. The parent test fails, naming the case, if the child failed, aborted
//! (the message then says "has overflowed its stack") or timed out.
//!
//! On the code before issue #11 every walk over the chain overflows the stack
//! (the walks recurse once per group), as does dropping it leaf first (the
//! root's free frees the chain recursively); on the ladder, `wait`, `cancel`,
//! `wait_blocking` and `link` time out (they walk every path). Dropping the
//! chain root first, and `pending` and `errors` on the ladder, already work.
//! Before `ServiceError` wrote its text with an explicit stack, `Display` and
//! `{:?}` of the deep error overflowed the stack, and `{:#?}` (nested
//! formatters, each indenting every byte written through it) was still
//! running at the 60 s watchdog; it takes 0.25 s now. Before `ServiceError`
//! dropped its nested errors with a loop, dropping the 500,000-level error
//! overflowed the stack. Before containers
//! dropped their members by a loop, dropping the nested containers overflowed
//! the stack.
//!
//! Not for Miri (child processes; 100,000 groups).
#![cfg(not(miri))]

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use taskgroup::service::{
    service_fn, Ready, Restarter, Sequence, Service, ServiceError, ServiceGroup, TeardownError,
};
use taskgroup::{LinkError, PendingReport, WaitGroup};
use tokio_test::{assert_pending, assert_ready, task};
use tokio_util::sync::CancellationToken;

/// The environment variable that makes [`child_process_case`] run a case.
const CASE: &str = "TASKGROUP_DEPTH_CASE";
/// Groups in the chain.
const DEPTH: usize = 100_000;
/// Diamonds in the ladder.
const LEVELS: usize = 30;
/// Generous upper bound for one operation on the ladder (debug build).
const BOUND: Duration = Duration::from_secs(5);
/// How long a chain case (building 100,000 groups included) may take.
const CHAIN_WATCHDOG: Duration = Duration::from_secs(60);
/// The stack of the thread every case runs on.
const STACK: usize = 2 << 20;
/// Cycles of the nested service error, each a `Starting`, a `Failed`, a
/// `GaveUp` and a `Failures`: 10,000 levels.
const ERROR_CYCLES: usize = 2_500;
/// Cycles of the error the drop case drops, each five levels deep: 500,000
/// levels (the drop glue's recursion overflowed the 2 MiB stack at about
/// 30,000).
const DROP_CYCLES: usize = 100_000;
/// Containers nested in containers for the drop case.
const SERVICE_DEPTH: usize = 100_000;
/// The name of the work put in the deepest group.
const WORK: &str = "deepest-work";

// ----- the parent side ------------------------------------------------------

/// Runs `case` in a child process; `Err` with what went wrong.
fn run_in_child(case: &str) -> Result<(), String> {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_process_case",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CASE, case)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() && stdout.contains(&format!("CASE OK {case}")) {
        return Ok(());
    }
    let overflow = if stderr.contains("has overflowed its stack") {
        " (stack overflow)"
    } else {
        ""
    };
    let stderr_tail: String = {
        let lines: Vec<_> = stderr.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    };
    Err(format!(
        "case {case}: child exited with {}{overflow}\n--- stdout\n{stdout}\n--- stderr (tail)\n{stderr_tail}",
        out.status
    ))
}

/// Runs a chain case for every way of building the chain.
fn chain_case(op: &str) {
    let failures: Vec<_> = ["child", "link", "scoped"]
        .iter()
        .filter_map(|kind| run_in_child(&format!("chain:{kind}:{op}")).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn diamond_case(op: &str) {
    if let Err(failure) = run_in_child(&format!("diamond:{op}")) {
        panic!("{failure}");
    }
}

fn error_case(op: &str) {
    if let Err(failure) = run_in_child(&format!("error:{op}")) {
        panic!("{failure}");
    }
}

#[test]
fn a_deeply_nested_service_error_displays() {
    error_case("display");
}

#[test]
fn a_deeply_nested_service_error_debugs() {
    error_case("debug");
}

#[test]
fn a_deeply_nested_service_error_pretty_prints() {
    error_case("pretty");
}

#[test]
fn a_deeply_nested_service_error_drops() {
    error_case("drop");
}

#[test]
fn deeply_nested_containers_drop() {
    if let Err(failure) = run_in_child("services:drop") {
        panic!("{failure}");
    }
}

#[test]
fn wait_blocking_reaches_the_end_of_a_deep_chain() {
    chain_case("wait_blocking");
}

#[test]
fn cancel_reaches_the_end_of_a_deep_chain() {
    chain_case("cancel");
}

#[test]
fn pending_reaches_the_end_of_a_deep_chain() {
    chain_case("pending");
}

#[test]
fn errors_reach_the_end_of_a_deep_chain() {
    chain_case("errors");
}

#[test]
fn wait_reaches_the_end_of_a_deep_chain() {
    chain_case("wait");
}

#[test]
fn wait_timeout_reaches_the_end_of_a_deep_chain() {
    chain_case("wait_timeout");
}

#[test]
fn shutdown_reaches_the_end_of_a_deep_chain() {
    chain_case("shutdown");
}

/// A scoped chain only: a turn of a group with scoped children walks the
/// groups below it (to stop them with its work), where a plain child's turn
/// reads its own group alone. (The other two chains take this case too: about
/// 9 s each in a debug build, to no more purpose.)
#[test]
fn shutdown_of_a_deep_scoped_chain_with_stuck_work_at_every_level_is_linear() {
    if let Err(failure) = run_in_child("chain:scoped:shutdown_stuck") {
        panic!("{failure}");
    }
}

#[test]
fn a_deep_chain_dropped_root_first_does_not_overflow() {
    chain_case("drop_root_first");
}

#[test]
fn a_deep_chain_dropped_leaf_first_does_not_overflow() {
    chain_case("drop_leaf_first");
}

#[test]
fn wait_on_a_ladder_of_diamonds_visits_each_group_once() {
    diamond_case("wait");
}

#[test]
fn cancel_on_a_ladder_of_diamonds_visits_each_group_once() {
    diamond_case("cancel");
}

#[test]
fn pending_on_a_ladder_of_diamonds_visits_each_group_once() {
    diamond_case("pending");
}

#[test]
fn errors_on_a_ladder_of_diamonds_visit_each_group_once() {
    diamond_case("errors");
}

#[test]
fn wait_blocking_on_a_ladder_of_diamonds_visits_each_group_once() {
    diamond_case("wait_blocking");
}

#[test]
fn linking_above_a_ladder_of_diamonds_visits_each_group_once() {
    diamond_case("link");
}

// ----- the child side -------------------------------------------------------

/// In the child process: runs the case named by [`CASE`] on a thread with a
/// [`STACK`]-byte stack, waits for it at most its watchdog, and reports.
/// Without the variable (the normal test run), does nothing.
#[test]
fn child_process_case() {
    let Ok(case) = std::env::var(CASE) else {
        return;
    };
    let watchdog = if case.starts_with("diamond:") {
        2 * BOUND
    } else {
        CHAIN_WATCHDOG
    };
    let (done_tx, done_rx) = mpsc::channel();
    let body_case = case.clone();
    let body = std::thread::Builder::new()
        .name(case.clone())
        .stack_size(STACK)
        .spawn(move || {
            run_case(&body_case);
            done_tx.send(()).unwrap();
        })
        .unwrap();
    match done_rx.recv_timeout(watchdog) {
        Ok(()) => println!("CASE OK {case}"),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            println!("CASE TIMED OUT {case}: not done within {watchdog:?}");
            // Ends the runaway walk with the process.
            std::process::exit(2);
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The case panicked: fail with its panic.
            if let Err(panic) = body.join() {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

fn run_case(case: &str) {
    match case.split(':').collect::<Vec<_>>().as_slice() {
        ["chain", kind, op] => chain_op(kind, op),
        ["diamond", op] => diamond_op(op),
        ["error", op] => error_op(op),
        ["services", "drop"] => {
            let started = Instant::now();
            let mut service: Box<dyn Service> = Box::new(service_fn(
                "leaf",
                |_ctx: CancellationToken, _ready: Ready| async { Ok(()) },
            ));
            for i in 0..SERVICE_DEPTH {
                service = match i % 3 {
                    0 => Box::new(
                        Sequence::builder(format!("s{i}"))
                            .service(service)
                            .build()
                            .unwrap(),
                    ),
                    1 => Box::new(
                        ServiceGroup::builder(format!("g{i}"))
                            .service(service)
                            .build()
                            .unwrap(),
                    ),
                    _ => Box::new(Restarter::new(service)),
                };
            }
            drop(service);
            // Linear: a quadratic build or drop would take far longer.
            assert!(
                started.elapsed() < CHAIN_WATCHDOG / 2,
                "took {:?}",
                started.elapsed()
            );
        }
        _ => panic!("unknown case {case}"),
    }
}

fn names(report: &PendingReport) -> Vec<Option<&str>> {
    report.tasks().map(|t| t.name()).collect()
}

fn current_thread(paused: bool) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(paused)
        .build()
        .unwrap()
}

/// Blocks in `wait_blocking` on `top` after checking (with a zero timeout)
/// that it sees `work`, which another thread completes.
fn wait_blocking_for(top: &WaitGroup, work: taskgroup::TaskGuard) {
    let err = top.wait_blocking_timeout(Duration::ZERO).unwrap_err();
    assert_eq!(names(err.pending().unwrap()), [Some(WORK)]);
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let completer = std::thread::spawn(move || {
        release_rx.recv().unwrap();
        drop(work);
    });
    release_tx.send(()).unwrap();
    top.wait_blocking().unwrap();
    completer.join().unwrap();
}

/// Polls `top.wait()` once (it must see `work`), completes `work`, and polls
/// again.
fn wait_for(top: &WaitGroup, work: taskgroup::TaskGuard) {
    let mut wait = task::spawn(top.wait());
    assert_pending!(wait.poll());
    drop(work);
    assert!(wait.is_woken());
    assert!(assert_ready!(wait.poll()).is_ok());
}

/// A failure recorded in `bottom`, then `top.errors()` must list it once.
fn errors_of(top: &WaitGroup, bottom: &WaitGroup, rt: &tokio::runtime::Runtime) {
    let _rt = rt.enter();
    bottom
        .task()
        .name("deepest-task")
        .go(|_| async { Err::<(), _>("deep failure") });
    assert!(rt.block_on(bottom.wait()).is_err());
    let started = Instant::now();
    let errors = top.errors();
    assert!(started.elapsed() < BOUND, "{:?}", started.elapsed());
    assert_eq!(errors.len(), 1, "{errors}");
    assert_eq!(errors.first().unwrap().name(), Some("deepest-task"));
}

/// 100,000 groups, each linked under the one before (`kind` "child": made
/// with `child()`; "scoped": with `scoped_child()`; "link": a fresh group,
/// `link`ed).
fn build_chain(kind: &str) -> Vec<WaitGroup> {
    let started = Instant::now();
    let mut chain = Vec::with_capacity(DEPTH);
    chain.push(WaitGroup::builder().name("root").build());
    for _ in 1..DEPTH {
        let prev = chain.last().unwrap();
        let next = match kind {
            "child" => prev.child(),
            "scoped" => prev.scoped_child(),
            "link" => {
                let next = WaitGroup::new();
                prev.link(&next).unwrap();
                next
            }
            _ => panic!("unknown chain kind {kind}"),
        };
        chain.push(next);
    }
    // O(1) per step: a quadratic build would take far longer.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "building took {:?}",
        started.elapsed()
    );
    chain
}

fn chain_op(kind: &str, op: &str) {
    let mut chain = build_chain(kind);
    match op {
        "drop_root_first" => {
            let work = chain.last().unwrap().task().name(WORK).add();
            // A Vec drops its elements front to back: the root first.
            drop(chain);
            drop(work);
            return;
        }
        "drop_leaf_first" => {
            let work = chain.last().unwrap().task().name(WORK).add();
            while let Some(group) = chain.pop() {
                drop(group);
            }
            drop(work);
            return;
        }
        _ => {}
    }
    let root = &chain[0];
    let deepest = chain.last().unwrap();
    match op {
        "wait_blocking" => wait_blocking_for(root, deepest.task().name(WORK).add()),
        "cancel" => {
            root.cancel();
            assert!(deepest.is_cancelled());
        }
        "pending" => {
            let _work = deepest.task().name(WORK).add();
            assert_eq!(names(&root.pending()), [Some(WORK)]);
        }
        "errors" => errors_of(root, deepest, &current_thread(false)),
        "wait" => wait_for(root, deepest.task().name(WORK).add()),
        "wait_timeout" => {
            let work = deepest.task().name(WORK).add();
            current_thread(true).block_on(async {
                let err = root.wait_timeout(Duration::from_secs(1)).await.unwrap_err();
                assert_eq!(names(err.pending().unwrap()), [Some(WORK)]);
                drop(work);
                root.wait_timeout(Duration::from_secs(1)).await.unwrap();
            });
        }
        "shutdown" => {
            let rt = current_thread(true);
            let report = rt.block_on(async {
                // Stops when the shutdown reaches its group and cancels it.
                deepest.task().name("deepest-task").go(|ctx| async move {
                    ctx.cancelled().await;
                    Ok::<_, std::io::Error>(())
                });
                root.shutdown(Duration::from_secs(1)).await
            });
            assert!(report.is_clean(), "{report}");
            assert_eq!(report.finished(), 1, "{report}");
            assert!(deepest.is_closed());
        }
        "shutdown_stuck" => {
            // Work at every level that only an abort ends, or nothing
            // (guards): no group stops by itself, so each takes its turn
            // with its stragglers, and a scoped child's turn comes after its
            // parent marked it. Each group's turn must cost what that group
            // holds, not what is below it.
            let rt = current_thread(true);
            let guards: Vec<_> = chain.iter().step_by(2).map(|g| g.add()).collect();
            let report = rt.block_on(async {
                for group in chain.iter().skip(1).step_by(2) {
                    group.go(|_| std::future::pending::<()>());
                }
                tokio::task::yield_now().await;
                root.shutdown(Duration::from_secs(1)).await
            });
            assert_eq!(report.aborted().len(), DEPTH / 2, "{report}");
            assert_eq!(report.pending().len(), DEPTH / 2);
            assert_eq!(report.finished(), 0);
            drop(guards);
        }
        _ => panic!("unknown chain op {op}"),
    }
}

/// The ladder, top first: level `i` has `a_i` and `b_i`, both linked under
/// `c_{i-1}` (`c_0` is the top), and `c_i` linked under both.
fn build_ladder() -> Vec<WaitGroup> {
    let top = WaitGroup::builder().name("top").build();
    let mut groups = vec![top.clone()];
    let mut c = top;
    for _ in 0..LEVELS {
        let (a, b, next) = (WaitGroup::new(), WaitGroup::new(), WaitGroup::new());
        c.link(&a).unwrap();
        c.link(&b).unwrap();
        a.link(&next).unwrap();
        b.link(&next).unwrap();
        groups.extend([a, b, next.clone()]);
        c = next;
    }
    assert_eq!(groups.len(), 3 * LEVELS + 1);
    groups
}

fn diamond_op(op: &str) {
    let ladder = build_ladder();
    let top = &ladder[0];
    let bottom = ladder.last().unwrap();
    let rt = current_thread(false);
    let started = Instant::now();
    match op {
        "wait" => wait_for(top, bottom.task().name(WORK).add()),
        "cancel" => {
            top.cancel();
            assert!(bottom.is_cancelled());
        }
        "pending" => {
            let _work = bottom.task().name(WORK).add();
            assert_eq!(names(&top.pending()), [Some(WORK)], "listed once");
        }
        "errors" => errors_of(top, bottom, &rt),
        "wait_blocking" => wait_blocking_for(top, bottom.task().name(WORK).add()),
        "link" => {
            let above = WaitGroup::new();
            above.link(top).unwrap();
            assert!(matches!(bottom.link(&above), Err(LinkError::Cycle { .. })));
        }
        _ => panic!("unknown diamond op {op}"),
    }
    let took = started.elapsed();
    assert!(took < BOUND, "{op} on the ladder took {took:?}");
}

/// A service error `4 * cycles` levels deep, and what its `Display` and `{:?}`
/// must write, built outside in (so in linear time): each cycle is a
/// `Starting` whose source is a `Failed` whose source is a `GaveUp` whose last
/// failure is a list of the next cycle and a leaf of its own.
fn nested_error(cycles: usize) -> (ServiceError, String, String) {
    let (mut text, mut text_tail) = (String::new(), Vec::new());
    let (mut debug, mut debug_tail) = (String::new(), Vec::new());
    for i in 0..cycles {
        // `Starting` shows its source without its name ("f{i}: "), and `GaveUp`
        // its last failure likewise (a list has no name; of several below a
        // name, it is bracketed).
        text += &format!("starting s{i}: r{i}: gave up after 1 restart within 1s; last failure: [");
        text_tail.push(format!(
            "; x{i}: exited early (returned Ok before it was stopped)]"
        ));
        debug += &format!(
            "Starting {{ name: \"s{i}\", source: Failed {{ name: \"f{i}\", source: GaveUp {{ \
             name: \"r{i}\", restarts: 1, window: 1s, last: Failures {{ errors: ["
        );
        debug_tail.push(format!(", ExitedEarly {{ name: \"x{i}\" }}] }} }} }} }}"));
    }
    text += "end: panicked: deepest";
    debug += "Panicked { name: \"end\", message: \"deepest\" }";
    text.extend(text_tail.into_iter().rev());
    debug.extend(debug_tail.into_iter().rev());
    let mut error = ServiceError::Panicked {
        name: "end".into(),
        message: "deepest".into(),
    };
    for i in (0..cycles).rev() {
        error = ServiceError::Failures {
            errors: vec![
                error,
                ServiceError::ExitedEarly {
                    name: format!("x{i}"),
                },
            ],
        };
        error = ServiceError::GaveUp {
            name: format!("r{i}"),
            restarts: 1,
            window: Duration::from_secs(1),
            last: Box::new(error),
        };
        error = ServiceError::Failed {
            name: format!("f{i}"),
            source: Box::new(error),
        };
        error = ServiceError::Starting {
            name: format!("s{i}"),
            source: Box::new(error),
        };
    }
    (error, text, debug)
}

/// An error a leaf returns that counts its drops.
#[derive(Debug)]
struct Counted(Arc<AtomicUsize>);

impl std::fmt::Display for Counted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("counted")
    }
}

impl std::error::Error for Counted {}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// A service error `5 * cycles` levels deep, built inside out: each cycle is a
/// `Starting` whose source is a `GaveUp` whose last failure is a `Failed` whose
/// source is a [`TeardownError`] whose run failed with a list of the next cycle
/// and a leaf failing with a [`Counted`] (one per cycle).
fn error_to_drop(cycles: usize, dropped: &Arc<AtomicUsize>) -> ServiceError {
    let mut error = ServiceError::ExitedEarly { name: "end".into() };
    for _ in 0..cycles {
        error = ServiceError::Failures {
            errors: vec![
                error,
                ServiceError::Failed {
                    name: "leaf".into(),
                    source: Box::new(Counted(dropped.clone())),
                },
            ],
        };
        error = ServiceError::Failed {
            name: "t".into(),
            source: Box::new(TeardownError {
                teardown: "flush failed".into(),
                run: Some(Box::new(error)),
            }),
        };
        error = ServiceError::GaveUp {
            name: "r".into(),
            restarts: 1,
            window: Duration::from_secs(1),
            last: Box::new(error),
        };
        error = ServiceError::Starting {
            name: "s".into(),
            source: Box::new(error),
        };
    }
    error
}

fn error_op(op: &str) {
    match op {
        "display" => {
            let (error, text, _) = nested_error(ERROR_CYCLES);
            assert!(
                error.to_string() == text,
                "Display differs from what the nesting gives"
            );
        }
        "debug" => {
            let (error, _, debug) = nested_error(ERROR_CYCLES);
            assert!(
                format!("{error:?}") == debug,
                "{{:?}} differs from what the nesting gives"
            );
        }
        "pretty" => {
            let cycles = ERROR_CYCLES / 5;
            let (error, _, _) = nested_error(cycles);
            let pretty = format!("{error:#?}");
            assert!(pretty.starts_with("Starting {\n    name: \"s0\",\n    source: Failed {\n"));
            // Each cycle is five levels of `{:#?}`'s indentation (four structs
            // and a list), so the deepest error is at 5 * cycles.
            let indent = " ".repeat(4 * 5 * cycles);
            let deepest = format!("\n{indent}Panicked {{\n{indent}    name: \"end\",\n");
            assert!(
                pretty.contains(&deepest),
                "the deepest error is not where expected"
            );
            assert!(pretty.ends_with("\n}"));
        }
        "drop" => {
            let dropped = Arc::new(AtomicUsize::new(0));
            let error = error_to_drop(DROP_CYCLES, &dropped);
            assert_eq!(dropped.load(Ordering::Relaxed), 0);
            drop(error);
            assert_eq!(dropped.load(Ordering::Relaxed), DROP_CYCLES);
        }
        _ => panic!("unknown error op {op}"),
    }
}
