//! With the `tracing` feature every service transition is a `tracing` event, named by its
//! full path, with or without a `StatusHub` (issue 13, point 4). Before issue 13 only
//! restart and give-up decisions were traced: a program needed a hub and a logging loop.
#![cfg(feature = "tracing")]

use taskgroup::service::{service_fn, Ready, Sequence, Service, ServiceGroup};
use tokio_util::sync::CancellationToken;

mod common {
    pub(crate) mod capture;
}
use common::capture::Capture;

fn serve_until_cancelled(name: &'static str) -> impl Service {
    service_fn(name, |ctx: CancellationToken, ready: Ready| async move {
        ready.ready();
        ctx.cancelled().await;
        Ok(())
    })
}

#[tokio::test(start_paused = true)]
async fn every_transition_is_a_tracing_event_by_path() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .without_time()
        .with_writer(capture.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let backend = Sequence::builder("backend")
        .service(serve_until_cancelled("db"))
        .build()
        .unwrap();
    let mut app = ServiceGroup::builder("app")
        .service(backend)
        .service(service_fn("job", |_ctx, _ready| async {
            Err("boom".into())
        }))
        .build()
        .unwrap();
    let err = app.serve(CancellationToken::new()).await.unwrap_err();
    assert_eq!(err.to_string(), "job: boom");

    let text = capture.text();
    let events: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("taskgroup::service"))
        .collect();
    for (service, state) in [
        ("app/backend", "starting"),
        ("app/backend/db", "starting"),
        ("app/backend/db", "running"),
        ("app/job", "starting"),
        ("app/job", "failed"),
        ("app/backend/db", "stopped"),
        ("app/backend", "stopped"),
    ] {
        assert!(
            events
                .iter()
                .any(|l| l.contains(&format!("service={service} state={state}"))),
            "no {service} {state} in:\n{text}"
        );
    }
    // The failure says so, with its text, without a hub: it said `failed=false`, with no
    // text (`probe-svcerr`).
    let failed = events
        .iter()
        .find(|l| l.contains("service=app/job state=failed"))
        .unwrap();
    assert!(failed.contains("failed=true"), "{failed}");
    assert!(failed.contains("error=\"boom\""), "{failed}");
    let stopped = events
        .iter()
        .find(|l| l.contains("service=app/backend state=stopped"))
        .unwrap();
    assert!(stopped.contains("failed=false"), "{stopped}");
}

/// The core's events about a member's run (here its abort at the stop timeout) name where
/// the member was added, as the container's `StopTimeout` does: they named the crate's line
/// that spawns member runs (`src/service/runner.rs`).
#[tokio::test(start_paused = true)]
async fn the_cores_events_name_where_a_member_was_added() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .without_time()
        .with_writer(capture.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let hung = service_fn("hung", |_ctx: CancellationToken, ready: Ready| async move {
        ready.ready();
        std::future::pending::<()>().await;
        Ok(())
    });
    let added_at = line!() + 2;
    let mut app = ServiceGroup::builder("app")
        .service(hung)
        .stop_timeout(std::time::Duration::from_millis(50))
        .build()
        .unwrap();
    let ctx = CancellationToken::new();
    ctx.cancel();
    let err = app.serve(ctx).await.unwrap_err();
    assert_eq!(err.stop_timeouts().len(), 1, "{err}");

    let text = capture.text();
    let aborted: Vec<&str> = text.lines().filter(|l| l.contains("aborted: ")).collect();
    assert!(!aborted.is_empty(), "{text}");
    let site = format!("{}:{added_at}:", file!());
    for line in aborted {
        assert!(line.contains(&site), "{line}\nnot at {site}");
    }
}
