//! Lifecycle and limits (issue 13, points 6 and 7): `serve` while running, empty
//! containers, `Duration::MAX` everywhere, bounded intensity memory, and a member whose
//! return ends the group.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use taskgroup::service::{
    service_fn, Backoff, Intensity, Ready, Restarter, Sequence, Service, ServiceError,
    ServiceGroup, ServiceState, StatusHub, Supervisor, TasksService,
};
use taskgroup::WaitGroup;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

type Log = Arc<Mutex<Vec<String>>>;

fn server(name: &'static str, log: &Log) -> impl Service {
    let log = log.clone();
    service_fn(name, move |ctx: CancellationToken, ready: Ready| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push(format!("start {name}"));
            ready.ready();
            ctx.cancelled().await;
            log.lock().unwrap().push(format!("stop {name}"));
            Ok(())
        }
    })
}

/// Before issue 13 a second `serve()` on a running group started a second copy of every
/// service (two listeners on one port).
#[tokio::test(start_paused = true)]
async fn serve_while_running_is_an_error_and_starts_nothing() {
    let log = Log::default();
    let mut group = ServiceGroup::builder("app")
        .service(server("api", &log))
        .build()
        .unwrap();
    let ctx = CancellationToken::new();
    let first = tokio::spawn(group.serve(ctx.clone()));
    tokio::time::sleep(Duration::from_millis(1)).await;
    let err = group.serve(ctx.clone()).await.unwrap_err();
    assert!(matches!(&err, ServiceError::AlreadyRunning { name } if name == "app"));
    ctx.cancel();
    first.await.unwrap().unwrap();
    assert_eq!(*log.lock().unwrap(), ["start api", "stop api"]);
    // Once stopped it may run again.
    let ctx = CancellationToken::new();
    ctx.cancel();
    group.serve(ctx).await.unwrap();

    let mut seq = Sequence::builder("seq")
        .service(server("db", &log))
        .build()
        .unwrap();
    let ctx = CancellationToken::new();
    let first = tokio::spawn(seq.serve(ctx.clone()));
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(matches!(
        seq.serve(ctx.clone()).await,
        Err(ServiceError::AlreadyRunning { .. })
    ));
    ctx.cancel();
    first.await.unwrap().unwrap();
}

