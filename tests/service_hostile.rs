//! Hostile service code never hangs or crashes a container (issue 13, point 3): panics in
//! `Service::run` itself, in the future's `Drop`, in a panic payload's `Drop`, and errors
//! whose `Display` panics. Each test names the defect of the code before issue 13 that it
//! catches.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use taskgroup::service::{
    service_fn, Backoff, Ready, Restarter, Service, ServiceError, ServiceGroup, ServiceState,
    StatusHub, Supervisor,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

type Log = Arc<Mutex<Vec<String>>>;

fn server(name: &'static str, log: &Log) -> impl Service {
    let log = log.clone();
    service_fn(name, move |ctx: CancellationToken, ready: Ready| {
        let log = log.clone();
        async move {
            ready.ready();
            ctx.cancelled().await;
            log.lock().unwrap().push(format!("stop {name}"));
            Ok(())
        }
    })
}

struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("panic in drop");
    }
}

/// A future that completes (with an error) after a second, and panics when it is dropped,
/// which is after it completed: the panic is not inside any of its polls.
struct DoneThenPanic {
    sleep: Pin<Box<tokio::time::Sleep>>,
    _bomb: PanicOnDrop,
}

impl Future for DoneThenPanic {
    type Output = Result<(), taskgroup::BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        std::task::ready!(self.sleep.as_mut().poll(cx));
        Poll::Ready(Err("done".into()))
    }
}

/// Before issue 13 a group hung on this member (its task died after the future completed,
/// before the outcome was sent) and, once cancelled, misreported it as `StopTimeout` after
/// the 10 s stop timeout.
#[tokio::test(start_paused = true)]
async fn future_that_panics_in_drop_after_completing_is_a_member_panic() {
    let log = Log::default();
    let mut group = ServiceGroup::builder("app")
        .service(server("api", &log))
        .service(service_fn("bad", |_ctx, _ready| DoneThenPanic {
            sleep: Box::pin(tokio::time::sleep(Duration::from_secs(1))),
            _bomb: PanicOnDrop,
        }))
        .build()
        .unwrap();
    let start = Instant::now();
    let err = group.serve(CancellationToken::new()).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(1), "no stop timeout");
    let failures = err.failures();
    // The error the future returned, and the panic of its drop: both reported.
    assert!(
        failures
            .iter()
            .any(|e| e.is_panic() && e.name() == Some("bad")),
        "{err:?}"
    );
    assert!(!failures
        .iter()
        .any(|e| matches!(e, ServiceError::StopTimeout { .. })));
    assert_eq!(*log.lock().unwrap(), ["stop api"]);
}

struct BombPayload;

impl Drop for BombPayload {
    fn drop(&mut self) {
        panic!("the payload's drop panicked");
    }
}

/// Before issue 13 the payload's drop killed the member's task before its outcome was
/// sent: the group never learned the member died and never returned (1 h on a paused
/// clock).
#[tokio::test(start_paused = true)]
async fn panic_payload_that_panics_on_drop_is_a_member_panic() {
    let log = Log::default();
    let mut group = ServiceGroup::builder("app")
        .service(server("api", &log))
        .service(service_fn("bad", |_ctx, _ready| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            std::panic::panic_any(BombPayload)
        }))
        .build()
        .unwrap();
    let start = Instant::now();
    let res = tokio::time::timeout(
        Duration::from_secs(3600),
        group.serve(CancellationToken::new()),
    )
    .await;
    let err = res.expect("the group returned").unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert!(
        err.failures()
            .iter()
            .any(|e| e.is_panic() && e.name() == Some("bad")),
        "{err:?}"
    );
    assert_eq!(*log.lock().unwrap(), ["stop api"]);
}

/// A service whose `run` (the factory, before it returns its future) panics on the runs
/// listed in `panics` (1-based), and otherwise serves until cancelled.
fn factory_panics(
    name: &'static str,
    panics: &'static [u32],
    runs: Arc<AtomicU32>,
) -> impl Service {
    service_fn(name, move |ctx: CancellationToken, ready: Ready| {
        let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
        if panics.contains(&n) {
            panic!("factory panicked on run {n}");
        }
        async move {
            ready.ready();
            ctx.cancelled().await;
            Ok(())
        }
    })
}

/// Before issue 13 a panic in `Service::run` unwound out of `ServiceGroup::serve()` into the
/// caller instead of being reported as a member panic.
#[tokio::test(start_paused = true)]
async fn factory_panic_in_a_group_is_a_reported_member_panic() {
    let log = Log::default();
    let mut group = ServiceGroup::builder("app")
        .service(server("api", &log))
        .service(factory_panics("bad", &[1], Arc::default()))
        .build()
        .unwrap();
    // `serve` itself must not unwind: the factory runs inside the member's task.
    let fut = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        group.serve(CancellationToken::new())
    }))
    .expect("serve() does not panic in the caller");
    let err = fut.await.unwrap_err();
    assert!(
        matches!(&err.failures()[0], ServiceError::Panicked { name, message }
            if name == "bad" && message == "factory panicked on run 1"),
        "{err:?}"
    );
    assert_eq!(*log.lock().unwrap(), ["stop api"]);
}

