//! Stress: many threads and tasks adding and completing work while async and
//! blocking waiters wait, rounds in which the last `done` races with fresh
//! waiters, a failure on a worker ending a wait on another thread,
//! cancellation racing with `go`, and repeated shutdowns while tasks spawn more
//! tasks during the drain.
//!
//! Every wait is bounded: a waiter that has not returned within [`LIMIT`]
//! after the work is finished fails the test with a message (a lost wake-up)
//! instead of hanging CI. Loop counts are scaled down under miri.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

use taskgroup::WaitGroup;

/// Generous upper bound for any single wait once its work is finished.
const LIMIT: Duration = Duration::from_secs(60);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn scaled(full: usize, miri: usize) -> usize {
    if cfg!(miri) {
        miri
    } else {
        full
    }
}

/// 10^6 add/done in total from 4 OS threads and 4 tasks, while 2 async and 2
/// blocking waiters wait over and over. Once the work is done the count stays
/// zero, so every waiter's current wait must return.
#[test]
fn a_million_add_done_with_async_and_blocking_waiters() {
    let total = scaled(1_000_000, 800);
    let (threads, tasks) = (4, 4);
    let per_worker = total / (threads + tasks);
    let rt = runtime();
    let wg = WaitGroup::new();
    let ops = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (returned_tx, returned_rx) = mpsc::channel::<(&'static str, usize)>();

    // Waiters: wait, count the return, until told to stop (then one last wait).
    for _ in 0..2 {
        let (wg, stop, tx) = (wg.clone(), stop.clone(), returned_tx.clone());
        rt.spawn(async move {
            let mut returns = 0;
            loop {
                let last = stop.load(Ordering::Acquire);
                wg.wait().await.unwrap();
                returns += 1;
                if last {
                    break;
                }
                tokio::task::yield_now().await;
            }
            tx.send(("async", returns)).unwrap();
        });
    }
    for _ in 0..2 {
        let (wg, stop, tx) = (wg.clone(), stop.clone(), returned_tx.clone());
        std::thread::spawn(move || {
            let mut returns = 0;
            loop {
                let last = stop.load(Ordering::Acquire);
                wg.wait_blocking().unwrap();
                returns += 1;
                if last {
                    break;
                }
                std::thread::yield_now();
            }
            tx.send(("blocking", returns)).unwrap();
        });
    }
    drop(returned_tx);

    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (wg, ops) = (wg.clone(), ops.clone());
            std::thread::spawn(move || {
                let mut held = Vec::new();
                for i in 0..per_worker {
                    // Vary the depth so the count crosses zero in many ways.
                    held.push(if i % 2 == 0 {
                        wg.add()
                    } else {
                        wg.task().name("stress").add()
                    });
                    if held.len() > (i + t) % 3 {
                        held.clear();
                    }
                }
                drop(held);
                ops.fetch_add(per_worker, Ordering::Relaxed);
            })
        })
        .collect();
    let task_workers: Vec<_> = (0..tasks)
        .map(|_| {
            let (wg, ops) = (wg.clone(), ops.clone());
            rt.spawn(async move {
                for i in 0..per_worker {
                    let guard = wg.add();
                    if i % 128 == 0 {
                        tokio::task::yield_now().await;
                    }
                    guard.done();
                }
                ops.fetch_add(per_worker, Ordering::Relaxed);
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    rt.block_on(async {
        for t in task_workers {
            t.await.unwrap();
        }
    });
    assert!(wg.is_empty());
    stop.store(true, Ordering::Release);

    let mut returns = Vec::new();
    for _ in 0..4 {
        match returned_rx.recv_timeout(LIMIT) {
            Ok(r) => returns.push(r),
            Err(_) => panic!(
                "a waiter did not return within {LIMIT:?} after all work finished (lost wake-up); \
                 returned so far: {returns:?}"
            ),
        }
    }
    println!(
        "stress: {} add/done in {:.1?} with 4 waiters ({returns:?} waits returned)",
        ops.load(Ordering::Relaxed),
        started.elapsed()
    );
    assert_eq!(ops.load(Ordering::Relaxed), per_worker * (threads + tasks));
}

/// Rounds in which the last `done` races with waiters that start at the same
/// moment: 4 threads each hold one guard and drop it at a barrier while one
/// blocking and two async waiters start waiting. Every waiter must return in
/// every round, and see the group empty.
#[test]
fn the_last_done_racing_with_fresh_waiters_wakes_them_all() {
    let rounds = scaled(10_000, 20);
    let rt = runtime();
    let wg = WaitGroup::new();
    let barrier = Arc::new(Barrier::new(5)); // 4 workers + blocking waiter
    let (guard_txs, done_rx) = {
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let txs: Vec<_> = (0..4)
            .map(|_| {
                let (tx, rx) = mpsc::channel::<taskgroup::TaskGuard>();
                let (barrier, done_tx) = (barrier.clone(), done_tx.clone());
                std::thread::spawn(move || {
                    while let Ok(guard) = rx.recv() {
                        barrier.wait();
                        drop(guard);
                        done_tx.send(()).unwrap();
                    }
                });
                tx
            })
            .collect();
        (txs, done_rx)
    };
    let (blocking_tx, blocking_rx) = mpsc::channel::<()>();
    let (blocking_go_tx, blocking_go_rx) = mpsc::channel::<()>();
    {
        let (wg, barrier) = (wg.clone(), barrier.clone());
        std::thread::spawn(move || {
            while blocking_go_rx.recv().is_ok() {
                barrier.wait();
                wg.wait_blocking().unwrap();
                assert!(wg.is_empty());
                blocking_tx.send(()).unwrap();
            }
        });
    }
    let started = Instant::now();
    for round in 0..rounds {
        // Add first, then start the waiters: nothing is added again until
        // every waiter of this round has returned, so each must see zero.
        for tx in &guard_txs {
            tx.send(wg.add()).unwrap();
        }
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let wg = wg.clone();
                rt.spawn(async move {
                    wg.wait().await.unwrap();
                    assert!(wg.is_empty());
                })
            })
            .collect();
        blocking_go_tx.send(()).unwrap();
        for _ in 0..4 {
            done_rx.recv_timeout(LIMIT).expect("worker stuck");
        }
        blocking_rx
            .recv_timeout(LIMIT)
            .unwrap_or_else(|_| panic!("blocking waiter lost its wake-up in round {round}"));
        rt.block_on(async {
            for w in waiters {
                tokio::time::timeout(LIMIT, w)
                    .await
                    .unwrap_or_else(|_| panic!("async waiter lost its wake-up in round {round}"))
                    .unwrap();
            }
        });
    }
    println!(
        "stress: {rounds} rounds of last-done vs 3 fresh waiters in {:.1?}",
        started.elapsed()
    );
}

/// Rounds in which a group's last three references let go on three threads
/// at once: the owner drops its handle, a waiter gives up (a zero-length
/// timed wait, so it sets WAITING and may or may not see the guard done) and
/// drops its clone, and the last guard completes, waking whoever listens.
/// Whoever is last must free the group, once, and no one may touch it after:
/// under Miri (`scripts/miri`) every round is checked for use after free and
/// double free, and the leak check at the end for a group never freed. In a
/// normal run the waits must return with the right answer: a wait that saw
/// the group idle saw the guard's work.
#[test]
fn the_last_references_let_go_on_three_threads_at_once() {
    let rounds = scaled(10_000, 40);
    let started = Instant::now();
    let mut idle_seen = 0;
    for round in 0..rounds {
        let wg = WaitGroup::builder().record_guards(round % 2 == 0).build();
        let guard = wg.add();
        let work = Arc::new(AtomicBool::new(false));
        let barrier = Arc::new(Barrier::new(3));
        let waiter = {
            let (wg, work, barrier) = (wg.clone(), work.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let idle = wg.wait_blocking_timeout(Duration::ZERO).is_ok();
                if idle {
                    assert!(work.load(Ordering::Relaxed), "idle before the work");
                }
                drop(wg);
                idle
            })
        };
        let completer = {
            let (work, barrier) = (work.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                work.store(true, Ordering::Relaxed);
                guard.done();
            })
        };
        barrier.wait();
        drop(wg);
        idle_seen += usize::from(waiter.join().unwrap());
        completer.join().unwrap();
    }
    println!(
        "stress: {rounds} rounds of the last handle, a giving-up waiter and the last guard letting go together in {:.1?} ({idle_seen} waits saw the group idle)",
        started.elapsed()
    );
}

