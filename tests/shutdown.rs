//! Closing and the two-phase, ordered shutdown.

mod common {
    pub(crate) mod starter;
}

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use taskgroup::shutdown::Grace;
use taskgroup::{TaskKind, WaitGroup};
use tokio::sync::oneshot;
use tokio::time::Instant;

use common::starter::{aborted_named, start_conn};

#[tokio::test]
async fn close_refuses_try_add_and_try_go_but_keeps_pending_work() {
    let wg = WaitGroup::builder().name("accept").build();
    let conn = wg.task().name("conn").try_add().unwrap();
    assert!(!wg.is_closed());
    wg.close();
    assert!(wg.is_closed());
    let err = wg.try_add().unwrap_err();
    assert_eq!(err.group_id(), wg.id());
    assert_eq!(
        err.to_string(),
        format!("group {} is closed to new work", wg.id())
    );
    assert!(wg.task().name("late").try_add().is_err());
    let mut called = false;
    assert!(wg
        .try_go(|_| {
            called = true;
            async { Ok::<_, std::io::Error>(()) }
        })
        .is_err());
    assert!(!called, "a refused try_go does not call the closure");
    assert!(wg
        .task()
        .name("late")
        .try_go(|_| async { Ok::<_, std::io::Error>(()) })
        .is_err());
    assert_eq!(wg.len(), 1);

    // Plain add/go still register work, so nothing escapes a wait.
    let extra = wg.add();
    wg.go(|_| async { Ok::<_, std::io::Error>(()) });
    drop((conn, extra));
    wg.wait().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_aborts_stragglers_and_reports_everything() {
    let wg = WaitGroup::builder().name("server").build();
    let finished_tx = Arc::new(Mutex::new(Vec::new()));
    for i in 0..3 {
        let log = finished_tx.clone();
        wg.task()
            .name(format!("polite-{i}"))
            .go(move |ctx| async move {
                ctx.cancelled().await;
                tokio::time::sleep(Duration::from_millis(100 * (i + 1))).await;
                log.lock().push(i);
                Ok::<_, std::io::Error>(())
            });
    }
    let stubborn = wg.task().name("stubborn").go(|_| async {
        std::future::pending::<()>().await;
        Ok::<_, std::io::Error>(())
    });
    wg.task().name("fails-on-cancel").go(|ctx| async move {
        ctx.cancelled().await;
        Err::<(), _>("interrupted")
    });
    let leaked = wg.task().name("leaked-guard").add();
    tokio::task::yield_now().await;

    let start = Instant::now();
    let report = wg.shutdown(Duration::from_secs(2)).await;
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed <= Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert_eq!(*finished_tx.lock(), [0, 1, 2]);
    assert_eq!(report.finished(), 4, "{report}");
    assert_eq!(
        report.aborted().iter().map(|t| t.id()).collect::<Vec<_>>(),
        [stubborn.id()]
    );
    assert_eq!(report.errors().len(), 1);
    assert_eq!(report.pending().len(), 1);
    let pending = report.pending().tasks().next().unwrap();
    assert_eq!(
        (pending.name(), pending.kind()),
        (Some("leaked-guard"), TaskKind::Guard)
    );
    assert!(!report.is_clean());
    let text = report.to_string();
    assert!(
        text.starts_with("shutdown took 2.0s: 4 finished, 1 failed, 1 aborted, 1 still pending"),
        "{text}"
    );
    assert!(text.contains("aborted: task \"stubborn\""), "{text}");
    assert!(text.contains("pending: task \"leaked-guard\""), "{text}");
    assert!(wg.is_closed() && wg.is_cancelled());
    drop(leaked);
}

#[tokio::test(start_paused = true)]
async fn a_clean_shutdown_returns_as_soon_as_work_is_done() {
    let wg = WaitGroup::new();
    wg.go(|ctx| async move {
        ctx.cancelled().await;
        Ok::<_, std::io::Error>(())
    });
    let start = Instant::now();
    let report = wg.shutdown(Duration::from_secs(30)).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.finished(), 1);
}