/// Before issue 13 a panic in `Service::run` escaped a `Restarter`: no restart, and the hub
/// stayed at "starting" forever.
#[tokio::test(start_paused = true)]
async fn factory_panic_under_a_restarter_is_restarted_with_its_events() {
    let hub = StatusHub::new(64);
    let mut events = hub.subscribe();
    let runs = Arc::new(AtomicU32::new(0));
    let backoff =
        Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1), 2.0, 0.0).unwrap();
    let mut r = Restarter::new(factory_panics("svc", &[1], runs.clone()))
        .backoff(backoff)
        .status(hub.clone());
    let ctx = CancellationToken::new();
    let run = tokio::spawn(r.run(ctx.clone(), Ready::noop()));
    let mut watch = hub.watch();
    watch
        .wait_for(|m| m["svc"].state == ServiceState::Running && m["svc"].attempt == 2)
        .await
        .unwrap();
    ctx.cancel();
    run.await.unwrap().unwrap();
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push((e.state, e.attempt, e.error));
    }
    assert_eq!(
        seen,
        [
            (ServiceState::Idle, 0, None),
            (ServiceState::Starting, 1, None),
            (
                ServiceState::Panicked,
                1,
                Some("factory panicked on run 1".to_owned())
            ),
            (ServiceState::Restarting, 2, None),
            (ServiceState::Starting, 2, None),
            (ServiceState::Running, 2, None),
            (ServiceState::Stopped, 2, None),
        ]
        .map(|(s, a, e)| (s, a, e))
        .to_vec()
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

/// An error whose `Display` panics.
#[derive(Debug)]
struct PanickyDisplay;

impl fmt::Display for PanickyDisplay {
    fn fmt(&self, _f: &mut fmt::Formatter<'_>) -> fmt::Result {
        panic!("Display panicked")
    }
}

impl std::error::Error for PanickyDisplay {}

/// Before issue 13, with a `StatusHub`, formatting this error for the hub panicked inside
/// the group's future: the group crashed and every member was aborted.
#[tokio::test(start_paused = true)]
async fn error_whose_display_panics_is_kept_and_reported_by_a_group() {
    let log = Log::default();
    let hub = StatusHub::new(64);
    let mut group = ServiceGroup::builder("app")
        .service(server("api", &log))
        .service(service_fn("bad", |_ctx, _ready| async {
            Err(Box::new(PanickyDisplay) as taskgroup::BoxError)
        }))
        .status(hub.clone())
        .build()
        .unwrap();
    let err = group.serve(CancellationToken::new()).await.unwrap_err();
    // The error is kept unformatted, as the service returned it.
    assert!(err.failures()[0].source_as::<PanickyDisplay>().is_some());
    assert_eq!(*log.lock().unwrap(), ["stop api"], "api stopped cleanly");
    let snap = hub.snapshot();
    assert_eq!(snap["bad"].state, ServiceState::Failed);
    assert_eq!(
        snap["bad"].error.as_deref(),
        Some("<the error's Display panicked>")
    );
    assert_eq!(snap["api"].state, ServiceState::Stopped);
}

/// Before issue 13 the same error crashed a `Supervisor`'s restarter: not restarted, its
/// status stale.
#[tokio::test(start_paused = true)]
async fn error_whose_display_panics_is_restarted_by_a_supervisor() {
    let hub = StatusHub::new(64);
    let runs = Arc::new(AtomicU32::new(0));
    let runs2 = runs.clone();
    let mut sup = Supervisor::builder("sup")
        .status(hub.clone())
        .backoff(
            Backoff::exponential(
                Duration::from_millis(10),
                Duration::from_millis(10),
                1.0,
                0.0,
            )
            .unwrap(),
        )
        .service(service_fn(
            "svc",
            move |ctx: CancellationToken, ready: Ready| {
                let n = runs2.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    if n == 1 {
                        return Err(Box::new(PanickyDisplay) as taskgroup::BoxError);
                    }
                    ready.ready();
                    ctx.cancelled().await;
                    Ok(())
                }
            },
        ))
        .build()
        .unwrap();
    let ctx = CancellationToken::new();
    let run = tokio::spawn(sup.serve(ctx.clone()));
    hub.watch()
        .wait_for(|m| m["svc"].state == ServiceState::Running && m["svc"].attempt == 2)
        .await
        .unwrap();
    ctx.cancel();
    run.await.unwrap().unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(hub.snapshot()["svc"].state, ServiceState::Stopped);
}