/// Rounds in which a task fails on a runtime worker while the main thread
/// waits (blocking or async), for a task of the group itself and for one of a
/// child group: the wait the failure ends must report it. A wait that finds no
/// failure or link flagged takes no lock, so this checks that the flags are
/// published before the failing task's guard completes.
#[test]
fn a_failure_on_another_thread_is_reported_by_the_wait_it_ends() {
    let rounds = scaled(4_000, 8);
    let rt = runtime();
    let started = Instant::now();
    for round in 0..rounds {
        let wg = WaitGroup::new();
        let failing = if round % 2 == 0 {
            wg.clone()
        } else {
            wg.child()
        };
        {
            let _in_runtime = rt.enter();
            failing.go(move |_ctx| async move { Err::<(), _>(format!("round {round}")) });
        }
        let result = if round % 4 < 2 {
            wg.wait_blocking_timeout(LIMIT)
        } else {
            rt.block_on(wg.wait_timeout(LIMIT))
        };
        let err = result.expect_err("the failure was not reported");
        assert!(
            matches!(err, taskgroup::WaitError::Failed { .. }),
            "round {round}: {err}"
        );
        assert_eq!(err.errors().len(), 1, "round {round}: {err}");
    }
    println!(
        "stress: {rounds} rounds of a failure on a worker vs a waiter in {:.1?}",
        started.elapsed()
    );
}