/// Teardown order: a parent's connections drain while its linked database
/// pool keeps serving; the pool is cancelled only afterwards, and all of it
/// runs under one deadline.
#[tokio::test(start_paused = true)]
async fn shutdown_is_ordered_under_one_shared_deadline() {
    let events = Arc::new(Mutex::new(Vec::<(&str, Duration)>::new()));
    let start = Instant::now();
    let log = move |events: &Arc<Mutex<Vec<(&'static str, Duration)>>>, what: &'static str| {
        events.lock().push((what, start.elapsed()));
    };

    let server = WaitGroup::builder().name("server").build();
    let pool = server.task().name("pool").child();
    let flusher = WaitGroup::builder().name("flusher").build();
    server.link(&flusher).unwrap();

    let ev = events.clone();
    let pool_ctx = pool.context();
    server.task().name("conn").go(move |ctx| async move {
        ctx.cancelled().await;
        log(&ev, "conn cancelled");
        // The pool must still be usable while connections drain.
        assert!(!pool_ctx.is_cancelled());
        tokio::time::sleep(Duration::from_secs(4)).await;
        log(&ev, "conn done");
        Ok::<_, std::io::Error>(())
    });
    let ev = events.clone();
    pool.task().name("pool").go(move |ctx| async move {
        ctx.cancelled().await;
        log(&ev, "pool cancelled");
        tokio::time::sleep(Duration::from_millis(500)).await;
        log(&ev, "pool done");
        Ok::<_, std::io::Error>(())
    });
    let ev = events.clone();
    flusher.task().name("flush").go(move |ctx| async move {
        ctx.cancelled().await;
        log(&ev, "flusher cancelled");
        // Needs 3s, but only 0.5s of the shared deadline is left.
        tokio::time::sleep(Duration::from_secs(3)).await;
        log(&ev, "flusher done");
        Ok::<_, std::io::Error>(())
    });
    tokio::task::yield_now().await;

    let report = server.shutdown(Duration::from_secs(5)).await;
    let s = |secs: f64| Duration::from_secs_f64(secs);
    assert_eq!(
        *events.lock(),
        [
            ("conn cancelled", s(0.0)),
            ("conn done", s(4.0)),
            ("pool cancelled", s(4.0)),
            ("pool done", s(4.5)),
            ("flusher cancelled", s(4.5)),
        ]
    );
    assert_eq!(
        report.elapsed(),
        s(5.0),
        "one deadline for the whole tree, not one per group"
    );
    assert_eq!(report.aborted().len(), 1);
    assert_eq!(report.aborted()[0].group_name(), Some("flusher"));
    assert_eq!(report.finished(), 2);
    assert!(report.pending().is_empty());
}

/// A server whose connection overran the grace period: the resources linked
/// below it are still cancelled in order, and share what is left of the
/// forced phase (the abort timeout) to close cleanly; then they are aborted.
#[tokio::test(start_paused = true)]
async fn groups_reached_after_the_deadline_share_the_forced_phase() {
    let server = WaitGroup::builder()
        .abort_timeout(Duration::from_secs(1))
        .build();
    let pool = server.task().name("pool").child();
    let flusher = server.task().name("flusher").child();
    let stuck = server.task().name("stuck").child();
    let start = Instant::now();
    server.task().name("straggler").go(|_| async {
        std::future::pending::<()>().await;
        Ok::<_, std::io::Error>(())
    });
    let closes = Arc::new(Mutex::new(Vec::new()));
    for (group, name, takes) in [
        (&pool, "pool", 200),
        (&flusher, "flusher", 200),
        (&stuck, "stuck", 5_000),
    ] {
        let closes = closes.clone();
        group.task().name(name).go(move |ctx| async move {
            ctx.cancelled().await;
            tokio::time::sleep(Duration::from_millis(takes)).await;
            closes.lock().push((name, start.elapsed()));
            Ok::<_, std::io::Error>(())
        });
    }
    tokio::task::yield_now().await;
    let report = server.shutdown(Duration::from_secs(2)).await;

    let ms = Duration::from_millis;
    // Pool and flusher close cleanly, one after the other, after the deadline:
    // the pool, reached at 2.0 s with three groups left in the 1 s forced
    // phase, may close until 2.0 + 3/4 * 333 ms; the flusher, reached at 2.2 s
    // with two left, until 2.2 + 3/4 * 400 ms.
    assert_eq!(*closes.lock(), [("pool", ms(2200)), ("flusher", ms(2400))]);
    let aborted: Vec<_> = report
        .aborted()
        .iter()
        .map(|t| (t.name().unwrap(), t.age()))
        .collect();
    // The straggler at the deadline; "stuck", reached at 2.4 s as the last
    // group, after three quarters of the 600 ms left.
    assert_eq!(aborted, [("straggler", ms(2000)), ("stuck", ms(2850))]);
    assert_eq!(report.elapsed(), ms(2850));
    assert!(report.pending().is_empty());
}

/// 5,000 per-request groups below a server, each with a task that ignores
/// cancellation: all but the first are reached after the deadline, with a
/// share of the 1 s forced phase of 200 µs each. The shutdown keeps its
/// budget (grace + abort timeout) and lists every abort, in the order of the
/// groups. Each share used to be rounded up to a tick of Tokio's timer (a
/// millisecond): the shutdown took 5.7 s, and 4,983 of the aborts, which
/// landed after their group's share, were counted as finished.
#[tokio::test(start_paused = true)]
async fn many_groups_reached_late_keep_the_budget_and_list_their_aborts() {
    // Under Miri, 50 groups with a 10 ms abort timeout: the same 200 µs shares.
    let (groups, abort) = if cfg!(miri) {
        (50, Duration::from_millis(10))
    } else {
        (5_000, Duration::from_secs(1))
    };
    let server = WaitGroup::builder().abort_timeout(abort).build();
    let requests: Vec<WaitGroup> = (0..groups)
        .map(|i| {
            let request = server.task().name(format!("req {i}")).child();
            request.go(|_| std::future::pending::<()>());
            request
        })
        .collect();
    tokio::task::yield_now().await;
    let grace = Duration::from_millis(100);
    let report = server.shutdown(grace).await;

    assert!(report.elapsed() <= grace + abort, "{:?}", report.elapsed());
    assert_eq!(report.aborted().len(), groups);
    assert_eq!(report.finished(), 0);
    assert!(report.pending().is_empty());
    let order: Vec<_> = report.aborted().iter().map(|t| t.group_id()).collect();
    let turns: Vec<_> = requests.iter().map(WaitGroup::id).collect();
    assert_eq!(order, turns, "in the order of the groups' turns");
}

/// Groups made during the grace (a group per request, by an accept loop
/// that ignores cancellation) are among the groups not yet reached when the
/// deadline passes: they share the forced phase with those the shutdown
/// walked at its start. Here two request groups made before the call and
/// ten made during the grace each hold a task that ignores cancellation;
/// each of the twelve is reached late and waits three quarters of a twelfth
/// of the 100 ms before its abort. The two walked groups used to divide the
/// whole forced phase between them (aborted at 138 ms and 185 ms), leaving
/// the ten 1.5 ms each; on two workers, aborts that had no time to land were
/// reported as still running, and ran on after the shutdown returned.
#[tokio::test(start_paused = true)]
async fn groups_made_during_the_grace_share_the_forced_phase() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let ms = Duration::from_millis;
    let server = WaitGroup::builder().abort_timeout(ms(100)).build();
    for i in 0..2 {
        server
            .child()
            .task()
            .name(format!("stuck {i}"))
            .go(|_| std::future::pending::<()>());
    }
    let made = Arc::new(AtomicUsize::new(0));
    {
        let (server, made) = (server.clone(), made.clone());
        server
            .clone()
            .task()
            .name("accept")
            .go(move |_| async move {
                tokio::time::sleep(ms(5)).await;
                loop {
                    // Made closed and cancelled (the shutdown reached `server`);
                    // its task ignores that.
                    let request = server.child();
                    request
                        .task()
                        .name(format!("request {}", made.fetch_add(1, Ordering::SeqCst)))
                        .go(|_| std::future::pending::<()>());
                    tokio::time::sleep(ms(10)).await;
                }
            });
    }
    tokio::task::yield_now().await;
    let report = server.shutdown(ms(100)).await;

    assert_eq!(
        made.load(Ordering::SeqCst),
        10,
        "one each 10 ms of the grace"
    );
    let aborted: Vec<_> = report.aborted().iter().map(|t| t.name().unwrap()).collect();
    let requests = (0..10).map(|i| format!("request {i}"));
    let turns: Vec<_> = ["accept", "stuck 0", "stuck 1"]
        .map(String::from)
        .into_iter()
        .chain(requests)
        .collect();
    assert_eq!(aborted, turns, "{report}");
    assert!(report.pending().is_empty(), "{report}");
    // Made at the start, so their age is when they were aborted: after
    // three quarters of a twelfth of 100 ms, then of an eleventh of the rest.
    let at = |name: &str| {
        let task = report.aborted().iter().find(|t| t.name() == Some(name));
        task.unwrap().age()
    };
    assert!(at("stuck 0") <= ms(110), "{report}");
    assert!(at("stuck 1") <= ms(120), "{report}");
    assert!(report.elapsed() <= ms(200), "{report}");
}

