//! `ShutdownPlan`: readiness first, then the pre-stop delay, then the drain.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use taskgroup::shutdown::{Phase, Readiness, ShutdownPlan};
use taskgroup::WaitGroup;
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn phases_run_in_order_with_traffic_served_during_the_pre_stop_delay() {
    let server = WaitGroup::builder().name("server").build();
    let pool = server.task().name("pool").child();
    let ready = Readiness::new();
    ready.set_ready();
    let start = Instant::now();
    let log = Arc::new(Mutex::new(Vec::<String>::new()));

    let (l, r) = (log.clone(), ready.clone());
    server.task().name("conn").go(move |ctx| async move {
        ctx.cancelled().await;
        l.lock().push(format!(
            "conn cancelled at {:?}, ready={}",
            start.elapsed(),
            r.is_ready()
        ));
        Ok::<_, std::io::Error>(())
    });
    let l = log.clone();
    pool.task().name("pool").go(move |ctx| async move {
        ctx.cancelled().await;
        l.lock()
            .push(format!("pool cancelled at {:?}", start.elapsed()));
        Ok::<_, std::io::Error>(())
    });

    let l = log.clone();
    let plan = ShutdownPlan::new(Duration::from_secs(10))
        .pre_stop_delay(Duration::from_secs(3))
        .readiness(ready.clone())
        .on_phase(move |phase| {
            let text = match phase {
                Phase::NotReady => "not ready".to_owned(),
                Phase::PreStop { delay } => format!("pre-stop {delay:?}"),
                Phase::Draining { grace, .. } => format!("draining {grace:?}"),
                Phase::Done { report } => format!("done: {} finished", report.finished()),
                _ => unreachable!(),
            };
            l.lock().push(format!("{text} at {:?}", start.elapsed()));
        });
    assert_eq!(plan.budget(&server), Duration::from_secs(14));
    let report = plan.run(&server).await;
    assert!(report.is_clean(), "{report}");
    assert!(!ready.is_ready());
    assert_eq!(
        *log.lock(),
        [
            "not ready at 0ns",
            "pre-stop 3s at 0ns",
            "draining 10s at 3s",
            "conn cancelled at 3s, ready=false",
            "pool cancelled at 3s",
            "done: 2 finished at 3s",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn without_a_pre_stop_delay_draining_starts_at_once() {
    let wg = WaitGroup::new();
    let start = Instant::now();
    let report = ShutdownPlan::new(Duration::from_secs(1)).run(&wg).await;
    assert!(report.is_clean());
    assert_eq!(start.elapsed(), Duration::ZERO);
}

/// Run from one of the group's own tasks (an admin endpoint, a watchdog), a
/// plan shuts down everything else and leaves the caller out of its report
/// (it listed it as pending, so such a report was never clean); the caller
/// then finishes normally.
#[tokio::test(start_paused = true)]
async fn a_plan_run_from_an_own_task_spares_the_caller() {
    let wg = WaitGroup::new();
    let ready = Readiness::new();
    ready.set_ready();
    wg.task().name("worker").go(|ctx| async move {
        ctx.cancelled().await;
        Ok::<_, std::io::Error>(())
    });
    wg.task().name("stubborn").go(|_| async move {
        std::future::pending::<()>().await;
        Ok::<_, std::io::Error>(())
    });
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (g, r) = (wg.clone(), ready.clone());
    wg.task().name("admin").go(move |_| async move {
        let plan = ShutdownPlan::new(Duration::from_secs(1)).readiness(r);
        tx.send(plan.run(&g).await).unwrap();
        Ok::<_, std::io::Error>(())
    });
    let report = rx.await.unwrap();
    assert!(!ready.is_ready());
    assert!(wg.is_closed());
    assert_eq!(report.finished(), 1, "{report}");
    let aborted: Vec<_> = report.aborted().iter().map(|t| t.name()).collect();
    assert_eq!(aborted, [Some("stubborn")]);
    // The caller runs the call: not left behind by it, so not pending.
    assert!(report.pending().is_empty(), "{report}");
    wg.wait().await.unwrap();
}
