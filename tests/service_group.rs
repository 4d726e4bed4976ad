//! ServiceGroup: start together, first failure stops all, one stop deadline, every error reported.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use taskgroup::service::{
    service_fn, Cancelled, ConfigError, Ready, Sequence, Service, ServiceError, ServiceGroup,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

type Log = Arc<Mutex<Vec<String>>>;

fn push(log: &Log, entry: impl Into<String>) {
    log.lock().unwrap().push(entry.into());
}

fn entries(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

/// Reports ready, runs until cancelled, logs "stop NAME".
fn server(name: &'static str, log: &Log) -> impl Service {
    let log = log.clone();
    service_fn(name, move |ctx: CancellationToken, ready: Ready| {
        let log = log.clone();
        async move {
            push(&log, format!("start {name}"));
            ready.ready();
            ctx.cancelled().await;
            push(&log, format!("stop {name}"));
            Ok(())
        }
    })
}

fn failing_after(name: &'static str, after: Duration, msg: &'static str) -> impl Service {
    service_fn(name, move |_ctx, _ready| async move {
        tokio::time::sleep(after).await;
        Err(msg.into())
    })
}

#[tokio::test(start_paused = true)]
async fn first_failure_cancels_all_and_reports_every_error() {
    let log = Log::default();
    let flusher = service_fn("cache", |ctx: CancellationToken, _ready| async move {
        ctx.cancelled().await;
        // A failing teardown after the cancellation is a real failure: reported.
        Err("flush failed".into())
    });
    let mut group = ServiceGroup::builder("app")
        .service(server("api", &log))
        .service(failing_after(
            "db",
            Duration::from_secs(1),
            "connection lost",
        ))
        .service(flusher)
        .build()
        .unwrap();
    let start = Instant::now();
    let err = group.serve(CancellationToken::new()).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    let lines: Vec<String> = err.failures().iter().map(|e| e.to_string()).collect();
    assert_eq!(lines, ["db: connection lost", "cache: flush failed"]);
    assert_eq!(err.to_string(), "db: connection lost; cache: flush failed");
    assert_eq!(entries(&log), ["start api", "stop api"]);
}

#[tokio::test(start_paused = true)]
async fn empty_group_returns_at_once_and_is_ready() {
    let mut group = ServiceGroup::builder("empty").build().unwrap();
    let (ready, when_ready) = Ready::channel();
    let start = Instant::now();
    // A context that is never cancelled: the group must not wait for it.
    group
        .run(CancellationToken::new(), ready)
        .await
        .expect("empty group");
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(when_ready.await);
}

#[tokio::test(start_paused = true)]
async fn long_running_service_returning_ok_is_exited_early() {
    let log = Log::default();
    let mut group = ServiceGroup::builder("app")
        .service(server("api", &log))
        .service(service_fn("quitter", |_ctx, _ready| async { Ok(()) }))
        .build()
        .unwrap();
    let err = group.serve(CancellationToken::new()).await.unwrap_err();
    assert!(matches!(
        err.failures(),
        [ServiceError::ExitedEarly { name }] if name == "quitter"
    ));
    assert_eq!(entries(&log), ["start api", "stop api"]);
}

#[tokio::test(start_paused = true)]
async fn oneshot_service_may_finish_and_counts_as_ready() {
    let log = Log::default();
    let mut group = ServiceGroup::builder("app")
        .service(server("api", &log))
        .oneshot(service_fn("migrate", |_ctx, _ready| async { Ok(()) }))
        .build()
        .unwrap();
    let ctx = CancellationToken::new();
    let (ready, when_ready) = Ready::channel();
    let run = tokio::spawn(group.run(ctx.clone(), ready));
    assert!(when_ready.await, "api ready + migrate done = group ready");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !run.is_finished(),
        "a finished one-shot does not stop the group"
    );
    ctx.cancel();
    run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn panic_is_caught_with_name_and_message() {
    let log = Log::default();
    let mut group = ServiceGroup::builder("app")
        .service(server("api", &log))
        .service(service_fn("bad", |_ctx, _ready| async {
            panic!("index out of range");
        }))
        .build()
        .unwrap();
    let err = group.serve(CancellationToken::new()).await.unwrap_err();
    match err.failures() {
        [e @ ServiceError::Panicked { name, message }] => {
            assert_eq!(name, "bad");
            assert_eq!(message, "index out of range");
            assert!(e.is_panic());
            assert_eq!(e.to_string(), "bad: panicked: index out of range");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(entries(&log), ["start api", "stop api"]);
}

struct DropSignal(mpsc::UnboundedSender<&'static str>, &'static str);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(self.1);
    }
}

#[tokio::test(start_paused = true)]
async fn stop_timeout_aborts_and_names_the_stragglers() {
    let (dropped_tx, mut dropped) = mpsc::unbounded_channel();
    let log = Log::default();
    let stubborn = service_fn("stubborn", move |_ctx, _ready| {
        let guard = DropSignal(dropped_tx.clone(), "stubborn dropped");
        async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    let mut group = ServiceGroup::builder("app")
        .service(server("api", &log))
        .service(stubborn)
        .stop_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let ctx = CancellationToken::new();
    let run = tokio::spawn(group.serve(ctx.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cancelled_at = Instant::now();
    ctx.cancel();
    let err = run.await.unwrap().unwrap_err();
    assert_eq!(cancelled_at.elapsed(), Duration::from_secs(2));
    // Since issue 13 a stop timeout names the hung service by its path, with where it was
    // added (the `.service(stubborn)` line above) and how long it ran.
    assert!(
        matches!(
            err.failures(),
            [ServiceError::StopTimeout { name, timeout, site, age }]
                if name == "app/stubborn" && *timeout == Duration::from_secs(2)
                    && site.file().ends_with("service_group.rs") && site.line() == 168
                    && *age == Duration::from_secs(3)
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "app/stubborn: did not stop within 2s, aborted (added at {}:168:10, ran 3s)",
            file!()
        )
    );
    assert_eq!(dropped.recv().await, Some("stubborn dropped"));
    assert_eq!(entries(&log), ["start api", "stop api"]);
}

#[tokio::test(start_paused = true)]
async fn cancellation_caused_errors_are_not_reported() {
    let mut group = ServiceGroup::builder("app")
        .service(service_fn(
            "worker",
            |ctx: CancellationToken, _ready| async move {
                ctx.cancelled().await;
                Err(Cancelled.into())
            },
        ))
        .service(failing_after("db", Duration::from_secs(1), "gone"))
        .build()
        .unwrap();
    let err = group.serve(CancellationToken::new()).await.unwrap_err();
    assert_eq!(err.to_string(), "db: gone");
}

#[tokio::test(start_paused = true)]
async fn ready_once_every_member_is_ready() {
    let slow = |name: &'static str, secs: u64| {
        service_fn(
            name,
            move |ctx: CancellationToken, ready: Ready| async move {
                tokio::time::sleep(Duration::from_secs(secs)).await;
                ready.ready();
                ctx.cancelled().await;
                Ok(())
            },
        )
    };
    let mut group = ServiceGroup::builder("app")
        .service(slow("a", 1))
        .service(slow("b", 3))
        .build()
        .unwrap();
    let ctx = CancellationToken::new();
    let (ready, when_ready) = Ready::channel();
    let start = Instant::now();
    let run = tokio::spawn(group.run(ctx.clone(), ready));
    assert!(when_ready.await);
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    ctx.cancel();
    run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn dropping_the_group_future_aborts_every_member() {
    let (dropped_tx, mut dropped) = mpsc::unbounded_channel();
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let svc = service_fn("forever", move |_ctx, _ready| {
        let guard = DropSignal(dropped_tx.clone(), "forever dropped");
        let started_tx = started_tx.clone();
        async move {
            let _guard = guard;
            let _ = started_tx.send(());
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    let mut group = ServiceGroup::builder("app").service(svc).build().unwrap();
    let run = tokio::spawn(group.serve(CancellationToken::new()));
    started.recv().await.unwrap();
    run.abort();
    assert_eq!(dropped.recv().await, Some("forever dropped"));
}

#[tokio::test(start_paused = true)]
async fn group_can_run_again() {
    let log = Log::default();
    let mut group = ServiceGroup::builder("app")
        .service(server("api", &log))
        .build()
        .unwrap();
    for _ in 0..2 {
        let ctx = CancellationToken::new();
        let run = group.serve(ctx.clone());
        ctx.cancel();
        run.await.unwrap();
    }
    assert_eq!(
        entries(&log),
        ["start api", "stop api", "start api", "stop api"]
    );
}

#[test]
fn settings_are_validated() {
    let log = Log::default();
    let err = ServiceGroup::builder("app")
        .service(server("api", &log))
        .service(server("api", &log))
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        ConfigError::DuplicateName {
            group: "app".into(),
            name: "api".into()
        }
    );
    assert_eq!(err.to_string(), "app: duplicate service name \"api\"");
    let err = ServiceGroup::builder("app")
        .stop_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        ConfigError::ZeroDuration {
            setting: "stop timeout"
        }
    );
}

/// outer group [ sequence "backend" [ db, group "inner" [x, y] ], watcher ].
#[tokio::test(start_paused = true)]
async fn nested_group_inside_sequence_inside_group() {
    let log = Log::default();
    let inner = ServiceGroup::builder("inner")
        .service(server("x", &log))
        .service(server("y", &log))
        .build()
        .unwrap();
    let backend = Sequence::builder("backend")
        .service(server("db", &log))
        .service(inner)
        .build()
        .unwrap();
    let mut outer = ServiceGroup::builder("outer")
        .service(backend)
        .service(server("watcher", &log))
        .build()
        .unwrap();

    let ctx = CancellationToken::new();
    let (ready, when_ready) = Ready::channel();
    let run = tokio::spawn(outer.run(ctx.clone(), ready));
    assert!(when_ready.await, "ready propagates up through every level");
    {
        let started = entries(&log);
        let pos = |e: &str| started.iter().position(|s| s == e).unwrap();
        assert!(pos("start db") < pos("start x"), "{started:?}");
        assert!(pos("start db") < pos("start y"), "{started:?}");
        assert_eq!(started.len(), 4);
    }
    ctx.cancel();
    run.await.unwrap().unwrap();
    let all = entries(&log);
    let pos = |e: &str| all.iter().position(|s| s == e).unwrap();
    // The sequence stops the inner group before the database.
    assert!(pos("stop x") < pos("stop db"), "{all:?}");
    assert!(pos("stop y") < pos("stop db"), "{all:?}");
    assert!(all.contains(&"stop watcher".to_owned()));
    assert_eq!(all.len(), 8);
}

#[tokio::test(start_paused = true)]
async fn nested_failure_is_reported_as_a_path() {
    let log = Log::default();
    let inner = ServiceGroup::builder("inner")
        .service(server("x", &log))
        .service(failing_after("y", Duration::from_secs(1), "boom"))
        .build()
        .unwrap();
    let backend = Sequence::builder("backend")
        .service(server("db", &log))
        .service(inner)
        .build()
        .unwrap();
    let mut outer = ServiceGroup::builder("outer")
        .service(backend)
        .service(server("watcher", &log))
        .build()
        .unwrap();
    let err = outer.serve(CancellationToken::new()).await.unwrap_err();
    // y fails while the sequence is starting "inner" (it never reported ready).
    assert_eq!(err.to_string(), "backend: starting inner: y: boom");
    let all = entries(&log);
    for e in ["stop x", "stop db", "stop watcher"] {
        assert!(all.contains(&e.to_owned()), "{all:?}");
    }
}