/// A task that closes on the very tick its group's time to stop ends (a
/// close that takes the whole grace) is not aborted: the timer and the task
/// wake on the same tick, and the task runs before the group is looked at.
/// It used to be aborted, as the shutdown was polled first.
#[tokio::test(start_paused = true)]
async fn a_task_that_closes_on_the_tick_the_grace_ends_finishes() {
    let grace = Duration::from_millis(100);
    let wg = WaitGroup::new();
    wg.task()
        .name("closes in 100 ms")
        .go(move |ctx| async move {
            ctx.cancelled().await;
            tokio::time::sleep(grace).await;
        });
    tokio::task::yield_now().await;
    let report = wg.shutdown(grace).await;
    assert_eq!(report.finished(), 1, "{report}");
    assert!(report.aborted().is_empty(), "{report}");
    assert_eq!(report.elapsed(), grace);
}

/// A task started during a shutdown into a group whose turn ended, by a task
/// of a group after it, is aborted once every group had its turn, the
/// deadline past, and listed. Here `a`'s turn ends at the deadline (its
/// task ignores cancellation); `b`'s task starts one such task in `a` every
/// 10 ms until its own abort, 75 ms later. They used to run on after the
/// call returned, reported as pending.
#[tokio::test(start_paused = true)]
async fn a_task_started_into_a_group_whose_turn_ended_is_aborted_at_the_end() {
    let ms = Duration::from_millis;
    let root = WaitGroup::builder().abort_timeout(ms(100)).build();
    let a = root.task().name("a").child();
    let b = root.task().name("b").child();
    a.task().name("stuck").go(|_| std::future::pending::<()>());
    {
        let a = a.clone();
        b.task().name("starter").go(move |_| async move {
            loop {
                tokio::time::sleep(ms(10)).await;
                a.task().name("late").go(|_| std::future::pending::<()>());
            }
        });
    }
    tokio::task::yield_now().await;
    let report = root.shutdown(ms(100)).await;

    assert!(report.pending().is_empty(), "{report}");
    assert_eq!(a.len(), 0, "nothing runs on in `a`: {report}");
    let late = |t: &&taskgroup::TaskInfo| t.name() == Some("late");
    let late: Vec<_> = report.aborted().iter().filter(late).collect();
    // Ten in `a`'s turn, seven in `b`'s (until 175 ms).
    assert_eq!(late.len(), 17, "{report}");
    assert!(report.elapsed() <= ms(200), "{report}");
}

/// On two workers, one group among 2,000 reached late (a share of 500 µs
/// each at first) has a task whose abort lands only later (it blocks its
/// worker for 20 ms between awaits): the shutdown moves on to the next
/// groups, and lists that abort in its group's place once it landed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    miri,
    ignore = "real time: Miri's slowdown spends the 1 s budget before the groups' turns"
)]
async fn an_abort_that_lands_after_its_groups_turn_is_listed_in_its_place() {
    const GROUPS: usize = 2_000;
    const SLOW: usize = 1_000;
    let server = WaitGroup::builder()
        .abort_timeout(Duration::from_secs(1))
        .build();
    let (running_tx, running_rx) = oneshot::channel();
    let mut running_tx = Some(running_tx);
    let requests: Vec<WaitGroup> = (0..GROUPS)
        .map(|i| {
            let request = server.task().name(format!("req {i}")).child();
            if i == SLOW {
                let running = running_tx.take().unwrap();
                request.task().name("busy").go(|_| async move {
                    let _ = running.send(());
                    loop {
                        // Holds its worker: an abort lands at the next await.
                        std::thread::sleep(Duration::from_millis(20));
                        tokio::task::yield_now().await;
                    }
                    #[allow(unreachable_code)]
                    ()
                });
            } else {
                request.go(|_| std::future::pending::<()>());
            }
            request
        })
        .collect();
    running_rx.await.unwrap();
    let report = server.shutdown(Duration::ZERO).await;

    // The budget is the 1 s abort timeout; a generous bound on a loaded machine.
    assert!(
        report.elapsed() < Duration::from_secs(3),
        "{:?}",
        report.elapsed()
    );
    // Every task accounted for once. The stubborn groups share the whole
    // forced phase, so on a loaded machine the aborts of the last groups may
    // land after it ends (counted finished, or pending): 1,731 of 2,000 were
    // listed in one of 20 runs with a CI run and a benchmark loop on the same
    // two cores. Not most of them, as when each share was rounded up to a
    // millisecond (64 of 2,000 were listed then).
    let aborted = report.aborted();
    assert_eq!(
        aborted.len() + report.finished() + report.pending().len(),
        GROUPS
    );
    assert!(aborted.len() >= GROUPS / 2, "{report}");
    // In the order of the groups' turns, the busy task in its group's place.
    let turn = |t: &taskgroup::TaskInfo| requests.iter().position(|r| r.id() == t.group_id());
    let turns: Vec<_> = aborted.iter().map(turn).collect();
    assert!(turns.windows(2).all(|w| w[0] < w[1]), "{turns:?}");
    let busy = aborted.iter().position(|t| t.name() == Some("busy"));
    assert_eq!(busy.map(|at| turn(&aborted[at])), Some(Some(SLOW)));
}

/// On two workers, each stubborn task's `Drop` (run when the shutdown
/// aborts it) makes a child group and starts a stubborn task there, five
/// levels deep: each child is reached late, with less of the forced phase
/// left, and the last aborts land at the end of the budget, on the other
/// worker, after the shutdown last looked at the links. Whatever a task
/// listed as aborted started from its `Drop` is in the report too (aborted,
/// pending, or counted as finished): its `Drop` ran before it was listed.
/// Before, the report was made from the groups of the last walk: the last
/// task started ran on, in no part of the report (9 runs in 9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_started_by_the_drop_of_an_aborted_task_is_in_the_report() {
    let depth = if cfg!(miri) { 2 } else { 5 };

    /// Starts a stubborn task named `L{level}` in `group` whose `Drop`
    /// starts the next level in a child of `group`.
    fn stubborn(group: &WaitGroup, level: usize, depth: usize) {
        struct Next(Option<(WaitGroup, usize, usize)>);
        impl Drop for Next {
            fn drop(&mut self) {
                if let Some((group, level, depth)) = self.0.take() {
                    if level < depth {
                        stubborn(&group.child(), level + 1, depth);
                    }
                }
            }
        }
        let next = Next(Some((group.clone(), level, depth)));
        group
            .task()
            .name(format!("L{level}"))
            .go(move |_| async move {
                let _next = next;
                std::future::pending::<()>().await;
            });
    }

    for _ in 0..3 {
        let root = WaitGroup::builder()
            .abort_timeout(Duration::from_millis(500))
            .build();
        stubborn(&root, 0, depth);
        let report = root.shutdown(Duration::from_millis(50)).await;

        let level = |t: &taskgroup::TaskInfo| -> usize { t.name().unwrap()[1..].parse().unwrap() };
        let aborted: Vec<usize> = report.aborted().iter().map(level).collect();
        let mut named: Vec<usize> = aborted.clone();
        named.extend(report.pending().tasks().map(level));
        named.sort_unstable();
        let top = *named.last().expect("L0 at least");
        // Every level up to the last named is in the report once: listed as
        // aborted or pending, or counted as finished (an abort that landed
        // after its group's list was taken).
        assert!(named.windows(2).all(|w| w[0] < w[1]), "{report}");
        assert_eq!(
            named.len() + report.finished(),
            top + 1,
            "levels 0..={top}: {report}"
        );
        // And what the last task listed as aborted started.
        let last = *aborted.iter().max().expect("L0 is aborted");
        assert!(
            last == depth || top > last,
            "L{} missing: {report}",
            last + 1
        );
        // What is left (a task started at the very end) goes now.
        let _ = root.shutdown(Duration::ZERO).await;
    }
}