/// Before issue 13 an empty `Supervisor` was an error while an empty `ServiceGroup`/`Sequence`
/// was valid. One rule now: valid, ready and done at once.
#[tokio::test(start_paused = true)]
async fn empty_containers_are_valid_and_return_at_once() {
    let start = Instant::now();
    let (ready, when_ready) = Ready::channel();
    ServiceGroup::builder("g")
        .build()
        .unwrap()
        .run(CancellationToken::new(), ready)
        .await
        .unwrap();
    assert!(when_ready.await);
    let (ready, when_ready) = Ready::channel();
    Sequence::builder("s")
        .build()
        .unwrap()
        .run(CancellationToken::new(), ready)
        .await
        .unwrap();
    assert!(when_ready.await);
    let (ready, when_ready) = Ready::channel();
    Supervisor::builder("sup")
        .build()
        .unwrap()
        .run(CancellationToken::new(), ready)
        .await
        .unwrap();
    assert!(when_ready.await);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

/// Before issue 13 `Duration::MAX` as a stop or start timeout panicked at run time
/// (`Instant + Duration::MAX` overflows).
#[tokio::test(start_paused = true)]
async fn duration_max_timeouts_mean_no_limit() {
    let log = Log::default();
    let seq = Sequence::builder("seq")
        .service(server("db", &log))
        .start_timeout(Duration::MAX)
        .stop_timeout(Duration::MAX)
        .build()
        .unwrap();
    // Takes a second to stop, so the group's stop deadline is computed and used.
    let slow = service_fn("slow", |ctx: CancellationToken, ready: Ready| async move {
        ready.ready();
        ctx.cancelled().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(())
    });
    let mut group = ServiceGroup::builder("app")
        .service(seq)
        .service(server("api", &log))
        .service(slow)
        .stop_timeout(Duration::MAX)
        .build()
        .unwrap();
    let ctx = CancellationToken::new();
    let run = tokio::spawn(group.serve(ctx.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    ctx.cancel();
    run.await.unwrap().unwrap();
    let mut entries = log.lock().unwrap().clone();
    entries.sort();
    assert_eq!(entries, ["start api", "start db", "stop api", "stop db"]);
}

/// What the task of a `TasksService` with no grace limit reads as its deadline once the
/// container `wrap` puts it in is stopped, on the real clock (on a paused one no time
/// passes between the container's stop and the service's, which hid a deadline thirty
/// years away by making it exactly the limit that counts as none).
async fn deadline_read_in(wrap: impl FnOnce(TasksService) -> Box<dyn Service>) -> Option<Instant> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let workers = WaitGroup::new();
    workers.task().name("worker").go(move |ctx| async move {
        let _ = tx.send(None);
        ctx.cancelled().await;
        let _ = tx.send(Some(ctx.deadline()));
    });
    let mut service = wrap(TasksService::new("workers", workers).grace(Duration::MAX));
    let ctx = CancellationToken::new();
    let (ready, _) = Ready::channel();
    let run = tokio::spawn(service.run(ctx.clone(), ready));
    let limit = Duration::from_secs(30);
    let read = async {
        assert_eq!(rx.recv().await, Some(None), "the task started");
        ctx.cancel();
        rx.recv().await.expect("the task read its deadline")
    };
    let read = tokio::time::timeout(limit, read)
        .await
        .expect("the stop began");
    tokio::time::timeout(limit, run)
        .await
        .expect("the stop ended")
        .unwrap()
        .unwrap();
    read.expect("read once stopped")
}

/// A stop without a time limit sets no deadline inside containers either: the tasks of a
/// `TasksService` with `grace(Duration::MAX)` in a group, a sequence, and a group in a
/// sequence, each with `stop_timeout(Duration::MAX)`, read none, as under
/// `shutdown(Duration::MAX)`. They read one thirty years away less the microseconds the
/// stop had taken (`Some(946079999s)` from now): the container's "no limit" became a
/// deadline, and the time left to it, just below the limit that counts as none, a grace
/// with one. A stop with a limit still passes it down.
#[tokio::test]
async fn an_unlimited_stop_sets_no_deadline_in_containers() {
    let group = |service: TasksService| -> Box<dyn Service> {
        let group = ServiceGroup::builder("app")
            .service(service)
            .stop_timeout(Duration::MAX);
        Box::new(group.build().unwrap())
    };
    let sequence = |service: Box<dyn Service>| -> Box<dyn Service> {
        let seq = Sequence::builder("seq")
            .service(service)
            .stop_timeout(Duration::MAX);
        Box::new(seq.build().unwrap())
    };
    assert_eq!(deadline_read_in(group).await, None, "in a group");
    let alone = |service: TasksService| sequence(Box::new(service));
    assert_eq!(deadline_read_in(alone).await, None, "in a sequence");
    let nested = |service: TasksService| sequence(group(service));
    assert_eq!(
        deadline_read_in(nested).await,
        None,
        "in a group in a sequence"
    );
    let limited = |service: TasksService| -> Box<dyn Service> {
        let group = ServiceGroup::builder("app")
            .service(service)
            .stop_timeout(Duration::from_secs(60));
        sequence(Box::new(group.build().unwrap()))
    };
    let stopped = Instant::now();
    let deadline = deadline_read_in(limited).await.expect("the group's limit");
    assert!(
        deadline <= stopped + Duration::from_secs(120),
        "{deadline:?}"
    );
}

/// Before issue 13 a `Backoff` whose maximum is `Duration::MAX` (accepted by the builder)
/// panicked when a delay reached it (`Duration::mul_f64` overflows at `Duration::MAX`).
#[tokio::test(start_paused = true)]
async fn backoff_up_to_duration_max_never_panics() {
    let backoff = Backoff::exponential(Duration::from_millis(1), Duration::MAX, 1e30, 1e-300)
        .unwrap()
        .with_seed(7);
    let hub = StatusHub::new(64);
    let mut r = Restarter::new(service_fn("flaky", |_ctx, _ready| async {
        Err("down".into())
    }))
    .backoff(backoff)
    .status(hub.clone());
    let ctx = CancellationToken::new();
    let run = tokio::spawn(r.run(ctx.clone(), Ready::noop()));
    // The second restart's delay is the maximum: no limit.
    hub.watch()
        .wait_for(|m| m["flaky"].state == ServiceState::Restarting && m["flaky"].attempt == 3)
        .await
        .unwrap();
    assert_eq!(hub.snapshot()["flaky"].delay, Some(Duration::MAX));
    ctx.cancel();
    run.await.unwrap().unwrap();
}

/// An intensity window of `Duration::MAX` is a window without end: the restarter gives up
/// after `max_restarts` restarts, however far apart (it keeps only that many restart
/// times, see the unit test of its window in `src/service/restart.rs`).
#[tokio::test(start_paused = true)]
async fn intensity_window_of_duration_max_gives_up_after_max_restarts() {
    let runs = Arc::new(AtomicU32::new(0));
    let runs2 = runs.clone();
    let mut r = Restarter::new(service_fn("flaky", move |_ctx, _ready| {
        runs2.fetch_add(1, Ordering::SeqCst);
        async {
            // Far apart: an hour between failures.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Err("down".into())
        }
    }))
    .backoff(
        Backoff::exponential(Duration::from_millis(1), Duration::from_millis(1), 1.0, 0.0).unwrap(),
    )
    .intensity(Intensity::new(3, Duration::MAX).unwrap());
    let err = r
        .run(CancellationToken::new(), Ready::noop())
        .await
        .unwrap_err();
    let err = err.downcast::<ServiceError>().unwrap();
    assert!(
        matches!(*err, ServiceError::GaveUp { restarts: 3, .. }),
        "{err:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 4);
}

/// oklog/run's "the first actor to return ends the group": an `ending` member that returns
/// `Ok` stops the others cleanly and the group returns `Ok`.
#[tokio::test(start_paused = true)]
async fn ending_member_returning_ok_ends_the_group_cleanly() {
    let log = Log::default();
    let mut group = ServiceGroup::builder("app")
        .service(server("api", &log))
        .ending(service_fn("job", |_ctx, _ready| async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok(())
        }))
        .build()
        .unwrap();
    let start = Instant::now();
    group.serve(CancellationToken::new()).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(*log.lock().unwrap(), ["start api", "stop api"]);
}

/// An `ending` member that fails ends the group with its own error (not a list).
#[tokio::test(start_paused = true)]
async fn ending_member_error_is_the_group_result() {
    let log = Log::default();
    let mut group = ServiceGroup::builder("app")
        .service(server("api", &log))
        .ending(service_fn("interrupt", |_ctx, _ready| async {
            Err("interrupted".into())
        }))
        .build()
        .unwrap();
    let err = group.serve(CancellationToken::new()).await.unwrap_err();
    assert!(
        matches!(&err, ServiceError::Failed { name, .. } if name == "interrupt"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "interrupt: interrupted");
    assert_eq!(*log.lock().unwrap(), ["start api", "stop api"]);
}

/// An `ending` member that fails while another hangs, and another fails as it stops: its
/// failure comes first, then the others' in the order they came. They used to be dropped: a
/// member that hung and was aborted at the stop timeout was named nowhere.
#[tokio::test(start_paused = true)]
async fn ending_member_error_comes_with_the_failures_of_the_others() {
    let mut group = ServiceGroup::builder("app")
        .service(service_fn("hung", |_ctx, _ready| async {
            std::future::pending::<()>().await;
            Ok(())
        }))
        .service(service_fn(
            "teardown",
            |ctx: CancellationToken, _ready| async move {
                ctx.cancelled().await;
                Err("flush failed".into())
            },
        ))
        .ending(service_fn("job", |_ctx, _ready| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Err("job failed".into())
        }))
        .stop_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = group.serve(CancellationToken::new()).await.unwrap_err();
    let names: Vec<_> = err.failures().iter().filter_map(|e| e.name()).collect();
    assert_eq!(names, ["job", "teardown", "app/hung"], "{err}");
    assert!(
        matches!(&err.failures()[2], ServiceError::StopTimeout { .. }),
        "{err}"
    );
    assert!(err.to_string().starts_with("job: job failed"), "{err}");
}