/// Two failures at once in a `cancel_on_error` group, on the two workers:
/// exactly one is the cause, it is the first failure listed and primary, and
/// the other is secondary, whichever lands first. Before, the secondary mark,
/// the push and the cause were three steps, and about 1 round in 4,000 had
/// two primary failures or a first failure that was not the cause (found by a
/// hostile probe, `probe-kinds` `cause_race`).
#[test]
fn two_failures_at_once_make_one_cause_listed_first_and_one_secondary() {
    let rounds = scaled(50_000, 16);
    let rt = runtime();
    let started = Instant::now();
    rt.block_on(async {
        for round in 0..rounds {
            let wg = WaitGroup::builder().cancel_on_error(true).build();
            let arrived = Arc::new(AtomicUsize::new(0));
            for i in 0..2 {
                let arrived = arrived.clone();
                wg.go(move |_| async move {
                    // Both fail together if they run on both workers; a
                    // yield, not a block, if they share one.
                    arrived.fetch_add(1, Ordering::SeqCst);
                    while arrived.load(Ordering::SeqCst) < 2 {
                        tokio::task::yield_now().await;
                    }
                    Err::<(), _>(format!("failure {i}"))
                });
            }
            let err = tokio::time::timeout(LIMIT, wg.wait())
                .await
                .expect("the wait did not return")
                .expect_err("both tasks failed");
            let errors = err.errors();
            let cause = wg.cancel_cause().expect("a failure cancelled the group");
            assert_eq!(errors.total(), 2, "round {round}");
            assert_eq!(errors.first().unwrap().id(), cause.id(), "round {round}");
            assert!(!cause.is_secondary(), "round {round}");
            assert_eq!(errors.primary().count(), 1, "round {round}: {err}");
            assert_eq!(errors.secondary().count(), 1, "round {round}: {err}");
        }
    });
    println!(
        "stress: {rounds} rounds of two failures at once in {:.1?}",
        started.elapsed()
    );
}