#[tokio::test(start_paused = true)]
async fn work_spawned_during_shutdown_is_waited_for() {
    let wg = WaitGroup::new();
    let (done_tx, done_rx) = oneshot::channel();
    let spawner = wg.clone();
    wg.go(move |ctx| async move {
        ctx.cancelled().await;
        // Cleanup work started while the group drains.
        spawner.task().name("cleanup").go(|_| async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            done_tx.send(()).unwrap();
            Ok::<_, std::io::Error>(())
        });
        Ok::<_, std::io::Error>(())
    });
    tokio::task::yield_now().await;
    let report = wg.shutdown(Duration::from_secs(5)).await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.finished(), 2);
    done_rx
        .await
        .expect("cleanup ran to completion before shutdown returned");
}

/// A task blocked inside its own poll (blocking code in async) cannot be
/// aborted until it returns; shutdown does not hang on it, and reports it as
/// still pending after the abort timeout (not as aborted: the abort has not
/// taken effect).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_stuck_in_blocking_code_is_reported_as_still_pending() {
    let wg = WaitGroup::builder()
        .abort_timeout(Duration::from_millis(100))
        .build();
    let (started_tx, started_rx) = oneshot::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    wg.task().name("stuck").go(move |_| async move {
        started_tx.send(()).unwrap();
        release_rx.recv().unwrap(); // blocks the worker thread inside poll
        Ok::<_, std::io::Error>(())
    });
    started_rx.await.unwrap();
    let report = wg.shutdown(Duration::from_millis(100)).await;
    // Generous upper bound: grace + abort timeout is 200ms.
    assert!(
        report.elapsed() < Duration::from_secs(10),
        "{:?}",
        report.elapsed()
    );
    assert!(report.aborted().is_empty());
    let pending: Vec<_> = report.pending().tasks().map(|t| t.name()).collect();
    assert_eq!(pending, [Some("stuck")]);
    release_tx.send(()).unwrap();
    // Once it returns, the abort (or its completion) lets the group go idle.
    wg.wait_timeout(Duration::from_secs(10)).await.unwrap();
}

/// A shutdown stops idle groups without their tokens or deadlines having
/// been made: each still ends closed, cancelled (for the shutdown's reason)
/// and draining, work added to it afterwards starts so and reads the
/// shutdown's abort time as its deadline, and `reopen()` clears all of it.
#[tokio::test(start_paused = true)]
async fn idle_groups_stopped_by_a_shutdown_read_as_stopped() {
    let root = WaitGroup::new();
    let children: Vec<WaitGroup> = (0..3).map(|_| root.child()).collect();
    let before = Instant::now();
    let report = root
        .shutdown(
            taskgroup::shutdown::Grace::drain(Duration::from_secs(2))
                .then_cancel(Duration::from_secs(3)),
        )
        .await;
    assert!(report.is_clean(), "{report}");
    for wg in std::iter::once(&root).chain(&children) {
        assert!(wg.is_closed() && wg.is_cancelled());
        let (tx, rx) = oneshot::channel();
        wg.go(move |ctx| async move {
            ctx.cancelled().await;
            ctx.draining().await;
            let seen = (
                ctx.is_cancelled(),
                ctx.is_draining(),
                ctx.token().is_cancelled(),
                ctx.cancel_reason(),
                ctx.deadline(),
            );
            tx.send(seen).unwrap();
        });
        let (cancelled, draining, token, reason, deadline) = rx.await.unwrap();
        assert!(cancelled && draining && token);
        assert!(
            matches!(reason, Some(taskgroup::CancelReason::Shutdown)),
            "{reason:?}"
        );
        // The abort time: the whole grace after the call (no time passed).
        assert_eq!(deadline, Some(before + Duration::from_secs(5)));
        wg.wait().await.unwrap();
        assert!(wg.reopen());
        let (tx, rx) = oneshot::channel();
        wg.go(move |ctx| async move {
            tx.send((ctx.is_cancelled(), ctx.is_draining(), ctx.deadline()))
                .unwrap();
        });
        assert_eq!(rx.await.unwrap(), (false, false, None), "reopened");
    }
}

/// A group idle when its turn comes, whose context token and drain signal
/// were made before (handed out by a task that has ended): after the
/// shutdown's one step for an idle group, the token is cancelled with the
/// shutdown's reason and the task's `draining()` has ended. (`draining()`
/// also ends on the context alone; that the drain signal itself is given is
/// checked in `node::tests`.)
#[tokio::test]
async fn an_idle_group_with_its_signals_made_is_drained_and_cancelled() {
    let root = WaitGroup::new();
    let child = root.child();
    let (tx, rx) = oneshot::channel();
    child.go(move |ctx| async move {
        tx.send(ctx).unwrap();
    });
    let ctx = rx.await.unwrap();
    child.wait().await.unwrap();
    // Both made now: the token by asking, the drain signal by a first poll.
    let token = ctx.token().clone();
    let mut draining = Box::pin(ctx.draining());
    assert!(futures::poll!(&mut draining).is_pending());
    assert!(!ctx.is_draining() && !token.is_cancelled());

    let report = root.shutdown(Duration::from_secs(5)).await;
    assert!(report.is_clean(), "{report}");
    tokio::time::timeout(Duration::from_secs(10), draining)
        .await
        .expect("the drain signal reaches a made drain future");
    assert!(token.is_cancelled() && ctx.is_cancelled() && ctx.is_draining());
    assert!(
        matches!(ctx.cancel_reason(), Some(taskgroup::CancelReason::Shutdown)),
        "{:?}",
        ctx.cancel_reason()
    );
}

