//! A container or restarter whose future was dropped, run again while the first run's
//! members are still ending: a container's second run waits for them (up to its stop
//! timeout), and the hub's snapshot follows the run going on, not the late ends of the one
//! before (which are still sent to listeners, as every event is).
//!
//! The first run's future is dropped on a thread without a runtime, so that its members are
//! only cancelled (no abort can land) and end when the test lets them: the order of the two
//! runs' events is fixed, on any runtime. On two workers an abort landing late does the same.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use taskgroup::service::{
    service_fn, Ready, Restarter, Service, ServiceGroup, ServiceState, StatusEvent, StatusHub,
    TasksService,
};
use taskgroup::WaitGroup;
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

/// Waits for each of the events `texts` (`"db #1: stopped"`), in any order; returns every
/// event seen until then, as text.
async fn events_seen(events: &mut broadcast::Receiver<StatusEvent>, texts: &[&str]) -> Vec<String> {
    let mut missing: Vec<&str> = texts.to_vec();
    let mut seen = Vec::new();
    while !missing.is_empty() {
        let event = events.recv().await.unwrap().to_string();
        missing.retain(|text| *text != event);
        seen.push(event);
    }
    seen
}

/// The snapshot as text, one entry per key.
fn snapshot(hub: &StatusHub) -> Vec<String> {
    hub.snapshot().values().map(ToString::to_string).collect()
}

/// The second run waits for the first run's members to end before it starts its own: a
/// nested container among them (whose run ends with its member) runs again, and no member
/// runs twice at once. Before, the nested container refused the second run
/// (`backend: already running`), which failed it (53 of 500 re-serves on two workers,
/// probe `nested 500 mt`).
#[tokio::test]
async fn a_container_served_again_waits_for_its_first_runs_members() {
    let hub = StatusHub::default();
    let release = Arc::new(Semaphore::new(0));
    let backend = ServiceGroup::builder("backend")
        .service(held("cache", &release))
        .build()
        .unwrap();
    let mut app = ServiceGroup::builder("app")
        .service(held("db", &release))
        .service(backend)
        .status(hub.clone())
        .build()
        .unwrap();
    let keys = ["db", "backend", "backend/cache"];
    run_then_drop(app.serve(CancellationToken::new()), &hub, &keys).await;

    let mut events = hub.subscribe();
    let ctx = CancellationToken::new();
    let second = tokio::spawn(app.serve(ctx.clone()));
    release.add_permits(2);
    let running = [
        "db #2: running",
        "backend #2: running",
        "backend/cache #2: running",
    ];
    let seen = tokio::time::timeout(Duration::from_secs(10), events_seen(&mut events, &running));
    let seen = seen
        .await
        .unwrap_or_else(|_| panic!("not running: {:?}", snapshot(&hub)));
    let at = |text: &str| seen.iter().position(|e| e == text).unwrap();
    assert!(at("db #1: stopped") < at("db #2: starting"), "{seen:?}");
    assert!(
        at("backend/cache #1: stopped") < at("backend/cache #2: starting"),
        "{seen:?}"
    );

    release.add_permits(2);
    ctx.cancel();
    second.await.unwrap().unwrap();
    let stopped = [
        "backend #2: stopped",
        "backend/cache #2: stopped",
        "db #2: stopped",
    ];
    assert_eq!(snapshot(&hub), stopped);
}

/// A member still running past the stop timeout that the second run waited for it: the
/// second run starts, and the member's late end leaves the second run's entries. Before,
/// the first run's `stopped` replaced the second run's `running` (95 of 200 re-serves on
/// two workers, probe `reserve 200 0 mt`, before the wait above).
#[tokio::test(start_paused = true)]
async fn a_container_served_again_keeps_the_new_runs_status() {
    let hub = StatusHub::default();
    let release = Arc::new(Semaphore::new(0));
    // A restarter member reports itself, with its own attempts: its entry too.
    let mut app = ServiceGroup::builder("app")
        .service(held("db", &release))
        .service(Restarter::new(held("worker", &release)))
        .stop_timeout(Duration::from_secs(1))
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

    release.add_permits(2);
    ctx.cancel();
    second.await.unwrap().unwrap();
    assert_eq!(snapshot(&hub), ["db #2: stopped", "worker #1: stopped"]);
}

