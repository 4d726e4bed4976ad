//! The run + teardown adapters, and the service trait as an object.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};

use taskgroup::service::{
    blocking_run_teardown, run_teardown, service_fn, BoxError, Ready, Service, ServiceGroup,
    TeardownError,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A run that serves until `stop` is notified, then returns `run_result`; a teardown that
/// notifies `stop` and returns `teardown_result`.
fn pair(
    run_result: Option<&'static str>,
    teardown_result: Option<&'static str>,
    teardowns: Arc<AtomicU32>,
) -> impl Service {
    let stop = Arc::new(Notify::new());
    let stop2 = stop.clone();
    run_teardown(
        "server",
        move |ready: Ready| {
            let stop = stop.clone();
            async move {
                ready.ready();
                stop.notified().await;
                match run_result {
                    Some(e) => Err(e.into()),
                    None => Ok(()),
                }
            }
        },
        move || {
            let stop = stop2.clone();
            let teardowns = teardowns.clone();
            async move {
                teardowns.fetch_add(1, Ordering::SeqCst);
                stop.notify_one();
                match teardown_result {
                    Some(e) => Err(BoxError::from(e)),
                    None => Ok(()),
                }
            }
        },
    )
}

async fn run_cancelled(mut svc: impl Service) -> Result<(), BoxError> {
    let ctx = CancellationToken::new();
    let (ready, when_ready) = Ready::channel();
    let run = tokio::spawn(svc.run(ctx.clone(), ready));
    assert!(when_ready.await);
    ctx.cancel();
    run.await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn teardown_runs_on_cancel() {
    let teardowns = Arc::new(AtomicU32::new(0));
    run_cancelled(pair(None, None, teardowns.clone()))
        .await
        .unwrap();
    assert_eq!(teardowns.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn run_error_alone_is_returned_as_is() {
    let err = run_cancelled(pair(Some("socket reset"), None, Arc::default()))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "socket reset");
}

#[tokio::test(start_paused = true)]
async fn when_both_fail_both_are_reported() {
    let err = run_cancelled(pair(
        Some("socket reset"),
        Some("flush failed"),
        Arc::default(),
    ))
    .await
    .unwrap_err();
    let err = err.downcast::<TeardownError>().unwrap();
    assert_eq!(err.teardown.to_string(), "flush failed");
    assert_eq!(err.run.as_ref().unwrap().to_string(), "socket reset");
    assert_eq!(
        err.to_string(),
        "teardown failed: flush failed; run failed too: socket reset"
    );
}

#[tokio::test(start_paused = true)]
async fn teardown_error_alone_is_reported() {
    let err = run_cancelled(pair(None, Some("flush failed"), Arc::default()))
        .await
        .unwrap_err();
    let err = err.downcast::<TeardownError>().unwrap();
    assert!(err.run.is_none());
}

#[tokio::test(start_paused = true)]
async fn run_ending_by_itself_skips_teardown() {
    let teardowns = Arc::new(AtomicU32::new(0));
    let t2 = teardowns.clone();
    let mut svc = run_teardown(
        "job",
        |_ready: Ready| async { Err(BoxError::from("crashed")) },
        move || {
            t2.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        },
    );
    let err = svc
        .run(CancellationToken::new(), Ready::noop())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "crashed");
    assert_eq!(teardowns.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn blocking_pair_in_a_group() {
    let (tx, rx) = std_mpsc::channel::<()>();
    let rx = Arc::new(Mutex::new(rx));
    let tx = Mutex::new(tx);
    let svc = blocking_run_teardown(
        "legacy",
        move |ready: Ready| {
            ready.ready();
            rx.lock().unwrap().recv().map_err(BoxError::from)
        },
        move || tx.lock().unwrap().send(()).map_err(BoxError::from),
    );
    let mut group = ServiceGroup::builder("app").service(svc).build().unwrap();
    let ctx = CancellationToken::new();
    let (ready, when_ready) = Ready::channel();
    let run = tokio::spawn(group.run(ctx.clone(), ready));
    assert!(when_ready.await);
    ctx.cancel();
    run.await.unwrap().unwrap();
}

#[tokio::test]
async fn blocking_panic_is_caught_by_the_group() {
    let svc = blocking_run_teardown(
        "legacy",
        |_ready: Ready| -> Result<(), BoxError> { panic!("blocking boom") },
        || Ok(()),
    );
    let mut group = ServiceGroup::builder("app").service(svc).build().unwrap();
    let err = group.serve(CancellationToken::new()).await.unwrap_err();
    assert_eq!(err.to_string(), "legacy: panicked: blocking boom");
}

#[test]
fn services_are_send_and_boxable() {
    fn assert_send<T: Send>() {}
    assert_send::<ServiceGroup>();
    assert_send::<taskgroup::service::Sequence>();
    assert_send::<taskgroup::service::ServiceError>();
    assert_send::<taskgroup::service::StatusHub>();
    fn assert_sync<T: Sync>() {}
    assert_sync::<taskgroup::service::ServiceError>();
    assert_sync::<taskgroup::service::StatusHub>();

    let boxed: Vec<Box<dyn Service>> = vec![
        Box::new(service_fn("a", |_ctx, _ready| async { Ok(()) })),
        Box::new(ServiceGroup::builder("g").build().unwrap()),
    ];
    let names: Vec<&str> = boxed.iter().map(|s| s.name()).collect();
    assert_eq!(names, ["a", "g"]);
}