/// A busy group linked during a shutdown's drain phase is stopped in a
/// further pass: drained (not cancelled) if its work ends in time, and
/// reading the shutdown's abort time as its deadline like the others.
#[tokio::test(start_paused = true)]
async fn a_busy_group_linked_during_the_drain_that_drains_keeps_the_deadline() {
    let root = WaitGroup::new();
    let late = WaitGroup::new();
    let (drained_tx, drained_rx) = oneshot::channel();
    late.go(move |ctx| async move {
        ctx.draining().await;
        drained_tx.send(ctx.is_cancelled()).unwrap();
    });
    {
        let (root, late) = (root.clone(), late.clone());
        root.clone().go(move |ctx| async move {
            ctx.draining().await;
            root.link(&late).unwrap();
        });
    }
    let before = Instant::now();
    let grace = Grace::drain(Duration::from_secs(2)).then_cancel(Duration::from_secs(3));
    let report = root.shutdown(grace).await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.finished(), 2, "{report}");
    assert!(!drained_rx.await.unwrap(), "drained, not cancelled");
    assert!(late.is_closed() && late.is_cancelled());
    let (tx, rx) = oneshot::channel();
    late.go(move |ctx| async move { tx.send(ctx.deadline()).unwrap() });
    assert_eq!(rx.await.unwrap(), Some(before + Duration::from_secs(5)));
}

/// A group linked while a shutdown runs is stopped in a further pass, idle,
/// and reads the shutdown's abort time as its deadline like the others.
#[tokio::test(start_paused = true)]
async fn a_group_linked_during_a_shutdown_is_stopped_with_its_deadline() {
    let root = WaitGroup::new();
    let late = WaitGroup::new();
    let (linked_tx, linked_rx) = oneshot::channel();
    {
        let (root, late) = (root.clone(), late.clone());
        root.clone().go(move |ctx| async move {
            ctx.cancelled().await;
            root.link(&late).unwrap();
            linked_tx.send(()).unwrap();
        });
    }
    let before = Instant::now();
    let report = root.shutdown(Duration::from_secs(5)).await;
    assert!(report.is_clean(), "{report}");
    linked_rx.await.unwrap();
    assert!(
        late.is_closed() && late.is_cancelled(),
        "stopped in a further pass"
    );
    let (tx, rx) = oneshot::channel();
    late.go(move |ctx| async move { tx.send(ctx.deadline()).unwrap() });
    assert_eq!(rx.await.unwrap(), Some(before + Duration::from_secs(5)));
}

/// A group linked during a shutdown below a group already stopped, not the
/// root, is found too: the shutdown sees that group's links changed, though
/// the root's did not.
#[tokio::test(start_paused = true)]
async fn a_group_linked_below_a_stopped_child_during_a_shutdown_is_stopped() {
    let root = WaitGroup::new();
    let middle = root.child();
    let bottom = middle.child();
    let late = WaitGroup::new();
    let (linked_tx, linked_rx) = oneshot::channel();
    {
        // A task of `bottom`, cancelled in its turn, after `middle`'s.
        let (middle, late) = (middle.clone(), late.clone());
        bottom.go(move |ctx| async move {
            ctx.cancelled().await;
            assert!(middle.is_closed(), "stopped before this task's group");
            middle.link(&late).unwrap();
            linked_tx.send(()).unwrap();
        });
    }
    let busy = late.add();
    let report = root.shutdown(Duration::from_secs(5)).await;
    linked_rx.await.unwrap();
    assert!(late.is_closed() && late.is_cancelled(), "stopped");
    assert_eq!(report.aborted().len(), 0, "{report}");
    let pending: Vec<_> = report
        .pending()
        .groups()
        .iter()
        .map(|g| g.group_id())
        .collect();
    assert_eq!(pending, [late.id()], "its guard is reported: {report}");
    drop(busy);
}

/// A shutdown aborts its stragglers a chunk of the registry at a time, while
/// tasks on the other worker complete and take the same shard's lock: every
/// straggler is aborted and reported once, every task is either finished or
/// aborted, and none is left waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_stragglers_are_aborted_across_chunks() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // Two chunks of the registry at least (1,024 slots each).
    let stubborn_tasks = if cfg!(miri) { 600 } else { 5_000 };
    struct Count(Arc<AtomicUsize>);
    impl Drop for Count {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    // Generous: under Miri the aborts take long to settle, and one left
    // unsettled at the abort timeout is reported pending, not aborted.
    let wg = WaitGroup::builder()
        .abort_timeout(Duration::from_secs(600))
        .build();
    let dropped = Arc::new(AtomicUsize::new(0));
    let (started, mut all_started) = tokio::sync::mpsc::channel(stubborn_tasks);
    let mut stubborn = Vec::with_capacity(stubborn_tasks);
    for i in 0..stubborn_tasks * 2 {
        if i % 2 == 0 {
            let count = Count(Arc::clone(&dropped));
            let started = started.clone();
            let task = wg.go(move |_ctx| async move {
                let _count = count;
                started.send(()).await.expect("the test listens");
                std::future::pending::<()>().await;
                Ok::<(), std::convert::Infallible>(())
            });
            stubborn.push(task.id());
        } else {
            // Ends when cancelled (or is aborted first), racing the abort
            // walk for the shard.
            wg.go(|ctx| async move {
                ctx.cancelled().await;
                Ok::<(), std::convert::Infallible>(())
            });
        }
    }
    drop(started);
    for _ in 0..stubborn_tasks {
        all_started
            .recv()
            .await
            .expect("every stubborn task starts");
    }
    // A bound on a hang only: Miri's clock jumps ahead whenever every thread
    // waits with a timeout.
    let report = tokio::time::timeout(
        Duration::from_secs(3_600),
        wg.shutdown(Duration::from_millis(10)),
    )
    .await
    .expect("the shutdown ends");
    let mut aborted: Vec<_> = report.aborted().iter().map(|t| t.id()).collect();
    aborted.sort_unstable();
    let reported = aborted.len();
    aborted.dedup();
    assert_eq!(aborted.len(), reported, "a task reported twice");
    for id in &stubborn {
        assert!(aborted.binary_search(id).is_ok(), "{id} not aborted");
    }
    assert_eq!(report.finished() + reported, stubborn_tasks * 2, "{report}");
    assert!(report.pending().is_empty(), "{report}");
    assert_eq!(dropped.load(Ordering::Relaxed), stubborn_tasks);
    assert!(wg.is_empty());
}

