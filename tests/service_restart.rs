//! Restarter and Supervisor: policies, exact backoff delays, intensity limit, panics, stop
//! during a restart, settings validation.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use taskgroup::service::{
    service_fn, Backoff, ConfigError, Intensity, Ready, RestartPolicy, Restarter, Sequence,
    Service, ServiceError, ServiceGroup, ServiceState, StatusHub, Supervisor,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod common {
    pub(crate) mod display_panics;
}
use common::display_panics::DisplayPanics;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn backoff(min: u64, max: u64) -> Backoff {
    Backoff::exponential(ms(min), ms(max), 2.0, 0.0).unwrap()
}

/// A service that records the time of each run and fails; on run number `stop_at` it
/// cancels `root` instead and waits to be stopped.
fn recording_failure(
    times: Arc<Mutex<Vec<Instant>>>,
    root: CancellationToken,
    stop_at: usize,
) -> impl Service {
    service_fn("flaky", move |ctx: CancellationToken, _ready| {
        let times = times.clone();
        let root = root.clone();
        async move {
            let n = {
                let mut t = times.lock().unwrap();
                t.push(Instant::now());
                t.len()
            };
            if n == stop_at {
                root.cancel();
                ctx.cancelled().await;
                return Ok(());
            }
            Err(format!("failure {n}").into())
        }
    })
}