/// Under a `Restarter`, a panic in the future's `Drop` after it completed and a panic
/// payload whose `Drop` panics are each a reported panic and a restart. Before issue 13
/// either one killed the restarter's future (the drop panics were outside its
/// `catch_unwind`): no restart, the status stale.
#[tokio::test(start_paused = true)]
async fn drop_panics_under_a_restarter_are_restarts_with_their_events() {
    let hub = StatusHub::new(64);
    let runs = Arc::new(AtomicU32::new(0));
    let runs2 = runs.clone();
    let svc = service_fn("svc", move |ctx: CancellationToken, ready: Ready| {
        let n = runs2.fetch_add(1, Ordering::SeqCst) + 1;
        let fut: futures::future::BoxFuture<'static, Result<(), taskgroup::BoxError>> = match n {
            1 => Box::pin(DoneThenPanic {
                sleep: Box::pin(tokio::time::sleep(Duration::from_millis(1))),
                _bomb: PanicOnDrop,
            }),
            2 => Box::pin(async { std::panic::panic_any(BombPayload) }),
            _ => Box::pin(async move {
                ready.ready();
                ctx.cancelled().await;
                Ok(())
            }),
        };
        fut
    });
    let mut r = Restarter::new(svc)
        .backoff(
            Backoff::exponential(
                Duration::from_millis(10),
                Duration::from_millis(10),
                1.0,
                0.0,
            )
            .unwrap(),
        )
        .status(hub.clone());
    let mut events = hub.subscribe();
    let ctx = CancellationToken::new();
    let run = tokio::spawn(r.run(ctx.clone(), Ready::noop()));
    hub.watch()
        .wait_for(|m| m["svc"].state == ServiceState::Running && m["svc"].attempt == 3)
        .await
        .unwrap();
    ctx.cancel();
    run.await.unwrap().unwrap();
    let mut panicked = Vec::new();
    while let Ok(e) = events.try_recv() {
        if e.state == ServiceState::Panicked {
            panicked.push(e.attempt);
        }
    }
    assert_eq!(panicked, [1, 2]);
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

/// Holds a count of drops, or panics when dropped.
enum DropProbe {
    Counted(Arc<AtomicU32>),
    Bomb,
}

impl Drop for DropProbe {
    fn drop(&mut self) {
        match self {
            DropProbe::Counted(drops) => {
                drops.fetch_add(1, Ordering::SeqCst);
            }
            DropProbe::Bomb => panic!("bomb in Drop"),
        }
    }
}

/// A service that holds `probe` until it is dropped.
fn holding(name: &'static str, probe: DropProbe) -> impl Service {
    service_fn(name, move |_ctx: CancellationToken, _ready: Ready| {
        let _held = &probe;
        async { Ok(()) }
    })
}

/// Containers drop their members by a loop (so that nesting of any depth drops on a
/// bounded stack): a service whose `Drop` panics, nested in containers or the first the
/// loop drops, makes the drop panic once, every other service is still dropped, and
/// containers dropped later on the same thread drop fully (nothing is left queued).
#[test]
fn a_panicking_drop_inside_nested_containers_drops_the_rest() {
    let drops = Arc::new(AtomicU32::new(0));
    let counted = |name| holding(name, DropProbe::Counted(drops.clone()));
    let tree = |bomb: bool| {
        let inner = ServiceGroup::builder("inner")
            .service(if bomb {
                holding("bomb", DropProbe::Bomb)
            } else {
                counted("quiet")
            })
            .service(counted("c2"))
            .build()
            .unwrap();
        let seq = taskgroup::service::Sequence::builder("seq")
            .service(counted("c1"))
            .service(inner)
            .build()
            .unwrap();
        ServiceGroup::builder("top")
            .service(seq)
            .service(counted("c3"))
            .service(Restarter::new(counted("c4")))
            .build()
            .unwrap()
    };
    let bombed = |top: ServiceGroup| {
        let panic = std::panic::catch_unwind(AssertUnwindSafe(move || drop(top))).unwrap_err();
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"bomb in Drop"));
    };
    bombed(tree(true));
    assert_eq!(
        drops.load(Ordering::SeqCst),
        4,
        "every service but the bomb dropped"
    );
    drop(tree(false));
    assert_eq!(drops.load(Ordering::SeqCst), 4 + 5);
    // The bomb is the first service the loop drops itself (not one queued).
    bombed(
        ServiceGroup::builder("flat")
            .service(holding("bomb", DropProbe::Bomb))
            .service(counted("c5"))
            .build()
            .unwrap(),
    );
    assert_eq!(drops.load(Ordering::SeqCst), 4 + 5 + 1);
    drop(tree(false));
    assert_eq!(drops.load(Ordering::SeqCst), 4 + 5 + 1 + 5);
}

/// The containers and their new companions can be shared across threads.
#[test]
fn service_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<ServiceGroup>();
    send_sync::<taskgroup::service::Sequence>();
    send_sync::<taskgroup::service::StatusWatch>();
    send_sync::<taskgroup::service::TasksService>();
    send_sync::<taskgroup::service::UncleanShutdown>();
    send_sync::<ServiceError>();
    send_sync::<Restarter<ServiceGroup>>();
}
