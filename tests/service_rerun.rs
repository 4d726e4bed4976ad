//! A container or restarter whose future was dropped, run again while the first run's
//! members are still ending: the hub's snapshot follows the run going on, not the late ends
//! of the one before (which are still sent to listeners, as every event is).
//!
//! The first run's future is dropped on a thread without a runtime, so that its members are
//! only cancelled (no abort can land) and end when the test lets them: the order of the two
//! runs' events is fixed, on any runtime. Before, the first run's late `stopped` replaced the
//! second run's `running` in the snapshot (on two workers an abort landing late did the same
//! in 95 of 200 re-serves, probe `reserve 200 0 mt`).

use std::future::Future;
use std::sync::Arc;

use taskgroup::service::{
    service_fn, Ready, Restarter, Service, ServiceGroup, ServiceState, StatusEvent, StatusHub,
};
use tokio::sync::{broadcast, Semaphore};
use tokio_util::sync::CancellationToken;

/// Reports ready; once cancelled, returns only when `release` gives it a permit.
fn held(name: &'static str, release: &Arc<Semaphore>) -> impl Service {
    let release = release.clone();
    service_fn(name, move |ctx: CancellationToken, ready: Ready| {
        let release = release.clone();
        async move {
            ready.ready();
            ctx.cancelled().await;
            release.acquire().await.unwrap().forget();
            Ok(())
        }
    })
}

/// Polls `run` until `hub` says each of `keys` is running, then drops it on a thread
/// without a runtime.
async fn run_then_drop<F: Future + Unpin + Send + 'static>(
    mut run: F,
    hub: &StatusHub,
    keys: &[&str],
) {
    let mut watch = hub.watch();
    tokio::select! {
        _ = &mut run => panic!("the run ended on its own"),
        _ = watch.wait_for(|m| {
            keys.iter().all(|k| m.get(*k).is_some_and(|e| e.state == ServiceState::Running))
        }) => {}
    }
    std::thread::spawn(move || drop(run)).join().unwrap();
}

/// Waits for each of the events `texts` (`"db #1: stopped"`), in any order.
async fn events_seen(events: &mut broadcast::Receiver<StatusEvent>, texts: &[&str]) {
    let mut missing: Vec<&str> = texts.to_vec();
    while !missing.is_empty() {
        let seen = events.recv().await.unwrap().to_string();
        missing.retain(|text| *text != seen);
    }
}

/// The snapshot as text, one entry per key.
fn snapshot(hub: &StatusHub) -> Vec<String> {
    hub.snapshot().values().map(ToString::to_string).collect()
}

#[tokio::test]
async fn a_container_served_again_keeps_the_new_runs_status() {
    let hub = StatusHub::default();
    let release = Arc::new(Semaphore::new(0));
    // A restarter member reports itself, with its own attempts: its entry too.
    let mut app = ServiceGroup::builder("app")
        .service(held("db", &release))
        .service(Restarter::new(held("worker", &release)))
        .status(hub.clone())
        .build()
        .unwrap();
    run_then_drop(app.serve(CancellationToken::new()), &hub, &["db", "worker"]).await;

    let mut events = hub.subscribe();
    let ctx = CancellationToken::new();
    let second = tokio::spawn(app.serve(ctx.clone()));
    events_seen(&mut events, &["db #2: running", "worker #1: running"]).await;
    // The first run's members end now, after the second's started.
    release.add_permits(2);
    events_seen(&mut events, &["db #1: stopped", "worker #1: stopped"]).await;
    assert_eq!(snapshot(&hub), ["db #2: running", "worker #1: running"]);

    ctx.cancel();
    release.add_permits(2);
    second.await.unwrap().unwrap();
    assert_eq!(snapshot(&hub), ["db #2: stopped", "worker #1: stopped"]);
}

#[tokio::test]
async fn a_restarter_run_again_keeps_the_new_runs_status() {
    let hub = StatusHub::default();
    let release = Arc::new(Semaphore::new(0));
    let mut restarter = Restarter::new(held("worker", &release)).status(hub.clone());
    run_then_drop(
        restarter.run(CancellationToken::new(), Ready::noop()),
        &hub,
        &["worker"],
    )
    .await;

    // Each run counts its attempts from 1: only the order tells the runs apart.
    let mut events = hub.subscribe();
    let ctx = CancellationToken::new();
    let second = tokio::spawn(restarter.run(ctx.clone(), Ready::noop()));
    events_seen(&mut events, &["worker #1: running"]).await;
    release.add_permits(1);
    events_seen(&mut events, &["worker #1: stopped"]).await;
    assert_eq!(snapshot(&hub), ["worker #1: running"]);

    ctx.cancel();
    release.add_permits(1);
    second.await.unwrap().unwrap();
    assert_eq!(snapshot(&hub), ["worker #1: stopped"]);
}