fn gaps(times: &[Instant]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test(start_paused = true)]
async fn restart_count_and_backoff_delays_are_exact() {
    let times = Arc::new(Mutex::new(Vec::new()));
    let root = CancellationToken::new();
    let mut r = Restarter::new(recording_failure(times.clone(), root.clone(), 7))
        .backoff(backoff(100, 1000))
        .intensity(Intensity::new(10, Duration::from_secs(60)).unwrap());
    r.run(root, Ready::noop()).await.unwrap();
    let times = times.lock().unwrap().clone();
    assert_eq!(times.len(), 7, "1 run + 6 restarts");
    assert_eq!(
        gaps(&times),
        [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
    );
}

/// The error of a service that always fails, restarted with at most 3
/// restarts within `window`, once it gives up after its fourth run.
async fn gives_up_within(window: Duration) -> Box<ServiceError> {
    let times = Arc::new(Mutex::new(Vec::new()));
    let mut r = Restarter::new(recording_failure(
        times.clone(),
        CancellationToken::new(),
        usize::MAX,
    ))
    .backoff(backoff(100, 1000))
    .intensity(Intensity::new(3, window).unwrap());
    let err = r
        .run(CancellationToken::new(), Ready::noop())
        .await
        .unwrap_err()
        .downcast::<ServiceError>()
        .unwrap();
    assert_eq!(times.lock().unwrap().len(), 4, "1 run + 3 restarts");
    err
}

#[tokio::test(start_paused = true)]
async fn intensity_limit_escalates_with_name_and_count() {
    let err = gives_up_within(Duration::from_secs(10)).await;
    assert!(matches!(
        &*err,
        ServiceError::GaveUp { name, restarts: 3, window, .. }
            if name == "flaky" && *window == Duration::from_secs(10)
    ));
    assert_eq!(
        err.to_string(),
        "flaky: gave up after 3 restarts within 10s; last failure: failure 4"
    );
}

/// A window without end counts every restart, and its message does not print
/// `Duration::MAX` (584 billion years as `18446744073709551615.999999999s`). Nor
/// does it print a window of thirty years or more, which is one without end too.
#[tokio::test(start_paused = true)]
async fn a_window_without_end_gives_up_with_a_plain_message() {
    let century = Duration::from_secs(100 * 365 * 24 * 3600);
    for given in [Duration::MAX, Duration::from_secs(u64::MAX), century] {
        let err = gives_up_within(given).await;
        assert!(matches!(
            &*err,
            ServiceError::GaveUp { restarts: 3, window, .. } if *window == given
        ));
        assert_eq!(
            err.to_string(),
            "flaky: gave up after 3 restarts; last failure: failure 4"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn restarts_outside_the_window_do_not_count() {
    // Backoff (2 s) longer than the window (1 s): the one allowed restart always ages out.
    let times = Arc::new(Mutex::new(Vec::new()));
    let root = CancellationToken::new();
    let mut r = Restarter::new(recording_failure(times.clone(), root.clone(), 6))
        .backoff(backoff(2000, 2000))
        .intensity(Intensity::new(1, Duration::from_secs(1)).unwrap());
    r.run(root, Ready::noop()).await.unwrap();
    let times = times.lock().unwrap().clone();
    assert_eq!(gaps(&times), [ms(2000); 5]);
}

#[tokio::test(start_paused = true)]
async fn supervisor_escalation_stops_the_siblings() {
    let (stopped_tx, mut stopped) = tokio::sync::mpsc::unbounded_channel();
    let steady = service_fn("steady", move |ctx: CancellationToken, ready: Ready| {
        let stopped_tx = stopped_tx.clone();
        async move {
            ready.ready();
            ctx.cancelled().await;
            let _ = stopped_tx.send("steady stopped");
            Ok(())
        }
    });
    let flaky = service_fn("flaky", |_ctx, _ready| async { Err("boom".into()) });
    let mut group = Supervisor::builder("sup")
        .service(steady)
        .service(flaky)
        .backoff(backoff(100, 100))
        .intensity(Intensity::new(2, Duration::from_secs(10)).unwrap())
        .build()
        .unwrap();
    let start = Instant::now();
    let err = group.serve(CancellationToken::new()).await.unwrap_err();
    assert_eq!(start.elapsed(), ms(200));
    assert_eq!(
        err.to_string(),
        "flaky: gave up after 2 restarts within 10s; last failure: boom"
    );
    assert_eq!(stopped.recv().await, Some("steady stopped"));
}

/// A supervised service that does not stop is named with the line that added it to the
/// supervisor, as a group's member is, not with a line inside the supervisor (every
/// supervised service used to point to one line of `restart.rs`). For each policy: the
/// permanent one runs its services as long-running members, the others as one-shot ones.
#[tokio::test(start_paused = true)]
async fn a_supervised_service_that_does_not_stop_is_named_where_it_was_added() {
    for policy in [
        RestartPolicy::Permanent,
        RestartPolicy::Transient,
        RestartPolicy::Temporary,
    ] {
        let stuck = service_fn("stuck", |_ctx, ready: Ready| async move {
            ready.ready();
            std::future::pending::<()>().await;
            Ok(())
        });
        let added_at = line!() + 4;
        let mut group = Supervisor::builder("workers")
            .policy(policy)
            .stop_timeout(ms(50))
            .service(stuck)
            .build()
            .unwrap();
        let ctx = CancellationToken::new();
        let run = tokio::spawn(group.serve(ctx.clone()));
        tokio::task::yield_now().await;
        ctx.cancel();
        let err = run.await.unwrap().unwrap_err();
        let [ServiceError::StopTimeout { name, site, .. }] = err.failures() else {
            panic!("{policy:?}: {err:?}");
        };
        assert_eq!(name, "workers/stuck", "{policy:?}");
        assert_eq!(
            (site.file(), site.line()),
            (file!(), added_at),
            "{policy:?}: {err}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn panic_is_restarted_and_reported_as_a_panic() {
    let hub = StatusHub::new(64);
    let mut events = hub.subscribe();
    let runs = Arc::new(Mutex::new(0));
    let runs2 = runs.clone();
    let svc = service_fn("panicky", move |ctx: CancellationToken, ready: Ready| {
        let n = {
            let mut r = runs2.lock().unwrap();
            *r += 1;
            *r
        };
        async move {
            if n <= 2 {
                panic!("bad state {n}");
            }
            ready.ready();
            ctx.cancelled().await;
            Ok(())
        }
    });
    let mut r = Restarter::new(svc)
        .backoff(backoff(10, 100))
        .status(hub.clone());
    let ctx = CancellationToken::new();
    let (ready, when_ready) = Ready::channel();
    let run = tokio::spawn(r.run(ctx.clone(), ready));
    assert!(when_ready.await, "ready forwarded from the third attempt");
    ctx.cancel();
    run.await.unwrap().unwrap();
    assert_eq!(*runs.lock().unwrap(), 3);
    let mut panics = Vec::new();
    while let Ok(e) = events.try_recv() {
        if e.state == ServiceState::Panicked {
            panics.push((e.attempt, e.error.unwrap()));
        }
    }
    assert_eq!(
        panics,
        [(1, "bad state 1".to_owned()), (2, "bad state 2".to_owned())]
    );
}

#[tokio::test(start_paused = true)]
async fn temporary_panic_is_returned_as_a_panic() {
    let mut r = Restarter::new(service_fn("once", |_ctx, _ready| async { panic!("nope") }))
        .policy(RestartPolicy::Temporary);
    let err = r
        .run(CancellationToken::new(), Ready::noop())
        .await
        .unwrap_err()
        .downcast::<ServiceError>()
        .unwrap();
    assert!(err.is_panic());
    assert_eq!(err.to_string(), "once: panicked: nope");
}

fn counting(name: &'static str, runs: Arc<Mutex<u32>>, result: fn(u32) -> bool) -> impl Service {
    service_fn(name, move |_ctx, _ready| {
        let n = {
            let mut r = runs.lock().unwrap();
            *r += 1;
            *r
        };
        async move {
            if result(n) {
                Ok(())
            } else {
                Err("failed".into())
            }
        }
    })
}

#[tokio::test(start_paused = true)]
async fn policies_decide_what_is_restarted() {
    // Transient: failures are restarted, Ok ends it.
    let runs = Arc::new(Mutex::new(0));
    let mut r = Restarter::new(counting("t", runs.clone(), |n| n == 3))
        .policy(RestartPolicy::Transient)
        .backoff(backoff(10, 10));
    r.run(CancellationToken::new(), Ready::noop())
        .await
        .unwrap();
    assert_eq!(*runs.lock().unwrap(), 3);

    // Temporary: the first error ends it.
    let runs = Arc::new(Mutex::new(0));
    let mut r = Restarter::new(counting("tmp", runs.clone(), |_| false))
        .policy(RestartPolicy::Temporary)
        .backoff(backoff(10, 10));
    let err = r
        .run(CancellationToken::new(), Ready::noop())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "tmp: failed");
    assert_eq!(*runs.lock().unwrap(), 1);

    // Permanent: even Ok is restarted, until the intensity limit.
    let runs = Arc::new(Mutex::new(0));
    let mut r = Restarter::new(counting("p", runs.clone(), |_| true))
        .backoff(backoff(10, 10))
        .intensity(Intensity::new(2, Duration::from_secs(60)).unwrap());
    let err = r
        .run(CancellationToken::new(), Ready::noop())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "p: gave up after 2 restarts within 60s; last failure: exited early (returned Ok before it was stopped)"
    );
    assert_eq!(*runs.lock().unwrap(), 3);
}

#[tokio::test(start_paused = true)]
async fn stop_during_a_restart_completes_at_once() {
    let hub = StatusHub::new(64);
    let mut watch = hub.watch();
    let svc = service_fn("flaky", |_ctx, _ready| async { Err("down".into()) });
    let restarter = Restarter::new(svc)
        .backoff(backoff(3_600_000, 3_600_000)) // an hour
        .status(hub.clone());
    let mut group = ServiceGroup::builder("app")
        .service(restarter)
        .stop_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let ctx = CancellationToken::new();
    let run = tokio::spawn(group.serve(ctx.clone()));
    watch
        .wait_for(|m| {
            m.get("flaky")
                .is_some_and(|e| e.state == ServiceState::Restarting)
        })
        .await
        .unwrap();
    let cancelled_at = Instant::now();
    ctx.cancel();
    run.await.unwrap().unwrap();
    assert_eq!(cancelled_at.elapsed(), Duration::ZERO);
    assert_eq!(hub.snapshot()["flaky"].state, ServiceState::Stopped);
}

#[tokio::test(start_paused = true)]
async fn restarter_in_a_sequence_reports_ready_after_a_failed_attempt() {
    let runs = Arc::new(Mutex::new(0));
    let runs2 = runs.clone();
    let db = service_fn("db", move |ctx: CancellationToken, ready: Ready| {
        let n = {
            let mut r = runs2.lock().unwrap();
            *r += 1;
            *r
        };
        async move {
            if n == 1 {
                return Err("not yet".into());
            }
            ready.ready();
            ctx.cancelled().await;
            Ok(())
        }
    });
    let mut seq = Sequence::builder("app")
        .service(Restarter::new(db).backoff(backoff(500, 500)))
        .service(service_fn(
            "http",
            |ctx: CancellationToken, ready: Ready| async move {
                ready.ready();
                ctx.cancelled().await;
                Ok(())
            },
        ))
        .build()
        .unwrap();
    let ctx = CancellationToken::new();
    let (ready, when_ready) = Ready::channel();
    let start = Instant::now();
    let run = tokio::spawn(seq.run(ctx.clone(), ready));
    assert!(when_ready.await);
    assert_eq!(start.elapsed(), ms(500));
    ctx.cancel();
    run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn jitter_stays_within_bounds_and_a_seed_reproduces_it() {
    async fn delays(seed: u64) -> Vec<Duration> {
        let hub = StatusHub::new(256);
        let mut events = hub.subscribe();
        let b = Backoff::exponential(ms(100), ms(1000), 2.0, 0.5)
            .unwrap()
            .with_seed(seed);
        let mut r = Restarter::new(service_fn("j", |_ctx, _ready| async { Err("x".into()) }))
            .backoff(b)
            .intensity(Intensity::new(6, Duration::from_secs(600)).unwrap())
            .status(hub);
        r.run(CancellationToken::new(), Ready::noop())
            .await
            .unwrap_err();
        let mut out = Vec::new();
        while let Ok(e) = events.try_recv() {
            if let Some(d) = e.delay {
                out.push(d);
            }
        }
        out
    }
    let a = delays(42).await;
    assert_eq!(a, delays(42).await, "same seed, same delays");
    assert_ne!(a, delays(7).await, "another seed, other delays");
    let b = backoff(100, 1000);
    assert_eq!(a.len(), 6);
    for (n, d) in a.iter().enumerate() {
        let base = b.base_delay(n as u32);
        assert!(*d <= base && *d >= base / 2, "{n}: {d:?} vs {base:?}");
    }
}

#[test]
fn settings_are_validated() {
    assert_eq!(
        Backoff::exponential(Duration::ZERO, ms(10), 2.0, 0.0),
        Err(ConfigError::ZeroDuration {
            setting: "backoff min"
        })
    );
    assert_eq!(
        Backoff::exponential(ms(20), ms(10), 2.0, 0.0),
        Err(ConfigError::BackoffMinAboveMax {
            min: ms(20),
            max: ms(10)
        })
    );
    assert!(matches!(
        Backoff::exponential(ms(1), ms(10), 0.5, 0.0),
        Err(ConfigError::InvalidFactor { .. })
    ));
    assert!(matches!(
        Backoff::exponential(ms(1), ms(10), f64::NAN, 0.0),
        Err(ConfigError::InvalidFactor { .. })
    ));
    assert!(matches!(
        Backoff::exponential(ms(1), ms(10), 2.0, 1.5),
        Err(ConfigError::InvalidJitter { .. })
    ));
    assert_eq!(
        Intensity::new(3, Duration::ZERO),
        Err(ConfigError::ZeroDuration {
            setting: "intensity window"
        })
    );
    // Since issue 13 an empty supervisor is valid, like an empty group (see
    // `empty_containers_are_valid_and_return_at_once` in service_lifecycle.rs).
    assert!(Supervisor::builder("sup").build().is_ok());
    let a = || service_fn("a", |_ctx, _ready| async { Ok(()) });
    let err = Supervisor::builder("sup")
        .service(a())
        .service(a())
        .build()
        .unwrap_err();
    assert!(matches!(err, ConfigError::DuplicateName { .. }));
}

/// Without a status hub nothing formats the service's errors, so an error
/// whose `Display` panics is restarted and finally given up on like any other.
#[tokio::test(start_paused = true)]
async fn errors_are_not_formatted_without_a_status_hub() {
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = runs.clone();
    let flaky = service_fn("flaky", move |_ctx, _ready| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { Err::<(), taskgroup::BoxError>(Box::new(DisplayPanics)) }
    });
    let ms = Duration::from_millis(10);
    let mut restarter = Restarter::new(flaky)
        .backoff(Backoff::exponential(ms, ms, 1.0, 0.0).unwrap())
        .intensity(Intensity::new(2, Duration::from_secs(60)).unwrap());
    let err = Service::run(&mut restarter, CancellationToken::new(), Ready::noop())
        .await
        .unwrap_err();
    let err = err.downcast::<ServiceError>().unwrap();
    assert!(matches!(*err, ServiceError::GaveUp { restarts: 2, .. }));
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 3);
}