/// A task spawned into a group while a shutdown is aborting it (here from
/// the `Drop` of a task being aborted, after the shutdown walked the
/// group's tasks) is aborted too, and the report says so: it is past the
/// deadline like the rest. It used to run on, and be reported as pending.
#[tokio::test(start_paused = true)]
async fn a_task_spawned_while_its_group_is_aborted_is_aborted_too() {
    struct SpawnOnDrop(Option<WaitGroup>);
    impl Drop for SpawnOnDrop {
        fn drop(&mut self) {
            if let Some(wg) = self.0.take() {
                wg.task()
                    .name("spawned late")
                    .go(|_| std::future::pending::<()>());
            }
        }
    }
    let wg = WaitGroup::new();
    let on_drop = SpawnOnDrop(Some(wg.clone()));
    wg.task().name("stubborn").go(move |_| async move {
        let _on_drop = on_drop;
        std::future::pending::<()>().await;
    });
    let report = wg.shutdown(Duration::from_secs(1)).await;
    let mut aborted: Vec<_> = report.aborted().iter().map(|t| t.name()).collect();
    aborted.sort_unstable();
    assert_eq!(
        aborted,
        [Some("spawned late"), Some("stubborn")],
        "{report}"
    );
    assert!(report.pending().is_empty(), "{report}");
    assert!(wg.is_empty());
}

/// A task aborted by its own handle while a shutdown waits, and gone before
/// the report, is in the report as finished: it ended, and not by one of the
/// shutdown's listed aborts. (A task aborted by another shutdown running at
/// once is listed in that one's report and counted in neither's finished:
/// `tests/shutdown_reports.rs`.) Before `Registry::remove_aborted` counted
/// only listed aborts, it was in none of the report's parts.
#[tokio::test(start_paused = true)]
async fn a_task_aborted_by_its_handle_during_a_shutdown_is_in_the_report() {
    let wg = WaitGroup::new();
    let stubborn = wg.go(|_| std::future::pending::<()>());
    let stopping = wg.clone();
    let shutdown = tokio::spawn(async move { stopping.shutdown(Duration::from_secs(1)).await });
    // The shutdown starts, reads its counters and waits for the grace.
    tokio::task::yield_now().await;
    stubborn.abort();
    let report = shutdown.await.unwrap();
    assert_eq!(report.finished(), 1, "{report}");
    assert!(report.aborted().is_empty(), "{report}");
    assert!(report.pending().is_empty(), "{report}");
}

/// A group made with `child()` after its parent was shut down starts as the
/// shutdown left the parent: closed and cancelled with the same reason, its
/// tasks reading the shutdown's abort time as their deadline, so work put in
/// it after the shutdown is not left running unasked. Once the parent is
/// reopened, a new child starts open again. (Before, such a child started
/// open and uncancelled, below a group nobody would wait for again.)
#[tokio::test(start_paused = true)]
async fn a_child_made_after_a_shutdown_starts_closed_and_cancelled() {
    let parent = WaitGroup::builder().name("server").build();
    let report = parent.shutdown(Duration::from_secs(1)).await;
    assert!(report.is_clean(), "{report}");
    let late = parent.task().name("late").child();
    assert!(late.is_closed() && late.is_cancelled());
    assert_eq!(
        format!("{:?}", late.cancel_reason()),
        format!("{:?}", parent.cancel_reason())
    );
    assert!(late.cancel_reason().is_some());
    assert!(late.task().try_go(|_| async {}).is_err());
    let deadline = late.go(|ctx| async move { Ok::<_, std::io::Error>(ctx.deadline()) });
    assert!(deadline.await.unwrap().is_some());
    // Its own children too, made after it.
    let below = late.child();
    assert!(below.is_closed() && below.is_cancelled());
    parent.reopen();
    let fresh = parent.child();
    assert!(!fresh.is_closed() && !fresh.is_cancelled());
}

/// A server with a group per connection (and a request group below each)
/// below a group that stops its children together or not, and a pool after
/// them.
struct Connections {
    server: WaitGroup,
    /// When each connection's and request's task saw its context cancelled.
    cancelled: Arc<Mutex<Vec<Duration>>>,
    /// When the pool's did, and how many of those tasks had closed by then.
    pool: Arc<Mutex<Option<(Duration, usize)>>>,
}

/// How long the pool of [`Connections`] takes to close once cancelled.
const POOL_CLOSE: Duration = Duration::from_millis(100);

