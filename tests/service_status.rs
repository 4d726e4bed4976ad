//! Status events: the sequence of a crash-restart cycle, the snapshot, slow listeners.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use taskgroup::service::{
    service_fn, Backoff, Intensity, Ready, Restarter, Service, ServiceState, StatusHub, Supervisor,
};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// Crashes on its first run, runs until cancelled on the second.
fn crash_once(name: &'static str) -> impl Service {
    let runs = Arc::new(Mutex::new(0));
    service_fn(name, move |ctx: CancellationToken, ready: Ready| {
        let n = {
            let mut r = runs.lock().unwrap();
            *r += 1;
            *r
        };
        async move {
            ready.ready();
            if n == 1 {
                return Err("crashed".into());
            }
            ctx.cancelled().await;
            Ok(())
        }
    })
}

#[tokio::test(start_paused = true)]
async fn crash_restart_cycle_event_sequence() {
    let hub = StatusHub::new(64);
    let mut events = hub.subscribe();
    let backoff =
        Backoff::exponential(Duration::from_millis(250), Duration::from_secs(1), 2.0, 0.0).unwrap();
    let mut r = Restarter::new(crash_once("svc"))
        .backoff(backoff)
        .status(hub.clone());
    let ctx = CancellationToken::new();
    let mut watch = hub.watch();
    let run = tokio::spawn(r.run(ctx.clone(), Ready::noop()));
    watch
        .wait_for(|m| m["svc"].state == ServiceState::Running && m["svc"].attempt == 2)
        .await
        .unwrap();
    ctx.cancel();
    run.await.unwrap().unwrap();

    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        assert_eq!(e.name, "svc");
        seen.push((e.state, e.attempt, e.error, e.delay));
    }
    let d = Some(Duration::from_millis(250));
    assert_eq!(
        seen,
        [
            (ServiceState::Idle, 0, None, None),
            (ServiceState::Starting, 1, None, None),
            (ServiceState::Running, 1, None, None),
            (ServiceState::Failed, 1, Some("crashed".to_owned()), None),
            (ServiceState::Restarting, 2, None, d),
            (ServiceState::Starting, 2, None, None),
            (ServiceState::Running, 2, None, None),
            (ServiceState::Stopped, 2, None, None),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn snapshot_holds_the_last_status_of_every_service() {
    let hub = StatusHub::default();
    let steady = service_fn(
        "steady",
        |ctx: CancellationToken, ready: Ready| async move {
            ready.ready();
            ctx.cancelled().await;
            Ok(())
        },
    );
    let mut group = Supervisor::builder("sup")
        .service(steady)
        .service(crash_once("flaky"))
        .backoff(
            Backoff::exponential(Duration::from_secs(1), Duration::from_secs(1), 2.0, 0.0).unwrap(),
        )
        .status(hub.clone())
        .build()
        .unwrap();
    let snap = hub.snapshot();
    assert_eq!(snap.len(), 2);
    assert!(snap.values().all(|e| e.state == ServiceState::Idle));

    let ctx = CancellationToken::new();
    let mut watch = hub.watch();
    let run = tokio::spawn(group.serve(ctx.clone()));
    watch
        .wait_for(|m| m["flaky"].state == ServiceState::Restarting)
        .await
        .unwrap();
    let snap = hub.snapshot();
    assert_eq!(snap["steady"].state, ServiceState::Running);
    assert_eq!(snap["flaky"].state, ServiceState::Restarting);
    assert_eq!(snap["flaky"].attempt, 2);
    ctx.cancel();
    run.await.unwrap().unwrap();
    let snap = hub.snapshot();
    assert_eq!(snap["steady"].state, ServiceState::Stopped);
    assert_eq!(snap["flaky"].state, ServiceState::Stopped);
}

#[tokio::test(start_paused = true)]
async fn a_slow_listener_lags_and_never_stalls_the_supervisor() {
    let hub = StatusHub::new(2);
    let mut slow = hub.subscribe(); // never reads until the end
    let failing = service_fn("f", |_ctx, _ready| async { Err("x".into()) });
    let mut r = Restarter::new(failing)
        .backoff(
            Backoff::exponential(Duration::from_millis(1), Duration::from_millis(1), 1.0, 0.0)
                .unwrap(),
        )
        .intensity(Intensity::new(20, Duration::from_secs(60)).unwrap())
        .status(hub.clone());
    // Idle, then 21 attempts (Starting + Failed each), 20 Restarting, 1 final Failed
    // (gave up): 64 events, of which the channel keeps the last 2.
    r.run(CancellationToken::new(), Ready::noop())
        .await
        .unwrap_err();
    match slow.recv().await {
        Err(RecvError::Lagged(missed)) => assert_eq!(missed, 1 + 21 * 2 + 20 + 1 - 2),
        other => panic!("expected a lag, got {other:?}"),
    }
    // After the lag the listener continues with the oldest retained event.
    let before_last = slow.recv().await.unwrap();
    assert_eq!(
        (before_last.state, before_last.attempt),
        (ServiceState::Failed, 21)
    );
    let last = slow.recv().await.unwrap();
    assert_eq!(last.state, ServiceState::Failed);
    assert!(last.error.unwrap().contains("gave up after 20 restarts"));
}

#[test]
fn event_display() {
    let hub = StatusHub::new(4);
    let mut rx = hub.subscribe();
    hub.report(
        "db",
        ServiceState::Restarting,
        3,
        None,
        Some(Duration::from_millis(400)),
    );
    assert_eq!(
        rx.try_recv().unwrap().to_string(),
        "db #3: restarting in 400ms"
    );
    hub.report("db", ServiceState::Failed, 3, Some("refused".into()), None);
    assert_eq!(
        rx.try_recv().unwrap().to_string(),
        "db #3: failed (refused)"
    );
}

fn server(name: &'static str) -> impl Service {
    service_fn(name, |ctx: CancellationToken, ready: Ready| async move {
        ready.ready();
        ctx.cancelled().await;
        Ok(())
    })
}

fn drain(
    events: &mut tokio::sync::broadcast::Receiver<taskgroup::service::StatusEvent>,
) -> Vec<(String, ServiceState, u32, Option<String>)> {
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push((e.name, e.state, e.attempt, e.error));
    }
    seen
}

fn ev(
    name: &str,
    state: ServiceState,
    attempt: u32,
    error: Option<&str>,
) -> (String, ServiceState, u32, Option<String>) {
    (name.to_owned(), state, attempt, error.map(str::to_owned))
}

#[tokio::test(start_paused = true)]
async fn group_reports_every_member_transition() {
    let hub = StatusHub::new(64);
    let mut events = hub.subscribe();
    let failing = service_fn("a", |_ctx, _ready| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Err("boom".into())
    });
    let mut group = taskgroup::service::ServiceGroup::builder("app")
        .service(failing)
        .service(server("b"))
        .status(hub.clone())
        .build()
        .unwrap();
    group.serve(CancellationToken::new()).await.unwrap_err();
    assert_eq!(
        drain(&mut events),
        [
            ev("a", ServiceState::Idle, 0, None),
            ev("b", ServiceState::Idle, 0, None),
            ev("a", ServiceState::Starting, 1, None),
            ev("b", ServiceState::Starting, 1, None),
            ev("b", ServiceState::Running, 1, None),
            ev("a", ServiceState::Failed, 1, Some("boom")),
            ev("b", ServiceState::Stopped, 1, None),
        ]
    );
    // A second run counts as attempt 2.
    group.serve(CancellationToken::new()).await.unwrap_err();
    assert!(drain(&mut events).iter().all(|e| e.2 == 2));
}

#[tokio::test(start_paused = true)]
async fn sequence_reports_starts_in_order_and_stops_in_reverse() {
    let hub = StatusHub::new(64);
    let mut events = hub.subscribe();
    let mut seq = taskgroup::service::Sequence::builder("app")
        .service(server("db"))
        .service(server("http"))
        .status(hub.clone())
        .build()
        .unwrap();
    let ctx = CancellationToken::new();
    let (ready, when_ready) = Ready::channel();
    let run = tokio::spawn(seq.run(ctx.clone(), ready));
    assert!(when_ready.await);
    ctx.cancel();
    run.await.unwrap().unwrap();
    assert_eq!(
        drain(&mut events),
        [
            ev("db", ServiceState::Idle, 0, None),
            ev("http", ServiceState::Idle, 0, None),
            ev("db", ServiceState::Starting, 1, None),
            ev("db", ServiceState::Running, 1, None),
            ev("http", ServiceState::Starting, 1, None),
            ev("http", ServiceState::Running, 1, None),
            ev("http", ServiceState::Stopped, 1, None),
            ev("db", ServiceState::Stopped, 1, None),
        ]
    );
}