/// As above, for a restarter on its own: its second run waits for the first run's attempt
/// up to the default stop timeout (10 s, paused here), then runs beside it.
#[tokio::test(start_paused = true)]
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

/// A restarter on its own waits for its first run's attempt too: a container in the
/// attempt runs again. Before, the container refused the second run's first attempt
/// (`g #1: failed (g: already running)`, then a restart: 143 of 300 re-runs on two workers,
/// probe `rnested 300 mt`).
#[tokio::test]
async fn a_restarter_run_again_waits_for_its_first_runs_attempt() {
    let hub = StatusHub::default();
    let release = Arc::new(Semaphore::new(0));
    let g = ServiceGroup::builder("g")
        .service(held("x", &release))
        .build()
        .unwrap();
    let mut restarter = Restarter::new(g).status(hub.clone());
    let first = restarter.run(CancellationToken::new(), Ready::noop());
    run_then_drop(first, &hub, &["g"]).await;

    let mut events = hub.subscribe();
    let ctx = CancellationToken::new();
    let second = tokio::spawn(restarter.run(ctx.clone(), Ready::noop()));
    release.add_permits(1);
    let running = ["g #1: stopped", "g #1: running"];
    let seen = tokio::time::timeout(Duration::from_secs(10), events_seen(&mut events, &running));
    let seen = seen
        .await
        .unwrap_or_else(|_| panic!("not running: {:?}", snapshot(&hub)));
    let restarter_events: Vec<&String> = seen.iter().filter(|e| e.starts_with("g #")).collect();
    assert_eq!(
        restarter_events,
        ["g #1: stopped", "g #1: starting", "g #1: running"]
    );

    release.add_permits(1);
    ctx.cancel();
    second.await.unwrap().unwrap();
    assert_eq!(snapshot(&hub), ["g #1: stopped", "g/x #2: stopped"]);
}

/// What the second run waits for is the first run's member runs, not the groups linked
/// below them: a `TasksService`'s wait group, left linked by the aborted run and reopened
/// by its user with a task for the next run, does not hold the second run back until its
/// stop timeout (as waiting for the first run's group did, in a draft of the wait above).
#[tokio::test(start_paused = true)]
async fn the_second_run_does_not_wait_for_a_reopened_linked_group() {
    let hub = StatusHub::default();
    let wg = WaitGroup::new();
    let serve = |ctx: taskgroup::TaskContext| async move {
        ctx.cancelled().await;
        Ok::<_, std::io::Error>(())
    };
    wg.go(serve);
    let mut app = ServiceGroup::builder("app")
        .service(TasksService::new("tasks", wg.clone()))
        .stop_timeout(Duration::from_secs(3600))
        .status(hub.clone())
        .build()
        .unwrap();
    let mut watch = hub.watch();
    let mut first = app.serve(CancellationToken::new());
    tokio::select! {
        _ = &mut first => panic!("the run ended on its own"),
        _ = watch.wait_for(|m| m.get("tasks").is_some_and(|e| e.state == ServiceState::Running)) => {}
    }
    drop(first);
    watch
        .wait_for(|m| m["tasks"].state == ServiceState::Stopped)
        .await
        .unwrap();
    wg.reopen();
    wg.go(serve);

    let started = tokio::time::Instant::now();
    let ctx = CancellationToken::new();
    let second = tokio::spawn(app.serve(ctx.clone()));
    watch
        .wait_for(|m| m["tasks"].state == ServiceState::Running && m["tasks"].attempt == 2)
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    ctx.cancel();
    second.await.unwrap().unwrap();
}