/// [`Connections`]: each task takes `close` to close once cancelled, or
/// never closes with `None`.
fn connections_then_pool(
    connections: usize,
    together: bool,
    close: Option<Duration>,
) -> Connections {
    let start = Instant::now();
    let server = WaitGroup::builder().name("server").build();
    let group = WaitGroup::builder()
        .name("connections")
        .stop_children_together(together)
        .build_child(&server);
    let pool = server.task().name("pool").child();
    let cancelled = Arc::new(Mutex::new(Vec::new()));
    let closed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for i in 0..connections {
        let connection = group.task().name(format!("conn {i}")).child();
        // A request group below each connection: started with it.
        let request = connection.child();
        for group in [&connection, &request] {
            let (cancelled, closed) = (cancelled.clone(), closed.clone());
            group.go(move |ctx| async move {
                ctx.cancelled().await;
                cancelled.lock().push(start.elapsed());
                match close {
                    Some(close) => tokio::time::sleep(close).await,
                    None => std::future::pending().await,
                }
                closed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
    }
    let pool_cancelled = Arc::new(Mutex::new(None));
    let seen = pool_cancelled.clone();
    pool.go(move |ctx| async move {
        ctx.cancelled().await;
        let closed = closed.load(std::sync::atomic::Ordering::SeqCst);
        *seen.lock() = Some((start.elapsed(), closed));
        tokio::time::sleep(POOL_CLOSE).await;
    });
    Connections {
        server,
        cancelled,
        pool: pool_cancelled,
    }
}

/// 200 connection groups (20 under Miri), each with a request group below
/// it, whose tasks take 50 ms to close once cancelled. One after the other
/// (the default) that is 400 groups in 20 s; stopped together, 50 ms.
/// Either way the pool after them is cancelled only once every connection
/// closed.
#[tokio::test(start_paused = true)]
async fn children_stopped_together_close_at_once_and_the_groups_after_wait() {
    let connections = if cfg!(miri) { 20 } else { 200 };
    let ms = Duration::from_millis;
    for together in [false, true] {
        let Connections {
            server,
            cancelled,
            pool,
        } = connections_then_pool(connections, together, Some(ms(50)));
        tokio::task::yield_now().await;
        let report = server.shutdown(Duration::from_secs(60)).await;

        let cancelled = cancelled.lock().clone();
        assert_eq!(cancelled.len(), 2 * connections);
        let closes = if together {
            // All at the call, the request groups with their connections.
            assert!(cancelled.iter().all(|&at| at == Duration::ZERO));
            ms(50)
        } else {
            // Each connection, and each request group, once those before
            // it closed.
            let groups = 2 * connections as u32;
            let expected: Vec<Duration> = (0..groups).map(|i| ms(50) * i).collect();
            assert_eq!(cancelled, expected);
            ms(50) * groups
        };
        assert_eq!(*pool.lock(), Some((closes, 2 * connections)));
        assert_eq!(
            report.elapsed(),
            closes + POOL_CLOSE,
            "together: {together}"
        );
        assert_eq!(report.finished(), 2 * connections + 1);
        assert!(report.is_clean(), "{report}");
    }
}

/// The same connections, ignoring cancellation, with a grace of 100 ms:
/// stopped together, they are all reached before the deadline, so each is
/// aborted at it (not given a share of the forced phase to stop by itself,
/// as a group reached after the deadline is), and the pool after them gets
/// nearly all of the forced phase to close cleanly. One after the other,
/// the connections use it up and the pool is aborted.
#[tokio::test(start_paused = true)]
async fn children_stopped_together_that_overrun_are_aborted_at_the_deadline() {
    let connections = if cfg!(miri) { 20 } else { 200 };
    let ms = Duration::from_millis;
    let grace = ms(100);
    // The default abort timeout, the forced phase.
    let abort = Duration::from_secs(1);
    for together in [false, true] {
        let Connections { server, pool, .. } = connections_then_pool(connections, together, None);
        tokio::task::yield_now().await;
        let report = server.shutdown(grace).await;

        assert!(report.elapsed() <= grace + abort, "{:?}", report.elapsed());
        let aborted: Vec<_> = report.aborted().iter().map(|t| t.group_name()).collect();
        if together {
            assert_eq!(aborted.len(), 2 * connections, "{report}");
            assert!(aborted.iter().all(|name| name != &Some("pool")));
            assert!(
                report.aborted().iter().all(|t| t.age() == grace),
                "every connection aborted at the deadline"
            );
            assert_eq!(*pool.lock(), Some((grace, 0)));
            assert_eq!(
                report.elapsed(),
                grace + POOL_CLOSE,
                "the pool closed cleanly"
            );
            assert_eq!(report.finished(), 1);
        } else {
            // Reached after the deadline one after the other, each given a
            // share of the forced phase to stop by itself: the pool is
            // reached with too little left to close (15 ms of the 1 s; 85 ms
            // with 20 connections), and aborted.
            assert_eq!(aborted.len(), 2 * connections + 1, "{report}");
            assert_eq!(aborted.last(), Some(&Some("pool")));
            assert_eq!(report.finished(), 0);
        }
        assert!(report.pending().is_empty());
    }
}

/// With a drain phase, the groups stopped together are all drained at the
/// group's turn, and cancelled together once every one of them stopped or
/// the drain phase ended: a connection that finished its request when
/// drained is never cancelled, one that ignores the drain is cancelled at
/// the end of the drain phase (not at the start, nor one drain phase per
/// group), and the pool after them waits for it.
#[tokio::test(start_paused = true)]
async fn children_stopped_together_share_the_drain_phase() {
    let start = Instant::now();
    let server = WaitGroup::builder().name("server").build();
    let group = WaitGroup::builder()
        .stop_children_together(true)
        .build_child(&server);
    let pool = server.task().name("pool").child();
    let log = Arc::new(Mutex::new(Vec::new()));
    for i in 0..10 {
        let connection = group.child();
        let log = log.clone();
        connection.go(move |ctx| async move {
            ctx.draining().await;
            let drained = start.elapsed();
            if i == 5 {
                // Ignores the drain; stops when cancelled.
                ctx.cancelled().await;
            } else {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            log.lock()
                .push((i, drained, ctx.is_cancelled(), start.elapsed()));
        });
    }
    let seen = log.clone();
    pool.go(move |ctx| async move {
        ctx.cancelled().await;
        seen.lock()
            .push((99, start.elapsed(), true, start.elapsed()));
    });
    tokio::task::yield_now().await;
    let s = Duration::from_secs;
    let report = server.shutdown(Grace::drain(s(1)).then_cancel(s(1))).await;

    let ms = Duration::from_millis;
    let mut expected: Vec<_> = (0..10)
        .filter(|&i| i != 5)
        .map(|i| (i, Duration::ZERO, false, ms(20)))
        .collect();
    expected.push((5, Duration::ZERO, true, s(1)));
    expected.push((99, s(1), true, s(1)));
    assert_eq!(*log.lock(), expected);
    assert_eq!(report.finished(), 11);
    assert!(report.is_clean(), "{report}");
}

/// A chain of 20,000 groups (50 under Miri) below a group that stops its
/// children together (each inherits the setting): all cancelled at its turn,
/// each group started once (the chain is taken as one range, not once per
/// level), within a generous bound of real time.
#[tokio::test(start_paused = true)]
async fn a_deep_chain_stopped_together_is_started_once_and_at_once() {
    let depth = if cfg!(miri) { 50 } else { 20_000 };
    let start = Instant::now();
    let root = WaitGroup::builder().stop_children_together(true).build();
    let cancelled = Arc::new(Mutex::new(Vec::new()));
    let mut group = root.clone();
    for _ in 0..depth {
        group = group.child();
        let cancelled = cancelled.clone();
        group.go(move |ctx| async move {
            ctx.cancelled().await;
            cancelled.lock().push(start.elapsed());
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
    }
    drop(group);
    tokio::task::yield_now().await;
    let real = std::time::Instant::now();
    let report = root.shutdown(Duration::from_secs(60)).await;
    assert!(
        real.elapsed() < Duration::from_secs(30),
        "{:?}",
        real.elapsed()
    );
    assert_eq!(report.elapsed(), Duration::from_millis(50));
    assert_eq!(report.finished(), depth);
    let cancelled = cancelled.lock();
    assert_eq!(cancelled.len(), depth);
    assert!(cancelled.iter().all(|&at| at == Duration::ZERO));
}

/// A shutdown called from a request's task, in one of the groups stopped
/// together: the caller is spared (its context cancelled with its group,
/// left out of the report: it runs the call), the other connections close
/// together, and the report is clean.
#[tokio::test(start_paused = true)]
async fn a_shutdown_from_a_group_stopped_together_spares_its_caller() {
    let server = WaitGroup::builder().name("server").build();
    let group = WaitGroup::builder()
        .stop_children_together(true)
        .build_child(&server);
    for _ in 0..10 {
        group.child().go(|ctx| async move {
            ctx.cancelled().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
    }
    let (tx, rx) = oneshot::channel();
    let admin = group.child();
    let server_handle = server.clone();
    admin.task().name("admin").go(move |ctx| async move {
        let report = server_handle.shutdown(Duration::from_secs(60)).await;
        assert!(ctx.is_cancelled());
        tx.send(report).unwrap();
    });
    drop(admin);
    let report = rx.await.unwrap();
    assert_eq!(report.finished(), 10, "{report}");
    assert!(report.aborted().is_empty());
    assert!(report.is_clean(), "{report}");
    assert!(report.elapsed() < Duration::from_millis(500), "{report}");
    server.wait().await.unwrap();
}

/// A group that stops its children together, linked (with its connection
/// groups) while a shutdown runs, is found in a further pass and still
/// starts them together at its turn; next to it, a group linked below one
/// the shutdown had already stopped has its turn as before.
#[tokio::test(start_paused = true)]
async fn a_group_stopping_its_children_together_linked_during_a_shutdown_starts_them() {
    let start = Instant::now();
    let root = WaitGroup::builder().name("root").build();
    let cancelled = Arc::new(Mutex::new(Vec::new()));
    let late = WaitGroup::builder()
        .name("late")
        .stop_children_together(true)
        .build();
    for _ in 0..10 {
        let cancelled = cancelled.clone();
        late.child().go(move |ctx| async move {
            ctx.cancelled().await;
            cancelled.lock().push(start.elapsed());
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
    }
    {
        let (root2, late) = (root.clone(), late.clone());
        root.go(move |ctx| async move {
            ctx.cancelled().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
            root2.link(&late).unwrap();
        });
    }
    tokio::task::yield_now().await;
    let report = root.shutdown(Duration::from_secs(60)).await;
    let ms = Duration::from_millis;
    assert_eq!(*cancelled.lock(), [ms(10); 10], "at the late group's turn");
    assert_eq!(report.elapsed(), ms(60));
    assert_eq!(report.finished(), 11);
    assert!(report.is_clean(), "{report}");
}

/// A shutdown dropped once it aborted its tasks, before their aborts
/// landed: the next one accounts for them, as finished (their aborts land
/// during it, and are no report's: the dropped one lists nothing). They were
/// in no report: counted as aborted, listed by none (`probe-cancel`
/// `orphan`).
#[tokio::test]
async fn the_aborts_of_a_dropped_shutdown_are_accounted_for_by_the_next() {
    use futures::FutureExt as _;
    let wg = WaitGroup::builder().name("server").build();
    for name in ["stuck-1", "stuck-2"] {
        wg.task().name(name).go(|_ctx| std::future::pending::<()>());
    }
    tokio::task::yield_now().await;
    {
        // No grace: a few polls abort both; on this current-thread runtime
        // the aborts land only once this task yields to it, which polling
        // the shutdown here does not do.
        let dropped = wg.shutdown(Duration::ZERO);
        tokio::pin!(dropped);
        for _ in 0..10 {
            assert!((&mut dropped).now_or_never().is_none());
        }
    }
    assert_eq!(wg.len(), 2, "the aborts have not landed yet");
    let report = wg.shutdown(Duration::ZERO).await;
    assert!(wg.is_empty());
    assert_eq!(
        report.finished() + report.aborted().len() + report.pending().len(),
        2,
        "{report}"
    );
    assert_eq!(report.finished(), 2, "{report}");
}

/// Two requests' tasks shut the server down at once (an admin endpoint called twice): each
/// shutdown leaves the other's caller, as it leaves its own, and each returns its report to
/// its caller. Before, each shutdown aborted the other's caller as a task that ignored its
/// cancel at the deadline: one of the two requests was aborted with its shutdown, its report
/// lost (`probe-gen selfshut 3 ct two`: 3 of 3).
#[tokio::test(start_paused = true)]
async fn two_shutdowns_called_from_the_trees_own_tasks_leave_each_others_caller() {
    let server = WaitGroup::builder()
        .name("server")
        .abort_timeout(Duration::from_millis(100))
        .build();
    server
        .task()
        .name("stubborn")
        .go(|_ctx| std::future::pending::<()>());
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let mut admins = Vec::new();
    for name in ["admin a", "admin b"] {
        let request = server.task().name("request").child();
        let (server, barrier) = (server.clone(), barrier.clone());
        admins.push(request.task().name(name).go(move |_ctx| async move {
            barrier.wait().await;
            Ok::<_, std::convert::Infallible>(server.shutdown(Duration::from_millis(50)).await)
        }));
    }
    let started = Instant::now();
    let mut aborted = Vec::new();
    for (admin, name) in admins.into_iter().zip(["admin a", "admin b"]) {
        let report = admin.await.expect("each caller gets its report");
        aborted.extend(report.aborted().iter().map(|t| t.name().map(str::to_owned)));
        // At most the other caller (running its own call), never its own.
        let pending: Vec<_> = report.pending().tasks().map(|t| t.name()).collect();
        assert!(
            pending.len() <= 1 && !pending.contains(&Some(name)),
            "{report}"
        );
        assert!(
            pending
                .iter()
                .all(|n| n.is_some_and(|n| n.starts_with("admin"))),
            "{report}"
        );
    }
    // In the report of the shutdown that aborted it; the other waited for it.
    assert_eq!(aborted, [Some("stubborn".to_owned())]);
    assert!(started.elapsed() <= Duration::from_millis(150));
    server.wait().await.unwrap();
}

/// A group's tasks are aborted newest first, so that a task's abort does not
/// end a task it started before that one's own abort comes: a task whose end
/// the other's drop brings (as a connection's drop resets its HTTP/2
/// streams, whose tasks then return) is aborted and named, not counted as
/// finished by itself. (Before, on two workers, the starter's abort could
/// land first: HTTP/2 requests stuck at the deadline went missing from the
/// report in 7 of 30 runs of a user probe.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_started_by_another_is_aborted_before_it() {
    const STREAMS: usize = 50;
    let rounds = if cfg!(miri) { 2 } else { 100 };
    for _ in 0..rounds {
        // Time for every abort to land, under Miri too.
        let wg = WaitGroup::builder()
            .abort_timeout(Duration::from_secs(60))
            .build();
        start_conn(&wg, |group, _| group.clone(), STREAMS, "stream").await;
        let report = wg.shutdown(Duration::ZERO).await;
        assert_eq!(aborted_named(&report, "stream"), STREAMS, "{report}");
        assert_eq!(report.finished(), 0, "{report}");
    }
}