/// A group that records every guard has no unrecorded guard, whatever add
/// and done run on another thread while `pending()` and `dump()` look: each
/// reads the count with the entries (in a moment with nothing in flight), not
/// after listing them. Before, 54-80% of the dumps of such a group said
/// "1 unrecorded guard" (found by a hostile probe, `probe-obs` `phantom`).
#[test]
fn reports_of_a_recording_group_under_add_done_show_no_unrecorded_guard() {
    let looks = scaled(2_000, 8);
    let wg = WaitGroup::builder().name("busy").build();
    let held = wg.task().name("held").add();
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    let churn = {
        let (wg, stop, rounds) = (wg.clone(), stop.clone(), rounds.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                wg.add().done();
                rounds.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Look only while the other thread adds and completes.
    while rounds.load(Ordering::Relaxed) == 0 {
        std::thread::yield_now();
    }
    let before = rounds.load(Ordering::Relaxed);
    // At least `looks` looks, and on until the other thread has run a while
    // under them (it may be descheduled for the first ones).
    let mut look = 0;
    while look < looks || rounds.load(Ordering::Relaxed) - before < looks {
        look += 1;
        for group in wg.pending().groups() {
            assert_eq!(group.unrecorded(), 0, "look {look}: {group:?}");
            assert!(!group.is_empty(), "look {look}: the held guard is pending");
        }
        let tree = wg.dump();
        let group = tree.group(wg.id()).expect("the root is dumped");
        assert_eq!(group.unrecorded(), 0, "look {look}:\n{tree}");
    }
    let during = rounds.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
    assert!(during > 0, "no add/done ran while the reports were made");
    drop(held);
    assert!(wg.pending().is_empty());
    println!("stress: {look} looks at a group under {during} add/done");
}

/// `cancel()` racing with `go()` from several threads: a task spawned before,
/// during or after the cancel sees its context cancelled, so the wait returns.
#[test]
fn cancel_racing_with_go_leaves_no_task_behind() {
    let rounds = scaled(200, 4);
    let rt = runtime();
    let handle = rt.handle().clone();
    let mut spawned = 0;
    for round in 0..rounds {
        let wg = WaitGroup::new();
        let start = Arc::new(Barrier::new(4));
        let spawners: Vec<_> = (0..3)
            .map(|_| {
                let (wg, start, handle) = (wg.clone(), start.clone(), handle.clone());
                std::thread::spawn(move || {
                    let _rt = handle.enter();
                    start.wait();
                    for _ in 0..20 {
                        wg.go(|ctx| async move {
                            ctx.cancelled().await;
                            Ok::<_, std::io::Error>(())
                        });
                    }
                })
            })
            .collect();
        start.wait();
        wg.cancel();
        for s in spawners {
            s.join().unwrap();
        }
        spawned += 60;
        rt.block_on(async {
            tokio::time::timeout(LIMIT, wg.wait())
                .await
                .unwrap_or_else(|_| panic!("round {round}: {}", wg.pending()))
                .unwrap();
        });
        assert!(wg.is_empty() && wg.is_cancelled());
    }
    println!("stress: {rounds} rounds of cancel racing with go, {spawned} tasks");
}

/// Stubborn tasks spawned on three threads while a shutdown with no grace
/// aborts their group, each round: every task counted before the group
/// closed is aborted, however its `go()` interleaves with the abort's walk
/// (the spawning thread can be between the task's entry and its abort
/// handle, or between its count and its entry, when the walk passes), and
/// none is left running. Before `Registry::set_abort` checked for an abort
/// under way, this failed within its first rounds: a task was left running.
#[test]
fn stubborn_tasks_spawned_while_a_shutdown_aborts_are_all_aborted() {
    let rounds = scaled(300, 4);
    let rt = runtime();
    let handle = rt.handle().clone();
    let (mut spawned_total, mut aborted_total, mut late_total) = (0, 0, 0);
    for round in 0..rounds {
        // Generous, so that every abort lands while the shutdown waits
        // (Miri is slow to settle them): one that lands after is counted as
        // finished, which the bound on `finished()` below does not allow for.
        let wg = WaitGroup::builder()
            .abort_timeout(Duration::from_secs(600))
            .build();
        let ended = Arc::new(AtomicUsize::new(0));
        let spawned = Arc::new(AtomicUsize::new(0));
        let (started, all_started) = mpsc::channel();
        let spawners: Vec<_> = (0..3)
            .map(|_| {
                let (wg, started, handle) = (wg.clone(), started.clone(), handle.clone());
                let (ended, spawned) = (ended.clone(), spawned.clone());
                std::thread::spawn(move || {
                    let _rt = handle.enter();
                    // Until the shutdown closes the group; the test is told
                    // after the first ten, so the walk has entries to pass.
                    for made in 1.. {
                        let ended = ended.clone();
                        // Counted once the task is made: a refused closure
                        // is dropped unrun.
                        let task = wg.try_go(move |_| {
                            let ended = Ended(ended);
                            async move {
                                let _ended = ended;
                                std::future::pending::<()>().await;
                            }
                        });
                        if task.is_err() {
                            break;
                        }
                        spawned.fetch_add(1, Ordering::Relaxed);
                        if made == 10 {
                            started.send(()).expect("the test listens");
                        }
                    }
                })
            })
            .collect();
        for _ in 0..3 {
            all_started.recv().expect("every spawner starts");
        }
        let report = rt.block_on(async {
            tokio::time::timeout(LIMIT, wg.shutdown(Duration::ZERO))
                .await
                .unwrap_or_else(|_| panic!("round {round}: {}", wg.pending()))
        });
        for s in spawners {
            s.join().unwrap();
        }
        let spawned = spawned.load(Ordering::Relaxed);
        // The report: each task aborted, or still pending (a `go()` whose
        // thread lost its core from its count to its abort handle for all
        // of the shutdown's wait: recorded, or only counted), none twice.
        // None finished by itself, but two per spawning thread at most are
        // counted as finished: a `go()` counted and not yet recorded when
        // the shutdown read its counters looks like a lean guard, and its
        // entry like that guard finishing (the task is aborted and listed
        // as well); and a `go()` counted before the group closed whose abort
        // handle comes only after the shutdown stopped aborting is aborted
        // then, unlisted, and ends as finished. Every task is in some part.
        let pending = report.pending();
        let late = pending.tasks().count()
            + pending
                .groups()
                .iter()
                .map(|g| g.unrecorded())
                .sum::<usize>();
        let mut ids: Vec<_> = report.aborted().iter().map(|t| t.id()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), report.aborted().len(), "round {round}: {report}");
        assert!(report.finished() <= 6, "round {round}: {report}");
        assert!(
            report.aborted().len() + late <= spawned
                && spawned <= report.aborted().len() + late + report.finished(),
            "round {round}: {spawned} spawned: {report}"
        );
        // And every one ends: those still pending are aborted as their
        // handles come.
        rt.block_on(async {
            tokio::time::timeout(LIMIT, wg.wait())
                .await
                .unwrap_or_else(|_| panic!("round {round}: {}", wg.pending()))
                .expect("no failures");
        });
        assert_eq!(ended.load(Ordering::Relaxed), spawned, "round {round}");
        spawned_total += spawned;
        aborted_total += report.aborted().len();
        late_total += spawned - report.aborted().len();
    }
    println!(
        "stress: {rounds} shutdowns aborting tasks spawned on 3 threads meanwhile, \
         {spawned_total} spawned, {aborted_total} aborted by their shutdown, {late_total} \
         aborted after it"
    );
}

/// Stubborn tasks, every other one aborted by its own handle from another
/// thread while a shutdown with no grace aborts the group (from when it
/// closed the group, after reading its counters), each round: each
/// task is in exactly one part of the report, and the parts add up to the
/// tasks. A task the shutdown's walk reached before it ended is listed
/// (whichever abort took effect); one its handle aborted and that was gone
/// before the walk reached it ended by itself as far as the shutdown can
/// tell, and is counted as finished. Before `Registry::remove_aborted` counted only
/// the aborts a shutdown lists, a task its handle aborted after the
/// shutdown read its counters was in none of the parts: this failed in its
/// first round. Before the report waited for ends under way, a task whose
/// entry was gone but whose count was not yet given up (its thread off its
/// core between the two) was counted both as finished and as pending
/// (round 265 in one CI run).
#[test]
fn tasks_aborted_by_their_handles_during_a_shutdown_are_each_in_one_part_of_its_report() {
    let rounds = scaled(1_000, 4);
    let tasks = scaled(64, 8);
    let rt = runtime();
    let (mut finished_total, mut listed_total) = (0, 0);
    for round in 0..rounds {
        // Generous, so that every abort lands while the shutdown waits.
        let wg = WaitGroup::builder()
            .abort_timeout(Duration::from_secs(600))
            .build();
        // `go()` stores each task's abort handle before it returns.
        let handles: Vec<_> = rt.block_on(async {
            (0..tasks)
                .map(|_| wg.go(|_| std::future::pending::<()>()))
                .collect()
        });
        let ids: Vec<_> = handles.iter().map(|h| h.id()).collect();
        let aborter = {
            let wg = wg.clone();
            std::thread::spawn(move || {
                // The shutdown closes the group after it read its counters:
                // from then on every task is one of its report's.
                while !wg.is_closed() {
                    std::thread::yield_now();
                }
                for handle in handles.iter().step_by(2) {
                    handle.abort();
                }
                handles
            })
        };
        let report = rt.block_on(async {
            tokio::time::timeout(LIMIT, wg.shutdown(Duration::ZERO))
                .await
                .unwrap_or_else(|_| panic!("round {round}: {}", wg.pending()))
        });
        drop(aborter.join().unwrap());
        let mut listed: Vec<_> = report.aborted().iter().map(|t| t.id()).collect();
        listed.sort_unstable();
        listed.dedup();
        assert_eq!(
            listed.len(),
            report.aborted().len(),
            "round {round}: {report}"
        );
        assert!(report.pending().is_empty(), "round {round}: {report}");
        // The tasks no handle aborted end only by the shutdown's abort.
        for id in ids.iter().skip(1).step_by(2) {
            assert!(
                listed.contains(id),
                "round {round}: {id} not listed: {report}"
            );
        }
        assert_eq!(
            report.finished() + report.aborted().len(),
            tasks,
            "round {round}: {report}"
        );
        // A task its handle aborted before the walk reached it is waited for
        // only while the report is made (250 ms at most): its count may be
        // given up after the report.
        rt.block_on(async { tokio::time::timeout(LIMIT, wg.wait()).await })
            .unwrap_or_else(|_| panic!("round {round}: {}", wg.pending()))
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(wg.is_empty(), "round {round}");
        finished_total += report.finished();
        listed_total += report.aborted().len();
    }
    println!(
        "{rounds} rounds of {tasks} tasks, half aborted by their handles during a shutdown: \
         {finished_total} counted as finished, {listed_total} listed as aborted by it"
    );
}

/// Counts a task's end, whether it finished or was aborted (dropped).
struct Ended(Arc<AtomicUsize>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Counts {
    spawned: AtomicUsize,
    refused: AtomicUsize,
    ended: Arc<AtomicUsize>,
}

type Drainer = Box<
    dyn FnOnce(
            taskgroup::TaskContext,
        ) -> futures::future::BoxFuture<'static, Result<(), std::io::Error>>
        + Send,
>;

/// A task that waits for cancellation and then, during the drain, spawns two
/// children with `go` (allowed after close) and tries a third with `try_go`
/// (refused after close), down to `depth`. With `stubborn`, leaves ignore
/// cancellation and must be aborted.
fn drainer(wg: WaitGroup, counts: Arc<Counts>, depth: usize, stubborn: bool) -> Drainer {
    Box::new(move |ctx| {
        Box::pin(async move {
            let _ended = Ended(counts.ended.clone());
            if depth == 0 && stubborn {
                std::future::pending::<()>().await;
            }
            ctx.cancelled().await;
            if depth > 0 {
                // Counted before spawning (no await in between, so an abort
                // cannot fall between the two).
                for _ in 0..2 {
                    counts.spawned.fetch_add(1, Ordering::Relaxed);
                    wg.go(drainer(wg.clone(), counts.clone(), depth - 1, stubborn));
                }
                let f = drainer(wg.clone(), counts.clone(), depth - 1, stubborn);
                match wg.try_go(f) {
                    Ok(_) => counts.spawned.fetch_add(1, Ordering::Relaxed),
                    Err(_) => counts.refused.fetch_add(1, Ordering::Relaxed),
                };
            }
            Ok(())
        })
    })
}

/// Repeated shutdowns while tasks spawn tasks during the drain: nothing
/// spawned during the shutdown escapes it. Every spawned task has ended
/// (finished or aborted) when `shutdown` returns, the group is empty, and the
/// report accounts for each: finished + aborted = spawned.
#[test]
fn repeated_shutdowns_with_tasks_spawning_tasks_during_the_drain() {
    let rounds = scaled(100, 2);
    let stubborn_rounds = scaled(5, 1);
    let rt = runtime();
    let mut total_spawned = 0;
    let mut total_aborted = 0;
    let mut total_refused = 0;
    for round in 0..rounds + stubborn_rounds {
        let stubborn = round >= rounds;
        let (depth, roots) = if cfg!(miri) { (2, 2) } else { (4, 8) };
        let wg = WaitGroup::builder()
            .abort_timeout(Duration::from_secs(30))
            .build();
        let counts = Arc::new(Counts::default());
        let report = rt.block_on(async {
            for _ in 0..roots {
                counts.spawned.fetch_add(1, Ordering::Relaxed);
                wg.go(drainer(wg.clone(), counts.clone(), depth, stubborn));
            }
            let grace = if stubborn {
                Duration::from_millis(200)
            } else {
                LIMIT
            };
            tokio::time::timeout(LIMIT * 2, wg.shutdown(grace))
                .await
                .expect("shutdown hung")
        });
        let spawned = counts.spawned.load(Ordering::Relaxed);
        let ended = counts.ended.load(Ordering::Relaxed);
        assert!(report.pending().is_empty(), "round {round}: {report}");
        assert!(report.errors().is_empty(), "round {round}: {report}");
        assert!(wg.is_empty(), "round {round}: {report}");
        assert_eq!(
            ended, spawned,
            "round {round}: a spawned task escaped: {report}"
        );
        assert_eq!(
            report.finished() + report.aborted().len(),
            spawned,
            "round {round}: {report}"
        );
        if stubborn {
            // Each root's tree ends in stubborn leaves, which must be aborted.
            assert!(!report.aborted().is_empty(), "round {round}: {report}");
        } else {
            assert!(report.is_clean(), "round {round}: {report}");
        }
        // Nothing spawns after shutdown returned.
        rt.block_on(async {
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
        });
        assert_eq!(counts.spawned.load(Ordering::Relaxed), spawned);
        total_spawned += spawned;
        total_aborted += report.aborted().len();
        total_refused += counts.refused.load(Ordering::Relaxed);
    }
    println!(
        "stress: {} shutdowns, {total_spawned} tasks spawned ({total_aborted} aborted), \
         {total_refused} try_go refused during the drain",
        rounds + stubborn_rounds
    );
}

/// What [`linker`] tasks share in one round: every group of the tree, and
/// the tasks spawned and ended.
#[derive(Default)]
struct Linked {
    groups: std::sync::Mutex<Vec<WaitGroup>>,
    spawned: AtomicUsize,
    ended: AtomicUsize,
    /// xorshift state: which group a new one is linked under. Read and
    /// written apart: two tasks picking at once may pick the same group,
    /// which is as good a case as any.
    seed: std::sync::atomic::AtomicU64,
}

impl Linked {
    fn pick(&self) -> WaitGroup {
        let mut x = self.seed.load(Ordering::Relaxed) | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed.store(x, Ordering::Relaxed);
        let groups = self.groups.lock().unwrap();
        groups[(x % groups.len() as u64) as usize].clone()
    }
}

/// A task of `wg` that waits for cancellation and then, while the shutdown
/// runs, links a new group under a group picked at random, often one the
/// shutdown has stopped already; the new group's own task does the same,
/// `generations` deep.
fn linker(wg: &WaitGroup, linked: &Arc<Linked>, generations: usize) {
    linked.spawned.fetch_add(1, Ordering::Relaxed);
    let linked = linked.clone();
    wg.go(move |ctx| async move {
        ctx.cancelled().await;
        if generations > 0 {
            let parent = linked.pick();
            let late = WaitGroup::new();
            linker(&late, &linked, generations - 1);
            linked.groups.lock().unwrap().push(late.clone());
            parent.link(&late).unwrap();
        }
        linked.ended.fetch_add(1, Ordering::Relaxed);
    });
}

/// Shutdowns of a chain of groups whose tasks, once cancelled, link new
/// groups anywhere in the tree, below groups already stopped too: every
/// group linked before the shutdown returns is stopped by it (closed and
/// cancelled), its tasks finished and counted, none aborted.
#[test]
fn groups_linked_anywhere_during_shutdowns_are_all_stopped() {
    let rounds = scaled(200, 2);
    let (depth, generations) = if cfg!(miri) { (3, 1) } else { (8, 2) };
    let rt = runtime();
    let mut total_groups = 0;
    for round in 0..rounds {
        let linked = Arc::new(Linked::default());
        linked.seed.store(round as u64 + 1, Ordering::Relaxed);
        let root = WaitGroup::new();
        let mut last = root.clone();
        linked.groups.lock().unwrap().push(root.clone());
        for _ in 0..depth {
            let next = last.child();
            linked.groups.lock().unwrap().push(next.clone());
            last = next;
        }
        let chain: Vec<WaitGroup> = linked.groups.lock().unwrap().clone();
        let report = rt.block_on(async {
            for group in &chain {
                linker(group, &linked, generations);
            }
            tokio::time::timeout(LIMIT, root.shutdown(LIMIT))
                .await
                .expect("shutdown hung")
        });
        let groups = linked.groups.lock().unwrap().clone();
        let spawned = linked.spawned.load(Ordering::Relaxed);
        assert!(report.is_clean(), "round {round}: {report}");
        assert_eq!(report.finished(), spawned, "round {round}: {report}");
        assert_eq!(linked.ended.load(Ordering::Relaxed), spawned);
        for group in &groups {
            assert!(
                group.is_closed() && group.is_cancelled() && group.is_empty(),
                "round {round}: group {:?} was linked during the shutdown and not stopped: {report}",
                group.id()
            );
        }
        // Each chain task linked one group per generation.
        assert_eq!(groups.len(), (depth + 1) * (1 + generations));
        total_groups += groups.len();
    }
    println!("stress: {rounds} shutdowns, {total_groups} groups, most linked while they ran");
}

/// A shutdown awaited in `block_on` (the body of `#[tokio::main]`) on two workers, whose child
/// group's turn has less than a millisecond of its cancel phase left: the child's five tasks
/// return as soon as they are cancelled, and must run before the deadline aborts them. The
/// wait, too short for the timer, yields until then; off a worker (in `block_on`) Tokio's
/// yield returns at once, so the thread spun for the rest of the wait, and on two cores the
/// workers that were to run the cancelled tasks often did not get one in time: in about a
/// fifth of the rounds one of the tasks was aborted (`probe-gen blockon 500`: 101 and 110 of
/// 500; 0 of 500 when the same shutdown runs in a spawned task). The wait now yields the
/// thread too. A share of the rounds rather than none: a loaded machine may still be slow to
/// run a woken worker.
#[test]
#[cfg_attr(miri, ignore = "real time on two workers, 300 rounds")]
fn a_shutdown_in_block_on_lets_the_workers_run_what_it_cancelled() {
    use taskgroup::shutdown::Grace;
    const ROUNDS: usize = 300;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut bad = 0;
    for _ in 0..ROUNDS {
        let aborted = rt.block_on(async {
            let app = WaitGroup::builder().name("app").build();
            let workers = app.task().name("workers").child();
            // Keeps `app`'s turn going into the cancel phase, so that `workers`' turn
            // starts with less than a millisecond of it left.
            app.task().name("flusher").go(|ctx| async move {
                ctx.draining().await;
                tokio::time::sleep(Duration::from_micros(200)).await;
            });
            for _ in 0..5 {
                workers
                    .task()
                    .name("worker")
                    .go(|ctx| async move { ctx.cancelled().await });
            }
            // Not a wait for the tasks (one polled first after the cancel returns at
            // once): the scenario, idle workers that the cancel must wake.
            tokio::time::sleep(Duration::from_millis(1)).await;
            let grace =
                Grace::drain(Duration::from_millis(1)).then_cancel(Duration::from_millis(2));
            app.shutdown(grace).await.aborted().len()
        });
        if aborted > 0 {
            bad += 1;
        }
    }
    println!("stress: {bad} of {ROUNDS} shutdowns in block_on aborted a task that stops on cancel");
    assert!(bad <= ROUNDS / 30, "{bad} of {ROUNDS} rounds");
}

/// Tasks waiting on parts they fanned out into (`ctx.scoped_child()`), on
/// two workers, shut down: a task whose parts ended on the shutdown's cancel
/// finds its own context cancelled (the parts are cancelled with it, not
/// before it). Before the cancel of a group's context let that cancel reach
/// its scoped children, they were cancelled first, and a task running on
/// the other worker saw its parts stop while its own context read
/// uncancelled (`probe-scoped repro_window 50`: 38 of 50 runs).
#[test]
fn tasks_see_their_context_cancelled_once_their_scoped_parts_stop_on_it() {
    for round in 0..scaled(50, 2) {
        let uncancelled = runtime().block_on(tasks_whose_parts_stopped_first(false));
        assert_eq!(uncancelled, 0, "round {round}");
    }
}

/// As above, in a group reopened after a drain whose first context a task
/// still holds: the shutdown cancels both contexts, the first one first,
/// and the tasks of the second still see their own context cancelled once
/// their parts stop. (With each context's cancel giving every scoped child
/// its reason and cancelling it, those of the second context were
/// cancelled with the first: the test failed in 6 of 9 runs.)
#[test]
fn tasks_of_a_reopened_group_see_their_context_cancelled_once_their_parts_stop() {
    for round in 0..scaled(50, 2) {
        let uncancelled = runtime().block_on(tasks_whose_parts_stopped_first(true));
        assert_eq!(uncancelled, 0, "round {round}");
    }
}

/// Ten tasks that each fan out into a scoped part that stops when
/// cancelled, and wait for it, shut down (after a drain and a reopen, with
/// a task holding the first context, if `reopened`): how many of them found
/// their own context uncancelled once their part had stopped.
async fn tasks_whose_parts_stopped_first(reopened: bool) -> usize {
    let server = WaitGroup::new();
    if reopened {
        server.go(|ctx| async move { ctx.cancelled().await });
        server.drain();
        server.close();
        assert!(server.reopen());
    }
    let (started, mut all_started) = tokio::sync::mpsc::channel::<()>(10);
    let uncancelled = Arc::new(AtomicUsize::new(0));
    for _ in 0..10 {
        let (started, uncancelled) = (started.clone(), uncancelled.clone());
        server.go(move |ctx| async move {
            let parts = ctx.scoped_child();
            parts.go(|ctx| async move { ctx.cancelled().await });
            started.send(()).await.unwrap();
            parts.wait().await.unwrap();
            if !ctx.is_cancelled() {
                uncancelled.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    for _ in 0..10 {
        all_started.recv().await.unwrap();
    }
    let report = tokio::time::timeout(LIMIT, server.shutdown(Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(report.is_clean(), "{report}");
    uncancelled.load(Ordering::SeqCst)
}
